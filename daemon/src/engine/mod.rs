//! The real-time engine: one thread per sink, paced by a timer, that mixes every playback
//! stream's shared-memory ring into the sink's backend and copies the mix (the monitor) into
//! every record stream's ring.
//!
//! # Real-time contract
//!
//! After setup (everything [`SinkHandle::spawn`] does before the loop starts, including the
//! `SCHED_FIFO` attempt and reporting its outcome), the engine thread:
//!
//! - **allocates nothing**: the stream lists are `Vec`s with capacity `max_streams` (a push
//!   within capacity does not allocate), the scratch buffers hold `quantum * MAX_FRAME_BYTES`
//!   bytes and `quantum * MAX_CHANNELS` samples, the mix and output buffers are sized for the
//!   sink; all of it is allocated on the spawning thread;
//! - **takes no lock and logs nothing**; meters and counters are published through atomics
//!   ([`StreamShared`], [`SinkShared`]);
//! - **makes no blocking syscall** but the clock sleep (`clock_nanosleep(TIMER_ABSTIME)` on
//!   `CLOCK_MONOTONIC`) and a device-clocked backend's device wait — and, only while it carries
//!   no stream at all, the idle sleep (see *Idle suspend*). It never touches a file
//!   a client holds: clients are woken through their ring header's futex word
//!   ([`soundgate_proto::futex`]; `FUTEX_WAKE` cannot block, whatever the client wrote in the
//!   header), and the only eventfd it writes is the sink's own notify eventfd
//!   (`EFD_NONBLOCK`, never given to anyone, `EAGAIN` ignored);
//! - **wakes a client at most once per cycle**: a playback client only when its header says
//!   it is waiting and the ring's fill dropped below the threshold it published
//!   ([`soundgate_proto::ring::Ring::take_wake_request`]; the request is consumed), a record
//!   reader when its write index crossed a quarter of the ring
//!   ([`soundgate_proto::ring::record_wake_every`]); [`SinkShared::wakeups`] counts them;
//! - **owns all the state it touches** in one struct (`Engine`, private), moved into the
//!   thread at spawn;
//! - **receives streams** on a lock-free `rtrb` queue of `max_streams` slots, drained at the
//!   start of each cycle. The control side never hands over more than `max_streams` streams
//!   that have not been collected back, so the queue cannot overflow;
//! - **cannot lose a removal**: the control side removes a stream by setting its
//!   [`StreamShared`] release flag ([`SinkHandle::remove`], which cannot fail); the engine
//!   checks every stream's flag each cycle and retires the flagged ones;
//! - **drops nothing that frees**: streams leave on a second `rtrb` queue, also sized
//!   `max_streams` (at most that many exist), and are dropped by
//!   [`SinkHandle::collect_retired`] on the control side. No `Arc` and no `Ring` is dropped
//!   inside the loop.
//!
//! The backend's `write` runs on this thread and is bound by the same rules (see
//! [`crate::backend`]); its `finish` runs after the loop, when the rules no longer apply.
//!
//! # Pacing
//!
//! With a backend whose clock is [`Clock::Device`] the loop does not sleep: the backend's
//! `write` (sink) or `read` (source) waits for the device, and that wait is the engine's
//! device wait. While such a device is unavailable, and for [`Clock::Timer`] backends,
//! cycle `n` is due at `start + n * quantum * 1e9 / rate` ns (u128 arithmetic from `n`, so no
//! drift). A cycle that is late by less than [`LATE_REBASE_NS`] runs at once, so small delays
//! are caught up by running back to back; one later than that (a VM stall, a suspended
//! process) counts in [`SinkShared::late_cycles`] and re-bases the clock instead of bursting.
//!
//! # Idle suspend
//!
//! With [`SinkShared::set_idle_suspend`] set (the core sets `[engine] idle_suspend_secs` for
//! null and ALSA devices), an engine that has had no stream — none carried, queued, or waiting
//! to be handed back — for that long stops its clock: it calls the backend's `set_idle(true)`
//! (ALSA stops the PCM), sets [`SinkShared::idle`], and sleeps on a futex word in
//! [`SinkShared`] (daemon memory; no client holds it). Queueing a stream and stopping bump
//! that word and wake it after the queue push; the engine reads the word, re-checks its
//! queue and stop flag, then waits on the value it read, so no wake-up is lost. On resume it
//! calls `set_idle(false)`, restarts its clock from now and runs a cycle at once.
//!
//! # Kernels
//!
//! The mix and conversion kernels are called through [`mix::MixKernels`] and
//! [`convert::ConvertKernels`] tables chosen when the engine is spawned (runtime CPU dispatch;
//! see [`soundgate_proto::convert::Isa`]).
//!
//! # Streams
//!
//! A playback stream is *prebuffering* until its ring holds at least one quantum (or it is
//! draining), then *playing*: each cycle it gives one quantum; when it has less it gives what
//! it has, the rest is silence, and it goes back to prebuffering, counting one underrun per dry
//! spell unless it is draining. Corked streams are skipped. A write index that went backwards
//! or claims more than the ring holds ends the stream with [`EndReason::BadIndex`].
//! Gain ramps linearly per frame, across one cycle, from the stream's current gain to its
//! target (volume, or 0 when muted); a new stream starts at its target.
//!
//! # Sources and device faults
//!
//! [`SinkHandle::spawn_source`] runs the same loop for a capture device: each cycle reads one
//! quantum from the [`CaptureBackend`], decodes it to f32 and copies it into every record
//! stream's ring exactly as the monitor path does; it takes no playback streams.
//!
//! A backend reports device faults as [`BackendError::Fault`]: xruns and suspends are counted
//! in [`SinkShared`]; [`DeviceFault::Unavailable`] marks the device unavailable
//! ([`SinkShared::available`]), wakes the control side through the notify eventfd (as retired
//! streams do), and from then on the engine runs on its timer, writes nothing to the device
//! (record streams are paused; playback streams keep being consumed, into nothing, until the
//! core moves them) and asks [`Backend::poll_available`] once per cycle; when the device is
//! back it says so the same way.
//!
//! Positions are kept by the engine, never read back from the peer: a stream's read (playback)
//! or write (record) index is its [`StreamShared::frames`] counter, so a stream handed to
//! another sink carries its position with it.

pub mod mix;
pub mod rt;
pub mod timer;

use crate::backend::{Backend, BackendError, CaptureBackend, Clock, DeviceFault, DeviceReport};
use nix::sys::eventfd::{EfdFlags, EventFd};
use soundgate_proto::convert;
use soundgate_proto::format::{SpecError, MAX_CHANNELS};
use soundgate_proto::ring::{self, readable, Ring, MAX_FRAME_BYTES};
use soundgate_proto::wire::StreamId;
use soundgate_proto::StreamSpec;
use std::os::fd::OwnedFd;
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

/// Largest quantum a sink may have, in frames.
pub const MAX_QUANTUM: u32 = 16_384;
/// Most streams one sink may carry.
pub const MAX_STREAMS_LIMIT: usize = 4_096;
/// Longest single idle sleep (the loop sleeps again if nothing arrived).
const IDLE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

/// A wake-up later than this re-bases the clock instead of catching up.
pub const LATE_REBASE_NS: u64 = 200_000_000;

// ---------------------------------------------------------------------------------------------
// Per-stream shared state

const ENDED_NONE: u8 = 0;
const ENDED_BAD_INDEX: u8 = 1;

/// Why the engine dropped a stream on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client's write index went backwards or beyond the ring's capacity.
    BadIndex,
}

/// Controls and meters of one stream, shared by the control side and the engine. Atomics only;
/// every access is `Relaxed` except `ended` (published with Release before the stream is
/// retired).
#[derive(Debug)]
pub struct StreamShared {
    volume: AtomicU32,
    muted: AtomicBool,
    corked: AtomicBool,
    draining: AtomicBool,
    underruns: AtomicU64,
    frames: AtomicU64,
    peak: AtomicU32,
    rms: AtomicU32,
    ended: AtomicU8,
    release: AtomicBool,
    /// Futex wakes the engine made for this stream's client.
    wakeups: AtomicU64,
    /// When the control side created it (for rates).
    created: std::time::Instant,
}

