//! Engine tests: a real engine thread, real sealed memfd rings, a test backend that sends each
//! written block over a channel. No timing asserts: every wait polls a counter or an fd with a
//! generous timeout.

use super::*;
use crate::backend::{Clock, DeviceFault};
use soundgate_proto::ring::{ring_bytes, Ring};
use soundgate_proto::shm::{create_read_only_for_peer, create_sealed, Mapping};
use soundgate_proto::SampleFormat;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

const Q: usize = 256;
const RATE: u32 = 48_000;
const TIMEOUT: Duration = Duration::from_secs(10);

fn spec(format: SampleFormat, channels: u8) -> StreamSpec {
    StreamSpec {
        format,
        rate: RATE,
        channels,
    }
}

struct ChanBackend(mpsc::Sender<Vec<u8>>);

impl Backend for ChanBackend {
    fn write(&mut self, data: &[u8]) -> Result<(), BackendError> {
        let _ = self.0.send(data.to_vec());
        Ok(())
    }
    fn finish(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    fn name(&self) -> &'static str {
        "test"
    }
}

fn params(name: &str, spec: StreamSpec, max_streams: usize) -> SinkParams {
    SinkParams {
        name: name.into(),
        spec,
        quantum: Q as u32,
        max_streams,
        rt_priority: None,
    }
}

