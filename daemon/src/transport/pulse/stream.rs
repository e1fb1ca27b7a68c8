//! The pulse transport's stream pumps: what turns memblocks into a native playback ring and a
//! native record ring into memblocks, with PulseAudio's flow control (REQUEST, prebuffering,
//! STARTED / UNDERFLOW, drain) on top.
//!
//! The pumps pace themselves: the connection task calls [`Play::pump`] / [`Rec::pump`] every
//! few milliseconds and after each memblock, and they read the ring's published positions. They
//! never wait on the ring's wake-up fd, so the wake-up mechanism can change underneath. All ring
//! access of a playback stream goes through [`RingWriter`], the one adapter to switch over.

use super::convert::{self, Remix};
use pulseaudio::protocol::stream::BufferAttr;
use pulseaudio::protocol::{ChannelMap, SampleFormat, SampleSpec};
use soundgate_proto::resample::Resampler;
use soundgate_proto::ring::{self, Ring};
use soundgate_proto::shm::{self, Mapping};
use soundgate_proto::wire::StreamId;
use std::os::fd::{AsFd, OwnedFd};

/// Most bytes one memblock we send carries (libpulse's own chunks are about 64 KiB).
pub const MAX_CHUNK: usize = 64 * 1024;
/// The largest queue (maxlength) a client may ask for, bytes.
pub const MAX_LENGTH: u32 = 4 * 1024 * 1024;
/// The largest queue a playback stream may have, in milliseconds of its audio.
pub const MAX_QUEUE_MS: u64 = 4000;

/// Bytes in one frame of `spec`.
pub fn frame_bytes(spec: &SampleSpec) -> usize {
    spec.format.bytes_per_sample() * usize::from(spec.channels)
}

/// Bytes `ms` milliseconds of `spec` take, whole frames.
pub fn ms_bytes(spec: &SampleSpec, ms: u64) -> u64 {
    u64::from(spec.sample_rate) * ms / 1000 * frame_bytes(spec) as u64
}

/// Converts client-side bytes to microseconds.
pub fn bytes_usec(spec: &SampleSpec, bytes: u64) -> u64 {
    let fb = frame_bytes(spec).max(1) as u64;
    let rate = u64::from(spec.sample_rate.max(1));
    ((u128::from(bytes / fb) * 1_000_000) / u128::from(rate)) as u64
}

fn round_down(v: u64, fb: u64) -> u64 {
    v / fb * fb
}

fn round_up(v: u64, fb: u64) -> u64 {
    v.div_ceil(fb) * fb
}

/// Clamps playback buffer attributes the way §7.1 of the protocol reference describes, with
/// tlength also capped at `max_tlength_ms` (what the ring may hold) and raised to at least
/// `min_tlength` bytes (what the sink's quantum needs to play without running dry).
pub fn playback_attr(
    spec: &SampleSpec,
    mut a: BufferAttr,
    max_tlength_ms: u64,
    min_tlength: u64,
) -> BufferAttr {
    let fb = frame_bytes(spec).max(1) as u64;
    let cap = |v: u32| u64::from(v);
    let mut maxlength = if a.max_length == u32::MAX || a.max_length > MAX_LENGTH {
        u64::from(MAX_LENGTH)
    } else {
        cap(a.max_length)
    };
    // At most 4 s of the client's audio: what is queued is kept converted (f32 at the sink's
    // rate), which for 8 kHz u8 mono is 48 times the bytes the client sent.
    maxlength = round_up(maxlength.min(ms_bytes(spec, MAX_QUEUE_MS)), fb).max(fb);
    let max_t = ms_bytes(spec, max_tlength_ms).max(fb);
    let mut tlength = if a.target_length == u32::MAX || a.target_length == 0 {
        ms_bytes(spec, 2000)
    } else {
        cap(a.target_length)
    };
    tlength = round_up(tlength.max(min_tlength).min(maxlength).min(max_t), fb).max(2 * fb);
    let mut minreq = if a.minimum_request_length == u32::MAX || a.minimum_request_length == 0 {
        ms_bytes(spec, 20).min(tlength / 4)
    } else {
        cap(a.minimum_request_length)
    };
    minreq = round_down(minreq, fb).max(fb);
    if tlength < minreq + fb {
        minreq = round_down(tlength - fb, fb).max(fb);
    }
    let max_prebuf = tlength + fb - minreq;
    let prebuf = if a.pre_buffering == u32::MAX || cap(a.pre_buffering) > max_prebuf {
        max_prebuf
    } else {
        round_down(cap(a.pre_buffering), fb)
    };
    let to32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    a.max_length = to32(maxlength);
    a.target_length = to32(tlength);
    a.minimum_request_length = to32(minreq);
    a.pre_buffering = to32(prebuf);
    a
}

