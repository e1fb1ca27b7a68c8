//! The `file` backend: writes the mix to a WAV file.
//!
//! The RT thread must not do file I/O, so [`FileBackend::write`] only copies the bytes into a
//! lock-free byte ring (about two seconds of audio). A writer thread (`sg-file-<stem>`) drains
//! the ring into hound's `WavWriter` every few milliseconds, flushes about every 200 ms so the
//! header stays valid while the daemon runs, and finalises the file when [`Backend::finish`]
//! asks it to stop. If the ring is full the block is dropped and counted, never waited for.

use super::{Backend, BackendError};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How much audio the byte ring holds.
const RING_MS: u32 = 2_000;
/// How often the writer thread flushes the WAV header.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// How long the writer thread sleeps between drains.
const DRAIN_SLEEP: Duration = Duration::from_millis(5);

type Wav = hound::WavWriter<BufWriter<File>>;

#[derive(Debug, Default)]
struct FileShared {
    stop: AtomicBool,
    failed: AtomicBool,
    dropped: AtomicU64,
}

/// Writes a WAV file through a writer thread. See the module documentation.
pub struct FileBackend {
    producer: rtrb::Producer<u8>,
    shared: Arc<FileShared>,
    thread: Option<JoinHandle<Result<(), hound::Error>>>,
    spec: StreamSpec,
}

impl std::fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBackend")
            .field("spec", &self.spec)
            .field("shared", &self.shared)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

/// The WAV header hound writes for a sink format.
pub fn wav_spec(spec: StreamSpec) -> hound::WavSpec {
    let (bits_per_sample, sample_format) = match spec.format {
        SampleFormat::S16Le => (16, hound::SampleFormat::Int),
        SampleFormat::S32Le => (32, hound::SampleFormat::Int),
        SampleFormat::F32Le => (32, hound::SampleFormat::Float),
    };
    hound::WavSpec {
        channels: u16::from(spec.channels),
        sample_rate: spec.rate,
        bits_per_sample,
        sample_format,
    }
}

impl FileBackend {
    /// Creates (truncates) the file, writes its header and starts the writer thread.
    pub fn create(path: &Path, spec: StreamSpec) -> Result<FileBackend, BackendError> {
        spec.validate().map_err(|_| BackendError::Unsupported {
            backend: "file",
            spec,
            reason: "rate or channel count out of range",
        })?;
        let wav = hound::WavWriter::create(path, wav_spec(spec)).map_err(|source| {
            BackendError::Create {
                path: path.display().to_string(),
                source,
            }
        })?;
        let bytes = spec.frames_for_ms(RING_MS) as usize * spec.frame_bytes();
        let (producer, consumer) = rtrb::RingBuffer::new(bytes);
        let shared = Arc::new(FileShared::default());
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let thread_shared = Arc::clone(&shared);
        let format = spec.format;
        let thread = std::thread::Builder::new()
            .name(format!("sg-file-{stem}"))
            .spawn(move || {
                let res = run_writer(consumer, wav, format, &thread_shared);
                if res.is_err() {
                    thread_shared.failed.store(true, Ordering::Release);
                }
                let dropped = thread_shared.dropped.load(Ordering::Relaxed);
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "file backend dropped bytes because the disk fell behind"
                    );
                }
                res
            })
            .map_err(BackendError::Thread)?;
        Ok(FileBackend {
            producer,
            shared,
            thread: Some(thread),
            spec,
        })
    }
}

/// Drains `consumer` into `wav` until asked to stop, then finalises.
fn run_writer(
    mut consumer: rtrb::Consumer<u8>,
    mut wav: Wav,
    format: SampleFormat,
    shared: &FileShared,
) -> Result<(), hound::Error> {
    let sample = format.bytes();
    let mut scratch: Vec<u8> = Vec::new();
    let mut last_flush = Instant::now();
    let mut dirty = false;
    loop {
        // Read the flag before the ring: every write happened before `finish` set it.
        let stopping = shared.stop.load(Ordering::Acquire);
        let avail = consumer.slots() / sample * sample;
        if avail > 0 {
            scratch.clear();
            if let Ok(chunk) = consumer.read_chunk(avail) {
                let (a, b) = chunk.as_slices();
                scratch.extend_from_slice(a);
                scratch.extend_from_slice(b);
                chunk.commit_all();
            }
            write_samples(&mut wav, format, &scratch)?;
            dirty = true;
        }
        if dirty && last_flush.elapsed() >= FLUSH_EVERY {
            wav.flush()?;
            last_flush = Instant::now();
            dirty = false;
        }
        if stopping && avail == 0 {
            return wav.finalize();
        }
        if avail == 0 {
            std::thread::sleep(DRAIN_SLEEP);
        }
    }
}

