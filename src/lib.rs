//! Sluice as a library: the command line ([`cli`]), `sluice run` ([`run`]) and the
//! commands that start nothing ([`check`]). The `sluice` binary parses the flags and
//! calls these; everything it does is here, where tests reach it.

mod app;
pub mod check;
pub mod cli;

pub use app::{Process, run};
