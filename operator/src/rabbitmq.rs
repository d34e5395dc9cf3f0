//! RabbitMQ through its management HTTP API: exchanges, queues, bindings and policies declared
//! idempotently, read back, and removed. Credentials travel as basic auth, never in a URL, so no
//! error message carries a password.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::desired::Policy;

/// Why RabbitMQ did not do what was asked; each maps to a condition reason.
#[derive(Debug, thiserror::Error)]
pub enum RabbitError {
    #[error("{0}")]
    BadUrl(String),
    #[error("RabbitMQ's management API does not answer: {0}")]
    Unreachable(String),
    #[error("RabbitMQ refused the credentials of the Secret: {0}")]
    Unauthorized(String),
    #[error("RabbitMQ refused: {0}")]
    Refused(String),
}

impl RabbitError {
    /// The condition reason, PascalCase.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadUrl(_) => "InvalidRabbitMQUrl",
            Self::Unreachable(_) => "RabbitMQUnreachable",
            Self::Unauthorized(_) => "RabbitMQUnauthorized",
            Self::Refused(_) => "RabbitMQRefused",
        }
    }
}

/// A binding as the management API lists it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Binding {
    pub source: String,
    pub routing_key: String,
    pub properties_key: String,
}

/// One virtual host of one broker.
#[derive(Clone, Debug)]
pub struct Rabbit {
    http: reqwest::Client,
    base: Url,
    user: String,
    password: String,
    vhost: String,
}

