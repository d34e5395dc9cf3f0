//! Who reads what (SPEC section 6): exchanges, one durable queue per consuming service and
//! exchange named `<exchange>.<service>`, their bindings, and topic matching.

/// A queue and what it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub exchange: String,
    /// Topic patterns (`*` one word, `#` zero or more).
    pub bindings: Vec<String>,
}

impl QueueSpec {
    pub fn new(exchange: &str, service: &str, bindings: &[&str]) -> Self {
        Self {
            name: queue_name(exchange, service),
            exchange: exchange.to_owned(),
            bindings: bindings.iter().map(|b| (*b).to_owned()).collect(),
        }
    }
}

pub const EXCHANGES: [&str; 3] = ["complaints.events", "notifications.events", "audit.events"];
pub const COMPLAINT_SERVICE: &str = "complaint-service";
pub const NOTIFICATION_SERVICE: &str = "notification-service";
pub const AUDIT_SERVICE: &str = "audit-service";
pub const EVENT_STORE_GROUP: &str = "event-store";
pub const STREAMS: [&str; 2] = ["complaints-stream", "notifications-stream"];

pub fn queue_name(exchange: &str, service: &str) -> String {
    format!("{exchange}.{service}")
}

/// The dead-letter queue of an exchange.
pub fn dlq_name(exchange: &str) -> String {
    format!("{exchange}.dlq")
}

/// The default topology: notification reads complaints.events; audit reads all three;
/// complaint reads notifications.events and audit.events.
pub fn default_queues() -> Vec<QueueSpec> {
    vec![
        QueueSpec::new("complaints.events", NOTIFICATION_SERVICE, &["#"]),
        QueueSpec::new("complaints.events", AUDIT_SERVICE, &["#"]),
        QueueSpec::new("notifications.events", AUDIT_SERVICE, &["#"]),
        QueueSpec::new("audit.events", AUDIT_SERVICE, &["#"]),
        QueueSpec::new("notifications.events", COMPLAINT_SERVICE, &["#"]),
        QueueSpec::new("audit.events", COMPLAINT_SERVICE, &["#"]),
    ]
}

/// The queues of one service in the default topology.
pub fn queues_of(service: &str) -> Vec<QueueSpec> {
    default_queues()
        .into_iter()
        .filter(|q| q.name.ends_with(&format!(".{service}")))
        .collect()
}

/// AMQP topic matching: words split on `.`, `*` matches one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((&"*", rest)) => !k.is_empty() && go(rest, &k[1..]),
            Some((word, rest)) => k.first() == Some(word) && go(rest, &k[1..]),
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("#", "complaint.created"));
        assert!(topic_matches("complaint.*", "complaint.created"));
        assert!(!topic_matches(
            "complaint.*",
            "complaint.compensation.required"
        ));
        assert!(topic_matches(
            "complaint.#",
            "complaint.compensation.required"
        ));
        assert!(topic_matches("complaint.#", "complaint"));
        assert!(topic_matches("*.created", "complaint.created"));
        assert!(!topic_matches("notification.*", "complaint.created"));
        assert!(topic_matches("complaint.created", "complaint.created"));
        assert!(topic_matches(
            "#.required",
            "complaint.compensation.required"
        ));
    }

    #[test]
    fn default_topology_names() {
        let names: Vec<String> = default_queues().into_iter().map(|q| q.name).collect();
        assert!(names.contains(&"complaints.events.notification-service".to_owned()));
        assert!(names.contains(&"audit.events.complaint-service".to_owned()));
        assert_eq!(queues_of(AUDIT_SERVICE).len(), 3);
        assert_eq!(queues_of(COMPLAINT_SERVICE).len(), 2);
        assert_eq!(queues_of(NOTIFICATION_SERVICE).len(), 1);
        assert_eq!(dlq_name("complaints.events"), "complaints.events.dlq");
    }
}
