//! The complaint aggregate, given/when/then: one test per row of SPEC section 4's table and
//! per refused transition, then properties over any sequence of commands.

#![allow(clippy::unwrap_used)] // a test may panic on what it set up itself

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use sagaflow_domain::complaint::Command;
use sagaflow_domain::values::{Category, Description, Reason, Resolution, Title, UserId};
use sagaflow_domain::{
    ComplaintProjection, ComplaintState, Context, DomainError, Envelope, EventType, Payload,
    Priority, SagaStatus, Status, decide, evolve, fold,
};

const ID: &str = "c-1";

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).expect("a valid timestamp")
}

/// A complaint's history built through the aggregate itself.
struct Given {
    events: Vec<Envelope>,
    state: ComplaintState,
}

fn create() -> Command {
    Command::Create {
        complaint_id: ID.into(),
        user_id: UserId::parse("userId", "alice").unwrap(),
        title: Title::parse("title", "Broken kettle").unwrap(),
        description: Description::parse("description", "It leaks").unwrap(),
        priority: Priority::High,
        category: Category::parse("category", "appliances").unwrap(),
    }
}
fn assign(who: &str) -> Command {
    Command::Assign {
        assigned_to: UserId::parse("assignedTo", who).unwrap(),
    }
}
fn start() -> Command {
    Command::Process { resolution: None }
}
fn resolve() -> Command {
    Command::Process {
        resolution: Some(Resolution::parse("resolution", "Replaced").unwrap()),
    }
}
fn close() -> Command {
    Command::Close { reason: None }
}
fn close_because() -> Command {
    Command::Close {
        reason: Some(Reason::parse("reason", "Duplicate").unwrap()),
    }
}
fn compensate() -> Command {
    Command::Compensate {
        reason: Reason::parse("reason", "Mail bounced").unwrap(),
        failed_event_id: None,
    }
}

fn given(commands: &[Command]) -> Given {
    let mut g = Given {
        events: Vec::new(),
        state: ComplaintState::default(),
    };
    for c in commands {
        g.record(c)
            .unwrap_or_else(|e| panic!("given {c:?} failed: {e}"));
    }
    g
}

impl Given {
    fn record(&mut self, command: &Command) -> Result<Vec<Envelope>, DomainError> {
        let at = t0() + Duration::seconds(self.events.len() as i64);
        let payloads = decide(&self.state, command, at)?;
        let mut out = Vec::new();
        for p in payloads {
            let version = self.state.version + 1;
            let ctx = Context {
                correlation_id: "corr".into(),
                causation_id: None,
                user_id: None,
                at,
                traceparent: None,
            };
            let env = Envelope::new(format!("e{version}"), ID, version, &p, &ctx);
            self.state = evolve(self.state.clone(), &env).expect("decided events always evolve");
            self.events.push(env.clone());
            out.push(env);
        }
        Ok(out)
    }

    /// When `command`, then exactly these event types and this status.
    fn then(mut self, command: Command, types: &[EventType], status: Status) -> Self {
        let events = self
            .record(&command)
            .unwrap_or_else(|e| panic!("{command:?} refused: {e}"));
        let got: Vec<EventType> = events.iter().map(|e| e.known_type().unwrap()).collect();
        assert_eq!(got, types);
        assert_eq!(self.status(), status);
        self
    }

    /// When `command`, then it is refused as an invalid transition.
    fn then_refused(mut self, command: Command) {
        let before = self.state.clone();
        match self.record(&command) {
            Err(DomainError::InvalidTransition { .. }) => {}
            other => panic!(
                "{command:?} from {:?}: expected INVALID_TRANSITION, got {other:?}",
                self.status()
            ),
        }
        assert_eq!(self.state, before, "a refused command changes nothing");
    }

    fn status(&self) -> Status {
        self.state.complaint.as_ref().expect("created").status
    }

    fn complaint(&self) -> &sagaflow_domain::complaint::Complaint {
        self.state.complaint.as_ref().expect("created")
    }
}

// ---- one test per row of the table ----

#[test]
fn create_opens_a_complaint() {
    let g = given(&[]).then(create(), &[EventType::ComplaintCreated], Status::Open);
    let c = g.complaint();
    assert_eq!(
        (c.user_id.as_str(), c.priority, g.state.version),
        ("alice", Priority::High, 1)
    );
    let Payload::ComplaintCreated(data) = g.events[0].payload().unwrap() else {
        panic!()
    };
    assert_eq!(data.title, "Broken kettle");
    assert_eq!(data.created_at, t0());
}

#[test]
fn assign_from_open_assigned_and_in_progress() {
    given(&[create()]).then(
        assign("bob"),
        &[EventType::ComplaintAssigned],
        Status::Assigned,
    );
    let g = given(&[create(), assign("bob")]).then(
        assign("carol"),
        &[EventType::ComplaintAssigned],
        Status::Assigned,
    );
    let Payload::ComplaintAssigned(a) = g.events[2].payload().unwrap() else {
        panic!()
    };
    assert_eq!(
        (a.assigned_to.as_str(), a.previous_assignee.as_deref()),
        ("carol", Some("bob"))
    );
    given(&[create(), assign("bob"), start()]).then(
        assign("dan"),
        &[EventType::ComplaintAssigned],
        Status::Assigned,
    );
}

