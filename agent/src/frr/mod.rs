//! The agent's FRR driver: renders the node plan to FRR configuration and applies it.
//!
//! The first apply, and any apply after FRR restarted, is a full hot reload with frr-reload.py
//! (no daemon restart). Every later one diffs the new configuration against the last applied one
//! (the baseline) and sends only the changed lines through vtysh, one command group per network,
//! all groups in one vtysh session: with a thousand VNIs a one-VNI change costs one short vtysh
//! run instead of a full reload that re-reads and compares the whole running configuration. A
//! group's errors are its network's alone, and the baseline only claims what FRR took, so a
//! failed network is retried on the next sync.

mod config;
mod diff;
mod driver;
mod next_hops;
pub(crate) mod render;

pub use config::{Config, RunningConfig, Stanza};
pub use diff::{CommandGroup, diff};
pub use driver::{Frr, FrrError, OwnerResult, SyncMethod, SyncReport, ZebraSegment};
pub use render::{RenderOptions, neighbor_name, render};