fn write_samples(wav: &mut Wav, format: SampleFormat, bytes: &[u8]) -> Result<(), hound::Error> {
    match format {
        SampleFormat::S16Le => {
            for c in bytes.chunks_exact(2) {
                wav.write_sample(i16::from_le_bytes([c[0], c[1]]))?;
            }
        }
        SampleFormat::S32Le => {
            for c in bytes.chunks_exact(4) {
                wav.write_sample(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))?;
            }
        }
        SampleFormat::F32Le => {
            for c in bytes.chunks_exact(4) {
                wav.write_sample(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))?;
            }
        }
    }
    Ok(())
}

impl Backend for FileBackend {
    fn write(&mut self, data: &[u8]) -> Result<(), BackendError> {
        if self.shared.failed.load(Ordering::Relaxed) {
            self.shared
                .dropped
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            return Err(BackendError::WriterStopped);
        }
        if self.producer.push_entire_slice(data).is_err() {
            self.shared
                .dropped
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BackendError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.shared.stop.store(true, Ordering::Release);
        match thread.join() {
            Ok(res) => res.map_err(BackendError::Wav),
            Err(_) => Err(BackendError::WriterPanicked),
        }
    }

    fn name(&self) -> &'static str {
        "file"
    }

    fn dropped_bytes(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for FileBackend {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(format: SampleFormat, channels: u8) -> StreamSpec {
        StreamSpec {
            format,
            rate: 48_000,
            channels,
        }
    }

    #[test]
    fn writes_each_format() {
        let dir = tempfile::tempdir().unwrap();
        let vals = [0.5f32, -0.25, 0.0, 0.75, -1.0, 0.125];
        for format in [
            SampleFormat::S16Le,
            SampleFormat::S32Le,
            SampleFormat::F32Le,
        ] {
            let path = dir.path().join(format!("{format}.wav"));
            let spec = spec(format, 2);
            let mut b = crate::backend::open_file(&path, spec).unwrap();
            let mut bytes = vec![0u8; vals.len() * format.bytes()];
            soundgate_proto::convert::encode_into(format, &vals, &mut bytes);
            for _ in 0..10 {
                b.write(&bytes).unwrap();
            }
            b.finish().unwrap();
            b.finish().unwrap();
            let mut r = hound::WavReader::open(&path).unwrap();
            assert_eq!(r.spec(), wav_spec(spec));
            assert_eq!(r.len() as usize, vals.len() * 10);
            let got: Vec<f32> = match format {
                SampleFormat::S16Le => r
                    .samples::<i16>()
                    .map(|s| f32::from(s.unwrap()) / 32_768.0)
                    .collect(),
                SampleFormat::S32Le => r
                    .samples::<i32>()
                    .map(|s| (f64::from(s.unwrap()) / 2_147_483_648.0) as f32)
                    .collect(),
                SampleFormat::F32Le => r.samples::<f32>().map(|s| s.unwrap()).collect(),
            };
            for (i, g) in got.iter().enumerate() {
                assert_eq!(*g, vals[i % vals.len()], "{format} sample {i}");
            }
        }
    }

    #[test]
    fn header_is_valid_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.wav");
        let mut b = FileBackend::create(&path, spec(SampleFormat::S16Le, 1)).unwrap();
        b.write(&[1, 0, 2, 0, 3, 0]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(r) = hound::WavReader::open(&path) {
                if r.len() == 3 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "header never showed the samples");
            std::thread::sleep(Duration::from_millis(10));
        }
        b.finish().unwrap();
    }

    #[test]
    fn full_ring_drops_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.wav");
        let spec = spec(SampleFormat::S16Le, 1);
        let mut b = FileBackend::create(&path, spec).unwrap();
        // Larger than the whole ring: can never fit.
        let huge = vec![0u8; spec.frames_for_ms(3_000) as usize * 2];
        b.write(&huge).unwrap();
        assert_eq!(b.dropped_bytes(), huge.len() as u64);
        b.finish().unwrap();
    }

    #[test]
    fn create_fails_in_missing_directory() {
        let err = FileBackend::create(
            Path::new("/nonexistent/dir/x.wav"),
            spec(SampleFormat::F32Le, 2),
        )
        .unwrap_err();
        assert!(matches!(err, BackendError::Create { .. }), "{err}");
    }
}
