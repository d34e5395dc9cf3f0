//! The conformance suite of the [`MessageBus`] port, run on every adapter through
//! [`bus_conformance!`](crate::bus_conformance).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Message, MessageBus, QueueSpec, headers};

const EX: &str = "complaints.events";

pub fn message(id: &str, key: &str, ordering: Option<&str>) -> Message {
    Message {
        message_id: id.to_owned(),
        exchange: EX.to_owned(),
        routing_key: key.to_owned(),
        ordering_key: ordering.map(str::to_owned),
        headers: BTreeMap::from([(headers::CORRELATION_ID.to_owned(), "corr-1".to_owned())]),
        body: format!("{{\"id\":\"{id}\"}}"),
    }
}

async fn setup(bus: &Arc<dyn MessageBus>) {
    bus.declare(&[
        QueueSpec::new(EX, "all", &["#"]),
        QueueSpec::new(EX, "created", &["complaint.created"]),
        QueueSpec::new("notifications.events", "other", &["#"]),
    ])
    .await
    .expect("declare");
}

const ALL: &str = "complaints.events.all";
const NOW: Duration = Duration::ZERO;
/// Long enough for a pushed delivery to arrive, to show that nothing does.
const BRIEF: Duration = Duration::from_millis(300);

/// Receives until exactly `n` messages came (5 s at most), then checks that no more are ready.
async fn exactly(bus: &Arc<dyn MessageBus>, queue: &str, n: usize) -> Vec<super::Delivery> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {n} messages arrived on {queue}",
            got.len()
        );
        got.extend(
            bus.receive(queue, n - got.len(), left)
                .await
                .expect("receive"),
        );
    }
    nothing(bus, queue).await;
    got
}

async fn nothing(bus: &Arc<dyn MessageBus>, queue: &str) {
    let more = bus.receive(queue, 10, BRIEF).await.expect("receive");
    let ids: Vec<&str> = more.iter().map(|d| d.message.message_id.as_str()).collect();
    assert!(ids.is_empty(), "unexpected messages on {queue}: {ids:?}");
}

pub async fn routes_by_topic_to_every_bound_queue(bus: Arc<dyn MessageBus>) {
    setup(&bus).await;
    setup(&bus).await; // declaring twice changes nothing
    bus.publish(&message("m1", "complaint.created", None))
        .await
        .expect("publish");
    bus.publish(&message("m2", "complaint.closed", None))
        .await
        .expect("publish");
    let all = exactly(&bus, ALL, 2).await;
    assert_eq!(
        all.iter()
            .map(|d| d.message.message_id.as_str())
            .collect::<Vec<_>>(),
        ["m1", "m2"]
    );
    assert_eq!(
        all[0].message,
        message("m1", "complaint.created", None),
        "delivered as published"
    );
    exactly(&bus, "complaints.events.created", 1).await;
    nothing(&bus, "notifications.events.other").await;
}

pub async fn a_delivery_is_not_handed_out_twice_until_settled(bus: Arc<dyn MessageBus>) {
    setup(&bus).await;
    bus.publish(&message("m1", "complaint.created", None))
        .await
        .expect("publish");
    let first = exactly(&bus, ALL, 1).await;
    assert_eq!(bus.depth(ALL).await.expect("depth"), 1);
    bus.ack(&first[0]).await.expect("ack");
    assert_eq!(bus.depth(ALL).await.expect("depth"), 0);
}

