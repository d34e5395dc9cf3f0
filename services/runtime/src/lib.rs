//! What every sagaflow service stands on: ports with their adapters, and the shared plumbing.
//!
//! - [`event_log`]: the event log port (events + outbox rows, atomically), its embedded SQLite
//!   adapter and its conformance suite.
//! - [`bus`]: the message bus port (RabbitMQ's semantics), its embedded adapter and conformance suite.
//! - [`streams`]: the stream log port (Redis Streams' semantics), its embedded adapter and conformance suite.
//! - [`outbox`], [`relay`]: the transactional outbox and the relay that publishes it.
//! - [`consumer`], [`inbox`]: the consumer loop (retries, dead letters) and idempotent handling.
//! - [`sqlite`]: opening an embedded database safely.
//! - [`http`]: the contract's errors, strict JSON bodies, request context, health and metrics routes.
//! - [`metrics`]: the Prometheus registry of a service.
//! - [`config`]: settings from the environment, errors naming the variable, URL redaction.
//! - [`telemetry`]: JSON log lines with the request's fields.
//! - [`trace`]: spans linked across services by `traceparent`, exported over OTLP.
//! - [`shutdown`]: SIGTERM and Ctrl-C.

pub mod bus;
pub mod config;
pub mod consumer;
pub mod event_log;
pub mod http;
pub mod inbox;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod postgres;
pub mod relay;
pub mod shutdown;
pub mod sqlite;
pub mod streams;
pub mod tasks;
pub mod telemetry;
pub mod trace;

/// `Result::is_ok` as a function, for [`in_savepoints!`].
pub fn result_is_ok<T, E>(r: &Result<T, E>) -> bool {
    r.is_ok()
}

/// Runs `$body` for every item of `$items` inside the open transaction `$tx`, each in its own
/// savepoint (rolled back when its result is an error, so one refused item leaves the others
/// in), then commits: a batch of consumer effects for one disk flush. Evaluates to
/// `Ok(results)`, one per item in order, or `Err(sqlx::Error)` when the transaction broke or
/// did not commit (then nothing of it is stored).
///
/// ```text
/// let results = in_savepoints!(pool.begin().await?, events, |conn, event| record_in(conn, event));
/// ```
#[macro_export]
macro_rules! in_savepoints {
    ($tx:expr, $items:expr, |$conn:ident, $item:ident| $body:expr) => {
        $crate::in_savepoints!(
            $tx,
            $items,
            |$conn, $item| $body,
            keep = $crate::result_is_ok
        )
    };
    // `keep` says which results keep their writes (by default the `Ok` ones).
    ($tx:expr, $items:expr, |$conn:ident, $item:ident| $body:expr, keep = $keep:expr) => {{
        let mut tx = $tx;
        let mut results = Vec::new();
        let mut broken = None;
        for $item in $items {
            let mut savepoint = match sqlx::Connection::begin(&mut *tx).await {
                Ok(sp) => sp,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            };
            let result = {
                let $conn = &mut *savepoint;
                $body.await
            };
            let settled = if ($keep)(&result) {
                savepoint.commit().await
            } else {
                savepoint.rollback().await
            };
            if let Err(e) = settled {
                broken = Some(e);
                break;
            }
            results.push(result);
        }
        match broken {
            Some(e) => Err(e),
            None => tx.commit().await.map(|()| results),
        }
    }};
}
