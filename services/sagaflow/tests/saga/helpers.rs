use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::StatusCode;
use sagaflow::{AllInOne, Config, Ports};
use sagaflow_notification::mailer::mailbox::{Mailbox, StoredMail};
use sagaflow_notification::mailer::{Mail, MailError, Mailer};
use serde_json::{Value, json};

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

pub struct System {
    pub app: Option<AllInOne>,
    pub mailbox: Mailbox,
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

pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> System {
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
        mailbox,
        client: reqwest::Client::new(),
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

    pub async fn view(&self, id: &str) -> Value {
        self.get(format!("{}/api/complaints/{id}", self.complaint))
            .await
    }

    pub fn mails_of(&self, id: &str) -> Vec<StoredMail> {
        self.mailbox
            .read_all()
            .expect("mailbox")
            .into_iter()
            .filter(|m| m.header("X-Complaint-ID") == Some(id))
            .collect()
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
