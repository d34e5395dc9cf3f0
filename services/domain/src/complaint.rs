//! The complaint aggregate (SPEC section 4): commands are decided against the state, events
//! evolve it. Both are pure and synchronous; time and ids come in from the caller.
//!
//! One table, [`check`], says which event may follow which state. `decide` builds the event a
//! command asks for and checks it; `evolve` checks every event it folds, so a stream with a bad
//! transition or a gap is refused, never papered over.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::events::{
    CompensationAction, ComplaintAssigned, ComplaintClosed, ComplaintCompensated,
    ComplaintCompensationRequired, ComplaintCreated, ComplaintEscalated, ComplaintProcessed,
    EventType, Payload,
};
use crate::time::millis_opt;
use crate::values::{
    Category, Description, Priority, Reason, Resolution, SagaStatus, Status, Title, UserId,
};

/// What a user or a service asks of a complaint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create {
        complaint_id: String,
        user_id: UserId,
        title: Title,
        description: Description,
        priority: Priority,
        category: Category,
    },
    Assign {
        assigned_to: UserId,
    },
    /// Without a resolution: start work (ASSIGNED → IN_PROGRESS); with one: resolve.
    Process {
        resolution: Option<Resolution>,
    },
    /// Without a reason only a RESOLVED complaint closes; with one, any open status does.
    Close {
        reason: Option<Reason>,
    },
    /// Undo one step: the one named, or the latest one not undone yet.
    Compensate {
        reason: Reason,
        failed_event_id: Option<String>,
    },
    /// The other services have undone their part: restore the status before the step.
    CompleteCompensation {
        failed_event_id: String,
    },
    /// The assignment deadline has passed.
    Escalate {
        deadline: DateTime<Utc>,
    },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create { .. } => "create",
            Command::Assign { .. } => "assign",
            Command::Process { .. } => "process",
            Command::Close { .. } => "close",
            Command::Compensate { .. } => "compensate",
            Command::CompleteCompensation { .. } => "completeCompensation",
            Command::Escalate { .. } => "escalate",
        }
    }
}

/// A command the aggregate refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("complaint not found")]
    NotFound,
    #[error("complaint already exists")]
    AlreadyExists,
    #[error("cannot {command} a complaint that is {status}: {reason}")]
    InvalidTransition {
        command: &'static str,
        status: Status,
        reason: String,
    },
}

/// A stream that cannot be folded: a gap, a repeat, or an event its state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event_id} (version {version}) cannot be applied: {reason}")]
pub struct EvolveError {
    pub event_id: String,
    pub version: u64,
    pub reason: String,
}

/// A step that compensation can undo, with what it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub event_id: String,
    pub event_type: EventType,
    pub status_before: Status,
    pub assignee_before: Option<String>,
    pub resolution_before: Option<String>,
}

/// A compensation asked for and not yet completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingCompensation {
    pub failed_event_id: String,
    pub failed_step: EventType,
    pub reason: String,
    pub required_event_id: String,
    #[serde(with = "crate::time::millis")]
    pub required_at: DateTime<Utc>,
}

/// A complaint that exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Complaint {
    pub id: String,
    pub user_id: String,
    pub title: String,
    pub description: String,
    pub priority: Priority,
    pub category: String,
    pub status: Status,
    pub assigned_to: Option<String>,
    pub resolution: Option<String>,
    #[serde(with = "crate::time::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::time::millis")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "millis_opt")]
    pub closed_at: Option<DateTime<Utc>>,
    #[serde(with = "millis_opt")]
    pub escalated_at: Option<DateTime<Utc>>,
    /// Undoable steps, oldest first; compensation pops from here.
    pub steps: Vec<Step>,
    pub compensation: Option<PendingCompensation>,
}

/// The aggregate's state: its version (the number of events folded) and the complaint, once
/// created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplaintState {
    pub version: u64,
    pub complaint: Option<Complaint>,
}

impl Complaint {
    pub fn saga_status(&self, closing_mail_sent: bool) -> SagaStatus {
        if self.compensation.is_some() {
            SagaStatus::Compensating
        } else if self.status == Status::Closed && closing_mail_sent {
            SagaStatus::Completed
        } else {
            SagaStatus::Running
        }
    }

    fn step(&self, event_id: &str) -> Option<(usize, &Step)> {
        self.steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.event_id == event_id)
    }
}

