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

/// Runs `$body` for every item of `$items` in one transaction begun by `$begin` (an
/// expression giving a future of `Result<Transaction, sqlx::Error>`; it may be evaluated
/// twice), then commits: a batch of effects for one disk flush. One refused item (a result
/// `keep` says no to) must leave the others in, so:
///
/// - first, every item runs straight in the transaction (no savepoints: two statements fewer
///   per item); when every result is kept, that transaction commits;
/// - otherwise it is rolled back and the batch runs again in a new transaction, each item in
///   its own savepoint, rolled back when its result is not kept.
///
/// The bodies must have no effect outside the transaction (they may run twice). Evaluates to
/// `Ok(results)`, one per item in order, or `Err(sqlx::Error)` when a transaction broke or did
/// not commit (then nothing of it is stored).
///
/// ```text
/// let results = in_savepoints!(begin = pool.begin(), events, |conn, event| record_in(conn, event));
/// ```
#[macro_export]
macro_rules! in_savepoints {
    (begin = $begin:expr, $items:expr, |$conn:ident, $item:ident| $body:expr) => {
        $crate::in_savepoints!(
            begin = $begin,
            $items,
            |$conn, $item| $body,
            keep = $crate::result_is_ok
        )
    };
    // `keep` says which results keep their writes (by default the `Ok` ones).
    (begin = $begin:expr, $items:expr, |$conn:ident, $item:ident| $body:expr, keep = $keep:expr) => {{
        let straight = async {
            let mut tx = $begin.await?;
            let mut results = Vec::new();
            for $item in $items {
                let result = {
                    let $conn = &mut *tx;
                    $body.await
                };
                if !($keep)(&result) {
                    tx.rollback().await?;
                    return Ok(None);
                }
                results.push(result);
            }
            tx.commit().await.map(|()| Some(results))
        }
        .await;
        match straight {
            Ok(Some(results)) => Ok(results),
            Err(e) => Err(e),
            Ok(None) => {
                async {
                    let mut tx = $begin.await?;
                    let mut results = Vec::new();
                    for $item in $items {
                        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
                        let result = {
                            let $conn = &mut *savepoint;
                            $body.await
                        };
                        if ($keep)(&result) {
                            savepoint.commit().await?;
                        } else {
                            savepoint.rollback().await?;
                        }
                        results.push(result);
                    }
                    tx.commit().await.map(|()| results)
                }
                .await
            }
        }
    }};
}
