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

/// The most mails a sender has out at once: claimed, and not yet recorded as sent. It bounds
/// what a sender killed between the relay's acceptance and its record sends again (under the
/// same Message-IDs).
pub const BATCH: usize = 16;

/// The most mails a sender has out at once when its mailer delivers a resend once (the
/// mailbox): a crash then resends them harmlessly, and larger batches share the cost of
/// making mails durable.
pub const DEDUPLICATED_OUT: usize = 256;

/// Batches out at once, of a quarter of the mails out each: while one batch's mails are being
/// written or handed to the relay, the next is claimed and sent. Each batch is claimed, sent
/// and recorded as a whole.
pub const IN_FLIGHT: usize = 4;

impl Sender {
    /// How many mails a batch claims: [`BATCH`] out at once in all, unless the mailer
    /// deduplicates resends ([`DEDUPLICATED_OUT`]).
    fn batch(&self) -> usize {
        let out = if self.mailer.deduplicates() {
            DEDUPLICATED_OUT
        } else {
            BATCH
        };
        out / IN_FLIGHT
    }

    pub async fn run(self: Arc<Self>, tick: Duration) {
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let batch = self.batch();
        loop {
            let woken = self.wake.notified();
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            match self.store.due(batch).await {
                Ok(due) if due.is_empty() => {
                    drop(slot);
                    let _ = tokio::time::timeout(tick, woken).await;
                }
                Ok(due) => {
                    let sender = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = sender.send(due).await {
                            tracing::warn!(error = %e, "sending mails");
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    drop(slot);
                    tracing::warn!(error = %e, "claiming due mails");
                    tokio::time::sleep(tick.max(Duration::from_millis(500))).await;
                }
            }
        }
    }

    /// Sends a claimed batch and records the sent ones in one commit; returns how many mails it
    /// tried.
    async fn send(
        &self,
        mut due: Vec<Due>,
    ) -> Result<usize, sagaflow_runtime::event_log::StoreError> {
        let claimed = std::time::Instant::now();
        // A span per mail, in the trace of the event that planned it; the mail's outcome
        // event continues from it.
        let spans: Vec<tracing::Span> = due
            .iter_mut()
            .map(|m| {
                let span = tracing::info_span!(
                    parent: None,
                    "mail",
                    otel.name = %format!("send {}", m.template),
                    otel.kind = "client",
                    template = %m.template,
                    aggregateId = %m.complaint_id,
                    correlationId = %m.correlation_id,
                    outcome = tracing::field::Empty,
                );
                m.traceparent =
                    sagaflow_runtime::trace::continue_from(&span, m.traceparent.as_deref());
                span
            })
            .collect();
        let mut outcomes: Vec<(&Due, Option<Result<(), MailError>>)> = Vec::new();
        for chunk in due.chunks(self.batch()) {
            // The stores claim mails for a minute; past half of it, the rest of the batch is
            // left for a fresh claim rather than sent on a claim another sender may take over.
            if claimed.elapsed() > CLAIM_MARGIN {
                outcomes.extend(chunk.iter().map(|m| (m, None)));
                continue;
            }
            let mails: Vec<Mail> = chunk.iter().map(|m| self.mail_of(m)).collect();
            let done = self.mailer.send_all(&mails).await;
            outcomes.extend(chunk.iter().zip(done.into_iter().map(Some)));
        }
        for ((_, outcome), span) in outcomes.iter().zip(&spans) {
            span.record(
                "outcome",
                match outcome {
                    None => "left",
                    Some(Ok(())) => "sent",
                    Some(Err(MailError::Transient(_))) => "refused for now",
                    Some(Err(_)) => "refused",
                },
            );
        }
        let left = outcomes.iter().filter(|(_, o)| o.is_none()).count();
        if left > 0 {
            tracing::warn!(
                left,
                "a slow batch: the rest of its mails wait for a fresh claim"
            );
        }
        let sent: Vec<Due> = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Some(Ok(()))))
            .map(|(mail, _)| (*mail).clone())
            .collect();
        // The mails are out: recording them must not give up, or they would be sent again
        // once their claim runs out (a store that is away comes back).
        let mut pause = Duration::from_millis(100);
        while let Err(e) = self.store.sent_all(&sent).await {
            tracing::warn!(mails = sent.len(), error = %e, "recording sent mails; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(3));
        }
        for mail in &sent {
            self.metrics.event_published("NOTIFICATION_SENT");
            tracing::info!(template = %mail.template, recipient = %mail.recipient, aggregateId = %mail.complaint_id, correlationId = %mail.correlation_id, "mail sent");
        }
        for (mail, outcome) in &outcomes {
            if let Some(Err(e)) = outcome {
                self.refused(mail, e).await?;
            }
        }
        if !sent.is_empty() {
            self.relay.notify_one();
        }
        Ok(due.len() - left)
    }

    fn mail_of(&self, due: &Due) -> Mail {
        Mail {
            id: due.notification_id.clone(),
            from: self.from.clone(),
            to: due.recipient.clone(),
            subject: due.subject.clone(),
            body: due.body.clone(),
            template: due.template.clone(),
            correlation_id: due.correlation_id.clone(),
            complaint_id: due.complaint_id.clone(),
        }
    }

    /// A mail the relay refused: tried again later, or failed for good.
    async fn refused(
        &self,
        due: &Due,
        error: &MailError,
    ) -> Result<(), sagaflow_runtime::event_log::StoreError> {
        match error {
            MailError::Transient(e) if due.attempts + 1 < self.policy.max_attempts => {
                let delay = self.policy.delay(due.attempts + 1);
                let at = chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                tracing::warn!(recipient = %due.recipient, attempt = due.attempts + 1, error = %e, "mail refused for now; retrying");
                self.store.retry_at(due, e, at).await?;
            }
            e => {
                self.store.failed(due, &e.to_string()).await?;
                self.metrics.event_published("NOTIFICATION_FAILED");
                tracing::warn!(recipient = %due.recipient, template = %due.template, error = %e, "mail failed for good");
                self.relay.notify_one();
            }
        }
        Ok(())
    }
}
