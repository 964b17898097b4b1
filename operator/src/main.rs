//! `evpn-operator`: the controllers and the admission webhook in one binary. The controllers land
//! with their own issue; this entry point only reports that.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("evpn-operator {}: the controllers are not implemented yet", env!("CARGO_PKG_VERSION"));
    ExitCode::FAILURE
}
