//! The audit log's conformance suite on the embedded adapter and on PostgreSQL
//! (`scripts/backends postgres`; `TEST_DATABASE_URL` overrides the default).

use std::sync::Arc;

use sagaflow_audit::store::AuditLog;

mod sqlite {
    use super::*;

    async fn fresh() -> Arc<dyn AuditLog> {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        Arc::new(
            sagaflow_audit::store::SqliteAudit::open(&dir.join("audit.db"))
                .await
                .expect("open"),
        )
    }

    sagaflow_audit::audit_conformance!(fresh());
}

mod postgres {
    use super::*;

    async fn fresh() -> Arc<dyn AuditLog> {
        let url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        Arc::new(
            sagaflow_audit::store::postgres::PgAudit::open(&url, &schema)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL is not answering at {url}: {e}. Start it with scripts/backends postgres")),
        )
    }

    sagaflow_audit::audit_conformance!(fresh());
}
