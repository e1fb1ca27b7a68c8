//! Device backends: where a sink's mixed, encoded audio goes.
//!
//! A [`Backend`] is owned by its sink's real-time engine thread and called once per cycle with
//! one quantum of interleaved frames in the sink's format. `write` runs on the RT thread, so an
//! implementation must not block, allocate, lock or do file I/O there; anything slow belongs in
//! a helper thread fed through a lock-free queue (see [`mod@file`]). `finish` runs on the same
//! thread after its loop has ended, so it may block (join a writer thread, finalise a file).
//!
//! `null` and `file` are timer-paced: the engine's clock decides when a cycle runs. The
//! [`mod@alsa`] backend either brings its own clock ([`Clock::Device`]: its `write`/`read`
//! blocks until the PCM is ready, and that wait *is* the engine's device wait) or is paced by
//! the engine's timer ([`Clock::Timer`], for plugin PCMs that do not pace themselves).
//!
//! Capture devices implement [`CaptureBackend`]. Device faults are reported from the RT thread
//! as [`BackendError::Fault`] (a `Copy` value, nothing allocated); the backend recovers what it
//! can itself and reopens a vanished device on a helper thread (see [`mod@alsa`]).
//! [`mod@fault`] wraps a device to inject faults in tests.

use soundgate_proto::StreamSpec;
use std::path::Path;

pub mod alsa;
pub mod fault;
pub mod file;
pub mod null;

/// What paces a device's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The engine sleeps on `CLOCK_MONOTONIC` between cycles.
    #[default]
    Timer,
    /// The backend's `write`/`read` waits for the device; the engine does not sleep.
    Device,
}

impl Clock {
    /// `timer` or `device`.
    pub const fn name(self) -> &'static str {
        match self {
            Clock::Timer => "timer",
            Clock::Device => "device",
        }
    }
}

/// A fault a device reported during one cycle. `Copy`, so reporting it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceFault {
    /// An over- or underrun (`EPIPE`); the backend re-prepared the device and carried on.
    Xrun,
    /// The device was suspended (`ESTRPIPE`); the backend resumed or re-prepared it.
    Suspended,
    /// The device vanished or keeps failing (`ENODEV`, `EBADFD`, a persisting error). The
    /// backend stopped using it and reopens it in the background; until
    /// [`Backend::poll_available`] says so, the engine runs on its timer.
    Unavailable(i32),
}

/// What a backend negotiated with its device, for the log and the device's info.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceReport {
    /// The device opened (an ALSA PCM name), if any.
    pub device: Option<String>,
    /// Frames per period, 0 if the device has no periods.
    pub period_frames: u32,
    /// Frames in the device buffer, 0 if it has none.
    pub buffer_frames: u32,
}

/// Failures of a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Creating the output file failed.
    #[error("creating WAV file {path}: {source}")]
    Create {
        /// The file.
        path: String,
        /// What hound or the OS said.
        source: hound::Error,
    },
    /// Writing or finalising the WAV file failed (disk full, file removed, ...). Retrying does
    /// not help; the sink should be recreated.
    #[error("writing WAV file: {0}")]
    Wav(#[from] hound::Error),
    /// The file writer thread stopped after an earlier error; audio is being discarded.
    #[error("the file writer thread has stopped after an error; audio is discarded")]
    WriterStopped,
    /// The file writer thread could not be started.
    #[error("starting the file writer thread: {0}")]
    Thread(std::io::Error),
    /// The file writer thread panicked.
    #[error("the file writer thread panicked")]
    WriterPanicked,
    /// The backend cannot handle this stream spec.
    #[error("backend {backend} cannot use {spec}: {reason}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// The refused spec.
        spec: StreamSpec,
        /// Why.
        reason: &'static str,
    },
    /// An ALSA PCM could not be opened or configured. Displays as one line naming the device
    /// and ALSA's reason.
    #[error("ALSA PCM {device:?}: {what}: {reason}")]
    Alsa {
        /// The PCM name.
        device: String,
        /// What failed (`cannot open for playback`, `no supported sample format`, ...).
        what: String,
        /// ALSA's reason (its error text).
        reason: String,
    },
    /// A device fault during a cycle; see [`DeviceFault`].
    #[error("device fault: {0:?}")]
    Fault(DeviceFault),
}

/// A sink's output. See the module documentation for which thread calls what.
pub trait Backend: Send {
    /// Takes one quantum of interleaved frames in the sink's format. Called on the RT thread:
    /// must not block, allocate, lock or log.
    fn write(&mut self, data: &[u8]) -> Result<(), BackendError>;
    /// Flushes and closes the output. Called once, after the last `write`; may block.
    fn finish(&mut self) -> Result<(), BackendError>;
    /// Short name for logs and status (`null`, `file`).
    fn name(&self) -> &'static str;
    /// Bytes the backend had to discard because its consumer fell behind (0 if it never
    /// discards). Called on the RT thread; must be a cheap atomic load.
    fn dropped_bytes(&self) -> u64 {
        0
    }
    /// What paces this backend (called once, before the loop).
    fn clock(&self) -> Clock {
        Clock::Timer
    }
    /// After a [`DeviceFault::Unavailable`]: whether the device is back. Called on the RT
    /// thread once per (timer-paced) cycle while unavailable; must not block.
    fn poll_available(&mut self) -> bool {
        true
    }
    /// What was negotiated with the device (called on the control side, before spawning).
    fn report(&self) -> DeviceReport {
        DeviceReport::default()
    }
    /// The engine goes idle (`true`: no stream, its clock stops; ALSA stops the PCM so the
    /// card can power down) or resumes (`false`: ALSA prepares it again). Called on the
    /// engine thread, outside any cycle; must not block for long.
    fn set_idle(&mut self, _idle: bool) -> Result<(), BackendError> {
        Ok(())
    }
}

/// A capture source's input. Same threading rules as [`Backend`].
pub trait CaptureBackend: Send {
    /// Fills `data` with one quantum of interleaved frames in the source's format (silence
    /// for whatever the device could not deliver). Called on the RT thread.
    fn read(&mut self, data: &mut [u8]) -> Result<(), BackendError>;
    /// Closes the input. Called once, after the last `read`; may block.
    fn finish(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    /// Short name for logs and status (`null`, `alsa`).
    fn name(&self) -> &'static str;
    /// Bytes the device could not deliver (replaced by silence). Cheap atomic load or field.
    fn dropped_bytes(&self) -> u64 {
        0
    }
    /// What paces this backend.
    fn clock(&self) -> Clock {
        Clock::Timer
    }
    /// See [`Backend::poll_available`].
    fn poll_available(&mut self) -> bool {
        true
    }
    /// See [`Backend::report`].
    fn report(&self) -> DeviceReport {
        DeviceReport::default()
    }
    /// See [`Backend::set_idle`].
    fn set_idle(&mut self, _idle: bool) -> Result<(), BackendError> {
        Ok(())
    }
}

/// A capture input that produces silence (timer-paced `null` source).
pub fn open_null_capture(spec: StreamSpec) -> Box<dyn CaptureBackend> {
    Box::new(null::NullBackend::new(spec))
}

/// A backend that discards everything (timer-paced `null` sink).
pub fn open_null(spec: StreamSpec) -> Box<dyn Backend> {
    Box::new(null::NullBackend::new(spec))
}

/// A backend that writes a WAV file at `path` in the sink's format (s16le → 16-bit PCM,
/// s32le → 32-bit PCM, f32le → 32-bit float). The file header is kept valid while it runs.
pub fn open_file(path: &Path, spec: StreamSpec) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(file::FileBackend::create(path, spec)?))
}
