//! The admin console: a real browser (headless Chromium) through its pages, the system
//! page's figures, and the guards on state changes and sign-in.

mod browser;
mod guards;
mod system;

/// The charts of the system page, by the id each has after `chart-`.
const CHARTS: [&str; 5] = [
    "appends",
    "deliveries",
    "append-latency",
    "live-streams",
    "server-errors",
];
