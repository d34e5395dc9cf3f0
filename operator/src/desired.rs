//! What a resource's spec asks for, computed without any I/O: the reconcilers only carry it out.
//!
//! - [`problems`]: why an `EventPipeline` spec cannot be declared as it is.
//! - [`queues`]: the queues and bindings to declare on RabbitMQ, in the runtime's own terms.
//! - [`policies`]: the RabbitMQ policies that carry each queue's dead-letter arrangement, so it
//!   can change without deleting a queue that holds messages.
//! - [`retry_of`]: the retry policy a consuming service gets, from the queues it reads.

use std::collections::{BTreeMap, HashMap, HashSet};

use sagaflow_runtime::bus::QueueSpec;
use sagaflow_runtime::bus::topology::dlq_name;
use serde_json::{Value, json};

use crate::crd::pipeline::{EventPipelineSpec, Queue, RetryPolicy};

/// The prefix of every policy the operator owns.
pub const POLICY_PREFIX: &str = "sagaflow.";

/// A RabbitMQ policy, as the management API takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub name: String,
    pub pattern: String,
    pub definition: Value,
}

/// The consuming service a queue belongs to: `<exchange>.<service>` → `<service>`.
pub fn service_of(queue: &Queue) -> &str {
    queue
        .name
        .strip_prefix(&format!("{}.", queue.exchange))
        .unwrap_or(&queue.name)
}

/// Everything wrong with a spec, each problem naming the field (empty when it can be declared).
pub fn problems(spec: &EventPipelineSpec) -> Vec<String> {
    let mut out = Vec::new();
    let exchanges: HashSet<&str> = spec.exchanges.iter().map(String::as_str).collect();
    if exchanges.len() != spec.exchanges.len() {
        out.push("spec.exchanges: an exchange is listed twice".to_owned());
    }
    let mut names = HashSet::new();
    for (i, q) in spec.queues.iter().enumerate() {
        if !names.insert(q.name.as_str()) {
            out.push(format!(
                "spec.queues[{i}].name: {:?} is declared twice",
                q.name
            ));
        }
        if !exchanges.contains(q.exchange.as_str()) {
            out.push(format!(
                "spec.queues[{i}].exchange: {:?} is not in spec.exchanges",
                q.exchange
            ));
        }
        if q.bindings.is_empty() {
            out.push(format!(
                "spec.queues[{i}].bindings: a queue without bindings receives nothing"
            ));
        }
        if q.name.ends_with(".dlq") {
            out.push(format!(
                "spec.queues[{i}].name: names ending in .dlq are the dead-letter queues'"
            ));
        }
        if q.retry.max_delay_seconds < q.retry.base_delay_seconds {
            out.push(format!(
                "spec.queues[{i}].retry: maxDelaySeconds is below baseDelaySeconds"
            ));
        }
    }
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    for (i, q) in spec.queues.iter().enumerate() {
        let j = *first_of.entry(service_of(q)).or_insert(i);
        if spec.queues[j].retry != q.retry {
            out.push(format!(
                "spec.queues[{i}].retry: differs from spec.queues[{j}].retry, and {:?} reads both \
                 (a service has one retry policy)",
                service_of(q)
            ));
        }
    }
    let mut streams = HashSet::new();
    for (i, s) in spec.streams.iter().enumerate() {
        if !streams.insert(s.name.as_str()) {
            out.push(format!(
                "spec.streams[{i}].name: {:?} is declared twice",
                s.name
            ));
        }
    }
    out
}

/// The queues to declare, with their bindings.
pub fn queues(spec: &EventPipelineSpec) -> Vec<QueueSpec> {
    spec.queues
        .iter()
        .map(|q| QueueSpec {
            name: q.name.clone(),
            exchange: q.exchange.clone(),
            bindings: q.bindings.clone(),
        })
        .collect()
}

