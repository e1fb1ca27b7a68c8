//! `SOCK_SEQPACKET` Unix sockets: one message per datagram, fds beside it as SCM_RIGHTS, and a
//! hard size cap ([`MAX_MESSAGE`]). A blocking [`SeqPacket`] for clients and, with the `tokio`
//! feature, [`AsyncSeqPacket`] and [`SeqPacketListener`] for the server.
//!
//! Received fds are wrapped in [`OwnedFd`] at once, so an fd a peer sends is closed whatever
//! happens to the message that carried it. The control buffer has room for the kernel's
//! maximum ([`SCM_MAX_FD`]), and the control messages are walked by hand: a message that
//! carries more than [`MAX_FDS`] descriptors, or whose control data was truncated anyway
//! (`MSG_CTRUNC`), is refused only after every descriptor that did arrive is owned (and so
//! closed when dropped).

use crate::wire::{MAX_FDS, MAX_MESSAGE};
use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use std::io::IoSlice;
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
    /// More fds arrived than [`MAX_FDS`], or more than the control buffer could take
    /// (`MSG_CTRUNC`); every one that arrived has been closed.
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
    /// The message came with descriptors the kernel could not install (our fd table was
    /// full: `MSG_CTRUNC` with room to spare in the control buffer). Those that were
    /// installed have been closed and `fds` is empty; the bytes are intact, so the receiver
    /// can refuse just this message.
    pub fds_lost: bool,
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

/// The kernel's cap on descriptors in one message (`SCM_MAX_FD` in `include/net/scm.h`): a
/// sender cannot attach more, so a control buffer this large is never truncated by fds.
pub const SCM_MAX_FD: usize = 253;

/// Words of control buffer: room for [`SCM_MAX_FD`] descriptors plus the credentials, pidfd
/// and security-label messages a socket could carry, with each header's alignment. `u64`
/// words keep the buffer aligned for `cmsghdr`.
const CMSG_WORDS: usize = (SCM_MAX_FD * 4 + 512) / 8;

fn recv_raw(fd: RawFd, buf: &mut [u8], flags: MsgFlags) -> Result<Received, SockError> {
    let mut control = [0u64; CMSG_WORDS];
    recv_with_control(fd, buf, &mut control, flags)
}

/// `recvmsg` with `control` as the ancillary buffer. Every descriptor the kernel installed is
/// wrapped in an [`OwnedFd`] before anything else is looked at, so none outlives this call
/// unless it is returned; a truncated control message (`MSG_CTRUNC`: the kernel dropped what
/// did not fit) is then an error.
fn recv_with_control(
    fd: RawFd,
    buf: &mut [u8],
    control: &mut [u64],
    flags: MsgFlags,
) -> Result<Received, SockError> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid "no name, no iov, no control" header; the fields
    // that matter are set just below.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = std::mem::size_of_val(control) as _;
    let flags = (flags | MsgFlags::MSG_CMSG_CLOEXEC).bits();
    // SAFETY: `hdr` points at `iov` (which points at `buf`) and at `control`, all alive and
    // exclusively borrowed for the call, with their true lengths; the kernel writes within
    // them only.
    let n = unsafe { libc::recvmsg(fd, &mut hdr, flags) };
    if n < 0 {
        return Err(sys("recvmsg")(Errno::last()));
    }
    let mut fds = take_fds(&hdr);
    let bytes = n as usize;
    let mut fds_lost = false;
    if hdr.msg_flags & libc::MSG_CTRUNC != 0 {
        // Truncated with room left for another fd: not for want of space but because the
        // kernel could not install them (EMFILE). Anything else is too many fds.
        let room = std::mem::size_of_val(control).saturating_sub(hdr.msg_controllen as usize);
        // SAFETY: CMSG_SPACE is a pure size computation.
        let one_more = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        if room < one_more || fds.len() > MAX_FDS {
            return Err(SockError::TooManyFds);
        }
        fds.clear();
        fds_lost = true;
    }
    if fds.len() > MAX_FDS {
        return Err(SockError::TooManyFds);
    }
    if hdr.msg_flags & libc::MSG_TRUNC != 0 || bytes > MAX_MESSAGE {
        return Err(SockError::TooLarge);
    }
    if bytes == 0 && fds.is_empty() && !fds_lost {
        return Err(SockError::Closed);
    }
    Ok(Received {
        len: bytes,
        fds,
        fds_lost,
    })
}

