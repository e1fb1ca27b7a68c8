//! The shared-memory ring: layout, index arithmetic and byte copies.
//!
//! ```text
//! offset   0  magic u32 | version u32 | capacity u64 (frames) | frame_bytes u32 | pad
//! offset  64  write_index AtomicU64   (own cache line)
//! offset 128  read_index  AtomicU64   (own cache line)
//! offset 192  wake_seq    AtomicU32   (futex word: bumped by the server before each wake-up)
//! offset 196  waiting     AtomicU32   (playback: client sets 1 before it sleeps; server clears)
//! offset 200  wake_below  AtomicU64   (playback: wake me once the fill is below this, frames)
//! offset 208  reserved
//! offset 256  data: capacity * frame_bytes bytes
//! ```
//!
//! Indices count frames since the stream began and only grow; a frame's byte offset is
//! `(index % capacity) * frame_bytes`. The writer publishes with Release after copying, the
//! reader loads with Acquire before copying.
//!
//! **Trust.** Neither side trusts the other's index. The reader keeps its own read position and
//! checks every write index it loads with [`readable`]: one that went backwards or claims more
//! than `capacity` frames is a protocol error that ends the stream. A server-side reader never
//! reads `read_index` back; it only publishes it for the client's back-pressure.
//!
//! **Record rings** are written by the server into a memfd the client can map read-only, so the
//! client cannot publish its position: the server writes regardless (dropping the oldest data
//! when the client lags) and the client detects that with [`record_valid_from`].
//!
//! **Wake-ups** go through the `wake_seq` futex word ([`crate::futex`]), never through a file
//! the peer holds: the server bumps the word and calls `FUTEX_WAKE`, which cannot block
//! whatever the peer wrote anywhere in the header. A playback client that wants to sleep until
//! there is room publishes `wake_below` and then `waiting` ([`Ring::arm_wake`]), re-checks
//! the read index, and waits on the sequence it loaded *before* arming; the server, after
//! publishing its read index, wakes it only if it is waiting and the fill dropped below its
//! threshold ([`Ring::take_wake_request`]), clearing `waiting` as it does, so a playback
//! client costs the server at most one wake-up per cycle, whatever it writes there (see
//! [`wake_wanted`]). Record rings are read-only to the client, which cannot publish anything:
//! the server wakes a record reader once per cycle it wrote frames.
//!
//! Unsafe code here is limited to raw byte copies and atomic views into a [`Mapping`].

use crate::shm::Mapping;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// "SGR1".
pub const MAGIC: u32 = 0x3152_4753;
/// Layout version (2: futex wake-ups in the header instead of an eventfd beside the ring).
pub const RING_VERSION: u32 = 2;
/// Bytes before the data area.
pub const HEADER_BYTES: usize = 256;
/// Largest frame (8 channels of 32-bit samples).
pub const MAX_FRAME_BYTES: usize = 32;

/// The header at the start of every ring. All fields are atomics because the peer process may
/// write them at any time.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct RingHeader {
    magic: AtomicU32,
    version: AtomicU32,
    capacity: AtomicU64,
    frame_bytes: AtomicU32,
    _pad0: [u8; 44],
    write_index: AtomicU64,
    _pad1: [u8; 56],
    read_index: AtomicU64,
    _pad2: [u8; 56],
    wake_seq: AtomicU32,
    waiting: AtomicU32,
    wake_below: AtomicU64,
    _reserved: [u8; 48],
}

const _: () = assert!(std::mem::size_of::<RingHeader>() == HEADER_BYTES);
const _: () = assert!(std::mem::offset_of!(RingHeader, write_index) == 64);
const _: () = assert!(std::mem::offset_of!(RingHeader, read_index) == 128);
const _: () = assert!(std::mem::offset_of!(RingHeader, wake_seq) == 192);
const _: () = assert!(std::mem::offset_of!(RingHeader, waiting) == 196);
const _: () = assert!(std::mem::offset_of!(RingHeader, wake_below) == 200);

