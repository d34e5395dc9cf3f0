//! The complaint service's HTTP API, end to end: the real router on a real socket (port 0),
//! on the embedded stores in a temporary directory.

mod helpers;

mod commands;
mod concurrency;
mod console;
mod create;
mod errors;
mod list;
mod service;
