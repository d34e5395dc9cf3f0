//! The mailer port: sends one mail.
//!
//! - [`mailbox`]: the embedded adapter, a mailbox file (mbox) under the data directory.
//! - [`smtp`]: the SMTP adapter.

pub mod mailbox;
pub mod smtp;

use async_trait::async_trait;

/// A mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The notification id; also the `Message-ID`, so a resend can be recognised.
    pub id: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub template: String,
    pub correlation_id: String,
    pub complaint_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The recipient is refused for good (SMTP 5xx): do not retry.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// Worth another try (SMTP 4xx, the relay away).
    #[error("transient failure: {0}")]
    Transient(String),
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, mail: &Mail) -> Result<(), MailError>;

    /// Sends every mail: one outcome per mail, in order. Adapters that can make several mails
    /// durable together (one append and one sync for a batch) do it here.
    async fn send_all(&self, mails: &[Mail]) -> Vec<Result<(), MailError>> {
        futures::future::join_all(mails.iter().map(|m| self.send(m))).await
    }

    /// Whether a mail sent again under its id is delivered once (the mailbox recognises the
    /// ids of the mails it holds). A sender may then have more mails out at once: those a crash leaves claimed and
    /// unrecorded are sent again and deliver nothing twice. An SMTP relay delivers a resend.
    fn deduplicates(&self) -> bool {
        false
    }
}
