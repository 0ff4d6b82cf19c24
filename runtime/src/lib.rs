//! The service plumbing the three servers (the agent, eks-auth and the webhook) share, so each
//! binary keeps only what is its own: its flags, its routes, its metrics.
//!
//! [`logger`] installs the global logger from a binary's [`logger::Logger`] and its
//! `--log-format` ([`logger::LogFormat`]); [`log_format`] writes tracing-subscriber's JSON line by
//! hand, byte for byte, and [`log_writer`] batches the lines into a bounded buffer one thread
//! writes out. [`metrics`] builds a Prometheus registry and encodes it, [`serve`] is the HTTP/1
//! accept loop with its connection limits (over TLS where a listener has a certificate), [`tls`]
//! the serving certificate re-read from its files as they rotate, [`signal`] says when to stop,
//! and [`open_files`] raises the open-file limit a flood of connections would otherwise meet.

pub mod log_format;
pub mod log_writer;
pub mod logger;
pub mod metrics;
pub mod open_files;
pub mod serve;
pub mod signal;
pub mod tls;
