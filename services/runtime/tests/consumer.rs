//! The consumer loop on the embedded bus: backoff, dead letters after the last attempt,
//! redrive through the HTTP API, business errors not retried.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sagaflow_domain::events::ComplaintClosed;
use sagaflow_domain::{Context, Envelope, Payload};
use sagaflow_runtime::bus::sqlite::SqliteBus;
use sagaflow_runtime::bus::topology::default_queues;
use sagaflow_runtime::bus::{Message, MessageBus, headers};
use sagaflow_runtime::consumer::{Failure, Handler, Incoming, QueueConsumer, RetryPolicy};
use sagaflow_runtime::metrics::Metrics;

const QUEUE: &str = "complaints.events.notification-service";

struct Flaky {
    healthy: AtomicBool,
    business: bool,
    calls: Mutex<Vec<Instant>>,
    applied: Mutex<Vec<String>>,
}

#[async_trait]
impl Handler for Flaky {
    async fn handle(&self, incoming: &Incoming) -> Result<(), Failure> {
        self.calls.lock().expect("lock").push(Instant::now());
        if self.business {
            return Err(Failure::Business("complaint c1 does not exist".into()));
        }
        if !self.healthy.load(Ordering::SeqCst) {
            return Err(Failure::Transient("the store is away".into()));
        }
        self.applied
            .lock()
            .expect("lock")
            .push(incoming.envelope.event_id.clone());
        Ok(())
    }
}

fn event() -> Message {
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("time");
    let ctx = Context {
        correlation_id: "corr".into(),
        causation_id: None,
        user_id: None,
        at,
        traceparent: None,
    };
    let env = Envelope::new(
        "e1".into(),
        "c1",
        1,
        &Payload::ComplaintClosed(ComplaintClosed {
            complaint_id: "c1".into(),
            reason: Some("r".into()),
            closed_at: at,
        }),
        &ctx,
    );
    Message {
        message_id: "e1".into(),
        exchange: "complaints.events".into(),
        routing_key: env.routing_key(),
        ordering_key: Some("c1".into()),
        headers: Default::default(),
        body: env.to_json(),
    }
}

