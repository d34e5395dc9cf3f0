//! The notification store's conformance suite on the embedded adapter and on PostgreSQL
//! (`scripts/backends postgres`; `TEST_DATABASE_URL` overrides the default).

use std::sync::Arc;

use sagaflow_notification::store::NotificationStore;

mod sqlite {
    use super::*;

    async fn fresh() -> Arc<dyn NotificationStore> {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        Arc::new(
            sagaflow_notification::store::SqliteNotifications::open(&dir.join("n.db"))
                .await
                .expect("open"),
        )
    }

    sagaflow_notification::notification_conformance!(fresh());
}

mod postgres {
    use super::*;

    async fn fresh() -> Arc<dyn NotificationStore> {
        let url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        Arc::new(
            sagaflow_notification::store::postgres::PgNotifications::open(&url, &schema)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL is not answering at {url}: {e}. Start it with scripts/backends postgres")),
        )
    }

    sagaflow_notification::notification_conformance!(fresh());
}
