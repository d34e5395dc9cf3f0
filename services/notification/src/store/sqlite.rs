//! The embedded notification store: one SQLite file.

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension as _;
use sagaflow_domain::events::{NotificationCompensation, NotificationFailed, Payload};
use sagaflow_domain::saga::{self, ComplaintFacts, notification_stream, templates};
use sagaflow_domain::{Context, Envelope};
use sagaflow_runtime::bus::topology::NOTIFICATION_SERVICE;
use sagaflow_runtime::event_log::StoreError;
use sagaflow_runtime::inbox::{self, Claim};
use sagaflow_runtime::outbox::SqliteOutbox;
use sagaflow_runtime::sqlite::Db;
use sagaflow_runtime::sqlite::writer::{WriteError, rusqlite};
use serde_json::{Value, json};
use sqlx::Row;

use super::{Addressing, Due, NotificationStore, Planned};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS notifications (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id   TEXT NOT NULL UNIQUE,
    complaint_id      TEXT NOT NULL,
    trigger_event_id  TEXT NOT NULL,
    recipient         TEXT NOT NULL,
    channel           TEXT NOT NULL,
    template          TEXT NOT NULL,
    subject           TEXT NOT NULL,
    body              TEXT NOT NULL,
    correlation_id    TEXT NOT NULL,
    traceparent       TEXT,
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    next_attempt_at   INTEGER NOT NULL,
    sent_at           INTEGER
);
-- The mails to send, in the order they were planned: a claim reads the first few of them,
-- whatever the backlog (an index on (status, next_attempt_at) made it sort the whole backlog).
DROP INDEX IF EXISTS notifications_due;
CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (seq)
    WHERE status IN ('PENDING', 'SENDING');
CREATE INDEX IF NOT EXISTS notifications_complaint ON notifications (complaint_id, seq);
CREATE INDEX IF NOT EXISTS notifications_trigger ON notifications (trigger_event_id);
CREATE TABLE IF NOT EXISTS complaints (
    complaint_id TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    title        TEXT NOT NULL
);
"#;

#[derive(Debug, Clone)]
pub struct SqliteNotifications {
    db: Db,
}

fn unavailable(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::Unavailable(format!("{context}: {e}"))
}

/// A failure of the writer or of one of its statements, as the store's error.
fn failed(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Unavailable(format!("{context}: {e}"))
}

fn written(context: &'static str) -> impl Fn(WriteError) -> StoreError {
    move |e| StoreError::Unavailable(format!("{context}: {e}"))
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Records a notification event in its complaint's notification stream.
fn emit(
    conn: &rusqlite::Connection,
    complaint_id: &str,
    payload: &Payload,
    correlation_id: &str,
    cause: &str,
    traceparent: Option<&str>,
) -> Result<Envelope, rusqlite::Error> {
    let ctx = Context {
        correlation_id: correlation_id.to_owned(),
        causation_id: Some(cause.to_owned()),
        user_id: None,
        at: Utc::now(),
        traceparent: traceparent.map(str::to_owned),
    };
    sagaflow_runtime::outbox::record(conn, &notification_stream(complaint_id), payload, &ctx)
}

fn queue_mail(
    conn: &rusqlite::Connection,
    complaint_id: &str,
    trigger: &Envelope,
    recipient: &str,
    template: &str,
    subject: &str,
    body: &str,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO notifications (notification_id, complaint_id, trigger_event_id, recipient, channel, template, subject, body, \
         correlation_id, traceparent, status, next_attempt_at) VALUES (?1, ?2, ?3, ?4, 'email', ?5, ?6, ?7, ?8, ?9, 'PENDING', ?10)",
    )?
    .execute(rusqlite::params![
        uuid::Uuid::now_v7().to_string(),
        complaint_id,
        trigger.event_id,
        recipient,
        template,
        subject,
        body,
        trigger.metadata.correlation_id,
        trigger.metadata.traceparent,
        now_ms(),
    ])?;
    Ok(())
}

