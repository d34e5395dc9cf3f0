//! What the cluster tests share: the API client, a namespace of their own with its RabbitMQ
//! virtual host and Redis database, the operator as a process, and waiting with a deadline.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

pub fn kubeconfig() -> String {
    std::env::var("TEST_KUBECONFIG").unwrap_or_else(|_| {
        panic!("TEST_KUBECONFIG is not set: start the API server with `scripts/kube` and export TEST_KUBECONFIG=<the KUBECONFIG it prints> (./scripts/test does both)")
    })
}

fn backend(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: start the backends with `scripts/backends` and export the URLs it prints as TEST_* (./scripts/test does both)")
    })
}

pub fn management() -> String {
    std::env::var("TEST_RABBITMQ_MANAGEMENT").unwrap_or_else(|_| "http://127.0.0.1:15672".into())
}

/// `amqp://guest:guest@127.0.0.1:5672` without its virtual host.
fn amqp_base() -> String {
    let url = backend("TEST_RABBITMQ_URL");
    let without_vhost = match url.rfind('/') {
        Some(i) if i > "amqp://".len() => url[..i].to_owned(),
        _ => url,
    };
    without_vhost.trim_end_matches('/').to_owned()
}

fn redis_base() -> String {
    let url = backend("TEST_REDIS_URL");
    let host = url.trim_end_matches('/');
    match host.rsplit_once('/') {
        Some((h, db))
            if db.chars().all(|c| c.is_ascii_digit())
                && h.contains("://")
                && h.len() > "redis://".len() =>
        {
            h.to_owned()
        }
        _ => host.to_owned(),
    }
}

pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A test's namespace, RabbitMQ virtual host and Redis database.
pub struct Kube {
    pub client: Client,
    pub ns: String,
    pub vhost: String,
    pub redis_db: u8,
    pub http: reqwest::Client,
}

