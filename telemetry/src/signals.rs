//! When the binaries stop: SIGTERM always (what Kubernetes sends), SIGINT unless the process was
//! started with SIGINT ignored.
//!
//! A process that a non-interactive shell starts in the background (`cmd &`, nohup, many CI
//! runners) inherits SIGINT ignored: the shell means "a Ctrl-C at the terminal is not for this
//! one". Shells honour that (bash cannot even trap a signal ignored on entry), and so do we:
//! otherwise a Ctrl-C meant for a script would stop the daemons the script started in the
//! background while the script itself goes on. The disposition is read from
//! `/proc/self/status` before any handler is installed, because installing one changes it.

use tracing::{info, warn};

/// SIGINT's number on Linux; its bit in `SigIgn` is `1 << (SIGINT - 1)`.
const SIGINT: u32 = 2;

/// Completes on SIGTERM, or on SIGINT unless SIGINT was ignored when the process started. Call
/// it once, early: it decides from the disposition in force when it is first polled.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt_ignored =
        std::fs::read_to_string("/proc/self/status").map(|status| ignored(&status, SIGINT)).unwrap_or_else(|e| {
            warn!("cannot read /proc/self/status ({e}); stopping on SIGINT too");
            false
        });
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("cannot listen for SIGTERM: {e}");
            None
        }
    };
    let mut interrupt = if interrupt_ignored {
        info!("started with SIGINT ignored: stopping on SIGTERM only");
        None
    } else {
        match signal(SignalKind::interrupt()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("cannot listen for SIGINT: {e}");
                None
            }
        }
    };
    tokio::select! {
        Some(()) = recv(&mut term) => info!("SIGTERM: stopping"),
        Some(()) = recv(&mut interrupt) => info!("SIGINT: stopping"),
        else => std::future::pending().await,
    }
}

async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => None,
    }
}

/// Whether `signal` is in the `SigIgn` mask of a `/proc/PID/status` text.
fn ignored(status: &str, signal: u32) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| (1..=64).contains(&signal) && mask & (1 << (signal - 1)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ignored_mask() {
        // As a background job of a non-interactive bash shows it: SIGINT (2) and SIGQUIT (3).
        let background =
            "Name:\tevpn-agent\nSigPnd:\t0000000000000000\nSigIgn:\t0000000000000006\nSigCgt:\t0000000000000000\n";
        assert!(ignored(background, SIGINT));
        assert!(ignored(background, 3));
        assert!(!ignored(background, 15));
        let foreground = "SigIgn:\t0000000000001000\n";
        assert!(!ignored(foreground, SIGINT));
        assert!(!ignored("no such line", SIGINT));
        assert!(!ignored("SigIgn:\tgarbage", SIGINT));
        assert!(!ignored(background, 0));
    }
}
