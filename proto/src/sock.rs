//! `SOCK_SEQPACKET` Unix sockets: one message per datagram, fds beside it as SCM_RIGHTS, and a
//! hard size cap ([`MAX_MESSAGE`]). A blocking [`SeqPacket`] for clients and, with the `tokio`
//! feature, [`AsyncSeqPacket`] and [`SeqPacketListener`] for the server.
//!
//! Received fds are wrapped in [`OwnedFd`] at once (the one `unsafe` of this module), so an fd a
//! peer sends is closed whatever happens to the message that carried it.

use crate::wire::{MAX_FDS, MAX_MESSAGE};
use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Socket-level failures.
#[derive(Debug, thiserror::Error)]
pub enum SockError {
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// A datagram larger than [`MAX_MESSAGE`] arrived (its tail is lost).
    #[error("message exceeds the {MAX_MESSAGE}-byte cap")]
    TooLarge,
    /// More fds arrived than [`MAX_FDS`] (the excess was closed by the kernel).
    #[error("message carries more than {MAX_FDS} file descriptors")]
    TooManyFds,
    /// The operation would block (non-blocking sockets only).
    #[error("operation would block")]
    WouldBlock,
    /// Any other system error, with the call that failed.
    #[error("{op}: {errno}")]
    Sys { op: &'static str, errno: Errno },
}

fn sys(op: &'static str) -> impl FnOnce(Errno) -> SockError {
    move |errno| match errno {
        Errno::EAGAIN => SockError::WouldBlock,
        Errno::EPIPE | Errno::ECONNRESET => SockError::Closed,
        errno => SockError::Sys { op, errno },
    }
}

/// One received datagram: `len` bytes in the caller's buffer plus its fds.
#[derive(Debug)]
pub struct Received {
    /// Bytes of the message.
    pub len: usize,
    /// Descriptors that came with it.
    pub fds: Vec<OwnedFd>,
}

/// A receive buffer one byte larger than the cap, so oversize is detectable.
pub fn recv_buffer() -> Vec<u8> {
    vec![0; MAX_MESSAGE + 1]
}

fn send_raw(
    fd: RawFd,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    flags: MsgFlags,
) -> Result<(), SockError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(SockError::TooLarge);
    }
    if fds.len() > MAX_FDS {
        return Err(SockError::TooManyFds);
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
    let iov = [IoSlice::new(bytes)];
    let n = socket::sendmsg::<()>(fd, &iov, cmsgs, flags | MsgFlags::MSG_NOSIGNAL, None)
        .map_err(sys("sendmsg"))?;
    if n != bytes.len() {
        return Err(SockError::Sys {
            op: "sendmsg (short)",
            errno: Errno::EMSGSIZE,
        });
    }
    Ok(())
}

fn recv_raw(fd: RawFd, buf: &mut [u8], flags: MsgFlags) -> Result<Received, SockError> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut cmsg),
        flags | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(sys("recvmsg"))?;
    let mut fds = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raws) = c {
                for raw in raws {
                    // SAFETY: the kernel has just installed `raw` in our fd table for this
                    // message; nothing else owns it, so wrapping it transfers ownership once.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(SockError::TooManyFds);
    }
    if msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.bytes > MAX_MESSAGE {
        return Err(SockError::TooLarge);
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Err(SockError::Closed);
    }
    Ok(Received {
        len: msg.bytes,
        fds,
    })
}

fn new_socket(nonblocking: bool) -> Result<OwnedFd, SockError> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    socket::socket(AddressFamily::Unix, SockType::SeqPacket, flags, None).map_err(sys("socket"))
}

/// A blocking seqpacket connection.
#[derive(Debug)]
pub struct SeqPacket {
    fd: OwnedFd,
}

impl SeqPacket {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<SeqPacket, SockError> {
        let fd = new_socket(false)?;
        let addr = UnixAddr::new(path).map_err(sys("socket path"))?;
        socket::connect(fd.as_raw_fd(), &addr).map_err(sys("connect"))?;
        Ok(SeqPacket { fd })
    }

    /// A connected pair (for tests).
    pub fn pair() -> Result<(SeqPacket, SeqPacket), SockError> {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(sys("socketpair"))?;
        Ok((SeqPacket { fd: a }, SeqPacket { fd: b }))
    }

    /// Sends one message with `fds`.
    pub fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), SockError> {
        send_raw(self.fd.as_raw_fd(), bytes, fds, MsgFlags::empty())
    }

    /// Receives one message into `buf` (use [`recv_buffer`]), blocking.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Received, SockError> {
        recv_raw(self.fd.as_raw_fd(), buf, MsgFlags::empty())
    }

    /// Receives one message if one is queued, else [`SockError::WouldBlock`].
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Received, SockError> {
        recv_raw(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT)
    }
}

impl AsFd for SeqPacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<OwnedFd> for SeqPacket {
    fn from(fd: OwnedFd) -> Self {
        SeqPacket { fd }
    }
}

#[cfg(feature = "tokio")]
pub use async_impl::{register, AsyncSeqPacket, SeqPacketListener};

#[cfg(feature = "tokio")]
mod async_impl {
    use super::*;
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// A listening seqpacket socket for tokio.
    #[derive(Debug)]
    pub struct SeqPacketListener {
        fd: AsyncFd<OwnedFd>,
    }

