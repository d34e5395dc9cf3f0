//! The operator's view of the newest sagas: how many run, compensate or completed, how long
//! they took, which complaints were escalated. A pure fold over complaint views.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::events::EventType;
use crate::time::millis_opt;
use crate::values::{Priority, SagaStatus, Status};
use crate::view::ComplaintView;

/// Percentiles of a set of durations, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Durations {
    pub count: usize,
    pub p50_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
}

impl Durations {
    fn of(mut seconds: Vec<f64>) -> Self {
        seconds.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least p of the values at or below it.
        let rank = |p: f64| {
            let n = seconds.len();
            let k = ((p * n as f64).ceil() as usize).clamp(1, n);
            seconds[k - 1]
        };
        if seconds.is_empty() {
            return Self::default();
        }
        Self {
            count: seconds.len(),
            p50_seconds: Some(rank(0.50)),
            p95_seconds: Some(rank(0.95)),
            max_seconds: seconds.last().copied(),
        }
    }
}

/// An escalated complaint, as the operator's view lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Escalation {
    pub id: String,
    pub title: String,
    pub priority: Priority,
    pub status: Status,
    pub assigned_to: Option<String>,
    #[serde(with = "millis_opt")]
    pub escalated_at: Option<DateTime<Utc>>,
}

/// What `GET /api/sagas/summary` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaSummary {
    /// How many complaints were looked at: the newest ones, at most the window asked for.
    pub complaints: usize,
    /// Complaints by saga status (every status present, 0 when none).
    pub sagas: BTreeMap<&'static str, usize>,
    /// Complaints by status (every status present, 0 when none).
    pub statuses: BTreeMap<&'static str, usize>,
    /// Created → closed, of the sagas that completed.
    pub completed: Durations,
    /// Compensation required → compensated, of every finished compensation.
    pub compensations: Durations,
    /// Compensations asked for but not finished yet.
    pub compensating: usize,
    pub escalated_count: usize,
    /// The escalated complaints not closed yet, the most recently escalated first (at most 50).
    pub escalations: Vec<Escalation>,
}

const ESCALATIONS_SHOWN: usize = 50;

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

impl SagaSummary {
    pub fn of(views: &[ComplaintView]) -> Self {
        let mut sagas: BTreeMap<&'static str, usize> =
            SagaStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let mut statuses: BTreeMap<&'static str, usize> =
            Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let mut completed = Vec::new();
        let mut compensations = Vec::new();
        let mut compensating = 0;
        let mut escalated_count = 0;
        let mut escalations = Vec::new();
        let required = EventType::ComplaintCompensationRequired.as_str();
        let compensated = EventType::ComplaintCompensated.as_str();
        for v in views {
            *sagas.entry(v.saga_status.as_str()).or_default() += 1;
            *statuses.entry(v.status.as_str()).or_default() += 1;
            if v.saga_status == SagaStatus::Completed
                && let Some(closed) = v.closed_at
            {
                completed.push(seconds_between(v.created_at, closed));
            }
            // The timeline is in version order: each COMPENSATED ends the REQUIRED before it.
            let mut open = None;
            for entry in &v.timeline {
                if entry.event_type == required {
                    open = Some(entry.timestamp);
                } else if entry.event_type == compensated
                    && let Some(start) = open.take()
                {
                    compensations.push(seconds_between(start, entry.timestamp));
                }
            }
            if open.is_some() {
                compensating += 1;
            }
            if v.escalated_at.is_some() {
                escalated_count += 1;
                if v.status != Status::Closed {
                    escalations.push(Escalation {
                        id: v.id.clone(),
                        title: v.title.clone(),
                        priority: v.priority,
                        status: v.status,
                        assigned_to: v.assigned_to.clone(),
                        escalated_at: v.escalated_at,
                    });
                }
            }
        }
        escalations.sort_by_key(|e| std::cmp::Reverse(e.escalated_at));
        escalations.truncate(ESCALATIONS_SHOWN);
        Self {
            complaints: views.len(),
            sagas,
            statuses,
            completed: Durations::of(completed),
            compensations: Durations::of(compensations),
            compensating,
            escalated_count,
            escalations,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::view::TimelineEntry;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0)
            .single()
            .expect("a valid time")
    }

