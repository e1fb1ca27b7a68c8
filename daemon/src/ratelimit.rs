//! Rate limits shared by the daemon's layers: a [`TokenBucket`] that paces one client's
//! requests, and a [`LogLimit`] for log lines a client can trigger (refusals, malformed
//! messages), so that no client can make the daemon's log its own megaphone.
//!
//! Both are plain data with explicit clocks (`*_at(now)`), so they are tested without
//! sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a slowed client must go without being slowed again before its over-budget clock
/// starts afresh.
pub const QUIET: Duration = Duration::from_secs(1);

/// What a [`TokenBucket`] says about one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Within budget: handle it now.
    Go,
    /// Over budget: handle it after this pause (the debt it ran up).
    Wait(Duration),
    /// Over budget without a break for longer than allowed: hang up.
    Disconnect {
        /// How long the client has been over budget.
        over_for: Duration,
    },
}

/// Requests per second with a burst allowance. A request that finds the bucket empty still
/// takes its token (the bucket goes into debt) and is told to wait until the debt is paid, so
/// a flooding client is slowed to exactly the rate. One that keeps being slowed, never going
/// [`QUIET`] without a pause, for `disconnect_after` is told to go.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    over_since: Option<Instant>,
    last_wait: Option<Instant>,
    disconnect_after: Duration,
}

impl TokenBucket {
    /// A full bucket: `rate` tokens a second, at most `burst` saved up.
    pub fn new(rate: u32, burst: u32, disconnect_after: Duration, now: Instant) -> TokenBucket {
        let rate = f64::from(rate.max(1));
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
            over_since: None,
            last_wait: None,
            disconnect_after,
        }
    }

    /// Takes a token for a request arriving at `now`.
    pub fn take_at(&mut self, now: Instant) -> Pace {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let quiet = self
            .last_wait
            .is_none_or(|w| now.saturating_duration_since(w) >= QUIET);
        if quiet {
            self.over_since = None;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Pace::Go;
        }
        self.last_wait = Some(now);
        let since = *self.over_since.get_or_insert(now);
        let over_for = now.saturating_duration_since(since);
        if over_for >= self.disconnect_after {
            return Pace::Disconnect { over_for };
        }
        self.tokens -= 1.0;
        Pace::Wait(Duration::from_secs_f64(-self.tokens / self.rate))
    }

    /// [`TokenBucket::take_at`] now.
    pub fn take(&mut self) -> Pace {
        self.take_at(Instant::now())
    }
}

/// At most `per_window` lines per `window` from one call site (or one kind of event); the
/// lines dropped meanwhile are counted and reported with the next line that is let through.
///
/// ```ignore
/// static REFUSED: LogLimit = LogLimit::new(10, Duration::from_secs(10));
/// if let Some(suppressed) = REFUSED.allow() {
///     tracing::warn!(suppressed, "refusing a connection: {why}");
/// }
/// ```
#[derive(Debug)]
pub struct LogLimit {
    per_window: u32,
    window: Duration,
    state: Mutex<LogState>,
}

#[derive(Debug)]
struct LogState {
    start: Option<Instant>,
    count: u32,
    suppressed: u64,
}

