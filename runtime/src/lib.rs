//! The service shell the three servers (the agent, eks-auth and the webhook) share, so each
//! binary keeps only what is its own: its flags, its routes, its metrics.
//!
//! A service parses its flags with [`flags::parse`] (the common ones, [`flags::LogFlags`] and
//! [`flags::ShutdownFlags`], with durations in one syntax, [`duration`]), installs the logger
//! ([`logger`]: its JSON lines written by hand in [`log_format`] and batched by [`log_writer`]),
//! assembles a [`supervisor::Supervisor`] of listeners ([`serve`]: the HTTP/1 accept loop and its
//! connection limits, over TLS with [`tls`]'s hot-reloaded certificate), periodic jobs and
//! clean-ups, answers `/healthz`, `/readyz` and `/metrics` on its admin listener through
//! [`admin`] (Prometheus text from [`metrics`]), waits for [`signal::shutdown`], drains, and ends
//! with [`exit::code`]. [`open_files`] raises the open-file limit a flood of connections would
//! otherwise meet.

pub mod admin;
pub mod duration;
pub mod exit;
pub mod flags;
pub mod log_format;
pub mod log_writer;
pub mod logger;
pub mod metrics;
pub mod open_files;
pub mod serve;
pub mod signal;
pub mod supervisor;
pub mod tls;
