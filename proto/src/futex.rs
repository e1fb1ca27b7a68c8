//! Shared (cross-process) futex wake-ups on a 32-bit word in a ring header.
//!
//! The server wakes a stream's client by bumping the ring's wake sequence and calling
//! [`wake`]; the client sleeps in [`wait`] until the sequence differs from what it saw. Both
//! operations use the *shared* futex (no `FUTEX_PRIVATE_FLAG`), keyed by the memfd page, since
//! the word lives in memory mapped by two processes.
//!
//! **Why a futex.** `FUTEX_WAKE` never sleeps, whatever the peer does with the word or the
//! mapping: it takes the futex hash bucket's spinlock, wakes at most `n` waiters and returns.
//! Unlike an eventfd or a pipe, there is no open file whose flags the peer could change and no
//! counter or buffer it could fill. A garbage value in the word only makes a waiter return
//! early (spurious wake-ups are part of the contract: callers re-check their condition).
//!
//! This module is the only place the futex syscall is made (one `unsafe` block per operation).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// How a [`wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Woken by [`wake`] (or spuriously: the caller re-checks).
    Woken,
    /// The word no longer held `expected` when the kernel looked.
    Changed,
    /// The timeout passed.
    TimedOut,
    /// A signal interrupted the wait.
    Interrupted,
}

/// Wakes at most `n` waiters on `word` (shared futex). Never blocks; returns how many were
/// woken (0 when nobody waits, or on an error, which cannot happen for a valid mapped word).
pub fn wake(word: &AtomicU32, n: u32) -> u32 {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    // SAFETY: `word` is a live reference, so its address is a valid, aligned u32 for the
    // duration of the call. FUTEX_WAKE reads no memory besides resolving the futex key (a
    // page-table lookup of that address) and takes no pointer arguments besides it; the
    // timeout, uaddr2 and val3 arguments are ignored for FUTEX_WAKE and passed as null/0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    u32::try_from(r).unwrap_or(0)
}

/// Sleeps while `word` holds `expected`, for at most `timeout` (shared futex). Works on a
/// read-only mapping (the kernel only reads the word).
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> Wait {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a live reference (valid, aligned u32 address for the call); `ts` is a
    // valid timespec on our stack that outlives the call, and FUTEX_WAIT only reads it (a
    // relative timeout). uaddr2 and val3 are ignored for FUTEX_WAIT.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r == 0 {
        return Wait::Woken;
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::EAGAIN => Wait::Changed,
        nix::errno::Errno::ETIMEDOUT => Wait::TimedOut,
        nix::errno::Errno::EINTR => Wait::Interrupted,
        // EFAULT/EINVAL cannot happen for a live, aligned word; treat as a spurious wake-up.
        _ => Wait::Woken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn wait_returns_at_once_when_the_word_differs() {
        let w = AtomicU32::new(5);
        assert_eq!(wait(&w, 4, Duration::from_secs(5)), Wait::Changed);
    }

    #[test]
    fn wait_times_out() {
        let w = AtomicU32::new(0);
        let t = Instant::now();
        assert_eq!(wait(&w, 0, Duration::from_millis(20)), Wait::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(15));
    }

    #[test]
    fn wake_without_waiters_wakes_nobody() {
        let w = AtomicU32::new(0);
        assert_eq!(wake(&w, 1), 0);
    }

    #[test]
    fn wake_ends_a_wait() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = Arc::clone(&w);
        let t = std::thread::spawn(move || wait(&w2, 0, Duration::from_secs(30)));
        // Keep waking until the waiter is gone (it may not be asleep yet at the first wake).
        let start = Instant::now();
        while !t.is_finished() && start.elapsed() < Duration::from_secs(20) {
            w.fetch_add(1, Ordering::SeqCst);
            wake(&w, 1);
            std::thread::sleep(Duration::from_millis(5));
        }
        let got = t.join().unwrap();
        assert!(matches!(got, Wait::Woken | Wait::Changed), "{got:?}");
    }
}
