//! Sends due mails. A permanent refusal (SMTP 5xx) fails the mail at once; a transient one is
//! retried with the pipeline's backoff until its attempts run out. Each outcome commits with
//! its event.

use std::sync::Arc;
use std::time::Duration;

use sagaflow_runtime::consumer::RetryPolicy;
use sagaflow_runtime::metrics::Metrics;
use tokio::sync::Notify;

use crate::mailer::{Mail, MailError, Mailer};
use crate::store::{Due, NotificationStore};

pub struct Sender {
    pub store: Arc<dyn NotificationStore>,
    pub mailer: Arc<dyn Mailer>,
    pub from: String,
    pub policy: RetryPolicy,
    pub relay: Arc<Notify>,
    pub wake: Arc<Notify>,
    pub metrics: Metrics,
}

/// How long a claimed batch may be worked on (the stores' claims last 60 s).
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

impl Sender {
    pub async fn run(self: Arc<Self>, tick: Duration) {
        loop {
            let woken = self.wake.notified();
            match self.send_due().await {
                Ok(0) => {
                    let _ = tokio::time::timeout(tick, woken).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "sending mails");
                    tokio::time::sleep(tick.max(Duration::from_millis(500))).await;
                }
            }
        }
    }

    /// Sends what is due now; returns how many mails it tried.
    pub async fn send_due(&self) -> Result<usize, sagaflow_runtime::event_log::StoreError> {
        let due = self.store.due(32).await?;
        let claimed = std::time::Instant::now();
        for (i, mail) in due.iter().enumerate() {
            // The stores claim mails for a minute; past half of it, the rest of the batch is
            // left for a fresh claim rather than sent on a claim another sender may take over.
            if claimed.elapsed() > CLAIM_MARGIN {
                tracing::warn!(
                    left = due.len() - i,
                    "a slow batch: the rest of its mails wait for a fresh claim"
                );
                return Ok(i);
            }
            self.send(mail).await?;
        }
        Ok(due.len())
    }

    async fn send(&self, due: &Due) -> Result<(), sagaflow_runtime::event_log::StoreError> {
        let mail = Mail {
            id: due.notification_id.clone(),
            from: self.from.clone(),
            to: due.recipient.clone(),
            subject: due.subject.clone(),
            body: due.body.clone(),
            template: due.template.clone(),
            correlation_id: due.correlation_id.clone(),
            complaint_id: due.complaint_id.clone(),
        };
        match self.mailer.send(&mail).await {
            Ok(()) => {
                // The mail is out: recording it must not give up, or the mail would be sent
                // again once its claim runs out (a store that is away comes back).
                let mut pause = Duration::from_millis(100);
                while let Err(e) = self.store.sent(due).await {
                    tracing::warn!(notificationId = %due.notification_id, error = %e, "recording a sent mail; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(3));
                }
                self.metrics.event_published("NOTIFICATION_SENT");
                tracing::info!(template = %due.template, recipient = %due.recipient, aggregateId = %due.complaint_id, correlationId = %due.correlation_id, "mail sent");
            }
            Err(MailError::Transient(e)) if due.attempts + 1 < self.policy.max_attempts => {
                let delay = self.policy.delay(due.attempts + 1);
                let at = chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                tracing::warn!(recipient = %due.recipient, attempt = due.attempts + 1, error = %e, "mail refused for now; retrying");
                self.store.retry_at(due, &e, at).await?;
                return Ok(());
            }
            Err(e) => {
                self.store.failed(due, &e.to_string()).await?;
                self.metrics.event_published("NOTIFICATION_FAILED");
                tracing::warn!(recipient = %due.recipient, template = %due.template, error = %e, "mail failed for good");
            }
        }
        self.relay.notify_one();
        Ok(())
    }
}
