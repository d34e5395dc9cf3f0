//! The read model's conformance suite on both adapters: the embedded one, and PostgreSQL
//! (`scripts/backends postgres` starts it; `TEST_DATABASE_URL` overrides the default).

use std::sync::Arc;

use sagaflow_complaint::read_model::ComplaintViews;

mod sqlite {
    use super::*;
    use sagaflow_complaint::read_model::sqlite::SqliteViews;

    async fn fresh() -> Arc<dyn ComplaintViews> {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        Arc::new(
            SqliteViews::open(&dir.join("views.db"))
                .await
                .expect("open"),
        )
    }

    sagaflow_complaint::views_conformance!(fresh());
}

mod postgres {
    use super::*;
    use sagaflow_complaint::read_model::postgres::{MIGRATIONS, PgViews};

    async fn fresh() -> Arc<dyn ComplaintViews> {
        let url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let pool = sagaflow_runtime::postgres::open(&url, &schema, MIGRATIONS, 4)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not answering at {url}: {e}. Start it with scripts/backends postgres"));
        Arc::new(PgViews::new(pool))
    }

    sagaflow_complaint::views_conformance!(fresh());
}
