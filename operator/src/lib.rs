//! The sagaflow operator.
//!
//! - [`crd`]: the `EventPipeline` and `ComplaintSaga` custom resources, the source of `crds/`.
//! - [`desired`]: what a spec asks for, pure (validation, the queues to declare).

pub mod crd;
pub mod desired;
