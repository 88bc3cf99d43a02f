//! The admin console: a real browser (headless Chromium) through its pages, the system
//! page's figures, and the guards on state changes and sign-in.

mod browser;
mod guards;
mod system;