/// Clamps record buffer attributes: maxlength as for playback, fragsize default 25 ms and at
/// most [`MAX_CHUNK`].
pub fn record_attr(spec: &SampleSpec, mut a: BufferAttr) -> BufferAttr {
    let fb = frame_bytes(spec).max(1) as u64;
    let maxlength = if a.max_length == u32::MAX || a.max_length > MAX_LENGTH {
        u64::from(MAX_LENGTH)
    } else {
        round_up(u64::from(a.max_length), fb).max(fb)
    };
    let frag = if a.fragment_size == u32::MAX || a.fragment_size == 0 {
        ms_bytes(spec, 25)
    } else {
        u64::from(a.fragment_size)
    };
    let frag = round_down(frag.min(MAX_CHUNK as u64).min(maxlength), fb).max(fb);
    a.max_length = u32::try_from(maxlength).unwrap_or(u32::MAX);
    a.fragment_size = u32::try_from(frag).unwrap_or(u32::MAX);
    a
}

/// The one place that writes a playback ring: f32 frames at the sink's rate and channels.
#[derive(Debug)]
pub struct RingWriter {
    ring: Ring,
    written: u64,
}

impl RingWriter {
    /// Creates a sealed memfd ring of `capacity` frames of `frame_bytes` bytes; returns the
    /// writer and the fds `CreatePlayback` carries (the memfd alone: the engine wakes writers
    /// through the ring's futex word, which the pump does not need — it paces itself on a
    /// timer against the ring's read position).
    pub fn create(capacity: u64, frame_bytes: usize) -> Result<(RingWriter, Vec<OwnedFd>), String> {
        let size = ring::ring_bytes(capacity, frame_bytes).map_err(|e| e.to_string())?;
        let memfd = shm::create_sealed("soundgate-pulse", size).map_err(|e| e.to_string())?;
        let map = Mapping::new(memfd.as_fd(), size, true).map_err(|e| e.to_string())?;
        let ring = Ring::init(map, capacity, frame_bytes).map_err(|e| e.to_string())?;
        Ok((RingWriter { ring, written: 0 }, vec![memfd]))
    }

    /// Frames the engine has consumed (its published read position, never past our writes).
    pub fn consumed(&self) -> u64 {
        self.ring.load_read().min(self.written)
    }

    /// Frames queued in the ring.
    pub fn queued(&self) -> u64 {
        self.written - self.consumed()
    }

    /// Copies as many whole frames of `bytes` as fit; returns the bytes taken.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let fb = self.ring.frame_bytes();
        let free = self.ring.capacity() - self.queued();
        let frames = free.min((bytes.len() / fb) as u64);
        if frames == 0 {
            return 0;
        }
        let n = frames as usize * fb;
        if self.ring.copy_in(self.written, &bytes[..n]).is_err() {
            return 0;
        }
        self.written += frames;
        if self.ring.store_write(self.written).is_err() {
            return 0;
        }
        n
    }
}

/// What a pump asks the connection to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send REQUEST for this many bytes.
    Request(u32),
    /// Send STARTED.
    Started,
    /// Send UNDERFLOW at this read offset.
    Underflow(i64),
    /// Send OVERFLOW.
    Overflow(u32),
    /// Acknowledge the DRAIN with this tag.
    Drained(u32),
    /// Cork (true) or uncork the engine stream.
    Cork(bool),
}