#[test]
fn process_without_resolution_starts_work_from_assigned() {
    let g = given(&[create(), assign("bob")]).then(
        start(),
        &[EventType::ComplaintProcessed],
        Status::InProgress,
    );
    let Payload::ComplaintProcessed(p) = g.events[2].payload().unwrap() else {
        panic!()
    };
    assert_eq!((p.status, p.resolution), (Status::InProgress, None));
}

#[test]
fn process_with_resolution_resolves_from_assigned_and_in_progress() {
    let g = given(&[create(), assign("bob")]).then(
        resolve(),
        &[EventType::ComplaintProcessed],
        Status::Resolved,
    );
    assert_eq!(g.complaint().resolution.as_deref(), Some("Replaced"));
    given(&[create(), assign("bob"), start()]).then(
        resolve(),
        &[EventType::ComplaintProcessed],
        Status::Resolved,
    );
}

#[test]
fn close_without_reason_from_resolved() {
    let g = given(&[create(), assign("bob"), resolve()]).then(
        close(),
        &[EventType::ComplaintClosed],
        Status::Closed,
    );
    assert!(g.complaint().closed_at.is_some());
}

#[test]
fn close_with_reason_from_every_open_status() {
    given(&[create()]).then(
        close_because(),
        &[EventType::ComplaintClosed],
        Status::Closed,
    );
    given(&[create(), assign("bob")]).then(
        close_because(),
        &[EventType::ComplaintClosed],
        Status::Closed,
    );
    given(&[create(), assign("bob"), start()]).then(
        close_because(),
        &[EventType::ComplaintClosed],
        Status::Closed,
    );
    given(&[create(), assign("bob"), resolve()]).then(
        close_because(),
        &[EventType::ComplaintClosed],
        Status::Closed,
    );
}

#[test]
fn compensate_undoes_the_last_step_then_restores_the_status_before_it() {
    let g = given(&[create(), assign("bob"), assign("carol")]).then(
        compensate(),
        &[EventType::ComplaintCompensationRequired],
        Status::Assigned,
    );
    let Payload::ComplaintCompensationRequired(r) = g.events[3].payload().unwrap() else {
        panic!()
    };
    assert_eq!(
        (r.failed_step.as_str(), r.failed_event_id.as_str()),
        ("COMPLAINT_ASSIGNED", "e3")
    );
    let orders: Vec<(u32, &str)> = r
        .actions
        .iter()
        .map(|a| (a.order, a.service.as_str()))
        .collect();
    assert_eq!(
        orders,
        [
            (1, "notification-service"),
            (2, "audit-service"),
            (3, "complaint-service")
        ]
    );
    assert_eq!(g.complaint().saga_status(false), SagaStatus::Compensating);

    let g = g.then(
        Command::CompleteCompensation {
            failed_event_id: "e3".into(),
        },
        &[EventType::ComplaintCompensated],
        Status::Assigned,
    );
    let Payload::ComplaintCompensated(done) = g.events[4].payload().unwrap() else {
        panic!()
    };
    assert_eq!(
        (done.restored_status, done.restored_assignee.as_deref()),
        (Status::Assigned, Some("bob"))
    );
    assert_eq!(g.complaint().assigned_to.as_deref(), Some("bob"));
    assert_eq!(g.complaint().saga_status(false), SagaStatus::Running);
}

#[test]
fn compensating_a_resolution_restores_in_progress_and_the_old_resolution() {
    let g = given(&[create(), assign("bob"), start(), resolve(), compensate()]).then(
        Command::CompleteCompensation {
            failed_event_id: "e4".into(),
        },
        &[EventType::ComplaintCompensated],
        Status::InProgress,
    );
    assert_eq!(g.complaint().resolution, None);
}

#[test]
fn compensating_a_named_older_step_undoes_it_and_every_later_step() {
    let g = given(&[create(), assign("bob"), start()]).then(
        Command::Compensate {
            reason: Reason::parse("reason", "bounced").unwrap(),
            failed_event_id: Some("e2".into()),
        },
        &[EventType::ComplaintCompensationRequired],
        Status::InProgress,
    );
    let g = g.then(
        Command::CompleteCompensation {
            failed_event_id: "e2".into(),
        },
        &[EventType::ComplaintCompensated],
        Status::Open,
    );
    assert_eq!(g.complaint().assigned_to, None);
    assert!(g.complaint().steps.is_empty());
}

#[test]
fn after_compensation_the_saga_runs_again_from_the_restored_status() {
    given(&[
        create(),
        assign("bob"),
        compensate(),
        Command::CompleteCompensation {
            failed_event_id: "e2".into(),
        },
    ])
    .then(
        assign("carol"),
        &[EventType::ComplaintAssigned],
        Status::Assigned,
    );
}

#[test]
fn escalate_once_while_open() {
    let deadline = t0() + Duration::hours(1);
    let g = given(&[create()]).then(
        Command::Escalate { deadline },
        &[EventType::ComplaintEscalated],
        Status::Open,
    );
    g.then_refused(Command::Escalate { deadline });
    given(&[create(), assign("bob")]).then_refused(Command::Escalate { deadline });
}

