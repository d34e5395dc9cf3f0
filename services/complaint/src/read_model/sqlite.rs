//! The embedded read model: one SQLite file, one row a complaint with its filter columns
//! indexed, so that a filtered page costs the same with a million complaints as with ten.

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use sagaflow_domain::{ComplaintProjection, ComplaintView};
use sagaflow_runtime::event_log::StoreError;
use sagaflow_runtime::sqlite::Db;
use sagaflow_runtime::sqlite::writer::{WriteError, rusqlite};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{ComplaintViews, Cursor, ListFilter, Page, StoredProjection};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS complaint_views (
    id          TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL UNIQUE,
    user_id     TEXT NOT NULL,
    status      TEXT NOT NULL,
    priority    TEXT NOT NULL,
    category    TEXT NOT NULL,
    assigned_to TEXT,
    version     INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    escalated   INTEGER NOT NULL,
    projection  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS views_escalation ON complaint_views (status, escalated, priority, created_ms);
CREATE INDEX IF NOT EXISTS views_status ON complaint_views (status, seq);
CREATE INDEX IF NOT EXISTS views_priority ON complaint_views (priority, seq);
CREATE INDEX IF NOT EXISTS views_category ON complaint_views (category, seq);
CREATE INDEX IF NOT EXISTS views_assigned_to ON complaint_views (assigned_to, seq);
CREATE INDEX IF NOT EXISTS views_user_id ON complaint_views (user_id, seq);
CREATE TABLE IF NOT EXISTS projection_checkpoint (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
"#;

const CHECKPOINT: &str = "complaint_views";

/// Bumped whenever the read model's tables change: an older read model is dropped and rebuilt
/// from the events.
const LAYOUT: i64 = 2;
const DROP: &str =
    "DROP TABLE IF EXISTS complaint_views; DROP TABLE IF EXISTS projection_checkpoint;";

#[derive(Debug, Clone)]
pub struct SqliteViews {
    db: Db,
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

impl SqliteViews {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Db::open(path, &[sagaflow_runtime::inbox::SCHEMA])
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", path.display())))?;
        let layout: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&db.writer)
            .await
            .map_err(unavailable("reading the read model's layout"))?;
        if layout != LAYOUT {
            tracing::info!(
                from = layout,
                to = LAYOUT,
                "read model layout changed; rebuilding it from the events"
            );
            sqlx::raw_sql(DROP)
                .execute(&db.writer)
                .await
                .map_err(unavailable("dropping an old read model"))?;
        }
        sqlx::raw_sql(SCHEMA)
            .execute(&db.writer)
            .await
            .map_err(unavailable("creating the read model"))?;
        sqlx::raw_sql("PRAGMA user_version = 2")
            .execute(&db.writer)
            .await
            .map_err(unavailable("recording the layout"))?;
        Ok(Self { db })
    }

    async fn due_for_escalation_impl(
        &self,
        priority: sagaflow_domain::Priority,
        created_before_ms: i64,
        limit: u32,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, created_ms FROM complaint_views WHERE status = 'OPEN' AND escalated = 0 AND priority = ? \
             AND created_ms <= ? ORDER BY created_ms LIMIT ?",
        )
        .bind(priority.as_str())
        .bind(created_before_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.db.reader)
        .await
        .map_err(unavailable("finding complaints past their deadline"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn close(&self) {
        self.db.close().await;
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}

#[async_trait]
impl ComplaintViews for SqliteViews {
    async fn checkpoint(&self) -> Result<u64, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM projection_checkpoint WHERE name = ?")
                .bind(CHECKPOINT)
                .fetch_optional(&self.db.reader)
                .await
                .map_err(unavailable("reading the projection checkpoint"))?;
        Ok(position.map_or(0, u64_of))
    }

    async fn load(&self, ids: &[String]) -> Result<HashMap<String, StoredProjection>, StoreError> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(200) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("SELECT id, seq, projection FROM complaint_views WHERE id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id);
            }
            q.push(")");
            let rows = q
                .build()
                .fetch_all(&self.db.reader)
                .await
                .map_err(unavailable("loading complaint views"))?;
            for row in rows {
                let id: String = row.get(0);
                let projection = parse(row.get(2))?;
                out.insert(
                    id,
                    StoredProjection {
                        seq: u64_of(row.get(1)),
                        projection,
                    },
                );
            }
        }
        Ok(out)
    }

    async fn save(
        &self,
        projections: &[(String, StoredProjection)],
        checkpoint: u64,
    ) -> Result<(), StoreError> {
        let mut rows = Vec::with_capacity(projections.len());
        for (id, stored) in projections {
            let Some(c) = stored.projection.state.complaint.as_ref() else {
                continue;
            };
            let json = serde_json::to_string(&stored.projection)
                .map_err(|e| StoreError::Corrupt(format!("serialising a view: {e}")))?;
            rows.push((
                id.clone(),
                i64_of(stored.seq),
                c.user_id.clone(),
                c.status.as_str(),
                c.priority.as_str(),
                c.category.clone(),
                c.assigned_to.clone(),
                i64_of(stored.projection.state.version),
                c.created_at.timestamp_millis(),
                i64::from(c.escalated_at.is_some()),
                json,
            ));
        }
        let checkpoint = i64_of(checkpoint);
        self.db
            .jobs
            .run(move |conn| {
                let mut upsert = conn.prepare_cached(
                    "INSERT INTO complaint_views (id, seq, user_id, status, priority, category, assigned_to, version, created_ms, escalated, projection) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, priority = excluded.priority, \
                     category = excluded.category, assigned_to = excluded.assigned_to, version = excluded.version, \
                     escalated = excluded.escalated, projection = excluded.projection",
                )?;
                for r in &rows {
                    upsert.execute(rusqlite::params![
                        r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10
                    ])?;
                }
                conn.prepare_cached(
                    "INSERT INTO projection_checkpoint (name, position) VALUES (?1, ?2) \
                     ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                )?
                .execute(rusqlite::params![CHECKPOINT, checkpoint])?;
                Ok::<_, WriteError>(())
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("writing complaint views: {e}")))
    }

    async fn get(&self, id: &str) -> Result<Option<ComplaintView>, StoreError> {
        let row: Option<String> =
            sqlx::query_scalar("SELECT projection FROM complaint_views WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.db.reader)
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
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT seq, projection FROM complaint_views WHERE 1 = 1");
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
            .fetch_all(&self.db.reader)
            .await
            .map_err(unavailable("listing complaint views"))?;
        let more = rows.len() > limit as usize;
        let mut items = Vec::with_capacity(rows.len().min(limit as usize));
        let mut last_seq = 0;
        for row in rows.iter().take(limit as usize) {
            last_seq = u64_of(row.get(0));
            items.push(view_of(row.get(1))?);
        }
        Ok(Page {
            items,
            next: more.then_some(Cursor {
                before_seq: last_seq,
            }),
        })
    }

    async fn due_for_escalation(
        &self,
        priority: sagaflow_domain::Priority,
        created_before_ms: i64,
        limit: u32,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.due_for_escalation_impl(priority, created_before_ms, limit)
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.db.reader)
            .await
            .map_err(unavailable("pinging the read model"))?;
        Ok(())
    }
}
