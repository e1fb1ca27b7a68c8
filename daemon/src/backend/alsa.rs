//! The `alsa` backend: playback and capture on any ALSA PCM (`hw:0,0`, `plughw:1`, `default`,
//! a plugin PCM from an asoundrc), through the `alsa` crate.
//!
//! # Opening
//!
//! [`open`] opens the PCM non-blocking, asks for interleaved read/write access, the sink's or
//! source's channels and rate (nearest), a sample format (the configured one if it was given
//! explicitly, else the first the device takes of s32le, s16le, f32le: integer formats are what
//! hardware speaks natively; the engine converts), a period near the hint (default: the
//! quantum) and a period count (default 4 with the device clock, 2 with the timer). What the
//! device granted is returned as [`Opened`] and becomes the device's spec; it is logged and
//! shown in the device's info. Every failure is one line naming the PCM and ALSA's reason.
//!
//! # I/O and clock
//!
//! The RT thread calls `writei`/`readi`. With [`Clock::Device`], `EAGAIN` (buffer full or
//! empty) waits in `snd_pcm_wait` with a timeout of twice the buffer time: that wait is the
//! engine's device wait, and a blocking `writei` keeps the buffer at its target fill (the whole
//! buffer). With [`Clock::Timer`] the engine's timer paces the cycles and `EAGAIN` drops the
//! rest of the block (counted in [`Backend::dropped_bytes`]).
//!
//! # Recovery
//!
//! - `EPIPE` (xrun): `snd_pcm_prepare` and carry on; reported as [`DeviceFault::Xrun`].
//! - `ESTRPIPE` (suspended): `snd_pcm_resume`, else `snd_pcm_prepare`; [`DeviceFault::Suspended`].
//! - `ENODEV`, `EBADFD`, `ENXIO`, `EIO`, or any error that persists for [`MAX_FAILURES`]
//!   cycles (including a wait that times out): the PCM is handed to the helper thread
//!   (`sg-alsa-<device>`), which closes it and reopens the device with back-off
//!   ([`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`]), insisting on the same format, rate and
//!   channels. Meanwhile the backend reports [`DeviceFault::Unavailable`] and the engine runs
//!   on its timer; [`Backend::poll_available`] picks up the reopened PCM from a lock-free queue.
//!
//! Nothing on the RT side allocates, locks or logs: PCM handles travel in `rtrb` queues (a
//! dead handle is closed by the helper thread, never on the RT thread) and the helper thread
//! does the logging.

use super::fault;
use super::{Backend, BackendError, CaptureBackend, Clock, DeviceFault, DeviceReport};
use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Cycles in a row that may fail (or time out) before the device counts as gone.
pub const MAX_FAILURES: u32 = 3;
/// First reopen delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reopen delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the helper thread looks for work.
const HELPER_TICK: Duration = Duration::from_millis(20);

/// The I/O the RT loop does on a PCM. Object-safe so that [`fault`] can wrap it; errors are
/// positive errnos.
pub trait PcmIo: Send + std::fmt::Debug {
    /// `snd_pcm_writei` of whole frames from `buf`; returns frames written.
    fn writei(&mut self, buf: &[u8]) -> Result<usize, i32>;
    /// `snd_pcm_readi` into `buf`; returns frames read.
    fn readi(&mut self, buf: &mut [u8]) -> Result<usize, i32>;
    /// `snd_pcm_wait`: `Ok(true)` when ready, `Ok(false)` on timeout.
    fn wait(&mut self, timeout_ms: u32) -> Result<bool, i32>;
    /// `snd_pcm_prepare`.
    fn prepare(&mut self) -> Result<(), i32>;
    /// `snd_pcm_resume`.
    fn resume(&mut self) -> Result<(), i32>;
    /// `snd_pcm_drop`: stop now, discarding what is queued (idle suspend).
    fn stop(&mut self) -> Result<(), i32> {
        Ok(())
    }
    /// Start a prepared capture PCM (`snd_pcm_start`).
    fn start(&mut self) -> Result<(), i32> {
        Ok(())
    }
}

