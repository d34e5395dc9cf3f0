use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::StatusCode;
use sagaflow::{AllInOne, Config, Ports};
use sagaflow_notification::mailer::mailbox::{Mailbox, StoredMail};
use sagaflow_notification::mailer::{Mail, MailError, Mailer};
use serde_json::{Value, json};
use sqlx::Connection;

/// A mailbox that refuses, for good, every recipient starting with `refuse-`.
pub struct Refusing {
    pub inner: Mailbox,
    pub refused: Mutex<Vec<String>>,
}

#[async_trait]
impl Mailer for Refusing {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        if mail.to.starts_with("refuse-") {
            self.refused.lock().expect("lock").push(mail.to.clone());
            return Err(MailError::Permanent(format!(
                "550 5.1.1 <{}>: recipient rejected",
                mail.to
            )));
        }
        self.inner.send(mail).await
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// What a test created on the shared servers, removed when it stops.
struct Namespaces {
    run: String,
    admin: sqlx::PgConnection,
    management: String,
    vhost: String,
}

/// Where the mails land: the embedded mailbox, or the SMTP sink's HTTP API.
enum Mails {
    Mailbox(Mailbox),
    Sink(String),
}

pub struct System {
    pub app: Option<AllInOne>,
    mails: Mails,
    namespaces: Option<Namespaces>,
    pub client: reqwest::Client,
    pub complaint: String,
    pub notification: String,
    pub audit: String,
    pub event_store: String,
    _dir: tempfile::TempDir,
}

pub fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::new(dir.to_owned());
    c.ports = Ports {
        complaint: 0,
        notification: 0,
        audit: 0,
        event_store: 0,
    };
    c.retry.base = Duration::from_millis(20);
    c.retry.cap = Duration::from_millis(200);
    c
}

pub async fn start() -> System {
    start_with(|_| {}).await
}