fn sink(name: &str, spec: StreamSpec) -> (SinkHandle, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let h = SinkHandle::spawn(params(name, spec, 16), Box::new(ChanBackend(tx))).unwrap();
    (h, rx)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_cycles(h: &SinkHandle, n: u64) {
    let c = h.shared().cycles();
    wait_for("engine cycles", || h.shared().cycles() >= c + n);
}

/// The client's side of a playback stream.
struct Client {
    ring: Ring,
    written: u64,
    shared: Arc<StreamShared>,
}

impl Client {
    fn write(&mut self, bytes: &[u8]) {
        self.ring.copy_in(self.written, bytes).unwrap();
        self.written += (bytes.len() / self.ring.frame_bytes()) as u64;
        self.ring.store_write(self.written).unwrap();
    }

    /// Free frames, by the engine's published read index (the client may trust it).
    fn free(&self) -> u64 {
        self.ring.capacity() - (self.written - self.ring.load_read())
    }
}

fn playback(id: StreamId, spec: StreamSpec, capacity: u64) -> (PlaybackStream, Client) {
    let fb = spec.frame_bytes();
    let size = ring_bytes(capacity, fb).unwrap();
    let fd = create_sealed("test-play", size).unwrap();
    let client = Ring::init(Mapping::new(fd.as_fd(), size, true).unwrap(), capacity, fb).unwrap();
    let server = Ring::attach(Mapping::new(fd.as_fd(), size, true).unwrap(), capacity, fb).unwrap();
    let shared = StreamShared::new(1.0, false, false);
    let stream = PlaybackStream {
        id,
        ring: server,
        spec,
        shared: Arc::clone(&shared),
    };
    (
        stream,
        Client {
            ring: client,
            written: 0,
            shared,
        },
    )
}

/// The client's side of a record stream.
struct Recorder {
    ring: Ring,
    shared: Arc<StreamShared>,
}

impl Recorder {
    /// Everything written so far (the ring must not have wrapped).
    fn read_all(&self) -> Vec<u8> {
        let w = self.ring.load_write();
        assert!(
            w <= self.ring.capacity(),
            "record ring wrapped; make it larger"
        );
        let mut out = vec![0u8; w as usize * self.ring.frame_bytes()];
        self.ring.copy_out(0, &mut out).unwrap();
        out
    }
}

fn record(id: StreamId, spec: StreamSpec, capacity: u64, corked: bool) -> (RecordStream, Recorder) {
    let fb = spec.frame_bytes();
    let size = ring_bytes(capacity, fb).unwrap();
    let (fd, map) = create_read_only_for_peer("test-rec", size).unwrap();
    let server = Ring::init(map, capacity, fb).unwrap();
    let client =
        Ring::attach(Mapping::new(fd.as_fd(), size, false).unwrap(), capacity, fb).unwrap();
    let shared = StreamShared::new(1.0, false, corked);
    let stream = RecordStream {
        id,
        ring: server,
        spec,
        shared: Arc::clone(&shared),
    };
    (
        stream,
        Recorder {
            ring: client,
            shared,
        },
    )
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn f32(&mut self, range: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * range
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn drain(rx: &mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    rx.try_iter().flatten().collect()
}

fn notify_readable(h: &SinkHandle) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let fd = h.notify_fd().unwrap();
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
}

/// Offset (in samples, a multiple of `block`) at which `needle` occurs in `hay`.
fn find_aligned<T: PartialEq>(hay: &[T], needle: &[T], block: usize) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    (0..hay.len().saturating_sub(needle.len()) + 1)
        .step_by(block)
        .find(|&o| hay[o..o + needle.len()] == *needle)
}

#[test]
fn two_streams_mix_to_the_exact_sum() {
    let sink_spec = spec(SampleFormat::F32Le, 2);
    let (h, rx) = sink("mix", sink_spec);
    let mut rng = Rng(7);
    let len = 8 * Q;
    let a: Vec<f32> = (0..len).map(|_| rng.f32(0.4)).collect(); // f32 mono
    let b: Vec<i16> = (0..len * 2).map(|_| (rng.f32(12_000.0)) as i16).collect(); // s16 stereo
    let (sa, mut ca) = playback(1, spec(SampleFormat::F32Le, 1), 16 * Q as u64);
    let (sb, mut cb) = playback(2, spec(SampleFormat::S16Le, 2), 16 * Q as u64);
    ca.write(&f32_bytes(&a));
    cb.write(&b.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    // A waits for the ring to empty; B never asks to be woken.
    ca.ring.arm_wake(1).unwrap();
    h.add_playback(sa).unwrap();
    h.add_playback(sb).unwrap();
    wait_for("both streams consumed", || {
        ca.shared.frames() == len as u64 && cb.shared.frames() == len as u64
    });
    wait_cycles(&h, 2);
    assert_eq!(ca.ring.wake_seq(), 1, "client A was woken, once");
    assert!(!ca.ring.waiting(), "the engine consumed A's request");
    assert_eq!(
        cb.ring.wake_seq(),
        0,
        "client B, not waiting, was not woken"
    );
    assert_eq!(h.shared().wakeups(), 1);
    let out = bytes_f32(&drain(&rx));
    let frames = out.len() / 2;
    assert_eq!(frames % Q, 0);
    let first = out.iter().position(|&x| x != 0.0).unwrap() / 2 / Q * Q;
    let expect = |oa: usize, ob: usize, f: usize, c: usize| -> f32 {
        let va = if (oa..oa + len).contains(&f) {
            a[f - oa]
        } else {
            0.0
        };
        let vb = if (ob..ob + len).contains(&f) {
            f32::from(b[(f - ob) * 2 + c]) / 32_768.0
        } else {
            0.0
        };
        va + vb
    };
    let mut matched = None;
    'search: for oa in (first..first + 8 * Q).step_by(Q) {
        for ob in (first..first + 8 * Q).step_by(Q) {
            if (0..frames).all(|f| (0..2).all(|c| out[f * 2 + c] == expect(oa, ob, f, c))) {
                matched = Some((oa, ob));
                break 'search;
            }
        }
    }
    let (oa, ob) = matched.expect("the output is the sample-exact sum of both streams");
    assert!(
        oa + len <= frames && ob + len <= frames,
        "both streams played completely"
    );
    assert!(h.shared().peak() >= 0.0);
    h.shutdown().unwrap();
}

#[test]
fn volume_change_ramps_within_one_cycle() {
    let (h, rx) = sink("vol", spec(SampleFormat::F32Le, 1));
    let cap = 512 * Q as u64;
    let (s, mut c) = playback(1, spec(SampleFormat::F32Le, 1), cap);
    c.write(&f32_bytes(&vec![0.5f32; cap as usize]));
    h.add_playback(s).unwrap();
    wait_for("playing", || c.shared.frames() >= 4 * Q as u64);
    c.shared.set_volume(0.25);
    let f = c.shared.frames();
    wait_for("played at the new volume", || {
        c.shared.frames() >= f + 4 * Q as u64
    });
    c.shared.set_muted(true);
    let f = c.shared.frames();
    wait_for("played muted", || c.shared.frames() >= f + 4 * Q as u64);
    assert_eq!(c.shared.peak(), 0.0, "muted stream meters silence");
    let out = bytes_f32(&drain(&rx));
    let blocks: Vec<&[f32]> = out.chunks_exact(Q).collect();
    let all = |b: &[f32], v: f32| b.iter().all(|&x| x == v);
    let start = blocks.iter().position(|b| all(b, 0.5)).unwrap();
    let r1 = start + blocks[start..].iter().position(|b| !all(b, 0.5)).unwrap();
    for (i, &x) in blocks[r1].iter().enumerate() {
        let g = 1.0 + (0.25 - 1.0) / Q as f32 * (i + 1) as f32;
        assert!((x - 0.5 * g).abs() < 1e-6, "ramp down, frame {i}: {x}");
    }
    assert!(
        all(blocks[r1 + 1], 0.125),
        "exactly the new gain after one cycle"
    );
    let r2 = r1
        + 1
        + blocks[r1 + 1..]
            .iter()
            .position(|b| !all(b, 0.125))
            .unwrap();
    for (i, &x) in blocks[r2].iter().enumerate() {
        let g = 0.25 - 0.25 / Q as f32 * (i + 1) as f32;
        assert!((x - 0.5 * g).abs() < 1e-6, "ramp to mute, frame {i}: {x}");
    }
    assert!(all(blocks[r2 + 1], 0.0), "silent after the mute ramp");
    h.shutdown().unwrap();
}

#[test]
fn underrun_counts_once_per_dry_spell_and_never_when_draining_or_corked() {
    let s16 = spec(SampleFormat::S16Le, 2);
    let (h, _rx) = sink("xrun", s16);
    let (s, mut c) = playback(1, s16, 8 * Q as u64);
    let data = |frames: usize| vec![0x11u8; frames * 4];
    let q = Q as u64;
    c.write(&data(3 * Q));
    h.add_playback(s).unwrap();
    wait_for("3 quanta consumed", || c.shared.frames() == 3 * q);
    wait_for("first underrun", || c.shared.underruns() == 1);
    wait_cycles(&h, 10);
    assert_eq!(c.shared.underruns(), 1, "one underrun per dry spell");

    // 2.5 quanta: two full cycles, then a partial one that underruns.
    c.write(&data(5 * Q / 2));
    wait_for("2.5 quanta consumed", || {
        c.shared.frames() == 3 * q + 5 * q / 2
    });
    wait_for("second underrun", || c.shared.underruns() == 2);
    wait_cycles(&h, 10);
    assert_eq!(c.shared.underruns(), 2);

    // Draining: running dry is no underrun.
    c.shared.set_draining(true);
    c.write(&data(3 * Q / 2));
    wait_for("drained", || c.shared.frames() == 7 * q);
    wait_cycles(&h, 10);
    assert_eq!(c.shared.underruns(), 2, "no underrun while draining");

    // Corked: nothing consumed, no underrun, even with data waiting.
    c.shared.set_corked(true);
    c.shared.set_draining(false);
    wait_cycles(&h, 10);
    c.write(&data(2 * Q));
    wait_cycles(&h, 10);
    assert_eq!(c.shared.frames(), 7 * q, "a corked stream consumes nothing");
    assert_eq!(c.shared.underruns(), 2, "no underrun while corked");

    // Uncorked: plays its two quanta, then runs dry (not draining) once more.
    c.shared.set_corked(false);
    wait_for("uncorked data consumed", || c.shared.frames() == 9 * q);
    wait_for("third underrun", || c.shared.underruns() == 3);
    wait_cycles(&h, 10);
    assert_eq!(c.shared.underruns(), 3);
    h.shutdown().unwrap();
}

#[test]
fn bad_write_index_retires_only_that_stream() {
    let f32s = spec(SampleFormat::F32Le, 2);
    let (h, _rx) = sink("bad", f32s);
    let (sp, mut cp) = playback(1, f32s, 64 * Q as u64);
    let (sq, cq) = playback(2, spec(SampleFormat::S16Le, 1), 4 * Q as u64);
    let mut rng = Rng(3);
    let mut feed = |c: &mut Client| {
        let free = c.free() as usize;
        if free > 0 {
            let v: Vec<f32> = (0..free * 2).map(|_| rng.f32(0.5)).collect();
            c.write(&f32_bytes(&v));
        }
    };
    feed(&mut cp);
    h.add_playback(sp).unwrap();
    h.add_playback(sq).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while cp.shared.frames() < 4 * Q as u64 {
        assert!(Instant::now() < deadline, "P never played");
        feed(&mut cp);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(!notify_readable(&h));
    // The client of Q lies: its write index claims more than the ring holds.
    cq.ring.store_write(4 * Q as u64 + 5).unwrap();
    while !notify_readable(&h) {
        assert!(Instant::now() < deadline, "notify fd never became readable");
        feed(&mut cp);
        std::thread::sleep(Duration::from_millis(2));
    }
    let retired = h.collect_retired();
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].id(), 2);
    assert_eq!(retired[0].shared().ended(), Some(EndReason::BadIndex));
    assert_eq!(cq.shared.ended(), Some(EndReason::BadIndex));
    assert!(!notify_readable(&h), "collect_retired resets the notify fd");
    drop(retired);
    assert_eq!(
        Arc::strong_count(&cq.shared),
        1,
        "the retired stream was dropped here"
    );

    // P keeps playing, without a single underrun, as long as it is fed.
    let f = cp.shared.frames();
    while cp.shared.frames() < f + 20 * Q as u64 {
        assert!(Instant::now() < deadline + TIMEOUT, "P stopped playing");
        feed(&mut cp);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(cp.shared.underruns(), 0);
    assert_eq!(cp.shared.ended(), None);

    // An explicit remove retires it without an end reason.
    h.remove(&cp.shared);
    wait_for("removal notified", || notify_readable(&h));
    let retired = h.collect_retired();
    assert_eq!(retired.iter().map(Retired::id).collect::<Vec<_>>(), [1]);
    assert_eq!(retired[0].shared().ended(), None);
    h.shutdown().unwrap();
}

#[test]
fn record_streams_receive_exactly_the_mix() {
    let sink_spec = spec(SampleFormat::F32Le, 2);
    let (h, rx) = sink("monitor", sink_spec);
    let cap = 512 * Q as u64;
    let (r1, c1) = record(10, sink_spec, cap, false);
    let (r2, c2) = record(11, spec(SampleFormat::S16Le, 1), cap, false);
    let (r3, c3) = record(12, sink_spec, cap, true);
    h.add_record(r1).unwrap();
    h.add_record(r2).unwrap();
    h.add_record(r3).unwrap();
    let mut rng = Rng(11);
    let a: Vec<f32> = (0..8 * Q * 2).map(|_| rng.f32(0.9)).collect();
    let (sa, mut ca) = playback(1, sink_spec, 16 * Q as u64);
    ca.write(&f32_bytes(&a));
    h.add_playback(sa).unwrap();
    wait_for("A consumed", || ca.shared.frames() == 8 * Q as u64);
    wait_cycles(&h, 3);

    let rec1 = c1.read_all();
    let rec2 = c2.read_all();
    let out = drain(&rx);
    assert_eq!(c1.shared.frames() % Q as u64, 0);
    assert!(c1.shared.frames() >= 8 * Q as u64);
    // Woken once per quarter ring (here more than the test records: none yet).
    let every = soundgate_proto::ring::record_wake_every(cap, Q as u64);
    assert_eq!(
        u64::from(c1.ring.wake_seq()),
        c1.shared.frames() / every,
        "the recorder's wake-ups"
    );
    assert_eq!(
        c3.ring.wake_seq(),
        0,
        "a corked recorder gets nothing, so no wake-up"
    );

    // R1 (same format as the sink): byte-for-byte a stretch of the backend's output, which
    // contains all of A.
    let block = Q * 8;
    let o1 = find_aligned(&out, &rec1, block).expect("record stream = the sink's mix");
    let a_bytes = f32_bytes(&a);
    assert!(
        find_aligned(&rec1, &a_bytes, block).is_some(),
        "the recording holds all of A"
    );
    assert!(o1 + rec1.len() <= out.len());

    // R2 (s16 mono): the same mix, averaged to mono and encoded.
    let out_f = bytes_f32(&out);
    let mut mono = vec![0.0f32; out_f.len() / 2];
    convert::remix(&out_f, 2, &mut mono, 1, out_f.len() / 2);
    let mut mono_s16 = vec![0u8; mono.len() * 2];
    convert::encode_into(SampleFormat::S16Le, &mono, &mut mono_s16);
    assert!(
        find_aligned(&mono_s16, &rec2, Q * 2).is_some(),
        "s16 mono recording = converted mix"
    );
    assert!(rec2.iter().any(|&b| b != 0));

    // R3 is corked: nothing written.
    assert_eq!(c3.shared.frames(), 0);
    assert_eq!(c3.ring.load_write(), 0);
    h.shutdown().unwrap();
}

#[test]
fn shutdown_finalises_a_wav_file_and_drops_the_streams() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.wav");
    let s16 = spec(SampleFormat::S16Le, 2);
    let backend = crate::backend::open_file(&path, s16).unwrap();
    let h = SinkHandle::spawn(params("file", s16, 8), backend).unwrap();
    let samples: Vec<i16> = (0..4 * Q * 2)
        .map(|i| (i as i16).wrapping_mul(37) | 1)
        .collect();
    let (s, mut c) = playback(1, s16, 8 * Q as u64);
    c.shared.set_draining(true);
    c.write(
        &samples
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    h.add_playback(s).unwrap();
    wait_for("played", || c.shared.frames() == 4 * Q as u64);
    let cycles = h.shared().cycles();
    h.shutdown().unwrap();
    assert_eq!(
        Arc::strong_count(&c.shared),
        1,
        "shutdown dropped the attached stream"
    );

    let mut r = hound::WavReader::open(&path).unwrap();
    assert_eq!(r.spec(), crate::backend::file::wav_spec(s16));
    let got: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    assert_eq!(got.len() % (Q * 2), 0);
    assert!(
        got.len() as u64 >= cycles * Q as u64 * 2,
        "every cycle reached the file"
    );
    let at = find_aligned(&got, &samples, Q * 2).expect("the file holds the stream's samples");
    assert!(got[..at]
        .iter()
        .chain(&got[at + samples.len()..])
        .all(|&x| x == 0));
}

#[test]
fn add_checks_the_stream_against_the_sink() {
    let f32s = spec(SampleFormat::F32Le, 2);
    let (tx, _rx) = mpsc::channel();
    let h = SinkHandle::spawn(params("checks", f32s, 2), Box::new(ChanBackend(tx))).unwrap();
    let q = Q as u64;
    let small = record(1, f32s, 2 * q - 1, false).0;
    assert!(matches!(
        h.add_record(small),
        Err(EngineError::Stream { id: 1, .. })
    ));
    let rate = playback(
        2,
        StreamSpec {
            rate: 44_100,
            ..f32s
        },
        q,
    )
    .0;
    let err = h.add_playback(rate).unwrap_err();
    assert!(err.to_string().contains("44100"), "{err}");
    let tiny = playback(3, f32s, q - 1).0;
    assert!(matches!(
        h.add_playback(tiny),
        Err(EngineError::Stream { id: 3, .. })
    ));
    let mut wrong = playback(4, f32s, q).0;
    wrong.spec.channels = 1;
    assert!(matches!(
        h.add_playback(wrong),
        Err(EngineError::Stream { id: 4, .. })
    ));
    // A record ring mapped read-only cannot be written by the engine.
    let (rw, ro) = record(5, f32s, 2 * q, false);
    let bad = RecordStream {
        ring: ro.ring,
        ..rw
    };
    assert!(matches!(
        h.add_record(bad),
        Err(EngineError::Stream { id: 5, .. })
    ));

    // max_streams counts streams until they are collected back.
    let (s6, c6) = playback(6, f32s, q);
    h.add_playback(s6).unwrap();
    h.add_record(record(7, f32s, 2 * q, false).0).unwrap();
    let err = h.add_playback(playback(8, f32s, q).0).unwrap_err();
    assert!(
        matches!(err, EngineError::TooManyStreams { max: 2, .. }),
        "{err}"
    );
    h.remove(&c6.shared);
    // A stream this engine never had: nothing happens.
    h.remove(&StreamShared::new(1.0, false, false));
    wait_for("removal", || notify_readable(&h));
    assert_eq!(h.collect_retired().len(), 1);
    h.add_playback(playback(8, f32s, q).0).unwrap();
    h.shutdown().unwrap();
}

#[test]
fn spawn_validates_and_survives_a_refused_rt_priority() {
    let f32s = spec(SampleFormat::F32Le, 2);
    let bad = |p: SinkParams| SinkHandle::spawn(p, crate::backend::open_null(f32s)).unwrap_err();
    assert!(matches!(
        bad(SinkParams {
            quantum: 0,
            ..params("x", f32s, 1)
        }),
        EngineError::Quantum { .. }
    ));
    assert!(matches!(
        bad(SinkParams {
            max_streams: 0,
            ..params("x", f32s, 1)
        }),
        EngineError::MaxStreams { .. }
    ));
    let spec0 = StreamSpec {
        channels: 0,
        ..f32s
    };
    assert!(matches!(
        bad(params("x", spec0, 1)),
        EngineError::Spec { .. }
    ));
    // Whether or not SCHED_FIFO is permitted here, the sink runs.
    let p = SinkParams {
        rt_priority: Some(10),
        ..params("rt", f32s, 1)
    };
    let h = SinkHandle::spawn(p, crate::backend::open_null(f32s)).unwrap();
    wait_cycles(&h, 3);
    assert_eq!(h.name(), "rt");
    assert_eq!(h.quantum(), Q as u32);
    assert_eq!(h.spec(), f32s);
    assert!(h.shared().max_cycle_ns() > 0);
    assert_eq!(h.shared().backend_errors(), 0);
    h.shutdown().unwrap();
}

/// A stand-in for a device that brings its own clock: `write` blocks until the test hands it
/// a token (the "period elapsed" interrupt), or fails as the test says.
struct ClockedDevice {
    tokens: mpsc::Receiver<()>,
    gone: Arc<AtomicBool>,
}

impl Backend for ClockedDevice {
    fn write(&mut self, _data: &[u8]) -> Result<(), BackendError> {
        if self.gone.load(Ordering::Acquire) {
            return Err(BackendError::Fault(DeviceFault::Unavailable(libc::ENODEV)));
        }
        // Bounded, so that a failed test cannot leave the engine blocked forever.
        let _ = self.tokens.recv_timeout(Duration::from_secs(2));
        Ok(())
    }
    fn finish(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    fn name(&self) -> &'static str {
        "clocked"
    }
    fn clock(&self) -> Clock {
        Clock::Device
    }
    fn poll_available(&mut self) -> bool {
        !self.gone.load(Ordering::Acquire)
    }
}

#[test]
fn device_clock_paces_the_engine_and_an_outage_falls_back_to_the_timer() {
    let (tx, rx) = mpsc::channel();
    let gone = Arc::new(AtomicBool::new(false));
    let dev = ClockedDevice {
        tokens: rx,
        gone: Arc::clone(&gone),
    };
    let h = SinkHandle::spawn(
        params("clocked", spec(SampleFormat::F32Le, 2), 4),
        Box::new(dev),
    )
    .unwrap();
    assert_eq!(h.clock(), Clock::Device);
    // The engine runs exactly as many cycles as the device allows: no timer of its own.
    for _ in 0..5 {
        tx.send(()).unwrap();
    }
    wait_for("5 device-paced cycles", || h.shared().cycles() >= 5);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(h.shared().cycles(), 5, "the engine ran without the device");
    assert!(h.shared().available());

    // Outage: the engine says so through the notify fd and runs on its timer meanwhile.
    gone.store(true, Ordering::Release);
    tx.send(()).unwrap(); // release the write blocked now; the next one fails
    wait_for("the outage", || !h.shared().available());
    wait_for("the outage's wake-up", || notify_readable(&h));
    assert_eq!(h.shared().outages(), 1);
    assert_eq!(h.shared().last_errno(), libc::ENODEV);
    let c = h.shared().cycles();
    wait_for("timer-paced cycles during the outage", || {
        h.shared().cycles() > c + 10
    });
    drop(h.collect_retired());

    // The device is back: available again, paced by the device again.
    gone.store(false, Ordering::Release);
    wait_for("the device to come back", || h.shared().available());
    tx.send(()).unwrap(); // the period that ends the first device-paced cycle
    wait_for("the comeback's wake-up", || notify_readable(&h));
    drop(tx);
    h.shutdown().unwrap();
}

// ---- device controls, RMS meters and cycle statistics ----

/// Writes `frames` frames of constant `v` (f32 mono) into a client ring.
fn dc(client: &mut Client, v: f32, frames: usize) {
    client.write(&f32_bytes(&vec![v; frames]));
}

/// Splits an f32 mono output into blocks of one quantum.
fn blocks(out: &[f32]) -> Vec<&[f32]> {
    out.chunks_exact(Q).collect()
}

#[test]
fn device_volume_scales_the_mix_and_mute_ramps_to_silence_within_one_cycle() {
    let mono = spec(SampleFormat::F32Le, 1);
    let (h, rx) = sink("devvol", mono);
    h.shared().set_volume(0.5);
    wait_cycles(&h, 2); // the gain has ramped there before the stream arrives
    assert_eq!(h.shared().volume(), 0.5);
    let (s, mut c) = playback(1, mono, 128 * Q as u64);
    dc(&mut c, 0.8, 128 * Q);
    h.add_playback(s).unwrap();
    wait_for("half the stream played", || {
        c.shared.frames() >= 32 * Q as u64
    });
    h.shared().set_muted(true);
    assert!(h.shared().muted());
    let at_mute = c.shared.frames();
    wait_for("a few cycles after the mute", || {
        c.shared.frames() >= at_mute + 8 * Q as u64
    });
    let out = bytes_f32(&drain(&rx));
    let bs = blocks(&out);
    let first = bs.iter().position(|b| b[0] != 0.0).unwrap();
    // The gain reached 0.5 long before the stream arrived: its blocks are exactly 0.4.
    assert!(
        bs[first].iter().all(|&x| (x - 0.4).abs() < 1e-6),
        "{:?}",
        &bs[first][..4]
    );
    let ramp = first + bs[first..].iter().position(|b| b[Q - 1] != b[0]).unwrap();
    let r = bs[ramp];
    assert!(
        r[0] < 0.4 && r[0] > 0.39,
        "the ramp starts next to 0.4: {}",
        r[0]
    );
    assert!(
        r.windows(2).all(|w| w[1] <= w[0]),
        "the ramp falls monotonically"
    );
    assert!(
        r[Q - 1].abs() < 1e-6,
        "the ramp ends at 0 on the last frame"
    );
    assert!(
        bs[ramp + 1..].iter().all(|b| b.iter().all(|&x| x == 0.0)),
        "after the ramp cycle the muted device outputs silence"
    );
    assert_eq!(h.shared().peak(), 0.0);
    h.shutdown().unwrap();
}

#[test]
fn device_gain_applies_before_clamping() {
    let mono = spec(SampleFormat::F32Le, 1);
    let (h, rx) = sink("clamp", mono);
    h.shared().set_volume(4.0);
    wait_cycles(&h, 2); // the gain has ramped there before the stream arrives
    let (s, mut c) = playback(1, mono, 64 * Q as u64);
    dc(&mut c, 0.1, 4 * Q);
    dc(&mut c, 0.5, 4 * Q);
    h.add_playback(s).unwrap();
    wait_for("stream played", || c.shared.frames() == 8 * Q as u64);
    wait_cycles(&h, 2);
    let out = bytes_f32(&drain(&rx));
    let played: Vec<f32> = out.into_iter().filter(|&x| x != 0.0).collect();
    assert_eq!(played.len(), 8 * Q);
    assert!(played[..4 * Q].iter().all(|&x| (x - 0.4).abs() < 1e-6));
    // 0.5 * 4 = 2.0, clamped after the gain.
    assert!(played[4 * Q..].iter().all(|&x| x == 1.0));
    h.shutdown().unwrap();
}

#[test]
fn suspended_sink_consumes_nothing_writes_silence_and_resumes_where_it_was() {
    let mono = spec(SampleFormat::F32Le, 1);
    let (h, rx) = sink("suspend", mono);
    let (rec, r) = record(2, mono, 1024 * Q as u64, false);
    h.add_record(rec).unwrap();
    let (s, mut c) = playback(1, mono, 64 * Q as u64);
    dc(&mut c, 0.5, 64 * Q);
    h.add_playback(s).unwrap();
    wait_for("some frames played", || c.shared.frames() >= 4 * Q as u64);
    h.shared().set_suspended(true);
    assert!(h.shared().suspended());
    wait_cycles(&h, 2); // the suspension is in force from the next cycle at the latest
    let (frozen, recorded) = (c.shared.frames(), r.shared.frames());
    drop(drain(&rx));
    wait_cycles(&h, 10);
    assert_eq!(
        c.shared.frames(),
        frozen,
        "a suspended sink consumes nothing"
    );
    assert_eq!(r.shared.frames(), recorded, "its monitor delivers nothing");
    assert_eq!(c.shared.underruns(), 0, "holding still is no underrun");
    let out = bytes_f32(&drain(&rx));
    assert!(out.len() >= 8 * Q, "the backend keeps its clock");
    assert!(out.iter().all(|&x| x == 0.0), "and gets silence");
    assert_eq!(h.shared().peak(), 0.0);
    assert_eq!(c.shared.peak(), 0.0);
    h.shared().set_suspended(false);
    wait_for("playing again", || c.shared.frames() > frozen);
    wait_for("recording again", || r.shared.frames() > recorded);
    wait_for("the rest played", || c.shared.frames() == 64 * Q as u64);
    assert_eq!(c.shared.underruns(), 0);
    h.shutdown().unwrap();
}

/// A capture device that reads a constant f32 value.
struct ConstSource(f32);

impl CaptureBackend for ConstSource {
    fn read(&mut self, data: &mut [u8]) -> Result<(), BackendError> {
        for c in data.chunks_exact_mut(4) {
            c.copy_from_slice(&self.0.to_le_bytes());
        }
        Ok(())
    }
    fn name(&self) -> &'static str {
        "const"
    }
}