/// A playback stream of a pulse client.
#[derive(Debug)]
pub struct Play {
    /// The stream's id in the core (also its sink-input index).
    pub id: StreamId,
    pub spec: SampleSpec,
    pub map: ChannelMap,
    pub attr: BufferAttr,
    /// The tlength floor (client bytes) of this stream's sink.
    pub min_tlength: u64,
    /// The ring carries the client's bytes unchanged (no conversion).
    passthrough: bool,
    /// Sink-side rate.
    sink_rate: u32,
    pub quantum: u32,
    remix: Remix,
    resampler: Resampler,
    ring: RingWriter,
    /// Converted f32le bytes waiting for room in the ring.
    pending: Vec<u8>,
    /// A partial frame left over from the last memblock.
    carry: Vec<u8>,
    scratch: (Vec<f32>, Vec<f32>, Vec<f32>),
    /// Client bytes received, and asked for but not yet received.
    written_in: u64,
    requested: u64,
    /// Ring frames not counted as played (after a flush the ring's old content still plays
    /// out, so accounting restarts from the ring's end).
    pub client_corked: bool,
    prebuffering: bool,
    engine_corked: bool,
    started: bool,
    start_read: u64,
    pub drain_tag: Option<u32>,
    /// Client bytes of read offset lost to flushes (they count as consumed).
    flushed: u64,
    /// The conversion budget share this stream holds, released on drop.
    pub _budget: Option<super::BudgetShare>,
}

/// Everything needed to build a [`Play`] once the core accepted the stream.
#[derive(Debug)]
pub struct PlaySetup {
    /// The ring carries the client's bytes unchanged.
    pub passthrough: bool,
    pub min_tlength: u64,
    pub spec: SampleSpec,
    pub map: ChannelMap,
    pub attr: BufferAttr,
    pub sink_rate: u32,
    pub sink_map: ChannelMap,
    pub quantum: u32,
    pub corked: bool,
}

impl Play {
    /// Builds the stream from its setup, the created ring and the core's stream id.
    pub fn new(setup: PlaySetup, ring: RingWriter, id: StreamId) -> Result<Play, String> {
        let sink_ch = usize::from(setup.sink_map.num_channels().max(1));
        let resampler = Resampler::new(setup.spec.sample_rate, setup.sink_rate, sink_ch)
            .map_err(|e| e.to_string())?;
        let prebuffering = setup.attr.pre_buffering > 0;
        Ok(Play {
            id,
            spec: setup.spec,
            remix: Remix::new(&setup.map, &setup.sink_map),
            map: setup.map,
            attr: setup.attr,
            min_tlength: setup.min_tlength,
            passthrough: setup.passthrough,
            sink_rate: setup.sink_rate,
            quantum: setup.quantum,
            resampler,
            ring,
            pending: Vec::new(),
            carry: Vec::new(),
            scratch: (Vec::new(), Vec::new(), Vec::new()),
            written_in: 0,
            requested: u64::from(setup.attr.target_length),
            client_corked: setup.corked,
            prebuffering,
            engine_corked: true,
            started: false,
            start_read: 0,
            drain_tag: None,
            flushed: 0,
            _budget: None,
        })
    }

    /// The first request, sent in the create reply (counted as requested).
    pub fn initial_request(&self) -> u32 {
        self.attr.target_length
    }

    fn frame_in(&self) -> u64 {
        frame_bytes(&self.spec).max(1) as u64
    }

    /// Ring frames → client bytes.
    fn ring_to_in(&self, frames: u64) -> u64 {
        let f = u128::from(frames) * u128::from(self.spec.sample_rate)
            / u128::from(self.sink_rate.max(1));
        (f as u64).saturating_mul(self.frame_in())
    }

    /// Client bytes the engine has played (the read offset in the latency reply).
    pub fn read_offset(&self) -> u64 {
        (self.ring_to_in(self.ring.consumed()) + self.flushed).min(self.written_in)
    }

    /// Client bytes received (the write offset).
    pub fn write_offset(&self) -> u64 {
        self.written_in
    }

    /// Client bytes queued anywhere on our side.
    fn queued_in(&self) -> u64 {
        self.written_in.saturating_sub(self.read_offset())
    }

