//! Device backends: where a sink's mixed, encoded audio goes.
//!
//! A [`Backend`] is owned by its sink's real-time engine thread and called once per cycle with
//! one quantum of interleaved frames in the sink's format. `write` runs on the RT thread, so an
//! implementation must not block, allocate, lock or do file I/O there; anything slow belongs in
//! a helper thread fed through a lock-free queue (see [`mod@file`]). `finish` runs on the same
//! thread after its loop has ended, so it may block (join a writer thread, finalise a file).
//!
//! Backends here are timer-paced: the engine's clock decides when a cycle runs. A device
//! backend that brings its own clock (ALSA) will be added beside them.

use soundgate_proto::StreamSpec;
use std::path::Path;

pub mod file;
pub mod null;

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