#[test]
fn source_applies_its_gain_and_delivers_nothing_while_suspended() {
    let mono = spec(SampleFormat::F32Le, 1);
    let h = SinkHandle::spawn_source(params("src", mono, 4), Box::new(ConstSource(0.25))).unwrap();
    h.shared().set_volume(2.0);
    wait_cycles(&h, 2);
    let (rec, r) = record(1, mono, 1024 * Q as u64, false);
    h.add_record(rec).unwrap();
    wait_for("recorded", || r.shared.frames() >= 2 * Q as u64);
    h.shared().set_suspended(true);
    wait_cycles(&h, 2);
    let frozen = r.shared.frames();
    wait_cycles(&h, 10);
    assert_eq!(
        r.shared.frames(),
        frozen,
        "a suspended source delivers nothing"
    );
    assert_eq!(h.shared().rms(), 0.0);
    let got = bytes_f32(&r.read_all());
    assert!(
        got.iter().all(|&x| (x - 0.5).abs() < 1e-6),
        "gain 2.0 applied"
    );
    assert!((r.shared.rms() - 0.5).abs() < 1e-6);
    h.shared().set_suspended(false);
    wait_for("delivering again", || r.shared.frames() > frozen);
    h.shutdown().unwrap();
}

#[test]
fn rms_meters_of_streams_and_sink() {
    let mono = spec(SampleFormat::F32Le, 1);
    let (h, _rx) = sink("rms", mono);
    let (s, mut c) = playback(1, mono, 256 * Q as u64);
    c.shared.set_volume(0.5);
    // A ±0.8 square wave: RMS 0.8 before gain, 0.4 after, over any whole quantum.
    let square: Vec<f32> = (0..256 * Q)
        .map(|i| if i % 2 == 0 { 0.8 } else { -0.8 })
        .collect();
    c.write(&f32_bytes(&square));
    h.add_playback(s).unwrap();
    wait_for("stream and sink meters", || {
        (c.shared.rms() - 0.4).abs() < 1e-5 && (h.shared().rms() - 0.4).abs() < 1e-5
    });
    assert!((c.shared.peak() - 0.4).abs() < 1e-6);
    c.shared.set_corked(true);
    wait_for("a corked stream's meter falls to 0", || {
        c.shared.rms() == 0.0
    });
    wait_for("and so does the sink's", || h.shared().rms() == 0.0);
    h.shutdown().unwrap();
}