pub async fn a_retry_comes_back_after_its_delay_with_the_attempt_counted(bus: Arc<dyn MessageBus>) {
    setup(&bus).await;
    bus.publish(&message("m1", "complaint.created", None))
        .await
        .expect("publish");
    let d = exactly(&bus, ALL, 1).await.remove(0);
    bus.retry(&d, Duration::from_millis(1500), "database busy")
        .await
        .expect("retry");
    nothing(&bus, ALL).await; // not before its delay
    let again = bus
        .receive(ALL, 1, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(
        again[0]
            .message
            .headers
            .get(headers::LAST_ERROR)
            .map(String::as_str),
        Some("database busy")
    );
}

pub async fn messages_of_one_ordering_key_come_one_at_a_time_in_order(bus: Arc<dyn MessageBus>) {
    setup(&bus).await;
    for (id, key) in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("a3", "A")] {
        bus.publish(&message(id, "complaint.created", Some(key)))
            .await
            .expect("publish");
    }
    let first = exactly(&bus, ALL, 2).await;
    assert_eq!(
        first
            .iter()
            .map(|d| d.message.message_id.as_str())
            .collect::<Vec<_>>(),
        ["a1", "b1"]
    );
    // a1 waits for a retry: a2 stays behind it.
    bus.retry(&first[0], Duration::from_millis(1000), "later")
        .await
        .expect("retry");
    bus.ack(&first[1]).await.expect("ack");
    nothing(&bus, ALL).await;
    let again = bus
        .receive(ALL, 10, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(
        again
            .iter()
            .map(|d| d.message.message_id.as_str())
            .collect::<Vec<_>>(),
        ["a1"]
    );
    bus.ack(&again[0]).await.expect("ack");
    let next = exactly(&bus, ALL, 1).await;
    assert_eq!(
        next.iter()
            .map(|d| d.message.message_id.as_str())
            .collect::<Vec<_>>(),
        ["a2"]
    );
}

pub async fn dead_letters_keep_their_story_and_redrive_back(bus: Arc<dyn MessageBus>) {
    setup(&bus).await;
    bus.publish(&message("m1", "complaint.created", Some("A")))
        .await
        .expect("publish");
    let d = exactly(&bus, ALL, 1).await.remove(0);
    bus.retry(&d, NOW, "first").await.expect("retry");
    let d = bus
        .receive(ALL, 1, Duration::from_secs(5))
        .await
        .expect("receive")
        .remove(0);
    bus.dead_letter(&d, "gave up").await.expect("dead letter");
    assert_eq!(bus.depth(ALL).await.expect("depth"), 0);
    let dead = bus.dead_letters(EX, 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    let h = &dead[0].message.headers;
    assert_eq!(h.get(headers::QUEUE).map(String::as_str), Some(ALL));
    assert_eq!(h.get(headers::ATTEMPTS).map(String::as_str), Some("2"));
    assert_eq!(
        h.get(headers::LAST_ERROR).map(String::as_str),
        Some("gave up")
    );
    assert_eq!(
        (
            dead[0].attempts,
            dead[0].last_error.as_str(),
            dead[0].queue.as_str()
        ),
        (2, "gave up", ALL)
    );
    assert!(
        bus.dead_letters("notifications.events", 10)
            .await
            .expect("list")
            .is_empty()
    );

    dead_letters_counted(&bus, EX, 1).await;
    dead_letters_counted(&bus, "notifications.events", 0).await;

    assert_eq!(bus.redrive(EX).await.expect("redrive"), 1);
    assert!(bus.dead_letters(EX, 10).await.expect("list").is_empty());
    dead_letters_counted(&bus, EX, 0).await;
    let back = bus
        .receive(ALL, 1, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(back.len(), 1);
    assert_eq!(
        (back[0].message.message_id.as_str(), back[0].attempts),
        ("m1", 0)
    );
    assert_eq!(
        back[0]
            .message
            .headers
            .get(headers::CORRELATION_ID)
            .map(String::as_str),
        Some("corr-1")
    );
}

/// Waits (5 s at most: a broker's count may trail a moment) until `exchange`'s dead letters
/// are counted as `n`.
async fn dead_letters_counted(bus: &Arc<dyn MessageBus>, exchange: &str, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let counted = bus.dead_letter_count(exchange).await.expect("count");
        if counted == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{exchange}: {counted} dead letters counted, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn a_waiting_receive_wakes_for_a_publish(bus: Arc<dyn MessageBus>) {
    setup(&bus).await;
    let waiting = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.receive(ALL, 1, Duration::from_secs(10)).await })
    };
    bus.publish(&message("m1", "complaint.created", None))
        .await
        .expect("publish");
    let got = waiting.await.expect("task").expect("receive");
    assert_eq!(got.len(), 1);
}

pub async fn answers_ping(bus: Arc<dyn MessageBus>) {
    bus.ping().await.expect("ping");
}

pub async fn a_batch_is_published_in_order_and_acked_together(bus: Arc<dyn MessageBus>) {
    setup(&bus).await;
    let batch: Vec<Message> = (0..20)
        .map(|n| message(&format!("b{n}"), "complaint.created", None))
        .collect();
    bus.publish_all(&batch).await.expect("publish a batch");
    bus.publish_all(&[]).await.expect("an empty batch");
    let all = exactly(&bus, ALL, 20).await;
    let ids: Vec<&str> = all.iter().map(|d| d.message.message_id.as_str()).collect();
    let want: Vec<String> = (0..20).map(|n| format!("b{n}")).collect();
    assert_eq!(ids, want, "in publication order");
    assert_eq!(all[3].message, batch[3], "delivered as published");
    exactly(&bus, "complaints.events.created", 20).await;
    bus.ack_all(&all[..15]).await.expect("ack a batch");
    bus.ack_all(&[]).await.expect("ack nothing");
    assert_eq!(bus.depth(ALL).await.expect("depth"), 5);
    bus.ack_all(&all[15..]).await.expect("ack the rest");
    assert_eq!(bus.depth(ALL).await.expect("depth"), 0);
}

#[macro_export]
macro_rules! bus_conformance {
    ($new:expr) => {
        $crate::bus_conformance!(@tests $new;
            routes_by_topic_to_every_bound_queue,
            a_delivery_is_not_handed_out_twice_until_settled,
            a_retry_comes_back_after_its_delay_with_the_attempt_counted,
            messages_of_one_ordering_key_come_one_at_a_time_in_order,
            dead_letters_keep_their_story_and_redrive_back,
            a_waiting_receive_wakes_for_a_publish,
            a_batch_is_published_in_order_and_acked_together,
            answers_ping,
        );
    };
    (@tests $new:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::bus::conformance::$name($new.await).await;
            }
        )+
    };
}