/// The all-in-one on ports picked by the system: embedded, or on the real backends when the
/// test binary sets `REAL` (then in namespaces of its own on every server).
pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> System {
    if crate::REAL {
        return start_real(tweak).await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = config(dir.path());
    let mailbox = Mailbox::open(&c.mailbox_dir()).expect("mailbox");
    c.mailer = Some(Arc::new(Refusing {
        inner: mailbox.clone(),
        refused: Mutex::new(Vec::new()),
    }));
    tweak(&mut c);
    let app = AllInOne::start(c).await.expect("start the all-in-one");
    let url = |a: Option<std::net::SocketAddr>| format!("http://{}", a.expect("running"));
    System {
        complaint: url(app.complaint),
        notification: url(app.notification),
        audit: url(app.audit),
        event_store: url(app.event_store),
        app: Some(app),
        mails: Mails::Mailbox(mailbox),
        namespaces: None,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

async fn start_real(tweak: impl FnOnce(&mut Config)) -> System {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = config(dir.path());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let client = reqwest::Client::new();
    let pg = env_or(
        "TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let mut admin = sqlx::PgConnection::connect(&pg).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not answering at {pg}: {e}. Start it with scripts/backends")
    });
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE t_{run}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let base = pg
        .rsplit_once('/')
        .map_or(pg.as_str(), |(base, _)| base)
        .to_owned();
    let management = env_or("TEST_RABBITMQ_MANAGEMENT", "http://127.0.0.1:15672");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let vhost = format!("t-{secs}-{run}");
    crate::backends::vhost(&client, &management, &vhost).await;
    c.database = Some(sagaflow_runtime::config::DatabaseUrl::Postgres(format!(
        "{base}/t_{run}"
    )));
    c.rabbitmq_url = Some(format!("amqp://guest:guest@127.0.0.1:5672/{vhost}"));
    c.redis_url = Some(env_or("TEST_REDIS_URL", "redis://127.0.0.1:6379"));
    c.stream_prefix = format!("t{run}:");
    c.mongodb_url = Some(
        env_or(
            "TEST_MONGODB_URL",
            "mongodb://127.0.0.1:27017/?directConnection=true",
        )
        .replacen("/?", &format!("/t_{run}?"), 1),
    );
    c.smtp_url = Some(env_or("TEST_SMTP_URL", "smtp://127.0.0.1:2525"));
    tweak(&mut c);
    let app = AllInOne::start(c)
        .await
        .expect("start on the real backends");
    let url = |a: Option<std::net::SocketAddr>| format!("http://{}", a.expect("running"));
    System {
        complaint: url(app.complaint),
        notification: url(app.notification),
        audit: url(app.audit),
        event_store: url(app.event_store),
        app: Some(app),
        mails: Mails::Sink(env_or("TEST_SMTP_SINK", "http://127.0.0.1:8025")),
        namespaces: Some(Namespaces {
            run,
            admin,
            management,
            vhost,
        }),
        client,
        _dir: dir,
    }
}

/// Polls `check` until it returns `Some`, for 20 s at most.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl System {
    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        if let Some(mut n) = self.namespaces.take() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE t_{} WITH (FORCE)",
                n.run
            )))
            .execute(&mut n.admin)
            .await
            .expect("drop database");
            let _ = self
                .client
                .delete(format!("{}/api/vhosts/{}", n.management, n.vhost))
                .basic_auth("guest", Some("guest"))
                .send()
                .await;
        }
    }

    pub async fn get(&self, url: String) -> Value {
        let res = self.client.get(&url).send().await.expect("request");
        assert_eq!(res.status(), StatusCode::OK, "{url}");
        res.json().await.expect("json")
    }

    pub async fn create(&self, user: &str, priority: &str, correlation: &str) -> String {
        let res = self
            .client
            .post(format!("{}/api/complaints", self.complaint))
            .header("X-Correlation-ID", correlation)
            .json(&json!({"userId": user, "title": "Kettle leaks", "description": "Water everywhere", "priority": priority, "category": "appliances"}))
            .send()
            .await
            .expect("create");
        assert_eq!(res.status(), StatusCode::CREATED);
        let v: Value = res.json().await.expect("json");
        v["id"].as_str().expect("id").to_owned()
    }

    pub async fn command(&self, id: &str, action: &str, body: Value, correlation: &str) -> Value {
        let res = self
            .client
            .put(format!("{}/api/complaints/{id}/{action}", self.complaint))
            .header("X-Correlation-ID", correlation)
            .json(&body)
            .send()
            .await
            .expect("command");
        let status = res.status();
        let v: Value = res.json().await.expect("json");
        assert_eq!(status, StatusCode::OK, "{action}: {v}");
        v
    }

    /// One service's `/metrics`.
    pub async fn metrics_of(&self, base: &str) -> String {
        self.client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// The four services' `/metrics`, one after the other.
    pub async fn metrics(&self) -> String {
        let mut all = String::new();
        for base in [
            &self.complaint,
            &self.notification,
            &self.audit,
            &self.event_store,
        ] {
            all += &self.metrics_of(base).await;
        }
        all
    }

    pub async fn view(&self, id: &str) -> Value {
        self.get(format!("{}/api/complaints/{id}", self.complaint))
            .await
    }

    /// The mails sent for complaint `id`.
    pub fn mails_of(&self, id: &str) -> Vec<StoredMail> {
        let sink = match &self.mails {
            Mails::Mailbox(mailbox) => {
                return mailbox
                    .read_all()
                    .expect("mailbox")
                    .into_iter()
                    .filter(|m| m.header("X-Complaint-ID") == Some(id))
                    .collect();
            }
            Mails::Sink(sink) => sink,
        };
        let all: Value = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    reqwest::get(format!("{sink}/messages"))
                        .await
                        .expect("the SMTP sink")
                        .json()
                        .await
                        .expect("json")
                })
            })
            .join()
            .expect("thread")
        });
        all.as_array()
            .map(|mails| {
                mails
                    .iter()
                    .filter(|m| m["headers"]["X-Complaint-ID"] == id)
                    .map(|m| StoredMail {
                        headers: m["headers"]
                            .as_object()
                            .map(|h| {
                                h.iter()
                                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        body: m["body"].as_str().unwrap_or("").trim_end().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn archived(&self, id: &str) -> Vec<Value> {
        self.get(format!("{}/api/events/stream/{id}", self.event_store))
            .await["events"]
            .as_array()
            .expect("events")
            .clone()
    }

    pub async fn trail(&self, id: &str) -> Vec<Value> {
        self.get(format!("{}/api/audit/trail/{id}", self.audit))
            .await["entries"]
            .as_array()
            .expect("entries")
            .clone()
    }

    /// Waits until no queue holds a message: everything published was consumed.
    pub async fn drained(&self) {
        let bus = self.app.as_ref().expect("running").pipeline.bus.clone();
        eventually("every queue to drain", || {
            let bus = bus.clone();
            async move {
                for q in sagaflow_runtime::bus::topology::default_queues() {
                    if bus.depth(&q.name).await.ok()? > 0 {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
    }
}
