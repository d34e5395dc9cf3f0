//! The complaint's read model (the seed's `ComplaintView` plus `version` and `sagaStatus`), as a
//! pure projection of events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::complaint::{ComplaintState, EvolveError, evolve};
use crate::envelope::Envelope;
use crate::events::Payload;
use crate::saga::templates;
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
    /// For each compensation in progress (by failed event id), the services that reported
    /// their part done ("notification", "audit").
    #[serde(default)]
    pub compensation_acks: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
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

    /// Applies an event of another service about this complaint (notifications, audit marks).
    /// Returns false when it was applied already.
    pub fn apply_external(&mut self, envelope: &Envelope) -> bool {
        let seen = |list: &[serde_json::Value]| {
            list.iter()
                .any(|e| e["eventId"] == envelope.event_id.as_str())
        };
        if seen(&self.notifications) || seen(&self.audit_trail) {
            return false;
        }
        let at = crate::time::format(&envelope.metadata.timestamp);
        let base = serde_json::json!({"eventId": envelope.event_id, "eventType": envelope.event_type, "at": at});
        let merged = |extra: serde_json::Value| {
            let mut entry = base.clone();
            if let (Some(e), Some(x)) = (entry.as_object_mut(), extra.as_object()) {
                e.extend(x.clone());
            }
            entry
        };
        match envelope.payload() {
            Ok(Payload::NotificationSent(n)) => {
                if n.template == templates::CLOSED_USER {
                    self.closing_mail_sent = true;
                }
                self.notifications.push(merged(serde_json::json!({
                    "notificationId": n.notification_id, "template": n.template, "recipient": n.recipient,
                    "channel": n.channel, "triggerEventId": n.trigger_event_id, "status": "SENT"})));
            }
            Ok(Payload::NotificationFailed(n)) => self.notifications.push(merged(serde_json::json!({
                "notificationId": n.notification_id, "template": n.template, "recipient": n.recipient,
                "triggerEventId": n.trigger_event_id, "status": "FAILED", "error": n.error, "attempts": n.attempts}))),
            Ok(Payload::NotificationCompensation(n)) => {
                self.compensation_acks.entry(n.failed_event_id.clone()).or_default().insert("notification".into());
                self.notifications.push(merged(serde_json::json!({
                    "failedEventId": n.failed_event_id, "cancelledNotificationIds": n.cancelled_notification_ids,
                    "correctionSentTo": n.correction_sent_to, "status": "COMPENSATED"})));
            }
            Ok(Payload::AuditCompensation(a)) => {
                self.compensation_acks.entry(a.failed_event_id.clone()).or_default().insert("audit".into());
                self.audit_trail.push(merged(serde_json::json!({
                    "failedEventId": a.failed_event_id, "compensatedEventIds": a.compensated_event_ids})));
            }
            _ => return false,
        }
        true
    }

    /// The compensation in progress whose other parts are all done, if any.
    pub fn compensation_ready(&self) -> Option<String> {
        let pending = self.state.complaint.as_ref()?.compensation.as_ref()?;
        let acks = self.compensation_acks.get(&pending.failed_event_id)?;
        (acks.contains("notification") && acks.contains("audit"))
            .then(|| pending.failed_event_id.clone())
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
