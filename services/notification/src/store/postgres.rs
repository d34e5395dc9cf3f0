//! The notification store on PostgreSQL, in the notification service's schema.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sagaflow_domain::events::{NotificationCompensation, NotificationFailed, Payload};
use sagaflow_domain::saga::{self, ComplaintFacts, notification_stream, templates};
use sagaflow_domain::{Context, Envelope};
use sagaflow_runtime::bus::topology::NOTIFICATION_SERVICE;
use sagaflow_runtime::event_log::StoreError;
use sagaflow_runtime::inbox::Claim;
use sagaflow_runtime::outbox::pg::PgOutbox;
use sagaflow_runtime::postgres::Migration;
use serde_json::{Value, json};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Row};

use super::{Addressing, Due, NotificationStore, Planned};

pub const MIGRATIONS: &[Migration] = &[
    (1, TABLES),
    (2, sagaflow_runtime::inbox::pg::SCHEMA),
    (3, sagaflow_runtime::outbox::pg::SCHEMA),
    (4, sagaflow_runtime::outbox::pg::SCHEMA_BY_AGGREGATE),
    // The trace a mail's NOTIFICATION_SENT / _FAILED continues.
    (
        5,
        "ALTER TABLE notifications ADD COLUMN IF NOT EXISTS traceparent TEXT;",
    ),
    // The mails to send in planning order: a claim reads the first few whatever the backlog
    // (on (status, next_attempt_at) it sorted the whole backlog on every claim).
    (
        6,
        "CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (seq) \
         WHERE status IN ('PENDING', 'SENDING'); DROP INDEX IF EXISTS notifications_due;",
    ),
    (7, sagaflow_runtime::outbox::pg::SCHEMA_RELAY_LEASE),
];

const TABLES: &str = r#"
CREATE TABLE notifications (
    seq               BIGSERIAL PRIMARY KEY,
    notification_id   TEXT NOT NULL UNIQUE,
    complaint_id      TEXT NOT NULL,
    trigger_event_id  TEXT NOT NULL,
    recipient         TEXT NOT NULL,
    channel           TEXT NOT NULL,
    template          TEXT NOT NULL,
    subject           TEXT NOT NULL,
    body              TEXT NOT NULL,
    correlation_id    TEXT NOT NULL,
    status            TEXT NOT NULL,
    attempts          BIGINT NOT NULL DEFAULT 0,
    last_error        TEXT,
    next_attempt_at   BIGINT NOT NULL,
    sent_at           BIGINT
);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
CREATE INDEX notifications_complaint ON notifications (complaint_id, seq);
CREATE INDEX notifications_trigger ON notifications (trigger_event_id);
CREATE TABLE complaints (
    complaint_id TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    title        TEXT NOT NULL
);
"#;

#[derive(Debug, Clone)]
pub struct PgNotifications {
    pool: PgPool,
}

