//! The lab: everything a cluster and AWS provide for one pod's credential, on one machine, with a
//! numbered trace of every hop.
//!
//! Modules, in the order a run meets them: [`entry`] (the command line and the multi-call
//! dispatch), [`node`] (a network namespace when root), [`issuer`] (the cluster's token issuer),
//! [`sts`] (the lab's STS; both served by [`serve`]), [`components`] (the agent, eks-auth and
//! demo-app as processes), [`pod`] (the manifest, admission, the projected token), [`scenario`],
//! [`run`] (the orchestration), `start` (what it gives each part as it starts it), `hops` (each
//! hop of the trace, from what the parts reported), `facts` (what each scenario must show) and
//! [`trace`] (the numbered trace).

pub mod components;
pub mod entry;
mod facts;
mod hops;
pub mod ids;
pub mod issuer;
pub mod node;
pub mod pod;
pub mod review;
pub mod run;
pub mod scenario;
pub mod serve;
mod start;
pub mod sts;
pub mod trace;
