//! The one clock of the core: wall-clock time plus an offset. Production never moves the
//! offset; tests move it forward, so that deadlines of days, token lifetimes of seconds and
//! outbox claims and retries can be tested by moving time instead of sleeping through it (a
//! sleep races the boundary it waits for on a loaded machine), and back, to stand for a host
//! whose clock is stepped back (NTP correcting a fast clock, an operator, a VM restored).
//!
//! What a step back does (the rules `tests/api/clock_steps.rs` holds the gateway to):
//! - The audit chains do not care: their order is each writer's `chain_seq`, and `verify` never
//!   compares record or checkpoint times. A record or checkpoint stamped before the step simply
//!   carries a later time than the ones after it.
//! - An elapsed time read off this clock (the age of the unsigned tail, a 429 window) that comes
//!   out negative means the clock went back: the age is unknown, and it is taken as "due now"
//!   (sign the tail, close the window), never as "not due for another hour".
//! - The gateway's own tokens live on `steady`, the clock that never falls behind the time the
//!   process has measured since it started: a step back neither revives an expired token nor
//!   refuses a good one, and a token lives its lifetime in real time however the wall clock
//!   moves. (On the wall clock, a step back of a token's lifetime made an expired token valid
//!   again: a leaked, spent token worked twice as long.) A step forward that is corrected
//!   leaves no trace: only the tokens issued while it lasted are post-dated.
//! - Deadlines (objections, complaints, requests) are absolute times: a step back makes them
//!   that much further off, as any reading of the clock would; an alert already raised stays.
//! - A page session stays signed in; its idle timeout counts from its last use as stored, so a
//!   step back lengthens its life by at most the step, and its absolute end holds.
//! - Outbox retries and claims are absolute times too: a step back delays a retry, or the
//!   takeover of a dead replica's claim, by at most the step (deliveries are idempotent).
//! - Tokens of identity providers (subjects, staff) are checked by `jsonwebtoken` against the
//!   system clock with the same leeway, not against this one: a real step back refuses them
//!   the same way; a test's step does not reach them.
//! - Timers that bound waits (upstream deadlines, rate limiters, the replica poller, the idle
//!   tick's sleep) use the monotonic clock, which a step does not move.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

/// Held once by `services::Core`; everything that compares against "now" for a deadline, a
/// token's `exp`/`iat`, an outbox claim, an audit record's time or a checkpoint's reads it here.
#[derive(Debug)]
pub struct Clock {
    /// How far tests have moved the wall clock (steps and simulated time alike).
    offset_us: AtomicI64,
    /// How much time tests have let pass without sleeping (`advance`): the monotonic floor of
    /// `steady` moves by it too, where a step of the wall clock (`step_forward`, `step_back`)
    /// does not.
    elapsed_us: AtomicI64,
    /// `steady`'s floor: a time in Unix microseconds (the wall clock at start, or a seed) and
    /// the monotonic instant it was taken at.
    anchor: Mutex<(i64, Instant)>,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            offset_us: AtomicI64::new(0),
            elapsed_us: AtomicI64::new(0),
            anchor: Mutex::new((crate::storage::now_micros(), Instant::now())),
        }
    }
}

impl Clock {
    /// Unix microseconds that never fall behind the time this process has measured since it
    /// started: the wall clock, or, when the wall clock is behind it, the start's wall-clock
    /// reading (or the seed) plus the monotonic time since. A step back is not followed (time
    /// goes on at the real rate from where it was); a step forward is followed while it lasts
    /// and leaves no trace once the wall clock is set right again. For what must not be
    /// lengthened or revived by a step back: the gateway's token lifetimes.
    ///
    /// Why a forward step is not remembered: this clock once took each forward step as its
    /// new floor, so a wall clock that jumped a day ahead and was corrected (a bad time source,
    /// a typo, a VM resumed with the wrong time) left the process issuing every token a day in
    /// the future until restart, refused now by every replica with the right time and valid
    /// there a day later (review rev3, F1). The floor is what the monotonic clock, which no
    /// step moves, has measured: a host whose clock was wrong at start and stepped right later
    /// is protected from a later step back only beyond that correction.
    pub fn steady(&self) -> i64 {
        let wall = self.now();
        let anchor = *self.anchor.lock().unwrap_or_else(|p| p.into_inner());
        wall.max(self.floor(anchor))
    }

    /// `steady`'s floor in Unix seconds: the time this process has measured since it started
    /// (or since the seed), which no step of the wall clock moves. For a deadline that must
    /// count real time from a moment this process saw, whatever the wall clock said then.
    pub fn measured_secs(&self) -> u64 {
        let anchor = *self.anchor.lock().unwrap_or_else(|p| p.into_inner());
        u64::try_from(self.floor(anchor) / 1_000_000).unwrap_or(0)
    }

