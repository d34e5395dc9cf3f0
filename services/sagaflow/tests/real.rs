//! The saga on the real backends: four `sagaflow serve` processes on PostgreSQL, RabbitMQ,
//! Redis, the MongoDB wire server and the SMTP sink, each run in namespaces of its own (a
//! database, a virtual host, a stream prefix, a Mongo database, unique mail recipients).
//! `scripts/backends` starts the backends; `TEST_*_URL` override the defaults.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "support/backends.rs"]
mod backends;
use backends::{SECRET, env_or, run};

const BIN: &str = env!("CARGO_BIN_EXE_sagaflow");

/// Asserts that nothing these services wrote shows the password: no log line, and no file of
/// their data directories.
fn assert_no_secret(services: &[&Service]) {
    let mut lines = 0;
    for s in services {
        let logs = s.logs.lock().expect("lock");
        lines += logs.len();
        for l in logs.iter() {
            assert!(!l.contains(SECRET), "a password in a log line: {l}");
        }
        let mut dirs = vec![s._dir.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("a data directory").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    assert!(
                        !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                        "a password in {}",
                        path.display()
                    );
                }
            }
        }
    }
    assert!(lines > 20, "the services logged only {lines} lines");
}

struct Service {
    child: Child,
    name: String,
    url: String,
    _dir: tempfile::TempDir,
    /// Every log line the process wrote.
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the service said (the last lines), since a timeout alone
        // does not say why.
        if std::thread::panicking()
            && let Ok(logs) = self.logs.lock()
        {
            let from = logs.len().saturating_sub(300);
            eprintln!(
                "--- sagaflow serve {} at {} ({} log lines, the last {}):",
                self.name,
                self.url,
                logs.len(),
                logs.len() - from
            );
            for line in &logs[from..] {
                eprintln!("{line}");
            }
        }
    }
}

