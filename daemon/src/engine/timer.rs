//! Absolute-deadline pacing on `CLOCK_MONOTONIC`.
//!
//! Deadlines are computed from the cycle number (`start + n * quantum * 1e9 / rate`, in u128),
//! never by adding a rounded period to the previous deadline, so the clock does not drift.

use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, clock_nanosleep, ClockId, ClockNanosleepFlags};

const NS_PER_SEC: u64 = 1_000_000_000;

/// Now on `CLOCK_MONOTONIC`, in nanoseconds. `clock_gettime` on the monotonic clock cannot
/// fail on Linux; if it ever did we return 0, which only makes the next cycle run at once.
pub fn now_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * NS_PER_SEC + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// Sleeps until `CLOCK_MONOTONIC` reaches `deadline_ns` (restarting after signals).
pub fn sleep_until(deadline_ns: u64) {
    let ts = TimeSpec::new(
        (deadline_ns / NS_PER_SEC) as i64,
        (deadline_ns % NS_PER_SEC) as i64,
    );
    while let Err(nix::errno::Errno::EINTR) = clock_nanosleep(
        ClockId::CLOCK_MONOTONIC,
        ClockNanosleepFlags::TIMER_ABSTIME,
        &ts,
    ) {}
}

/// Nanoseconds from the start of the clock to the start of cycle `n`.
pub fn cycle_offset_ns(n: u64, quantum: u32, rate: u32) -> u64 {
    let ns = u128::from(n) * u128::from(quantum) * u128::from(NS_PER_SEC) / u128::from(rate.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// What the engine loop does before running a cycle due at `deadline_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Early: sleep until the deadline.
    Sleep,
    /// Late by at most `rebase_after_ns`: run at once to catch up.
    CatchUp,
    /// Later than that (a stall): count a late cycle and restart the clock from now.
    Rebase,
}

/// Decides how to reach a cycle due at `deadline_ns` when the clock reads `now_ns`.
pub fn pace(now_ns: u64, deadline_ns: u64, rebase_after_ns: u64) -> Pace {
    if now_ns < deadline_ns {
        Pace::Sleep
    } else if now_ns - deadline_ns > rebase_after_ns {
        Pace::Rebase
    } else {
        Pace::CatchUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_decisions() {
        assert_eq!(pace(10, 11, 200), Pace::Sleep);
        assert_eq!(pace(11, 11, 200), Pace::CatchUp);
        assert_eq!(pace(211, 11, 200), Pace::CatchUp);
        assert_eq!(pace(212, 11, 200), Pace::Rebase);
    }

    #[test]
    fn offsets_do_not_drift() {
        // 441 frames at 44.1 kHz is exactly 10 ms; 1 frame at 48 kHz is 20833.33.. ns.
        assert_eq!(cycle_offset_ns(1000, 441, 44_100), 10 * NS_PER_SEC);
        assert_eq!(cycle_offset_ns(48_000, 1, 48_000), NS_PER_SEC);
        assert_eq!(cycle_offset_ns(3, 1, 48_000), 62_500);
        assert_eq!(cycle_offset_ns(u64::MAX, u32::MAX, 1), u64::MAX);
    }

    #[test]
    fn sleeps_until_the_deadline() {
        let start = now_ns();
        sleep_until(start + 2_000_000);
        assert!(now_ns() >= start + 2_000_000);
        sleep_until(0); // in the past: returns at once
    }
}
