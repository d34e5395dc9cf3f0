use std::time::Duration;

use crate::helpers::{eventually, start_with};

/// A CRITICAL complaint with a 300 ms deadline is escalated once, with one mail to the admin,
/// while the background scanner and two more scanners race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_escalates_once_even_with_racing_timers() {
    let sys = start_with(|c| {
        c.saga.deadlines.critical = Duration::from_millis(300);
        c.saga.escalation_interval = Duration::from_millis(50);
    })
    .await;
    let id = sys.create("hana", "CRITICAL", "saga-deadline").await;
    let app = sys
        .app
        .as_ref()
        .expect("running")
        .complaint_app()
        .expect("complaint service");
    let deadlines = sagaflow_complaint::app::Deadlines {
        critical: Duration::from_millis(300),
        ..Default::default()
    };
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    let _ = app.escalate_due(&deadlines).await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let view = eventually("the escalation", || async {
        let v = sys.view(&id).await;
        v["escalatedAt"].is_string().then_some(v)
    })
    .await;
    for r in racers {
        r.await.expect("racer");
    }
    let escalations = view["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["eventType"] == "COMPLAINT_ESCALATED")
        .count();
    let later = sys.view(&id).await;
    let later_count = later["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["eventType"] == "COMPLAINT_ESCALATED")
        .count();
    assert_eq!((escalations, later_count), (1, 1));
    let escalation = view["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .find(|e| e["eventType"] == "COMPLAINT_ESCALATED")
        .cloned()
        .expect("escalated");
    assert_eq!(
        escalation["correlationId"], "saga-deadline",
        "the escalation carries the saga's correlation id"
    );
    eventually("the admin's escalation mail", || async {
        let n = sys
            .mails_of(&id)
            .iter()
            .filter(|m| m.header("X-Sagaflow-Template") == Some("complaint-escalated-admin"))
            .count();
        (n == 1).then_some(())
    })
    .await;
    sys.drained().await;
    let n = sys
        .mails_of(&id)
        .iter()
        .filter(|m| m.header("X-Sagaflow-Template") == Some("complaint-escalated-admin"))
        .count();
    assert_eq!(n, 1);
    sys.stop().await;
}
