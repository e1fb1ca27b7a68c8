//! Real-time scheduling for the engine thread.

use nix::errno::Errno;

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
