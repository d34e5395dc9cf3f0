//! Namespaces of one test run on every real backend (a PostgreSQL database, a RabbitMQ virtual
//! host and user, a Redis stream prefix, a Mongo database, unique mail recipients) and the
//! environment of services that use them. Shared by `real.rs` and `faults/`.

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use serde_json::json;
use sqlx::Connection;

/// The password in the run's URLs; no log line may contain it.
pub const SECRET: &str = "pw-9f3c-never-logged";

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub async fn vhost(client: &reqwest::Client, management: &str, name: &str) {
    let put = client
        .put(format!("{management}/api/vhosts/{name}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await;
    let put = put.unwrap_or_else(|e| panic!("RabbitMQ's management API is not answering at {management}: {e}. Start it with scripts/backends rabbitmq"));
    assert!(put.status().is_success(), "creating vhost {name}");
    let perms = client
        .put(format!("{management}/api/permissions/{name}/guest"))
        .basic_auth("guest", Some("guest"))
        .json(&json!({"configure": ".*", "write": ".*", "read": ".*"}))
        .send()
        .await
        .expect("permissions");
    assert!(perms.status().is_success(), "granting guest on {name}");
}

/// Namespaces of one run on every backend, and the environment of its services.
pub struct Run {
    pub id: String,
    pub client: reqwest::Client,
    pub admin: sqlx::PgConnection,
    pub management: String,
    pub vhost: String,
    pub redis: String,
    pub prefix: String,
    pub env: Vec<(String, String)>,
}

pub async fn run() -> Run {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let client = reqwest::Client::new();
    let pg = env_or(
        "TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let mut admin = sqlx::PgConnection::connect(&pg).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not answering at {pg}: {e}. Start it with scripts/backends postgres")
    });
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE t_{run}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    // PostgreSQL trusts loopback, so any password is accepted: this one must never be logged.
    let database = format!(
        "{}/t_{run}",
        pg.rsplit_once('/').map_or(pg.as_str(), |(base, _)| base)
    )
    .replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{SECRET}@"),
        1,
    );
    let management = env_or("TEST_RABBITMQ_MANAGEMENT", "http://127.0.0.1:15672");
    let vhost_name = format!(
        "t-{}-{run}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    vhost(&client, &management, &vhost_name).await;
    let user = format!("u{run}");
    let made = client
        .put(format!("{management}/api/users/{user}"))
        .basic_auth("guest", Some("guest"))
        .json(&json!({"password": SECRET, "tags": ""}))
        .send()
        .await
        .expect("create a RabbitMQ user");
    assert!(made.status().is_success(), "creating user {user}");
    let perms = client
        .put(format!("{management}/api/permissions/{vhost_name}/{user}"))
        .basic_auth("guest", Some("guest"))
        .json(&json!({"configure": ".*", "write": ".*", "read": ".*"}))
        .send()
        .await
        .expect("permissions");
    assert!(perms.status().is_success());
    let mongo = env_or(
        "TEST_MONGODB_URL",
        "mongodb://127.0.0.1:27017/?directConnection=true",
    );
    let mongo = mongo.replacen("/?", &format!("/t_{run}?"), 1);
    let redis = env_or("TEST_REDIS_URL", "redis://127.0.0.1:6379");
    let prefix = format!("t{run}:");
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", database),
        (
            "RABBITMQ_URL",
            format!("amqp://{user}:{SECRET}@127.0.0.1:5672/{vhost_name}"),
        ),
        ("REDIS_URL", redis.clone()),
        ("STREAM_PREFIX", prefix.clone()),
        ("MONGODB_URL", mongo),
        ("SMTP_URL", env_or("TEST_SMTP_URL", "smtp://127.0.0.1:2525")),
        ("NOTIFY_EMAIL_DOMAIN", format!("{run}.example.com")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    Run {
        id: run,
        client,
        admin,
        management,
        vhost: vhost_name,
        redis,
        prefix,
        env,
    }
}

impl Run {
    /// Drops what the run created.
    pub async fn clean(mut self) {
        let _ = self
            .client
            .delete(format!("{}/api/users/u{}", self.management, self.id))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
        let drop = format!("DROP DATABASE t_{} WITH (FORCE)", self.id);
        if sqlx::raw_sql(sqlx::AssertSqlSafe(drop.clone()))
            .execute(&mut self.admin)
            .await
            .is_err()
        {
            // The admin connection may have died with a PostgreSQL restart: a new one.
            let pg = env_or(
                "TEST_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            );
            let mut admin = sqlx::PgConnection::connect(&pg).await.expect("PostgreSQL");
            sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                .execute(&mut admin)
                .await
                .expect("drop database");
        }
        let _ = self
            .client
            .delete(format!("{}/api/vhosts/{}", self.management, self.vhost))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
    }
}
