//! Leader election on a `coordination.k8s.io/v1` Lease: one process reconciles, the others wait.
//! The holder renews the Lease every `duration / 3`; another process takes it over once it has
//! not been renewed for `duration`. Every write carries the resourceVersion it read, so two
//! processes can never both believe they won: the API server refuses the second with a conflict.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::{Client, Error};

/// A Lease this process competes for.
pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This process holds the Lease (taken or renewed).
    Held,
    /// Another holder's Lease is still valid.
    Taken(String),
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Whether a Lease held by someone else may be taken at `at`.
pub fn expired(spec: &LeaseSpec, at: Timestamp) -> bool {
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed
        .0
        .checked_add(SignedDuration::from_secs(secs))
        .is_ok_and(|until| until < at)
}

impl Election {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// One attempt to take or renew the Lease, given up after a third of the Lease's duration
    /// (an API call that hangs must not outlast the Lease).
    pub async fn try_acquire(&self) -> Result<Attempt, Error> {
        match tokio::time::timeout(self.duration / 3, self.attempt()).await {
            Ok(result) => result,
            Err(_) => Ok(Attempt::Taken("(no answer in time)".into())),
        }
    }

    async fn attempt(&self) -> Result<Attempt, Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.seconds()),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(Error::Api(e)) if e.code == 409 => Ok(Attempt::Taken("(just created)".into())),
                Err(e) => Err(e),
            };
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.identity {
            if !expired(&spec, Timestamp::now()) {
                return Ok(Attempt::Taken(holder));
            }
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(now());
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(self.seconds());
        lease.spec = Some(spec);
        // The resourceVersion read above makes this a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Held),
            Err(Error::Api(e)) if e.code == 409 => Ok(Attempt::Taken("(changed meanwhile)".into())),
            Err(e) => Err(e),
        }
    }

    /// Waits until this process holds the Lease.
    pub async fn acquire(&self) {
        let mut last = String::new();
        loop {
            match self.try_acquire().await {
                Ok(Attempt::Held) => return,
                Ok(Attempt::Taken(holder)) => {
                    if holder != last {
                        tracing::info!(holder = %holder, lease = %self.name, "another process leads; standing by");
                        last = holder;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "could not read or take the Lease")
                }
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews the Lease until it cannot: returns when leadership is lost (another holder, or no
    /// successful renewal for two thirds of `duration`, so that this process stops before
    /// anyone may take the Lease over), after which it must stop reconciling at once.
    pub async fn hold(&self) -> String {
        let mut last_renewal = tokio::time::Instant::now();
        let mut failing = false;
        loop {
            // Renew every third of the Lease; after a failed renewal, try again sooner.
            tokio::time::sleep(if failing {
                self.duration / 10
            } else {
                self.duration / 3
            })
            .await;
            failing = true;
            match self.try_acquire().await {
                Ok(Attempt::Held) => {
                    last_renewal = tokio::time::Instant::now();
                    failing = false;
                }
                Ok(Attempt::Taken(holder)) if holder.starts_with('(') => {
                    if last_renewal.elapsed() >= self.duration * 2 / 3 {
                        return format!("no renewal for {:?}: {holder}", self.duration * 2 / 3);
                    }
                }
                Ok(Attempt::Taken(holder)) => return format!("the Lease is now held by {holder}"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew the Lease");
                    if last_renewal.elapsed() >= self.duration * 2 / 3 {
                        return format!("no renewal for {:?}", self.duration * 2 / 3);
                    }
                }
            }
        }
    }

    /// Gives the Lease up (on a clean shutdown) so that another process takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        lease.spec = Some(spec);
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "could not release the Lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("a time")
    }

    #[test]
    fn a_lease_expires_its_duration_after_its_last_renewal() {
        let spec = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(10),
            renew_time: Some(MicroTime(at(100))),
            ..Default::default()
        };
        assert!(!expired(&spec, at(105)));
        assert!(!expired(&spec, at(110)));
        assert!(expired(&spec, at(111)));
        let released = LeaseSpec {
            holder_identity: None,
            ..spec
        };
        assert!(expired(&released, at(100)), "a released lease is free");
    }
}
