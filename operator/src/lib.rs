//! The sagaflow operator.
//!
//! Pure (no I/O):
//! - [`crd`]: the `EventPipeline` and `ComplaintSaga` custom resources, the source of `crds/`.
//! - [`desired`]: what an EventPipeline asks for (validation, queues, policies, retries).
//! - [`workloads`]: what a ComplaintSaga asks for (ConfigMaps, Deployments, Services).
//! - [`conditions`]: standard conditions whose transition times move only with their status.
//!
//! Adapters and the process:
//! - [`rabbitmq`]: RabbitMQ's management API; [`redis_streams`]: streams and consumer groups.
//! - [`controller`]: the two reconcilers; [`context`]: what they share (client, Events, metrics).
//! - [`leader`]: leader election on a Lease; [`run`]: `sagaflow-operator run`.

pub mod conditions;
pub mod context;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod leader;
pub mod rabbitmq;
pub mod redis_streams;
pub mod run;
pub mod workloads;
