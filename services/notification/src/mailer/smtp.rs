//! The SMTP mailer (lettre): a 5xx answer is a permanent failure, a 4xx, a timeout or a broken
//! connection a transient one. `SMTP_URL` is `smtp://host:port` (plain, for a relay on the same
//! network or a sink); the `Message-ID` is the notification id, so a relay can recognise a resend.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Mail, MailError, Mailer};

#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Smtp")
    }
}

/// Why `SMTP_URL` is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SMTP_URL: {0}")]
pub struct SmtpUrlError(pub String);

impl Smtp {
    /// Reads `smtp://host:port`.
    pub fn new(url: &str) -> Result<Self, SmtpUrlError> {
        let rest = url.strip_prefix("smtp://").ok_or_else(|| {
            SmtpUrlError(format!(
                "expected smtp://HOST:PORT, got {:?}",
                sagaflow_runtime::config::redact(url)
            ))
        })?;
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let host_port = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| SmtpUrlError(format!("the port {p:?} is not a number")))?,
            ),
            None => (host_port, 25),
        };
        if host.is_empty() {
            return Err(SmtpUrlError("the host is missing".into()));
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(Duration::from_secs(15)))
            .build();
        Ok(Self { transport })
    }
}

fn header(name: &str, value: &str) -> Option<HeaderValue> {
    HeaderName::new_from_ascii(name.to_owned())
        .ok()
        .map(|n| HeaderValue::new(n, value.replace(['\r', '\n'], " ")))
}

#[async_trait]
impl Mailer for Smtp {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let bad =
            |what: &str, e: &dyn std::fmt::Display| MailError::Permanent(format!("{what}: {e}"));
        let mut message = Message::builder()
            .from(
                mail.from
                    .parse()
                    .map_err(|e| bad("the sender address", &e))?,
            )
            .to(mail
                .to
                .parse()
                .map_err(|e| bad("the recipient address", &e))?)
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{}@sagaflow>", mail.id)))
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| bad("building the mail", &e))?;
        for (name, value) in [
            ("X-Sagaflow-Template", &mail.template),
            ("X-Correlation-ID", &mail.correlation_id),
            ("X-Complaint-ID", &mail.complaint_id),
        ] {
            if let Some(h) = header(name, value) {
                message.headers_mut().insert_raw(h);
            }
        }
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(MailError::Permanent(e.to_string())),
            Err(e) => Err(MailError::Transient(e.to_string())),
        }
    }
}