fn unavailable(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::Unavailable(format!("{context}: {e}"))
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Records a notification event in its complaint's notification stream.
async fn emit(
    tx: &mut PgConnection,
    complaint_id: &str,
    payload: &Payload,
    correlation_id: &str,
    cause: &str,
    traceparent: Option<&str>,
) -> Result<Envelope, sqlx::Error> {
    let ctx = Context {
        correlation_id: correlation_id.to_owned(),
        causation_id: Some(cause.to_owned()),
        user_id: None,
        at: Utc::now(),
        traceparent: traceparent.map(str::to_owned),
    };
    sagaflow_runtime::outbox::pg::record(tx, &notification_stream(complaint_id), payload, &ctx)
        .await
}

async fn queue_mail(
    tx: &mut PgConnection,
    complaint_id: &str,
    trigger: &Envelope,
    recipient: &str,
    template: &str,
    subject: &str,
    body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO notifications (notification_id, complaint_id, trigger_event_id, recipient, channel, template, subject, body, \
         correlation_id, traceparent, status, next_attempt_at) VALUES ($1, $2, $3, $4, 'email', $5, $6, $7, $8, $9, 'PENDING', $10)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(complaint_id)
    .bind(&trigger.event_id)
    .bind(recipient)
    .bind(template)
    .bind(subject)
    .bind(body)
    .bind(&trigger.metadata.correlation_id)
    .bind(&trigger.metadata.traceparent)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn due_of(row: &PgRow) -> Due {
    Due {
        notification_id: row.get("notification_id"),
        complaint_id: row.get("complaint_id"),
        trigger_event_id: row.get("trigger_event_id"),
        recipient: row.get("recipient"),
        template: row.get("template"),
        subject: row.get("subject"),
        body: row.get("body"),
        correlation_id: row.get("correlation_id"),
        traceparent: row.try_get("traceparent").ok().flatten(),
        attempts: u32::try_from(row.get::<i64, _>("attempts")).unwrap_or(u32::MAX),
    }
}

impl PgNotifications {
    /// Connects, creating the schema and its tables when needed.
    pub async fn open(url: &str, schema: &str) -> Result<Self, StoreError> {
        let pool = sagaflow_runtime::postgres::open(url, schema, MIGRATIONS, 8)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "connecting to PostgreSQL: {}",
                    sagaflow_runtime::config::redact(&e.to_string())
                ))
            })?;
        Ok(Self { pool })
    }

    pub fn outbox(&self) -> PgOutbox {
        PgOutbox::new(self.pool.clone())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn settle(
        &self,
        mail: &Due,
        status: &str,
        error: Option<&str>,
        payload: &Payload,
    ) -> Result<(), StoreError> {
        let fail = unavailable("recording a mail");
        let mut tx = self.pool.begin().await.map_err(&fail)?;
        settle_in(&mut tx, mail, status, error, payload).await?;
        tx.commit().await.map_err(&fail)
    }
}

