use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{new_complaint, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_commands_with_the_same_if_match_give_one_success_and_one_412() {
    let app = spawn_app().await;
    for round in 0..5 {
        let id = app.create(new_complaint()).await["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let path = format!("/api/complaints/{id}/assign");
        let (a, b) = tokio::join!(
            app.send(
                Method::PUT,
                &path,
                Some(json!({"assignedTo": "bob"})),
                &[("If-Match", "\"1\"")]
            ),
            app.send(
                Method::PUT,
                &path,
                Some(json!({"assignedTo": "carol"})),
                &[("If-Match", "\"1\"")]
            ),
        );
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::PRECONDITION_FAILED],
            "round {round}"
        );
        let loser = if a.0 == StatusCode::OK { &b.2 } else { &a.2 };
        assert_eq!(loser["error"]["code"], "VERSION_CONFLICT");
        let (_, _, view) = app.get(&format!("/api/complaints/{id}")).await;
        assert_eq!(view["version"], 2);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_if_match_racing_commands_all_apply_with_gapless_versions() {
    let app = spawn_app().await;
    let id = app.create(new_complaint()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/api/complaints/{id}/assign");
    let agents: Vec<String> = (0..6).map(|i| format!("agent-{i}")).collect();
    let results = futures::future::join_all(
        agents
            .iter()
            .map(|a| app.send(Method::PUT, &path, Some(json!({"assignedTo": a})), &[])),
    )
    .await;
    for (status, _, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    let events = app.log.read_stream(&id, 1).await.expect("read");
    let versions: Vec<u64> = events.iter().map(|e| e.metadata.version).collect();
    assert_eq!(versions, (1..=7).collect::<Vec<u64>>());
    let (_, _, view) = app.get(&format!("/api/complaints/{id}")).await;
    assert_eq!(view["version"], 7);
    let last = events.last().expect("last").event_data["assignedTo"].clone();
    assert_eq!(
        view["assignedTo"], last,
        "the view shows the last assignment applied"
    );
    app.stop().await;
}
