//! The event envelope of SPEC section 3, exactly as it travels: camelCase, unknown fields ignored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{AggregateType, EventType, Payload};
use crate::time::millis;

/// Who and what caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(with = "millis")]
    pub timestamp: DateTime<Utc>,
    /// Position in the aggregate's stream: 1-based, gapless, never reused.
    pub version: u64,
    /// The saga's id, carried from the request that started it.
    pub correlation_id: String,
    /// The event id (or request id) that caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The W3C trace context of the span that recorded the event (SPEC section 8). It is kept
    /// with the event where it is stored ([`Envelope::to_stored_json`]) and travels in the
    /// message's `traceparent` header and stream field, never in the published envelope, which
    /// stays exactly the contract's ([`Envelope::to_json`]). A value that is not a string is
    /// ignored, as an unknown field would be.
    #[serde(default, skip_serializing, deserialize_with = "lenient_string")]
    pub traceparent: Option<String>,
}

fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

/// One event as it is stored, published and archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub event_id: String,
    pub event_type: String,
    pub aggregate_id: String,
    pub aggregate_type: String,
    pub event_data: serde_json::Value,
    pub metadata: Metadata,
}

/// Why bytes are not a valid envelope (a poison message, for a consumer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a valid event envelope: {0}")]
    Invalid(String),
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    #[error("eventData of {event_type} is invalid: {reason}")]
    InvalidData { event_type: String, reason: String },
}

/// The context a command's events are recorded under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub user_id: Option<String>,
    pub at: DateTime<Utc>,
    /// The trace context of the span deciding the events (`None`: no trace to continue).
    pub traceparent: Option<String>,
}

impl Envelope {
    /// Wraps a payload; the caller gives the id and the version.
    pub fn new(
        event_id: String,
        aggregate_id: &str,
        version: u64,
        payload: &Payload,
        ctx: &Context,
    ) -> Self {
        let event_type = payload.event_type();
        Self {
            event_id,
            event_type: event_type.as_str().to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            aggregate_type: event_type.aggregate_type().as_str().to_owned(),
            event_data: payload.to_data(),
            metadata: Metadata {
                timestamp: ctx.at,
                version,
                correlation_id: ctx.correlation_id.clone(),
                causation_id: ctx.causation_id.clone(),
                user_id: ctx.user_id.clone(),
                traceparent: ctx.traceparent.clone(),
            },
        }
    }

