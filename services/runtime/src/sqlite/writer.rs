//! One writer per embedded database: a thread of its own owns the file's write connection
//! (rusqlite: statements run in that thread, with no hand-off per statement), and every write
//! to the file is a job sent to it. The thread takes every job waiting, runs them in one
//! transaction (each in a savepoint, so one that fails leaves the others in), commits once,
//! and only then answers them: group commit for every writer of the file (commands, consumers,
//! the relay, the sender), one disk flush for the lot, and nobody told "done" before that
//! flush (`synchronous=FULL`).
//!
//! Reads do not go through it: a reader connection sees every commit once it returned (WAL).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

pub use rusqlite;
use rusqlite::Connection;
use tokio::sync::oneshot;

/// The most jobs one transaction takes.
const MAX_JOBS: usize = 512;

/// Why a job did not run or did not commit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct WriteError(pub String);

impl From<WriteError> for crate::event_log::StoreError {
    fn from(e: WriteError) -> Self {
        Self::Unavailable(e.0)
    }
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.to_string())
    }
}

/// What the thread calls once the transaction holding a job committed (`Ok`) or failed.
type Settle = Box<dyn FnOnce(Result<(), WriteError>) + Send>;

/// A job: runs against the connection (`Some`) and answers whether its writes stay, and how to
/// settle it; or is told it cannot run (`None`).
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Settle) + Send>;

enum Command {
    Job(Job),
    /// Finish what is queued, close the connection, answer.
    Close(oneshot::Sender<()>),
}

/// The handle to a database's writer thread (cheap to clone; the thread stops when the last
/// handle is dropped or [`Writer::close`] is called).
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Command>,
    path: PathBuf,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("path", &self.path).finish()
    }
}

