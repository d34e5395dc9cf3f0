//! The notification store port: planned mails, their history, and the notification events,
//! each change committed with its outbox row (and, for a consumed event, its inbox record).
//!
//! - [`sqlite`]: the embedded adapter.
//! - [`postgres`]: the PostgreSQL adapter.

pub mod conformance;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sagaflow_domain::Envelope;
use sagaflow_domain::saga::{self, Recipient};
use sagaflow_runtime::event_log::StoreError;
use serde_json::Value;

pub use sqlite::SqliteNotifications;

/// Where mails go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    pub email_domain: String,
    pub admin_email: String,
    pub from: String,
}

impl Addressing {
    pub fn resolve(&self, to: &Recipient) -> String {
        match to {
            Recipient::Admin => self.admin_email.clone(),
            Recipient::User(id) => saga::address(id, &self.email_domain),
        }
    }
}

/// What a consumed event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    New {
        mails: usize,
        events: usize,
    },
    Duplicate,
    TooEarly {
        expected: u64,
    },
    /// An event of a complaint whose creation this service never saw.
    UnknownComplaint(String),
}

/// A mail due to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub notification_id: String,
    pub complaint_id: String,
    pub trigger_event_id: String,
    pub recipient: String,
    pub template: String,
    pub subject: String,
    pub body: String,
    pub correlation_id: String,
    /// The trace its outcome's event continues: the planning span's, then the sending span's.
    pub traceparent: Option<String>,
    pub attempts: u32,
}

#[async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    /// Plans the mails a complaint event calls for (and, for a compensation, cancels and
    /// corrects), in one transaction with the inbox record.
    async fn plan(&self, event: &Envelope, addressing: &Addressing) -> Result<Planned, StoreError>;
    /// Plans a batch, in order, in one commit where the store can; one answer per event.
    async fn plan_all(
        &self,
        events: &[Envelope],
        addressing: &Addressing,
    ) -> Vec<Result<Planned, StoreError>> {
        let mut results = Vec::with_capacity(events.len());
        for e in events {
            results.push(self.plan(e, addressing).await);
        }
        results
    }
    /// Mails due now, oldest first.
    async fn due(&self, limit: usize) -> Result<Vec<Due>, StoreError>;
    /// Records a sent mail and its NOTIFICATION_SENT.
    async fn sent(&self, mail: &Due) -> Result<(), StoreError>;
    /// Records sent mails, in one commit where the store can.
    async fn sent_all(&self, mails: &[Due]) -> Result<(), StoreError> {
        for m in mails {
            self.sent(m).await?;
        }
        Ok(())
    }
    /// Records a mail failed for good and its NOTIFICATION_FAILED.
    async fn failed(&self, mail: &Due, error: &str) -> Result<(), StoreError>;
    /// Counts a failed attempt; the mail is due again at `at`.
    async fn retry_at(&self, mail: &Due, error: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// A complaint's mails, in the order they were planned.
    async fn history(
        &self,
        complaint_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Value>, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The NOTIFICATION_SENT of a mail sent now.
pub(crate) fn sent_payload(mail: &Due) -> sagaflow_domain::Payload {
    sagaflow_domain::Payload::NotificationSent(sagaflow_domain::events::NotificationSent {
        notification_id: mail.notification_id.clone(),
        complaint_id: mail.complaint_id.clone(),
        trigger_event_id: mail.trigger_event_id.clone(),
        recipient: mail.recipient.clone(),
        channel: "email".into(),
        template: mail.template.clone(),
        sent_at: chrono::Utc::now(),
    })
}
