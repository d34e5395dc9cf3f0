//! The embedded message bus and stream log pass their ports' conformance suites.

use std::sync::Arc;

async fn dir() -> std::path::PathBuf {
    tempfile::tempdir().expect("temp dir").keep()
}

mod bus {
    use super::*;
    use sagaflow_runtime::bus::MessageBus;
    use sagaflow_runtime::bus::sqlite::SqliteBus;

    async fn fresh() -> Arc<dyn MessageBus> {
        Arc::new(
            SqliteBus::open(&dir().await.join("bus.db"))
                .await
                .expect("open"),
        )
    }

    sagaflow_runtime::bus_conformance!(fresh());

    #[tokio::test]
    async fn messages_survive_a_reopen_and_unsettled_ones_come_back() {
        use sagaflow_runtime::bus::QueueSpec;
        use sagaflow_runtime::bus::conformance::message;
        use std::time::Duration;
        let path = dir().await.join("bus.db");
        let bus = SqliteBus::open(&path).await.expect("open");
        bus.declare(&[QueueSpec::new("complaints.events", "svc", &["#"])])
            .await
            .expect("declare");
        bus.publish(&message("m1", "complaint.created", None))
            .await
            .expect("publish");
        bus.publish(&message("m2", "complaint.created", None))
            .await
            .expect("publish");
        let taken = bus
            .receive("complaints.events.svc", 1, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(taken.len(), 1, "one in flight when the process dies");
        bus.close().await;
        let bus = SqliteBus::open(&path).await.expect("reopen");
        let all = bus
            .receive("complaints.events.svc", 10, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(
            all.iter()
                .map(|d| d.message.message_id.as_str())
                .collect::<Vec<_>>(),
            ["m1", "m2"]
        );
    }

    /// A backlog longer than the window waits in the file: every message still comes once, in
    /// order per key, while more are published, after a reopen, and the depth counts them all.
    #[tokio::test]
    async fn a_backlog_past_the_window_comes_from_the_file_in_order_and_once() {
        use sagaflow_runtime::bus::QueueSpec;
        use sagaflow_runtime::bus::conformance::message;
        use std::collections::HashMap;
        use std::time::Duration;
        const Q: &str = "complaints.events.svc";
        let path = dir().await.join("bus.db");
        let bus = SqliteBus::open_with_window(&path, 8).await.expect("open");
        bus.declare(&[QueueSpec::new("complaints.events", "svc", &["#"])])
            .await
            .expect("declare");
        let publish = |bus: SqliteBus, from: usize, to: usize| async move {
            let batch: Vec<_> = (from..to)
                .map(|i| {
                    message(
                        &format!("m{i}"),
                        "complaint.created",
                        Some(&format!("k{}", i % 5)),
                    )
                })
                .collect();
            bus.publish_all(&batch).await.expect("publish");
        };
        publish(bus.clone(), 0, 40).await;
        assert_eq!(bus.depth(Q).await.expect("depth"), 40);
        let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
        let mut got = 0;
        let mut retried = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while got < 70 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {got} of 70 messages came"
            );
            let batch = bus
                .receive(Q, 3, Duration::from_millis(200))
                .await
                .expect("receive");
            for d in &batch {
                let i: usize = d.message.message_id[1..].parse().expect("id");
                if i == 13 && !retried {
                    // A retry inside the window holds its key back, not the others.
                    retried = true;
                    bus.retry(d, Duration::from_millis(50), "later")
                        .await
                        .expect("retry");
                    continue;
                }
                seen.entry(d.message.ordering_key.clone().unwrap_or_default())
                    .or_default()
                    .push(i);
                got += 1;
                bus.ack(d).await.expect("ack");
            }
            if got >= 20 {
                publish(bus.clone(), 40, 70).await;
                bus.close().await;
                let again = SqliteBus::open_with_window(&path, 8).await.expect("reopen");
                assert_eq!(again.depth(Q).await.expect("depth"), 70 - got as u64);
                // The new bus reads what the old one left: acks before the close were committed.
                return finish(again, seen, got).await;
            }
        }
        panic!("the reopen never happened");

        async fn finish(bus: SqliteBus, mut seen: HashMap<String, Vec<usize>>, mut got: usize) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while got < 70 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "only {got} of 70 messages came after the reopen"
                );
                for d in bus
                    .receive(Q, 3, Duration::from_millis(200))
                    .await
                    .expect("receive")
                {
                    let i: usize = d.message.message_id[1..].parse().expect("id");
                    seen.entry(d.message.ordering_key.clone().unwrap_or_default())
                        .or_default()
                        .push(i);
                    got += 1;
                    bus.ack(&d).await.expect("ack");
                }
            }
            assert!(
                bus.receive(Q, 10, Duration::from_millis(200))
                    .await
                    .expect("receive")
                    .is_empty()
            );
            assert_eq!(bus.depth(Q).await.expect("depth"), 0);
            for (key, ids) in &seen {
                let mut sorted = ids.clone();
                sorted.sort_unstable();
                assert_eq!(ids, &sorted, "key {key} came out of order");
                sorted.dedup();
                assert_eq!(sorted.len(), ids.len(), "key {key} came twice");
            }
            assert_eq!(seen.values().map(Vec::len).sum::<usize>(), 70);
        }
    }
}

mod streams {
    use super::*;
    use sagaflow_runtime::streams::StreamLog;
    use sagaflow_runtime::streams::sqlite::SqliteStreams;

    async fn fresh() -> Arc<dyn StreamLog> {
        Arc::new(
            SqliteStreams::open(&dir().await.join("streams.db"))
                .await
                .expect("open"),
        )
    }

    sagaflow_runtime::streams_conformance!(fresh());
}