    /// The anchor's time plus the monotonic time since it (and the time tests let pass).
    fn floor(&self, (at, instant): (i64, Instant)) -> i64 {
        let since = i64::try_from(instant.elapsed().as_micros()).unwrap_or(i64::MAX);
        at.saturating_add(since)
            .saturating_add(self.elapsed_us.load(Ordering::Relaxed))
    }

    /// `steady` in Unix seconds, as JWT time claims count them.
    pub fn steady_secs(&self) -> u64 {
        u64::try_from(self.steady() / 1_000_000).unwrap_or(0)
    }

    /// Raises `steady` to at least `us`: at start, the newest time this process's chain
    /// recorded, so a host whose clock went back while the gateway was down does not revive
    /// the tokens that had expired by then.
    pub fn seed(&self, us: i64) {
        let mut anchor = self.anchor.lock().unwrap_or_else(|p| p.into_inner());
        if us > self.floor(*anchor) {
            let elapsed = self.elapsed_us.load(Ordering::Relaxed);
            *anchor = (us.saturating_sub(elapsed), Instant::now());
        }
    }

    /// Unix microseconds.
    pub fn now(&self) -> i64 {
        crate::storage::now_micros() + self.offset_us.load(Ordering::Relaxed)
    }

    /// Unix seconds, as JWT time claims count them.
    pub fn now_secs(&self) -> u64 {
        u64::try_from(self.now() / 1_000_000).unwrap_or(0)
    }

    /// Lets time pass without sleeping (tests only: a gateway in service never calls it): the
    /// wall clock and the monotonic floor of `steady` move together, as they do when time
    /// really passes.
    pub fn advance(&self, by: Duration) {
        let us = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.offset_us.fetch_add(us, Ordering::Relaxed);
        self.elapsed_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn advance_days(&self, days: i64) {
        self.advance(Duration::from_secs(
            u64::try_from(days).unwrap_or(0) * 86_400,
        ));
    }

    /// Steps the wall clock forward with no time passing (tests only): a host's clock set
    /// ahead, by a bad time source or by the correction of a step back.
    pub fn step_forward(&self, by: Duration) {
        let us = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.offset_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Moves the clock back (tests only: a gateway in service never calls it). It exists because
    /// a host's wall clock can be stepped back under a running gateway, and every comparison of
    /// two wall-clock readings must survive the second one being the earlier; a test steps this
    /// clock to prove they do (see the module's rules).
    pub fn step_back(&self, by: Duration) {
        let us = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.offset_us.fetch_sub(us, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_follows_a_step_forward_and_not_a_step_back() {
        // The wall clock and the monotonic floor are two clocks read microseconds apart, so
        // after a step `steady` may switch from one to the other a few microseconds back (a
        // local CI run failed on exact comparisons): compared to the second.
        const SLACK: i64 = 1_000_000;
        let c = Clock::default();
        let start = c.steady();
        c.step_back(Duration::from_secs(3600));
        assert!(c.steady() >= start - SLACK, "a step back is not followed");
        c.step_forward(Duration::from_secs(7200));
        let ahead = c.steady();
        assert!(ahead >= start + 3_500_000_000, "a step forward is");
        // The forward step corrected: steady is back with the monotonic time (rev3 F1).
        c.step_back(Duration::from_secs(3600));
        let back = c.steady();
        assert!(
            back < start + 60_000_000 && back >= start - SLACK,
            "{start} {back}"
        );
        c.advance(Duration::from_secs(7200));
        let ahead = c.steady();
        assert!(ahead >= start + 7_200_000_000, "time passing moves it");
        c.step_back(Duration::from_secs(7200));
        assert!(
            c.steady() >= ahead - SLACK,
            "and a step back after it does not undo it"
        );
        c.seed(ahead + 60_000_000);
        assert!(c.steady() >= ahead + 60_000_000, "a seed ahead raises it");
        c.seed(0);
        assert!(
            c.steady() >= ahead + 60_000_000,
            "a seed behind does not lower it"
        );
    }

    #[test]
    fn advancing_moves_now_and_seconds_together() {
        let c = Clock::default();
        let before = c.now();
        c.advance(Duration::from_secs(10));
        assert!(c.now() - before >= 10_000_000);
        assert!(c.now_secs() as i64 >= before / 1_000_000 + 10);
        c.advance_days(1);
        assert!(c.now() - before >= 86_400 * 1_000_000);
    }

    #[test]
    fn stepping_back_moves_now_before_an_earlier_reading() {
        let c = Clock::default();
        let before = c.now();
        c.step_back(Duration::from_secs(3600));
        let after = c.now();
        assert!(before - after >= 3_599_000_000, "{before} then {after}");
        assert!(
            after - before > -3_700_000_000,
            "stepped back an hour, no more"
        );
        c.advance(Duration::from_secs(3600));
        assert!(c.now() >= before);
    }
}
