//! Group commit: appends made at the same time share one transaction, so one disk flush
//! acknowledges them all. Durability is the adapter's own: nobody is answered before the
//! commit that holds their events. Two writers take batches in turn: an append waits for no
//! more than the commit in progress, and whatever arrives meanwhile forms the next batch.

use std::sync::Arc;

use async_trait::async_trait;
use sagaflow_domain::Envelope;
use tokio::sync::{mpsc, oneshot};

use super::{
    AppendError, AppendRequest, Appended, EventLog, IdempotencyRecord, OutboxRow, Positioned,
    StoreError,
};

/// The most appends one commit takes.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<Appended, AppendError>>;

/// An [`EventLog`] whose appends are committed in groups by one writer task.
pub struct GroupCommit {
    inner: Arc<dyn EventLog>,
    queue: mpsc::Sender<(AppendRequest, Reply)>,
}

impl GroupCommit {
    /// Starts the writer task (on the current Tokio runtime); it stops once this is dropped.
    pub fn new(inner: Arc<dyn EventLog>) -> Self {
        let (queue, jobs) = mpsc::channel(MAX_BATCH * 4);
        let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
        for _ in 0..WRITERS {
            tokio::spawn(write(inner.clone(), jobs.clone()));
        }
        Self { inner, queue }
    }
}

/// Writers taking batches in turn: while one commits, the next gathers and checks its batch
/// (the adapter serialises only the end of each commit).
const WRITERS: usize = 2;

async fn write(
    log: Arc<dyn EventLog>,
    jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<(AppendRequest, Reply)>>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if jobs.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let (requests, replies): (Vec<AppendRequest>, Vec<Reply>) = batch.drain(..).unzip();
        let size = requests.len();
        let results = log.append_batch(requests).await;
        tracing::trace!(appends = size, "group commit");
        // A missing answer drops its reply, which the caller reports as unavailable.
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

#[async_trait]
impl EventLog for GroupCommit {
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let gone = || StoreError::Unavailable("the event log's writer stopped".into());
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((request, reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn append_batch(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Vec<Result<Appended, AppendError>> {
        self.inner.append_batch(requests).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
    ) -> Result<Vec<Envelope>, StoreError> {
        self.inner.read_stream(stream_id, from_version).await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<Positioned>, StoreError> {
        self.inner.read_all(after, limit).await
    }

    async fn find_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.find_idempotency_key(key).await
    }

    async fn pending_outbox(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.inner.pending_outbox(limit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