/// The server's wake-up decision for a playback stream, from the (untrusted) words the client
/// wrote: wake it when it says it is waiting and the ring's fill (frames the server has not
/// consumed yet) is below the threshold it asked for. Pure: any values are fine.
pub fn wake_wanted(waiting: u32, wake_below: u64, fill: u64) -> bool {
    waiting != 0 && fill < wake_below
}

/// How a playback client whose ring is full sleeps ([`playback_wake_plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakePlan {
    /// Sleep this long (a timed futex wait), then refill: by then the fill has dropped to
    /// about the refill level, half the ring. Zero when nothing can be predicted.
    pub sleep: std::time::Duration,
    /// The safety net to arm ([`Ring::arm_wake`]): the server wakes the client only if the
    /// fill drops below this before the timer fires (a late client, a stalled timer).
    pub wake_below: u64,
}

/// A playback client's wake-up plan, from its ring's `capacity`, the device's `quantum`
/// (frames the engine consumes per cycle), the current `fill` and the device `rate`: sleep
/// until the fill is predicted to reach half the ring (`(fill - capacity/2) / rate`), and
/// arm the server's wake-up at an emergency level at least one quantum below that (and at
/// most a quarter of the ring), so that the timer normally fires first and the server makes
/// no `FUTEX_WAKE` at all. The engine consumes whole quanta at cycle boundaries whose phase
/// the client does not know, so the observed fill at the timer is within a quantum of the
/// prediction; the quantum of headroom keeps that from crossing the emergency level. Pure:
/// any values are fine (`wake_below` is always at least 1, so the safety net always exists).
pub fn playback_wake_plan(capacity: u64, quantum: u64, fill: u64, rate: u32) -> WakePlan {
    let refill = capacity / 2;
    let wake_below = (capacity / 4)
        .min(refill.saturating_sub(quantum.max(1)))
        .max(1);
    let ahead = u128::from(fill.saturating_sub(refill));
    let sleep = if rate == 0 {
        std::time::Duration::ZERO
    } else {
        let ns = ahead * 1_000_000_000 / u128::from(rate);
        std::time::Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    };
    WakePlan { sleep, wake_below }
}

/// Ring misuse or a peer's protocol violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The mapping is not the size the geometry needs.
    #[error("ring mapping is {actual} bytes, geometry needs {expected}")]
    Size { expected: usize, actual: usize },
    /// Capacity or frame size out of range.
    #[error("ring geometry invalid: capacity {capacity} frames of {frame_bytes} bytes")]
    Geometry { capacity: u64, frame_bytes: usize },
    /// The header does not carry the expected magic, version or geometry.
    #[error("ring header mismatch: {0}")]
    Header(&'static str),
    /// The peer's index is out of range.
    #[error("ring index out of range: write {write}, read {read}, capacity {capacity}")]
    BadIndex {
        write: u64,
        read: u64,
        capacity: u64,
    },
    /// A write on a read-only mapping.
    #[error("ring is mapped read-only")]
    ReadOnly,
}

/// Total bytes a ring of `capacity` frames of `frame_bytes` bytes needs.
pub fn ring_bytes(capacity: u64, frame_bytes: usize) -> Result<usize, RingError> {
    let bad = RingError::Geometry {
        capacity,
        frame_bytes,
    };
    if capacity == 0 || frame_bytes == 0 || frame_bytes > MAX_FRAME_BYTES {
        return Err(bad);
    }
    usize::try_from(capacity)
        .ok()
        .and_then(|c| c.checked_mul(frame_bytes))
        .and_then(|d| d.checked_add(HEADER_BYTES))
        .filter(|&n| n <= crate::shm::MAX_SHM_BYTES)
        .ok_or(bad)
}

/// Frames readable between `read` and `write`, or an error if the writer's index is impossible
/// (behind the reader, or more than `capacity` ahead).
pub fn readable(write: u64, read: u64, capacity: u64) -> Result<u64, RingError> {
    match write.checked_sub(read) {
        Some(n) if n <= capacity => Ok(n),
        _ => Err(RingError::BadIndex {
            write,
            read,
            capacity,
        }),
    }
}

