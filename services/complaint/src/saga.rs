//! The complaint service's side of the saga: what it does with the notification and audit
//! events it consumes.
//!
//! - Notifications and audit marks fill the view; the closing mail completes the saga.
//! - A mail telling an assignee of an assignment that failed for good undoes that assignment.
//! - When both the notification and the audit service reported their part of a compensation,
//!   COMPLAINT_COMPENSATED restores the earlier status and assignee.
//!
//! Every effect is idempotent (the view dedupes by event id, the aggregate refuses a second
//! compensation of a step), so a redelivery changes nothing.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use sagaflow_domain::complaint::Command;
use sagaflow_domain::events::Payload;
use sagaflow_domain::saga::templates;
use sagaflow_domain::values::Reason;
use sagaflow_runtime::consumer::{Failure, Handler, Incoming};
use sagaflow_runtime::event_log::StoreError;

use crate::app::{AppError, Caller, ComplaintApp};

pub struct Reactions {
    pub app: Arc<ComplaintApp>,
}

fn transient(e: AppError) -> Failure {
    match e {
        AppError::Store(StoreError::Corrupt(e)) => Failure::Business(e),
        other => Failure::Transient(other.to_string()),
    }
}

impl Reactions {
    /// Runs a command the saga calls for; a refusal means the step is moot (done already, or
    /// the complaint moved on) and is only logged.
    async fn command(&self, id: &str, command: Command, caller: &Caller) -> Result<bool, Failure> {
        let name = command.name();
        match self.app.execute(id, command, None, caller).await {
            Ok(_) => Ok(true),
            Err(AppError::Refused(e)) => {
                tracing::info!(aggregateId = %id, command = name, reason = %e, "saga step not needed");
                Ok(false)
            }
            Err(e) => Err(transient(e)),
        }
    }
}

#[async_trait]
impl Handler for Reactions {
    async fn handle(&self, incoming: &Incoming) -> Result<(), Failure> {
        self.handle_all(std::slice::from_ref(incoming))
            .await
            .pop()
            .unwrap_or_else(|| Err(Failure::Transient("no answer".into())))
    }

    /// The batch's view updates in one transaction, then each event's saga step.
    async fn handle_all(&self, batch: &[Incoming]) -> Vec<Result<(), Failure>> {
        let mut results: Vec<Option<Result<(), Failure>>> = vec![None; batch.len()];
        let mut targets = Vec::with_capacity(batch.len());
        for (i, incoming) in batch.iter().enumerate() {
            let event = &incoming.envelope;
            match event.payload() {
                Err(e) => results[i] = Some(Err(Failure::Business(e.to_string()))),
                Ok(payload) => match event.event_data.get("complaintId").and_then(|v| v.as_str()) {
                    None => {
                        results[i] = Some(Err(Failure::Business(format!(
                            "{} has no complaintId",
                            event.event_type
                        ))))
                    }
                    Some(id) => targets.push((i, id.to_owned(), payload)),
                },
            }
        }
        let applying: Vec<(String, sagaflow_domain::Envelope)> = targets
            .iter()
            .map(|(i, id, _)| (id.clone(), batch[*i].envelope.clone()))
            .collect();
        match self.app.projector().apply_external_all(&applying).await {
            Err(e) => {
                let failure = transient(e.into());
                for (i, _, _) in &targets {
                    results[*i] = Some(Err(failure.clone()));
                }
            }
            Ok(applied) => {
                for ((i, id, payload), outcome) in targets.into_iter().zip(applied) {
                    let event = &batch[i].envelope;
                    results[i] = Some(match outcome {
                        None => Err(Failure::Business(format!("complaint {id} does not exist"))),
                        Some((applied, projection)) => {
                            let traceparent = batch[i].traceparent.clone();
                            self.react(&id, event, traceparent, &payload, applied, &projection)
                                .await
                        }
                    });
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Failure::Transient("no answer".into()))))
            .collect()
    }
}

impl Reactions {
    /// The saga's step for one event, once the view holds it.
    async fn react(
        &self,
        id: &str,
        event: &sagaflow_domain::Envelope,
        traceparent: Option<String>,
        payload: &Payload,
        applied: bool,
        projection: &sagaflow_domain::ComplaintProjection,
    ) -> Result<(), Failure> {
        let caller = Caller {
            correlation_id: event.metadata.correlation_id.clone(),
            request_id: event.event_id.clone(),
            user_id: None,
            traceparent,
        };
        if let Payload::NotificationSent(sent) = payload
            && applied
            && sent.template == templates::CLOSED_USER
            && let Some(c) = &projection.state.complaint
        {
            let took = (Utc::now() - c.created_at).to_std().unwrap_or_default();
            self.app
                .metrics()
                .saga
                .with_label_values(&["complaint", "completed"])
                .observe(took.as_secs_f64());
            tracing::info!(aggregateId = %id, seconds = took.as_secs_f64(), "saga completed");
        }
        if let Payload::NotificationFailed(failed) = payload
            && failed.template.as_deref() == Some(templates::ASSIGNED_ASSIGNEE)
        {
            let reason = Reason::parse(
                "reason",
                format!(
                    "the mail telling {} of the assignment failed: {}",
                    failed.recipient, failed.error
                ),
            )
            .or_else(|_| Reason::parse("reason", "the mail telling the assignee failed"))
            .map_err(|e| Failure::Business(e.to_string()))?;
            self.command(
                id,
                Command::Compensate {
                    reason,
                    failed_event_id: Some(failed.trigger_event_id.clone()),
                },
                &caller,
            )
            .await?;
        }
        if let Some(failed_event_id) = projection.compensation_ready() {
            let required_at = projection
                .state
                .complaint
                .as_ref()
                .and_then(|c| c.compensation.as_ref())
                .map(|p| p.required_at);
            if self
                .command(
                    id,
                    Command::CompleteCompensation { failed_event_id },
                    &caller,
                )
                .await?
                && let Some(at) = required_at
            {
                let took = (Utc::now() - at).to_std().unwrap_or_default();
                self.app
                    .metrics()
                    .saga
                    .with_label_values(&["complaint", "compensated"])
                    .observe(took.as_secs_f64());
            }
        }
        Ok(())
    }
}
