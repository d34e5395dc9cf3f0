//! What a resource's spec asks for, computed without any I/O: the reconcilers only carry it out.
//!
//! - [`problems`]: why an `EventPipeline` spec cannot be declared as it is.
//! - [`queues`]: the queues and bindings to declare on RabbitMQ, in the runtime's own terms.

use std::collections::HashSet;

use sagaflow_runtime::bus::QueueSpec;

use crate::crd::pipeline::EventPipelineSpec;

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
        assert_eq!(p.len(), 5, "{p:?}");
    }
}
