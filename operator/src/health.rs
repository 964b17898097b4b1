//! Liveness of the control loop, for `/healthz`.
//!
//! The loop idles, without any round, for as long as nothing changes, so "no round for a while"
//! says nothing. What does is a round that has started and not finished: the loop marks itself
//! busy from the moment a change wakes it (through the debounce, planning and the writes) until
//! it goes back to waiting, and `/healthz` fails once it has been busy longer than a limit. A
//! waiting loop is healthy however long it waits; so is a replica that is not leading (its loop
//! is not running). A round's writes are each bounded (the controller's write timeout), so only a
//! wedge (a lock never released, a future that never completes, a planner that spins) keeps it
//! busy past a limit of minutes, and a restart is then the remedy the liveness probe gives.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Since when the loop has been busy, if it is.
#[derive(Debug, Default)]
pub struct Progress {
    busy_since: Mutex<Option<Instant>>,
}

/// The loop is busy while this lives; dropping it (the round done, or the loop's future dropped
/// on losing leadership) marks it waiting again.
#[must_use = "the loop is marked busy only while the guard lives"]
pub struct Busy<'a>(&'a Progress);

impl Progress {
    /// Marks the loop busy until the guard is dropped.
    pub fn busy(&self) -> Busy<'_> {
        *self.lock() = Some(Instant::now());
        Busy(self)
    }

    /// `Ok` unless the loop has been busy for longer than `limit`; else why (for a 503).
    pub fn check(&self, limit: Duration) -> Result<(), String> {
        verdict(*self.lock(), Instant::now(), limit)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.busy_since.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        *self.0.lock() = None;
    }
}

/// The decision: busy since `busy_since` (or waiting) at `now`, against `limit`.
fn verdict(busy_since: Option<Instant>, now: Instant, limit: Duration) -> Result<(), String> {
    match busy_since.map(|since| now.saturating_duration_since(since)) {
        Some(busy) if busy > limit => Err(format!(
            "the control loop has been in one round for {}s, longer than the {}s allowed (--round-stall-limit)",
            busy.as_secs(),
            limit.as_secs_f64()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_is_healthy_however_long_and_a_round_only_up_to_the_limit() {
        let start = Instant::now();
        let limit = Duration::from_secs(120);
        let later = |s| start + Duration::from_secs(s);
        assert!(verdict(None, later(100_000), limit).is_ok(), "idle for a day: healthy");
        assert!(verdict(Some(start), later(120), limit).is_ok(), "a round of exactly the limit");
        let err = verdict(Some(start), later(121), limit).unwrap_err();
        assert!(err.contains("one round for 121s, longer than the 120s allowed"), "{err}");
        assert!(verdict(Some(later(5)), start, limit).is_ok(), "a clock read before the mark");
    }

    #[test]
    fn the_guard_marks_busy_while_it_lives() {
        let progress = Progress::default();
        assert!(progress.check(Duration::ZERO).is_ok(), "waiting");
        let busy = progress.busy();
        std::thread::sleep(Duration::from_millis(2));
        assert!(progress.check(Duration::ZERO).is_err(), "busy past a zero limit");
        assert!(progress.check(Duration::from_secs(60)).is_ok(), "busy within the limit");
        drop(busy);
        assert!(progress.check(Duration::ZERO).is_ok(), "waiting again");
    }
}