    /// Whether the engine is consuming (not corked, past prebuffering, started).
    pub fn playing(&self) -> bool {
        !self.engine_corked && self.started
    }

    /// Latency of the device side, microseconds (one quantum).
    pub fn sink_usec(&self) -> u64 {
        u64::from(self.quantum) * 1_000_000 / u64::from(self.sink_rate.max(1))
    }

    /// Takes a memblock's bytes: converts them and queues them for the ring. Returns an
    /// overflow to report if the queue is past maxlength (the excess is dropped).
    pub fn write(&mut self, data: &[u8]) -> Result<Option<Action>, String> {
        let fb = self.frame_in() as usize;
        let room = u64::from(self.attr.max_length).saturating_sub(self.queued_in()) as usize;
        let (data, overflow) = if data.len() > room {
            (&data[..room - room % fb], data.len() - (room - room % fb))
        } else {
            (data, 0)
        };
        self.requested = self.requested.saturating_sub(data.len() as u64);
        self.written_in += data.len() as u64;
        let mut joined;
        let mut bytes = data;
        if !self.carry.is_empty() {
            joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(data);
            bytes = &joined[..];
            let whole = bytes.len() - bytes.len() % fb;
            self.carry = bytes[whole..].to_vec();
            joined.truncate(whole);
            self.convert_in(&joined)?;
        } else {
            let whole = bytes.len() - bytes.len() % fb;
            self.carry = bytes[whole..].to_vec();
            self.convert_in(&bytes[..whole])?;
        }
        Ok((overflow > 0).then(|| Action::Overflow(u32::try_from(overflow).unwrap_or(u32::MAX))))
    }

    fn convert_in(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.passthrough {
            self.pending.extend_from_slice(bytes);
            return Ok(());
        }
        let (dec, mixed, out) = &mut self.scratch;
        dec.clear();
        mixed.clear();
        out.clear();
        convert::decode(self.spec.format, bytes, dec);
        self.remix.apply(dec, mixed);
        self.resampler
            .process(mixed, out)
            .map_err(|e| e.to_string())?;
        self.pending.reserve(out.len() * 4);
        for s in out.iter() {
            self.pending.extend_from_slice(&s.to_le_bytes());
        }
        Ok(())
    }

    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let n = self.ring.push(&self.pending);
        self.pending.drain(..n);
    }

    /// The engine counted an underrun of this stream (it had less than a quantum to play):
    /// the UNDERFLOW to send, unless the stream is draining (running out is then expected).
    pub fn underflowed(&mut self, out: &mut Vec<Action>) {
        if self.drain_tag.is_some() {
            return;
        }
        self.started = false;
        self.start_read = self.ring.consumed();
        out.push(Action::Underflow(
            i64::try_from(self.read_offset()).unwrap_or(i64::MAX),
        ));
        // Unlike PulseAudio, no second prebuffering: the engine resumes as soon as a quantum
        // is queued, which recovers fastest on a busy machine.
    }

    /// DRAIN: flushes the resampler's tail and remembers the tag to acknowledge.
    pub fn drain(&mut self, tag: u32) -> Result<(), String> {
        let (_, _, out) = &mut self.scratch;
        out.clear();
        self.resampler.finish(out).map_err(|e| e.to_string())?;
        for s in out.iter() {
            self.pending.extend_from_slice(&s.to_le_bytes());
        }
        self.prebuffering = false;
        self.drain_tag = Some(tag);
        Ok(())
    }

    /// FLUSH: drops what has not reached the ring (what the ring holds still plays: its write
    /// index only grows).
    pub fn flush(&mut self) {
        self.pending.clear();
        self.carry.clear();
        let (_, _, out) = &mut self.scratch;
        out.clear();
        let _ = self.resampler.finish(out);
        let in_ring = self.ring_to_in(self.ring.queued());
        self.flushed = self
            .written_in
            .saturating_sub(self.ring_to_in(self.ring.consumed()) + in_ring);
        self.requested = 0;
        if self.attr.pre_buffering > 0 {
            self.prebuffering = true;
        }
    }

    /// TRIGGER: ends prebuffering now.
    pub fn trigger(&mut self) {
        self.prebuffering = false;
    }

    /// PREBUF: prebuffers again.
    pub fn prebuf(&mut self) {
        if self.attr.pre_buffering > 0 {
            self.prebuffering = true;
        }
    }

    /// New buffer attributes (already clamped).
    pub fn set_attr(&mut self, attr: BufferAttr) {
        self.attr = attr;
    }

    /// One pump step: feeds the ring and says what to tell the client and the core.
    pub fn pump(&mut self, out: &mut Vec<Action>) {
        self.flush_pending();
        let queued = self.queued_in();
        if self.prebuffering
            && !self.client_corked
            && (queued >= u64::from(self.attr.pre_buffering) || self.drain_tag.is_some())
        {
            self.prebuffering = false;
        }
        let want_corked = self.client_corked || self.prebuffering;
        if want_corked != self.engine_corked {
            self.engine_corked = want_corked;
            if !want_corked {
                self.start_read = self.ring.consumed();
            }
            out.push(Action::Cork(want_corked));
        }
        let consumed = self.ring.consumed();
        if !self.engine_corked && !self.started && consumed > self.start_read {
            self.started = true;
            out.push(Action::Started);
        }
        let empty = self.pending.is_empty() && self.ring.queued() == 0;
        if let Some(tag) = self.drain_tag {
            if empty {
                self.drain_tag = None;
                out.push(Action::Drained(tag));
            }
        }
        let target = u64::from(self.attr.target_length);
        let missing = target.saturating_sub(self.queued_in() + self.requested);
        let missing = round_down(missing, self.frame_in());
        if missing > 0
            && (missing >= u64::from(self.attr.minimum_request_length) || self.prebuffering)
        {
            self.requested += missing;
            out.push(Action::Request(u32::try_from(missing).unwrap_or(u32::MAX)));
        }
    }
}

