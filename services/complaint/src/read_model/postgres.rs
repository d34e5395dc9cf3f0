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

/// The columns of a batch of views, one array each (bound to `UNNEST`).
#[derive(Default)]
struct Rows {
    id: Vec<String>,
    seq: Vec<i64>,
    user_id: Vec<String>,
    status: Vec<String>,
    priority: Vec<String>,
    category: Vec<String>,
    assigned_to: Vec<Option<String>>,
    version: Vec<i64>,
    created_ms: Vec<i64>,
    escalated: Vec<bool>,
    projection: Vec<String>,
}

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
    /// Writes the views and the checkpoint in one transaction of two statements whatever the
    /// number of views.
    async fn write(
        &self,
        projections: &[(String, StoredProjection)],
        checkpoint: u64,
        durable: bool,
    ) -> Result<(), StoreError> {
        let fail = unavailable("writing complaint views");
        // Rows in one order (by id) in every replica's transaction: two replicas projecting
        // the same events lock them in the same order instead of deadlocking.
        let mut sorted: Vec<&(String, StoredProjection)> = projections.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rows = Rows::default();
        for (id, stored) in sorted {
            let Some(c) = stored.projection.state.complaint.as_ref() else {
                continue;
            };
            rows.id.push(id.clone());
            rows.seq.push(i64_of(stored.seq));
            rows.user_id.push(c.user_id.clone());
            rows.status.push(c.status.as_str().to_owned());
            rows.priority.push(c.priority.as_str().to_owned());
            rows.category.push(c.category.clone());
            rows.assigned_to.push(c.assigned_to.clone());
            rows.version.push(i64_of(stored.projection.state.version));
            rows.created_ms.push(c.created_at.timestamp_millis());
            rows.escalated.push(c.escalated_at.is_some());
            rows.projection.push(
                serde_json::to_string(&stored.projection)
                    .map_err(|e| StoreError::Corrupt(format!("serialising a view: {e}")))?,
            );
        }
        let mut tx = self.pool.begin().await.map_err(&fail)?;
        if !durable {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await
                .map_err(&fail)?;
        }
        if !rows.id.is_empty() {
            sqlx::query(
                "INSERT INTO complaint_views (id, seq, user_id, status, priority, category, assigned_to, version, created_ms, escalated, projection) \
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::boolean[], $11::text[]) \
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, priority = excluded.priority, category = excluded.category, \
                 assigned_to = excluded.assigned_to, version = excluded.version, escalated = excluded.escalated, projection = excluded.projection",
            )
            .bind(&rows.id)
            .bind(&rows.seq)
            .bind(&rows.user_id)
            .bind(&rows.status)
            .bind(&rows.priority)
            .bind(&rows.category)
            .bind(&rows.assigned_to)
            .bind(&rows.version)
            .bind(&rows.created_ms)
            .bind(&rows.escalated)
            .bind(&rows.projection)
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
                // Planned with its values each time: a plan kept from an empty table scans it.
                .persistent(false)
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
        self.write(projections, checkpoint, true).await
    }

    /// Committed without waiting for the disk (`synchronous_commit = off` for this transaction
    /// alone): these rows derive from the event log, the checkpoint moves with them, and the
    /// service projects again whatever a crash lost before it serves. A later durable commit
    /// (a command, another service's fact) makes them durable with it.
    async fn save_projected(
        &self,
        projections: &[(String, StoredProjection)],
        checkpoint: u64,
    ) -> Result<(), StoreError> {
        self.write(projections, checkpoint, false).await
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
