//! `evpn-agent`: the node agent. The data plane and FRR driver land with their own issue; this
//! entry point only reports that.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("evpn-agent {}: the node agent is not implemented yet", env!("CARGO_PKG_VERSION"));
    ExitCode::FAILURE
}
