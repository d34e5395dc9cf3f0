//! Settings read once from the environment (SPEC section 2). Every problem names its variable;
//! no password ever reaches a message.

use std::io::IsTerminal;

use axum::http::HeaderName;

/// A variable that is malformed or missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

fn bad(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// What every service reads.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub correlation_header: HeaderName,
    pub port: Option<u16>,
    /// Where traces go (OTLP over HTTP), when `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` names a collector; `None`: no export.
    pub traces: Option<TraceExport>,
}

/// The OTLP trace export settings checked at start; the exporter itself reads the standard
/// `OTEL_EXPORTER_OTLP_*` variables (endpoint, protocol, headers, timeout) and
/// `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// The variable that named the endpoint, and its value.
    pub var: &'static str,
    pub endpoint: String,
}

/// Reads the standard OpenTelemetry variables: traces are exported when an endpoint is set
/// (and `OTEL_SDK_DISABLED` is not `true`, `OTEL_TRACES_EXPORTER` not `none`), over OTLP/HTTP
/// only: `http://` endpoints, protocol `http/protobuf` (the default) or `http/json`.
pub fn trace_export(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<TraceExport>, ConfigError> {
    if var(env, "OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match var(env, "OTEL_TRACES_EXPORTER")
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(bad(
                "OTEL_TRACES_EXPORTER",
                format!("expected otlp or none, got {other:?}"),
            ));
        }
    }
    let Some((name, endpoint)) = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|n| var(env, n).map(|v| (n, v.trim().to_owned()))) else {
        return Ok(None);
    };
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return Err(bad(
            name,
            format!(
                "expected an http:// URL of an OTLP/HTTP collector (such as http://otel-collector:4318), got {:?}",
                redact(&endpoint)
            ),
        ));
    };
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(p) = var(env, name) {
            match p.trim() {
                "http/protobuf" | "http/json" => break,
                other => {
                    return Err(bad(
                        name,
                        format!(
                            "expected http/protobuf or http/json (OTLP over HTTP, port 4318), got {other:?}"
                        ),
                    ));
                }
            }
        }
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad(name, format!("{:?} names no host", redact(&endpoint))));
    }
    Ok(Some(TraceExport {
        var: name,
        endpoint,
    }))
}

/// Reads a variable; an empty value counts as unset.
pub fn var(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

impl CommonSettings {
    /// Reads `LOG_LEVEL`, `LOG_FORMAT`, `CORRELATION_ID_HEADER` and `PORT`.
    /// `LOG_FORMAT` defaults to `pretty` on a terminal and `json` elsewhere (containers).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let log_level = match var(env, "LOG_LEVEL")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("info") => LogLevel::Info,
            Some("debug") => LogLevel::Debug,
            Some("warn") => LogLevel::Warn,
            Some("error") => LogLevel::Error,
            Some(other) => {
                return Err(bad(
                    "LOG_LEVEL",
                    format!("expected debug, info, warn or error, got {other:?}"),
                ));
            }
        };
        let log_format = match var(env, "LOG_FORMAT")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None if std::io::stderr().is_terminal() => LogFormat::Pretty,
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                return Err(bad(
                    "LOG_FORMAT",
                    format!("expected json or pretty, got {other:?}"),
                ));
            }
        };
        let header = var(env, "CORRELATION_ID_HEADER").unwrap_or_else(|| "X-Correlation-ID".into());
        let correlation_header = HeaderName::try_from(header.trim()).map_err(|_| {
            bad(
                "CORRELATION_ID_HEADER",
                format!("{header:?} is not a valid header name"),
            )
        })?;
        let port = var(env, "PORT")
            .map(|p| {
                p.trim()
                    .parse::<u16>()
                    .map_err(|_| bad("PORT", format!("expected a port number 0-65535, got {p:?}")))
            })
            .transpose()?;
        Ok(Self {
            log_level,
            log_format,
            correlation_header,
            port,
            traces: trace_export(env)?,
        })
    }
}

/// Parses a duration such as `500ms`, `30s`, `15m`, `1h` or `2d` (a bare number is seconds).
pub fn duration(var: &'static str, value: &str) -> Result<std::time::Duration, ConfigError> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        bad(
            var,
            format!("expected a duration such as 500ms, 30s, 15m or 1h, got {value:?}"),
        )
    })?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(bad(
                var,
                format!("unknown unit {unit:?} in {value:?}; use ms, s, m, h or d"),
            ));
        }
    };
    Ok(std::time::Duration::from_millis(n.saturating_mul(ms)))
}

/// Where a service keeps its relational state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://path` (the embedded store).
    Sqlite(String),
    /// `postgres://user:password@host:port/database`.
    Postgres(String),
}

