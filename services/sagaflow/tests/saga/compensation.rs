use serde_json::{Value, json};

use crate::helpers::{System, eventually, start};

/// Waits until the compensation of `id` completed, and returns the view.
async fn compensated(sys: &System, id: &str) -> Value {
    eventually("the compensation to complete", || async {
        let v = sys.view(id).await;
        let done = v["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|e| e["eventType"] == "COMPLAINT_COMPENSATED");
        (done && v["sagaStatus"] == "RUNNING").then_some(v)
    })
    .await
}

async fn assert_marked(sys: &System, id: &str, assign_event: &str) {
    let marked = eventually("the audit mark", || async {
        let found = sys
            .get(format!(
                "{}/api/audit/search?aggregateId={id}&compensated=true",
                sys.audit
            ))
            .await;
        let items = found["items"].as_array().expect("items").clone();
        (!items.is_empty()).then_some(items)
    })
    .await;
    let ids: Vec<&str> = marked
        .iter()
        .map(|e| e["eventId"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [assign_event], "exactly the undone step is marked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_asks_for_a_compensation_and_the_assignment_is_undone() {
    let sys = start().await;
    let id = sys.create("carol", "LOW", "saga-comp-1").await;
    sys.command(&id, "assign", json!({"assignedTo": "dan"}), "saga-comp-1")
        .await;
    let assigned = sys
        .command(&id, "assign", json!({"assignedTo": "erin"}), "saga-comp-1")
        .await;
    let step = assigned["timeline"][2]["eventId"]
        .as_str()
        .expect("event id")
        .to_owned();
    // Let the assignment mails go out, so that there is someone to correct.
    eventually("the assignment mails", || async {
        (sys.mails_of(&id).len() == 6).then_some(())
    })
    .await;

    let view = sys
        .command(
            &id,
            "compensate",
            json!({"reason": "Wrong agent"}),
            "saga-comp-1",
        )
        .await;
    assert_eq!(view["sagaStatus"], "COMPENSATING");
    let view = compensated(&sys, &id).await;
    assert_eq!(
        (view["status"].as_str(), view["assignedTo"].as_str()),
        (Some("ASSIGNED"), Some("dan")),
        "the status and assignee before the step"
    );
    assert_eq!(view["auditTrail"][0]["eventType"], "AUDIT_COMPENSATION");
    assert_marked(&sys, &id, &step).await;

    let corrections = eventually("the corrections", || async {
        let c: Vec<String> = sys
            .mails_of(&id)
            .iter()
            .filter(|m| m.header("X-Sagaflow-Template") == Some("compensation-correction"))
            .map(|m| m.header("To").expect("to").to_owned())
            .collect();
        (c.len() == 2).then_some(c)
    })
    .await;
    let mut corrections = corrections;
    corrections.sort();
    assert_eq!(
        corrections,
        ["carol@example.com", "erin@example.com"],
        "whoever was told of the undone step"
    );

    // The saga runs on from the restored status.
    let view = sys
        .command(
            &id,
            "process",
            json!({"resolution": "Fixed"}),
            "saga-comp-1",
        )
        .await;
    assert_eq!(view["status"], "RESOLVED");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_refused_for_good_to_an_assignee_undoes_the_assignment() {
    let sys = start().await;
    let id = sys.create("frank", "MEDIUM", "saga-comp-2").await;
    let assigned = sys
        .command(
            &id,
            "assign",
            json!({"assignedTo": "refuse-gina"}),
            "saga-comp-2",
        )
        .await;
    let step = assigned["timeline"][1]["eventId"]
        .as_str()
        .expect("event id")
        .to_owned();

    let view = compensated(&sys, &id).await;
    assert_eq!(
        (view["status"].as_str(), view["assignedTo"].as_str()),
        (Some("OPEN"), None)
    );
    let failed: Vec<&Value> = view["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .filter(|n| n["status"] == "FAILED")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["recipient"], "refuse-gina@example.com");
    let types: Vec<&str> = view["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| e["eventType"].as_str().expect("t"))
        .collect();
    assert_eq!(
        types,
        [
            "COMPLAINT_CREATED",
            "COMPLAINT_ASSIGNED",
            "COMPLAINT_COMPENSATION_REQUIRED",
            "COMPLAINT_COMPENSATED"
        ]
    );
    assert_marked(&sys, &id, &step).await;
    // Whether the user was told of the assignment depends on whether their mail went out before
    // the compensation arrived: told, they get a correction; not told, their mail is cancelled.
    let user_mail = eventually("the user's assignment mail to settle", || async {
        let history = sys
            .get(format!(
                "{}/api/notifications?complaintId={id}",
                sys.notification
            ))
            .await;
        let items = history["items"].as_array()?.clone();
        let status = items
            .iter()
            .find(|n| n["template"] == "complaint-assigned-user")?["status"]
            .as_str()?
            .to_owned();
        (status == "SENT" || status == "CANCELLED").then_some(status)
    })
    .await;
    let corrected = || {
        sys.mails_of(&id).iter().any(|m| {
            m.header("X-Sagaflow-Template") == Some("compensation-correction")
                && m.header("To") == Some("frank@example.com")
        })
    };
    if user_mail == "SENT" {
        eventually("the correction to the user", || async {
            corrected().then_some(())
        })
        .await;
    } else {
        sys.drained().await;
        assert!(!corrected(), "no correction to a user who was never told");
    }
    let metrics = sys.metrics_of(&sys.complaint).await;
    assert!(metrics.contains("saga_execution_duration_seconds_count{saga_type=\"complaint\",status=\"compensated\"} 1"), "{metrics}");
    sys.stop().await;
}
