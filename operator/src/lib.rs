//! The evpn-operator's controllers: allocation, per-node fan-out and status aggregation
//! ([`plan`], pure), the loop that feeds and applies it ([`controller`]), and leader election
//! ([`leader`]).

pub mod allocator;
pub mod plan;
