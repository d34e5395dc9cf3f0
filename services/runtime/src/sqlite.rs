//! Opening embedded SQLite databases: WAL, `synchronous=FULL` (an acknowledged commit survives
//! `kill -9` and power loss), one writer connection and a few readers.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// A database file with a single-connection writer pool (so writers never fight over the lock)
/// and a reader pool.
#[derive(Debug, Clone)]
pub struct Db {
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
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        for &schema in schemas {
            sqlx::raw_sql(schema).execute(&writer).await?;
        }
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader })
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
        self.reader.close().await;
        self.writer.close().await;
    }
}