impl LogLimit {
    /// A limiter letting `per_window` lines through per `window`.
    pub const fn new(per_window: u32, window: Duration) -> LogLimit {
        LogLimit {
            per_window,
            window,
            state: Mutex::new(LogState {
                start: None,
                count: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be logged now: `Some(n)`, `n` lines having been suppressed since
    /// the last one let through, or `None` (count it, log nothing).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    /// [`LogLimit::allow`] at `now`.
    pub fn allow_at(&self, now: Instant) -> Option<u64> {
        // A panic elsewhere while holding this cannot leave it inconsistent: carry on.
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = s
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if fresh {
            s.start = Some(now);
            s.count = 0;
        }
        if s.count < self.per_window {
            s.count += 1;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_polling_console_never_waits() {
        // 60 Hz × 8 requests a tick, well under 500/s.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(500, 1000, Duration::from_secs(3), t0);
        for tick in 0..600u32 {
            let now = t0 + Duration::from_micros(u64::from(tick) * 16_667);
            for _ in 0..8 {
                assert_eq!(b.take_at(now), Pace::Go, "tick {tick}");
            }
        }
    }

    #[test]
    fn a_burst_is_allowed_then_paced_to_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 10, Duration::from_secs(3), t0);
        for _ in 0..10 {
            assert_eq!(b.take_at(t0), Pace::Go);
        }
        // The 11th at the same instant owes one token: 10 ms at 100/s.
        match b.take_at(t0) {
            Pace::Wait(d) => assert!((d.as_secs_f64() - 0.01).abs() < 1e-6, "{d:?}"),
            other => panic!("{other:?}"),
        }
        // The 12th owes two.
        match b.take_at(t0) {
            Pace::Wait(d) => assert!((d.as_secs_f64() - 0.02).abs() < 1e-6, "{d:?}"),
            other => panic!("{other:?}"),
        }
        // After a pause that repays the debt and earns a token, it goes again.
        assert_eq!(b.take_at(t0 + Duration::from_millis(40)), Pace::Go);
    }

    #[test]
    fn a_flood_is_slowed_then_disconnected() {
        // A client that sends the next request as soon as its pause ends, i.e. exactly at the
        // rate, but never below it: over budget the whole time.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100, Duration::from_secs(3), t0);
        let mut now = t0;
        let mut served = 0u64;
        let over_for = loop {
            match b.take_at(now) {
                Pace::Go => served += 1,
                Pace::Wait(d) => {
                    served += 1;
                    now += d;
                }
                Pace::Disconnect { over_for } => break over_for,
            }
            assert!(now < t0 + Duration::from_secs(10), "never disconnected");
        };
        assert!(over_for >= Duration::from_secs(3));
        // Slowed to the rate: the burst, then 1000/s for about three seconds.
        let elapsed = now.duration_since(t0).as_secs_f64();
        assert!(
            served as f64 <= 100.0 + 1000.0 * elapsed + 2.0,
            "{served} in {elapsed}"
        );
        assert!((2.9..3.5).contains(&elapsed), "{elapsed}");
    }

    #[test]
    fn sleeping_longer_than_asked_does_not_reset_the_clock() {
        // A paced task's timer overshoots (here: every pause takes 3 ms for a 2 ms debt), so
        // the bucket sometimes has a token again; the flood is still one episode.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(500, 10, Duration::from_secs(3), t0);
        let mut now = t0;
        let gone = loop {
            match b.take_at(now) {
                Pace::Go => now += Duration::from_micros(20),
                Pace::Wait(d) => now += d + Duration::from_millis(1),
                Pace::Disconnect { .. } => break now,
            }
            assert!(now < t0 + Duration::from_secs(10), "never disconnected");
        };
        assert!(gone >= t0 + Duration::from_secs(3));
    }

    #[test]
    fn a_client_that_calms_down_is_forgiven() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 1, Duration::from_secs(1), t0);
        assert_eq!(b.take_at(t0), Pace::Go);
        assert!(matches!(b.take_at(t0), Pace::Wait(_)));
        // Under budget again, but less than QUIET since it was last slowed: not yet forgiven.
        let later = t0 + Duration::from_millis(900);
        assert_eq!(b.take_at(later), Pace::Go);
        // Over budget again from t1, QUIET after the last pause: the clock counts from t1.
        let t1 = later + Duration::from_millis(500);
        assert_eq!(b.take_at(t1), Pace::Go);
        for _ in 0..200 {
            assert!(matches!(b.take_at(t1), Pace::Wait(_)));
        }
        assert!(matches!(
            b.take_at(t1 + Duration::from_millis(999)),
            Pace::Wait(_)
        ));
        assert!(matches!(
            b.take_at(t1 + Duration::from_millis(1000)),
            Pace::Disconnect { .. }
        ));
    }

    #[test]
    fn log_limit_counts_what_it_drops() {
        let t0 = Instant::now();
        let l = LogLimit::new(2, Duration::from_secs(10));
        assert_eq!(l.allow_at(t0), Some(0));
        assert_eq!(l.allow_at(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(l.allow_at(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(l.allow_at(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(l.allow_at(t0 + Duration::from_secs(11)), Some(0));
        assert_eq!(l.allow_at(t0 + Duration::from_secs(12)), None);
    }
}
