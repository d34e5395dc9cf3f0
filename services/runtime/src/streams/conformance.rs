//! The conformance suite of the [`StreamLog`] port, run on every adapter through
//! [`streams_conformance!`](crate::streams_conformance).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{GroupStart, StreamError, StreamLog, parse_id};

const S: &str = "complaints-stream";
const NOW: Duration = Duration::ZERO;

fn fields(n: usize) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("eventId".to_owned(), format!("e{n}")),
        ("event".to_owned(), format!("{{\"n\":{n}}}")),
    ])
}

fn ids_of(entries: &[super::Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.fields["eventId"].clone())
        .collect()
}

pub async fn ids_increase_and_any_position_can_be_read(log: Arc<dyn StreamLog>) {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(log.append(S, &fields(n), None).await.expect("append"));
    }
    let parsed: Vec<(i64, i64)> = ids.iter().map(|i| parse_id(i).expect("id")).collect();
    assert!(parsed.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let all = log.range(S, None, 100).await.expect("range");
    assert_eq!(ids_of(&all), ["e0", "e1", "e2", "e3", "e4"]);
    assert_eq!(all[0].fields, fields(0));
    let tail = log.range(S, Some(&ids[2]), 100).await.expect("range");
    assert_eq!(ids_of(&tail), ["e3", "e4"]);
    assert_eq!(log.len(S).await.expect("len"), 5);
    assert!(matches!(
        log.range(S, Some("nonsense"), 1).await,
        Err(StreamError::BadId(_))
    ));
}

