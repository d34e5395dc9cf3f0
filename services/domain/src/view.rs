//! The complaint's read model (the seed's `ComplaintView` plus `version` and `sagaStatus`), as a
//! pure projection of events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::complaint::{ComplaintState, EvolveError, evolve};
use crate::envelope::Envelope;
use crate::time::{millis, millis_opt};
use crate::values::{Priority, SagaStatus, Status};

/// One line of a complaint's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub event_id: String,
    pub event_type: String,
    pub version: u64,
    #[serde(with = "millis")]
    pub timestamp: DateTime<Utc>,
    /// The status once this event took effect.
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub correlation_id: String,
}

/// What the API shows of a complaint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplaintView {
    pub id: String,
    pub user_id: String,
    pub title: String,
    pub description: String,
    pub status: Status,
    pub priority: Priority,
    pub category: String,
    pub assigned_to: Option<String>,
    pub resolution: Option<String>,
    #[serde(with = "millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "millis")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "millis_opt")]
    pub closed_at: Option<DateTime<Utc>>,
    #[serde(with = "millis_opt")]
    pub escalated_at: Option<DateTime<Utc>>,
    pub version: u64,
    pub saga_status: SagaStatus,
    pub timeline: Vec<TimelineEntry>,
    pub notifications: Vec<serde_json::Value>,
    pub audit_trail: Vec<serde_json::Value>,
}

/// The projection's own state: the aggregate state it folds plus what only the view shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplaintProjection {
    pub state: ComplaintState,
    pub timeline: Vec<TimelineEntry>,
    #[serde(default)]
    pub notifications: Vec<serde_json::Value>,
    #[serde(default)]
    pub audit_trail: Vec<serde_json::Value>,
    #[serde(default)]
    pub closing_mail_sent: bool,
}

impl ComplaintProjection {
    /// Applies one of the complaint's own events. An event at or below the version already
    /// applied is skipped (a redelivery), so applying is idempotent.
    pub fn apply(&mut self, envelope: &Envelope) -> Result<bool, EvolveError> {
        if envelope.metadata.version <= self.state.version {
            return Ok(false);
        }
        let next = evolve(self.state.clone(), envelope)?;
        let status = next.complaint.as_ref().map_or(Status::Open, |c| c.status);
        self.state = next;
        self.timeline.push(TimelineEntry {
            event_id: envelope.event_id.clone(),
            event_type: envelope.event_type.clone(),
            version: envelope.metadata.version,
            timestamp: envelope.metadata.timestamp,
            status,
            user_id: envelope.metadata.user_id.clone(),
            correlation_id: envelope.metadata.correlation_id.clone(),
        });
        Ok(true)
    }

    pub fn view(&self) -> Option<ComplaintView> {
        let c = self.state.complaint.as_ref()?;
        Some(ComplaintView {
            id: c.id.clone(),
            user_id: c.user_id.clone(),
            title: c.title.clone(),
            description: c.description.clone(),
            status: c.status,
            priority: c.priority,
            category: c.category.clone(),
            assigned_to: c.assigned_to.clone(),
            resolution: c.resolution.clone(),
            created_at: c.created_at,
            updated_at: c.updated_at,
            closed_at: c.closed_at,
            escalated_at: c.escalated_at,
            version: self.state.version,
            saga_status: c.saga_status(self.closing_mail_sent),
            timeline: self.timeline.clone(),
            notifications: self.notifications.clone(),
            audit_trail: self.audit_trail.clone(),
        })
    }
}