/// The statuses a command may start from (SPEC section 4's table).
pub fn allowed_from(event: &Payload) -> &'static [Status] {
    use Status::*;
    match event {
        Payload::ComplaintAssigned(_) => &[Open, Assigned, InProgress],
        Payload::ComplaintProcessed(p) if p.status == InProgress => &[Assigned],
        Payload::ComplaintProcessed(_) => &[Assigned, InProgress],
        Payload::ComplaintClosed(c) if c.reason.is_none() => &[Resolved],
        Payload::ComplaintClosed(_) => &[Open, Assigned, InProgress, Resolved],
        Payload::ComplaintCompensationRequired(_) | Payload::ComplaintCompensated(_) => {
            &[Open, Assigned, InProgress, Resolved]
        }
        Payload::ComplaintEscalated(_) => &[Open],
        _ => &[],
    }
}

/// Whether `event` may follow `complaint`: the one table both `decide` and `evolve` obey.
pub fn check(complaint: &Complaint, event: &Payload) -> Result<(), String> {
    if let Payload::ComplaintCreated(_) = event {
        return Err("the complaint already exists".into());
    }
    if complaint.status == Status::Closed {
        return Err("CLOSED is final".into());
    }
    let pending = complaint.compensation.as_ref();
    match (event, pending) {
        (Payload::ComplaintCompensated(c), Some(p)) => {
            if c.failed_event_id != p.failed_event_id {
                return Err(format!(
                    "the compensation in progress is for event {}, not {}",
                    p.failed_event_id, c.failed_event_id
                ));
            }
            let Some((_, step)) = complaint.step(&c.failed_event_id) else {
                return Err("the step to undo is not in the history".into());
            };
            if c.restored_status != step.status_before
                || c.restored_assignee != step.assignee_before
            {
                return Err(
                    "the restored status or assignee is not the one before the step".into(),
                );
            }
            return Ok(());
        }
        (Payload::ComplaintCompensated(_), None) => {
            return Err("no compensation is in progress".into());
        }
        (_, Some(p)) => {
            return Err(format!(
                "a compensation of {} is in progress",
                p.failed_step.as_str()
            ));
        }
        (_, None) => {}
    }
    if !allowed_from(event).contains(&complaint.status) {
        return Err(format!(
            "{} is allowed only from {}",
            event_label(event),
            allowed_from(event)
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    match event {
        Payload::ComplaintCompensationRequired(r)
            if complaint.step(&r.failed_event_id).is_none() =>
        {
            Err(format!(
                "event {} is not a step that can still be undone",
                r.failed_event_id
            ))
        }
        Payload::ComplaintEscalated(_) if complaint.escalated_at.is_some() => {
            Err("the complaint was escalated already".into())
        }
        Payload::ComplaintEscalated(e) if e.priority != complaint.priority => {
            Err("the escalation's priority is not the complaint's".into())
        }
        _ => Ok(()),
    }
}

fn event_label(event: &Payload) -> String {
    match event {
        Payload::ComplaintProcessed(p) => format!("processing to {}", p.status),
        Payload::ComplaintClosed(c) if c.reason.is_none() => "closing without a reason".into(),
        Payload::ComplaintClosed(_) => "closing with a reason".into(),
        other => other.event_type().as_str().to_owned(),
    }
}

/// Decides what a command does: the events to record, or why not.
pub fn decide(
    state: &ComplaintState,
    command: &Command,
    at: DateTime<Utc>,
) -> Result<Vec<Payload>, DomainError> {
    let complaint = match (&state.complaint, command) {
        (
            None,
            Command::Create {
                complaint_id,
                user_id,
                title,
                description,
                priority,
                category,
            },
        ) => {
            return Ok(vec![Payload::ComplaintCreated(ComplaintCreated {
                complaint_id: complaint_id.clone(),
                user_id: user_id.as_str().to_owned(),
                title: title.as_str().to_owned(),
                description: description.as_str().to_owned(),
                priority: *priority,
                category: category.as_str().to_owned(),
                created_at: at,
            })]);
        }
        (Some(_), Command::Create { .. }) => return Err(DomainError::AlreadyExists),
        (None, _) => return Err(DomainError::NotFound),
        (Some(c), _) => c,
    };
    let id = complaint.id.clone();
    let event = match command {
        Command::Create { .. } => return Err(DomainError::AlreadyExists),
        Command::Assign { assigned_to } => Payload::ComplaintAssigned(ComplaintAssigned {
            complaint_id: id,
            assigned_to: assigned_to.as_str().to_owned(),
            previous_assignee: complaint.assigned_to.clone(),
            assigned_at: at,
        }),
        Command::Process { resolution } => Payload::ComplaintProcessed(ComplaintProcessed {
            complaint_id: id,
            status: if resolution.is_some() {
                Status::Resolved
            } else {
                Status::InProgress
            },
            resolution: resolution.as_ref().map(|r| r.as_str().to_owned()),
            processed_at: at,
        }),
        Command::Close { reason } => Payload::ComplaintClosed(ComplaintClosed {
            complaint_id: id,
            reason: reason.as_ref().map(|r| r.as_str().to_owned()),
            closed_at: at,
        }),
        Command::Compensate {
            reason,
            failed_event_id,
        } => {
            let step = match failed_event_id {
                Some(wanted) => complaint.step(wanted).map(|(_, s)| s),
                None => complaint.steps.last(),
            };
            let Some(step) = step else {
                return Err(refused(
                    command,
                    complaint,
                    match failed_event_id {
                        Some(id) => format!("event {id} is not a step that can still be undone"),
                        None => "there is no step to undo".into(),
                    },
                ));
            };
            compensation_required(complaint, step, reason.as_str())
        }
        Command::CompleteCompensation { failed_event_id } => {
            let step = complaint.step(failed_event_id).map(|(_, s)| s);
            Payload::ComplaintCompensated(ComplaintCompensated {
                complaint_id: id,
                failed_event_id: failed_event_id.clone(),
                restored_status: step.map_or(complaint.status, |s| s.status_before),
                restored_assignee: step
                    .map_or(complaint.assigned_to.clone(), |s| s.assignee_before.clone()),
            })
        }
        Command::Escalate { deadline } => Payload::ComplaintEscalated(ComplaintEscalated {
            complaint_id: id,
            priority: complaint.priority,
            deadline: *deadline,
            escalated_at: at,
        }),
    };
    check(complaint, &event).map_err(|reason| refused(command, complaint, reason))?;
    Ok(vec![event])
}

fn refused(command: &Command, complaint: &Complaint, reason: String) -> DomainError {
    DomainError::InvalidTransition {
        command: command.name(),
        status: complaint.status,
        reason,
    }
}

/// The ordered actions that undo `step` (and every step after it).
fn compensation_required(complaint: &Complaint, step: &Step, reason: &str) -> Payload {
    let undone: Vec<&str> = complaint
        .steps
        .iter()
        .skip_while(|s| s.event_id != step.event_id)
        .map(|s| s.event_id.as_str())
        .collect();
    let id = &complaint.id;
    let action =
        |service: &str, action: &str, parameters: serde_json::Value, order| CompensationAction {
            service: service.into(),
            action: action.into(),
            parameters,
            order,
        };
    Payload::ComplaintCompensationRequired(ComplaintCompensationRequired {
        complaint_id: id.clone(),
        failed_step: step.event_type.as_str().to_owned(),
        failed_event_id: step.event_id.clone(),
        reason: reason.to_owned(),
        actions: vec![
            action(
                "notification-service",
                "CANCEL_AND_CORRECT_NOTIFICATIONS",
                serde_json::json!({"complaintId": id, "failedEventId": step.event_id, "eventIds": undone}),
                1,
            ),
            action(
                "audit-service",
                "MARK_COMPENSATED",
                serde_json::json!({"complaintId": id, "failedEventId": step.event_id, "eventIds": undone}),
                2,
            ),
            action(
                "complaint-service",
                "RESTORE_STATUS",
                serde_json::json!({
                    "complaintId": id,
                    "failedEventId": step.event_id,
                    "restoredStatus": step.status_before,
                    "restoredAssignee": step.assignee_before,
                }),
                3,
            ),
        ],
    })
}

/// Folds one recorded event into the state, checking its version and its transition.
pub fn evolve(state: ComplaintState, envelope: &Envelope) -> Result<ComplaintState, EvolveError> {
    let version = envelope.metadata.version;
    let fail = |reason: String| EvolveError {
        event_id: envelope.event_id.clone(),
        version,
        reason,
    };
    if version != state.version + 1 {
        return Err(fail(format!(
            "expected version {}, the stream has a gap or a repeat",
            state.version + 1
        )));
    }
    let payload = envelope.payload().map_err(|e| fail(e.to_string()))?;
    let at = envelope.metadata.timestamp;
    let complaint = match (state.complaint, payload) {
        (None, Payload::ComplaintCreated(c)) => {
            if c.complaint_id != envelope.aggregate_id {
                return Err(fail("complaintId differs from aggregateId".into()));
            }
            Complaint {
                id: c.complaint_id,
                user_id: c.user_id,
                title: c.title,
                description: c.description,
                priority: c.priority,
                category: c.category,
                status: Status::Open,
                assigned_to: None,
                resolution: None,
                created_at: c.created_at,
                updated_at: at,
                closed_at: None,
                escalated_at: None,
                steps: Vec::new(),
                compensation: None,
            }
        }
        (None, _) => return Err(fail("the first event must be COMPLAINT_CREATED".into())),
        (Some(mut c), payload) => {
            check(&c, &payload).map_err(fail)?;
            apply(&mut c, &envelope.event_id, payload, at);
            c.updated_at = at;
            c
        }
    };
    Ok(ComplaintState {
        version,
        complaint: Some(complaint),
    })
}

/// Applies a checked event to an existing complaint.
fn apply(c: &mut Complaint, event_id: &str, payload: Payload, at: DateTime<Utc>) {
    let step = |c: &Complaint, t: EventType| Step {
        event_id: event_id.to_owned(),
        event_type: t,
        status_before: c.status,
        assignee_before: c.assigned_to.clone(),
        resolution_before: c.resolution.clone(),
    };
    match payload {
        Payload::ComplaintAssigned(a) => {
            c.steps.push(step(c, EventType::ComplaintAssigned));
            c.status = Status::Assigned;
            c.assigned_to = Some(a.assigned_to);
        }
        Payload::ComplaintProcessed(p) => {
            c.steps.push(step(c, EventType::ComplaintProcessed));
            c.status = p.status;
            if p.resolution.is_some() {
                c.resolution = p.resolution;
            }
        }
        Payload::ComplaintClosed(_) => {
            c.status = Status::Closed;
            c.closed_at = Some(at);
            c.steps.clear();
        }
        Payload::ComplaintCompensationRequired(r) => {
            let failed_step = c
                .step(&r.failed_event_id)
                .map_or(EventType::ComplaintAssigned, |(_, s)| s.event_type);
            c.compensation = Some(PendingCompensation {
                failed_event_id: r.failed_event_id,
                failed_step,
                reason: r.reason,
                required_event_id: event_id.to_owned(),
                required_at: at,
            });
        }
        Payload::ComplaintCompensated(done) => {
            if let Some((index, step)) = c.step(&done.failed_event_id) {
                c.resolution = step.resolution_before.clone();
                c.steps.truncate(index);
            }
            c.status = done.restored_status;
            c.assigned_to = done.restored_assignee;
            c.compensation = None;
        }
        Payload::ComplaintEscalated(_) => c.escalated_at = Some(at),
        // Created is handled by `evolve`; other aggregates' events never reach a complaint
        // because `check` refuses them (no status allows them).
        _ => {}
    }
}

/// Folds a whole stream, oldest first.
pub fn fold<'a>(
    events: impl IntoIterator<Item = &'a Envelope>,
) -> Result<ComplaintState, EvolveError> {
    events
        .into_iter()
        .try_fold(ComplaintState::default(), evolve)
}

/// Runs `commands` through the aggregate from nothing and returns the events they record, as
/// envelopes with ids `<id>-<version>`: a complaint's history for tests and examples.
pub fn script(
    id: &str,
    commands: &[Command],
    at: DateTime<Utc>,
    correlation_id: &str,
) -> Result<Vec<Envelope>, DomainError> {
    let mut state = ComplaintState::default();
    let mut out = Vec::new();
    for command in commands {
        for payload in decide(&state, command, at)? {
            let ctx = crate::envelope::Context {
                correlation_id: correlation_id.to_owned(),
                causation_id: None,
                user_id: None,
                at,
                traceparent: None,
            };
            let event = Envelope::new(
                format!("{id}-{}", state.version + 1),
                id,
                state.version + 1,
                &payload,
                &ctx,
            );
            // Decided events always evolve: `decide` checks them with the same table.
            let status = state.complaint.as_ref().map_or(Status::Open, |c| c.status);
            state = evolve(state, &event).map_err(|e| DomainError::InvalidTransition {
                command: command.name(),
                status,
                reason: e.reason,
            })?;
            out.push(event);
        }
    }
    Ok(out)
}
