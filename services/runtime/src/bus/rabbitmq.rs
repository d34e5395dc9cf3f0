//! The message bus on RabbitMQ (lapin): durable topic exchanges, durable
//! `<exchange>.<service>` queues (single active consumer, so one replica at a time consumes a
//! queue, in order), `<exchange>.dlq`, persistent messages with publisher confirms.
//!
//! A delivery stays unacked on the broker until it is settled, so a crash hands it out again.
//! Retries are held in this process, unacked, until their delay has passed; while a message of
//! an aggregate waits, the later messages of that aggregate wait behind it, so events take
//! effect in order. The attempt count of a held retry lives in memory: after a crash the
//! message comes back and its attempts start again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::mpsc;

use super::topology::dlq_name;
use super::{BusError, DeadLetter, Delivery, Message, MessageBus, QueueSpec, headers};

const ORDERING_KEY: &str = "x-ordering-key";
const EXCHANGE: &str = "x-exchange";
const ROUTING_KEY: &str = "x-routing-key";
const PREFETCH: u16 = 256;
/// How long a publisher confirm may take. A confirm that never comes (a channel the broker
/// closed under it) must not hold the relay forever: past this, the publish fails, the channel
/// is replaced, and the rows are published again.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// `work`, given up as unavailable after `CONFIRM_TIMEOUT`: a broker that never answers must
/// not hold a caller that retries with backoff.
async fn bounded<T>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, BusError>>,
) -> Result<T, BusError> {
    tokio::time::timeout(CONFIRM_TIMEOUT, work)
        .await
        .map_err(|_| {
            BusError::Unavailable(format!("{what} took over {} s", CONFIRM_TIMEOUT.as_secs()))
        })?
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(crate::config::redact(&e.to_string()))
}

/// A message this process holds: in flight (handed to the consumer) or waiting.
struct Held {
    seq: u64,
    delivery: lapin::message::Delivery,
    message: Message,
    attempts: u32,
    due: Instant,
}

#[derive(Default)]
struct Local {
    held: Vec<Held>,
    in_flight: HashMap<u64, Held>,
}

struct QueueState {
    rx: tokio::sync::Mutex<mpsc::Receiver<lapin::message::Delivery>>,
    local: Mutex<Local>,
    _channel: Channel,
}

pub struct RabbitBus {
    uri: String,
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
    publisher: tokio::sync::Mutex<Option<Channel>>,
    queues: Mutex<HashMap<String, Arc<QueueState>>>,
    seq: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for RabbitBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBus")
            .field("uri", &crate::config::redact(&self.uri))
            .finish_non_exhaustive()
    }
}

fn table(h: &BTreeMap<String, String>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in h {
        t.insert(
            ShortString::from(k.as_str()),
            AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())),
        );
    }
    t
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        AMQPValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn message_of(d: &lapin::message::Delivery) -> Message {
    let mut headers: BTreeMap<String, String> = d
        .properties
        .headers()
        .as_ref()
        .map(|t| {
            t.inner()
                .iter()
                .filter_map(|(k, v)| text(v).map(|v| (k.as_str().to_owned(), v)))
                .collect()
        })
        .unwrap_or_default();
    let ordering_key = headers.remove(ORDERING_KEY);
    let exchange = headers
        .remove(EXCHANGE)
        .unwrap_or_else(|| d.exchange.as_str().to_owned());
    let routing_key = headers
        .remove(ROUTING_KEY)
        .unwrap_or_else(|| d.routing_key.as_str().to_owned());
    Message {
        message_id: d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default(),
        exchange,
        routing_key,
        ordering_key,
        headers,
        body: String::from_utf8_lossy(&d.data).into_owned(),
    }
}

fn properties(m: &Message, extra: &BTreeMap<String, String>) -> BasicProperties {
    let mut h = m.headers.clone();
    if let Some(k) = &m.ordering_key {
        h.insert(ORDERING_KEY.into(), k.clone());
    }
    h.extend(extra.clone());
    let mut p = BasicProperties::default()
        .with_message_id(ShortString::from(m.message_id.as_str()))
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_headers(table(&h));
    if let Some(c) = m.headers.get(headers::CORRELATION_ID) {
        p = p.with_correlation_id(ShortString::from(c.as_str()));
    }
    p
}

