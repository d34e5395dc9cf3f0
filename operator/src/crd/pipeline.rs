//! `EventPipeline`: where RabbitMQ and Redis are, and the topology to declare on them. Its
//! defaults are SPEC section 6's topology.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PipelineStatus, SecretRef};

/// The exchanges, queues, dead-lettering, streams and consumer groups of sagaflow's saga.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "sagaflow.dev",
    version = "v1alpha1",
    kind = "EventPipeline",
    namespaced,
    status = "PipelineStatus",
    shortname = "evp",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Deletion","type":"string","jsonPath":".spec.deletionPolicy"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EventPipelineSpec {
    /// The Secret holding the RabbitMQ URL (`amqp://user:password@host:5672/vhost`).
    pub rabbitmq: SecretRef,
    /// The Secret holding the RabbitMQ management API's URL (`http://user:password@host:15672`),
    /// through which the operator declares the topology and its policies. Default: the AMQP
    /// URL's host on port 15672, with its user, password and virtual host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq_management: Option<SecretRef>,
    /// The Secret holding the Redis URL (`redis://host:6379/0`).
    pub redis: SecretRef,
    /// Topic exchanges, durable. Default: complaints.events, notifications.events, audit.events.
    #[serde(default = "default_exchanges")]
    pub exchanges: Vec<String>,
    /// Durable queues, named `<exchange>.<service>`, with their bindings, retry policy and
    /// dead-lettering. Default: the queues of SPEC section 6.
    #[serde(default = "default_queues")]
    pub queues: Vec<Queue>,
    /// Redis streams and their consumer groups. Default: complaints-stream and
    /// notifications-stream, each read by the group `event-store`.
    #[serde(default = "default_streams")]
    pub streams: Vec<Stream>,
    /// What deleting this resource does to the broker objects: Retain keeps them (and their
    /// messages), Delete removes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// What happens to the broker objects when the EventPipeline is deleted.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep exchanges, queues, streams and their messages.
    #[default]
    Retain,
    /// Delete them.
    Delete,
}

/// A queue and its bindings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Queue {
    /// The queue's name, `<exchange>.<service>` by convention.
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// The exchange it is bound to.
    #[schemars(length(min = 1, max = 255))]
    pub exchange: String,
    /// Topic patterns (`*` one word, `#` zero or more).
    #[serde(default = "all_keys")]
    pub bindings: Vec<String>,
    /// How failed messages are retried before they go to `<exchange>.dlq`. The consuming service
    /// gets it as its RETRY_* settings (a ComplaintSaga rolls its pods when it changes); the
    /// broker's own dead-lettering is the policy `sagaflow.<queue>`, changed in place, so a
    /// change never needs the queue deleted.
    #[serde(default)]
    pub retry: RetryPolicy,
}

/// Retries of a failed message: `baseDelaySeconds`, doubling up to `maxDelaySeconds`, at most
/// `maxAttempts` attempts, then the dead-letter queue.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts before a message is dead-lettered.
    #[serde(default = "five")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: u32,
    /// The first retry's delay.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 3600))]
    pub base_delay_seconds: u32,
    /// The longest delay.
    #[serde(default = "sixty")]
    #[schemars(range(min = 1, max = 86400))]
    pub max_delay_seconds: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: five(),
            base_delay_seconds: one(),
            max_delay_seconds: sixty(),
        }
    }
}

/// A Redis stream and the consumer groups that read it.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stream {
    /// The stream's key.
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// The approximate cap (`MAXLEN ~`).
    #[serde(default = "million")]
    #[schemars(range(min = 1000))]
    pub max_length: u64,
    /// Consumer groups created on the stream.
    #[serde(default)]
    pub consumer_groups: Vec<String>,
}

fn five() -> u32 {
    5
}
fn one() -> u32 {
    1
}
fn sixty() -> u32 {
    60
}
fn million() -> u64 {
    1_000_000
}
fn all_keys() -> Vec<String> {
    vec!["#".into()]
}

fn default_exchanges() -> Vec<String> {
    ["complaints.events", "notifications.events", "audit.events"]
        .map(String::from)
        .to_vec()
}

fn default_queues() -> Vec<Queue> {
    [
        ("complaints.events", "notification-service"),
        ("complaints.events", "audit-service"),
        ("notifications.events", "audit-service"),
        ("audit.events", "audit-service"),
        ("notifications.events", "complaint-service"),
        ("audit.events", "complaint-service"),
    ]
    .map(|(exchange, service)| Queue {
        name: format!("{exchange}.{service}"),
        exchange: exchange.into(),
        bindings: all_keys(),
        retry: RetryPolicy::default(),
    })
    .to_vec()
}

fn default_streams() -> Vec<Stream> {
    ["complaints-stream", "notifications-stream"]
        .map(|name| Stream {
            name: name.into(),
            max_length: million(),
            consumer_groups: vec!["event-store".into()],
        })
        .to_vec()
}