/// A claimed mail, with its place in the planning order.
fn due_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Due)> {
    Ok((
        row.get("seq")?,
        Due {
            notification_id: row.get("notification_id")?,
            complaint_id: row.get("complaint_id")?,
            trigger_event_id: row.get("trigger_event_id")?,
            recipient: row.get("recipient")?,
            template: row.get("template")?,
            subject: row.get("subject")?,
            body: row.get("body")?,
            correlation_id: row.get("correlation_id")?,
            traceparent: row.get("traceparent")?,
            attempts: u32::try_from(row.get::<_, i64>("attempts")?).unwrap_or(u32::MAX),
        },
    ))
}

impl SqliteNotifications {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Db::open(
            path,
            &[
                SCHEMA,
                sagaflow_runtime::inbox::SCHEMA,
                sagaflow_runtime::outbox::SCHEMA,
            ],
        )
        .await
        .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", path.display())))?;
        // Files of a version before traces.
        db.add_column("notifications", "traceparent", "TEXT")
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating {}: {e}", path.display())))?;
        // One process owns this file (the data directory is locked): mails its previous run
        // was sending are due again now, not when their claim lapses.
        sqlx::query("UPDATE notifications SET status = 'PENDING', next_attempt_at = ? WHERE status = 'SENDING'")
            .bind(now_ms())
            .execute(&db.writer)
            .await
            .map_err(unavailable("releasing the mails of a previous run"))?;
        Ok(Self { db })
    }

    pub fn outbox(&self) -> SqliteOutbox {
        SqliteOutbox::new(self.db.clone())
    }

    pub async fn close(&self) {
        self.db.close().await;
    }

    async fn settle(
        &self,
        mail: &Due,
        status: &'static str,
        error: Option<&str>,
        payload: &Payload,
    ) -> Result<(), StoreError> {
        let (mail, error, payload) = (mail.clone(), error.map(str::to_owned), payload.clone());
        self.db
            .jobs
            .run(move |conn| {
                settle_in(conn, &mail, status, error.as_deref(), &payload)
                    .map_err(failed("recording a mail"))
            })
            .await
    }
}

/// Whether a plan's writes stay: not for an unknown complaint (its event is refused, so its
/// inbox record must go too, or a redrive would find it "done").
fn kept(planned: &Planned) -> bool {
    !matches!(planned, Planned::UnknownComplaint(_))
}

