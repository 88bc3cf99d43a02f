//! The client SDKs (clients/<language>) run as programs against the real gateway binary behind
//! a proxy that cuts links and restarts the gateway; each test checks what the program reports
//! against what the gateway stored.

mod python;