/// How often the server wakes a record reader: each time its write index crosses a multiple
/// of this many frames, a quarter of the ring (but at least a `quantum`, so at most once per
/// cycle). The reader then finds a quarter of the ring to read and three quarters of room
/// left before it is lapped, and the server makes a quarter as many `FUTEX_WAKE`s as it would
/// waking it every cycle. Pure: any values are fine (the result is at least 1).
pub fn record_wake_every(capacity: u64, quantum: u64) -> u64 {
    (capacity / 4).max(quantum).max(1)
}

/// Whether a record writer that moved its write index from `before` to `after` crossed a
/// wake-up boundary ([`record_wake_every`]).
pub fn record_wake_due(before: u64, after: u64, every: u64) -> bool {
    let every = every.max(1);
    before / every != after / every
}

/// For a record ring (writer overwrites): the first index still intact when the writer is at
/// `write`. Frames before it were overwritten.
pub fn record_valid_from(write: u64, capacity: u64) -> u64 {
    write.saturating_sub(capacity)
}

/// Splits `frames` frames starting at `index` into at most two contiguous spans of the data
/// area, as (first frame slot, frame count) pairs. `frames` must be <= `capacity`.
pub fn spans(index: u64, frames: u64, capacity: u64) -> [(u64, u64); 2] {
    let start = index % capacity;
    let first = frames.min(capacity - start);
    [(start, first), (0, frames - first)]
}

/// A ring over a mapping, with the geometry the local side agreed to (never re-read from the
/// header after [`Ring::attach`]).
#[derive(Debug)]
pub struct Ring {
    map: Mapping,
    capacity: u64,
    frame_bytes: usize,
}

impl Ring {
    /// Takes a fresh writable mapping and writes the header (the creator's side).
    pub fn init(map: Mapping, capacity: u64, frame_bytes: usize) -> Result<Ring, RingError> {
        let ring = Ring::checked(map, capacity, frame_bytes)?;
        if !ring.map.writable() {
            return Err(RingError::ReadOnly);
        }
        let h = ring.header();
        h.magic.store(MAGIC, Ordering::Relaxed);
        h.version.store(RING_VERSION, Ordering::Relaxed);
        h.capacity.store(capacity, Ordering::Relaxed);
        h.frame_bytes.store(frame_bytes as u32, Ordering::Relaxed);
        h.write_index.store(0, Ordering::Relaxed);
        h.wake_seq.store(0, Ordering::Relaxed);
        h.waiting.store(0, Ordering::Relaxed);
        h.wake_below.store(0, Ordering::Relaxed);
        h.read_index.store(0, Ordering::Release);
        Ok(ring)
    }