impl StreamShared {
    /// New controls; counters at zero.
    pub fn new(volume: f32, muted: bool, corked: bool) -> Arc<StreamShared> {
        let s = StreamShared {
            volume: AtomicU32::new(0),
            muted: AtomicBool::new(muted),
            corked: AtomicBool::new(corked),
            draining: AtomicBool::new(false),
            underruns: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            peak: AtomicU32::new(0),
            rms: AtomicU32::new(0),
            ended: AtomicU8::new(ENDED_NONE),
            release: AtomicBool::new(false),
            wakeups: AtomicU64::new(0),
            created: std::time::Instant::now(),
        };
        s.set_volume(volume);
        Arc::new(s)
    }

    /// Client wake-ups (futex wakes) the engine made for this stream.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    /// Mean client wake-ups per second since the stream was created.
    pub fn wakeups_per_sec(&self) -> f64 {
        let secs = self.created.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.wakeups() as f64 / secs
        } else {
            0.0
        }
    }

    /// Sets the linear volume (1.0 = unity). Negative or non-finite values become 0.
    pub fn set_volume(&self, v: f32) {
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        self.volume.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The linear volume.
    pub fn volume(&self) -> f32 {
        f32::from_bits(self.volume.load(Ordering::Relaxed))
    }

    /// Mutes or unmutes (the gain ramps to or from 0).
    pub fn set_muted(&self, m: bool) {
        self.muted.store(m, Ordering::Relaxed);
    }

    /// Whether muted.
    pub fn muted(&self) -> bool {
        self.muted.load(Ordering::Relaxed)
    }

    /// Pauses (corks) or resumes the stream: a corked stream is skipped entirely.
    pub fn set_corked(&self, c: bool) {
        self.corked.store(c, Ordering::Relaxed);
    }

    /// Whether corked.
    pub fn corked(&self) -> bool {
        self.corked.load(Ordering::Relaxed)
    }

    /// Marks a playback stream as draining: it plays whatever it has, and running dry is no
    /// underrun.
    pub fn set_draining(&self, d: bool) {
        self.draining.store(d, Ordering::Relaxed);
    }

    /// Whether draining.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Playback: how many times it ran dry while playing (not draining).
    pub fn underruns(&self) -> u64 {
        self.underruns.load(Ordering::Relaxed)
    }

    /// Frames consumed (playback) or produced (record) since the stream began; this is also
    /// the engine's read or write index in the ring.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Peak |sample| of the last cycle, after gain (record: the peak of the sink's mix).
    pub fn peak(&self) -> f32 {
        f32::from_bits(self.peak.load(Ordering::Relaxed))
    }

    /// RMS of the last cycle, after gain, over the whole quantum (a short cycle's missing
    /// frames count as silence; record: the RMS of the device's signal).
    pub fn rms(&self) -> f32 {
        f32::from_bits(self.rms.load(Ordering::Relaxed))
    }

    fn set_rms(&self, r: f32) {
        self.rms.store(r.to_bits(), Ordering::Relaxed);
    }

    /// Set when the engine dropped the stream on its own.
    pub fn ended(&self) -> Option<EndReason> {
        match self.ended.load(Ordering::Acquire) {
            ENDED_BAD_INDEX => Some(EndReason::BadIndex),
            _ => None,
        }
    }

    /// Asks the engine that carries this stream to let go of it: it retires the stream at the
    /// start of its next cycle. Cannot fail and cannot be lost (it is a flag, not a message).
    pub fn request_release(&self) {
        self.release.store(true, Ordering::Release);
    }

    /// Withdraws a release request (the core does this before handing a moved stream to its
    /// next engine).
    pub fn cancel_release(&self) {
        self.release.store(false, Ordering::Release);
    }

    /// Whether the stream was asked to leave its engine.
    pub fn release_requested(&self) -> bool {
        self.release.load(Ordering::Acquire)
    }

    fn set_ended(&self, r: EndReason) {
        let v = match r {
            EndReason::BadIndex => ENDED_BAD_INDEX,
        };
        self.ended.store(v, Ordering::Release);
    }

    fn set_peak(&self, p: f32) {
        self.peak.store(p.to_bits(), Ordering::Relaxed);
    }

    /// The gain the engine ramps towards.
    fn target_gain(&self) -> f32 {
        if self.muted() {
            0.0
        } else {
            self.volume()
        }
    }
}

/// A playback stream, fully built (ring mapped and checked) before it reaches the engine.
#[derive(Debug)]
pub struct PlaybackStream {
    /// The stream's id.
    pub id: StreamId,
    /// The client-written ring; its header's futex word is how the client is woken.
    pub ring: Ring,
    /// The client's format, channels and rate (the rate must be the sink's).
    pub spec: StreamSpec,
    /// Controls and meters.
    pub shared: Arc<StreamShared>,
}

/// A record stream on a sink's monitor; its ring is written by the engine only.
#[derive(Debug)]
pub struct RecordStream {
    /// The stream's id.
    pub id: StreamId,
    /// The server-written ring (the client maps it read-only); its header's futex word is
    /// woken after every quantum the engine wrote.
    pub ring: Ring,
    /// The client's format, channels and rate (the rate must be the sink's).
    pub spec: StreamSpec,
    /// Controls and meters.
    pub shared: Arc<StreamShared>,
}

/// A stream the engine gave back, to be dropped (unmapped, fds closed) on the control side.
#[derive(Debug)]
pub enum Retired {
    /// A playback stream.
    Playback(PlaybackStream),
    /// A record stream.
    Record(RecordStream),
}