/// One policy per queue: a message the broker dead-letters (rejected without requeue) goes to
/// `<exchange>.dlq`, where the services' explicit dead letters go too.
pub fn policies(spec: &EventPipelineSpec) -> Vec<Policy> {
    spec.queues
        .iter()
        .map(|q| Policy {
            name: format!("{POLICY_PREFIX}{}", q.name),
            pattern: format!("^{}$", regex_escape(&q.name)),
            definition: json!({
                "dead-letter-exchange": "",
                "dead-letter-routing-key": dlq_name(&q.exchange),
            }),
        })
        .collect()
}

/// The retry policy of each consuming service (`notification-service` …), from its queues.
pub fn retry_of(spec: &EventPipelineSpec) -> BTreeMap<String, RetryPolicy> {
    let mut out = BTreeMap::new();
    for q in &spec.queues {
        out.entry(service_of(q).to_owned())
            .or_insert_with(|| q.retry.clone());
    }
    out
}

/// The largest stream cap (the services take one `STREAM_MAX_LEN`).
pub fn stream_max_len(spec: &EventPipelineSpec) -> Option<u64> {
    spec.streams.iter().map(|s| s.max_length).max()
}

fn regex_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() && c != '-' && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SecretRef;

    /// A spec with every default, as the API server would fill it in.
    fn defaults() -> EventPipelineSpec {
        let secret = serde_json::json!({"name": "s"});
        serde_json::from_value(serde_json::json!({"rabbitmq": secret, "redis": secret}))
            .expect("a minimal spec")
    }

    #[test]
    fn the_defaults_declare_the_runtime_s_own_topology() {
        let spec = defaults();
        assert_eq!(
            spec.rabbitmq,
            SecretRef {
                name: "s".into(),
                key: "url".into()
            }
        );
        assert!(problems(&spec).is_empty(), "{:?}", problems(&spec));
        let mut got = queues(&spec);
        let mut want = sagaflow_runtime::bus::topology::default_queues();
        got.sort_by(|a, b| a.name.cmp(&b.name));
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(got, want);
    }

    #[test]
    fn every_problem_names_its_field() {
        let mut spec = defaults();
        spec.queues[1].exchange = "nowhere.events".into();
        spec.queues[2].bindings.clear();
        spec.queues[3].retry.max_delay_seconds = 0;
        spec.queues.push(spec.queues[0].clone());
        spec.streams.push(spec.streams[0].clone());
        let p = problems(&spec);
        for field in [
            "spec.queues[1].exchange",
            "spec.queues[2].bindings",
            "spec.queues[3].retry",
            "spec.queues[6].name",
            "spec.streams[2].name",
        ] {
            assert!(
                p.iter().any(|m| m.starts_with(field)),
                "{field} missing in {p:?}"
            );
        }
        // queues[3]'s retry is also no longer its service's (audit-service reads queues 1 to 3).
        assert_eq!(p.len(), 6, "{p:?}");
    }

    #[test]
    fn a_service_reading_two_queues_with_different_retries_is_a_problem() {
        let mut spec = defaults();
        let i = spec
            .queues
            .iter()
            .position(|q| q.name == "audit.events.audit-service")
            .expect("audit queue");
        spec.queues[i].retry.max_attempts = 9;
        let p = problems(&spec);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(&format!("spec.queues[{i}].retry")),
            "{p:?}"
        );
        assert!(p[0].contains("audit-service"), "{p:?}");
    }

    #[test]
    fn each_queue_gets_a_dead_letter_policy_and_each_service_its_retry() {
        let spec = defaults();
        let p = policies(&spec);
        assert_eq!(p.len(), spec.queues.len());
        let audit = p
            .iter()
            .find(|p| p.name == "sagaflow.audit.events.audit-service")
            .expect("a policy for the audit queue");
        assert_eq!(audit.pattern, "^audit\\.events\\.audit-service$");
        assert_eq!(
            audit.definition["dead-letter-routing-key"],
            "audit.events.dlq"
        );
        let retry = retry_of(&spec);
        assert_eq!(
            retry.keys().map(String::as_str).collect::<Vec<_>>(),
            ["audit-service", "complaint-service", "notification-service"]
        );
        assert_eq!(retry["audit-service"], RetryPolicy::default());
        assert_eq!(stream_max_len(&spec), Some(1_000_000));
    }
}