#[derive(Debug)]
struct RealPcm(PCM);

impl PcmIo for RealPcm {
    fn writei(&mut self, buf: &[u8]) -> Result<usize, i32> {
        self.0.io_bytes().writei(buf).map_err(|e| e.errno())
    }
    fn readi(&mut self, buf: &mut [u8]) -> Result<usize, i32> {
        self.0.io_bytes().readi(buf).map_err(|e| e.errno())
    }
    fn wait(&mut self, timeout_ms: u32) -> Result<bool, i32> {
        self.0.wait(Some(timeout_ms)).map_err(|e| e.errno())
    }
    fn prepare(&mut self) -> Result<(), i32> {
        self.0.prepare().map_err(|e| e.errno())
    }
    fn resume(&mut self) -> Result<(), i32> {
        self.0.resume().map_err(|e| e.errno())
    }
    fn stop(&mut self) -> Result<(), i32> {
        self.0.drop().map_err(|e| e.errno())
    }
    fn start(&mut self) -> Result<(), i32> {
        self.0.start().map_err(|e| e.errno())
    }
}

/// Playback or capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// A sink.
    Playback,
    /// A source.
    Capture,
}

impl Dir {
    fn alsa(self) -> Direction {
        match self {
            Dir::Playback => Direction::Playback,
            Dir::Capture => Direction::Capture,
        }
    }
    fn word(self) -> &'static str {
        match self {
            Dir::Playback => "playback",
            Dir::Capture => "capture",
        }
    }
}

/// What to ask the device for.
#[derive(Debug, Clone)]
pub struct AlsaParams {
    /// The PCM name.
    pub device: String,
    /// Playback or capture.
    pub dir: Dir,
    /// Wanted format, rate and channels.
    pub spec: StreamSpec,
    /// Whether `spec.format` was configured explicitly (then it is tried first).
    pub format_explicit: bool,
    /// Frames per period to ask for.
    pub period_frames: u32,
    /// Periods per buffer to ask for.
    pub periods: u32,
    /// What paces the engine.
    pub clock: Clock,
}

/// The default clock for a PCM name: the device's own for `hw:`/`plughw:` devices, the timer
/// for anything else (plugin PCMs may not pace themselves).
pub fn default_clock(device: &str) -> Clock {
    if device.starts_with("hw:") || device.starts_with("plughw:") {
        Clock::Device
    } else {
        Clock::Timer
    }
}

/// What the device granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// Format, rate, channels.
    pub spec: StreamSpec,
    /// Frames per period.
    pub period_frames: u32,
    /// Frames in the buffer.
    pub buffer_frames: u32,
}

fn reason(errno: i32) -> String {
    nix::errno::Errno::from_raw(errno).desc().to_string()
}

fn alsa_err(device: &str, what: impl Into<String>, e: alsa::Error) -> BackendError {
    BackendError::Alsa {
        device: device.to_string(),
        what: what.into(),
        reason: format!("{} ({})", reason(e.errno()), e.func()),
    }
}

fn to_alsa(f: SampleFormat) -> Format {
    match f {
        SampleFormat::S16Le => Format::S16LE,
        SampleFormat::S32Le => Format::S32LE,
        SampleFormat::F32Le => Format::FloatLE,
    }
}

