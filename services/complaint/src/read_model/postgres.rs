//! The read model on PostgreSQL, in the complaint service's schema: one row a complaint, the
//! filter columns indexed, the projection as JSON.

use std::collections::HashMap;

use async_trait::async_trait;
use sagaflow_domain::{ComplaintProjection, ComplaintView, Priority};
use sagaflow_runtime::event_log::StoreError;
use sagaflow_runtime::postgres::Migration;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, QueryBuilder, Row};

use super::{ComplaintViews, Cursor, ListFilter, Page, StoredProjection};

pub const MIGRATIONS: &[Migration] = &[(
    101,
    r#"
CREATE TABLE complaint_views (
    id          TEXT PRIMARY KEY,
    seq         BIGINT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL,
    status      TEXT NOT NULL,
    priority    TEXT NOT NULL,
    category    TEXT NOT NULL,
    assigned_to TEXT,
    version     BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL,
    escalated   BOOLEAN NOT NULL,
    projection  TEXT NOT NULL
);
CREATE INDEX views_status ON complaint_views (status, seq);
CREATE INDEX views_priority ON complaint_views (priority, seq);
CREATE INDEX views_category ON complaint_views (category, seq);
CREATE INDEX views_assigned_to ON complaint_views (assigned_to, seq);
CREATE INDEX views_user_id ON complaint_views (user_id, seq);
CREATE INDEX views_escalation ON complaint_views (status, escalated, priority, created_ms);
CREATE TABLE projection_checkpoint (
    name     TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
"#,
)];

const CHECKPOINT: &str = "complaint_views";

#[derive(Debug, Clone)]
pub struct PgViews {
    pool: PgPool,
}

fn unavailable(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::Unavailable(format!("{context}: {e}"))
}

fn parse(text: &str) -> Result<ComplaintProjection, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("a stored complaint view: {e}")))
}

fn view_of(text: &str) -> Result<ComplaintView, StoreError> {
    parse(text)?
        .view()
        .ok_or_else(|| StoreError::Corrupt("a stored view of a complaint never created".into()))
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl PgViews {
    /// Uses `pool` (whose schema holds these tables: see [`MIGRATIONS`]).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl ComplaintViews for PgViews {
    async fn checkpoint(&self) -> Result<u64, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM projection_checkpoint WHERE name = $1")
                .bind(CHECKPOINT)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable("reading the projection checkpoint"))?;
        Ok(position.map_or(0, u64_of))
    }

    async fn load(&self, ids: &[String]) -> Result<HashMap<String, StoredProjection>, StoreError> {
        let rows =
            sqlx::query("SELECT id, seq, projection FROM complaint_views WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable("loading complaint views"))?;
        let mut out = HashMap::new();
        for row in rows {
            let projection = parse(row.get(2))?;
            out.insert(
                row.get(0),
                StoredProjection {
                    seq: u64_of(row.get(1)),
                    projection,
                },
            );
        }
        Ok(out)
    }

    async fn save(
        &self,
        projections: &[(String, StoredProjection)],
        checkpoint: u64,
    ) -> Result<(), StoreError> {
        let fail = unavailable("writing complaint views");
        // Rows in one order (by id, then the checkpoint) in every replica's transaction: two
        // replicas projecting the same events lock them in the same order instead of
        // deadlocking.
        let mut sorted: Vec<&(String, StoredProjection)> = projections.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut tx = self.pool.begin().await.map_err(&fail)?;
        for (id, stored) in sorted {
            let Some(c) = stored.projection.state.complaint.as_ref() else {
                continue;
            };
            let json = serde_json::to_string(&stored.projection)
                .map_err(|e| StoreError::Corrupt(format!("serialising a view: {e}")))?;
            sqlx::query(
                "INSERT INTO complaint_views (id, seq, user_id, status, priority, category, assigned_to, version, created_ms, escalated, projection) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, priority = excluded.priority, category = excluded.category, \
                 assigned_to = excluded.assigned_to, version = excluded.version, escalated = excluded.escalated, projection = excluded.projection",
            )
            .bind(id)
            .bind(i64_of(stored.seq))
            .bind(&c.user_id)
            .bind(c.status.as_str())
            .bind(c.priority.as_str())
            .bind(&c.category)
            .bind(&c.assigned_to)
            .bind(i64_of(stored.projection.state.version))
            .bind(c.created_at.timestamp_millis())
            .bind(c.escalated_at.is_some())
            .bind(json)
            .execute(&mut *tx)
            .await
            .map_err(&fail)?;
        }
        sqlx::query(
            "INSERT INTO projection_checkpoint (name, position) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        )
        .bind(CHECKPOINT)
        .bind(i64_of(checkpoint))
        .execute(&mut *tx)
        .await
        .map_err(&fail)?;
        tx.commit().await.map_err(&fail)
    }

    async fn get(&self, id: &str) -> Result<Option<ComplaintView>, StoreError> {
        let row: Option<String> =
            sqlx::query_scalar("SELECT projection FROM complaint_views WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable("reading a complaint view"))?;
        row.as_deref().map(view_of).transpose()
    }

    async fn list(
        &self,
        filter: &ListFilter,
        limit: u32,
        cursor: Option<Cursor>,
    ) -> Result<Page, StoreError> {
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT seq, projection FROM complaint_views WHERE TRUE");
        if let Some(s) = filter.status {
            q.push(" AND status = ").push_bind(s.as_str());
        }
        if let Some(p) = filter.priority {
            q.push(" AND priority = ").push_bind(p.as_str());
        }
        if let Some(c) = &filter.category {
            q.push(" AND category = ").push_bind(c.clone());
        }
        if let Some(a) = &filter.assigned_to {
            q.push(" AND assigned_to = ").push_bind(a.clone());
        }
        if let Some(u) = &filter.user_id {
            q.push(" AND user_id = ").push_bind(u.clone());
        }
        if let Some(c) = cursor {
            q.push(" AND seq < ").push_bind(i64_of(c.before_seq));
        }
        q.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows = q
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable("listing complaint views"))?;
        let more = rows.len() > limit as usize;
        let mut items = Vec::new();
        let mut last = 0;
        for row in rows.iter().take(limit as usize) {
            last = u64_of(row.get(0));
            items.push(view_of(row.get(1))?);
        }
        Ok(Page {
            items,
            next: more.then_some(Cursor { before_seq: last }),
        })
    }

    async fn due_for_escalation(
        &self,
        priority: Priority,
        created_before_ms: i64,
        limit: u32,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, created_ms FROM complaint_views WHERE status = 'OPEN' AND NOT escalated AND priority = $1 \
             AND created_ms <= $2 ORDER BY created_ms LIMIT $3",
        )
        .bind(priority.as_str())
        .bind(created_before_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable("finding complaints past their deadline"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable("pinging PostgreSQL"))?;
        Ok(())
    }
}
