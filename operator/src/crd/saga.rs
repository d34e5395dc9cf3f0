//! `ComplaintSaga`: the four services of the saga, as Deployments the operator owns.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SagaStatus, SecretRef};

/// The complaint, notification, audit and event-store services, on the backends the referenced
/// Secrets name, reading and writing the EventPipeline named by `pipeline`.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "sagaflow.dev",
    version = "v1alpha1",
    kind = "ComplaintSaga",
    namespaced,
    status = "SagaStatus",
    shortname = "csaga",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Services","type":"string","jsonPath":".status.readyServices"}"#,
    printcolumn = r#"{"name":"Pipeline","type":"string","jsonPath":".spec.pipeline"}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ComplaintSagaSpec {
    /// The EventPipeline (same namespace) whose RabbitMQ and Redis the services use.
    #[schemars(length(min = 1, max = 253))]
    pub pipeline: String,
    /// The container image that holds the `sagaflow` binary.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Secrets (same namespace, type `kubernetes.io/dockerconfigjson`) the services' pods pull
    /// `image` with, from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Each service's replicas, resources and settings.
    #[serde(default)]
    pub services: Services,
    /// Environment variables for all four services (for example `LOG_LEVEL`, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` to export traces); a service's own `env` wins.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The Secret holding the PostgreSQL URL (complaint, notification and audit services).
    pub database: SecretRef,
    /// The Secret holding the MongoDB URL (event store).
    pub mongodb: SecretRef,
    /// The Secret holding the SMTP relay's URL (`smtp://host:port`).
    pub smtp: SecretRef,
    /// How long a complaint may stay unassigned before it is escalated.
    #[serde(default)]
    pub deadlines: Deadlines,
}

/// The four services.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Services {
    /// The complaint service (port 3005).
    #[serde(default)]
    pub complaint: Service,
    /// The notification service (port 3006).
    #[serde(default)]
    pub notification: Service,
    /// The audit service (port 3007).
    #[serde(default)]
    pub audit: Service,
    /// The event store (port 3008).
    #[serde(default)]
    pub event_store: Service,
}

/// One service's Deployment.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// Pods of this service.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 50))]
    pub replicas: i32,
    /// CPU and memory requests and limits of its container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables (for example `LOG_LEVEL`, `NOTIFY_ADMIN_EMAIL`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl Default for Service {
    fn default() -> Self {
        Self {
            replicas: one(),
            resources: None,
            env: BTreeMap::new(),
        }
    }
}

/// Deadlines by priority, as durations such as `15m`, `1h`, `24h`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Deadlines {
    /// The deadline of CRITICAL complaints (default 15m).
    #[serde(default = "critical")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$"))]
    pub critical: String,
    /// The deadline of HIGH complaints (default 1h).
    #[serde(default = "high")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$"))]
    pub high: String,
    /// The deadline of MEDIUM complaints (default 4h).
    #[serde(default = "medium")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$"))]
    pub medium: String,
    /// The deadline of LOW complaints (default 24h).
    #[serde(default = "low")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$"))]
    pub low: String,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            critical: critical(),
            high: high(),
            medium: medium(),
            low: low(),
        }
    }
}

fn one() -> i32 {
    1
}
fn critical() -> String {
    "15m".into()
}
fn high() -> String {
    "1h".into()
}
fn medium() -> String {
    "4h".into()
}
fn low() -> String {
    "24h".into()
}