/// Opens and configures the PCM. With `exact`, insists on that format, rate and channels (a
/// reopen must give the engine what it was built for).
fn open_pcm(
    p: &AlsaParams,
    exact: Option<&Granted>,
) -> Result<(Box<dyn PcmIo>, Granted), BackendError> {
    if let Some(errno) = fault::open_blocked(&p.device) {
        return Err(alsa_err(
            &p.device,
            format!("cannot open for {}", p.dir.word()),
            alsa::Error::new("snd_pcm_open", errno),
        ));
    }
    let dev = p.device.as_str();
    let pcm = PCM::new(dev, p.dir.alsa(), true)
        .map_err(|e| alsa_err(dev, format!("cannot open for {}", p.dir.word()), e))?;
    let granted = {
        let hw =
            HwParams::any(&pcm).map_err(|e| alsa_err(dev, "reading hardware parameters", e))?;
        hw.set_access(Access::RWInterleaved)
            .map_err(|e| alsa_err(dev, "interleaved read/write access", e))?;
        let want = exact.map_or(p.spec, |g| g.spec);
        let mut candidates: Vec<SampleFormat> = Vec::new();
        if exact.is_some() || p.format_explicit {
            candidates.push(want.format);
        }
        if exact.is_none() {
            for f in [
                SampleFormat::S32Le,
                SampleFormat::S16Le,
                SampleFormat::F32Le,
            ] {
                if !candidates.contains(&f) {
                    candidates.push(f);
                }
            }
        }
        let format = candidates
            .iter()
            .copied()
            .find(|f| hw.test_format(to_alsa(*f)).is_ok())
            .ok_or_else(|| BackendError::Alsa {
                device: dev.to_string(),
                what: "no supported sample format".into(),
                reason: format!(
                    "the device takes none of {}",
                    candidates
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        hw.set_format(to_alsa(format))
            .map_err(|e| alsa_err(dev, format!("format {format}"), e))?;
        let channels = hw
            .set_channels_near(u32::from(want.channels))
            .map_err(|e| alsa_err(dev, format!("{} channels", want.channels), e))?;
        let rate = hw
            .set_rate_near(want.rate, ValueOr::Nearest)
            .map_err(|e| alsa_err(dev, format!("rate {} Hz", want.rate), e))?;
        let period_hint = exact.map_or(p.period_frames, |g| g.period_frames).max(16);
        let _ = hw.set_period_size_near(alsa::pcm::Frames::from(period_hint), ValueOr::Nearest);
        let _ = hw.set_periods_near(p.periods.max(2), ValueOr::Nearest);
        pcm.hw_params(&hw)
            .map_err(|e| alsa_err(dev, "applying hardware parameters", e))?;
        let cur = pcm
            .hw_params_current()
            .map_err(|e| alsa_err(dev, "reading granted parameters", e))?;
        let period = cur.get_period_size().unwrap_or(0).max(0);
        let buffer = cur.get_buffer_size().unwrap_or(0).max(0);
        let spec = StreamSpec {
            format,
            rate,
            channels: u8::try_from(channels).unwrap_or(u8::MAX),
        };
        Granted {
            spec,
            period_frames: u32::try_from(period).unwrap_or(u32::MAX),
            buffer_frames: u32::try_from(buffer).unwrap_or(u32::MAX),
        }
    };
    if let Err(e) = granted.spec.validate() {
        return Err(BackendError::Alsa {
            device: dev.to_string(),
            what: "unusable parameters".into(),
            reason: e.to_string(),
        });
    }
    if let Some(g) = exact {
        if g.spec != granted.spec {
            return Err(BackendError::Alsa {
                device: dev.to_string(),
                what: "reopened with different parameters".into(),
                reason: format!("now {}, was {}", granted.spec, g.spec),
            });
        }
    }
    {
        let sw = pcm
            .sw_params_current()
            .map_err(|e| alsa_err(dev, "reading software parameters", e))?;
        let period = alsa::pcm::Frames::from(granted.period_frames.max(1));
        let buffer = alsa::pcm::Frames::from(granted.buffer_frames.max(1));
        let _ = sw.set_avail_min(period);
        if p.dir == Dir::Playback {
            // Start once a period is queued; the blocking writes then keep the buffer full.
            let _ = sw.set_start_threshold(period.min(buffer));
        }
        pcm.sw_params(&sw)
            .map_err(|e| alsa_err(dev, "applying software parameters", e))?;
    }
    pcm.prepare()
        .map_err(|e| alsa_err(dev, "preparing the device", e))?;
    if p.dir == Dir::Capture {
        pcm.start()
            .map_err(|e| alsa_err(dev, "starting capture", e))?;
    }
    let io: Box<dyn PcmIo> = Box::new(RealPcm(pcm));
    Ok((fault::wrap(&p.device, io), granted))
}

/// An opened ALSA device, ready to hand to an engine: what the device granted, and the backend.
#[derive(Debug)]
pub struct Opened {
    /// What the device granted; the sink's or source's spec.
    pub granted: Granted,
    /// The backend.
    pub backend: AlsaBackend,
}

/// Opens `p.device` and starts the helper thread that reopens it when it fails.
pub fn open(p: AlsaParams) -> Result<Opened, BackendError> {
    let (pcm, granted) = open_pcm(&p, None)?;
    let (in_tx, in_rx) = rtrb::RingBuffer::new(2);
    let (dead_tx, dead_rx) = rtrb::RingBuffer::new(4);
    let stop = Arc::new(AtomicBool::new(false));
    let need_reopen = Arc::new(AtomicBool::new(false));
    let helper = {
        let (p, stop, need) = (p.clone(), Arc::clone(&stop), Arc::clone(&need_reopen));
        let name: String = p.device.chars().filter(|c| *c != '\0').take(7).collect();
        std::thread::Builder::new()
            .name(format!("sg-alsa-{name}"))
            .spawn(move || reopener(p, granted, in_tx, dead_rx, &stop, &need))
            .map_err(BackendError::Thread)?
    };
    let frame_bytes = granted.spec.frame_bytes();
    let buffer_ms = u64::from(granted.buffer_frames.max(granted.period_frames).max(1)) * 1000
        / u64::from(granted.spec.rate.max(1));
    let backend = AlsaBackend {
        params: p,
        granted,
        pcm: Some(pcm),
        incoming: in_rx,
        dead: dead_tx,
        helper: Some(helper),
        stop,
        need_reopen,
        frame_bytes,
        timeout_ms: u32::try_from(2 * buffer_ms + 100).unwrap_or(u32::MAX),
        failures: 0,
        dropped: 0,
    };
    Ok(Opened { granted, backend })
}

/// The helper thread: closes dead handles and reopens the device with back-off.
fn reopener(
    p: AlsaParams,
    granted: Granted,
    mut incoming: rtrb::Producer<Box<dyn PcmIo>>,
    mut dead: rtrb::Consumer<Box<dyn PcmIo>>,
    stop: &AtomicBool,
    need: &AtomicBool,
) {
    let mut backoff = BACKOFF_MIN;
    let mut next_try: Option<Instant> = None;
    let mut failures: u64 = 0;
    let mut last_log: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        if need.load(Ordering::Acquire) {
            // Close the old handle first (after the Acquire above, it is in the queue).
            while let Ok(old) = dead.pop() {
                drop(old);
            }
            let due = next_try.get_or_insert_with(|| {
                tracing::warn!(
                    device = %p.device,
                    "ALSA {} device is unavailable; retrying to open it with back-off",
                    p.dir.word()
                );
                Instant::now() + BACKOFF_MIN
            });
            if Instant::now() >= *due {
                match open_pcm(&p, Some(&granted)) {
                    Ok((pcm, _)) => {
                        if incoming.push(pcm).is_ok() {
                            need.store(false, Ordering::Release);
                            tracing::info!(
                                device = %p.device,
                                attempts = failures + 1,
                                "ALSA {} device is back", p.dir.word()
                            );
                        }
                        backoff = BACKOFF_MIN;
                        next_try = None;
                        failures = 0;
                        last_log = None;
                    }
                    Err(e) => {
                        failures += 1;
                        let quiet = last_log.is_some_and(|t| t.elapsed() < Duration::from_secs(30));
                        if !quiet {
                            tracing::warn!("reopening failed (attempt {failures}): {e}");
                            last_log = Some(Instant::now());
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        next_try = Some(Instant::now() + backoff);
                    }
                }
            }
        } else {
            while let Ok(old) = dead.pop() {
                drop(old);
            }
        }
        std::thread::sleep(HELPER_TICK);
    }
    while let Ok(old) = dead.pop() {
        drop(old);
    }
}

/// An ALSA playback or capture device. See the module documentation.
#[derive(Debug)]
pub struct AlsaBackend {
    params: AlsaParams,
    granted: Granted,
    pcm: Option<Box<dyn PcmIo>>,
    incoming: rtrb::Consumer<Box<dyn PcmIo>>,
    dead: rtrb::Producer<Box<dyn PcmIo>>,
    helper: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    need_reopen: Arc<AtomicBool>,
    frame_bytes: usize,
    timeout_ms: u32,
    failures: u32,
    dropped: u64,
}

/// The block one cycle moves.
enum Buf<'a> {
    Write(&'a [u8]),
    Read(&'a mut [u8]),
}

impl Buf<'_> {
    fn len(&self) -> usize {
        match self {
            Buf::Write(d) => d.len(),
            Buf::Read(d) => d.len(),
        }
    }
}

/// What to do after an errno.
enum Step {
    Retry,
    Fault(DeviceFault),
    Gone(i32),
}

impl AlsaBackend {
    /// What the device granted.
    pub fn granted(&self) -> Granted {
        self.granted
    }

    /// Hands the PCM to the helper thread (which closes it and reopens the device).
    fn give_up(&mut self, errno: i32) -> BackendError {
        if let Some(pcm) = self.pcm.take() {
            if let Err(rtrb::PushError::Full(pcm)) = self.dead.push(pcm) {
                // Cannot happen (one handle per outage, the helper drains the queue); leaking
                // beats closing on the RT thread.
                std::mem::forget(pcm);
            }
        }
        self.failures = 0;
        self.need_reopen.store(true, Ordering::Release);
        BackendError::Fault(DeviceFault::Unavailable(errno))
    }

    fn on_error(&mut self, errno: i32) -> Step {
        let Some(pcm) = self.pcm.as_mut() else {
            return Step::Gone(libc::ENODEV);
        };
        match errno {
            libc::EINTR => Step::Retry,
            libc::EPIPE => match pcm.prepare() {
                Ok(()) => Step::Fault(DeviceFault::Xrun),
                Err(e) => self.failed(e),
            },
            libc::ESTRPIPE => {
                let ok = match pcm.resume() {
                    Ok(()) => true,
                    // EAGAIN: still resuming; ENOSYS: cannot resume. Either way re-prepare.
                    Err(_) => pcm.prepare().is_ok(),
                };
                if ok {
                    Step::Fault(DeviceFault::Suspended)
                } else {
                    self.failed(libc::ESTRPIPE)
                }
            }
            libc::ENODEV | libc::EBADFD | libc::ENXIO | libc::EIO => Step::Gone(errno),
            e => self.failed(e),
        }
    }

    fn failed(&mut self, errno: i32) -> Step {
        self.failures += 1;
        if self.failures >= MAX_FAILURES {
            Step::Gone(errno)
        } else {
            Step::Fault(DeviceFault::Xrun)
        }
    }

    fn poll(&mut self) -> bool {
        if self.pcm.is_some() {
            return true;
        }
        match self.incoming.pop() {
            Ok(pcm) => {
                self.pcm = Some(pcm);
                self.failures = 0;
                true
            }
            Err(_) => false,
        }
    }

    /// One quantum of I/O, either way.
    fn transfer(&mut self, mut buf: Buf<'_>) -> Result<(), BackendError> {
        let fb = self.frame_bytes.max(1);
        let len = buf.len();
        let mut off = 0;
        let mut fault: Option<DeviceFault> = None;
        // Bounded: a device that keeps refusing is given up on, never spun on.
        let mut rounds = 0u32;
        while off < len && rounds < 64 {
            rounds += 1;
            let Some(pcm) = self.pcm.as_mut() else {
                return Err(BackendError::Fault(DeviceFault::Unavailable(libc::ENODEV)));
            };
            let res = match &mut buf {
                Buf::Write(d) => pcm.writei(&d[off..]),
                Buf::Read(d) => pcm.readi(&mut d[off..]),
            };
            let errno = match res {
                Ok(frames) => {
                    off += frames * fb;
                    self.failures = 0;
                    continue;
                }
                Err(libc::EAGAIN) => match self.params.clock {
                    Clock::Timer => break,
                    Clock::Device => match pcm.wait(self.timeout_ms) {
                        Ok(true) => continue,
                        // A device that stopped delivering: count as a failure.
                        Ok(false) => libc::ETIMEDOUT,
                        Err(e) => e,
                    },
                },
                Err(e) => e,
            };
            match self.on_error(errno) {
                Step::Retry => {}
                Step::Fault(f) => {
                    fault = Some(f);
                    if self.failures > 0 {
                        // A failing device: give up on this quantum, try again next cycle.
                        break;
                    }
                }
                Step::Gone(e) => return Err(self.give_up(e)),
            }
        }
        if off < len {
            if let Buf::Read(d) = &mut buf {
                d[off..].fill(0);
            }
            self.dropped += (len - off) as u64;
        }
        match fault {
            None => Ok(()),
            Some(f) => Err(BackendError::Fault(f)),
        }
    }

    fn report_(&self) -> DeviceReport {
        DeviceReport {
            device: Some(self.params.device.clone()),
            period_frames: self.granted.period_frames,
            buffer_frames: self.granted.buffer_frames,
        }
    }

    /// Idle suspend: stop the PCM (the card may power down), or prepare it again (and start
    /// a capture PCM). A failure here is the device failing: handed to the reopen helper.
    fn set_idle_(&mut self, idle: bool) -> Result<(), BackendError> {
        let capture = self.params.dir == Dir::Capture;
        let Some(pcm) = self.pcm.as_mut() else {
            return Ok(());
        };
        let res = if idle {
            pcm.stop()
        } else {
            pcm.prepare()
                .and_then(|()| if capture { pcm.start() } else { Ok(()) })
        };
        match res {
            Ok(()) => Ok(()),
            Err(e) => Err(self.give_up(e)),
        }
    }

    fn finish_(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.helper.take() {
            let _ = h.join();
        }
        self.pcm = None;
        while let Ok(p) = self.incoming.pop() {
            drop(p);
        }
    }
}

impl Backend for AlsaBackend {
    fn write(&mut self, data: &[u8]) -> Result<(), BackendError> {
        self.transfer(Buf::Write(data))
    }
    fn finish(&mut self) -> Result<(), BackendError> {
        self.finish_();
        Ok(())
    }
    fn name(&self) -> &'static str {
        "alsa"
    }
    fn dropped_bytes(&self) -> u64 {
        self.dropped
    }
    fn clock(&self) -> Clock {
        self.params.clock
    }
    fn poll_available(&mut self) -> bool {
        self.poll()
    }
    fn report(&self) -> DeviceReport {
        self.report_()
    }
    fn set_idle(&mut self, idle: bool) -> Result<(), BackendError> {
        self.set_idle_(idle)
    }
}

impl CaptureBackend for AlsaBackend {
    fn read(&mut self, data: &mut [u8]) -> Result<(), BackendError> {
        self.transfer(Buf::Read(data))
    }
    fn finish(&mut self) -> Result<(), BackendError> {
        self.finish_();
        Ok(())
    }
    fn name(&self) -> &'static str {
        "alsa"
    }
    fn dropped_bytes(&self) -> u64 {
        self.dropped
    }
    fn clock(&self) -> Clock {
        self.params.clock
    }
    fn poll_available(&mut self) -> bool {
        self.poll()
    }
    fn report(&self) -> DeviceReport {
        self.report_()
    }
    fn set_idle(&mut self, idle: bool) -> Result<(), BackendError> {
        self.set_idle_(idle)
    }
}

impl Drop for AlsaBackend {
    fn drop(&mut self) {
        self.finish_();
    }
}

/// The first PCM device of every ALSA card, as (`plughw:CARD,DEV`, card name), for discovery
/// without a config.
pub fn discover() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for card in alsa::card::Iter::new().flatten() {
        let index = card.get_index();
        let name = card.get_name().unwrap_or_else(|_| format!("card{index}"));
        let Ok(ctl) = alsa::Ctl::from_card(&card, false) else {
            continue;
        };
        if let Some(dev) = alsa::ctl::DeviceIter::new(&ctl).next() {
            out.push((format!("plughw:{index},{dev}"), name));
        }
    }
    out
}