impl PgNotifications {
    /// Plans a batch as a set: the inbox claims at once, the new complaints' facts in one
    /// insert, every complaint's facts in one read, every mail in one insert. `None` (and
    /// nothing written) for a batch that needs the event-by-event path.
    async fn plan_set(
        &self,
        events: &[Envelope],
        addressing: &Addressing,
    ) -> Result<Option<Vec<Result<Planned, StoreError>>>, sqlx::Error> {
        let mut payloads = Vec::with_capacity(events.len());
        for event in events {
            match event.payload() {
                Ok(Payload::ComplaintCompensationRequired(_)) | Err(_) => return Ok(None),
                Ok(payload) => payloads.push(payload),
            }
        }
        let mut tx = self.pool.begin().await?;
        let claims = sagaflow_runtime::inbox::pg::claim_all(&mut tx, events).await?;
        let new: Vec<(&Envelope, &Payload)> = events
            .iter()
            .zip(&payloads)
            .zip(&claims)
            .filter(|(_, c)| **c == Claim::New)
            .map(|(pair, _)| pair)
            .collect();
        let created: Vec<&sagaflow_domain::events::ComplaintCreated> = new
            .iter()
            .filter_map(|(_, p)| match p {
                Payload::ComplaintCreated(c) => Some(c),
                _ => None,
            })
            .collect();
        if !created.is_empty() {
            sqlx::query(
                "INSERT INTO complaints (complaint_id, user_id, title) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
            )
            .bind(
                created
                    .iter()
                    .map(|c| c.complaint_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                created
                    .iter()
                    .map(|c| c.user_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(created.iter().map(|c| c.title.as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        let complaints: Vec<&str> = new.iter().map(|(e, _)| e.aggregate_id.as_str()).collect();
        let facts: std::collections::HashMap<String, ComplaintFacts> =
            sqlx::query_as::<_, (String, String, String)>(
                "SELECT complaint_id, user_id, title FROM complaints WHERE complaint_id = ANY($1)",
            )
            .persistent(false)
            .bind(&complaints)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(id, user_id, title)| (id, ComplaintFacts { user_id, title }))
            .collect();
        let mut mails: Vec<(&Envelope, String, &'static str, String, String)> = Vec::new();
        let mut counts = std::collections::HashMap::new();
        for (event, payload) in &new {
            let Some(facts) = facts.get(&event.aggregate_id) else {
                tx.rollback().await?;
                return Ok(None);
            };
            let planned = saga::mails_for(payload, facts);
            counts.insert(event.event_id.as_str(), planned.len());
            for m in planned {
                mails.push((
                    event,
                    addressing.resolve(&m.to),
                    m.template,
                    m.subject,
                    m.body,
                ));
            }
        }
        if !mails.is_empty() {
            sqlx::query(
                "INSERT INTO notifications (notification_id, complaint_id, trigger_event_id, recipient, channel, template, subject, body, \
                 correlation_id, traceparent, status, next_attempt_at) \
                 SELECT i, c, t, r, 'email', tp, s, b, co, tr, 'PENDING', $10 FROM UNNEST($1::text[], $2::text[], $3::text[], \
                 $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) \
                 WITH ORDINALITY AS m(i, c, t, r, tp, s, b, co, tr, n) ORDER BY n",
            )
            .bind(mails.iter().map(|_| uuid::Uuid::now_v7().to_string()).collect::<Vec<_>>())
            .bind(mails.iter().map(|(e, ..)| e.aggregate_id.as_str()).collect::<Vec<_>>())
            .bind(mails.iter().map(|(e, ..)| e.event_id.as_str()).collect::<Vec<_>>())
            .bind(mails.iter().map(|(_, to, ..)| to.as_str()).collect::<Vec<_>>())
            .bind(mails.iter().map(|(_, _, template, ..)| *template).collect::<Vec<_>>())
            .bind(mails.iter().map(|(.., subject, _)| subject.as_str()).collect::<Vec<_>>())
            .bind(mails.iter().map(|(.., body)| body.as_str()).collect::<Vec<_>>())
            .bind(
                mails
                    .iter()
                    .map(|(e, ..)| e.metadata.correlation_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                mails
                    .iter()
                    .map(|(e, ..)| e.metadata.traceparent.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(
            events
                .iter()
                .zip(claims)
                .map(|(event, claim)| {
                    Ok(match claim {
                        Claim::New => Planned::New {
                            mails: counts.get(event.event_id.as_str()).copied().unwrap_or(0),
                            events: 0,
                        },
                        Claim::Duplicate => Planned::Duplicate,
                        Claim::TooEarly { expected } => Planned::TooEarly { expected },
                    })
                })
                .collect(),
        ))
    }
}

/// Whether a plan's writes stay: not for an unknown complaint (its event is refused, so its
/// inbox record must go too, or a redrive would find it "done").
fn kept(planned: &Planned) -> bool {
    !matches!(planned, Planned::UnknownComplaint(_))
}

/// Plans the mails (and compensation events) of one event inside `tx`.
async fn plan_in(
    tx: &mut sqlx::PgConnection,
    event: &Envelope,
    addressing: &Addressing,
) -> Result<Planned, StoreError> {
    let fail = unavailable("planning mails");
    let payload = event
        .payload()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    match sagaflow_runtime::inbox::pg::claim(&mut *tx, event)
        .await
        .map_err(&fail)?
    {
        Claim::Duplicate => return Ok(Planned::Duplicate),
        Claim::TooEarly { expected } => return Ok(Planned::TooEarly { expected }),
        Claim::New => {}
    }
    let complaint_id = event.aggregate_id.clone();
    if let Payload::ComplaintCreated(c) = &payload {
        sqlx::query(
            "INSERT INTO complaints (complaint_id, user_id, title) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&c.complaint_id)
        .bind(&c.user_id)
        .bind(&c.title)
        .execute(&mut *tx)
        .await
        .map_err(&fail)?;
    }
    let facts = sqlx::query("SELECT user_id, title FROM complaints WHERE complaint_id = $1")
        .bind(&complaint_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(&fail)?
        .map(|r| ComplaintFacts {
            user_id: r.get(0),
            title: r.get(1),
        });
    let Some(facts) = facts else {
        return Ok(Planned::UnknownComplaint(complaint_id));
    };
    let planned = saga::mails_for(&payload, &facts);
    for m in &planned {
        queue_mail(
            &mut *tx,
            &complaint_id,
            event,
            &addressing.resolve(&m.to),
            m.template,
            &m.subject,
            &m.body,
        )
        .await
        .map_err(&fail)?;
    }
    let mut events = 0;
    if let Payload::ComplaintCompensationRequired(required) = &payload {
        let ids = saga::compensated_event_ids(required, NOTIFICATION_SERVICE);
        let mut cancelled = Vec::new();
        let mut told = Vec::new();
        for id in &ids {
            let rows = sqlx::query("SELECT notification_id, recipient, status FROM notifications WHERE trigger_event_id = $1")
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(&fail)?;
            for row in rows {
                let status: String = row.get(2);
                if status == "PENDING" {
                    cancelled.push(row.get::<String, _>(0));
                } else if (status == "SENT" || status == "SENDING")
                    && !told.contains(&row.get::<String, _>(1))
                {
                    told.push(row.get::<String, _>(1));
                }
            }
        }
        for n in &cancelled {
            sqlx::query("UPDATE notifications SET status = 'CANCELLED' WHERE notification_id = $1")
                .bind(n)
                .execute(&mut *tx)
                .await
                .map_err(&fail)?;
        }
        let (subject, body) = saga::correction(&facts, required);
        for to in &told {
            queue_mail(
                &mut *tx,
                &complaint_id,
                event,
                to,
                templates::CORRECTION,
                &subject,
                &body,
            )
            .await
            .map_err(&fail)?;
        }
        let data = Payload::NotificationCompensation(NotificationCompensation {
            complaint_id: complaint_id.clone(),
            failed_event_id: required.failed_event_id.clone(),
            cancelled_notification_ids: cancelled,
            correction_sent_to: Some(told),
        });
        emit(
            &mut *tx,
            &complaint_id,
            &data,
            &event.metadata.correlation_id,
            &event.event_id,
            event.metadata.traceparent.as_deref(),
        )
        .await
        .map_err(&fail)?;
        events += 1;
    }
    Ok(Planned::New {
        mails: planned.len(),
        events,
    })
}

/// Records a mail's outcome and its event inside `tx`, unless another sender did already.
async fn settle_in(
    tx: &mut sqlx::PgConnection,
    mail: &Due,
    status: &str,
    error: Option<&str>,
    payload: &Payload,
) -> Result<(), StoreError> {
    let fail = unavailable("recording a mail");
    // Only the sender that holds the mail's claim records it (another may have taken
    // it over after the claim lapsed and recorded it already): one event per outcome.
    let settled = sqlx::query("UPDATE notifications SET status = $1, attempts = attempts + 1, last_error = $2, sent_at = $3 WHERE notification_id = $4 AND status IN ('SENDING', 'PENDING')")
        .bind(status)
        .bind(error)
        .bind((status == "SENT").then(now_ms))
        .bind(&mail.notification_id)
        .execute(&mut *tx)
        .await
        .map_err(&fail)?;
    if settled.rows_affected() == 0 {
        return Ok(());
    }
    emit(
        &mut *tx,
        &mail.complaint_id,
        payload,
        &mail.correlation_id,
        &mail.trigger_event_id,
        mail.traceparent.as_deref(),
    )
    .await
    .map_err(&fail)?;
    Ok(())
}

#[async_trait]
impl NotificationStore for PgNotifications {
    async fn plan(&self, event: &Envelope, addressing: &Addressing) -> Result<Planned, StoreError> {
        let fail = unavailable("planning mails");
        let mut tx = self.pool.begin().await.map_err(&fail)?;
        let planned = plan_in(&mut tx, event, addressing).await?;
        if kept(&planned) {
            tx.commit().await.map_err(&fail)?;
        }
        Ok(planned)
    }

    /// One transaction for the batch, in a few statements whatever its size (`plan_set`). A
    /// batch with a compensation, an unreadable event or a complaint this service never heard
    /// of is planned event by event instead, each in its own savepoint (a refused event's
    /// writes, its inbox record included, go).
    async fn plan_all(
        &self,
        events: &[Envelope],
        addressing: &Addressing,
    ) -> Vec<Result<Planned, StoreError>> {
        match self.plan_set(events, addressing).await {
            Ok(Some(done)) => return done,
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "planning mails as a set; again one by one"),
        }
        let done = sagaflow_runtime::in_savepoints!(
            begin = self.pool.begin(),
            events,
            |conn, event| plan_in(conn, event, addressing),
            keep = |r: &Result<Planned, StoreError>| r.as_ref().is_ok_and(kept)
        );
        done.unwrap_or_else(|e| {
            sagaflow_runtime::event_log::failed_all(events.len(), &unavailable("planning mails")(e))
        })
    }

    async fn due(&self, limit: usize) -> Result<Vec<Due>, StoreError> {
        let rows = sqlx::query("UPDATE notifications SET status = 'SENDING', next_attempt_at = $1 + 60000 WHERE seq IN ( \
             SELECT seq FROM notifications WHERE status IN ('PENDING', 'SENDING') AND next_attempt_at <= $1 \
             ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING *")
            .bind(now_ms())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable("reading due mails"))?;
        let mut rows = rows;
        rows.sort_by_key(|r| r.get::<i64, _>("seq"));
        Ok(rows.iter().map(due_of).collect())
    }

    async fn sent(&self, mail: &Due) -> Result<(), StoreError> {
        self.settle(mail, "SENT", None, &super::sent_payload(mail))
            .await
    }

    /// One transaction for the lot, in four statements whatever its size: the mails still
    /// claimed are marked sent at once, and their events recorded at once.
    async fn sent_all(&self, mails: &[Due]) -> Result<(), StoreError> {
        let fail = unavailable("recording sent mails");
        let mut ordered: Vec<&Due> = mails.iter().collect();
        ordered.sort_by(|a, b| a.complaint_id.cmp(&b.complaint_id));
        let ids: Vec<&str> = ordered.iter().map(|m| m.notification_id.as_str()).collect();
        let mut tx = self.pool.begin().await.map_err(&fail)?;
        // Only the sender that holds a mail's claim records it (another may have taken it over
        // after the claim lapsed and recorded it already): one event per outcome.
        let settled: std::collections::HashSet<String> = sqlx::query_scalar(
            "UPDATE notifications SET status = 'SENT', attempts = attempts + 1, last_error = NULL, sent_at = $1 \
             WHERE notification_id = ANY($2) AND status IN ('SENDING', 'PENDING') RETURNING notification_id",
        )
        .persistent(false)
        .bind(now_ms())
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(&fail)?
        .into_iter()
        .collect();
        let settled: Vec<(String, Payload, Context)> = ordered
            .iter()
            .filter(|m| settled.contains(&m.notification_id))
            .map(|m| {
                (
                    notification_stream(&m.complaint_id),
                    super::sent_payload(m),
                    Context {
                        correlation_id: m.correlation_id.clone(),
                        causation_id: Some(m.trigger_event_id.clone()),
                        user_id: None,
                        at: Utc::now(),
                        traceparent: m.traceparent.clone(),
                    },
                )
            })
            .collect();
        let items: Vec<(&str, &Payload, &Context)> = settled
            .iter()
            .map(|(stream, payload, ctx)| (stream.as_str(), payload, ctx))
            .collect();
        sagaflow_runtime::outbox::pg::record_all(&mut tx, &items)
            .await
            .map_err(&fail)?;
        tx.commit().await.map_err(&fail)
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
        sqlx::query("UPDATE notifications SET status = 'PENDING', attempts = attempts + 1, last_error = $1, next_attempt_at = $2 WHERE notification_id = $3 AND status IN ('PENDING', 'SENDING')")
            .bind(error)
            .bind(at.timestamp_millis())
            .bind(&mail.notification_id)
            .execute(&self.pool)
            .await
            .map_err(unavailable("scheduling a mail retry"))?;
        Ok(())
    }

    async fn history(
        &self,
        complaint_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Value>, StoreError> {
        let rows = match complaint_id {
            Some(id) => sqlx::query(
                "SELECT * FROM notifications WHERE complaint_id = $1 ORDER BY seq LIMIT $2",
            )
            .bind(id.to_owned()),
            None => sqlx::query("SELECT * FROM notifications ORDER BY seq DESC LIMIT $1"),
        }
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
            .execute(&self.pool)
            .await
            .map_err(unavailable("pinging the notification store"))?;
        Ok(())
    }
}
