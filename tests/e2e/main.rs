//! End-to-end tests: a real nats-server per test, real gateways, real sockets.
#![allow(clippy::unwrap_used)]

mod append;
mod faults;
mod multi_gateway;
mod sessions;
mod tail;