impl RabbitBus {
    /// Connects to `uri` (`amqp://user:password@host:5672/vhost`).
    pub async fn open(uri: &str) -> Result<Self, BusError> {
        let bus = Self {
            uri: uri.to_owned(),
            conn: tokio::sync::Mutex::new(None),
            publisher: tokio::sync::Mutex::new(None),
            queues: Mutex::new(HashMap::new()),
            seq: std::sync::atomic::AtomicU64::new(1),
        };
        bus.connection().await?;
        Ok(bus)
    }

    /// The live connection if there is one, without connecting or waiting for whoever is
    /// connecting: for observers (queue depth) that must not hold up the consumers.
    fn live_connection(&self) -> Result<Arc<Connection>, BusError> {
        let conn = self
            .conn
            .try_lock()
            .map_err(|_| BusError::Unavailable("connecting to RabbitMQ".into()))?;
        match conn.as_ref() {
            Some(c) if c.status().connected() => Ok(c.clone()),
            _ => Err(BusError::Unavailable("not connected to RabbitMQ".into())),
        }
    }

    /// The live connection, reconnecting when the broker went away (every queue consumer and the
    /// publishing channel start again on the new one).
    async fn connection(&self) -> Result<Arc<Connection>, BusError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref()
            && c.status().connected()
        {
            return Ok(c.clone());
        }
        let fresh = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(&self.uri, ConnectionProperties::default()),
        )
        .await
        .map_err(|_| BusError::Unavailable("connecting to RabbitMQ timed out".into()))?
        .map_err(unavailable)?;
        let fresh = Arc::new(fresh);
        *conn = Some(fresh.clone());
        *self.publisher.lock().await = None;
        if let Ok(mut q) = self.queues.lock() {
            q.clear();
        }
        Ok(fresh)
    }

    async fn publisher(&self) -> Result<Channel, BusError> {
        let conn = self.connection().await?;
        let mut publisher = self.publisher.lock().await;
        if let Some(ch) = publisher.as_ref()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let ch = conn.create_channel().await.map_err(unavailable)?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unavailable)?;
        *publisher = Some(ch.clone());
        Ok(ch)
    }

    /// Publishes them all on the confirm channel, then waits for their confirms together.
    async fn publish_batch(&self, messages: &[Message]) -> Result<(), BusError> {
        let ch = bounded("opening a publisher channel", self.publisher()).await?;
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let confirm = ch
                .basic_publish(
                    m.exchange.as_str().into(),
                    m.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    m.body.as_bytes(),
                    properties(m, &BTreeMap::new()),
                )
                .await
                .map_err(unavailable)?;
            confirms.push((m, confirm));
        }
        for (m, confirm) in confirms {
            if self.confirmed(&ch, confirm).await?.is_nack() {
                return Err(BusError::Unavailable(format!(
                    "the broker refused a message for {} {}",
                    m.exchange, m.routing_key
                )));
            }
        }
        Ok(())
    }

    /// Forgets the publisher channel so the next publish opens a fresh one; closing it is left
    /// to a task of its own, bounded (a broken channel may never answer the close).
    async fn drop_publisher(&self, ch: &Channel) {
        *self.publisher.lock().await = None;
        let ch = ch.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONFIRM_TIMEOUT, ch.close(200, "replaced".into())).await;
        });
    }

    /// Waits for a publisher confirm, `CONFIRM_TIMEOUT` at most; on timeout the channel is
    /// closed so that the next publish opens a fresh one.
    async fn confirmed(
        &self,
        ch: &Channel,
        pending: lapin::PublisherConfirm,
    ) -> Result<lapin::Confirmation, BusError> {
        match tokio::time::timeout(CONFIRM_TIMEOUT, pending).await {
            Ok(confirm) => confirm.map_err(unavailable),
            Err(_) => {
                self.drop_publisher(ch).await;
                Err(BusError::Unavailable(format!(
                    "no publisher confirm within {} s",
                    CONFIRM_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// Publishes and waits for the broker's confirm.
    async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BusError> {
        let ch = bounded("opening a publisher channel", self.publisher()).await?;
        let pending = ch
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .map_err(unavailable)?;
        let confirm = self.confirmed(&ch, pending).await?;
        if confirm.is_nack() {
            return Err(BusError::Unavailable(format!(
                "the broker refused a message for {exchange} {routing_key}"
            )));
        }
        Ok(())
    }

    async fn state(&self, queue: &str) -> Result<Arc<QueueState>, BusError> {
        if let Some(s) = self.queues.lock().ok().and_then(|q| q.get(queue).cloned()) {
            return Ok(s);
        }
        // Opening a consumer is bounded too: a broker that never answers must not hold the
        // consumer loop (it retries with backoff instead).
        // Reaching the broker has its own bound (`connection`); waiting for another task's
        // attempt is not counted here.
        let conn = self.connection().await?;
        bounded(
            &format!("opening a consumer of {queue}"),
            self.open_consumer(&conn, queue),
        )
        .await
    }

    async fn open_consumer(
        &self,
        conn: &Connection,
        queue: &str,
    ) -> Result<Arc<QueueState>, BusError> {
        let ch = conn.create_channel().await.map_err(unavailable)?;
        ch.basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| match e {
                lapin::Error { .. } if e.to_string().contains("NOT_FOUND") => {
                    BusError::NoSuchQueue(queue.to_owned())
                }
                other => unavailable(other),
            })?;
        let (tx, rx) = mpsc::channel(usize::from(PREFETCH));
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                if tx.send(d).await.is_err() {
                    break;
                }
            }
        });
        let state = Arc::new(QueueState {
            rx: tokio::sync::Mutex::new(rx),
            local: Mutex::new(Local::default()),
            _channel: ch,
        });
        if let Ok(mut q) = self.queues.lock() {
            q.insert(queue.to_owned(), state.clone());
        }
        Ok(state)
    }

    fn hold(&self, d: lapin::message::Delivery) -> Held {
        Held {
            seq: self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            message: message_of(&d),
            delivery: d,
            attempts: 0,
            due: Instant::now(),
        }
    }

    /// Takes a delivery back from the consumer's hands.
    fn take(&self, d: &Delivery) -> Option<(Arc<QueueState>, Held)> {
        let state = self.queues.lock().ok()?.get(&d.queue).cloned()?;
        let held = state.local.lock().ok()?.in_flight.remove(&d.tag)?;
        Some((state, held))
    }

    fn put_back(state: &QueueState, held: Held) {
        if let Ok(mut local) = state.local.lock() {
            let at = local.held.partition_point(|h| h.seq < held.seq);
            local.held.insert(at, held);
        }
    }

    /// Messages ready on the broker (not counting those delivered and unacked).
    async fn ready(&self, queue: &str) -> Result<u64, BusError> {
        let conn = self.connection().await?;
        bounded(
            &format!("counting {queue}"),
            Self::count_ready(&conn, queue),
        )
        .await
    }

    async fn count_ready(conn: &Connection, queue: &str) -> Result<u64, BusError> {
        let ch = conn.create_channel().await.map_err(unavailable)?;
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        let _ = ch.close(200, "counted".into()).await;
        Ok(u64::from(q.message_count()))
    }

    fn forget(&self, queue: &str) {
        if let Ok(mut q) = self.queues.lock() {
            q.remove(queue);
        }
    }
}

/// Picks, in order, up to `max` held messages that are due and not behind an earlier message
/// of their aggregate.
fn pick(local: &mut Local, queue: &str, max: usize, now: Instant) -> Vec<Delivery> {
    let mut blocked: HashSet<String> = local
        .in_flight
        .values()
        .filter_map(|h| h.message.ordering_key.clone())
        .collect();
    let mut chosen = Vec::new();
    let mut i = 0;
    while i < local.held.len() && chosen.len() < max {
        let key = local.held[i].message.ordering_key.clone();
        let free = key.as_ref().is_none_or(|k| !blocked.contains(k));
        if free && local.held[i].due <= now {
            let h = local.held.remove(i);
            chosen.push(Delivery {
                tag: h.seq,
                queue: queue.to_owned(),
                message: h.message.clone(),
                attempts: h.attempts,
            });
            if let Some(k) = key {
                blocked.insert(k);
            }
            local.in_flight.insert(h.seq, h);
        } else {
            if let Some(k) = key {
                blocked.insert(k);
            }
            i += 1;
        }
    }
    chosen
}

#[async_trait]
impl MessageBus for RabbitBus {
    async fn declare(&self, queues: &[QueueSpec]) -> Result<(), BusError> {
        let conn = self.connection().await?;
        let ch = conn.create_channel().await.map_err(unavailable)?;
        let durable = || QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let mut exchanges: Vec<&str> = queues.iter().map(|q| q.exchange.as_str()).collect();
        exchanges.sort();
        exchanges.dedup();
        for ex in exchanges {
            ch.exchange_declare(
                ex.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
            ch.queue_declare(
                dlq_name(ex).as_str().into(),
                durable(),
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        }
        for q in queues {
            let mut args = FieldTable::default();
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            ch.queue_declare(q.name.as_str().into(), durable(), args)
                .await
                .map_err(unavailable)?;
            for pattern in &q.bindings {
                ch.queue_bind(
                    q.name.as_str().into(),
                    q.exchange.as_str().into(),
                    pattern.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(unavailable)?;
            }
        }
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }

    async fn publish(&self, message: &Message) -> Result<(), BusError> {
        self.send(
            &message.exchange,
            &message.routing_key,
            message.body.as_bytes(),
            properties(message, &BTreeMap::new()),
        )
        .await
    }

    /// Publishes them all on the confirm channel, then waits for their confirms together.
    async fn publish_all(&self, messages: &[Message]) -> Result<(), BusError> {
        // Each step has its own bound; this one covers the rest (a publish that never returns
        // on a channel the broker is closing): the relay must always get an answer.
        let bound = CONFIRM_TIMEOUT * 3;
        match tokio::time::timeout(bound, self.publish_batch(messages)).await {
            Ok(done) => done,
            Err(_) => {
                let current = self.publisher.lock().await.clone();
                if let Some(ch) = current {
                    self.drop_publisher(&ch).await;
                }
                Err(BusError::Unavailable(format!(
                    "publishing a batch took over {} s",
                    bound.as_secs()
                )))
            }
        }
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BusError> {
        let state = self.state(queue).await?;
        let deadline = Instant::now() + wait;
        let mut rx = state.rx.lock().await;
        loop {
            let mut arrived = Vec::new();
            loop {
                match rx.try_recv() {
                    Ok(d) => arrived.push(self.hold(d)),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        drop(rx);
                        self.forget(queue);
                        return Err(BusError::Unavailable(format!(
                            "the consumer of {queue} was cancelled; reconnecting"
                        )));
                    }
                }
            }
            let now = Instant::now();
            let (chosen, next_due) = {
                let mut local = state
                    .local
                    .lock()
                    .map_err(|_| BusError::Unavailable("a poisoned lock".into()))?;
                local.held.extend(arrived);
                let chosen = pick(&mut local, queue, max, now);
                (
                    chosen,
                    local.held.iter().map(|h| h.due).filter(|d| *d > now).min(),
                )
            };
            if !chosen.is_empty() || now >= deadline {
                return Ok(chosen);
            }
            let until = next_due.map_or(deadline, |d| d.min(deadline));
            match tokio::time::timeout(until.saturating_duration_since(now), rx.recv()).await {
                Ok(Some(d)) => {
                    let held = self.hold(d);
                    if let Ok(mut local) = state.local.lock() {
                        local.held.push(held);
                    }
                }
                Ok(None) => {
                    drop(rx);
                    self.forget(queue);
                    return Err(BusError::Unavailable(format!(
                        "the consumer of {queue} was cancelled; reconnecting"
                    )));
                }
                Err(_) => {}
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BusError> {
        let Some((_, held)) = self.take(delivery) else {
            return Err(BusError::Unavailable(
                "the delivery belongs to a closed channel; it will be delivered again".into(),
            ));
        };
        held.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn retry(
        &self,
        delivery: &Delivery,
        delay: Duration,
        error: &str,
    ) -> Result<(), BusError> {
        let Some((state, mut held)) = self.take(delivery) else {
            return Err(BusError::Unavailable(
                "the delivery belongs to a closed channel; it will be delivered again".into(),
            ));
        };
        held.attempts += 1;
        held.due = Instant::now() + delay;
        held.message
            .headers
            .insert(headers::LAST_ERROR.into(), error.to_owned());
        Self::put_back(&state, held);
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, error: &str) -> Result<(), BusError> {
        let Some((state, held)) = self.take(delivery) else {
            return Err(BusError::Unavailable(
                "the delivery belongs to a closed channel; it will be delivered again".into(),
            ));
        };
        let m = &held.message;
        let extra = BTreeMap::from([
            (headers::QUEUE.to_owned(), delivery.queue.clone()),
            (
                headers::ATTEMPTS.to_owned(),
                (held.attempts + 1).to_string(),
            ),
            (headers::LAST_ERROR.to_owned(), error.to_owned()),
            (
                headers::DEAD_LETTERED_AT.to_owned(),
                chrono::Utc::now().timestamp_millis().to_string(),
            ),
            (EXCHANGE.to_owned(), m.exchange.clone()),
            (ROUTING_KEY.to_owned(), m.routing_key.clone()),
        ]);
        if let Err(e) = self
            .send(
                "",
                &dlq_name(&m.exchange),
                m.body.as_bytes(),
                properties(m, &extra),
            )
            .await
        {
            Self::put_back(&state, held);
            return Err(e);
        }
        held.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(unavailable)?;
        tracing::warn!(queue = %delivery.queue, dlq = %dlq_name(&m.exchange), messageId = %m.message_id, error, "dead-lettered");
        Ok(())
    }

    async fn dead_letters(
        &self,
        exchange: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let conn = self.connection().await?;
        let ch = conn.create_channel().await.map_err(unavailable)?;
        let mut out = Vec::new();
        // Read without acking; closing the channel puts every message back, in order.
        while out.len() < limit {
            let Some(got) = ch
                .basic_get(
                    dlq_name(exchange).as_str().into(),
                    BasicGetOptions::default(),
                )
                .await
                .map_err(unavailable)?
            else {
                break;
            };
            let mut message = message_of(&got.delivery);
            let take =
                |h: &mut BTreeMap<String, String>, k: &str| h.get(k).cloned().unwrap_or_default();
            let queue = take(&mut message.headers, headers::QUEUE);
            out.push(DeadLetter {
                id: out.len() as u64 + 1,
                attempts: take(&mut message.headers, headers::ATTEMPTS)
                    .parse()
                    .unwrap_or(0),
                last_error: take(&mut message.headers, headers::LAST_ERROR),
                dead_at: take(&mut message.headers, headers::DEAD_LETTERED_AT)
                    .parse()
                    .unwrap_or(0),
                queue,
                message,
            });
        }
        let _ = ch.close(200, "listed".into()).await;
        Ok(out)
    }

    async fn dead_letter_count(&self, exchange: &str) -> Result<u64, BusError> {
        self.ready(&dlq_name(exchange)).await
    }

    async fn redrive(&self, exchange: &str) -> Result<usize, BusError> {
        // Only the dead letters there now: one that fails again while we redrive lands back in
        // the DLQ and must wait for the next redrive, not loop.
        let present = self.ready(&dlq_name(exchange)).await?;
        let conn = self.connection().await?;
        let ch = conn.create_channel().await.map_err(unavailable)?;
        let mut n = 0;
        while (n as u64) < present
            && let Some(got) = ch
                .basic_get(
                    dlq_name(exchange).as_str().into(),
                    BasicGetOptions::default(),
                )
                .await
                .map_err(unavailable)?
        {
            let mut m = message_of(&got.delivery);
            let queue = m.headers.get(headers::QUEUE).cloned().unwrap_or_default();
            for k in [
                headers::QUEUE,
                headers::ATTEMPTS,
                headers::LAST_ERROR,
                headers::DEAD_LETTERED_AT,
            ] {
                m.headers.remove(k);
            }
            let extra = BTreeMap::from([
                (EXCHANGE.to_owned(), m.exchange.clone()),
                (ROUTING_KEY.to_owned(), m.routing_key.clone()),
            ]);
            self.send("", &queue, m.body.as_bytes(), properties(&m, &extra))
                .await?;
            got.delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(unavailable)?;
            n += 1;
        }
        let _ = ch.close(200, "redriven".into()).await;
        Ok(n)
    }

    async fn depth(&self, queue: &str) -> Result<u64, BusError> {
        // Counted on the connection the consumers use; an observer never reconnects.
        let conn = self.live_connection()?;
        let ready = bounded(
            &format!("counting {queue}"),
            Self::count_ready(&conn, queue),
        )
        .await?;
        let local = self
            .queues
            .lock()
            .ok()
            .and_then(|q| q.get(queue).cloned())
            .and_then(|s| {
                s.local
                    .lock()
                    .ok()
                    .map(|l| l.held.len() + l.in_flight.len())
            })
            .unwrap_or(0);
        Ok(ready + local as u64)
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.connection().await.map(|_| ())
    }
}