/// Opens `path`'s write connection as every embedded database is opened: WAL,
/// `synchronous=FULL` (a commit that returned survives a crash or a power cut).
fn connect(path: &Path) -> Result<Connection, WriteError> {
    let conn = Connection::open(path)
        .map_err(|e| WriteError(format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // No checkpoint inside a commit (its jobs would wait for it to answer): the writer thread
    // checkpoints between transactions, after answering ([`write`]).
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA wal_autocheckpoint = 0;",
    )?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

impl Writer {
    /// Starts the writer of the database at `path` (created if missing).
    pub fn open(path: &Path) -> Result<Self, WriteError> {
        let conn = connect(path)?;
        let (queue, jobs) = mpsc::channel();
        let name = path
            .file_name()
            .map_or_else(|| "db".into(), |n| n.to_string_lossy().into_owned());
        std::thread::Builder::new()
            .name(format!("sqlite-writer-{name}"))
            .spawn(move || write(conn, jobs))
            .map_err(|e| WriteError(format!("starting the writer of {}: {e}", path.display())))?;
        Ok(Self {
            queue,
            path: path.to_path_buf(),
        })
    }

    /// Queues a job; one the writer will never see is told so at once.
    fn submit(&self, job: Job) {
        if let Err(mpsc::SendError(Command::Job(job))) = self.queue.send(Command::Job(job)) {
            drop(job(None));
        }
    }

    /// Runs `f` in the writer's next transaction and answers once that transaction committed.
    /// When `f` fails, its writes are rolled back (the other jobs of the transaction stay) and
    /// its error is the answer.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<WriteError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.run_committed(f, |value| value).await
    }

    /// Runs `f` for every item in the writer's next transaction, each item in a savepoint of
    /// its own (its writes stay when `keep` says so of its result), and answers one result per
    /// item once the transaction committed: a consumer's batch, or a group of commands, for one
    /// disk flush, one refused item leaving the others in. When the job itself fails, every
    /// item answers that failure, named by `context`.
    pub async fn run_each<I, T, E, F, K>(
        &self,
        context: &'static str,
        items: Vec<I>,
        f: F,
        keep: K,
    ) -> Vec<Result<T, E>>
    where
        I: Send + 'static,
        T: Send + 'static,
        E: From<WriteError> + Send + 'static,
        F: Fn(&Connection, &I) -> Result<T, E> + Send + 'static,
        K: Fn(&Result<T, E>) -> bool + Send + 'static,
    {
        let n = items.len();
        let done = self
            .run(move |conn| {
                let mut results = Vec::with_capacity(items.len());
                for item in &items {
                    results.push(savepoint(conn, |conn| f(conn, item), &keep)?);
                }
                Ok::<_, WriteError>(results)
            })
            .await;
        done.unwrap_or_else(|e| {
            let e = WriteError(format!("{context}: {e}"));
            (0..n).map(|_| Err(E::from(e.clone()))).collect()
        })
    }

    /// [`Self::run`], with `on_commit` called on the writer's thread the moment the
    /// transaction committed, before anyone is answered and before the next transaction: what
    /// it does happens in commit order (an in-memory index of what the file holds, say). It
    /// takes what `f` made and gives the answer.
    pub async fn run_committed<T, R, E, F, C>(&self, f: F, on_commit: C) -> Result<R, E>
    where
        T: Send + 'static,
        R: Send + 'static,
        E: From<WriteError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        C: FnOnce(T) -> R + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<R, E>>();
        self.submit(job(f, move |done: Result<T, E>| {
            let _ = reply.send(done.map(on_commit));
        }));
        answer.await.unwrap_or_else(|_| {
            Err(WriteError(format!("the writer of {} stopped", self.path.display())).into())
        })
    }

    /// Runs `f` in the writer's next transaction without waiting for it: for writes whose loss
    /// in a crash costs nothing but work done again (an ack: the message comes back, and
    /// consumers skip what they applied). A failure is logged.
    pub fn run_behind<F>(&self, what: &'static str, f: F)
    where
        F: FnOnce(&Connection) -> Result<(), WriteError> + Send + 'static,
    {
        let path = self.path.clone();
        self.submit(job(f, move |done: Result<(), WriteError>| {
            if let Err(e) = done {
                tracing::warn!(db = %path.display(), what, error = %e, "not written");
            }
        }));
    }

    /// Finishes the jobs queued, then closes the connection.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Command::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

/// A job that runs `f` and hands `done` its outcome: `f`'s error at once (its writes rolled
/// back), or its value once the transaction committed, or the writer's failure.
fn job<T, E, F, D>(f: F, done: D) -> Job
where
    T: Send + 'static,
    E: From<WriteError> + Send + 'static,
    F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    D: FnOnce(Result<T, E>) + Send + 'static,
{
    Box::new(move |conn| {
        let Some(conn) = conn else {
            done(Err(WriteError("the writer stopped".into()).into()));
            return (false, Box::new(|_| {}));
        };
        match f(conn) {
            Ok(value) => (
                true,
                Box::new(move |committed: Result<(), WriteError>| {
                    done(committed.map(|()| value).map_err(E::from));
                }),
            ),
            Err(e) => {
                done(Err(e));
                (false, Box::new(|_| {}))
            }
        }
    })
}

/// How often, at most, the write-ahead log is copied back into the database while writes go on.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// A passive checkpoint on the writer's own connection, between two transactions: nothing is
/// appended to the log meanwhile, so it copies the whole log back (unless a reader still reads
/// an older snapshot), and the next transaction starts the log again from its beginning. A
/// checkpoint in another thread never catches up with a writer that keeps committing: the log
/// then grows without end, every commit appends fresh pages the kernel must allocate and zero,
/// and every reader searches a larger index.
fn checkpoint(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "checkpointing a database");
    }
}

