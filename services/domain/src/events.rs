//! Every event type of SPEC section 3, its `eventData`, and the routing rules that follow from it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::time::millis;
use crate::values::{Priority, Status};

/// The kind of aggregate an event belongs to; decides its exchange and stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AggregateType {
    Complaint,
    Notification,
    Audit,
}

impl AggregateType {
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateType::Complaint => "Complaint",
            AggregateType::Notification => "Notification",
            AggregateType::Audit => "Audit",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Complaint" => Some(AggregateType::Complaint),
            "Notification" => Some(AggregateType::Notification),
            "Audit" => Some(AggregateType::Audit),
            _ => None,
        }
    }

    /// The topic exchange its events are published to.
    pub fn exchange(self) -> &'static str {
        match self {
            AggregateType::Complaint => "complaints.events",
            AggregateType::Notification => "notifications.events",
            AggregateType::Audit => "audit.events",
        }
    }

    /// The Redis stream its events are appended to.
    pub fn stream(self) -> &'static str {
        match self {
            AggregateType::Complaint | AggregateType::Audit => "complaints-stream",
            AggregateType::Notification => "notifications-stream",
        }
    }
}

/// Declares the closed list of event types with their wire names and aggregate types.
macro_rules! event_types {
    ($($variant:ident => $text:literal, $agg:ident;)+) => {
        /// Every event type sagaflow knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum EventType {
            $(#[serde(rename = $text)] $variant),+
        }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(EventType::$variant),)+ _ => None }
            }

            pub fn aggregate_type(self) -> AggregateType {
                match self { $(EventType::$variant => AggregateType::$agg),+ }
            }
        }
    };
}

event_types! {
    ComplaintCreated => "COMPLAINT_CREATED", Complaint;
    ComplaintAssigned => "COMPLAINT_ASSIGNED", Complaint;
    ComplaintProcessed => "COMPLAINT_PROCESSED", Complaint;
    ComplaintClosed => "COMPLAINT_CLOSED", Complaint;
    ComplaintCompensationRequired => "COMPLAINT_COMPENSATION_REQUIRED", Complaint;
    ComplaintCompensated => "COMPLAINT_COMPENSATED", Complaint;
    ComplaintEscalated => "COMPLAINT_ESCALATED", Complaint;
    NotificationSent => "NOTIFICATION_SENT", Notification;
    NotificationFailed => "NOTIFICATION_FAILED", Notification;
    NotificationCompensation => "NOTIFICATION_COMPENSATION", Notification;
    AuditCompensation => "AUDIT_COMPENSATION", Audit;
}

impl EventType {
    /// The routing key: the type lower-cased with `_` turned into `.`
    /// (COMPLAINT_CREATED → `complaint.created`).
    pub fn routing_key(self) -> String {
        routing_key(self.as_str())
    }

    pub fn exchange(self) -> &'static str {
        self.aggregate_type().exchange()
    }
}

