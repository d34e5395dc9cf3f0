//! The end-to-end saga suite of `tests/saga`, run again on the real backends: PostgreSQL,
//! RabbitMQ, Redis, the MongoDB wire server and the SMTP sink (`scripts/backends` starts them).
//! Each test gets a database, a virtual host, a stream prefix and a Mongo database of its own;
//! mails are read back from the sink by their `X-Complaint-ID`.

/// Every test starts the all-in-one on the real backends.
const REAL: bool = true;

#[path = "../saga/helpers.rs"]
mod helpers;

#[path = "../support/backends.rs"]
mod backends;

#[path = "../saga/compensation.rs"]
mod compensation;
#[path = "../saga/deadlines.rs"]
mod deadlines;
#[path = "../saga/full.rs"]
mod full;
#[path = "../saga/hostile.rs"]
mod hostile;
#[path = "../saga/redelivery.rs"]
mod redelivery;
