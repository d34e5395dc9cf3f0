//! What every reconcile shares: the API client, the Event recorder, the metrics, the per-object
//! backoff, and the reading of referenced Secrets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use crate::crd::SecretRef;

/// The field manager of everything the operator applies.
pub const MANAGER: &str = "sagaflow-operator";

/// Why a reconcile did not finish; the reason goes to metrics, conditions and Events.
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    pub fn kube(what: &str, e: &kube::Error) -> Self {
        Self::new("KubernetesApiError", format!("{what}: {e}"))
    }
}

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub failures: IntCounterVec,
    pub duration: HistogramVec,
    pub leader: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "sagaflow_operator_reconciles_total",
                "Reconciles run, by kind and result (ok, error).",
            ),
            &["kind", "result"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "sagaflow_operator_reconcile_failures_total",
                "Reconciles that failed, by kind and reason.",
            ),
            &["kind", "reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "sagaflow_operator_reconcile_duration_seconds",
                "How long a reconcile took, by kind.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["kind"],
        )?;
        let leader = IntGauge::new(
            "sagaflow_operator_leader",
            "1 while this process holds the leader Lease and reconciles.",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            failures,
            duration,
            leader,
        })
    }
}

/// Shared by the reconciles of both kinds.
pub struct Ctx {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    attempts: Mutex<HashMap<String, u32>>,
}

impl Ctx {
    pub fn new(client: Client, recorder: Recorder, metrics: Metrics) -> Self {
        Self {
            client,
            recorder,
            metrics,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// The next retry of a failing object: 1 s, 2 s, 4 s … capped at 5 minutes.
    pub fn backoff(&self, key: &str) -> Action {
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = attempts.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        let secs = 1u64
            .checked_shl(n.saturating_sub(1))
            .unwrap_or(u64::MAX)
            .min(300);
        Action::requeue(Duration::from_secs(secs))
    }

    /// Forgets the failures of an object that reconciled.
    pub fn succeeded(&self, key: &str) {
        self.attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    /// Publishes a Kubernetes Event on the object; a failure to publish is logged, not fatal.
    pub async fn event(&self, object: &ObjectReference, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, object).await {
            tracing::warn!(error = %e, reason, "could not publish an Event");
        }
    }

    /// The value under `reference.key` of the Secret `reference.name` in `namespace`.
    pub async fn secret(&self, namespace: &str, reference: &SecretRef) -> Result<String, Failure> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = api
            .get_opt(&reference.name)
            .await
            .map_err(|e| Failure::kube(&format!("reading the Secret {:?}", reference.name), &e))?
            .ok_or_else(|| {
                Failure::new(
                    "SecretNotFound",
                    format!(
                        "the Secret {:?} does not exist in namespace {namespace:?}",
                        reference.name
                    ),
                )
            })?;
        let from_data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned());
        let from_string = secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .cloned();
        from_data.or(from_string).ok_or_else(|| {
            Failure::new(
                "SecretKeyMissing",
                format!(
                    "the Secret {:?} has no key {:?}",
                    reference.name, reference.key
                ),
            )
        })
    }

    /// Whether the Secret exists with the key, without reading its value into a message.
    pub async fn check_secret(
        &self,
        namespace: &str,
        reference: &SecretRef,
    ) -> Result<(), Failure> {
        self.secret(namespace, reference).await.map(|_| ())
    }
}