/// A record stream of a pulse client.
#[derive(Debug)]
pub struct Rec {
    pub id: StreamId,
    pub spec: SampleSpec,
    pub map: ChannelMap,
    pub attr: BufferAttr,
    pub corked: bool,
    ring: Ring,
    read: u64,
    remix: Remix,
    resampler: Resampler,
    source_rate: u32,
    /// Client bytes sent.
    pub sent: u64,
    pending: Vec<u8>,
    _fds: Vec<OwnedFd>,
    pub _budget: Option<super::BudgetShare>,
}

/// Everything needed to build a [`Rec`] once the core accepted the stream.
#[derive(Debug)]
pub struct RecSetup {
    pub source: u32,
    pub source_name: String,
    pub spec: SampleSpec,
    pub map: ChannelMap,
    pub attr: BufferAttr,
    pub source_rate: u32,
    pub source_map: ChannelMap,
    pub corked: bool,
    pub capacity: u64,
    pub budget: Option<super::BudgetShare>,
}

impl Rec {
    /// Maps the server-made ring (read-only) from the core's reply fds.
    pub fn new(setup: RecSetup, id: StreamId, fds: Vec<OwnedFd>) -> Result<Rec, String> {
        let src_ch = usize::from(setup.source_map.num_channels().max(1));
        let fb = src_ch * 4;
        let memfd = fds.first().ok_or("the record reply carried no memfd")?;
        let size = ring::ring_bytes(setup.capacity, fb).map_err(|e| e.to_string())?;
        let map = Mapping::new(memfd.as_fd(), size, false).map_err(|e| e.to_string())?;
        let ring = Ring::attach(map, setup.capacity, fb).map_err(|e| e.to_string())?;
        let resampler = Resampler::new(
            setup.source_rate,
            setup.spec.sample_rate,
            usize::from(setup.spec.channels),
        )
        .map_err(|e| e.to_string())?;
        let read = ring.load_write();
        Ok(Rec {
            id,
            remix: Remix::new(&setup.source_map, &setup.map),
            spec: setup.spec,
            map: setup.map,
            attr: setup.attr,
            corked: setup.corked,
            ring,
            read,
            resampler,
            source_rate: setup.source_rate,
            sent: 0,
            pending: Vec::new(),
            _fds: fds,
            _budget: setup.budget,
        })
    }

