//! Opening PostgreSQL: one schema per service (its tables live there, `search_path` points at
//! it), and migrations embedded in the binary, applied once each, in order, under a lock.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// How long a pooled connection may sit idle before it is pinged on its next use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// A numbered migration.
pub type Migration = (i64, &'static str);

/// Connects to `url` with `schema` as the search path, creating the schema and applying the
/// migrations not applied yet.
pub async fn open(
    url: &str,
    schema: &str,
    migrations: &[Migration],
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    if schema.is_empty()
        || !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(sqlx::Error::Configuration(
            format!("invalid schema name {schema:?}").into(),
        ));
    }
    let options = PgConnectOptions::from_str(url)?.options([("search_path", schema)]);
    // One plain connection first, so that a server that is not there fails at once instead of
    // after the pool's acquire timeout.
    sqlx::Connection::close(
        <sqlx::PgConnection as sqlx::Connection>::connect_with(&options).await?,
    )
    .await?;
    // A connection that sat idle may have been cut (a server restart, a proxy's timeout):
    // ping it before use. One in steady use is not pinged: a round trip per acquire would cost
    // as much as the statement it serves.
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_BEFORE_PING {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    let mut tx = pool.begin().await?;
    // One process migrates at a time; the others wait, then find nothing to do.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sagaflow-migrations'))")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; CREATE TABLE IF NOT EXISTS {schema}._migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());"
    )))
    .execute(&mut *tx)
    .await?;
    for (version, sql) in migrations {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM _migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_none() {
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO _migrations (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(pool)
}
