//! Standard Kubernetes conditions, kept without I/O: a condition's `lastTransitionTime` moves only
//! when its status does, so a status written again with nothing changed is the same status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// One condition as a reconcile decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub type_: &'static str,
    pub ok: bool,
    /// PascalCase.
    pub reason: String,
    pub message: String,
}

impl Verdict {
    pub fn ok(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            ok: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn failed(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            ok: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// `current` with each verdict applied at `now` for `generation`: a condition whose status is
/// unchanged keeps its `lastTransitionTime`; conditions not named are kept as they are.
pub fn apply(
    current: &[Condition],
    verdicts: &[Verdict],
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = current.to_vec();
    for v in verdicts {
        let status = if v.ok { "True" } else { "False" };
        let previous = out.iter().position(|c| c.type_ == v.type_);
        let since = match previous {
            Some(i) if out[i].status == status => out[i].last_transition_time.clone(),
            _ => now.clone(),
        };
        let condition = Condition {
            type_: v.type_.to_owned(),
            status: status.to_owned(),
            reason: v.reason.clone(),
            message: v.message.clone(),
            observed_generation: generation,
            last_transition_time: since,
        };
        match previous {
            Some(i) => out[i] = condition,
            None => out.push(condition),
        }
    }
    out
}

/// Whether the condition `type_` is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("a time"))
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_does() {
        let first = apply(
            &[],
            &[Verdict::ok("Ready", "Declared", "all there")],
            Some(1),
            at(100),
        );
        assert_eq!(first[0].last_transition_time, at(100));
        let same = apply(
            &first,
            &[Verdict::ok("Ready", "Declared", "all there")],
            Some(2),
            at(200),
        );
        assert_eq!(same[0].last_transition_time, at(100));
        assert_eq!(same[0].observed_generation, Some(2));
        let failed = apply(
            &same,
            &[Verdict::failed("Ready", "RabbitMQUnreachable", "refused")],
            Some(2),
            at(300),
        );
        assert_eq!(failed[0].last_transition_time, at(300));
        assert_eq!(
            (failed[0].status.as_str(), failed[0].reason.as_str()),
            ("False", "RabbitMQUnreachable")
        );
        assert!(!is_true(&failed, "Ready"));
        assert!(is_true(&same, "Ready"));
    }

    #[test]
    fn conditions_not_named_are_kept_in_place() {
        let two = apply(
            &[],
            &[
                Verdict::ok("RabbitMQReady", "Declared", ""),
                Verdict::ok("RedisReady", "Declared", ""),
            ],
            Some(1),
            at(1),
        );
        let one = apply(
            &two,
            &[Verdict::failed("RedisReady", "Unreachable", "")],
            Some(1),
            at(2),
        );
        assert_eq!(one.len(), 2);
        assert_eq!(one[0], two[0]);
        assert_eq!(one[1].status, "False");
    }
}
