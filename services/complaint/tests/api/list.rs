use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_error, new_complaint, spawn_app};

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn every_filter_selects_what_it_names() {
    let app = spawn_app().await;
    let mut made = Vec::new();
    for (user, priority, category) in [
        ("alice", "LOW", "billing"),
        ("bob", "HIGH", "billing"),
        ("alice", "HIGH", "delivery"),
    ] {
        let mut body = new_complaint();
        body["userId"] = json!(user);
        body["priority"] = json!(priority);
        body["category"] = json!(category);
        made.push(
            app.create(body).await["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    app.command(&made[1], "assign", json!({"assignedTo": "agent-1"}))
        .await;

    for (query, want) in [
        ("userId=alice", vec![&made[2], &made[0]]),
        ("priority=HIGH", vec![&made[2], &made[1]]),
        ("category=billing", vec![&made[1], &made[0]]),
        ("status=ASSIGNED", vec![&made[1]]),
        ("status=OPEN", vec![&made[2], &made[0]]),
        ("assignedTo=agent-1", vec![&made[1]]),
        ("userId=alice&priority=HIGH", vec![&made[2]]),
        ("status=CLOSED", vec![]),
        ("", vec![&made[2], &made[1], &made[0]]),
    ] {
        let (status, _, page) = app.get(&format!("/api/complaints?{query}")).await;
        assert_eq!(status, StatusCode::OK);
        let want: Vec<String> = want.into_iter().cloned().collect();
        assert_eq!(ids(&page), want, "{query}");
        assert_eq!(page["nextCursor"], Value::Null);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_cursor_walks_every_complaint_once_newest_first() {
    let app = spawn_app().await;
    let mut made = Vec::new();
    for _ in 0..7 {
        made.push(
            app.create(new_complaint()).await["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    let mut query = "/api/complaints?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let (status, _, page) = app.get(&query).await;
        assert_eq!(status, StatusCode::OK);
        pages += 1;
        seen.extend(ids(&page));
        match page["nextCursor"].as_str() {
            Some(cursor) => query = format!("/api/complaints?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    made.reverse();
    assert_eq!(seen, made);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);
    app.stop().await;
}

#[tokio::test]
async fn the_default_limit_is_fifty() {
    let app = spawn_app().await;
    for _ in 0..51 {
        app.create(new_complaint()).await;
    }
    let (_, _, page) = app.get("/api/complaints").await;
    assert_eq!(page["items"].as_array().expect("items").len(), 50);
    assert!(page["nextCursor"].is_string());
    let (_, _, page) = app.get("/api/complaints?limit=200").await;
    assert_eq!(page["items"].as_array().expect("items").len(), 51);
    app.stop().await;
}

#[tokio::test]
async fn bad_list_parameters_are_400s_naming_them() {
    let app = spawn_app().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("status=DONE", "status"),
        ("priority=urgent", "priority"),
        ("cursor=not-a-cursor", "cursor"),
        ("sort=title", "sort"),
    ] {
        let (status, headers, body) = app.get(&format!("/api/complaints?{query}")).await;
        let error = assert_error(
            status,
            &headers,
            &body,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        );
        assert_eq!(error["field"], field, "{query}");
    }
    app.stop().await;
}