#[test]
fn rms_kernels_agree_with_the_definition() {
    let mut rng = Rng(3);
    let v: Vec<f32> = (0..1001).map(|_| rng.f32(1.0)).collect();
    let direct: f32 = v.iter().map(|x| x * x).sum();
    assert!((mix::sum_squares(&v) - direct).abs() < 1e-3);
    let (start, step) = (0.2f32, 0.001f32);
    let ramped: f32 = v
        .iter()
        .enumerate()
        .map(|(f, x)| {
            let g = start + step * (f + 1) as f32;
            x * x * g * g
        })
        .sum();
    assert!((mix::sum_squares_ramped(&v, 1, start, step) - ramped).abs() < 1e-3);
    assert_eq!(mix::rms(0.0, 0), 0.0);
    assert!((mix::rms(4.0, 4) - 1.0).abs() < 1e-7);
    let mut buf = vec![1.0f32; 8];
    mix::scale_ramped(&mut buf, 2, 1.0, -0.25);
    assert_eq!(buf, vec![0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0, 0.0]);
}

#[test]
fn cycle_histogram_buckets_are_ordered_and_bound_their_values() {
    assert_eq!(cycle_bucket(0), 0);
    assert_eq!(cycle_bucket(u64::MAX), CYCLE_BUCKETS - 1);
    let mut last = 0;
    for ns in (0..40).map(|k| 1u64 << k) {
        let b = cycle_bucket(ns);
        assert!(b >= last, "buckets grow with the duration");
        last = b;
        if b < CYCLE_BUCKETS - 1 {
            assert!(
                cycle_bucket_upper_ns(b) >= ns as f64,
                "{ns} ns is below its bucket's top"
            );
        }
        if b > 0 {
            assert!(cycle_bucket_upper_ns(b - 1) <= ns as f64 * 1.0001);
        }
    }
    let s = SinkShared::new(1_000_000);
    assert_eq!(s.cycle_stats(), CycleStats::default());
    for _ in 0..99 {
        s.record_cycle(1_000);
    }
    s.record_cycle(1_000_000);
    let st = s.cycle_stats();
    assert_eq!(st.cycles, 100);
    assert!((st.mean_us - (99.0 * 1.0 + 1000.0) / 100.0).abs() < 1e-9);
    assert_eq!(st.max_us, 1000.0);
    assert!(
        st.p99_us >= 1.0 && st.p99_us < 1.3,
        "p99 {} is the 1 µs bucket",
        st.p99_us
    );
    for _ in 0..2 {
        s.record_cycle(1_000_000);
    }
    assert!(
        s.cycle_stats().p99_us == 1000.0,
        "3% slow cycles put the p99 there"
    );
    assert_eq!(s.budget_us(), 1000.0);
}

