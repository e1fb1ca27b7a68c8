//! Helpers shared by the fuzz targets: the round-trip property, the fd pools the daemon-side
//! and client-side targets hand out, and the "script" format of `client_replies`.
//!
//! Every target's property is written down in its file; the common one is: decoding untrusted
//! bytes never panics, and whatever decodes re-encodes canonically (decode(encode(x)) == x,
//! compared through `Debug` so that a NaN volume equals itself).

use serde::{de::DeserializeOwned, Serialize};
use soundgate_proto::{ring, shm, wire};
use std::fmt::Debug;
use std::os::fd::{AsFd, OwnedFd};

/// Decodes `data` as a `T`; if it decodes, checks the round trip and returns the message.
pub fn round_trip<T: Serialize + DeserializeOwned + Debug>(data: &[u8]) -> Option<T> {
    let msg = wire::decode::<T>(data).ok()?;
    let bytes = match wire::encode(&msg) {
        Ok(b) => b,
        Err(e) => panic!("decoded message does not re-encode: {e} ({msg:?})"),
    };
    // Postcard's canonical form is never longer than any encoding it accepted.
    assert!(bytes.len() <= data.len(), "re-encoding grew: {msg:?}");
    let again: T = match wire::decode(&bytes) {
        Ok(m) => m,
        Err(e) => panic!("re-encoded message does not decode: {e} ({msg:?})"),
    };
    assert_eq!(
        format!("{msg:?}"),
        format!("{again:?}"),
        "round trip changed it"
    );
    assert_eq!(wire::encode(&again).ok().as_deref(), Some(&bytes[..]));
    Some(msg)
}

/// Kinds of fd a fuzz input can attach to a message (one byte each, taken modulo the count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    /// A sealed memfd initialised as a ring (or sample) of the size the message asks for:
    /// what an honest peer sends.
    Honest,
    /// An eventfd.
    EventFd,
    /// `/dev/null`.
    DevNull,
    /// A memfd of the right size without seals.
    Unsealed,
    /// A sealed memfd of a size chosen by the input (0..=65535 bytes).
    Sized(usize),
    /// A sealed memfd of a size chosen by the input holding a valid ring header for the honest
    /// geometry, with a write index chosen by the input: a forged ring.
    Forged { size: usize, write: u64 },
}

fn take_u16(data: &mut &[u8]) -> u16 {
    match data {
        [a, b, rest @ ..] => {
            let v = u16::from_le_bytes([*a, *b]);
            *data = rest;
            v
        }
        _ => 0,
    }
}

impl FdKind {
    /// Reads one fd kind from the front of `data`.
    pub fn take(data: &mut &[u8]) -> Option<FdKind> {
        let (&k, rest) = data.split_first()?;
        *data = rest;
        Some(match k % 6 {
            0 => FdKind::Honest,
            1 => FdKind::EventFd,
            2 => FdKind::DevNull,
            3 => FdKind::Unsealed,
            4 => FdKind::Sized(take_u16(data) as usize),
            _ => {
                let size = take_u16(data) as usize;
                let write = u64::from(take_u16(data));
                FdKind::Forged { size, write }
            }
        })
    }

