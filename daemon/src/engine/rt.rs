//! Real-time scheduling for the engine threads, with a CPU-time guard.
//!
//! A thread that got `SCHED_FIFO` calls [`guard_this_thread`]: the first one sets the
//! process's `RLIMIT_RTTIME` (soft [`RTTIME_SOFT_US`], hard [`RTTIME_HARD_US`], never above a
//! lower limit already in force) and installs a `SIGXCPU` handler. The kernel sends `SIGXCPU`
//! when a real-time thread ran that long without blocking; the handler (async-signal-safe:
//! only `sched_setscheduler` and atomics) demotes every registered real-time thread to
//! `SCHED_OTHER` instead of letting the process die at the hard limit, and counts it in
//! [`demotions`] for the control side to log.

use nix::errno::Errno;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Once;

/// Soft `RLIMIT_RTTIME`: µs of real-time CPU without blocking before `SIGXCPU`.
pub const RTTIME_SOFT_US: u64 = 200_000;
/// Hard `RLIMIT_RTTIME` (the kernel kills at this limit; we demote well before).
pub const RTTIME_HARD_US: u64 = 2_000_000;

const MAX_RT_THREADS: usize = 64;
static RT_TIDS: [AtomicI32; MAX_RT_THREADS] = [const { AtomicI32::new(0) }; MAX_RT_THREADS];
static DEMOTIONS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();
static INSTALLED: AtomicI32 = AtomicI32::new(0);

/// Times the `SIGXCPU` handler demoted the real-time threads.
pub fn demotions() -> u64 {
    DEMOTIONS.load(Ordering::Relaxed)
}

extern "C" fn on_sigxcpu(_sig: libc::c_int) {
    let param = libc::sched_param { sched_priority: 0 };
    for slot in &RT_TIDS {
        let tid = slot.load(Ordering::Relaxed);
        if tid != 0 {
            // SAFETY: sched_setscheduler is async-signal-safe; `param` is a valid sched_param
            // on our stack; a stale tid only makes the call fail.
            unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) };
        }
    }
    DEMOTIONS.fetch_add(1, Ordering::Relaxed);
}

/// Registers the calling (`SCHED_FIFO`) thread with the CPU-time guard, installing it on
/// first use. Returns the soft limit in µs, or the errno if the limit or handler could not
/// be set (the thread keeps its priority).
pub fn guard_this_thread() -> Result<u64, Errno> {
    INSTALL.call_once(|| {
        let rc = install();
        INSTALLED.store(rc, Ordering::Release);
    });
    match INSTALLED.load(Ordering::Acquire) {
        0 => {}
        e => return Err(Errno::from_raw(e)),
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    for slot in &RT_TIDS {
        if slot
            .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            break;
        }
    }
    Ok(RTTIME_SOFT_US)
}

/// Forgets the calling thread (before it exits).
pub fn unguard_this_thread() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    for slot in &RT_TIDS {
        let _ = slot.compare_exchange(tid, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// Sets RLIMIT_RTTIME and the SIGXCPU handler; 0 or an errno.
fn install() -> i32 {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `cur` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_RTTIME, &mut cur) } != 0 {
        return Errno::last_raw();
    }
    let hard = cur.rlim_max.min(RTTIME_HARD_US as libc::rlim_t);
    let new = libc::rlimit {
        rlim_cur: cur.rlim_cur.min(RTTIME_SOFT_US as libc::rlim_t).min(hard),
        rlim_max: hard,
    };
    // SAFETY: an all-zero sigaction is valid; we fill handler and mask before use.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigxcpu as extern "C" fn(libc::c_int) as usize;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: sa.sa_mask is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: `sa` is fully initialised and the handler only does async-signal-safe work.
    if unsafe { libc::sigaction(libc::SIGXCPU, &sa, std::ptr::null_mut()) } != 0 {
        return Errno::last_raw();
    }
    // SAFETY: `new` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_RTTIME, &new) } != 0 {
        return Errno::last_raw();
    }
    0
}

/// Switches the calling thread to `SCHED_FIFO` at `priority` (1..=99 on Linux).
///
/// Fails with the errno `pthread_setschedparam` returned: typically `EPERM` without
/// `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` allowance, `EINVAL` for a priority out of range.
pub fn set_fifo(priority: i32) -> Result<(), Errno> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `pthread_self()` is always a valid handle for the calling thread, and `param`
    // is a fully initialised `sched_param` that outlives the call, which only reads it.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw(rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_priority_is_refused_with_an_errno() {
        // Priority 0 is invalid for SCHED_FIFO whatever our privileges.
        let err = std::thread::spawn(|| set_fifo(0))
            .join()
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, Errno::EINVAL | Errno::EPERM), "{err}");
    }
}
