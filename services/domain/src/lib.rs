//! sagaflow's domain: pure, synchronous, free of I/O.
//!
//! - [`values`]: validated fields (title, description, category, priority, status …).
//! - [`events`]: every event type, its `eventData`, its routing key, exchange and stream.
//! - [`envelope`]: the event envelope as it travels, and its parser.
//! - [`complaint`]: the complaint aggregate: `decide(state, command)` and `evolve(state, event)`.
//! - [`saga`]: the saga's rules: which mails an event causes, streams of the other aggregates.
//! - [`view`]: the complaint's read model as a projection of its events.
//! - [`summary`]: the operator's figures of the newest sagas (outcomes, durations, escalations).
//! - [`time`]: the wire format of timestamps.

pub mod complaint;
pub mod envelope;
pub mod events;
pub mod saga;
pub mod summary;
pub mod time;
pub mod values;
pub mod view;

pub use complaint::{Command, ComplaintState, DomainError, EvolveError, decide, evolve, fold};
pub use envelope::{Context, Envelope, EnvelopeError, Metadata};
pub use events::{AggregateType, EventType, Payload};
pub use summary::SagaSummary;
pub use values::{FieldError, Priority, SagaStatus, Status};
pub use view::{ComplaintProjection, ComplaintView, TimelineEntry};