    /// Makes the fd. `honest` is the (size, ring geometry) an honest peer would use, if any.
    pub fn make(self, honest: Option<(usize, Option<(u64, usize)>)>) -> Option<OwnedFd> {
        match self {
            FdKind::Honest => {
                let (size, geometry) = honest?;
                match geometry {
                    Some((capacity, frame_bytes)) => {
                        let fd = shm::create_sealed("fuzz-ring", size).ok()?;
                        let map = shm::Mapping::new(fd.as_fd(), size, true).ok()?;
                        ring::Ring::init(map, capacity, frame_bytes).ok()?;
                        Some(fd)
                    }
                    None => shm::create_sealed("fuzz-sample", size).ok(),
                }
            }
            FdKind::EventFd => nix::sys::eventfd::EventFd::from_value_and_flags(
                0,
                nix::sys::eventfd::EfdFlags::EFD_CLOEXEC
                    | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
            )
            .ok()
            .map(OwnedFd::from),
            FdKind::DevNull => std::fs::File::open("/dev/null").ok().map(OwnedFd::from),
            FdKind::Unsealed => {
                let (size, _) = honest.unwrap_or((4096, None));
                let m = memfd::MemfdOptions::default()
                    .close_on_exec(true)
                    .create("fuzz-unsealed")
                    .ok()?;
                m.as_file().set_len(size as u64).ok()?;
                Some(m.into_file().into())
            }
            FdKind::Forged { size, write } => {
                let (_, geometry) = honest?;
                let (capacity, frame_bytes) = geometry?;
                let m = memfd::MemfdOptions::default()
                    .allow_sealing(true)
                    .close_on_exec(true)
                    .create("fuzz-forged")
                    .ok()?;
                let mut header = vec![0u8; ring::HEADER_BYTES.min(size.max(72))];
                header[0..4].copy_from_slice(&ring::MAGIC.to_le_bytes());
                header[4..8].copy_from_slice(&ring::RING_VERSION.to_le_bytes());
                header[8..16].copy_from_slice(&capacity.to_le_bytes());
                header[16..20].copy_from_slice(&(frame_bytes as u32).to_le_bytes());
                header[64..72].copy_from_slice(&write.to_le_bytes());
                use std::io::Write;
                m.as_file().write_all(&header).ok()?;
                m.as_file().set_len(size as u64).ok()?;
                m.add_seals(&[
                    memfd::FileSeal::SealShrink,
                    memfd::FileSeal::SealGrow,
                    memfd::FileSeal::SealSeal,
                ])
                .ok()?;
                Some(m.into_file().into())
            }
            FdKind::Sized(size) => {
                if size == 0 {
                    let m = memfd::MemfdOptions::default()
                        .allow_sealing(true)
                        .close_on_exec(true)
                        .create("fuzz-empty")
                        .ok()?;
                    Some(m.into_file().into())
                } else {
                    shm::create_sealed("fuzz-sized", size).ok()
                }
            }
        }
    }
}

/// Largest shared memory an "honest" fd may have in a fuzz run (keeps runs fast).
pub const HONEST_LIMIT: usize = 1 << 20;

/// Number of open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// One datagram of a malicious server's script: bytes and the fds to send with them.
#[derive(Debug)]
pub struct Datagram {
    pub bytes: Vec<u8>,
    pub fds: Vec<FdKind>,
}

/// Splits a `client_replies` input into datagrams:
/// `[header][fd kinds…][len u16 LE][len bytes]` repeated, where the header's low two bits are
/// the number of fds (0..=3). A short tail becomes the last datagram as it is.
pub fn script(mut data: &[u8]) -> Vec<Datagram> {
    let mut out = Vec::new();
    while let Some((&h, rest)) = data.split_first() {
        data = rest;
        let mut fds = Vec::new();
        for _ in 0..(h & 3) {
            match FdKind::take(&mut data) {
                Some(k) => fds.push(k),
                None => break,
            }
        }
        let len = match data {
            [a, b, rest @ ..] => {
                data = rest;
                u16::from_le_bytes([*a, *b]) as usize
            }
            _ => data.len(),
        };
        let len = len.min(data.len());
        let (bytes, rest) = data.split_at(len);
        data = rest;
        out.push(Datagram {
            bytes: bytes.to_vec(),
            fds,
        });
        if out.len() >= 64 {
            break;
        }
    }
    out
}

/// Encodes a script (for seeds and regression tests): the inverse of [`script`].
pub fn encode_script(datagrams: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (fd_bytes, bytes) in datagrams {
        let n = fd_count_of(fd_bytes);
        out.push(n as u8);
        out.extend_from_slice(fd_bytes);
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

fn fd_count_of(mut fd_bytes: &[u8]) -> usize {
    let mut n = 0;
    while FdKind::take(&mut fd_bytes).is_some() {
        n += 1;
    }
    n
}
