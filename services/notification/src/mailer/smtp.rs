//! The SMTP mailer (lettre's SMTP client): a 5xx answer is a permanent failure, a 4xx, a timeout
//! or a broken connection a transient one. `SMTP_URL` is `smtp://host:port` (plain, for a relay on
//! the same network or a sink); the `Message-ID` is the notification id, so a relay can recognise
//! a resend.
//!
//! Connections are kept open and reused (an SMTP session carries any number of mails), and they
//! are opened with `TCP_NODELAY`: lettre's own transport leaves Nagle's algorithm on, and its
//! final `.` of a mail then waits for the relay's delayed ACK, 40 ms a mail on Linux.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;

use super::{Mail, MailError, Mailer};

/// How long connecting, or one mail's exchange, may take before it counts as a transient failure.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Open connections kept for the next mails; more run at once when more mails are out.
const IDLE: usize = 16;
/// A connection idle longer than this is checked (`NOOP`) before it carries a mail: the relay
/// may have closed it.
const CHECK_AFTER: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Smtp {
    host: String,
    port: u16,
    idle: Arc<Mutex<Vec<(Instant, AsyncSmtpConnection)>>>,
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
        Ok(Self {
            host: host.to_owned(),
            port,
            idle: Arc::default(),
        })
    }

    /// An open connection: an idle one that still answers, else a new one.
    async fn connection(&self) -> Result<AsyncSmtpConnection, MailError> {
        loop {
            let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some((since, mut conn)) = pooled else {
                break;
            };
            if since.elapsed() < CHECK_AFTER
                || tokio::time::timeout(TIMEOUT, conn.test_connected())
                    .await
                    .unwrap_or(false)
            {
                return Ok(conn);
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.abort()).await;
        }
        let transient = |what: &str, e: &dyn std::fmt::Display| {
            MailError::Transient(format!(
                "{what} the SMTP relay {}:{}: {e}",
                self.host, self.port
            ))
        };
        let stream = tokio::time::timeout(
            TIMEOUT,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|e| transient("connecting to", &e))?
        .map_err(|e| transient("connecting to", &e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| transient("setting TCP_NODELAY towards", &e))?;
        tokio::time::timeout(
            TIMEOUT,
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &ClientId::default()),
        )
        .await
        .map_err(|e| transient("greeting", &e))?
        .map_err(|e| transient("greeting", &e))
    }

    /// Sends one built message on a pooled connection; a connection that failed is closed.
    async fn deliver(&self, message: &Message) -> Result<(), MailError> {
        let mut conn = self.connection().await?;
        let sent =
            tokio::time::timeout(TIMEOUT, conn.send(message.envelope(), &message.formatted()))
                .await;
        match sent {
            Ok(Ok(_)) => {
                if let Ok(mut idle) = self.idle.lock()
                    && idle.len() < IDLE
                {
                    idle.push((Instant::now(), conn));
                }
                Ok(())
            }
            Ok(Err(e)) => {
                // lettre has closed the session already (every failed step aborts it).
                if e.is_permanent() {
                    Err(MailError::Permanent(e.to_string()))
                } else {
                    Err(MailError::Transient(e.to_string()))
                }
            }
            Err(_) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.abort()).await;
                Err(MailError::Transient(format!(
                    "the SMTP relay {}:{} did not answer within {TIMEOUT:?}",
                    self.host, self.port
                )))
            }
        }
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
        self.deliver(&message).await
    }
}