// ---- refused transitions ----

#[test]
fn process_is_refused_from_open() {
    given(&[create()]).then_refused(start());
    given(&[create()]).then_refused(resolve());
}

#[test]
fn starting_work_is_refused_from_in_progress_and_resolved() {
    given(&[create(), assign("bob"), start()]).then_refused(start());
    given(&[create(), assign("bob"), resolve()]).then_refused(start());
}

#[test]
fn resolving_again_is_refused() {
    given(&[create(), assign("bob"), resolve()]).then_refused(resolve());
}

#[test]
fn assign_is_refused_from_resolved() {
    given(&[create(), assign("bob"), resolve()]).then_refused(assign("carol"));
}

#[test]
fn close_without_reason_is_refused_before_resolved() {
    given(&[create()]).then_refused(close());
    given(&[create(), assign("bob")]).then_refused(close());
    given(&[create(), assign("bob"), start()]).then_refused(close());
}

#[test]
fn closed_is_final() {
    let closed = [create(), assign("bob"), resolve(), close()];
    for command in [
        assign("x"),
        start(),
        resolve(),
        close(),
        close_because(),
        compensate(),
        Command::Escalate { deadline: t0() },
    ] {
        given(&closed).then_refused(command);
    }
}

#[test]
fn compensate_is_refused_with_nothing_to_undo() {
    given(&[create()]).then_refused(compensate());
    let unknown = Command::Compensate {
        reason: Reason::parse("reason", "x").unwrap(),
        failed_event_id: Some("e1".into()),
    };
    given(&[create(), assign("bob")]).then_refused(unknown);
}

#[test]
fn nothing_but_completion_while_compensating() {
    let compensating = [create(), assign("bob"), compensate()];
    for command in [
        assign("x"),
        start(),
        resolve(),
        close_because(),
        compensate(),
    ] {
        given(&compensating).then_refused(command);
    }
    given(&compensating).then_refused(Command::CompleteCompensation {
        failed_event_id: "e1".into(),
    });
}

#[test]
fn completion_without_a_compensation_is_refused() {
    given(&[create(), assign("bob")]).then_refused(Command::CompleteCompensation {
        failed_event_id: "e2".into(),
    });
}

#[test]
fn commands_on_a_missing_complaint_are_not_found_and_create_twice_exists() {
    assert_eq!(
        decide(&ComplaintState::default(), &assign("bob"), t0()),
        Err(DomainError::NotFound)
    );
    assert_eq!(
        decide(&given(&[create()]).state, &create(), t0()),
        Err(DomainError::AlreadyExists)
    );
}

// ---- folding checks every event ----

#[test]
fn fold_refuses_gaps_repeats_and_bad_transitions() {
    let g = given(&[create(), assign("bob"), resolve()]);
    let mut gap = g.events.clone();
    gap.remove(1);
    assert!(fold(&gap).is_err());
    let mut repeat = g.events.clone();
    repeat.insert(1, g.events[0].clone());
    assert!(fold(&repeat).is_err());
    // A RESOLVED event straight after creation (versions right, transition wrong).
    let mut bad = vec![g.events[0].clone(), g.events[2].clone()];
    bad[1].metadata.version = 2;
    let err = fold(&bad).unwrap_err();
    assert!(err.reason.contains("allowed only from"), "{err}");
}

// ---- properties ----

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        "[a-z]{1,8}".prop_map(|w| assign(&w)),
        Just(start()),
        Just(resolve()),
        Just(close()),
        Just(close_because()),
        Just(compensate()),
        Just(Command::Escalate { deadline: t0() }),
        (0u64..12).prop_map(|v| Command::CompleteCompensation {
            failed_event_id: format!("e{v}")
        }),
    ]
}

proptest! {
    /// Whatever is accepted, the recorded versions are 1, 2, 3 … and folding the stream again,
    /// or projecting it, gives the state the aggregate reached.
    #[test]
    fn accepted_commands_give_gapless_versions_and_fold_back(commands in prop::collection::vec(any_command(), 0..40)) {
        let mut g = given(&[create()]);
        for c in &commands {
            let _ = g.record(c);
        }
        let versions: Vec<u64> = g.events.iter().map(|e| e.metadata.version).collect();
        let expected: Vec<u64> = (1..=g.events.len() as u64).collect();
        prop_assert_eq!(versions, expected);
        prop_assert_eq!(&fold(&g.events).expect("a decided stream folds"), &g.state);

        let mut projection = ComplaintProjection::default();
        for e in &g.events {
            projection.apply(e).expect("applies");
            // A redelivered event is skipped.
            prop_assert!(!projection.apply(e).expect("applies"));
        }
        let view = projection.view().expect("created");
        let c = g.state.complaint.as_ref().expect("created");
        prop_assert_eq!((view.version, view.status, &view.assigned_to), (g.state.version, c.status, &c.assigned_to));
        prop_assert_eq!(view.timeline.len(), g.events.len());
    }
}
