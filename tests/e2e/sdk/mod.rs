//! The client libraries (`clients/<language>`), each run as a program of its own against the
//! real gateway binary behind a proxy that cuts links and restarts the gateway, with each test
//! checking what the program reports against what the gateway stored.

mod python;
mod typescript;
