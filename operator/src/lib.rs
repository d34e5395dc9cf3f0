//! The sagaflow operator.
//!
//! - [`crd`]: the `EventPipeline` and `ComplaintSaga` custom resources, the source of `crds/`.

pub mod crd;
