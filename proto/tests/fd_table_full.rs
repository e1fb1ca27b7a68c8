//! A receiver whose fd table is full: the kernel cannot install a message's fds, sets
//! `MSG_CTRUNC`, and `sock` reports the loss (`fds_lost`) with the bytes intact instead of
//! mistaking it for too many fds. Its own test binary, because it fills the process's table.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use soundgate_proto::sock::{recv_buffer, SeqPacket};
use std::os::fd::{AsFd, OwnedFd};

#[test]
fn fds_the_kernel_cannot_install_are_reported_lost() {
    let (a, b) = SeqPacket::pair().unwrap();
    let file = tempfile::tempfile().unwrap();
    // Fill the table: duplicate until EMFILE, under a small limit.
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 256, hard).unwrap();
    let mut filler: Vec<OwnedFd> = Vec::new();
    while let Ok(fd) = file.as_fd().try_clone_to_owned() {
        filler.push(fd);
    }
    a.send(b"request", &[file.as_fd(), file.as_fd()]).unwrap();
    let mut buf = recv_buffer();
    let got = b.recv(&mut buf).unwrap();
    assert!(got.fds_lost);
    assert!(got.fds.is_empty());
    assert_eq!(&buf[..got.len], b"request");
    // With room again, fds arrive as usual.
    drop(filler);
    a.send(b"again", &[file.as_fd()]).unwrap();
    let got = b.recv(&mut buf).unwrap();
    assert!(!got.fds_lost);
    assert_eq!(got.fds.len(), 1);
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard).unwrap();
}
