//! Sealed memfds and their mappings. One of the two modules of this crate with `unsafe`
//! (the other is [`crate::ring`]): mmap/munmap and nothing else.
//!
//! Playback: the client creates the memfd, sizes it and seals it against shrinking, growing
//! and further sealing ([`create_sealed`]); the server refuses anything else ([`verify_sealed`]).
//! Record: the server creates it, maps it writable, then adds `F_SEAL_FUTURE_WRITE`
//! ([`create_read_only_for_peer`]) so the client can only map it read-only.

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

/// Seals a playback memfd must carry.
pub const REQUIRED_SEALS: SealFlag = SealFlag::F_SEAL_SHRINK
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_SEAL);

/// Largest shared-memory object either side will create or map (64 MiB).
pub const MAX_SHM_BYTES: usize = 64 << 20;

/// Failures around memfds and mappings.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// memfd_create or sealing failed.
    #[error("creating memfd: {0}")]
    Create(#[from] memfd::Error),
    /// Sizing the memfd failed.
    #[error("sizing memfd to {size} bytes: {source}")]
    Size { size: usize, source: std::io::Error },
    /// The fd is not a memfd or carries no seals.
    #[error("fd is not a sealable memfd: {0}")]
    NotMemfd(nix::Error),
    /// Required seals are missing.
    #[error("memfd is not sealed (needs F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL, has {0:#x})")]
    Unsealed(i32),
    /// The memfd's size is not what the request claims.
    #[error("memfd holds {actual} bytes but the stream needs exactly {expected}")]
    WrongSize { expected: usize, actual: u64 },
    /// The size is zero or above [`MAX_SHM_BYTES`].
    #[error("shared memory of {0} bytes is outside 1..={MAX_SHM_BYTES}")]
    BadLength(usize),
    /// fstat failed.
    #[error("fstat on memfd: {0}")]
    Stat(nix::Error),
    /// mmap failed.
    #[error("mapping memfd: {0}")]
    Map(nix::Error),
}

/// Creates a memfd of `size` bytes sealed with [`REQUIRED_SEALS`] (for playback rings).
pub fn create_sealed(name: &str, size: usize) -> Result<OwnedFd, ShmError> {
    let mfd = create_sized(name, size)?;
    mfd.add_seals(&[
        memfd::FileSeal::SealShrink,
        memfd::FileSeal::SealGrow,
        memfd::FileSeal::SealSeal,
    ])?;
    Ok(mfd.into_file().into())
}

/// Creates a memfd of `size` bytes, maps it writable for the caller, then seals it with
/// `F_SEAL_FUTURE_WRITE` as well as [`REQUIRED_SEALS`]: whoever receives the fd can map it
/// read-only only, while the returned mapping stays writable.
pub fn create_read_only_for_peer(name: &str, size: usize) -> Result<(OwnedFd, Mapping), ShmError> {
    let mfd = create_sized(name, size)?;
    let map = Mapping::new(mfd.as_file().as_fd(), size, true)?;
    mfd.add_seals(&[
        memfd::FileSeal::SealFutureWrite,
        memfd::FileSeal::SealShrink,
        memfd::FileSeal::SealGrow,
        memfd::FileSeal::SealSeal,
    ])?;
    Ok((mfd.into_file().into(), map))
}

fn create_sized(name: &str, size: usize) -> Result<memfd::Memfd, ShmError> {
    if size == 0 || size > MAX_SHM_BYTES {
        return Err(ShmError::BadLength(size));
    }
    let mfd = memfd::MemfdOptions::default()
        .allow_sealing(true)
        .close_on_exec(true)
        .create(name)?;
    mfd.as_file()
        .set_len(size as u64)
        .map_err(|source| ShmError::Size { size, source })?;
    Ok(mfd)
}

/// Checks that `fd` is a memfd of exactly `expected` bytes carrying [`REQUIRED_SEALS`].
pub fn verify_sealed(fd: BorrowedFd<'_>, expected: usize) -> Result<(), ShmError> {
    let seals = fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS).map_err(ShmError::NotMemfd)?;
    if SealFlag::from_bits_truncate(seals) & REQUIRED_SEALS != REQUIRED_SEALS {
        return Err(ShmError::Unsealed(seals));
    }
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(ShmError::Stat)?;
    let actual = u64::try_from(st.st_size).unwrap_or(0);
    if actual != expected as u64 {
        return Err(ShmError::WrongSize { expected, actual });
    }
    Ok(())
}

/// A shared mapping of a memfd, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain shared memory owned by this value; concurrent access goes
// through atomics or raw byte copies (see `crate::ring`), never through Rust references to the
// data, so moving or sharing the handle between threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out raw pointers.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared, read-only or read-write.
    pub fn new(fd: BorrowedFd<'_>, len: usize, writable: bool) -> Result<Mapping, ShmError> {
        if len == 0 || len > MAX_SHM_BYTES {
            return Err(ShmError::BadLength(len));
        }
        let nz = NonZeroUsize::new(len).ok_or(ShmError::BadLength(len))?;
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        // SAFETY: we ask the kernel for a fresh mapping (no fixed address), so no existing
        // memory is affected. The caller has checked (or created) the fd's size and seals, so
        // the object cannot shrink under the mapping and accesses within `len` cannot fault.
        let ptr =
            unsafe { mmap(None, nz, prot, MapFlags::MAP_SHARED, fd, 0) }.map_err(ShmError::Map)?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
            writable,
        })
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never true: mappings have at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the mapping may be written.
    pub fn writable(&self) -> bool {
        self.writable
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and nothing derived from them
        // outlives `self` (the ring hands out only copies).
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_memfd_verifies() {
        let fd = create_sealed("test", 4096).unwrap();
        verify_sealed(fd.as_fd(), 4096).unwrap();
        assert!(matches!(
            verify_sealed(fd.as_fd(), 8192),
            Err(ShmError::WrongSize { .. })
        ));
    }

    #[test]
    fn unsealed_memfd_is_refused() {
        let mfd = memfd::MemfdOptions::default()
            .allow_sealing(true)
            .create("x")
            .unwrap();
        mfd.as_file().set_len(4096).unwrap();
        assert!(matches!(
            verify_sealed(mfd.as_file().as_fd(), 4096),
            Err(ShmError::Unsealed(_))
        ));
        let file = tempfile::tempfile().unwrap();
        assert!(matches!(
            verify_sealed(file.as_fd(), 0),
            Err(ShmError::NotMemfd(_))
        ));
    }

    #[test]
    fn future_write_sealed_memfd_maps_read_only_only() {
        let (fd, map) = create_read_only_for_peer("rec", 4096).unwrap();
        assert!(map.writable());
        assert!(Mapping::new(fd.as_fd(), 4096, false).is_ok());
        assert!(matches!(
            Mapping::new(fd.as_fd(), 4096, true),
            Err(ShmError::Map(_))
        ));
    }
}