    impl SeqPacketListener {
        /// Binds and listens at `path` (which must not exist).
        pub fn bind(path: &Path) -> Result<SeqPacketListener, SockError> {
            let fd = new_socket(true)?;
            let addr = UnixAddr::new(path).map_err(sys("socket path"))?;
            socket::bind(fd.as_raw_fd(), &addr).map_err(sys("bind"))?;
            let backlog = socket::Backlog::new(128).map_err(sys("listen"))?;
            socket::listen(&fd, backlog).map_err(sys("listen"))?;
            let fd = register(fd).map_err(io_err("register with tokio"))?;
            Ok(SeqPacketListener { fd })
        }

        /// Accepts one connection.
        pub async fn accept(&self) -> Result<AsyncSeqPacket, SockError> {
            loop {
                let mut guard = self.fd.readable().await.map_err(io_err("accept"))?;
                match socket::accept4(
                    self.fd.get_ref().as_raw_fd(),
                    SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                ) {
                    Ok(raw) => {
                        // SAFETY: accept4 returned a new descriptor that nothing else owns.
                        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                        return AsyncSeqPacket::new(owned);
                    }
                    Err(Errno::EAGAIN) => guard.clear_ready(),
                    Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                    Err(errno) => {
                        return Err(SockError::Sys {
                            op: "accept4",
                            errno,
                        })
                    }
                }
            }
        }
    }

    /// Registers an owned fd with tokio's reactor.
    pub fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
        // SAFETY: `register` needs the fd to stay open and not be registered elsewhere for the
        // AsyncFd's lifetime; the AsyncFd takes ownership of the OwnedFd, so it closes it only
        // after deregistering, and nobody else holds it.
        unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
    }

    fn io_err(op: &'static str) -> impl FnOnce(std::io::Error) -> SockError {
        move |e| SockError::Sys {
            op,
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        }
    }

    /// A non-blocking seqpacket connection driven by tokio.
    #[derive(Debug)]
    pub struct AsyncSeqPacket {
        fd: AsyncFd<OwnedFd>,
    }

    impl AsyncSeqPacket {
        /// Wraps a connected socket; it is switched to non-blocking mode.
        pub fn new(fd: OwnedFd) -> Result<AsyncSeqPacket, SockError> {
            let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
                .map_err(sys("fcntl"))?;
            let flags =
                nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
                .map_err(sys("fcntl"))?;
            Ok(AsyncSeqPacket {
                fd: register(fd).map_err(io_err("register with tokio"))?,
            })
        }

        /// Receives one message. Tries the socket before waiting, so a datagram that arrived
        /// while readiness was cleared by [`AsyncSeqPacket::closed`] is not stranded.
        pub async fn recv(&self, buf: &mut [u8]) -> Result<Received, SockError> {
            loop {
                match recv_raw(self.fd.get_ref().as_raw_fd(), buf, MsgFlags::empty()) {
                    Err(SockError::WouldBlock) => {}
                    other => return other,
                }
                let mut guard = self.fd.readable().await.map_err(io_err("recv"))?;
                guard.clear_ready();
            }
        }

        /// Resolves when the peer hangs up, without consuming any datagram it sent meanwhile.
        pub async fn closed(&self) {
            loop {
                let Ok(mut guard) = self.fd.ready(Interest::READABLE).await else {
                    return;
                };
                if guard.ready().is_read_closed() {
                    return;
                }
                // Readable with data only: wait for the next edge (more data, or the hang-up).
                guard.clear_ready();
            }
        }

        /// Sends one message, waiting while the socket buffer is full.
        pub async fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), SockError> {
            loop {
                let mut guard = self
                    .fd
                    .ready(Interest::WRITABLE)
                    .await
                    .map_err(io_err("send"))?;
                match send_raw(
                    self.fd.get_ref().as_raw_fd(),
                    bytes,
                    fds,
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Err(SockError::WouldBlock) => guard.clear_ready(),
                    other => return other,
                }
            }
        }
    }

    impl AsFd for AsyncSeqPacket {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.fd.get_ref().as_fd()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_boundaries_and_fds() {
        let (a, b) = SeqPacket::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        a.send(b"one", &[file.as_fd()]).unwrap();
        a.send(b"two", &[]).unwrap();
        let mut buf = recv_buffer();
        let r = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..r.len], b"one");
        assert_eq!(r.fds.len(), 1);
        let r = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..r.len], b"two");
        assert!(r.fds.is_empty());
        assert!(matches!(b.try_recv(&mut buf), Err(SockError::WouldBlock)));
        drop(a);
        assert!(matches!(b.recv(&mut buf), Err(SockError::Closed)));
    }

    #[test]
    fn oversized_datagram_is_detected() {
        let (a, b) = SeqPacket::pair().unwrap();
        assert!(matches!(
            a.send(&vec![0; MAX_MESSAGE + 1], &[]),
            Err(SockError::TooLarge)
        ));
        // Bypass our own cap to play a hostile peer.
        let big = vec![7u8; MAX_MESSAGE + 100];
        socket::send(a.as_fd().as_raw_fd(), &big, MsgFlags::empty()).unwrap();
        let mut buf = recv_buffer();
        assert!(matches!(b.recv(&mut buf), Err(SockError::TooLarge)));
    }

    #[test]
    fn too_many_fds_are_refused_and_closed() {
        let (a, b) = SeqPacket::pair().unwrap();
        let files: Vec<_> = (0..MAX_FDS + 2)
            .map(|_| tempfile::tempfile().unwrap())
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let iov = [IoSlice::new(b"x")];
        socket::sendmsg::<()>(
            a.as_fd().as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let mut buf = recv_buffer();
        assert!(matches!(b.recv(&mut buf), Err(SockError::TooManyFds)));
    }
}