    /// Attaches to a ring the peer created, checking its header against the agreed geometry
    /// and that both indices start at zero.
    pub fn attach(map: Mapping, capacity: u64, frame_bytes: usize) -> Result<Ring, RingError> {
        let ring = Ring::checked(map, capacity, frame_bytes)?;
        let h = ring.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(RingError::Header("bad magic"));
        }
        if h.version.load(Ordering::Relaxed) != RING_VERSION {
            return Err(RingError::Header("unsupported version"));
        }
        if h.capacity.load(Ordering::Relaxed) != capacity
            || h.frame_bytes.load(Ordering::Relaxed) as usize != frame_bytes
        {
            return Err(RingError::Header("geometry differs from the request"));
        }
        let (w, r) = (
            h.write_index.load(Ordering::Acquire),
            h.read_index.load(Ordering::Acquire),
        );
        readable(w, r, capacity)?;
        Ok(ring)
    }

    fn checked(map: Mapping, capacity: u64, frame_bytes: usize) -> Result<Ring, RingError> {
        let expected = ring_bytes(capacity, frame_bytes)?;
        if map.len() != expected {
            return Err(RingError::Size {
                expected,
                actual: map.len(),
            });
        }
        Ok(Ring {
            map,
            capacity,
            frame_bytes,
        })
    }

    fn header(&self) -> &RingHeader {
        // SAFETY: the mapping is at least HEADER_BYTES long (checked in `checked`) and
        // page-aligned, so it satisfies RingHeader's size and 64-byte alignment. Every field is
        // an atomic or padding, so concurrent writes by the peer are not data races, and any
        // bit pattern is a valid value. Atomic loads from a read-only mapping are plain loads
        // on the 64-bit targets we support.
        unsafe { &*(self.map.as_ptr() as *const RingHeader) }
    }

    /// Capacity in frames.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes per frame.
    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }

    /// Loads the writer's index (Acquire). Untrusted when the peer writes.
    pub fn load_write(&self) -> u64 {
        self.header().write_index.load(Ordering::Acquire)
    }

    /// Loads the reader's index (Acquire). Untrusted when the peer reads.
    pub fn load_read(&self) -> u64 {
        self.header().read_index.load(Ordering::Acquire)
    }

    /// Publishes the writer's index (Release), after the frames are copied in.
    pub fn store_write(&self, index: u64) -> Result<(), RingError> {
        self.ensure_writable()?;
        self.header().write_index.store(index, Ordering::Release);
        Ok(())
    }

    /// Publishes the reader's index (Release), after the frames are copied out.
    pub fn store_read(&self, index: u64) -> Result<(), RingError> {
        self.ensure_writable()?;
        self.header().read_index.store(index, Ordering::Release);
        Ok(())
    }

    /// The futex word wake-ups go through (for [`crate::futex::wait`]).
    pub fn wake_word(&self) -> &AtomicU32 {
        &self.header().wake_seq
    }

    /// The current wake sequence (Acquire). Load it *before* checking the condition you wait
    /// for, then wait on this value: a wake-up in between makes the wait return at once.
    pub fn wake_seq(&self) -> u32 {
        self.header().wake_seq.load(Ordering::Acquire)
    }

    /// Server side: bumps the wake sequence and wakes at most one waiter. Never blocks (see
    /// [`crate::futex`]); a no-op on a read-only mapping.
    pub fn signal(&self) {
        if !self.map.writable() {
            return;
        }
        let word = &self.header().wake_seq;
        word.fetch_add(1, Ordering::Release);
        crate::futex::wake(word, 1);
    }

    /// Playback client: asks to be woken once the fill drops below `below` frames. Call it,
    /// then re-check the read index (the fence here orders the two), then wait on the
    /// sequence loaded before this call.
    pub fn arm_wake(&self, below: u64) -> Result<(), RingError> {
        self.ensure_writable()?;
        let h = self.header();
        h.wake_below.store(below, Ordering::Relaxed);
        h.waiting.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// Playback client: withdraws a wake-up request (it found room without sleeping).
    pub fn disarm_wake(&self) -> Result<(), RingError> {
        self.ensure_writable()?;
        self.header().waiting.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the waiting flag is set (tests and diagnostics).
    pub fn waiting(&self) -> bool {
        self.header().waiting.load(Ordering::Relaxed) != 0
    }

    /// Server side, after publishing the read index: whether the client asked to be woken at
    /// this `fill` ([`wake_wanted`]); if so the request is consumed (the flag cleared), so the
    /// client must re-arm before it sleeps again. The words are untrusted: whatever they hold,
    /// the answer is one bool and the caller wakes at most once.
    pub fn take_wake_request(&self, fill: u64) -> bool {
        if !self.map.writable() {
            return false;
        }
        // Pairs with the fence in `arm_wake`: either we see the flag, or the client sees our
        // read index when it re-checks after arming.
        fence(Ordering::SeqCst);
        let h = self.header();
        let waiting = h.waiting.load(Ordering::Relaxed);
        if !wake_wanted(waiting, h.wake_below.load(Ordering::Relaxed), fill) {
            return false;
        }
        h.waiting.store(0, Ordering::Relaxed);
        true
    }

    fn ensure_writable(&self) -> Result<(), RingError> {
        if self.map.writable() {
            Ok(())
        } else {
            Err(RingError::ReadOnly)
        }
    }

    fn frames_of(&self, bytes: usize) -> Result<u64, RingError> {
        let frames = (bytes / self.frame_bytes) as u64;
        if !bytes.is_multiple_of(self.frame_bytes) || frames > self.capacity {
            return Err(RingError::Geometry {
                capacity: frames,
                frame_bytes: self.frame_bytes,
            });
        }
        Ok(frames)
    }

    /// Copies whole frames starting at frame `index` into `dst` (its length decides how many).
    pub fn copy_out(&self, index: u64, dst: &mut [u8]) -> Result<(), RingError> {
        let frames = self.frames_of(dst.len())?;
        let mut done = 0usize;
        for (slot, n) in spans(index, frames, self.capacity) {
            let len = n as usize * self.frame_bytes;
            if len == 0 {
                continue;
            }
            let off = HEADER_BYTES + slot as usize * self.frame_bytes;
            // SAFETY: `spans` keeps slot+n <= capacity, so [off, off+len) lies inside the data
            // area of the mapping, whose length `checked` verified; `dst[done..done+len]` is in
            // bounds because the spans add up to `frames` = dst.len()/frame_bytes. We copy raw
            // bytes and never form a reference into shared memory, so a peer writing the same
            // bytes concurrently (a protocol violation) yields garbage audio, not UB in our
            // address space.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.map.as_ptr().add(off),
                    dst.as_mut_ptr().add(done),
                    len,
                );
            }
            done += len;
        }
        Ok(())
    }

    /// Copies whole frames from `src` into the ring starting at frame `index`.
    pub fn copy_in(&self, index: u64, src: &[u8]) -> Result<(), RingError> {
        self.ensure_writable()?;
        let frames = self.frames_of(src.len())?;
        let mut done = 0usize;
        for (slot, n) in spans(index, frames, self.capacity) {
            let len = n as usize * self.frame_bytes;
            if len == 0 {
                continue;
            }
            let off = HEADER_BYTES + slot as usize * self.frame_bytes;
            // SAFETY: bounds as in `copy_out`; the mapping is writable (checked above).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr().add(done),
                    self.map.as_ptr().add(off),
                    len,
                );
            }
            done += len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm;
    use std::os::fd::AsFd;

    fn ring(capacity: u64, frame_bytes: usize) -> (std::os::fd::OwnedFd, Ring) {
        let size = ring_bytes(capacity, frame_bytes).unwrap();
        let fd = shm::create_sealed("ring-test", size).unwrap();
        let map = Mapping::new(fd.as_fd(), size, true).unwrap();
        (fd, Ring::init(map, capacity, frame_bytes).unwrap())
    }

    #[test]
    fn index_arithmetic() {
        assert_eq!(readable(10, 4, 8), Ok(6));
        assert!(readable(13, 4, 8).is_err(), "more than capacity ahead");
        assert!(readable(3, 4, 8).is_err(), "writer behind reader");
        assert!(readable(u64::MAX, 0, 8).is_err());
        assert_eq!(spans(6, 4, 8), [(6, 2), (0, 2)]);
        assert_eq!(spans(16, 8, 8), [(0, 8), (0, 0)]);
        assert_eq!(record_valid_from(20, 8), 12);
        assert_eq!(record_valid_from(3, 8), 0);
    }

    #[test]
    fn spans_cover_exactly_for_all_small_cases() {
        for capacity in 1..9u64 {
            for index in 0..20u64 {
                for frames in 0..=capacity {
                    let [(s1, n1), (s2, n2)] = spans(index, frames, capacity);
                    assert_eq!(n1 + n2, frames);
                    assert!(s1 + n1 <= capacity && s2 + n2 <= capacity);
                    assert_eq!(s1, index % capacity);
                    if n2 > 0 {
                        assert_eq!(s1 + n1, capacity);
                        assert_eq!(s2, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn copies_wrap_around() {
        let (fd, w) = ring(4, 2);
        let size = ring_bytes(4, 2).unwrap();
        let r = Ring::attach(Mapping::new(fd.as_fd(), size, true).unwrap(), 4, 2).unwrap();
        w.copy_in(0, &[1, 1, 2, 2, 3, 3]).unwrap();
        w.store_write(3).unwrap();
        let mut out = [0u8; 6];
        r.copy_out(0, &mut out).unwrap();
        assert_eq!(out, [1, 1, 2, 2, 3, 3]);
        r.store_read(3).unwrap();
        w.copy_in(3, &[4, 4, 5, 5, 6, 6]).unwrap();
        w.store_write(6).unwrap();
        assert_eq!(readable(r.load_write(), 3, 4), Ok(3));
        r.copy_out(3, &mut out).unwrap();
        assert_eq!(out, [4, 4, 5, 5, 6, 6]);
        assert!(r.copy_out(0, &mut [0u8; 3]).is_err(), "partial frame");
        assert!(r.copy_out(0, &mut [0u8; 10]).is_err(), "more than capacity");
    }

    #[test]
    fn attach_checks_header() {
        let (fd, w) = ring(4, 2);
        let size = ring_bytes(4, 2).unwrap();
        let map = || Mapping::new(fd.as_fd(), size, true).unwrap();
        assert!(matches!(
            Ring::attach(map(), 4, 4),
            Err(RingError::Size { .. })
        ));
        w.store_write(100).unwrap();
        assert!(matches!(
            Ring::attach(map(), 4, 2),
            Err(RingError::BadIndex { .. })
        ));
        w.store_write(0).unwrap();
        assert!(Ring::attach(map(), 4, 2).is_ok());
    }

    #[test]
    fn wake_decision_trusts_nothing() {
        assert!(!wake_wanted(0, 100, 10), "not waiting");
        assert!(wake_wanted(1, 100, 10));
        assert!(!wake_wanted(1, 10, 10), "not below the threshold");
        assert!(
            wake_wanted(u32::MAX, u64::MAX, u64::MAX - 1),
            "garbage is just a yes"
        );
        assert!(!wake_wanted(7, 0, 0), "a zero threshold never wakes");
    }

    #[test]
    fn wake_plan_sleeps_to_half_and_arms_a_quantum_lower() {
        use std::time::Duration;
        // The benchmark's case: 20 ms asked, ring of 3 quanta of 512 at 48 kHz.
        let p = playback_wake_plan(1536, 512, 1536, 48_000);
        assert_eq!(p.sleep, Duration::from_millis(16));
        assert_eq!(p.wake_below, 256);
        // A large ring: the safety net at a quarter.
        let p = playback_wake_plan(48_000, 512, 48_000, 48_000);
        assert_eq!(p.sleep, Duration::from_millis(500));
        assert_eq!(p.wake_below, 12_000);
        // Already at or below half: no sleep to predict.
        assert_eq!(
            playback_wake_plan(1536, 512, 700, 48_000).sleep,
            Duration::ZERO
        );
        // Garbage: no rate, no quantum, tiny or huge rings. Always a safety net.
        assert_eq!(playback_wake_plan(8, 0, 8, 0).sleep, Duration::ZERO);
        assert_eq!(playback_wake_plan(1, 1, 1, 48_000).wake_below, 1);
        let p = playback_wake_plan(u64::MAX, u64::MAX, u64::MAX, 1);
        assert!(p.wake_below >= 1);
    }

    #[test]
    fn wake_plan_timer_fires_a_quantum_before_the_safety_net() {
        // For every ring the client library makes (at least 3 quanta), a client that fills
        // the ring and sleeps as planned finds, in the worst cycle phase (one more quantum
        // consumed than predicted), a fill still at or above the emergency level: the
        // server had no reason to wake it. And the ring still holds at least a quantum.
        for quantum in [64u64, 128, 256, 512, 1024, 4096] {
            for capacity in (3 * quantum..40 * quantum).step_by(37) {
                let p = playback_wake_plan(capacity, quantum, capacity, 48_000);
                let predicted = capacity / 2;
                let worst = predicted.saturating_sub(quantum);
                assert!(
                    worst >= p.wake_below,
                    "cap {capacity} q {quantum}: fill {worst} would trip {}",
                    p.wake_below
                );
                assert!(p.wake_below >= 1 && p.wake_below <= capacity / 4);
                assert!(predicted >= quantum, "a quantum left at the timer");
            }
        }
    }

    #[test]
    fn record_readers_are_woken_once_per_quarter_ring_at_most_once_per_cycle() {
        for quantum in [64u64, 128, 256, 1024] {
            for capacity in (2 * quantum..40 * quantum).step_by(53) {
                let every = record_wake_every(capacity, quantum);
                assert!(every >= quantum, "more than one wake per cycle");
                // Woken with at least 3/4 of the ring (less a cycle) still free: never lapped
                // between its wake-ups.
                assert!(every <= (capacity / 4).max(quantum));
                // Writing quantum by quantum from 0, wake-ups are floor(written / every).
                let mut write = 0u64;
                let mut wakes = 0u64;
                for _ in 0..200 {
                    let before = write;
                    write += quantum;
                    wakes += u64::from(record_wake_due(before, write, every));
                }
                assert_eq!(wakes, write / every, "cap {capacity} q {quantum}");
            }
        }
        // A ring of 16 quanta: one wake-up every 4 cycles.
        assert_eq!(record_wake_every(16 * 256, 256), 4 * 256);
        // Garbage never divides by zero.
        assert_eq!(record_wake_every(0, 0), 1);
        assert!(record_wake_due(0, u64::MAX, 0));
    }

    #[test]
    fn header_wake_words() {
        let (fd, server) = ring(8, 4);
        let size = ring_bytes(8, 4).unwrap();
        let client = Ring::attach(Mapping::new(fd.as_fd(), size, true).unwrap(), 8, 4).unwrap();
        assert_eq!(client.wake_seq(), 0);
        assert!(!server.take_wake_request(0), "nobody asked");
        client.arm_wake(4).unwrap();
        assert!(server.waiting());
        assert!(!server.take_wake_request(4), "fill 4 is not below 4");
        assert!(server.waiting(), "a refused request stays armed");
        assert!(server.take_wake_request(3));
        assert!(!server.waiting(), "the server consumed the request");
        assert!(!server.take_wake_request(0), "one wake-up per request");
        let seq = client.wake_seq();
        server.signal();
        assert_eq!(client.wake_seq(), seq.wrapping_add(1));
        assert_eq!(
            crate::futex::wait(client.wake_word(), seq, std::time::Duration::from_secs(5)),
            crate::futex::Wait::Changed
        );
        client.arm_wake(8).unwrap();
        client.disarm_wake().unwrap();
        assert!(!server.take_wake_request(0));
        // Garbage in every word: the server still answers one bool and signals once.
        let raw = Mapping::new(fd.as_fd(), size, true).unwrap();
        // SAFETY: test-only: the mapping is `size` >= HEADER_BYTES bytes and page-aligned;
        // we write the header's wake words as raw bytes like a hostile peer would.
        unsafe { std::ptr::write_bytes(raw.as_ptr().add(192), 0xff, 64) };
        assert!(server.take_wake_request(u64::MAX - 1));
        server.signal();
        assert_eq!(client.wake_seq(), 0, "u32::MAX + 1 wraps");
    }

    #[test]
    fn a_read_only_reader_can_wait_on_the_word() {
        let size = ring_bytes(4, 2).unwrap();
        let (fd, map) = shm::create_read_only_for_peer("rec", size).unwrap();
        let w = Ring::init(map, 4, 2).unwrap();
        let r = Ring::attach(Mapping::new(fd.as_fd(), size, false).unwrap(), 4, 2).unwrap();
        assert!(r.arm_wake(1).is_err(), "a read-only reader cannot arm");
        assert!(!r.take_wake_request(0));
        let seq = r.wake_seq();
        let t = std::time::Instant::now();
        assert_eq!(
            crate::futex::wait(r.wake_word(), seq, std::time::Duration::from_millis(10)),
            crate::futex::Wait::TimedOut
        );
        assert!(t.elapsed() >= std::time::Duration::from_millis(5));
        w.signal();
        assert_eq!(
            crate::futex::wait(r.wake_word(), seq, std::time::Duration::from_secs(5)),
            crate::futex::Wait::Changed
        );
    }

    #[test]
    fn read_only_ring_refuses_writes() {
        let size = ring_bytes(4, 2).unwrap();
        let (fd, map) = shm::create_read_only_for_peer("rec", size).unwrap();
        let _w = Ring::init(map, 4, 2).unwrap();
        let r = Ring::attach(Mapping::new(fd.as_fd(), size, false).unwrap(), 4, 2).unwrap();
        assert_eq!(r.store_read(1), Err(RingError::ReadOnly));
        assert_eq!(r.copy_in(0, &[0, 0]), Err(RingError::ReadOnly));
    }
}
