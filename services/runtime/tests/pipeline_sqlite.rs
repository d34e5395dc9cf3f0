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