pub async fn a_group_hands_each_entry_to_one_consumer_and_each_group_gets_all(
    log: Arc<dyn StreamLog>,
) {
    log.create_group(S, "g1", GroupStart::Beginning)
        .await
        .expect("group");
    log.create_group(S, "g1", GroupStart::Beginning)
        .await
        .expect("creating again is a no-op");
    log.create_group(S, "g2", GroupStart::Beginning)
        .await
        .expect("group");
    for n in 0..4 {
        log.append(S, &fields(n), None).await.expect("append");
    }
    let a = log.read_group(S, "g1", "a", 2, NOW).await.expect("read");
    let b = log.read_group(S, "g1", "b", 10, NOW).await.expect("read");
    assert_eq!(ids_of(&a), ["e0", "e1"]);
    assert_eq!(ids_of(&b), ["e2", "e3"]);
    assert!(
        log.read_group(S, "g1", "a", 10, NOW)
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(
        log.read_group(S, "g2", "x", 10, NOW)
            .await
            .expect("read")
            .len(),
        4
    );
}

pub async fn entries_stay_pending_until_acked(log: Arc<dyn StreamLog>) {
    log.create_group(S, "g", GroupStart::Beginning)
        .await
        .expect("group");
    log.append(S, &fields(0), None).await.expect("append");
    log.append(S, &fields(1), None).await.expect("append");
    let got = log.read_group(S, "g", "c", 10, NOW).await.expect("read");
    assert_eq!(log.pending(S, "g").await.expect("pending"), 2);
    assert_eq!(log.ack(S, "g", &[got[0].id.clone()]).await.expect("ack"), 1);
    assert_eq!(
        log.ack(S, "g", &[got[0].id.clone()]).await.expect("ack"),
        0,
        "acking twice counts once"
    );
    assert_eq!(log.pending(S, "g").await.expect("pending"), 1);
}

pub async fn waiting_counts_what_the_group_has_not_yet_acked(log: Arc<dyn StreamLog>) {
    log.create_group(S, "g", GroupStart::Beginning)
        .await
        .expect("group");
    assert_eq!(log.waiting(S, "g").await.expect("waiting"), 0);
    for i in 0..3 {
        log.append(S, &fields(i), None).await.expect("append");
    }
    assert_eq!(
        log.waiting(S, "g").await.expect("waiting"),
        3,
        "undelivered"
    );
    let got = log.read_group(S, "g", "c", 2, NOW).await.expect("read");
    assert_eq!(got.len(), 2);
    assert_eq!(
        log.waiting(S, "g").await.expect("waiting"),
        3,
        "two pending and one undelivered"
    );
    log.ack(S, "g", &[got[0].id.clone(), got[1].id.clone()])
        .await
        .expect("ack");
    assert_eq!(log.waiting(S, "g").await.expect("waiting"), 1);
    assert!(
        matches!(
            log.waiting(S, "nobody").await,
            Err(StreamError::NoGroup { .. })
        ),
        "an unknown group is named"
    );
}

pub async fn entries_of_a_dead_consumer_are_reclaimed(log: Arc<dyn StreamLog>) {
    log.create_group(S, "g", GroupStart::Beginning)
        .await
        .expect("group");
    log.append(S, &fields(0), None).await.expect("append");
    let got = log.read_group(S, "g", "dead", 10, NOW).await.expect("read");
    assert_eq!(got.len(), 1);
    assert!(
        log.claim_idle(S, "g", "alive", Duration::from_secs(3600), 10)
            .await
            .expect("claim")
            .is_empty(),
        "not idle long enough"
    );
    let claimed = log
        .claim_idle(S, "g", "alive", NOW, 10)
        .await
        .expect("claim");
    assert_eq!(ids_of(&claimed), ["e0"]);
    assert_eq!(
        log.ack(S, "g", &[claimed[0].id.clone()])
            .await
            .expect("ack"),
        1
    );
    assert_eq!(log.pending(S, "g").await.expect("pending"), 0);
}

pub async fn a_restarted_consumer_gets_its_own_pending_entries_back(log: Arc<dyn StreamLog>) {
    log.create_group(S, "g", GroupStart::Beginning)
        .await
        .expect("group");
    for n in 0..3 {
        log.append(S, &fields(n), None).await.expect("append");
    }
    let mine = log.read_group(S, "g", "me", 2, NOW).await.expect("read");
    log.read_group(S, "g", "other", 1, NOW).await.expect("read");
    log.ack(S, "g", &[mine[0].id.clone()]).await.expect("ack");
    let back = log
        .own_pending(S, "g", "me", 10)
        .await
        .expect("own pending");
    assert_eq!(
        ids_of(&back),
        ["e1"],
        "only what `me` received and did not ack"
    );
}

pub async fn a_group_started_at_the_end_skips_what_is_there(log: Arc<dyn StreamLog>) {
    log.append(S, &fields(0), None).await.expect("append");
    log.create_group(S, "late", GroupStart::End)
        .await
        .expect("group");
    log.append(S, &fields(1), None).await.expect("append");
    assert_eq!(
        ids_of(&log.read_group(S, "late", "c", 10, NOW).await.expect("read")),
        ["e1"]
    );
    assert!(matches!(
        log.read_group(S, "missing", "c", 1, NOW).await,
        Err(StreamError::NoGroup { .. })
    ));
}

/// Approximate, like `MAXLEN ~`: never fewer than the cap, and the excess bounded (Redis trims
/// whole nodes of 100 entries).
pub async fn the_cap_keeps_about_max_len_newest_entries(log: Arc<dyn StreamLog>) {
    for n in 0..600 {
        log.append(S, &fields(n), Some(50)).await.expect("append");
    }
    let len = log.len(S).await.expect("len");
    assert!((50..=250).contains(&len), "len {len}");
    let all = log.range(S, None, 1000).await.expect("range");
    assert_eq!(
        all.last().map(|e| e.fields["eventId"].as_str()),
        Some("e599")
    );
}

pub async fn a_blocked_read_wakes_for_an_append(log: Arc<dyn StreamLog>) {
    log.create_group(S, "g", GroupStart::Beginning)
        .await
        .expect("group");
    let waiting = {
        let log = log.clone();
        tokio::spawn(async move {
            log.read_group(S, "g", "c", 10, Duration::from_secs(10))
                .await
        })
    };
    log.append(S, &fields(0), None).await.expect("append");
    assert_eq!(waiting.await.expect("task").expect("read").len(), 1);
}

pub async fn a_batch_appends_to_each_stream_in_order(log: Arc<dyn StreamLog>) {
    const OTHER: &str = "notifications-stream";
    let batch: Vec<(String, BTreeMap<String, String>)> = (0..10)
        .map(|n| (if n % 3 == 0 { OTHER } else { S }.to_owned(), fields(n)))
        .collect();
    log.append_all(&batch, Some(1000))
        .await
        .expect("append a batch");
    log.append_all(&[], None).await.expect("an empty batch");
    let main = log.range(S, None, 100).await.expect("range");
    assert_eq!(ids_of(&main), ["e1", "e2", "e4", "e5", "e7", "e8"]);
    let other = log.range(OTHER, None, 100).await.expect("range");
    assert_eq!(ids_of(&other), ["e0", "e3", "e6", "e9"]);
    assert_eq!(main[0].fields, fields(1), "stored as given");
}

/// A read that finds nothing for its whole block answers "nothing", not an error (a client
/// timeout shorter than the block would lose track of what the server hands over late).
pub async fn a_read_blocked_for_its_whole_block_answers_nothing(log: Arc<dyn StreamLog>) {
    log.create_group(S, "g", GroupStart::End)
        .await
        .expect("group");
    let started = std::time::Instant::now();
    let got = log
        .read_group(S, "g", "c1", 10, Duration::from_millis(900))
        .await
        .expect("a quiet stream is not an error");
    assert!(got.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "it did block"
    );
}

#[macro_export]
macro_rules! streams_conformance {
    ($new:expr) => {
        $crate::streams_conformance!(@tests $new;
            ids_increase_and_any_position_can_be_read,
            a_group_hands_each_entry_to_one_consumer_and_each_group_gets_all,
            entries_stay_pending_until_acked,
            waiting_counts_what_the_group_has_not_yet_acked,
            entries_of_a_dead_consumer_are_reclaimed,
            a_restarted_consumer_gets_its_own_pending_entries_back,
            a_group_started_at_the_end_skips_what_is_there,
            the_cap_keeps_about_max_len_newest_entries,
            a_blocked_read_wakes_for_an_append,
            a_batch_appends_to_each_stream_in_order,
            a_read_blocked_for_its_whole_block_answers_nothing,
        );
    };
    (@tests $new:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::streams::conformance::$name($new.await).await;
            }
        )+
    };
}