impl Retired {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        match self {
            Retired::Playback(s) => s.id,
            Retired::Record(s) => s.id,
        }
    }

    /// The stream's shared controls and meters.
    pub fn shared(&self) -> &Arc<StreamShared> {
        match self {
            Retired::Playback(s) => &s.shared,
            Retired::Record(s) => &s.shared,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sink

/// What a sink is made of.
#[derive(Debug, Clone)]
pub struct SinkParams {
    /// Name, for logs and the thread name.
    pub name: String,
    /// The device's format, channels and rate.
    pub spec: StreamSpec,
    /// Frames per cycle.
    pub quantum: u32,
    /// Most streams (playback and record together) the sink carries at once.
    pub max_streams: usize,
    /// `SCHED_FIFO` priority to ask for; `None` runs at normal priority without trying.
    pub rt_priority: Option<i32>,
}

/// Buckets of the cycle-time histogram ([`SinkShared::cycle_stats`]).
pub const CYCLE_BUCKETS: usize = 64;
/// Upper bound of the histogram's first bucket is `CYCLE_BUCKET_BASE_NS * 2^(1/3)`.
const CYCLE_BUCKET_BASE_NS: f64 = 128.0;

/// The histogram bucket of a cycle that took `ns`: third-octave buckets from 128 ns, the last
/// one open-ended (from about 268 ms). Pure arithmetic; safe on the RT thread.
pub fn cycle_bucket(ns: u64) -> usize {
    let x = ns as f64 / CYCLE_BUCKET_BASE_NS;
    if x < 1.0 {
        return 0;
    }
    let i = (3.0 * x.log2()).floor();
    if i >= (CYCLE_BUCKETS - 1) as f64 {
        CYCLE_BUCKETS - 1
    } else {
        i as usize
    }
}

/// The upper bound of bucket `i`, in ns (see [`cycle_bucket`]).
pub fn cycle_bucket_upper_ns(i: usize) -> f64 {
    CYCLE_BUCKET_BASE_NS * ((i as f64 + 1.0) / 3.0).exp2()
}

/// Engine cycle-time figures since the device started ([`SinkShared::cycle_stats`]). Only the
/// engine's work is timed, not its sleep, nor a device-clocked backend's wait for the device.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CycleStats {
    /// Mean work time per cycle, µs (exact: a sum and a count).
    pub mean_us: f64,
    /// 99th percentile, µs: the upper bound of the histogram bucket holding it (third-octave
    /// resolution), never above `max_us`.
    pub p99_us: f64,
    /// Longest cycle, µs (exact).
    pub max_us: f64,
    /// Cycles measured.
    pub cycles: u64,
}

/// Meters, counters and device controls of one sink or source, shared by the engine and the
/// control side. Atomics only.
#[derive(Debug)]
pub struct SinkShared {
    peak: AtomicU32,
    rms: AtomicU32,
    /// Device controls, written by the control side.
    suspended: AtomicBool,
    volume: AtomicU32,
    muted: AtomicBool,
    /// Cycle-time histogram and the sum of all cycle times.
    hist: [AtomicU64; CYCLE_BUCKETS],
    cycle_sum_ns: AtomicU64,
    /// quantum / rate, in ns.
    budget_ns: u64,
    cycles: AtomicU64,
    late_cycles: AtomicU64,
    max_cycle_ns: AtomicU64,
    last_cycle_ns: AtomicU64,
    backend_errors: AtomicU64,
    backend_dropped_bytes: AtomicU64,
    xruns: AtomicU64,
    suspends: AtomicU64,
    unavailable: AtomicBool,
    outages: AtomicU64,
    last_errno: AtomicI32,
    /// Streams in the engine loop, published each cycle.
    streams: AtomicU32,
    /// Client wake-ups (futex wakes) made.
    wakeups: AtomicU64,
    /// Idle suspend: ns without a stream before the clock stops (0: never). Set by the
    /// control side ([`SinkShared::set_idle_suspend`]).
    idle_after_ns: AtomicU64,
    /// Whether the engine is idle (clock stopped, thread asleep on `idle_word`).
    idle: AtomicBool,
    /// Times the engine went idle.
    idle_entries: AtomicU64,
    /// The futex word the idle engine sleeps on; bumped by [`SinkShared::kick`]. Lives in the
    /// daemon's own memory: no client can see or touch it.
    idle_word: AtomicU32,
}

impl SinkShared {
    /// Fresh meters for a device whose cycle budget (quantum / rate) is `budget_ns`; not
    /// suspended, volume 1.0, unmuted.
    pub fn new(budget_ns: u64) -> SinkShared {
        SinkShared {
            peak: AtomicU32::new(0),
            rms: AtomicU32::new(0),
            suspended: AtomicBool::new(false),
            volume: AtomicU32::new(1.0f32.to_bits()),
            muted: AtomicBool::new(false),
            hist: std::array::from_fn(|_| AtomicU64::new(0)),
            cycle_sum_ns: AtomicU64::new(0),
            budget_ns,
            cycles: AtomicU64::new(0),
            late_cycles: AtomicU64::new(0),
            max_cycle_ns: AtomicU64::new(0),
            last_cycle_ns: AtomicU64::new(0),
            backend_errors: AtomicU64::new(0),
            backend_dropped_bytes: AtomicU64::new(0),
            xruns: AtomicU64::new(0),
            suspends: AtomicU64::new(0),
            unavailable: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            last_errno: AtomicI32::new(0),
            streams: AtomicU32::new(0),
            wakeups: AtomicU64::new(0),
            idle_after_ns: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            idle_entries: AtomicU64::new(0),
            idle_word: AtomicU32::new(0),
        }
    }

    /// After how long without a stream the engine stops its clock and sleeps until the next
    /// stream (or stop) arrives; `Duration::ZERO` (the default) never. An ALSA device is
    /// stopped (`snd_pcm_drop`) while idle and prepared again on resume.
    pub fn set_idle_suspend(&self, after: std::time::Duration) {
        let ns = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        self.idle_after_ns.store(ns, Ordering::Relaxed);
        // An engine already idle keeps sleeping; one counting down sees the new value.
        self.kick();
    }

    /// Whether the engine is idle: no stream, clock stopped, thread asleep.
    pub fn idle(&self) -> bool {
        self.idle.load(Ordering::Acquire)
    }

    /// Times the engine went idle since the device started.
    pub fn idle_entries(&self) -> u64 {
        self.idle_entries.load(Ordering::Relaxed)
    }

    /// Wakes an idle engine so that it looks at its command queue and stop flag. Control side
    /// only (one `FUTEX_WAKE`, never blocks).
    fn kick(&self) {
        self.idle_word.fetch_add(1, Ordering::Release);
        soundgate_proto::futex::wake(&self.idle_word, 1);
    }

    /// Suspends or resumes the device. A suspended sink consumes nothing from its playback
    /// streams (they hold their position and count no underruns) and writes silence to its
    /// backend, so the device keeps its clock and a file sink's timeline stays continuous
    /// (silence where it was suspended); its monitor's record streams get nothing. A suspended
    /// source keeps reading its device (so it does not overrun) and delivers nothing.
    pub fn set_suspended(&self, s: bool) {
        self.suspended.store(s, Ordering::Relaxed);
    }

    /// Whether suspended.
    pub fn suspended(&self) -> bool {
        self.suspended.load(Ordering::Relaxed)
    }

    /// Sets the device's own linear volume, applied to the mix (or the captured signal)
    /// before clamping and ramped over one cycle. Negative or non-finite values become 0.
    pub fn set_volume(&self, v: f32) {
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        self.volume.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The device's linear volume.
    pub fn volume(&self) -> f32 {
        f32::from_bits(self.volume.load(Ordering::Relaxed))
    }

    /// Mutes or unmutes the device (the gain ramps to or from 0).
    pub fn set_muted(&self, m: bool) {
        self.muted.store(m, Ordering::Relaxed);
    }

    /// Whether the device is muted.
    pub fn muted(&self) -> bool {
        self.muted.load(Ordering::Relaxed)
    }

    fn target_gain(&self) -> f32 {
        if self.muted() {
            0.0
        } else {
            self.volume()
        }
    }

    /// RMS of the last cycle's mix (after device gain and clamping), or of the captured signal.
    pub fn rms(&self) -> f32 {
        f32::from_bits(self.rms.load(Ordering::Relaxed))
    }

    /// The cycle budget, quantum / rate, in µs.
    pub fn budget_us(&self) -> f64 {
        self.budget_ns as f64 / 1000.0
    }

    /// Cycle-time figures from the lock-free histogram. Read while the engine runs, the
    /// figures may straddle one cycle; they never tear individually.
    pub fn cycle_stats(&self) -> CycleStats {
        let mut counts = [0u64; CYCLE_BUCKETS];
        for (c, h) in counts.iter_mut().zip(&self.hist) {
            *c = h.load(Ordering::Relaxed);
        }
        let cycles: u64 = counts.iter().sum();
        let max_us = self.max_cycle_ns() as f64 / 1000.0;
        if cycles == 0 {
            return CycleStats {
                max_us,
                ..CycleStats::default()
            };
        }
        let mean_us = self.cycle_sum_ns.load(Ordering::Relaxed) as f64 / cycles as f64 / 1000.0;
        let want = cycles - cycles / 100; // ceil(0.99 * cycles) for the counts that matter
        let mut seen = 0;
        let mut p99_us = max_us;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                p99_us = (cycle_bucket_upper_ns(i) / 1000.0).min(max_us);
                break;
            }
        }
        CycleStats {
            mean_us,
            p99_us,
            max_us,
            cycles,
        }
    }

    /// Records one cycle's work time (engine thread; atomics only).
    fn record_cycle(&self, ns: u64) {
        self.hist[cycle_bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.cycle_sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.last_cycle_ns.store(ns, Ordering::Relaxed);
        self.max_cycle_ns.fetch_max(ns, Ordering::Relaxed);
        self.cycles.fetch_add(1, Ordering::Relaxed);
    }

    /// Peak |sample| of the last cycle's mix, after clamping.
    pub fn peak(&self) -> f32 {
        f32::from_bits(self.peak.load(Ordering::Relaxed))
    }

    /// Cycles run.
    pub fn cycles(&self) -> u64 {
        self.cycles.load(Ordering::Relaxed)
    }

    /// Wake-ups more than [`LATE_REBASE_NS`] late, after which the clock was re-based.
    pub fn late_cycles(&self) -> u64 {
        self.late_cycles.load(Ordering::Relaxed)
    }

    /// Longest time one cycle's work took, in ns.
    pub fn max_cycle_ns(&self) -> u64 {
        self.max_cycle_ns.load(Ordering::Relaxed)
    }

    /// Time the last cycle's work took, in ns.
    pub fn last_cycle_ns(&self) -> u64 {
        self.last_cycle_ns.load(Ordering::Relaxed)
    }

    /// Backend writes that failed.
    pub fn backend_errors(&self) -> u64 {
        self.backend_errors.load(Ordering::Relaxed)
    }

    /// Bytes the backend discarded because its consumer fell behind.
    pub fn backend_dropped_bytes(&self) -> u64 {
        self.backend_dropped_bytes.load(Ordering::Relaxed)
    }

    /// Device over- or underruns the backend recovered from.
    pub fn xruns(&self) -> u64 {
        self.xruns.load(Ordering::Relaxed)
    }

    /// Times the device was suspended and resumed (or re-prepared).
    pub fn suspends(&self) -> u64 {
        self.suspends.load(Ordering::Relaxed)
    }

    /// Whether the device works (false after [`DeviceFault::Unavailable`] until it is back).
    pub fn available(&self) -> bool {
        !self.unavailable.load(Ordering::Acquire)
    }

    /// Times the device became unavailable.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }

    /// The errno of the last outage (0 if none).
    pub fn last_errno(&self) -> i32 {
        self.last_errno.load(Ordering::Relaxed)
    }

    /// Streams (playback and record) the engine thread carried in its last cycle: its real
    /// count, not the registry's.
    pub fn engine_streams(&self) -> u32 {
        self.streams.load(Ordering::Relaxed)
    }

    /// Client wake-ups (futex wakes) the engine made since the device started.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

/// Failures of the engine's control side.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The sink's spec is out of range.
    #[error("sink {sink}: {source}")]
    Spec {
        /// Sink name.
        sink: String,
        /// What is wrong.
        source: SpecError,
    },
    /// The quantum is 0 or above [`MAX_QUANTUM`].
    #[error("sink {sink}: quantum {quantum} is outside 1..={MAX_QUANTUM} frames")]
    Quantum {
        /// Sink name.
        sink: String,
        /// The refused quantum.
        quantum: u32,
    },
    /// `max_streams` is 0 or above [`MAX_STREAMS_LIMIT`].
    #[error("sink {sink}: max_streams {max} is outside 1..={MAX_STREAMS_LIMIT}")]
    MaxStreams {
        /// Sink name.
        sink: String,
        /// The refused limit.
        max: usize,
    },
    /// Creating the notify eventfd failed.
    #[error("sink {sink}: creating the notify eventfd: {source}")]
    Notify {
        /// Sink name.
        sink: String,
        /// The errno.
        source: nix::Error,
    },
    /// Starting the engine thread failed.
    #[error("sink {sink}: starting the engine thread: {source}")]
    Spawn {
        /// Sink name.
        sink: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The sink already carries `max` streams (counting retired ones not yet collected).
    #[error("sink {sink} already carries its maximum of {max} streams")]
    TooManyStreams {
        /// Sink name.
        sink: String,
        /// The limit.
        max: usize,
    },
    /// The command queue is full; the engine has not caught up. Retrying shortly can help.
    #[error("sink {sink}: command queue full (the engine thread is not keeping up); retry")]
    QueueFull {
        /// Sink name.
        sink: String,
    },
    /// The stream does not fit this sink (rate, ring geometry, writable mapping).
    #[error("sink {sink}: stream {id} refused: {reason}")]
    Stream {
        /// Sink name.
        sink: String,
        /// The stream.
        id: StreamId,
        /// What is wrong.
        reason: String,
    },
    /// A source takes no playback streams.
    #[error("{sink} is a capture source; it takes no playback streams")]
    NotASink {
        /// Source name.
        sink: String,
    },
    /// The device was stopped ([`SinkHandle::stop`]); it takes no more commands.
    #[error("{sink} was stopped")]
    Stopped {
        /// Device name.
        sink: String,
    },
    /// The engine thread panicked.
    #[error("sink {sink}: the engine thread panicked")]
    Panicked {
        /// Sink name.
        sink: String,
    },
    /// The backend failed to finish (e.g. the WAV file could not be finalised).
    #[error("sink {sink}: finishing backend: {source}")]
    Backend {
        /// Sink name.
        sink: String,
        /// The backend's error.
        source: BackendError,
    },
}

enum Command {
    AddPlayback(PlaybackStream),
    AddRecord(RecordStream),
}

/// How the engine thread's `SCHED_FIFO` attempt went.
enum SchedReport {
    NotRequested,
    /// Priority, and the RLIMIT_RTTIME guard (soft limit in µs, or why it is not set).
    Fifo(i32, Result<u64, nix::errno::Errno>),
    Refused(i32, nix::errno::Errno),
}

/// The control side of one sink's engine thread. Dropping it stops the thread too (ignoring
/// the backend's finish error); prefer [`SinkHandle::shutdown`].
pub struct SinkHandle {
    name: String,
    spec: StreamSpec,
    quantum: u32,
    max_streams: usize,
    commands: Mutex<rtrb::Producer<Command>>,
    retired: Mutex<rtrb::Consumer<Retired>>,
    /// Streams handed to the engine and not yet collected back.
    live: AtomicUsize,
    /// The control side's end of the notify eventfd; closed by [`SinkHandle::release_notify`]
    /// once a removed device's engine is stopped, so a removed device keeps no fd.
    notify: Mutex<Option<OwnedFd>>,
    shared: Arc<SinkShared>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<Result<(), BackendError>>>>,
    source: bool,
    clock: Clock,
    report: DeviceReport,
}

impl std::fmt::Debug for SinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHandle")
            .field("name", &self.name)
            .field("spec", &self.spec)
            .field("quantum", &self.quantum)
            .field("max_streams", &self.max_streams)
            .field("live", &self.live.load(Ordering::Relaxed))
            .field("shared", &self.shared)
            .field("source", &self.source)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded queues stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SinkHandle {
    /// Checks the parameters, preallocates everything, starts the engine thread and waits for
    /// it to report its scheduling class (logged once here).
    pub fn spawn(params: SinkParams, backend: Box<dyn Backend>) -> Result<SinkHandle, EngineError> {
        Self::spawn_io(params, Io::Out(backend))
    }

    /// Like [`SinkHandle::spawn`], for a capture source: its cycles read from `input` and feed
    /// record streams; it takes no playback streams.
    pub fn spawn_source(
        params: SinkParams,
        input: Box<dyn CaptureBackend>,
    ) -> Result<SinkHandle, EngineError> {
        Self::spawn_io(params, Io::In(input))
    }

    fn spawn_io(params: SinkParams, io: Io) -> Result<SinkHandle, EngineError> {
        let SinkParams {
            name,
            spec,
            quantum,
            max_streams,
            rt_priority,
        } = params;
        if let Err(source) = spec.validate() {
            return Err(EngineError::Spec { sink: name, source });
        }
        if quantum == 0 || quantum > MAX_QUANTUM {
            return Err(EngineError::Quantum {
                sink: name,
                quantum,
            });
        }
        if max_streams == 0 || max_streams > MAX_STREAMS_LIMIT {
            return Err(EngineError::MaxStreams {
                sink: name,
                max: max_streams,
            });
        }
        let notify: OwnedFd =
            match EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC) {
                Ok(fd) => fd.into(),
                Err(source) => return Err(EngineError::Notify { sink: name, source }),
            };
        let engine_notify = match notify.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                let source = nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
                return Err(EngineError::Notify { sink: name, source });
            }
        };
        // Each queued stream counts in `live` (< max_streams), so neither queue can fill.
        let (cmd_tx, cmd_rx) = rtrb::RingBuffer::new(max_streams);
        let (ret_tx, ret_rx) = rtrb::RingBuffer::new(max_streams);
        let budget_ns = timer::cycle_offset_ns(1, quantum, spec.rate);
        let shared = Arc::new(SinkShared::new(budget_ns));
        let stop = Arc::new(AtomicBool::new(false));
        let q = quantum as usize;
        let engine = Engine {
            spec,
            quantum: q,
            sink_ch: usize::from(spec.channels),
            commands: cmd_rx,
            retired: ret_tx,
            limbo: Vec::with_capacity(max_streams),
            notify: engine_notify,
            notify_pending: false,
            stop: Arc::clone(&stop),
            shared: Arc::clone(&shared),
            playback: Vec::with_capacity(max_streams),
            record: Vec::with_capacity(max_streams),
            scratch: Scratch {
                // Picked once here, off the RT thread: CPU detection is cached in Isa::best.
                mixk: mix::MixKernels::best(),
                convk: convert::ConvertKernels::best(),
                bytes: vec![0u8; q * MAX_FRAME_BYTES],
                decoded: vec![0.0f32; q * usize::from(MAX_CHANNELS)],
                remixed: vec![0.0f32; q * usize::from(MAX_CHANNELS)],
            },
            mix: vec![0.0f32; q * usize::from(spec.channels)],
            out: vec![0u8; q * spec.frame_bytes()],
            available: true,
            dev_gain: 1.0,
            device_clock: false,
            io_ns: 0,
            io,
        };
        let (source, clock, report) = match &engine.io {
            Io::Out(b) => (false, b.clock(), b.report()),
            Io::In(b) => (true, b.clock(), b.report()),
        };
        let (report_tx, report_rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            // A NUL in a thread name would make spawn panic; Linux keeps the first 15 bytes.
            .name(format!(
                "sg-{}-{}",
                if source { "src" } else { "sink" },
                name.replace('\0', "")
            ))
            .spawn(move || engine.run(rt_priority, report_tx));
        let thread = match thread {
            Ok(t) => t,
            Err(source) => return Err(EngineError::Spawn { sink: name, source }),
        };
        match report_rx.recv() {
            Ok(SchedReport::Fifo(prio, Ok(us))) => {
                tracing::info!(
                    device = %name, priority = prio,
                    "engine runs with SCHED_FIFO; RLIMIT_RTTIME {} ms, SIGXCPU demotes instead of killing",
                    us / 1000
                );
            }
            Ok(SchedReport::Fifo(prio, Err(e))) => {
                tracing::warn!(
                    device = %name, priority = prio,
                    "engine runs with SCHED_FIFO but without an RLIMIT_RTTIME guard: {e}"
                );
            }
            Ok(SchedReport::Refused(prio, errno)) => {
                tracing::warn!(
                    "SCHED_FIFO not permitted (priority {prio}: {errno}); sink {name} runs at normal priority"
                );
            }
            Ok(SchedReport::NotRequested) => {
                tracing::info!(sink = %name, "sink engine runs at normal priority (no rt_priority set)");
            }
            Err(_) => {
                let _ = thread.join();
                return Err(EngineError::Panicked { sink: name });
            }
        }
        Ok(SinkHandle {
            name,
            spec,
            quantum,
            max_streams,
            commands: Mutex::new(cmd_tx),
            retired: Mutex::new(ret_rx),
            live: AtomicUsize::new(0),
            notify: Mutex::new(Some(notify)),
            shared,
            stop,
            thread: Mutex::new(Some(thread)),
            source,
            clock,
            report,
        })
    }

    /// Whether this is a capture source (no playback streams).
    pub fn is_source(&self) -> bool {
        self.source
    }

    /// What paces this device.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// What the backend negotiated with its device.
    pub fn report(&self) -> &DeviceReport {
        &self.report
    }

    fn refuse(&self, id: StreamId, reason: String) -> EngineError {
        EngineError::Stream {
            sink: self.name.clone(),
            id,
            reason,
        }
    }

    fn check_spec(&self, id: StreamId, spec: &StreamSpec, ring: &Ring) -> Result<(), EngineError> {
        if let Err(e) = spec.validate() {
            return Err(self.refuse(id, e.to_string()));
        }
        if spec.rate != self.spec.rate {
            return Err(self.refuse(
                id,
                format!(
                    "rate {} Hz differs from the sink's {} Hz",
                    spec.rate, self.spec.rate
                ),
            ));
        }
        if ring.frame_bytes() != spec.frame_bytes() {
            return Err(self.refuse(
                id,
                format!(
                    "ring frames are {} bytes but {spec} needs {}",
                    ring.frame_bytes(),
                    spec.frame_bytes()
                ),
            ));
        }
        Ok(())
    }

    fn send(&self, cmd: Command) -> Result<(), EngineError> {
        let mut tx = lock(&self.commands);
        if self.stop.load(Ordering::Acquire) {
            return Err(EngineError::Stopped {
                sink: self.name.clone(),
            });
        }
        if self.live.load(Ordering::Acquire) >= self.max_streams {
            return Err(EngineError::TooManyStreams {
                sink: self.name.clone(),
                max: self.max_streams,
            });
        }
        tx.push(cmd).map_err(|_| EngineError::QueueFull {
            sink: self.name.clone(),
        })?;
        self.live.fetch_add(1, Ordering::AcqRel);
        // An idle engine resumes on its next stream: after the push, so it finds it.
        self.shared.kick();
        Ok(())
    }

    /// Hands a playback stream to the engine. Its rate must be the sink's, its ring must hold
    /// at least one quantum and be mapped writable (the engine publishes its read index).
    /// It starts reading at `shared.frames()` (0 for a new stream).
    pub fn add_playback(&self, s: PlaybackStream) -> Result<(), EngineError> {
        if self.source {
            return Err(EngineError::NotASink {
                sink: self.name.clone(),
            });
        }
        self.check_spec(s.id, &s.spec, &s.ring)?;
        if s.ring.capacity() < u64::from(self.quantum) {
            return Err(self.refuse(
                s.id,
                format!(
                    "ring holds {} frames, less than the quantum of {}",
                    s.ring.capacity(),
                    self.quantum
                ),
            ));
        }
        if let Err(e) = s.ring.store_read(s.shared.frames()) {
            return Err(self.refuse(s.id, e.to_string()));
        }
        self.send(Command::AddPlayback(s))
    }

    /// Attaches a record stream to the sink's monitor. Its rate must be the sink's, its ring
    /// must hold at least two quanta and be mapped writable. It starts writing at
    /// `shared.frames()` (0 for a new stream).
    pub fn add_record(&self, s: RecordStream) -> Result<(), EngineError> {
        self.check_spec(s.id, &s.spec, &s.ring)?;
        if s.ring.capacity() < 2 * u64::from(self.quantum) {
            return Err(self.refuse(
                s.id,
                format!(
                    "record ring holds {} frames, less than two quanta ({})",
                    s.ring.capacity(),
                    2 * self.quantum
                ),
            ));
        }
        if let Err(e) = s.ring.store_write(s.shared.frames()) {
            return Err(self.refuse(s.id, e.to_string()));
        }
        self.send(Command::AddRecord(s))
    }

    /// Asks the engine to drop a stream (sets its release flag, which the engine checks every
    /// cycle); it comes back through [`SinkHandle::collect_retired`]. Cannot fail or be lost,
    /// however many streams are removed at once. A stream that already ended or left is not
    /// an error.
    pub fn remove(&self, shared: &StreamShared) {
        shared.request_release();
    }

    /// Streams handed to this engine and not yet collected back (queued, carried, or retired
    /// and waiting for [`SinkHandle::collect_retired`]).
    pub fn held(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Takes every stream the engine has retired. Dropping them unmaps the rings and closes
    /// the fds. Also resets [`SinkHandle::notify_fd`].
    pub fn collect_retired(&self) -> Vec<Retired> {
        let mut rx = lock(&self.retired);
        // Reset the eventfd first: a retirement after this read makes it readable again.
        if let Some(fd) = lock(&self.notify).as_ref() {
            let mut buf = [0u8; 8];
            let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(fd), &mut buf);
        }
        let mut out = Vec::new();
        while let Ok(r) = rx.pop() {
            out.push(r);
        }
        self.live.fetch_sub(out.len(), Ordering::AcqRel);
        out
    }

    /// A descriptor of the eventfd the engine writes whenever it retired a stream; poll it for
    /// readability, then call [`SinkHandle::collect_retired`]. Fails once
    /// [`SinkHandle::release_notify`] closed it.
    pub fn notify_fd(&self) -> std::io::Result<OwnedFd> {
        match lock(&self.notify).as_ref() {
            Some(fd) => fd.try_clone(),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("sink {}: its engine is stopped and released", self.name),
            )),
        }
    }

    /// Makes the notify eventfd readable, so whoever polls a clone of it looks again (used
    /// when a device is removed, to end its watcher).
    pub fn wake_notify(&self) {
        if let Some(fd) = lock(&self.notify).as_ref() {
            let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
        }
    }

    /// Closes the control side's end of the notify eventfd, once the engine is stopped (its
    /// own end closed with its thread). Clones handed out by [`SinkHandle::notify_fd`] stay
    /// open until their holders drop them. Does nothing while the engine runs.
    pub fn release_notify(&self) {
        if self.stopped() && lock(&self.thread).is_none() {
            drop(lock(&self.notify).take());
        }
    }

    /// The sink's meters and counters.
    pub fn shared(&self) -> &Arc<SinkShared> {
        &self.shared
    }

    /// The sink's format.
    pub fn spec(&self) -> StreamSpec {
        self.spec
    }

    /// Frames per cycle.
    pub fn quantum(&self) -> u32 {
        self.quantum
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn stop_and_join(&self) -> Option<std::thread::Result<Result<(), BackendError>>> {
        let thread = lock(&self.thread).take()?;
        {
            // Under the command lock: a command sent before this is drained by the engine's
            // final `retire_all`; one sent after it is refused (`send` checks `stop`).
            let _commands = lock(&self.commands);
            self.stop.store(true, Ordering::Release);
        }
        self.shared.kick();
        Some(thread.join())
    }

    /// Whether the engine thread has been stopped ([`SinkHandle::stop`]).
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Stops the thread after its current cycle and finishes the backend (finalising a WAV
    /// file, closing the PCM), without dropping the streams: every stream it carried or had
    /// queued is retired and waits in [`SinkHandle::collect_retired`] (so the control side can
    /// move them elsewhere). Blocks for up to one cycle plus the backend's finish. Stopping
    /// twice is not an error.
    pub fn stop(&self) -> Result<(), EngineError> {
        self.joined(self.stop_and_join())
    }

    /// Stops the thread after its current cycle, finishes the backend (finalising a WAV file)
    /// and drops every stream still attached.
    pub fn shutdown(self) -> Result<(), EngineError> {
        let res = self.stop_and_join();
        drop(self.collect_retired());
        self.joined(res)
    }

    fn joined(
        &self,
        res: Option<std::thread::Result<Result<(), BackendError>>>,
    ) -> Result<(), EngineError> {
        match res {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(source))) => Err(EngineError::Backend {
                sink: self.name.clone(),
                source,
            }),
            Some(Err(_)) => Err(EngineError::Panicked {
                sink: self.name.clone(),
            }),
        }
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

// ---------------------------------------------------------------------------------------------
// The RT side

struct PlaybackSlot {
    stream: PlaybackStream,
    /// Our read index; never read back from the ring.
    read: u64,
    playing: bool,
    /// Gain at the end of the last cycle.
    gain: f32,
}

struct RecordSlot {
    stream: RecordStream,
    /// Our write index; the client's read index is never consulted.
    write: u64,
}

struct Scratch {
    /// The mix kernels for this CPU (runtime dispatch, chosen at set-up).
    mixk: mix::MixKernels,
    /// The conversion kernels for this CPU (likewise).
    convk: convert::ConvertKernels,
    /// One quantum of the widest frame: raw stream bytes.
    bytes: Vec<u8>,
    /// One quantum of up to MAX_CHANNELS samples: decoded.
    decoded: Vec<f32>,
    /// One quantum of up to MAX_CHANNELS samples: remixed.
    remixed: Vec<f32>,
}

/// Everything the engine thread touches. Built on the spawning thread; owned by the engine.
struct Engine {
    spec: StreamSpec,
    quantum: usize,
    sink_ch: usize,
    commands: rtrb::Consumer<Command>,
    retired: rtrb::Producer<Retired>,
    /// Holds retired streams if the retired queue were ever full (it cannot be; see the module
    /// doc), so that nothing is dropped on this thread.
    limbo: Vec<Retired>,
    notify: OwnedFd,
    notify_pending: bool,
    stop: Arc<AtomicBool>,
    shared: Arc<SinkShared>,
    playback: Vec<PlaybackSlot>,
    record: Vec<RecordSlot>,
    scratch: Scratch,
    /// One quantum of the sink's channels, f32.
    mix: Vec<f32>,
    /// One quantum in the sink's format.
    out: Vec<u8>,
    /// Whether the device works (see the module doc on faults).
    available: bool,
    /// Device gain at the end of the last cycle.
    dev_gain: f32,
    /// Whether the backend's I/O call waits for the device (its time is then not work).
    device_clock: bool,
    /// Time the last cycle spent in the backend's I/O call, ns.
    io_ns: u64,
    io: Io,
}

/// The device end of an engine.
enum Io {
    Out(Box<dyn Backend>),
    In(Box<dyn CaptureBackend>),
}

/// Wakes the control side through the sink's own notify eventfd (never held by a client).
/// Non-blocking; a full counter (EAGAIN) already means "awake".
fn notify(fd: &OwnedFd) {
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

/// A playback stream whose write index is impossible.
struct BadIndex;

/// One cycle of one playback stream: see the module doc for the state machine.
fn play(
    slot: &mut PlaybackSlot,
    quantum: usize,
    sink_ch: usize,
    scratch: &mut Scratch,
    mix: &mut [f32],
) -> Result<bool, BadIndex> {
    let s = &slot.stream;
    let sh = &*s.shared;
    let avail =
        readable(s.ring.load_write(), slot.read, s.ring.capacity()).map_err(|_| BadIndex)?;
    if sh.corked() {
        slot.playing = false;
        sh.set_peak(0.0);
        sh.set_rms(0.0);
        return Ok(false);
    }
    let draining = sh.draining();
    if !slot.playing {
        if avail >= quantum as u64 || (draining && avail > 0) {
            slot.playing = true;
        } else {
            sh.set_peak(0.0);
            sh.set_rms(0.0);
            return Ok(false);
        }
    }
    let n = avail.min(quantum as u64) as usize;
    let target = sh.target_gain();
    let mut peak = 0.0;
    let mut energy = 0.0;
    let mut woke = false;
    if n > 0 {
        let ch = usize::from(s.spec.channels);
        let raw = &mut scratch.bytes[..n * s.spec.frame_bytes()];
        s.ring.copy_out(slot.read, raw).map_err(|_| BadIndex)?;
        let decoded = &mut scratch.decoded[..n * ch];
        (scratch.convk.decode)(s.spec.format, raw, decoded);
        let src: &[f32] = if ch == sink_ch {
            decoded
        } else {
            (scratch.convk.remix)(decoded, ch, &mut scratch.remixed, sink_ch, n);
            &scratch.remixed[..n * sink_ch]
        };
        let start = slot.gain;
        if start != 0.0 || target != 0.0 {
            let step = (target - start) / quantum as f32;
            peak = (scratch.mixk.mix_ramped)(&mut mix[..n * sink_ch], src, sink_ch, start, step);
            energy = mix::sum_squares_ramped(src, sink_ch, start, step);
        }
        slot.read += n as u64;
        // Cannot fail: add_playback checked the mapping is writable.
        let _ = s.ring.store_read(slot.read);
        sh.frames.fetch_add(n as u64, Ordering::Relaxed);
        // Only a waiting client whose threshold we just crossed, and once: the request is
        // consumed, so a client that lies in its header costs at most this one wake per cycle.
        if s.ring.take_wake_request(avail - n as u64) {
            s.ring.signal();
            sh.wakeups.fetch_add(1, Ordering::Relaxed);
            woke = true;
        }
    }
    sh.set_peak(peak);
    sh.set_rms(mix::rms(energy, quantum * sink_ch));
    slot.gain = target;
    if n < quantum {
        slot.playing = false;
        if !draining {
            sh.underruns.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(woke)
}

/// One cycle of one record stream: the clamped mix, converted, at our own write index.
/// Returns whether the reader was woken (once per cycle that wrote frames).
fn capture(
    slot: &mut RecordSlot,
    quantum: usize,
    sink_ch: usize,
    (peak, rms): (f32, f32),
    scratch: &mut Scratch,
    mix: &[f32],
) -> bool {
    let s = &slot.stream;
    if s.shared.corked() {
        return false;
    }
    let ch = usize::from(s.spec.channels);
    let src: &[f32] = if ch == sink_ch {
        mix
    } else {
        (scratch.convk.remix)(mix, sink_ch, &mut scratch.remixed, ch, quantum);
        &scratch.remixed[..quantum * ch]
    };
    let raw = &mut scratch.bytes[..quantum * s.spec.frame_bytes()];
    (scratch.convk.encode)(s.spec.format, src, raw);
    // Cannot fail: add_record checked the mapping is writable and the ring holds >= 2 quanta.
    if s.ring.copy_in(slot.write, raw).is_ok() {
        let before = slot.write;
        slot.write += quantum as u64;
        let _ = s.ring.store_write(slot.write);
        s.shared.frames.fetch_add(quantum as u64, Ordering::Relaxed);
        s.shared.set_peak(peak);
        s.shared.set_rms(rms);
        // The reader is woken once per quarter ring, not every cycle (`record_wake_every`).
        let every = ring::record_wake_every(s.ring.capacity(), quantum as u64);
        if ring::record_wake_due(before, slot.write, every) {
            s.ring.signal();
            s.shared.wakeups.fetch_add(1, Ordering::Relaxed);
            return true;
        }
    }
    false
}

impl Engine {
    fn run(
        mut self,
        rt_priority: Option<i32>,
        report: mpsc::SyncSender<SchedReport>,
    ) -> Result<(), BackendError> {
        let outcome = match rt_priority {
            None => SchedReport::NotRequested,
            Some(p) => match rt::set_fifo(p) {
                Ok(()) => SchedReport::Fifo(p, rt::guard_this_thread()),
                Err(e) => SchedReport::Refused(p, e),
            },
        };
        let _ = report.send(outcome);
        drop(report);
        // ---- setup ends; the RT contract holds from here to the end of the loop ----
        let (quantum, rate) = (self.quantum as u32, self.spec.rate);
        let device_clock = match &self.io {
            Io::Out(b) => b.clock(),
            Io::In(b) => b.clock(),
        } == Clock::Device;
        self.device_clock = device_clock;
        let mut start = timer::now_ns();
        let mut n: u64 = 0;
        let mut timer_paced = !device_clock;
        let mut last_busy = start;
        while !self.stop.load(Ordering::Acquire) {
            // Idle suspend: no stream (nor one queued, nor anything to hand back) for
            // `idle_after_ns` stops the clock until the control side kicks us.
            let idle_after = self.shared.idle_after_ns.load(Ordering::Relaxed);
            let busy = !self.playback.is_empty()
                || !self.record.is_empty()
                || !self.commands.is_empty()
                || !self.limbo.is_empty()
                || self.notify_pending;
            let now = timer::now_ns();
            if busy || idle_after == 0 {
                last_busy = now;
            } else if now.saturating_sub(last_busy) >= idle_after {
                self.sleep_idle();
                start = timer::now_ns();
                n = 0;
                last_busy = start;
                continue;
            }
            let want_timer = !device_clock || !self.available;
            if want_timer && !timer_paced {
                // The device clock stopped (device unavailable): restart the timer from now.
                start = timer::now_ns();
                n = 0;
            }
            timer_paced = want_timer;
            if timer_paced {
                let deadline = start.saturating_add(timer::cycle_offset_ns(n, quantum, rate));
                let now = timer::now_ns();
                match timer::pace(now, deadline, LATE_REBASE_NS) {
                    timer::Pace::Sleep => timer::sleep_until(deadline),
                    timer::Pace::CatchUp => {}
                    timer::Pace::Rebase => {
                        self.shared.late_cycles.fetch_add(1, Ordering::Relaxed);
                        start = now;
                        n = 0;
                    }
                }
            }
            let t0 = timer::now_ns();
            self.io_ns = 0;
            self.cycle();
            let mut dt = timer::now_ns().saturating_sub(t0);
            if self.device_clock {
                // The device wait is inside the backend call: it is not work.
                dt = dt.saturating_sub(self.io_ns);
            }
            self.shared.record_cycle(dt);
            n += 1;
        }
        // ---- loop over: hand everything back, then finish the backend (may block) ----
        self.retire_all();
        rt::unguard_this_thread();
        match &mut self.io {
            Io::Out(b) => b.finish(),
            Io::In(b) => b.finish(),
        }
    }

    /// Stops the clock: parks the device and sleeps on the idle futex word until a command is
    /// queued or the engine is stopped. The one blocking wait of the loop besides the clock,
    /// allowed because no stream exists to miss a deadline; the word is the daemon's own.
    fn sleep_idle(&mut self) {
        self.shared.peak.store(0, Ordering::Relaxed);
        self.shared.rms.store(0, Ordering::Relaxed);
        let res = match &mut self.io {
            Io::Out(b) => b.set_idle(true),
            Io::In(b) => b.set_idle(true),
        };
        self.fault(res);
        self.shared.idle_entries.fetch_add(1, Ordering::Relaxed);
        self.shared.idle.store(true, Ordering::Release);
        loop {
            let seq = self.shared.idle_word.load(Ordering::Acquire);
            if self.stop.load(Ordering::Acquire) || !self.commands.is_empty() {
                break;
            }
            // A kick between the load and the wait changes the word: the wait returns at once.
            soundgate_proto::futex::wait(&self.shared.idle_word, seq, IDLE_WAIT_MAX);
        }
        let res = match &mut self.io {
            Io::Out(b) => b.set_idle(false),
            Io::In(b) => b.set_idle(false),
        };
        self.fault(res);
        self.shared.idle.store(false, Ordering::Release);
    }

    /// Counts a device fault; an outage marks the device unavailable and wakes the core.
    fn fault(&mut self, res: Result<(), BackendError>) {
        match res {
            Ok(()) => {}
            Err(BackendError::Fault(DeviceFault::Xrun)) => {
                self.shared.xruns.fetch_add(1, Ordering::Relaxed);
            }
            Err(BackendError::Fault(DeviceFault::Suspended)) => {
                self.shared.suspends.fetch_add(1, Ordering::Relaxed);
            }
            Err(BackendError::Fault(DeviceFault::Unavailable(errno))) => {
                self.available = false;
                self.shared.last_errno.store(errno, Ordering::Relaxed);
                self.shared.outages.fetch_add(1, Ordering::Relaxed);
                self.shared.unavailable.store(true, Ordering::Release);
                self.notify_pending = true;
            }
            Err(_) => {
                self.shared.backend_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// While unavailable: asks the backend whether the device is back.
    fn poll_device(&mut self) {
        let back = match &mut self.io {
            Io::Out(b) => b.poll_available(),
            Io::In(b) => b.poll_available(),
        };
        if back {
            self.available = true;
            self.shared.unavailable.store(false, Ordering::Release);
            self.notify_pending = true;
        }
    }

    fn retire(&mut self, r: Retired) {
        if let Err(rtrb::PushError::Full(r)) = self.retired.push(r) {
            if self.limbo.len() < self.limbo.capacity() {
                self.limbo.push(r);
            } else {
                // Unreachable: at most max_streams streams exist. Leaking beats freeing on the
                // RT thread.
                std::mem::forget(r);
            }
        }
        self.notify_pending = true;
    }

    fn flush_retired(&mut self) {
        while let Some(r) = self.limbo.pop() {
            if let Err(rtrb::PushError::Full(r)) = self.retired.push(r) {
                self.limbo.push(r);
                break;
            }
        }
        if self.notify_pending {
            notify(&self.notify);
            self.notify_pending = false;
        }
    }

    fn drain_commands(&mut self) {
        while let Ok(cmd) = self.commands.pop() {
            match cmd {
                Command::AddPlayback(stream) => {
                    if self.playback.len() < self.playback.capacity() {
                        let gain = stream.shared.target_gain();
                        let read = stream.shared.frames();
                        self.playback.push(PlaybackSlot {
                            stream,
                            read,
                            playing: false,
                            gain,
                        });
                    } else {
                        self.retire(Retired::Playback(stream));
                    }
                }
                Command::AddRecord(stream) => {
                    if self.record.len() < self.record.capacity() {
                        let write = stream.shared.frames();
                        self.record.push(RecordSlot { stream, write });
                    } else {
                        self.retire(Retired::Record(stream));
                    }
                }
            }
        }
    }

    /// Retires every stream whose release flag the control side set, and publishes how many
    /// streams remain. One atomic load per stream.
    fn sweep_released(&mut self) {
        let mut i = 0;
        while i < self.playback.len() {
            if self.playback[i].stream.shared.release_requested() {
                let slot = self.playback.swap_remove(i);
                self.retire(Retired::Playback(slot.stream));
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.record.len() {
            if self.record[i].stream.shared.release_requested() {
                let slot = self.record.swap_remove(i);
                self.retire(Retired::Record(slot.stream));
            } else {
                i += 1;
            }
        }
        self.publish_count();
    }

    fn publish_count(&self) {
        let n = self.playback.len() + self.record.len();
        self.shared
            .streams
            .store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    fn cycle(&mut self) {
        self.drain_commands();
        self.sweep_released();
        if !self.available {
            self.poll_device();
        }
        let suspended = self.shared.suspended();
        if matches!(self.io, Io::In(_)) {
            self.capture_cycle(suspended);
            return;
        }
        let (q, ch) = (self.quantum, self.sink_ch);
        self.mix.fill(0.0);
        let mut i = 0;
        while i < self.playback.len() {
            if suspended {
                // Nothing is consumed: the stream keeps its position and counts no underrun.
                let sh = &self.playback[i].stream.shared;
                sh.set_peak(0.0);
                sh.set_rms(0.0);
                i += 1;
                continue;
            }
            let res = play(
                &mut self.playback[i],
                q,
                ch,
                &mut self.scratch,
                &mut self.mix,
            );
            match res {
                Ok(woke) => {
                    if woke {
                        self.shared.wakeups.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
                Err(BadIndex) => {
                    let slot = self.playback.swap_remove(i);
                    slot.stream.shared.set_ended(EndReason::BadIndex);
                    self.retire(Retired::Playback(slot.stream));
                }
            }
        }
        self.publish_count();
        let (peak, rms) = self.device_gain_and_meters();
        (self.scratch.convk.encode)(self.spec.format, &self.mix, &mut self.out);
        if let (true, Io::Out(b)) = (self.available, &mut self.io) {
            let t = timer::now_ns();
            let res = b.write(&self.out);
            self.io_ns = timer::now_ns().saturating_sub(t);
            let dropped = b.dropped_bytes();
            self.fault(res);
            self.shared
                .backend_dropped_bytes
                .store(dropped, Ordering::Relaxed);
        }
        if !suspended {
            let mut woke = 0;
            for slot in &mut self.record {
                woke += u64::from(capture(
                    slot,
                    q,
                    ch,
                    (peak, rms),
                    &mut self.scratch,
                    &self.mix,
                ));
            }
            self.shared.wakeups.fetch_add(woke, Ordering::Relaxed);
        }
        self.flush_retired();
    }

    /// Applies the device's volume and mute to `mix` (ramped over the cycle from the last
    /// cycle's gain), clamps it, and publishes and returns its peak and RMS.
    fn device_gain_and_meters(&mut self) -> (f32, f32) {
        let target = self.shared.target_gain();
        let start = self.dev_gain;
        if start != 1.0 || target != 1.0 {
            let step = (target - start) / self.quantum as f32;
            mix::scale_ramped(&mut self.mix, self.sink_ch, start, step);
        }
        self.dev_gain = target;
        let peak = (self.scratch.mixk.clamp_peak)(&mut self.mix);
        let rms = mix::rms(mix::sum_squares(&self.mix), self.mix.len());
        self.shared.peak.store(peak.to_bits(), Ordering::Relaxed);
        self.shared.rms.store(rms.to_bits(), Ordering::Relaxed);
        (peak, rms)
    }

    /// A source's cycle: read one quantum, decode it, apply the device gain, feed the record
    /// streams. Nothing is written to the record streams while the device is unavailable (they
    /// pause) or suspended (the device is still read, so it does not overrun).
    fn capture_cycle(&mut self, suspended: bool) {
        let (q, ch) = (self.quantum, self.sink_ch);
        if !self.available {
            self.shared.peak.store(0f32.to_bits(), Ordering::Relaxed);
            self.shared.rms.store(0f32.to_bits(), Ordering::Relaxed);
            self.flush_retired();
            return;
        }
        let res = match &mut self.io {
            Io::In(b) => {
                let t = timer::now_ns();
                let res = b.read(&mut self.out);
                self.io_ns = timer::now_ns().saturating_sub(t);
                let dropped = b.dropped_bytes();
                self.shared
                    .backend_dropped_bytes
                    .store(dropped, Ordering::Relaxed);
                res
            }
            Io::Out(_) => Ok(()),
        };
        self.fault(res);
        if !self.available {
            self.flush_retired();
            return;
        }
        if suspended {
            self.dev_gain = self.shared.target_gain();
            self.shared.peak.store(0f32.to_bits(), Ordering::Relaxed);
            self.shared.rms.store(0f32.to_bits(), Ordering::Relaxed);
            self.flush_retired();
            return;
        }
        (self.scratch.convk.decode)(self.spec.format, &self.out, &mut self.mix);
        let (peak, rms) = self.device_gain_and_meters();
        let mut woke = 0;
        for slot in &mut self.record {
            woke += u64::from(capture(
                slot,
                q,
                ch,
                (peak, rms),
                &mut self.scratch,
                &self.mix,
            ));
        }
        self.shared.wakeups.fetch_add(woke, Ordering::Relaxed);
        self.flush_retired();
    }

    /// After the loop: every stream still attached or still queued goes back.
    fn retire_all(&mut self) {
        self.drain_commands();
        while let Some(slot) = self.playback.pop() {
            self.retire(Retired::Playback(slot.stream));
        }
        while let Some(slot) = self.record.pop() {
            self.retire(Retired::Record(slot.stream));
        }
        self.publish_count();
        self.flush_retired();
    }
}

#[cfg(test)]
mod tests;