/// Plans the mails (and compensation events) of one event inside the writer's transaction.
fn plan_in(
    conn: &rusqlite::Connection,
    event: &Envelope,
    addressing: &Addressing,
) -> Result<Planned, StoreError> {
    let fail = failed("planning mails");
    let payload = event
        .payload()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    match inbox::claim(conn, event).map_err(&fail)? {
        Claim::Duplicate => return Ok(Planned::Duplicate),
        Claim::TooEarly { expected } => return Ok(Planned::TooEarly { expected }),
        Claim::New => {}
    }
    let complaint_id = event.aggregate_id.clone();
    if let Payload::ComplaintCreated(c) = &payload {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO complaints (complaint_id, user_id, title) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut q| q.execute([&c.complaint_id, &c.user_id, &c.title]))
        .map_err(&fail)?;
    }
    let facts = conn
        .prepare_cached("SELECT user_id, title FROM complaints WHERE complaint_id = ?1")
        .and_then(|mut q| {
            q.query_row([&complaint_id], |r| {
                Ok(ComplaintFacts {
                    user_id: r.get(0)?,
                    title: r.get(1)?,
                })
            })
            .optional()
        })
        .map_err(&fail)?;
    let Some(facts) = facts else {
        return Ok(Planned::UnknownComplaint(complaint_id));
    };
    let planned = saga::mails_for(&payload, &facts);
    for m in &planned {
        queue_mail(
            conn,
            &complaint_id,
            event,
            &addressing.resolve(&m.to),
            m.template,
            &m.subject,
            &m.body,
        )
        .map_err(&fail)?;
    }
    let mut events = 0;
    if let Payload::ComplaintCompensationRequired(required) = &payload {
        let ids = saga::compensated_event_ids(required, NOTIFICATION_SERVICE);
        let mut cancelled = Vec::new();
        let mut told = Vec::new();
        for id in &ids {
            let mut q = conn
                .prepare_cached("SELECT notification_id, recipient, status FROM notifications WHERE trigger_event_id = ?1")
                .map_err(&fail)?;
            let rows = q
                .query_map([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(&fail)?;
            for (notification_id, recipient, status) in rows {
                if status == "PENDING" {
                    cancelled.push(notification_id);
                } else if (status == "SENT" || status == "SENDING") && !told.contains(&recipient) {
                    told.push(recipient);
                }
            }
        }
        for n in &cancelled {
            conn.prepare_cached(
                "UPDATE notifications SET status = 'CANCELLED' WHERE notification_id = ?1",
            )
            .and_then(|mut q| q.execute([n]))
            .map_err(&fail)?;
        }
        let (subject, body) = saga::correction(&facts, required);
        for to in &told {
            queue_mail(
                conn,
                &complaint_id,
                event,
                to,
                templates::CORRECTION,
                &subject,
                &body,
            )
            .map_err(&fail)?;
        }
        let data = Payload::NotificationCompensation(NotificationCompensation {
            complaint_id: complaint_id.clone(),
            failed_event_id: required.failed_event_id.clone(),
            cancelled_notification_ids: cancelled,
            correction_sent_to: Some(told),
        });
        emit(
            conn,
            &complaint_id,
            &data,
            &event.metadata.correlation_id,
            &event.event_id,
            event.metadata.traceparent.as_deref(),
        )
        .map_err(&fail)?;
        events += 1;
    }
    Ok(Planned::New {
        mails: planned.len(),
        events,
    })
}

fn settle_in(
    conn: &rusqlite::Connection,
    mail: &Due,
    status: &str,
    error: Option<&str>,
    payload: &Payload,
) -> Result<(), rusqlite::Error> {
    // Only the sender that holds the mail's claim records it (another may have taken
    // it over after the claim lapsed and recorded it already): one event per outcome.
    let settled = conn
        .prepare_cached("UPDATE notifications SET status = ?1, attempts = attempts + 1, last_error = ?2, sent_at = ?3 WHERE notification_id = ?4 AND status IN ('SENDING', 'PENDING')")?
        .execute(rusqlite::params![
            status,
            error,
            (status == "SENT").then(now_ms),
            mail.notification_id,
        ])?;
    if settled == 0 {
        return Ok(());
    }
    emit(
        conn,
        &mail.complaint_id,
        payload,
        &mail.correlation_id,
        &mail.trigger_event_id,
        mail.traceparent.as_deref(),
    )?;
    Ok(())
}

#[async_trait]
impl NotificationStore for SqliteNotifications {
    async fn plan(&self, event: &Envelope, addressing: &Addressing) -> Result<Planned, StoreError> {
        self.plan_all(std::slice::from_ref(event), addressing)
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("no answer to a plan".into())))
    }

    /// One job of the writer's next transaction for the batch, each event in its own
    /// savepoint (an event refused leaves the others in).
    async fn plan_all(
        &self,
        events: &[Envelope],
        addressing: &Addressing,
    ) -> Vec<Result<Planned, StoreError>> {
        let addressing = addressing.clone();
        self.db
            .jobs
            .run_each(
                "planning mails",
                events.to_vec(),
                move |conn, event| plan_in(conn, event, &addressing),
                |r: &Result<Planned, StoreError>| r.as_ref().is_ok_and(kept),
            )
            .await
    }

    async fn due(&self, limit: usize) -> Result<Vec<Due>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut due = self
            .db
            .jobs
            .run(move |conn| {
                conn.prepare_cached("UPDATE notifications SET status = 'SENDING', next_attempt_at = ?1 + 60000 WHERE seq IN ( \
                     SELECT seq FROM notifications INDEXED BY notifications_pending WHERE status IN ('PENDING', 'SENDING') AND next_attempt_at <= ?1 ORDER BY seq LIMIT ?2) RETURNING *")?
                    .query_map([now_ms(), limit], due_of)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(WriteError::from)
            })
            .await
            .map_err(written("reading due mails"))?;
        due.sort_by_key(|(seq, _)| *seq);
        Ok(due.into_iter().map(|(_, d)| d).collect())
    }

    async fn sent(&self, mail: &Due) -> Result<(), StoreError> {
        self.settle(mail, "SENT", None, &super::sent_payload(mail))
            .await
    }

    /// One job for the lot.
    async fn sent_all(&self, mails: &[Due]) -> Result<(), StoreError> {
        let mails = mails.to_vec();
        self.db
            .jobs
            .run(move |conn| {
                for mail in &mails {
                    settle_in(conn, mail, "SENT", None, &super::sent_payload(mail))
                        .map_err(failed("recording sent mails"))?;
                }
                Ok(())
            })
            .await
    }

    async fn failed(&self, mail: &Due, error: &str) -> Result<(), StoreError> {
        let payload = Payload::NotificationFailed(NotificationFailed {
            notification_id: mail.notification_id.clone(),
            complaint_id: mail.complaint_id.clone(),
            trigger_event_id: mail.trigger_event_id.clone(),
            recipient: mail.recipient.clone(),
            error: error.to_owned(),
            attempts: mail.attempts + 1,
            template: Some(mail.template.clone()),
        });
        self.settle(mail, "FAILED", Some(error), &payload).await
    }

    async fn retry_at(&self, mail: &Due, error: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let (error, id) = (error.to_owned(), mail.notification_id.clone());
        self.db
            .jobs
            .run(move |conn| {
                conn.prepare_cached("UPDATE notifications SET status = 'PENDING', attempts = attempts + 1, last_error = ?1, next_attempt_at = ?2 WHERE notification_id = ?3 AND status IN ('PENDING', 'SENDING')")?
                    .execute(rusqlite::params![error, at.timestamp_millis(), id])
                    .map(|_| ())
                    .map_err(WriteError::from)
            })
            .await
            .map_err(written("scheduling a mail retry"))
    }

    async fn history(
        &self,
        complaint_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Value>, StoreError> {
        let rows = match complaint_id {
            Some(id) => sqlx::query(
                "SELECT * FROM notifications WHERE complaint_id = ? ORDER BY seq LIMIT ?",
            )
            .bind(id.to_owned()),
            None => sqlx::query("SELECT * FROM notifications ORDER BY seq DESC LIMIT ?"),
        }
        .bind(i64::from(limit))
        .fetch_all(&self.db.reader)
        .await
        .map_err(unavailable("reading the history"))?;
        Ok(rows
            .iter()
            .map(|row| {
                let sent_at: Option<i64> = row.get("sent_at");
                json!({
                    "notificationId": row.get::<String, _>("notification_id"),
                    "complaintId": row.get::<String, _>("complaint_id"),
                    "triggerEventId": row.get::<String, _>("trigger_event_id"),
                    "recipient": row.get::<String, _>("recipient"),
                    "channel": row.get::<String, _>("channel"),
                    "template": row.get::<String, _>("template"),
                    "subject": row.get::<String, _>("subject"),
                    "status": match row.get::<String, _>("status").as_str() {
                        // Being sent: not sent yet, as far as anyone asking knows.
                        "SENDING" => "PENDING".to_owned(),
                        other => other.to_owned(),
                    },
                    "attempts": row.get::<i64, _>("attempts"),
                    "lastError": row.get::<Option<String>, _>("last_error"),
                    "sentAt": sent_at.and_then(DateTime::from_timestamp_millis).map(|t| sagaflow_domain::time::format(&t)),
                })
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.db.reader)
            .await
            .map_err(unavailable("pinging the notification store"))?;
        Ok(())
    }
}
