//! The agent's FRR driver: renders the node plan to FRR configuration and applies it.
//!
//! FRR is shared with the node's admin: the agent changes only the lines it owns (see
//! docs/architecture.md, "What the agent owns in FRR"). Every apply is a diff of the agent's own
//! lines, sent through one vtysh run on its standard input, one command group per network. While
//! FRR holds what the agent last applied (the baseline), the diff is against that: with a
//! thousand VNIs a one-VNI change costs one short vtysh run. After an agent start, an FRR restart
//! or a node-wide failure, the diff is against the agent's part of the running configuration. A
//! group's errors are its network's alone, and the baseline only claims what FRR took, so a
//! failed network is retried on the next sync. No password reaches argv, an error or a log line.

mod config;
mod diff;
mod driver;
mod next_hops;
pub(crate) mod render;

pub use config::{Claimed, Config, RunningConfig, Stanza};
pub use diff::{CommandGroup, diff, diff_sharing};
pub use driver::{Frr, FrrError, OwnerResult, REDACTED, SyncMethod, SyncReport, ZebraSegment, redact};
pub use render::{RenderOptions, neighbor_name, render};
