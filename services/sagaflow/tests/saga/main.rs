//! The whole saga on the embedded default, over HTTP, with the four services in this process.

/// Every test starts the all-in-one on the embedded backends.
const REAL: bool = false;

mod helpers;

#[path = "../support/backends.rs"]
mod backends;
#[path = "../support/dashboards.rs"]
mod dashboard_checks;
#[path = "../support/repo.rs"]
mod repo;

mod compensation;
mod console;
mod dashboards;
mod deadlines;
mod full;
mod hostile;
mod openapi;
mod redelivery;
