//! Fault injection for tests: a wrapper around an ALSA PCM's I/O that returns chosen errnos.
//!
//! A test calls [`plan`] with a PCM name *before* the device is opened; from then on every
//! open of that name wraps the PCM in [`Faulty`], whose I/O consults the [`FaultPlan`]. The
//! choice happens once, at open time ([`wrap`]), so the real device path has no branch for it
//! in its hot loop; in a daemon no code registers a plan, so it is inert.

use super::alsa::PcmIo;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the wrapped device should do. All fields are atomics: a test flips them while the
/// engine runs.
#[derive(Debug, Default)]
pub struct FaultPlan {
    once: AtomicI32,
    burst_errno: AtomicI32,
    burst_left: AtomicU64,
    gone: AtomicBool,
    injected: AtomicU64,
    opens: AtomicU64,
}

impl FaultPlan {
    /// The next read or write fails once with `errno` (e.g. `libc::EPIPE`, `libc::ESTRPIPE`).
    pub fn inject_once(&self, errno: i32) {
        self.once.store(errno, Ordering::Release);
    }

    /// The next `count` reads or writes fail with `errno` (a storm, e.g. of `libc::EAGAIN`).
    /// A pending [`FaultPlan::inject_once`] error comes first.
    pub fn inject_burst(&self, errno: i32, count: u64) {
        self.burst_left.store(0, Ordering::Release);
        self.burst_errno.store(errno, Ordering::Release);
        self.burst_left.store(count, Ordering::Release);
    }

    /// I/Os of the current burst still to fail.
    pub fn burst_left(&self) -> u64 {
        self.burst_left.load(Ordering::Acquire)
    }

    /// Whether the error queued by [`FaultPlan::inject_once`] is still waiting for an I/O.
    pub fn once_pending(&self) -> bool {
        self.once.load(Ordering::Acquire) != 0
    }

    /// While `gone`, every I/O fails with `ENODEV` and opening the device fails with `ENODEV`,
    /// as if it had been unplugged.
    pub fn set_gone(&self, gone: bool) {
        self.gone.store(gone, Ordering::Release);
    }

    /// Whether the device is "unplugged".
    pub fn gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Times the device was opened or an open was attempted (the first open and every reopen
    /// after a fault, successful or not).
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::Acquire)
    }

    /// Errors injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn next_error(&self) -> Option<i32> {
        if self.gone() {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Some(libc::ENODEV);
        }
        match self.once.swap(0, Ordering::AcqRel) {
            0 => {}
            e => {
                self.injected.fetch_add(1, Ordering::Relaxed);
                return Some(e);
            }
        }
        let took = self
            .burst_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        match (took, self.burst_errno.load(Ordering::Acquire)) {
            (Ok(_), e) if e != 0 => {
                self.injected.fetch_add(1, Ordering::Relaxed);
                Some(e)
            }
            _ => None,
        }
    }
}

type Plans = Vec<(String, Arc<FaultPlan>)>;
static PLANS: Mutex<Plans> = Mutex::new(Vec::new());

fn plans() -> std::sync::MutexGuard<'static, Plans> {
    PLANS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fault plan for PCM `device`, registered if it was not. Call before the device opens.
pub fn plan(device: &str) -> Arc<FaultPlan> {
    let mut plans = plans();
    if let Some((_, p)) = plans.iter().find(|(d, _)| d == device) {
        return Arc::clone(p);
    }
    let p = Arc::new(FaultPlan::default());
    plans.push((device.to_string(), Arc::clone(&p)));
    p
}

fn lookup(device: &str) -> Option<Arc<FaultPlan>> {
    plans()
        .iter()
        .find(|(d, _)| d == device)
        .map(|(_, p)| Arc::clone(p))
}

/// Called when opening `device`: `Some(ENODEV)` if a test has "unplugged" it.
/// Counts the attempt.
pub(crate) fn open_blocked(device: &str) -> Option<i32> {
    let plan = lookup(device)?;
    plan.opens.fetch_add(1, Ordering::AcqRel);
    plan.gone().then_some(libc::ENODEV)
}

/// Called once per open: wraps `io` if a test registered a plan for `device`.
pub(crate) fn wrap(device: &str, io: Box<dyn PcmIo>) -> Box<dyn PcmIo> {
    match lookup(device) {
        Some(plan) => Box::new(Faulty { inner: io, plan }),
        None => io,
    }
}

/// A PCM whose I/O fails as its [`FaultPlan`] says.
#[derive(Debug)]
pub struct Faulty {
    inner: Box<dyn PcmIo>,
    plan: Arc<FaultPlan>,
}

impl PcmIo for Faulty {
    fn writei(&mut self, buf: &[u8]) -> Result<usize, i32> {
        match self.plan.next_error() {
            Some(e) => Err(e),
            None => self.inner.writei(buf),
        }
    }
    fn readi(&mut self, buf: &mut [u8]) -> Result<usize, i32> {
        match self.plan.next_error() {
            Some(e) => Err(e),
            None => self.inner.readi(buf),
        }
    }
    fn wait(&mut self, timeout_ms: u32) -> Result<bool, i32> {
        if self.plan.gone() {
            return Err(libc::ENODEV);
        }
        self.inner.wait(timeout_ms)
    }
    fn prepare(&mut self) -> Result<(), i32> {
        if self.plan.gone() {
            return Err(libc::ENODEV);
        }
        self.inner.prepare()
    }
    fn resume(&mut self) -> Result<(), i32> {
        if self.plan.gone() {
            return Err(libc::ENODEV);
        }
        // Plugin PCMs cannot resume (ENOSYS); the backend then re-prepares, as with hardware.
        self.inner.resume()
    }
}