/// Percent-decoding of a URL part (`%2f` → `/`); a malformed escape is kept as it is.
fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2))
            && let (Some(h), Some(l)) = (hex(h), hex(l))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Rabbit {
    /// From the AMQP URL (`amqp://user:password@host:5672/vhost`) and, when given, the
    /// management API's URL (`http://user:password@host:15672`); without it the management API
    /// is taken at the AMQP host's port 15672 with the AMQP credentials.
    pub fn new(amqp: &str, management: Option<&str>) -> Result<Self, RabbitError> {
        let amqp_url = Url::parse(amqp.trim()).map_err(|e| {
            RabbitError::BadUrl(format!(
                "the RabbitMQ URL is not a URL ({e}); expected amqp://user:password@host:5672/vhost"
            ))
        })?;
        if !matches!(amqp_url.scheme(), "amqp" | "amqps") {
            return Err(RabbitError::BadUrl(format!(
                "the RabbitMQ URL's scheme is {:?}; expected amqp or amqps",
                amqp_url.scheme()
            )));
        }
        let host = amqp_url
            .host_str()
            .ok_or_else(|| RabbitError::BadUrl("the RabbitMQ URL names no host".into()))?
            .to_owned();
        let path = amqp_url.path().trim_start_matches('/');
        let vhost = if path.is_empty() {
            "/".to_owned()
        } else {
            decode(path)
        };
        let (mut user, mut password) = match amqp_url.username() {
            "" => ("guest".to_owned(), "guest".to_owned()),
            u => (decode(u), decode(amqp_url.password().unwrap_or_default())),
        };
        let base = match management {
            Some(m) => {
                let url = Url::parse(m.trim()).map_err(|e| {
                    RabbitError::BadUrl(format!(
                        "the RabbitMQ management URL is not a URL ({e}); expected http://user:password@host:15672"
                    ))
                })?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(RabbitError::BadUrl(format!(
                        "the RabbitMQ management URL's scheme is {:?}; expected http or https",
                        url.scheme()
                    )));
                }
                if !url.username().is_empty() {
                    user = decode(url.username());
                    password = decode(url.password().unwrap_or_default());
                }
                let mut clean = url.clone();
                let _ = clean.set_username("");
                let _ = clean.set_password(None);
                clean
            }
            // TLS to the broker means TLS to its management API too (port 15671).
            None if amqp_url.scheme() == "amqps" => {
                Url::parse(&format!("https://{host}:15671/"))
                    .map_err(|e| RabbitError::BadUrl(format!("the RabbitMQ host: {e}")))?
            }
            None => Url::parse(&format!("http://{host}:15672/"))
                .map_err(|e| RabbitError::BadUrl(format!("the RabbitMQ host: {e}")))?,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| RabbitError::Unreachable(format!("an HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            user,
            password,
            vhost,
        })
    }

    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    fn url(&self, segments: &[&str]) -> Result<Url, RabbitError> {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| {
                RabbitError::BadUrl("the management URL cannot take a path".into())
            })?;
            path.pop_if_empty();
            path.push("api");
            for s in segments {
                path.push(s);
            }
        }
        Ok(url)
    }

    fn scrub(&self, text: String) -> String {
        if self.password.is_empty() {
            text
        } else {
            text.replace(&self.password, "***")
        }
    }

    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<(StatusCode, String), RabbitError> {
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .basic_auth(&self.user, Some(&self.password));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            RabbitError::Unreachable(self.scrub(format!("{method} {}: {e}", url.path())))
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(RabbitError::Unauthorized(self.scrub(format!(
                    "{status} for user {:?} on {}",
                    self.user,
                    url.path()
                ))))
            }
            // The body of a 5xx is left out: it varies from call to call, and a condition
            // message that changes every time would rewrite the status on every reconcile.
            s if s.is_server_error() => Err(RabbitError::Unreachable(format!(
                "{method} {}: {s}",
                url.path()
            ))),
            s => Ok((s, text)),
        }
    }

    async fn expect_ok(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
    ) -> Result<(), RabbitError> {
        let url = self.url(segments)?;
        let (status, text) = self.call(method.clone(), url.clone(), body).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(RabbitError::Refused(
                self.scrub(format!("{method} {}: {status} {text}", url.path())),
            ))
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<Option<T>, RabbitError> {
        let url = self.url(segments)?;
        let (status, text) = self.call(Method::GET, url.clone(), None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(RabbitError::Refused(format!(
                "GET {}: {status} {text}",
                url.path()
            )));
        }
        serde_json::from_str(&text).map(Some).map_err(|e| {
            RabbitError::Refused(format!("GET {}: an unexpected answer: {e}", url.path()))
        })
    }

    /// Checks the credentials and that the virtual host exists.
    pub async fn check(&self) -> Result<(), RabbitError> {
        match self.get_json::<Value>(&["vhosts", &self.vhost]).await? {
            Some(_) => Ok(()),
            None => Err(RabbitError::Refused(format!(
                "the virtual host {:?} does not exist (create it, or fix the URL's path)",
                self.vhost
            ))),
        }
    }

    /// A durable topic exchange.
    pub async fn declare_exchange(&self, name: &str) -> Result<(), RabbitError> {
        self.expect_ok(
            Method::PUT,
            &["exchanges", &self.vhost, name],
            Some(json!({"type": "topic", "durable": true, "auto_delete": false, "internal": false, "arguments": {}})),
        )
        .await
    }

    /// A durable queue with the arguments the services declare it with (they must agree, or the
    /// broker refuses the second declaration).
    pub async fn declare_queue(&self, name: &str, arguments: Value) -> Result<(), RabbitError> {
        self.expect_ok(
            Method::PUT,
            &["queues", &self.vhost, name],
            Some(json!({"durable": true, "auto_delete": false, "arguments": arguments})),
        )
        .await
    }

    /// The queue's bindings from named exchanges (the default exchange's implicit one left out).
    pub async fn bindings(&self, queue: &str) -> Result<Vec<Binding>, RabbitError> {
        Ok(self
            .get_json::<Vec<Binding>>(&["queues", &self.vhost, queue, "bindings"])
            .await?
            .unwrap_or_default()
            .into_iter()
            .filter(|b| !b.source.is_empty())
            .collect())
    }

    pub async fn bind(&self, exchange: &str, queue: &str, key: &str) -> Result<(), RabbitError> {
        self.expect_ok(
            Method::POST,
            &["bindings", &self.vhost, "e", exchange, "q", queue],
            Some(json!({"routing_key": key, "arguments": {}})),
        )
        .await
    }

    pub async fn unbind(&self, queue: &str, binding: &Binding) -> Result<(), RabbitError> {
        self.expect_ok(
            Method::DELETE,
            &[
                "bindings",
                &self.vhost,
                "e",
                &binding.source,
                "q",
                queue,
                &binding.properties_key,
            ],
            None,
        )
        .await
    }

    pub async fn put_policy(&self, policy: &Policy) -> Result<(), RabbitError> {
        self.expect_ok(
            Method::PUT,
            &["policies", &self.vhost, &policy.name],
            Some(json!({"pattern": policy.pattern, "definition": policy.definition, "priority": 10, "apply-to": "queues"})),
        )
        .await
    }

    /// The policy `name`'s definition, if it exists.
    pub async fn policy(&self, name: &str) -> Result<Option<Value>, RabbitError> {
        Ok(self
            .get_json::<Value>(&["policies", &self.vhost, name])
            .await?
            .map(|p| p["definition"].clone()))
    }

    pub async fn delete_policy(&self, name: &str) -> Result<(), RabbitError> {
        self.delete(&["policies", &self.vhost, name], None)
            .await
            .map(|_| ())
    }

    /// The number of messages in `queue`, or None when it does not exist.
    pub async fn messages(&self, queue: &str) -> Result<Option<u64>, RabbitError> {
        Ok(self
            .get_json::<Value>(&["queues", &self.vhost, queue])
            .await?
            .map(|q| q["messages"].as_u64().unwrap_or(0)))
    }

    /// Deletes `queue`; with `if_empty`, a queue holding messages is kept and Ok(false) returned.
    pub async fn delete_queue(&self, queue: &str, if_empty: bool) -> Result<bool, RabbitError> {
        self.delete(
            &["queues", &self.vhost, queue],
            if_empty.then_some(("if-empty", "true")),
        )
        .await
    }

    pub async fn delete_exchange(&self, exchange: &str) -> Result<(), RabbitError> {
        self.delete(&["exchanges", &self.vhost, exchange], None)
            .await
            .map(|_| ())
    }

    /// Ok(true) when deleted or already gone, Ok(false) when a precondition kept it.
    async fn delete(
        &self,
        segments: &[&str],
        query: Option<(&str, &str)>,
    ) -> Result<bool, RabbitError> {
        let mut url = self.url(segments)?;
        if let Some((k, v)) = query {
            url.query_pairs_mut().append_pair(k, v);
        }
        let (status, text) = self.call(Method::DELETE, url.clone(), None).await?;
        match status {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(true),
            StatusCode::BAD_REQUEST if query.is_some() => Ok(false),
            s => Err(RabbitError::Refused(format!(
                "DELETE {}: {s} {text}",
                url.path()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_management_api_is_found_from_the_amqp_url() {
        let r = Rabbit::new("amqp://app:s3cr%40t@rabbit.mq:5672/%2fprod", None).expect("parsed");
        assert_eq!(r.base.as_str(), "http://rabbit.mq:15672/");
        assert_eq!(
            (r.user.as_str(), r.password.as_str(), r.vhost()),
            ("app", "s3cr@t", "/prod")
        );
        let default = Rabbit::new("amqp://h", None).expect("parsed");
        assert_eq!((default.user.as_str(), default.vhost()), ("guest", "/"));
        let tls = Rabbit::new("amqps://u:p@h/v", None).expect("parsed");
        assert_eq!(
            tls.base.as_str(),
            "https://h:15671/",
            "credentials never in clear text"
        );
        let url = r.url(&["queues", "/prod", "a.b"]).expect("a url");
        assert_eq!(url.path(), "/api/queues/%2Fprod/a.b");
    }

    #[test]
    fn a_management_url_overrides_host_and_credentials_and_keeps_none_in_the_url() {
        let r = Rabbit::new(
            "amqp://app:pw@h:5672/v",
            Some("https://admin:root@mgmt.example:443/rabbit/"),
        )
        .expect("parsed");
        assert_eq!(r.base.as_str(), "https://mgmt.example/rabbit/");
        assert_eq!((r.user.as_str(), r.password.as_str()), ("admin", "root"));
        assert_eq!(
            r.url(&["vhosts", "v"]).expect("url").path(),
            "/rabbit/api/vhosts/v"
        );
    }

    #[test]
    fn bad_urls_are_named_without_their_password() {
        for bad in ["http://u:hunter2@h", "not a url", "amqp://u:hunter2@/v"] {
            let e = Rabbit::new(bad, None).expect_err(bad).to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("RabbitMQ URL"), "{e}");
        }
    }
}