/// The routing key of any event type name, known or not.
pub fn routing_key(event_type: &str) -> String {
    event_type.to_ascii_lowercase().replace('_', ".")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplaintCreated {
    pub complaint_id: String,
    pub user_id: String,
    pub title: String,
    pub description: String,
    pub priority: Priority,
    pub category: String,
    #[serde(with = "millis")]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplaintAssigned {
    pub complaint_id: String,
    pub assigned_to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_assignee: Option<String>,
    #[serde(with = "millis")]
    pub assigned_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplaintProcessed {
    pub complaint_id: String,
    /// IN_PROGRESS or RESOLVED.
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(with = "millis")]
    pub processed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplaintClosed {
    pub complaint_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(with = "millis")]
    pub closed_at: DateTime<Utc>,
}

/// One thing a service must do to undo a step; carried out in `order`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompensationAction {
    pub service: String,
    pub action: String,
    pub parameters: serde_json::Value,
    pub order: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplaintCompensationRequired {
    pub complaint_id: String,
    /// The event type of the step being undone.
    pub failed_step: String,
    pub failed_event_id: String,
    pub reason: String,
    pub actions: Vec<CompensationAction>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplaintCompensated {
    pub complaint_id: String,
    pub failed_event_id: String,
    pub restored_status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_assignee: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplaintEscalated {
    pub complaint_id: String,
    pub priority: Priority,
    #[serde(with = "millis")]
    pub deadline: DateTime<Utc>,
    #[serde(with = "millis")]
    pub escalated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSent {
    pub notification_id: String,
    pub complaint_id: String,
    pub trigger_event_id: String,
    pub recipient: String,
    pub channel: String,
    pub template: String,
    #[serde(with = "millis")]
    pub sent_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationFailed {
    pub notification_id: String,
    pub complaint_id: String,
    pub trigger_event_id: String,
    pub recipient: String,
    pub error: String,
    pub attempts: u32,
    /// Which mail failed (an addition to the seed's fields; readers may ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationCompensation {
    pub complaint_id: String,
    pub failed_event_id: String,
    pub cancelled_notification_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction_sent_to: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditCompensation {
    pub complaint_id: String,
    pub failed_event_id: String,
    pub compensated_event_ids: Vec<String>,
}

/// An event's typed payload: its type and its `eventData`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    ComplaintCreated(ComplaintCreated),
    ComplaintAssigned(ComplaintAssigned),
    ComplaintProcessed(ComplaintProcessed),
    ComplaintClosed(ComplaintClosed),
    ComplaintCompensationRequired(ComplaintCompensationRequired),
    ComplaintCompensated(ComplaintCompensated),
    ComplaintEscalated(ComplaintEscalated),
    NotificationSent(NotificationSent),
    NotificationFailed(NotificationFailed),
    NotificationCompensation(NotificationCompensation),
    AuditCompensation(AuditCompensation),
}

/// Applies `$body` to the inner value of every variant of [`Payload`].
macro_rules! each_payload {
    ($value:expr, $inner:ident => $body:expr) => {
        match $value {
            Payload::ComplaintCreated($inner) => $body,
            Payload::ComplaintAssigned($inner) => $body,
            Payload::ComplaintProcessed($inner) => $body,
            Payload::ComplaintClosed($inner) => $body,
            Payload::ComplaintCompensationRequired($inner) => $body,
            Payload::ComplaintCompensated($inner) => $body,
            Payload::ComplaintEscalated($inner) => $body,
            Payload::NotificationSent($inner) => $body,
            Payload::NotificationFailed($inner) => $body,
            Payload::NotificationCompensation($inner) => $body,
            Payload::AuditCompensation($inner) => $body,
        }
    };
}

impl Payload {
    pub fn event_type(&self) -> EventType {
        match self {
            Payload::ComplaintCreated(_) => EventType::ComplaintCreated,
            Payload::ComplaintAssigned(_) => EventType::ComplaintAssigned,
            Payload::ComplaintProcessed(_) => EventType::ComplaintProcessed,
            Payload::ComplaintClosed(_) => EventType::ComplaintClosed,
            Payload::ComplaintCompensationRequired(_) => EventType::ComplaintCompensationRequired,
            Payload::ComplaintCompensated(_) => EventType::ComplaintCompensated,
            Payload::ComplaintEscalated(_) => EventType::ComplaintEscalated,
            Payload::NotificationSent(_) => EventType::NotificationSent,
            Payload::NotificationFailed(_) => EventType::NotificationFailed,
            Payload::NotificationCompensation(_) => EventType::NotificationCompensation,
            Payload::AuditCompensation(_) => EventType::AuditCompensation,
        }
    }

    /// The `eventData` object.
    pub fn to_data(&self) -> serde_json::Value {
        // Serialising these plain structs cannot fail: every field is a string, number,
        // enum, timestamp or a JSON value already.
        each_payload!(self, inner => serde_json::to_value(inner).unwrap_or(serde_json::Value::Null))
    }

    /// Reads `eventData` as the data of `event_type`.
    pub fn from_data(
        event_type: EventType,
        data: &serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        use serde::de::Deserialize as _;
        let d = data;
        Ok(match event_type {
            EventType::ComplaintCreated => {
                Payload::ComplaintCreated(ComplaintCreated::deserialize(d)?)
            }
            EventType::ComplaintAssigned => {
                Payload::ComplaintAssigned(ComplaintAssigned::deserialize(d)?)
            }
            EventType::ComplaintProcessed => {
                Payload::ComplaintProcessed(ComplaintProcessed::deserialize(d)?)
            }
            EventType::ComplaintClosed => {
                Payload::ComplaintClosed(ComplaintClosed::deserialize(d)?)
            }
            EventType::ComplaintCompensationRequired => Payload::ComplaintCompensationRequired(
                ComplaintCompensationRequired::deserialize(d)?,
            ),
            EventType::ComplaintCompensated => {
                Payload::ComplaintCompensated(ComplaintCompensated::deserialize(d)?)
            }
            EventType::ComplaintEscalated => {
                Payload::ComplaintEscalated(ComplaintEscalated::deserialize(d)?)
            }
            EventType::NotificationSent => {
                Payload::NotificationSent(NotificationSent::deserialize(d)?)
            }
            EventType::NotificationFailed => {
                Payload::NotificationFailed(NotificationFailed::deserialize(d)?)
            }
            EventType::NotificationCompensation => {
                Payload::NotificationCompensation(NotificationCompensation::deserialize(d)?)
            }
            EventType::AuditCompensation => {
                Payload::AuditCompensation(AuditCompensation::deserialize(d)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_follow_the_rule() {
        assert_eq!(
            EventType::ComplaintCreated.routing_key(),
            "complaint.created"
        );
        assert_eq!(
            EventType::ComplaintCompensationRequired.routing_key(),
            "complaint.compensation.required"
        );
        assert_eq!(
            EventType::NotificationSent.routing_key(),
            "notification.sent"
        );
        assert_eq!(
            EventType::AuditCompensation.routing_key(),
            "audit.compensation"
        );
    }

    #[test]
    fn exchanges_and_streams_follow_the_aggregate_type() {
        for t in EventType::ALL {
            let expected = match t.as_str().split('_').next() {
                Some("COMPLAINT") => ("complaints.events", "complaints-stream"),
                Some("NOTIFICATION") => ("notifications.events", "notifications-stream"),
                Some("AUDIT") => ("audit.events", "complaints-stream"),
                other => panic!("unexpected prefix {other:?}"),
            };
            assert_eq!(
                (t.exchange(), t.aggregate_type().stream()),
                expected,
                "{t:?}"
            );
        }
    }

    #[test]
    fn event_type_names_round_trip() {
        assert_eq!(EventType::ALL.len(), 11);
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(EventType::parse("complaint_created"), None);
    }

    #[test]
    fn optional_fields_are_left_out_and_read_back_absent() {
        let data = Payload::ComplaintAssigned(ComplaintAssigned {
            complaint_id: "c1".into(),
            assigned_to: "agent".into(),
            previous_assignee: None,
            assigned_at: DateTime::from_timestamp_millis(0).unwrap(),
        })
        .to_data();
        assert_eq!(
            data,
            serde_json::json!({"complaintId": "c1", "assignedTo": "agent", "assignedAt": "1970-01-01T00:00:00.000Z"})
        );
        let back = Payload::from_data(EventType::ComplaintAssigned, &data).unwrap();
        assert_eq!(back.to_data(), data);
    }

    #[test]
    fn wrong_data_for_the_type_is_an_error() {
        let data = serde_json::json!({"complaintId": "c1"});
        assert!(Payload::from_data(EventType::ComplaintCreated, &data).is_err());
    }
}