#[test]
fn a_running_engine_publishes_cycle_stats_and_its_budget() {
    let (h, _rx) = sink("stats", spec(SampleFormat::S16Le, 2));
    wait_cycles(&h, 20);
    let st = h.shared().cycle_stats();
    assert!(st.cycles >= 20);
    assert!(st.mean_us > 0.0 && st.mean_us <= st.max_us);
    assert!(st.p99_us > 0.0 && st.p99_us <= st.max_us);
    let budget = Q as f64 * 1e6 / f64::from(RATE);
    assert!((h.shared().budget_us() - budget).abs() < 0.01);
    h.shutdown().unwrap();
}

#[test]
fn a_stopped_engine_hands_its_streams_back_and_refuses_new_ones() {
    let mono = spec(SampleFormat::F32Le, 1);
    let (h, _rx) = sink("stop", mono);
    let (s, c) = playback(1, mono, 4 * Q as u64);
    h.add_playback(s).unwrap();
    h.stop().unwrap();
    assert!(h.stopped());
    h.stop().unwrap();
    let back = h.collect_retired();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].id(), 1);
    assert!(back[0].shared().ended().is_none(), "handed back, not ended");
    let (s2, _c2) = playback(2, mono, 4 * Q as u64);
    assert!(matches!(
        h.add_playback(s2),
        Err(EngineError::Stopped { .. })
    ));
    drop((back, c));
    h.shutdown().unwrap();
}

