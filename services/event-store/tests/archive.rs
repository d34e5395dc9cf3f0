//! The archive's conformance suite on both adapters: the embedded one, and MongoDB (the wire
//! server of the test setup: `scripts/backends mongodb` starts it; `TEST_MONGODB_URL` overrides
//! `mongodb://127.0.0.1:27017/?directConnection=true`).

use std::sync::Arc;

use sagaflow_event_store::archive::Archive;

mod sqlite {
    use super::*;
    use sagaflow_event_store::archive::SqliteArchive;

    async fn fresh() -> Arc<dyn Archive> {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        Arc::new(
            SqliteArchive::open(&dir.join("archive.db"))
                .await
                .expect("open"),
        )
    }

    sagaflow_event_store::archive_conformance!(fresh());
}

mod mongo {
    use super::*;
    use sagaflow_event_store::archive::mongo::MongoArchive;

    fn url() -> String {
        std::env::var("TEST_MONGODB_URL").unwrap_or_else(|_| {
            "mongodb://127.0.0.1:27017/?directConnection=true&serverSelectionTimeoutMS=3000".into()
        })
    }

    async fn fresh() -> Arc<dyn Archive> {
        let db = format!("t_{}", uuid::Uuid::new_v4().simple());
        Arc::new(MongoArchive::open(&url(), &db).await.unwrap_or_else(|e| {
            panic!(
                "MongoDB is not answering at {}: {e}. Start it with scripts/backends mongodb",
                url()
            )
        }))
    }

    sagaflow_event_store::archive_conformance!(fresh());
}