/// Takes ownership of every descriptor in the `SCM_RIGHTS` messages of a header `recvmsg`
/// just filled in.
fn take_fds(hdr: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: `hdr` was filled in by a successful recvmsg: `msg_control`/`msg_controllen`
    // describe the bytes the kernel wrote, which are whole control messages (on truncation the
    // kernel writes only messages that fit, with their true lengths), so the CMSG_* walk stays
    // inside the buffer.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and points at a complete header inside the buffer (above).
        let c = unsafe { &*cmsg };
        if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is the header size, a pure computation.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = (c.cmsg_len as usize).saturating_sub(header) / std::mem::size_of::<RawFd>();
            // SAFETY: the data of this message follows its header and holds `count` ints
            // (its length says so, and it lies within what the kernel wrote).
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: `i < count`, inside the message's data; it may be unaligned.
                let raw = unsafe { data.add(i).read_unaligned() };
                if raw >= 0 {
                    // SAFETY: the kernel has just installed `raw` in our fd table for this
                    // message; nothing else owns it, so wrapping it transfers ownership once.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR; NXTHDR returns null past the written length.
        cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
    }
    fds
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

        /// Sends one message if the socket buffer has room now, else
        /// [`SockError::WouldBlock`].
        pub fn try_send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), SockError> {
            send_raw(
                self.fd.get_ref().as_raw_fd(),
                bytes,
                fds,
                MsgFlags::MSG_DONTWAIT,
            )
        }

        /// Receives one message if one is queued, else [`SockError::WouldBlock`].
        pub fn try_recv(&self, buf: &mut [u8]) -> Result<Received, SockError> {
            recv_raw(self.fd.get_ref().as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT)
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

    /// Sends `copies` duplicates of one pipe's write end in one datagram, with `bytes`, and
    /// returns the read end: it reads EOF once every copy anywhere is closed.
    fn send_pipe_copies(a: &SeqPacket, copies: usize, bytes: &[u8]) -> OwnedFd {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .unwrap();
        let raw: Vec<RawFd> = vec![w.as_raw_fd(); copies];
        let iov = [IoSlice::new(bytes)];
        socket::sendmsg::<()>(
            a.as_fd().as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        drop(w);
        r
    }

    /// Whether every copy of the pipe's write end is closed (a read sees EOF, not EAGAIN).
    fn all_writers_closed(r: &OwnedFd) -> bool {
        let mut b = [0u8; 1];
        matches!(nix::unistd::read(r.as_raw_fd(), &mut b), Ok(0))
    }

    #[test]
    fn too_many_fds_are_refused_and_closed() {
        for copies in [MAX_FDS + 1, 8, SCM_MAX_FD] {
            let (a, b) = SeqPacket::pair().unwrap();
            let r = send_pipe_copies(&a, copies, b"x");
            let mut buf = recv_buffer();
            assert!(
                matches!(b.recv(&mut buf), Err(SockError::TooManyFds)),
                "{copies}"
            );
            assert!(all_writers_closed(&r), "{copies} fds: some stayed open");
        }
    }

    #[test]
    fn allowed_fds_arrive_and_close_with_their_owner() {
        let (a, b) = SeqPacket::pair().unwrap();
        let r = send_pipe_copies(&a, MAX_FDS, b"ok");
        let mut buf = recv_buffer();
        let got = b.recv(&mut buf).unwrap();
        assert_eq!(got.fds.len(), MAX_FDS);
        assert!(!all_writers_closed(&r));
        drop(got);
        assert!(all_writers_closed(&r));
    }

    #[test]
    fn truncated_control_data_closes_what_arrived() {
        // A control buffer with room for a header and four fds: the kernel installs four of
        // the eight, drops the rest and sets MSG_CTRUNC.
        let (a, b) = SeqPacket::pair().unwrap();
        let r = send_pipe_copies(&a, 8, b"x");
        let mut buf = recv_buffer();
        let mut control = [0u64; 4];
        let got = recv_with_control(
            b.as_fd().as_raw_fd(),
            &mut buf,
            &mut control,
            MsgFlags::empty(),
        );
        assert!(matches!(got, Err(SockError::TooManyFds)), "{got:?}");
        assert!(all_writers_closed(&r), "fds that arrived were leaked");
    }
}
