//! Background tasks of a service (relay, consumers, workers), stopped together.
//!
//! Every task is safe to stop at any await point: what it did is either committed or will be
//! done again, idempotently, by the next process.

use std::future::Future;

use tokio::task::JoinHandle;

#[derive(Debug, Default)]
pub struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.push(tokio::spawn(task));
    }

    /// Stops every task and waits until they are gone.
    pub async fn stop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
        for t in self.0.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