#[test]
fn a_playback_client_is_woken_only_when_waiting_and_below_its_threshold() {
    let f32s = spec(SampleFormat::F32Le, 2);
    let (h, _rx) = sink("wake", f32s);
    let cap = 16 * Q as u64;
    let (s, mut c) = playback(1, f32s, cap);
    let silence = vec![0u8; cap as usize * f32s.frame_bytes()];
    c.write(&silence);
    h.add_playback(s).unwrap();
    // Not waiting: consuming costs no wake-up at all.
    wait_for("four quanta consumed", || c.shared.frames() >= 4 * Q as u64);
    assert_eq!(c.ring.wake_seq(), 0);
    assert_eq!(h.shared().wakeups(), 0);
    // Waiting for the fill to drop below 8 quanta: one wake-up once it did, not before.
    c.ring.arm_wake(8 * Q as u64).unwrap();
    wait_for("the wake-up", || c.ring.wake_seq() == 1);
    assert!(c.ring.load_write() - c.ring.load_read() < 8 * Q as u64);
    assert!(!c.ring.waiting(), "the request was consumed");
    wait_cycles(&h, 3);
    assert_eq!(c.ring.wake_seq(), 1, "one request, one wake-up");
    h.shutdown().unwrap();
}

#[test]
fn a_lying_client_costs_at_most_one_wake_up_per_cycle() {
    let f32s = spec(SampleFormat::F32Le, 2);
    let (h, _rx) = sink("liar", f32s);
    let cap = 64 * Q as u64;
    let (s, mut c) = playback(1, f32s, cap);
    let chunk = vec![0u8; Q * f32s.frame_bytes()];
    c.write(&vec![0u8; cap as usize * f32s.frame_bytes()]);
    h.add_playback(s).unwrap();
    let (c0, w0) = (h.shared().cycles(), h.shared().wakeups());
    // Re-arm with an absurd threshold as fast as possible, keep the ring fed.
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        c.ring.arm_wake(u64::MAX).unwrap();
        if c.free() >= Q as u64 {
            c.write(&chunk);
        }
        std::hint::spin_loop();
    }
    let (c1, w1) = (h.shared().cycles(), h.shared().wakeups());
    assert!(w1 > w0, "it was woken");
    // Cycles are counted after the cycle's work: allow the one in flight.
    assert!(
        w1 - w0 <= c1 - c0 + 1,
        "{} wake-ups in {} cycles",
        w1 - w0,
        c1 - c0
    );
    h.shutdown().unwrap();
}

