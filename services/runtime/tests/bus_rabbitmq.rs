//! The RabbitMQ adapter passes the message bus's conformance suite, each test in a virtual host
//! of its own. Needs RabbitMQ with its management plugin: `scripts/backends rabbitmq` starts it
//! (`TEST_RABBITMQ_MANAGEMENT` overrides `http://guest:guest@127.0.0.1:15672`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sagaflow_runtime::bus::MessageBus;
use sagaflow_runtime::bus::rabbitmq::RabbitBus;

fn management() -> String {
    std::env::var("TEST_RABBITMQ_MANAGEMENT").unwrap_or_else(|_| "http://127.0.0.1:15672".into())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh virtual host (and the removal of test hosts left over for more than ten minutes).
async fn vhost() -> String {
    let client = reqwest::Client::new();
    let fail = |e: &dyn std::fmt::Display| -> ! {
        panic!(
            "RabbitMQ's management API is not answering at {}: {e}. Start it with scripts/backends rabbitmq",
            management()
        )
    };
    let hosts: Vec<serde_json::Value> = match client
        .get(format!("{}/api/vhosts", management()))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_else(|e| fail(&e)),
        Err(e) => fail(&e),
    };
    for h in hosts {
        let name = h["name"].as_str().unwrap_or("");
        let born: Option<u64> = name
            .strip_prefix("t-")
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse().ok());
        if born.is_some_and(|b| b + 600 < now()) {
            let _ = client
                .delete(format!("{}/api/vhosts/{name}", management()))
                .basic_auth("guest", Some("guest"))
                .send()
                .await;
        }
    }
    let name = format!("t-{}-{}", now(), uuid::Uuid::new_v4().simple());
    let put = client
        .put(format!("{}/api/vhosts/{name}", management()))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap_or_else(|e| fail(&e));
    assert!(
        put.status().is_success(),
        "creating vhost {name}: {}",
        put.status()
    );
    let perms = client
        .put(format!("{}/api/permissions/{name}/guest", management()))
        .basic_auth("guest", Some("guest"))
        .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
        .send()
        .await
        .unwrap_or_else(|e| fail(&e));
    assert!(
        perms.status().is_success(),
        "granting guest on {name}: {}",
        perms.status()
    );
    name
}

async fn fresh() -> Arc<dyn MessageBus> {
    let host = vhost().await;
    Arc::new(
        RabbitBus::open(&format!("amqp://guest:guest@127.0.0.1:5672/{host}"))
            .await
            .expect("connect to RabbitMQ"),
    )
}

sagaflow_runtime::bus_conformance!(fresh());

#[tokio::test]
async fn a_password_never_shows_in_the_error() {
    let err = RabbitBus::open("amqp://app:hunter2@127.0.0.1:1/%2f")
        .await
        .expect_err("nothing listens there");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}