    /// Parses and checks an envelope: every required field present with its type,
    /// non-empty ids, a version of at least 1, and an object as `eventData`.
    /// The event type may be one this version does not know; [`Envelope::payload`] tells.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        let envelope: Envelope =
            serde_json::from_value(value).map_err(|e| EnvelopeError::Invalid(e.to_string()))?;
        envelope.check()?;
        Ok(envelope)
    }

    fn check(&self) -> Result<(), EnvelopeError> {
        let invalid = |what: &str| Err(EnvelopeError::Invalid(what.to_owned()));
        if self.event_id.trim().is_empty() {
            return invalid("eventId is empty");
        }
        if self.event_type.trim().is_empty() {
            return invalid("eventType is empty");
        }
        if self.aggregate_id.trim().is_empty() {
            return invalid("aggregateId is empty");
        }
        if self.metadata.version == 0 {
            return invalid("metadata.version must be at least 1");
        }
        if self.metadata.correlation_id.trim().is_empty() {
            return invalid("metadata.correlationId is empty");
        }
        if !self.event_data.is_object() {
            return invalid("eventData must be an object");
        }
        if let Some(t) = EventType::parse(&self.event_type)
            && self.aggregate_type != t.aggregate_type().as_str()
        {
            return Err(EnvelopeError::Invalid(format!(
                "aggregateType {:?} does not match eventType {}",
                self.aggregate_type, self.event_type
            )));
        }
        Ok(())
    }

    /// The envelope as it is published and served: exactly the contract's fields.
    pub fn to_json(&self) -> String {
        // An envelope holds only strings, numbers and JSON values: it always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The envelope as the event log and the outbox keep it: the published form plus
    /// `metadata.traceparent`, which the relay moves into the message's header and stream field.
    pub fn to_stored_json(&self) -> String {
        let Some(traceparent) = &self.metadata.traceparent else {
            return self.to_json();
        };
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(metadata) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            metadata.insert("traceparent".into(), traceparent.clone().into());
        }
        value.to_string()
    }

    /// The event type, if this version knows it.
    pub fn known_type(&self) -> Option<EventType> {
        EventType::parse(&self.event_type)
    }

    pub fn aggregate(&self) -> Option<AggregateType> {
        AggregateType::parse(&self.aggregate_type)
    }

    /// The typed `eventData`.
    pub fn payload(&self) -> Result<Payload, EnvelopeError> {
        let t = self
            .known_type()
            .ok_or_else(|| EnvelopeError::UnknownEventType(self.event_type.clone()))?;
        Payload::from_data(t, &self.event_data).map_err(|e| EnvelopeError::InvalidData {
            event_type: self.event_type.clone(),
            reason: e.to_string(),
        })
    }

    /// The routing key this event is published with.
    pub fn routing_key(&self) -> String {
        crate::events::routing_key(&self.event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::ComplaintClosed;

    fn sample() -> Envelope {
        let at = DateTime::parse_from_rfc3339("2026-01-15T10:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ctx = Context {
            correlation_id: "saga-1".into(),
            causation_id: Some("req-1".into()),
            user_id: Some("u1".into()),
            at,
            traceparent: None,
        };
        let payload = Payload::ComplaintClosed(ComplaintClosed {
            complaint_id: "c1".into(),
            reason: None,
            closed_at: at,
        });
        Envelope::new("e1".into(), "c1", 3, &payload, &ctx)
    }

    #[test]
    fn serialises_exactly_as_the_seed_envelope() {
        let json: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "eventId": "e1", "eventType": "COMPLAINT_CLOSED", "aggregateId": "c1",
                "aggregateType": "Complaint",
                "eventData": {"complaintId": "c1", "closedAt": "2026-01-15T10:30:00.000Z"},
                "metadata": {"timestamp": "2026-01-15T10:30:00.000Z", "version": 3,
                    "correlationId": "saga-1", "causationId": "req-1", "userId": "u1"}
            })
        );
    }

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let mut json: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        json["somethingNew"] = serde_json::json!(42);
        json["metadata"]["baggage"] = serde_json::json!("k=v");
        let back = Envelope::from_slice(json.to_string().as_bytes()).unwrap();
        assert_eq!(back, sample());
        json["metadata"]["traceparent"] =
            serde_json::json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let traced = Envelope::from_slice(json.to_string().as_bytes()).unwrap();
        assert_eq!(
            traced.metadata.traceparent.as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        // Published exactly as the contract's envelope; stored with the trace context.
        assert_eq!(traced.to_json(), sample().to_json());
        let stored = Envelope::from_slice(traced.to_stored_json().as_bytes()).unwrap();
        assert_eq!(stored, traced);
        assert_eq!(sample().to_stored_json(), sample().to_json());
        // A traceparent of another type is ignored, not a reason to refuse the event.
        json["metadata"]["traceparent"] = serde_json::json!({"not": "a string"});
        let odd = Envelope::from_slice(json.to_string().as_bytes()).unwrap();
        assert_eq!(odd.metadata.traceparent, None);
        assert_eq!(
            back.payload().unwrap().event_type(),
            EventType::ComplaintClosed
        );
    }

    #[test]
    fn refuses_what_is_not_an_envelope() {
        assert!(matches!(
            Envelope::from_slice(b"not json"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            Envelope::from_slice(b"{}"),
            Err(EnvelopeError::Invalid(_))
        ));
        let mut json: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        json["metadata"]["version"] = serde_json::json!(0);
        assert!(Envelope::from_slice(json.to_string().as_bytes()).is_err());
        json["metadata"]["version"] = serde_json::json!("1");
        assert!(Envelope::from_slice(json.to_string().as_bytes()).is_err());
        json["metadata"]["version"] = serde_json::json!(1);
        json["aggregateType"] = serde_json::json!("Audit");
        assert!(Envelope::from_slice(json.to_string().as_bytes()).is_err());
    }

    #[test]
    fn unknown_event_types_parse_but_have_no_payload() {
        let mut json: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        json["eventType"] = serde_json::json!("COMPLAINT_REOPENED");
        let env = Envelope::from_slice(json.to_string().as_bytes()).unwrap();
        assert_eq!(env.routing_key(), "complaint.reopened");
        assert!(matches!(
            env.payload(),
            Err(EnvelopeError::UnknownEventType(_))
        ));
    }
}
