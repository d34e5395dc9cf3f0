//! Opening embedded SQLite databases: WAL, `synchronous=FULL` (an acknowledged commit survives
//! `kill -9` and power loss), one writer connection and a few readers.
//!
//! - [`writer`]: the writer thread every write of a database goes through, group-committed.

pub mod writer;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// A database file: its writer thread ([`writer::Writer`]: every write of the hot paths, group
/// committed), a single-connection sqlx writer pool (schemas, migrations and the rare writes),
/// and a reader pool.
#[derive(Debug, Clone)]
pub struct Db {
    pub jobs: writer::Writer,
    pub writer: SqlitePool,
    pub reader: SqlitePool,
}

impl Db {
    /// Opens (creating it if needed) the database at `path` and runs each schema on it.
    pub async fn open(path: &Path, schemas: &[&'static str]) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        Self::connect(options, schemas).await
    }

    /// Opens a `sqlite://` URL (as `DATABASE_URL` gives it).
    pub async fn open_url(url: &str, schemas: &[&'static str]) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        Self::connect(options, schemas).await
    }

    async fn connect(
        options: SqliteConnectOptions,
        schemas: &[&'static str],
    ) -> Result<Self, sqlx::Error> {
        // A local file does not go away under an open connection: no ping before each use
        // (it would cost one more round trip to the connection's thread per acquire).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone().pragma("cache_size", "-256"))
            .await?;
        for &schema in schemas {
            sqlx::raw_sql(schema).execute(&writer).await?;
        }
        let file = options.get_filename().to_path_buf();
        let jobs =
            writer::Writer::open(&file).map_err(|e| sqlx::Error::Configuration(e.0.into()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true).pragma("cache_size", "-256"))
            .await?;
        Ok(Self {
            jobs,
            writer,
            reader,
        })
    }

    /// Adds a column to a table made by an earlier version (`CREATE TABLE IF NOT EXISTS`
    /// leaves an existing table as it was); nothing when it is there already.
    pub async fn add_column(
        &self,
        table: &str,
        column: &str,
        declaration: &str,
    ) -> Result<(), sqlx::Error> {
        let present: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?")
                .bind(table)
                .bind(column)
                .fetch_one(&self.writer)
                .await?;
        if present == 0 {
            // Names from the code, never from outside.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE {table} ADD COLUMN {column} {declaration}"
            )))
            .execute(&self.writer)
            .await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.jobs.close().await;
        self.reader.close().await;
        self.writer.close().await;
    }
}