#[test]
fn removals_cannot_be_lost_however_many_come_at_once() {
    let f32s = spec(SampleFormat::F32Le, 2);
    let (tx, _rx) = mpsc::channel();
    let n = 300;
    let h = SinkHandle::spawn(params("many", f32s, n), Box::new(ChanBackend(tx))).unwrap();
    let mut clients = Vec::new();
    for id in 0..n as u32 {
        let (s, c) = playback(id + 1, f32s, Q as u64);
        h.add_playback(s).unwrap();
        clients.push(c);
    }
    wait_for("all streams in the engine", || {
        h.shared().engine_streams() == n as u32
    });
    assert_eq!(h.held(), n);
    // Every stream removed in one burst, far more than any command queue slot count.
    for c in &clients {
        h.remove(&c.shared);
    }
    wait_for("the engine let go of every stream", || {
        h.shared().engine_streams() == 0
    });
    let mut back = 0;
    wait_for("every stream collected", || {
        back += h.collect_retired().len();
        back == n
    });
    assert_eq!(h.held(), 0);
    for c in &clients {
        assert_eq!(
            Arc::strong_count(&c.shared),
            1,
            "dropped on the control side"
        );
    }
    h.shutdown().unwrap();
}

/// A backend that records its blocks and its idle transitions.
struct IdleBackend {
    blocks: mpsc::Sender<Vec<u8>>,
    idle: mpsc::Sender<bool>,
}