#[allow(clippy::zombie_processes)] // `Service`'s Drop reaps the child
fn serve(name: &str, env: &[(String, String)]) -> Service {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", name, "--host", "127.0.0.1"])
        .env("LOG_FORMAT", "json")
        .env("PORT", "0")
        .env("SAGAFLOW_DATA_DIR", dir.path())
        .env("RETRY_BASE_DELAY", "100ms")
        .env("LOG_LEVEL", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn sagaflow");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("sagaflow serve {name} did not start within 60 s (are the backends up? scripts/backends)"));
        logs.lock().expect("lock").push(line.clone());
        if let Ok(log) = serde_json::from_str::<Value>(&line)
            && log["message"] == "listening"
        {
            let url = format!("http://{}", log["addr"].as_str().expect("addr"));
            // Keep reading the log, so the child never blocks on a full pipe.
            let kept = logs.clone();
            std::thread::spawn(move || {
                while let Ok(line) = rx.recv() {
                    kept.lock().expect("lock").push(line);
                }
            });
            return Service {
                child,
                name: name.to_owned(),
                url,
                _dir: dir,
                logs,
            };
        }
    }
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    client
        .get(&url)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_runs_on_four_processes_and_the_real_backends() {
    let r = run().await;
    let (run, client, management, vhost_name, redis, prefix, env) = (
        r.id.clone(),
        r.client.clone(),
        r.management.clone(),
        r.vhost.clone(),
        r.redis.clone(),
        r.prefix.clone(),
        r.env.clone(),
    );
    let complaint = serve("complaint", &env);
    let notification = serve("notification", &env);
    let audit = serve("audit", &env);
    let event_store = serve("event-store", &env);

    let res = client
        .post(format!("{}/api/complaints", complaint.url))
        .header("X-Correlation-ID", format!("saga-{run}"))
        .json(&json!({"userId": "alice", "title": "Kettle", "description": "Leaks", "priority": "HIGH", "category": "home"}))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for (action, body) in [
        ("assign", json!({"assignedTo": "bob"})),
        ("process", json!({"resolution": "Replaced"})),
        ("close", json!({})),
    ] {
        let res = client
            .put(format!("{}/api/complaints/{id}/{action}", complaint.url))
            .json(&body)
            .send()
            .await
            .expect("command");
        assert_eq!(res.status(), 200, "{action}");
    }
    eventually("the saga to complete", || async {
        (get(&client, format!("{}/api/complaints/{id}", complaint.url)).await["sagaStatus"]
            == "COMPLETED")
            .then_some(())
    })
    .await;

    // The archive (MongoDB), the audit trail (PostgreSQL), the mails (SMTP sink).
    let archived = eventually("4 archived events", || async {
        let s = get(
            &client,
            format!("{}/api/events/stream/{id}", event_store.url),
        )
        .await;
        let v: Vec<u64> = s["events"]
            .as_array()?
            .iter()
            .filter_map(|e| e["metadata"]["version"].as_u64())
            .collect();
        (v.len() == 4).then_some(v)
    })
    .await;
    assert_eq!(archived, [1, 2, 3, 4]);
    let trail = get(&client, format!("{}/api/audit/trail/{id}", audit.url)).await;
    assert_eq!(trail["entries"].as_array().expect("entries").len(), 4);
    let sink = env_or("TEST_SMTP_SINK", "http://127.0.0.1:8025");
    let user = format!("alice@{run}.example.com");
    let mails: Vec<Value> = get(&client, format!("{sink}/messages?to={user}"))
        .await
        .as_array()
        .expect("mails")
        .clone();
    let mut templates: Vec<&str> = mails
        .iter()
        .filter_map(|m| m["headers"]["X-Sagaflow-Template"].as_str())
        .collect();
    templates.sort();
    assert_eq!(
        templates,
        [
            "complaint-assigned-user",
            "complaint-closed-user",
            "complaint-created-user",
            "complaint-processed-user"
        ]
    );
    let assignee = get(&client, format!("{sink}/messages?to=bob@{run}.example.com")).await;
    assert_eq!(assignee.as_array().expect("mails").len(), 1);
    let history = get(
        &client,
        format!("{}/api/notifications?complaintId={id}", notification.url),
    )
    .await;
    assert_eq!(
        history["items"].as_array().expect("items").len(),
        6,
        "user ×4, assignee, admin"
    );

    // The topology on RabbitMQ, the entries on Redis.
    let queues: Vec<Value> = client
        .get(format!("{management}/api/queues/{vhost_name}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .expect("queues")
        .json()
        .await
        .expect("json");
    let mut names: Vec<&str> = queues.iter().filter_map(|q| q["name"].as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "audit.events.audit-service",
            "audit.events.complaint-service",
            "audit.events.dlq",
            "complaints.events.audit-service",
            "complaints.events.dlq",
            "complaints.events.notification-service",
            "notifications.events.audit-service",
            "notifications.events.complaint-service",
            "notifications.events.dlq",
        ]
    );
    let streams = sagaflow_runtime::streams::redis::RedisStreams::open(&redis, &prefix)
        .await
        .expect("redis");
    use sagaflow_runtime::streams::StreamLog;
    assert_eq!(streams.len("complaints-stream").await.expect("len"), 4);
    assert_eq!(streams.len("notifications-stream").await.expect("len"), 6);

    // A poison message published straight onto the exchange: both consumers dead-letter it at
    // once and go on.
    let published: Value = client
        .post(format!("{management}/api/exchanges/{vhost_name}/complaints.events/publish"))
        .basic_auth("guest", Some("guest"))
        .json(&json!({"properties": {"message_id": "poison-1"}, "routing_key": "complaint.created", "payload": "not JSON at all", "payload_encoding": "string"}))
        .send()
        .await
        .expect("publish")
        .json()
        .await
        .expect("json");
    assert_eq!(published["routed"], true);
    let letters = eventually("the poison message in complaints.events.dlq", || async {
        let d = get(
            &client,
            format!("{}/api/dlq/complaints.events", complaint.url),
        )
        .await;
        let items = d["items"].as_array()?.clone();
        (items.len() == 2).then_some(items)
    })
    .await;
    for l in &letters {
        assert_eq!(l["attempts"], 1);
        assert!(
            l["lastError"]
                .as_str()
                .is_some_and(|e| e.starts_with("poison message")),
            "{l}"
        );
        assert_eq!(l["body"], "not JSON at all");
    }
    let redriven = client
        .post(format!(
            "{}/api/dlq/complaints.events/redrive",
            complaint.url
        ))
        .send()
        .await
        .expect("redrive");
    assert_eq!(redriven.json::<Value>().await.expect("json")["redriven"], 2);
    // Redriven, they are poison still: back in the DLQ, and the services still work.
    eventually("the poison back in the DLQ", || async {
        let d = get(
            &client,
            format!("{}/api/dlq/complaints.events", complaint.url),
        )
        .await;
        (d["items"].as_array()?.len() == 2).then_some(())
    })
    .await;
    let ready = client
        .get(format!("{}/health/ready", notification.url))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);

    // Nothing a service answers carries the password either: metrics, health, documents.
    for s in [&complaint, &notification, &audit, &event_store] {
        for route in ["/metrics", "/health/ready", "/health/live", "/openapi.json"] {
            let body = client
                .get(format!("{}{route}", s.url))
                .send()
                .await
                .expect("a route")
                .text()
                .await
                .expect("a body");
            assert!(!body.is_empty(), "{route} answered nothing");
            assert!(
                !body.contains(SECRET),
                "the password in {route} of {}",
                s.url
            );
        }
    }
    assert_no_secret(&[&complaint, &notification, &audit, &event_store]);
    let mails = get(
        &client,
        format!(
            "{}/messages?domain={run}.example.com",
            env_or("TEST_SMTP_SINK", "http://127.0.0.1:8025")
        ),
    )
    .await;
    assert!(
        mails.as_array().is_some_and(|m| !m.is_empty()),
        "the run's mails are in the sink"
    );
    assert!(!mails.to_string().contains(SECRET), "a password in a mail");
    drop((complaint, notification, audit, event_store));
    r.clean().await;
}

/// With `TOPOLOGY=external` (what the operator sets) the services declare nothing: what they
/// publish and consume waits until someone else (an EventPipeline) declares the topology.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_external_topology_the_services_wait_for_it_and_then_carry_on() {
    let r = run().await;
    let mut env = r.env.clone();
    env.push(("TOPOLOGY".into(), "external".into()));
    let complaint = serve("complaint", &env);
    let _notification = serve("notification", &env);
    let res = r
        .client
        .post(format!("{}/api/complaints", complaint.url))
        .json(&json!({"userId": "carol", "title": "Fridge", "description": "Warm", "priority": "LOW", "category": "home"}))
        .send()
        .await
        .expect("create");
    assert_eq!(
        res.status(),
        201,
        "commands are taken while the topology is missing"
    );
    let queues: Vec<Value> = r
        .client
        .get(format!("{}/api/queues/{}", r.management, r.vhost))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .expect("queues")
        .json()
        .await
        .expect("json");
    assert!(
        queues.is_empty(),
        "the services declared nothing: {queues:?}"
    );

    // What the EventPipeline's reconciler does, through the runtime's own adapter here.
    let url = env
        .iter()
        .find(|(k, _)| k == "RABBITMQ_URL")
        .map(|(_, v)| v.clone())
        .expect("RABBITMQ_URL");
    use sagaflow_runtime::bus::MessageBus;
    let bus = sagaflow_runtime::bus::rabbitmq::RabbitBus::open(&url)
        .await
        .expect("RabbitMQ");
    bus.declare(&sagaflow_runtime::bus::topology::default_queues())
        .await
        .expect("declare the topology");
    let sink = env_or("TEST_SMTP_SINK", "http://127.0.0.1:8025");
    let to = format!("carol@{}.example.com", r.id);
    eventually("the creation mail once the topology exists", || async {
        let mails = get(&r.client, format!("{sink}/messages?to={to}")).await;
        (mails.as_array()?.len() == 1).then_some(())
    })
    .await;
    r.clean().await;
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// RabbitMQ stops in the middle of a saga: the services answer 503 naming it, keep the
/// commands they accept, reconnect by themselves when it is back, and the saga completes.
/// It stops the broker every other test uses, so `scripts/test` runs it alone, after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops RabbitMQ: scripts/test runs it on its own after the other tests"]
async fn the_services_reconnect_when_rabbitmq_restarts_during_a_saga() {
    let r = run().await;
    let client = r.client.clone();
    let complaint = serve("complaint", &r.env);
    let notification = serve("notification", &r.env);
    let audit = serve("audit", &r.env);
    let event_store = serve("event-store", &r.env);
    let res = client
        .post(format!("{}/api/complaints", complaint.url))
        .json(&json!({"userId": "alice", "title": "Kettle", "description": "Leaks", "priority": "LOW", "category": "home"}))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();

    rabbitmqctl(&["stop_app"]);
    let down = eventually("readiness to name the bus", || async {
        let res = client
            .get(format!("{}/health/ready", notification.url))
            .send()
            .await
            .ok()?;
        let body: Value = res.json().await.ok()?;
        (body["status"] == "unavailable").then_some(body)
    })
    .await;
    assert!(
        down["failing"]
            .as_array()
            .expect("failing")
            .iter()
            .any(|f| f["backend"] == "message-bus"),
        "{down}"
    );
    // Commands still commit (the outbox keeps their events until the broker is back).
    for (action, body) in [
        ("assign", json!({"assignedTo": "bob"})),
        ("process", json!({"resolution": "Replaced"})),
        ("close", json!({})),
    ] {
        let res = client
            .put(format!("{}/api/complaints/{id}/{action}", complaint.url))
            .json(&body)
            .send()
            .await
            .expect("command");
        assert_eq!(res.status(), 200, "{action} while RabbitMQ is down");
    }
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    eventually("the saga to complete after the restart", || async {
        (get(&client, format!("{}/api/complaints/{id}", complaint.url)).await["sagaStatus"]
            == "COMPLETED")
            .then_some(())
    })
    .await;
    eventually("4 archived events", || async {
        let s = get(
            &client,
            format!("{}/api/events/stream/{id}", event_store.url),
        )
        .await;
        (s["events"].as_array()?.len() == 4).then_some(())
    })
    .await;
    // Each consumer comes back on its own backoff: the audit may still be catching up.
    eventually("4 audit entries after the restart", || async {
        let trail = get(&client, format!("{}/api/audit/trail/{id}", audit.url)).await;
        (trail["entries"].as_array()?.len() == 4).then_some(())
    })
    .await;
    let history = get(
        &client,
        format!("{}/api/notifications?complaintId={id}", notification.url),
    )
    .await;
    assert_eq!(
        history["items"].as_array().expect("items").len(),
        6,
        "no mail lost or doubled"
    );
    assert_no_secret(&[&complaint, &notification, &audit, &event_store]);
    drop((complaint, notification, audit, event_store));
    r.clean().await;
}

/// An OTLP/HTTP receiver (protobuf or JSON encoding, by content type): keeps every span it
/// is sent, as OTLP's JSON shape, with its service.
#[derive(Clone, Default)]
struct Collector {
    spans: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    encodings: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<&'static str>>>,
}

impl Collector {
    async fn start() -> (Self, String) {
        use axum::routing::post;
        let collector = Self::default();
        let kept = collector.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let protobuf = headers
                        .get("content-type")
                        .is_some_and(|t| t.as_bytes().starts_with(b"application/x-protobuf"));
                    let export: Value = if protobuf {
                        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
                        let request = <ExportTraceServiceRequest as prost::Message>::decode(body)
                            .expect("OTLP protobuf");
                        serde_json::to_value(request).expect("as JSON")
                    } else {
                        serde_json::from_slice(&body).expect("OTLP JSON")
                    };
                    kept.encodings
                        .lock()
                        .expect("lock")
                        .insert(if protobuf { "protobuf" } else { "json" });
                    let mut spans = kept.spans.lock().expect("lock");
                    for rs in export["resourceSpans"].as_array().into_iter().flatten() {
                        let service = rs["resource"]["attributes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|a| a["key"] == "service.name")
                            .and_then(|a| a["value"]["stringValue"].as_str())
                            .unwrap_or_default()
                            .to_owned();
                        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                            for span in ss["spans"].as_array().into_iter().flatten() {
                                let mut span = span.clone();
                                span["service"] = json!(service);
                                spans.push(span);
                            }
                        }
                    }
                    axum::Json(json!({}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (collector, format!("http://{addr}"))
    }

    fn trace(&self, trace_id: &str) -> Vec<Value> {
        self.spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s["traceId"] == trace_id)
            .cloned()
            .collect()
    }
}

/// One saga's spans share a trace across the four processes: the request's span continues the
/// caller's `traceparent`; each service's span for the event is a child of the span that
/// recorded it (through RabbitMQ headers and Redis stream fields); the mail's span and the
/// handling of its NOTIFICATION_SENT follow on in the same trace; exported over OTLP/HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sagas_spans_share_a_trace_across_the_four_services() {
    let r = run().await;
    let (collector, endpoint) = Collector::start().await;
    // Two services export in the default encoding (protobuf), two in JSON.
    let mut protobuf = r.env.clone();
    protobuf.extend([
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ]);
    let mut json = protobuf.clone();
    json.push(("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/json".into()));
    let complaint = serve("complaint", &protobuf);
    let _notification = serve("notification", &json);
    let _audit = serve("audit", &protobuf);
    let _event_store = serve("event-store", &json);

    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let client_span = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let res = r
        .client
        .post(format!("{}/api/complaints", complaint.url))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(&json!({"userId": "dora", "title": "Oven", "description": "Cold", "priority": "MEDIUM", "category": "home"}))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);

    let by = |spans: &[Value], service: &str, name: &str| -> Option<Value> {
        spans
            .iter()
            .find(|s| s["service"] == service && s["name"] == name)
            .cloned()
    };
    let spans = eventually("the saga's spans from the four services", || async {
        let spans = collector.trace(&trace_id);
        let complete = [
            ("complaint-service", "POST /api/complaints"),
            ("notification-service", "handle COMPLAINT_CREATED"),
            ("audit-service", "handle COMPLAINT_CREATED"),
            ("event-store", "handle COMPLAINT_CREATED"),
            ("notification-service", "send complaint-created-user"),
            ("complaint-service", "handle NOTIFICATION_SENT"),
        ]
        .iter()
        .all(|(service, name)| by(&spans, service, name).is_some());
        complete.then_some(spans)
    })
    .await;
    let request = by(&spans, "complaint-service", "POST /api/complaints").expect("request span");
    assert_eq!(
        request["parentSpanId"], client_span,
        "the request continues the caller's traceparent"
    );
    for service in ["notification-service", "audit-service", "event-store"] {
        let handled = by(&spans, service, "handle COMPLAINT_CREATED").expect("handled");
        assert_eq!(
            handled["parentSpanId"], request["spanId"],
            "{service} handled the event as a child of the request that recorded it"
        );
    }
    let planned = by(&spans, "notification-service", "handle COMPLAINT_CREATED").expect("planned");
    let mail = by(
        &spans,
        "notification-service",
        "send complaint-created-user",
    )
    .expect("mail");
    assert_eq!(
        mail["parentSpanId"], planned["spanId"],
        "the mail follows its planning"
    );
    let sent = by(&spans, "complaint-service", "handle NOTIFICATION_SENT").expect("sent");
    assert_eq!(
        sent["parentSpanId"], mail["spanId"],
        "the mail's event follows the mail"
    );
    let ids: std::collections::HashSet<&str> =
        spans.iter().filter_map(|s| s["spanId"].as_str()).collect();
    assert_eq!(ids.len(), spans.len(), "span ids are unique");
    assert_eq!(
        collector.encodings.lock().expect("lock").len(),
        2,
        "spans came in both encodings"
    );
    r.clean().await;
}