    fn entry(event: EventType, version: u64, seconds: i64) -> TimelineEntry {
        TimelineEntry {
            event_id: format!("e{version}"),
            event_type: event.as_str().into(),
            version,
            timestamp: at(seconds),
            status: Status::Open,
            user_id: None,
            correlation_id: "c".into(),
        }
    }

    fn view(id: &str, status: Status, saga: SagaStatus) -> ComplaintView {
        ComplaintView {
            id: id.into(),
            user_id: "u".into(),
            title: format!("complaint {id}"),
            description: "d".into(),
            status,
            priority: Priority::High,
            category: "c".into(),
            assigned_to: None,
            resolution: None,
            created_at: at(0),
            updated_at: at(0),
            closed_at: None,
            escalated_at: None,
            version: 1,
            saga_status: saga,
            timeline: vec![entry(EventType::ComplaintCreated, 1, 0)],
            notifications: vec![],
            audit_trail: vec![],
        }
    }

    #[test]
    fn nothing_gives_zeros_for_every_status_and_no_percentiles() {
        let s = SagaSummary::of(&[]);
        assert_eq!(s.complaints, 0);
        assert_eq!(s.sagas.len(), SagaStatus::ALL.len());
        assert!(s.sagas.values().all(|n| *n == 0));
        assert_eq!(s.statuses.len(), Status::ALL.len());
        assert_eq!(s.completed, Durations::default());
    }

    #[test]
    fn completed_sagas_give_created_to_closed_percentiles() {
        let views: Vec<ComplaintView> = (1..=20)
            .map(|i| {
                let mut v = view(&i.to_string(), Status::Closed, SagaStatus::Completed);
                v.closed_at = Some(at(i));
                v
            })
            .chain([view("open", Status::Open, SagaStatus::Running)])
            .collect();
        let s = SagaSummary::of(&views);
        assert_eq!(s.complaints, 21);
        assert_eq!(s.sagas["COMPLETED"], 20);
        assert_eq!(s.sagas["RUNNING"], 1);
        assert_eq!(s.statuses["CLOSED"], 20);
        assert_eq!(s.completed.count, 20);
        assert_eq!(s.completed.p50_seconds, Some(10.0));
        assert_eq!(s.completed.p95_seconds, Some(19.0));
        assert_eq!(s.completed.max_seconds, Some(20.0));
    }

    #[test]
    fn compensations_pair_each_required_with_the_compensated_after_it() {
        let mut twice = view("twice", Status::Assigned, SagaStatus::Running);
        twice.timeline.extend([
            entry(EventType::ComplaintAssigned, 2, 1),
            entry(EventType::ComplaintCompensationRequired, 3, 10),
            entry(EventType::ComplaintCompensated, 4, 13),
            entry(EventType::ComplaintAssigned, 5, 20),
            entry(EventType::ComplaintCompensationRequired, 6, 30),
            entry(EventType::ComplaintCompensated, 7, 31),
        ]);
        let mut pending = view("pending", Status::Assigned, SagaStatus::Compensating);
        pending.timeline.extend([
            entry(EventType::ComplaintAssigned, 2, 1),
            entry(EventType::ComplaintCompensationRequired, 3, 5),
        ]);
        let s = SagaSummary::of(&[twice, pending]);
        assert_eq!(s.compensations.count, 2);
        assert_eq!(s.compensations.max_seconds, Some(3.0));
        assert_eq!(s.compensations.p50_seconds, Some(1.0));
        assert_eq!(s.compensating, 1);
        assert_eq!(s.sagas["COMPENSATING"], 1);
    }

    #[test]
    fn escalations_list_the_open_ones_most_recent_first_and_count_all() {
        let mut old = view("old", Status::Open, SagaStatus::Running);
        old.escalated_at = Some(at(100));
        let mut new = view("new", Status::Open, SagaStatus::Running);
        new.escalated_at = Some(at(200));
        let mut closed = view("closed", Status::Closed, SagaStatus::Completed);
        closed.escalated_at = Some(at(300));
        let s = SagaSummary::of(&[
            old,
            new,
            closed,
            view("x", Status::Open, SagaStatus::Running),
        ]);
        assert_eq!(s.escalated_count, 3);
        let ids: Vec<&str> = s.escalations.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["new", "old"]);
    }
}