    /// Reads what the engine captured since the last call and returns memblock payloads.
    pub fn pump(&mut self) -> Vec<Vec<u8>> {
        let write = self.ring.load_write();
        let cap = self.ring.capacity();
        let from = ring::record_valid_from(write, cap);
        if self.read < from {
            self.read = from;
        }
        if write < self.read {
            self.read = write;
        }
        let n = write - self.read;
        let mut chunks = Vec::new();
        if n == 0 {
            return chunks;
        }
        let fb = self.ring.frame_bytes();
        let mut raw = vec![0u8; n as usize * fb];
        if self.ring.copy_out(self.read, &mut raw).is_err() {
            return chunks;
        }
        // Lapped while copying: drop what may be torn.
        let after = ring::record_valid_from(self.ring.load_write(), cap);
        self.read = write;
        if after > write - n {
            return chunks;
        }
        if self.corked {
            return chunks;
        }
        let mut dec = Vec::new();
        convert::decode(SampleFormat::Float32Le, &raw, &mut dec);
        let mut mixed = Vec::new();
        self.remix.apply(&dec, &mut mixed);
        let mut resampled = Vec::new();
        if self.resampler.process(&mixed, &mut resampled).is_err() {
            return chunks;
        }
        convert::encode(self.spec.format, &resampled, &mut self.pending);
        let frag = (self.attr.fragment_size as usize).max(frame_bytes(&self.spec));
        while !self.pending.is_empty() {
            let take = self.pending.len().min(frag);
            let rest = self.pending.split_off(take);
            let chunk = std::mem::replace(&mut self.pending, rest);
            self.sent += chunk.len() as u64;
            chunks.push(chunk);
        }
        chunks
    }

    /// Drops captured data not yet sent.
    pub fn flush(&mut self) {
        self.pending.clear();
        self.read = self.ring.load_write();
    }

    /// Source latency, microseconds (what the ring holds unread).
    pub fn source_usec(&self) -> u64 {
        let q = self.ring.load_write().saturating_sub(self.read);
        q * 1_000_000 / u64::from(self.source_rate.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SampleSpec {
        SampleSpec {
            format: SampleFormat::S16Le,
            channels: 2,
            sample_rate: 48_000,
        }
    }

    #[test]
    fn defaults_and_clamps() {
        let a = playback_attr(
            &spec(),
            BufferAttr {
                max_length: u32::MAX,
                target_length: u32::MAX,
                pre_buffering: u32::MAX,
                minimum_request_length: u32::MAX,
                fragment_size: u32::MAX,
            },
            500,
            0,
        );
        assert_eq!(a.target_length, 48_000 / 2 * 4, "capped at 500 ms");
        assert_eq!(a.minimum_request_length, 960 * 4);
        assert_eq!(
            a.pre_buffering,
            a.target_length + 4 - a.minimum_request_length
        );
        assert_eq!(a.max_length, 4 * 48_000 * 4, "four seconds");
        let tiny = playback_attr(
            &spec(),
            BufferAttr {
                max_length: 7,
                target_length: 1,
                pre_buffering: 0,
                minimum_request_length: 1,
                fragment_size: 0,
            },
            500,
            0,
        );
        assert!(tiny.target_length >= tiny.minimum_request_length + 4);
        let floor = playback_attr(
            &spec(),
            BufferAttr {
                max_length: u32::MAX,
                ..tiny
            },
            500,
            6 * 256 * 4,
        );
        assert_eq!(floor.target_length, 6 * 256 * 4, "raised to six quanta");
        assert_eq!(tiny.pre_buffering, 0);
        let r = record_attr(
            &spec(),
            BufferAttr {
                max_length: u32::MAX,
                target_length: 0,
                pre_buffering: 0,
                minimum_request_length: 0,
                fragment_size: u32::MAX,
            },
        );
        assert_eq!(r.fragment_size, 1200 * 4);
    }
}
