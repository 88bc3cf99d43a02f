//! The client libraries (`clients/<language>`), each run as a program of its own against the
//! real gateway binary, with faults injected while it works.

mod typescript;
