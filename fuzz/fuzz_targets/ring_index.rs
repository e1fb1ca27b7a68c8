//! The ring index arithmetic with arbitrary u64 positions and capacities, and real copies
//! through a small mapped ring at arbitrary (wrapping) positions.
//!
//! Holds: `readable` accepts exactly the writer positions 0..=capacity frames ahead;
//! `record_valid_from` leaves at most `capacity` frames and never passes the writer; `spans`
//! covers exactly `frames` slots inside the data area, in at most two non-overlapping pieces,
//! the first starting at `index % capacity`; `ring_bytes` never overflows; copy_in then
//! copy_out at any index gives the bytes back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use soundgate_proto::{ring, shm};
use std::os::fd::AsFd;

fn u64_at(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, byte) in b.iter_mut().enumerate() {
        *byte = data.get(i * 8 + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let (write, read, capacity, index, frames) = (
        u64_at(data, 0),
        u64_at(data, 1),
        u64_at(data, 2),
        u64_at(data, 3),
        u64_at(data, 4),
    );

    match ring::readable(write, read, capacity) {
        Ok(n) => {
            assert!(
                write >= read,
                "readable accepted a writer behind the reader"
            );
            assert_eq!(n, write - read);
            assert!(n <= capacity);
        }
        Err(_) => assert!(write < read || write - read > capacity),
    }

    let valid = ring::record_valid_from(write, capacity);
    assert!(valid <= write);
    assert!(write - valid <= capacity);
    if write >= capacity {
        assert_eq!(
            write - valid,
            capacity,
            "a full record ring keeps capacity frames"
        );
    } else {
        assert_eq!(valid, 0);
    }

    // `spans` has a precondition (capacity > 0, frames <= capacity) that every caller meets
    // through `ring_bytes` and `readable`; inside it the result must be exact.
    if capacity > 0 {
        let frames = match capacity.checked_add(1) {
            Some(c) => frames % c,
            None => frames,
        };
        let [(s1, n1), (s2, n2)] = ring::spans(index, frames, capacity);
        assert_eq!(
            n1.checked_add(n2),
            Some(frames),
            "spans must cover exactly `frames`"
        );
        assert_eq!(s1, index % capacity);
        assert!(n1 <= capacity - s1, "first span leaves the data area");
        assert!(n2 <= capacity - s2, "second span leaves the data area");
        assert_eq!(s2, 0);
        if n2 > 0 {
            assert_eq!(
                s1 + n1,
                capacity,
                "a wrapping first span must reach the end"
            );
            assert!(n2 <= s1, "the spans overlap");
        }
    }

    for fb in [1usize, 2, 4, 8, 24, 32, 33, 0] {
        if let Ok(n) = ring::ring_bytes(capacity, fb) {
            assert!(capacity > 0 && fb > 0 && fb <= ring::MAX_FRAME_BYTES);
            assert_eq!(
                n as u128,
                ring::HEADER_BYTES as u128 + capacity as u128 * fb as u128
            );
            assert!(n <= shm::MAX_SHM_BYTES);
        }
    }

    // Real copies through a small ring at an arbitrary absolute index.
    let cap = capacity % 64 + 1;
    let fb = (read % ring::MAX_FRAME_BYTES as u64) as usize + 1;
    let n = (frames % (cap + 1)) as usize;
    let size = ring::ring_bytes(cap, fb).expect("small geometry is valid");
    let fd = shm::create_sealed("fuzz-ring", size).expect("memfd");
    let w = ring::Ring::init(
        shm::Mapping::new(fd.as_fd(), size, true).expect("map"),
        cap,
        fb,
    )
    .expect("init");
    let r = ring::Ring::attach(
        shm::Mapping::new(fd.as_fd(), size, false).expect("map"),
        cap,
        fb,
    )
    .expect("attach");
    let src: Vec<u8> = (0..n * fb)
        .map(|i| {
            data.get(40 + i % data.len().max(1))
                .copied()
                .unwrap_or(i as u8)
        })
        .collect();
    w.copy_in(index, &src)
        .expect("copy_in of <= capacity whole frames");
    let mut dst = vec![0u8; src.len()];
    r.copy_out(index, &mut dst).expect("copy_out");
    assert_eq!(src, dst, "bytes changed through the ring");
    assert!(r
        .copy_out(index, &mut vec![0u8; (cap as usize + 1) * fb])
        .is_err());
    if fb > 1 {
        assert!(r.copy_out(index, &mut vec![0u8; fb - 1]).is_err());
    }
});