/// Parses `DATABASE_URL`.
pub fn database_url(value: &str) -> Result<DatabaseUrl, ConfigError> {
    let value = value.trim();
    match value.split_once("://").map(|(scheme, _)| scheme) {
        Some("sqlite") => Ok(DatabaseUrl::Sqlite(value.to_owned())),
        Some("postgres" | "postgresql") if host_of(value).is_some() => {
            Ok(DatabaseUrl::Postgres(value.to_owned()))
        }
        _ => Err(bad(
            "DATABASE_URL",
            format!(
                "expected postgres://USER@HOST:PORT/DATABASE or sqlite://PATH, got {:?}",
                redact(value)
            ),
        )),
    }
}

/// The host of `scheme://[user[:password]@]host[:port][/…]`, if there is one.
fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    (!host.is_empty()).then_some(host)
}

/// Checks a backend URL: one of `schemes`, with a host. The error names `var` and never
/// shows the password.
pub fn backend_url(
    var: &'static str,
    value: &str,
    schemes: &[&str],
) -> Result<String, ConfigError> {
    let value = value.trim();
    let scheme = value.split_once("://").map(|(s, _)| s);
    if scheme.is_some_and(|s| schemes.contains(&s)) && host_of(value).is_some() {
        return Ok(value.to_owned());
    }
    Err(bad(
        var,
        format!(
            "expected {}://HOST…, got {:?}",
            schemes.join("|"),
            redact(value)
        ),
    ))
}

/// A URL with its password (if any) replaced by `***`, fit for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults() {
        let s = CommonSettings::from_env(&env(&[("LOG_FORMAT", "json")])).unwrap();
        assert_eq!(
            (s.log_level, s.log_format, s.port),
            (LogLevel::Info, LogFormat::Json, None)
        );
        assert_eq!(s.correlation_header.as_str(), "x-correlation-id");
    }

    #[test]
    fn every_malformed_value_names_its_variable() {
        for (pairs, var) in [
            (&[("LOG_LEVEL", "loud")][..], "LOG_LEVEL"),
            (&[("LOG_FORMAT", "xml")][..], "LOG_FORMAT"),
            (&[("PORT", "70000")][..], "PORT"),
            (&[("PORT", "http")][..], "PORT"),
            (
                &[("CORRELATION_ID_HEADER", "bad header")][..],
                "CORRELATION_ID_HEADER",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")][..],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318")][..],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://")][..],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ][..],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                &[("OTEL_TRACES_EXPORTER", "jaeger")][..],
                "OTEL_TRACES_EXPORTER",
            ),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = pairs;
            let err = CommonSettings::from_env(&env(pairs)).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().starts_with(var));
        }
    }

    #[test]
    fn traces_are_exported_only_when_an_endpoint_is_named() {
        assert_eq!(trace_export(&env(&[])).unwrap(), None);
        // A protocol alone (set cluster-wide, say) exports nothing and stops nothing.
        assert_eq!(
            trace_export(&env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).unwrap(),
            None
        );
        let named = trace_export(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (named.var, named.endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")
        );
        let traces_first = trace_export(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://t:4318/v1/traces",
            ),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(traces_first.var, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = Box::leak(
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), off].into_boxed_slice(),
            );
            assert_eq!(trace_export(&env(pairs)).unwrap(), None, "{off:?}");
        }
        let secret = trace_export(&env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://u:hunter2@c",
        )]))
        .unwrap_err();
        assert!(!secret.to_string().contains("hunter2"), "{secret}");
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(duration("X", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("X", "15m").unwrap(), Duration::from_secs(900));
        assert_eq!(duration("X", "2").unwrap(), Duration::from_secs(2));
        assert_eq!(duration("X", "1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(duration("X", "soon").unwrap_err().var, "X");
        assert!(duration("X", "5y").is_err());
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            database_url("sqlite:///tmp/x.db").unwrap(),
            DatabaseUrl::Sqlite("sqlite:///tmp/x.db".into())
        );
        assert_eq!(
            database_url("postgres://u:hunter2@db/app").unwrap(),
            DatabaseUrl::Postgres("postgres://u:hunter2@db/app".into())
        );
        let err = database_url("postgres://u:hunter2@/app").unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = backend_url("RABBITMQ_URL", "http://guest:hunter2@h", &["amqp"]).unwrap_err();
        assert_eq!(err.var, "RABBITMQ_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(backend_url("REDIS_URL", "redis://127.0.0.1:6379/0", &["redis"]).is_ok());
        assert!(database_url("not a url").is_err());
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(
            redact("amqp://user:secret@host:5672/vh"),
            "amqp://user:***@host:5672/vh"
        );
        assert_eq!(redact("redis://host:6379/0"), "redis://host:6379/0");
        assert_eq!(redact("postgres://u@h/db?x=1"), "postgres://u@h/db?x=1");
        assert_eq!(redact("mongodb://a:p@ss@h/db"), "mongodb://a:***@h/db");
    }
}
