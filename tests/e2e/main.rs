//! End-to-end tests: a real nats-server per test, real gateways, real sockets.
#![allow(clippy::unwrap_used)]

mod admin;
mod append;
mod auth;
mod batch;
mod bench;
mod catalog;
mod catalog_view;
mod chaos;
mod cluster;
mod deploy;
mod durable_streams;
mod faults;
mod fuzz;
mod hazards;
mod lifecycle;
mod limits;
mod metrics;
mod multi_gateway;
mod nats_tls;
mod produce;
mod prometheus;
mod reading;
mod sdk;
mod sessions;
mod shards;
mod tail;
mod topology;
mod traces;