/// The dead letters of complaints.events once there are some (20 s at most).
async fn dead_letters(bus: &Arc<dyn MessageBus>) -> Vec<sagaflow_runtime::bus::DeadLetter> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let letters = bus
            .dead_letters("complaints.events", 10)
            .await
            .expect("list");
        if !letters.is_empty() {
            return letters;
        }
        assert!(
            Instant::now() < deadline,
            "nothing was dead-lettered within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn until<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fresh RabbitMQ virtual host's URL (scripts/backends rabbitmq starts the broker).
async fn rabbitmq() -> String {
    let management = std::env::var("TEST_RABBITMQ_MANAGEMENT")
        .unwrap_or_else(|_| "http://127.0.0.1:15672".into());
    let client = reqwest::Client::new();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let vhost = format!("t-{secs}-{}", uuid::Uuid::new_v4().simple());
    let put = client
        .put(format!("{management}/api/vhosts/{vhost}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await;
    let put = put.unwrap_or_else(|e| panic!("RabbitMQ's management API is not answering at {management}: {e}. Start it with scripts/backends rabbitmq"));
    assert!(put.status().is_success());
    let perms = client
        .put(format!("{management}/api/permissions/{vhost}/guest"))
        .basic_auth("guest", Some("guest"))
        .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
        .send()
        .await
        .expect("permissions");
    assert!(perms.status().is_success());
    format!("amqp://guest:guest@127.0.0.1:5672/{vhost}")
}

async fn setup(
    business: bool,
    real: bool,
) -> (
    Arc<dyn MessageBus>,
    Arc<Flaky>,
    tokio::task::JoinHandle<()>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let bus: Arc<dyn MessageBus> = if real {
        Arc::new(
            sagaflow_runtime::bus::rabbitmq::RabbitBus::open(&rabbitmq().await)
                .await
                .expect("RabbitMQ"),
        )
    } else {
        Arc::new(
            SqliteBus::open(&dir.path().join("bus.db"))
                .await
                .expect("bus"),
        )
    };
    bus.declare(&default_queues()).await.expect("declare");
    let flaky = Arc::new(Flaky {
        healthy: AtomicBool::new(false),
        business,
        calls: Mutex::new(Vec::new()),
        applied: Mutex::new(Vec::new()),
    });
    let consumer = QueueConsumer {
        bus: bus.clone(),
        queue: QUEUE.into(),
        handler: flaky.clone(),
        policy: RetryPolicy {
            base: Duration::from_millis(40),
            cap: Duration::from_secs(1),
            max_attempts: 5,
        },
        metrics: Metrics::new("test-service").expect("metrics"),
    };
    let task = tokio::spawn(consumer.run());
    (bus, flaky, task, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_backs_off_then_is_dead_lettered_and_a_redrive_succeeds() {
    transient_then_redrive(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_a_transient_failure_backs_off_then_is_dead_lettered_and_a_redrive_succeeds() {
    transient_then_redrive(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_error_is_dead_lettered_without_retry() {
    business_error(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_a_business_error_is_dead_lettered_without_retry() {
    business_error(true).await;
}

async fn transient_then_redrive(real: bool) {
    let (bus, flaky, task, _dir) = setup(false, real).await;
    bus.publish(&event()).await.expect("publish");
    let letters = dead_letters(&bus).await;
    let calls = flaky.calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 5, "5 attempts, then the DLQ");
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, at_least) in gaps.iter().zip([40, 80, 160, 320]) {
        assert!(
            *gap >= Duration::from_millis(at_least),
            "gaps {gaps:?} do not double from 40 ms"
        );
    }
    let h = &letters[0].message.headers;
    assert_eq!(h.get(headers::QUEUE).map(String::as_str), Some(QUEUE));
    assert_eq!(h.get(headers::ATTEMPTS).map(String::as_str), Some("5"));
    assert_eq!(
        h.get(headers::LAST_ERROR).map(String::as_str),
        Some("the store is away")
    );
    assert_eq!(bus.depth(QUEUE).await.expect("depth"), 0);

    // The owner's API redrives it; the handler has recovered.
    flaky.healthy.store(true, Ordering::SeqCst);
    let router = sagaflow_runtime::http::dlq::routes(bus.clone(), "complaints.events");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    let client = reqwest::Client::new();
    let listed: serde_json::Value = client
        .get(format!("http://{addr}/api/dlq/complaints.events"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"][0]["attempts"], 5);
    let res: serde_json::Value = client
        .post(format!("http://{addr}/api/dlq/complaints.events/redrive"))
        .send()
        .await
        .expect("redrive")
        .json()
        .await
        .expect("json");
    assert_eq!(res["redriven"], 1);
    until("the redriven message to be applied", || {
        flaky.applied.lock().expect("lock").len() == 1
    })
    .await;
    assert!(
        bus.dead_letters("complaints.events", 10)
            .await
            .expect("list")
            .is_empty()
    );
    task.abort();
}

async fn business_error(real: bool) {
    let (bus, flaky, task, _dir) = setup(true, real).await;
    bus.publish(&event()).await.expect("publish");
    let letters = dead_letters(&bus).await;
    assert_eq!(flaky.calls.lock().expect("lock").len(), 1);
    assert_eq!(letters[0].attempts, 1);
    assert!(
        letters[0].last_error.starts_with("business error"),
        "{}",
        letters[0].last_error
    );
    task.abort();
}

/// On a stream, a backend away is waited for however long it takes: the entry is not
/// dead-lettered after the attempts a queue would allow (a stream's DLQ has no redrive), and
/// is applied once the backend is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_entry_outlives_a_long_outage_and_is_applied_once_the_store_is_back() {
    use sagaflow_runtime::consumer::StreamConsumer;
    use sagaflow_runtime::streams::StreamLog;
    use sagaflow_runtime::streams::sqlite::SqliteStreams;

    let dir = tempfile::tempdir().expect("temp dir");
    let streams: Arc<dyn StreamLog> = Arc::new(
        SqliteStreams::open(&dir.path().join("streams.db"))
            .await
            .expect("streams"),
    );
    let handler = Arc::new(Flaky {
        healthy: AtomicBool::new(false),
        business: false,
        calls: Mutex::new(Vec::new()),
        applied: Mutex::new(Vec::new()),
    });
    let message = event();
    streams
        .append(
            "complaints-stream",
            &std::collections::BTreeMap::from([("event".to_owned(), message.body.clone())]),
            None,
        )
        .await
        .expect("append");
    let consumer = StreamConsumer {
        streams: streams.clone(),
        stream: "complaints-stream".into(),
        group: "event-store".into(),
        consumer: "c1".into(),
        handler: handler.clone(),
        min_idle: Duration::from_millis(20),
        max_attempts: 3,
        attempts: Default::default(),
        metrics: Metrics::new("event-store").expect("metrics"),
    };
    let task = tokio::spawn(consumer.run());
    until("twice the attempts a queue allows", || {
        handler.calls.lock().expect("lock").len() >= 6
    })
    .await;
    assert_eq!(
        streams.len("complaints-stream.dlq").await.expect("len"),
        0,
        "not dead-lettered while the store is away"
    );
    handler.healthy.store(true, Ordering::SeqCst);
    until("the entry applied", || {
        handler.applied.lock().expect("lock").len() == 1
    })
    .await;
    task.abort();
}

/// A handler that never finishes: what it was handed stays in flight.
struct Stuck;

#[async_trait]
impl Handler for Stuck {
    async fn handle(&self, _incoming: &Incoming) -> Result<(), Failure> {
        std::future::pending().await
    }
}

/// `queue_depth{queue, service}` follows what waits in a consumed queue: messages a stuck
/// consumer holds count, and the gauge shows them (not only a series at 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_shows_what_waits_for_a_stuck_consumer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pipeline, _bus, _streams) =
        sagaflow_runtime::pipeline::Pipeline::embedded(dir.path(), RetryPolicy::default())
            .await
            .expect("embedded pipeline");
    pipeline
        .bus
        .declare(&default_queues())
        .await
        .expect("declare");
    for n in 0..3 {
        let mut m = event();
        m.message_id = format!("e{n}");
        m.ordering_key = Some(format!("c{n}"));
        pipeline.bus.publish(&m).await.expect("publish");
    }
    let metrics = Metrics::new("notification-service").expect("metrics");
    let mut tasks = sagaflow_runtime::tasks::Tasks::default();
    pipeline.start_consumers(
        &mut tasks,
        "notification-service",
        Arc::new(Stuck),
        &metrics,
    );
    let wanted = format!("queue_depth{{queue=\"{QUEUE}\",service=\"notification-service\"}} 3");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics.render();
        if text.contains(&wanted) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no {wanted} within 30 s:\n{}",
            text.lines()
                .filter(|l| l.starts_with("queue_depth"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tasks.stop().await;
}