impl Backend for IdleBackend {
    fn write(&mut self, data: &[u8]) -> Result<(), BackendError> {
        let _ = self.blocks.send(data.to_vec());
        Ok(())
    }
    fn finish(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    fn name(&self) -> &'static str {
        "test-idle"
    }
    fn set_idle(&mut self, idle: bool) -> Result<(), BackendError> {
        let _ = self.idle.send(idle);
        Ok(())
    }
}

#[test]
fn idle_engine_stops_its_clock_and_resumes_on_the_next_stream() {
    let sink_spec = spec(SampleFormat::F32Le, 2);
    let (tx, rx) = mpsc::channel();
    let (itx, irx) = mpsc::channel();
    let backend = IdleBackend {
        blocks: tx,
        idle: itx,
    };
    let h = SinkHandle::spawn(params("idle", sink_spec, 16), Box::new(backend)).unwrap();
    // The default never idles: the clock runs.
    wait_cycles(&h, 3);
    assert!(!h.shared().idle());
    h.shared().set_idle_suspend(Duration::from_millis(50));
    wait_for("the engine to go idle", || h.shared().idle());
    assert_eq!(irx.recv_timeout(TIMEOUT).ok(), Some(true), "device parked");
    assert_eq!(h.shared().idle_entries(), 1);
    // Asleep: the cycle counter stops and nothing reaches the device.
    let c = h.shared().cycles();
    drain(&rx);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(h.shared().cycles(), c, "an idle engine runs no cycle");
    assert!(rx.try_recv().is_err(), "an idle engine writes nothing");
    // A new stream wakes it; its first quantum reaches the device.
    let (s, mut cl) = playback(1, spec(SampleFormat::F32Le, 2), 4 * Q as u64);
    let tone: Vec<f32> = (0..2 * Q).map(|i| (i % 7) as f32 * 0.05).collect();
    cl.write(&f32_bytes(&tone));
    h.add_playback(s).unwrap();
    assert_eq!(
        irx.recv_timeout(TIMEOUT).ok(),
        Some(false),
        "device resumed"
    );
    wait_for("the stream to play", || cl.shared.frames() >= Q as u64);
    assert!(!h.shared().idle());
    let out = bytes_f32(&drain(&rx));
    assert!(
        find_aligned(&out, &tone[..2 * Q], 2 * Q).is_some(),
        "the stream's first quantum was played"
    );
    // Removing the last stream idles it again; stop wakes an idle engine.
    h.remove(&cl.shared);
    wait_for("the stream to be retired", || {
        h.held() == 0 || !h.collect_retired().is_empty()
    });
    wait_for("idle again", || {
        h.shared().idle() && h.shared().idle_entries() == 2
    });
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(h.shutdown().is_ok());
    });
    assert_eq!(
        done_rx.recv_timeout(TIMEOUT).ok(),
        Some(true),
        "stop wakes it"
    );
}

/// Replaces the wake per cycle with data: a reader is woken once per quarter ring.
#[test]
fn a_record_reader_is_woken_once_per_quarter_ring() {
    let f32s = spec(SampleFormat::F32Le, 2);
    let (h, _rx) = sink("recwake", f32s);
    let cap = 16 * Q as u64;
    let (r, c) = record(3, f32s, cap, false);
    h.add_record(r).unwrap();
    wait_for("40 quanta recorded", || {
        c.ring.load_write() >= 40 * Q as u64
    });
    // Sampled together after the engine wrote: the wake for the quantum just written may
    // still be on its way, so allow one.
    let (write, woken) = (c.ring.load_write(), u64::from(c.ring.wake_seq()));
    let every = 4 * Q as u64;
    assert!(
        woken.abs_diff(write / every) <= 1,
        "{woken} wake-ups for {write} frames written (one per {every} frames expected)"
    );
    assert!(
        woken * 2 < write / Q as u64,
        "{woken} wake-ups in {} cycles: not once per cycle",
        write / Q as u64
    );
    h.shutdown().unwrap();
}
