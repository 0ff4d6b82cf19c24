//! The agent benchmark the project publishes in `docs/benchmarks.md`: one run that starts the
//! release `pod-identity-agent` against the in-process fake EKS Auth and measures what pods feel.
//!
//! This crate owns the measurement, not the agent: [`agent`] starts the real binary as a child
//! process (production JSON logging on, its stdout drained and discarded), [`ceiling`] is the bare
//! hyper server answering the same body that bounds what any HTTP/1 server could do here,
//! [`client`] is the keep-alive HTTP/1 client, [`load`] the load generator (closed loop, or open
//! loop at a fixed rate with latency from the intended send time) and the cold burst, [`wrk`]
//! the same throughput check under `wrk`, an independent client, [`stats`] turns latencies into percentiles, [`procfs`] reads memory and CPU time,
//! [`report`] prints the table and the target check, [`cli`] holds the flags, and [`run`] puts
//! the phases in order. It is a benchmark, not a test: it reports PASS/MISS per target and exits
//! 0 either way. [`cost`] (`pod-identity-bench cost`) counts what one cache hit costs the agent
//! (instructions under callgrind; CPU time, system calls and context switches under `perf stat`)
//! to compare builds on a machine others are using. [`eks_auth`] (`pod-identity-bench eks-auth`)
//! measures eks-auth instead: a thousand distinct pods arriving at once over HTTPS, with caller
//! verification and TokenReview, its own latency with STS excluded; [`eks_auth_verify`]
//! (`pod-identity-bench eks-auth-verify`) times its token verification and association lookup
//! alone, in process. [`webhook_load`] (`pod-identity-bench webhook`) drives the release
//! `pod-identity-webhook` with AdmissionReviews over TLS (reviews/s and latency percentiles), and
//! [`webhook_cost`] (`pod-identity-bench webhook-cost`) runs reviews through its handler in
//! process, for counting instructions per review under callgrind.

pub mod agent;
pub mod ceiling;
pub mod cli;
pub mod client;
pub mod cost;
pub mod eks_auth;
pub mod eks_auth_verify;
pub mod load;
pub mod procfs;
pub mod report;
pub mod run;
pub mod stats;
pub mod webhook_cost;
pub mod webhook_load;
pub mod wrk;
