//! The whole saga on the embedded default, over HTTP, with the four services in this process.

mod helpers;

mod compensation;
mod deadlines;
mod full;
mod openapi;
mod redelivery;