/// The writer thread: takes what is queued, one transaction for it, answers after the commit;
/// checkpoints at most every [`CHECKPOINT_EVERY`] while it writes, and once it falls idle.
fn write(conn: Connection, commands: mpsc::Receiver<Command>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_JOBS);
    let mut closing = None;
    let mut checkpointed = std::time::Instant::now();
    let mut dirty = false;
    loop {
        let first = if dirty {
            match commands.recv_timeout(CHECKPOINT_EVERY) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    checkpoint(&conn);
                    (checkpointed, dirty) = (std::time::Instant::now(), false);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match commands.recv() {
                Ok(first) => first,
                Err(_) => break,
            }
        };
        match first {
            Command::Job(job) => jobs.push(job),
            Command::Close(done) => closing = Some(done),
        }
        while closing.is_none() && jobs.len() < MAX_JOBS {
            match commands.try_recv() {
                Ok(Command::Job(job)) => jobs.push(job),
                Ok(Command::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if !jobs.is_empty() {
            transaction(&conn, &mut jobs);
            dirty = true;
            if checkpointed.elapsed() >= CHECKPOINT_EVERY {
                checkpoint(&conn);
                (checkpointed, dirty) = (std::time::Instant::now(), false);
            }
        }
        if let Some(done) = closing.take() {
            if dirty {
                checkpoint(&conn);
            }
            drop(conn);
            let _ = done.send(());
            // Jobs sent after the close fail: their senders see the queue gone.
            return;
        }
    }
    if dirty {
        checkpoint(&conn);
    }
}

/// Runs `jobs` in one transaction, each in a savepoint, commits, settles them.
fn transaction(conn: &Connection, jobs: &mut Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::warn!(error = %e, "a writer could not begin a transaction");
        for job in jobs.drain(..) {
            let (_, settle) = job(None);
            settle(Err(WriteError(e.to_string())));
        }
        return;
    }
    let mut settles = Vec::with_capacity(jobs.len());
    for job in jobs.drain(..) {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            let (_, settle) = job(None);
            settle(Err(WriteError(e.to_string())));
            continue;
        }
        // A job that panics (it must not) loses its own answer, not the writer.
        let Ok((keep, settle)) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Some(conn))))
        else {
            tracing::error!("a write job panicked; its writes are rolled back");
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            continue;
        };
        let closed = if keep {
            conn.execute_batch("RELEASE job")
        } else {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")
        };
        match closed {
            Ok(()) => settles.push((keep, settle)),
            Err(e) => settle(Err(WriteError(e.to_string()))),
        }
    }
    let committed = conn
        .execute_batch("COMMIT")
        .map_err(|e| WriteError(format!("committing: {e}")));
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for (keep, settle) in settles {
        // A job that failed answered already; its settle does nothing.
        settle(if keep { committed.clone() } else { Ok(()) });
    }
}

/// Runs `f` in a savepoint of the current transaction: its writes stay when `keep` says so of
/// its result, and are rolled back otherwise. For a job that handles a batch and must leave
/// the items it refuses out.
pub fn savepoint<T, E>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, E>,
    keep: impl FnOnce(&Result<T, E>) -> bool,
) -> Result<Result<T, E>, WriteError> {
    conn.execute_batch("SAVEPOINT item")?;
    let result = f(conn);
    if keep(&result) {
        conn.execute_batch("RELEASE item")?;
    } else {
        conn.execute_batch("ROLLBACK TO item; RELEASE item")?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(path: &Path) -> i64 {
        let c = Connection::open(path).expect("open");
        c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    #[tokio::test]
    async fn a_failed_job_leaves_the_others_of_its_transaction_in() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let w = Writer::open(&path).expect("open");
        w.run(|c| {
            c.execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY)")
                .map_err(WriteError::from)
        })
        .await
        .expect("schema");
        let jobs = (0..50).map(|i| {
            let w = w.clone();
            async move {
                w.run(move |c| {
                    c.execute("INSERT INTO t (v) VALUES (?1)", [i % 40])
                        .map_err(WriteError::from)
                })
                .await
            }
        });
        let results = futures::future::join_all(jobs).await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 40);
        assert_eq!(
            results.iter().filter(|r| r.is_err()).count(),
            10,
            "duplicates refused"
        );
        w.close().await;
        assert_eq!(count(&path), 40, "every answered job is on disk");
    }

    #[tokio::test]
    async fn a_write_behind_lands_before_a_later_job_answers() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let w = Writer::open(&path).expect("open");
        w.run(|c| {
            c.execute_batch("CREATE TABLE t (v INTEGER)")
                .map_err(WriteError::from)
        })
        .await
        .expect("schema");
        w.run_behind("test", |c| {
            c.execute("INSERT INTO t (v) VALUES (1)", [])
                .map(|_| ())
                .map_err(WriteError::from)
        });
        w.run(|c| {
            Ok::<_, WriteError>(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))?)
        })
        .await
        .map(|n| assert_eq!(n, 1))
        .expect("read");
        w.close().await;
        let after = w
            .run(|_| Ok::<_, WriteError>(()))
            .await
            .expect_err("closed");
        assert!(after.0.contains("stopped"), "{after}");
    }

    #[tokio::test]
    async fn a_savepoint_rolls_back_what_it_does_not_keep() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let w = Writer::open(&path).expect("open");
        w.run(|c| {
            c.execute_batch("CREATE TABLE t (v INTEGER)")?;
            for v in 0..4 {
                savepoint(
                    c,
                    |c| c.execute("INSERT INTO t (v) VALUES (?1)", [v]).map(|_| v),
                    |r| r.as_ref().is_ok_and(|v| v % 2 == 0),
                )??;
            }
            Ok::<_, WriteError>(())
        })
        .await
        .expect("job");
        w.close().await;
        assert_eq!(count(&path), 2);
    }
}