impl Kube {
    /// `name` makes the namespace and virtual host; `redis_db` (10-15, one per test) is flushed.
    pub async fn new(name: &str, redis_db: u8) -> Self {
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(kubeconfig()).expect("TEST_KUBECONFIG is readable"),
            &KubeConfigOptions::default(),
        )
        .await
        .expect("a client configuration");
        let client = Client::try_from(config).expect("a client");
        install_crds(&client).await;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let suffix = format!("{:x}", std::process::id() ^ nanos);
        let ns = format!("t-{name}-{suffix}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("a namespace"),
            )
            .await
            .expect("create the test namespace");
        let http = reqwest::Client::new();
        let vhost = ns.clone();
        let put = http
            .put(format!("{}/api/vhosts/{vhost}", management()))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .expect("RabbitMQ's management API answers (scripts/backends rabbitmq)");
        assert!(
            put.status().is_success(),
            "creating the vhost: {}",
            put.status()
        );
        let k = Self {
            client,
            ns,
            vhost,
            redis_db,
            http,
        };
        let mut conn = k.redis().await;
        let _: () = redis::cmd("FLUSHDB")
            .query_async(&mut conn)
            .await
            .expect("FLUSHDB");
        k
    }

    pub fn amqp_url(&self, password: Option<&str>) -> String {
        let base = amqp_base();
        let with_password = match password {
            Some(p) => base.replacen(":guest@", &format!(":{p}@"), 1),
            None => base,
        };
        format!("{with_password}/{}", self.vhost)
    }

    pub fn redis_url(&self) -> String {
        format!("{}/{}", redis_base(), self.redis_db)
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url())
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("Redis answers (scripts/backends redis)")
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn secret(&self, name: &str, url: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name}, "stringData": {"url": url}
        }))
        .expect("a secret");
        self.api::<Secret>()
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&secret),
            )
            .await
            .expect("apply a secret");
    }

    /// Creates a custom resource from raw JSON (so that invalid ones can be sent).
    pub async fn create_raw(
        &self,
        kind: &str,
        name: &str,
        spec: Value,
    ) -> Result<DynamicObject, kube::Error> {
        let plural = match kind {
            "EventPipeline" => "eventpipelines",
            _ => "complaintsagas",
        };
        let ar = ApiResource {
            group: "sagaflow.dev".into(),
            version: "v1alpha1".into(),
            api_version: "sagaflow.dev/v1alpha1".into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &self.ns, &ar);
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "sagaflow.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name}, "spec": spec
        }))
        .expect("an object");
        api.create(&PostParams::default(), &obj).await
    }

    /// The Events of the object `name`, as (type, reason, message).
    pub async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        self.api::<Event>()
            .list(&Default::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// GET on RabbitMQ's management API, in this test's virtual host: None on 404.
    pub async fn rabbit(&self, path: &str) -> Option<Value> {
        let url = format!("{}/api/{path}", management()).replace("{vhost}", &self.vhost);
        let r = self
            .http
            .get(url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .expect("RabbitMQ's management API answers");
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        Some(r.json().await.expect("JSON"))
    }

    /// Publishes `n` persistent messages straight into `queue`.
    pub async fn publish(&self, queue: &str, n: usize) {
        for i in 0..n {
            let r = self
                .http
                .post(format!(
                    "{}/api/exchanges/{}/amq.default/publish",
                    management(),
                    self.vhost
                ))
                .basic_auth("guest", Some("guest"))
                .json(
                    &json!({"properties": {"delivery_mode": 2}, "routing_key": queue,
                    "payload": format!("message {i}"), "payload_encoding": "string"}),
                )
                .send()
                .await
                .expect("publish");
            let body: Value = r.json().await.expect("JSON");
            assert_eq!(body["routed"], true, "the message reached {queue}");
        }
    }

    /// Removes the namespace, the virtual host and the Redis data.
    pub async fn cleanup(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces.delete(&self.ns, &DeleteParams::default()).await;
        let _ = self
            .http
            .delete(format!("{}/api/vhosts/{}", management(), self.vhost))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
        let mut conn = self.redis().await;
        let _: Result<(), _> = redis::cmd("FLUSHDB").query_async(&mut conn).await;
    }
}

/// Applies `crds/crds.yaml` (server-side, idempotent) and waits until both are served.
async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let text = include_str!("../../../crds/crds.yaml");
    for doc in text.split("\n---\n").skip(1) {
        let crd: CustomResourceDefinition = serde_yaml::from_str(doc).expect("a CRD");
        apply_crd(&api, &crd).await;
    }
}

/// Applies a CRD (server-side, idempotent) and waits until it is Established.
pub async fn apply_crd(api: &Api<CustomResourceDefinition>, crd: &CustomResourceDefinition) {
    let name = crd.metadata.name.clone().expect("a name");
    api.patch(
        &name,
        &PatchParams::apply("sagaflow-tests").force(),
        &Patch::Apply(crd),
    )
    .await
    .unwrap_or_else(|e| panic!("applying the CRD {name}: {e}"));
    eventually(&format!("{name} Established"), 30, || async {
        let c = api.get(&name).await.ok()?;
        c.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

/// `sagaflow-operator run` for one namespace, its output kept for the test to read.
pub struct Operator {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Operator {
    pub fn start(ns: &str, identity: &str) -> Self {
        Self::start_with(ns, identity, &kubeconfig(), &[])
    }

    /// With another KUBECONFIG (another identity) and more arguments.
    pub fn start_with(ns: &str, identity: &str, kubeconfig: &str, more: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sagaflow-operator"))
            .args([
                "run",
                "--namespace",
                ns,
                "--identity",
                identity,
                "--lease-duration",
                "3s",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ])
            .args(more)
            .env("KUBECONFIG", kubeconfig)
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sagaflow-operator");
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut l = log.lock().expect("log");
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        Self { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The address of its health and metrics routes, from its log.
    pub async fn address(&self) -> String {
        eventually(
            "the operator's listening address in its log",
            30,
            || async {
                let log = self.log();
                log.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|v| v["message"] == "health and metrics listening")
                    .and_then(|v| v["address"].as_str().map(String::from))
            },
        )
        .await
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to stop by itself.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        eventually("the operator to stop after SIGTERM", 30, || {
            let done = self.child.try_wait().ok().flatten();
            async move { done }
        })
        .await
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}
