//! The record ring the server hands out can only be mapped read-only by the client.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{exe_id, Daemon};
use nix::sys::mman::{mmap, mprotect, munmap, MapFlags, ProtFlags};
use soundgate_proto::client::RecordOptions;
use soundgate_proto::{SampleFormat, StreamSpec};
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;

#[test]
fn the_record_memfd_cannot_be_written_by_the_client() {
    let me = exe_id(&std::env::current_exe().unwrap());
    let config = format!(
        "[[sink]]\nname = \"out\"\nbackend = \"null\"\n\n[[rule]]\napp = \"{me}\"\naction = \"record\"\ntarget = \"out.monitor\"\ndecision = \"allow\"\n"
    );
    let d = Daemon::start(&config);
    let client = d.client("recorder");
    let spec = StreamSpec {
        format: SampleFormat::F32Le,
        rate: 48_000,
        channels: 2,
    };
    let mut opts = RecordOptions::new("rec", spec);
    opts.device = Some("out.monitor".into());
    let mut rec = client.record(opts).unwrap();
    // It works: frames of the (silent) mix arrive.
    let mut buf = Vec::new();
    assert!(
        rec.read(&mut buf, Some(std::time::Duration::from_secs(5)))
            .unwrap()
            > 0
    );

    let fd = rec.ring_fd();
    let len = NonZeroUsize::new(4096).unwrap();
    // SAFETY: a fresh mapping at an address of the kernel's choosing; it is unmapped below
    // and never dereferenced.
    let writable = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_eq!(
        writable.err(),
        Some(nix::errno::Errno::EPERM),
        "a writable shared mapping was allowed"
    );

    // SAFETY: as above.
    let ro = unsafe { mmap(None, len, ProtFlags::PROT_READ, MapFlags::MAP_SHARED, fd, 0) }.unwrap();
    // Upgrading the read-only mapping is refused too.
    // SAFETY: `ro` is the live mapping of `len` bytes made just above.
    let upgrade = unsafe { mprotect(ro, len.get(), ProtFlags::PROT_READ | ProtFlags::PROT_WRITE) };
    assert!(upgrade.is_err(), "mprotect to PROT_WRITE was allowed");
    // SAFETY: unmapping the mapping made above; nothing refers to it.
    unsafe { munmap(ro, len.get()) }.unwrap();

    // Neither write(2) nor resizing gets through.
    let wrote = nix::sys::uio::pwrite(fd, &[1, 2, 3, 4], 0);
    assert!(wrote.is_err(), "pwrite to the record memfd succeeded");
    assert!(
        nix::unistd::ftruncate(fd, 0).is_err(),
        "the record memfd could be shrunk"
    );
    assert!(fd.as_raw_fd() >= 0);
    rec.close().unwrap();
}

#[test]
fn another_user_cannot_reach_a_record_memfd_through_the_daemon() {
    let me = exe_id(&std::env::current_exe().unwrap());
    let config = format!(
        "[[sink]]\nname = \"out\"\nbackend = \"null\"\n\n[[rule]]\napp = \"{me}\"\naction = \"record\"\ntarget = \"out.monitor\"\ndecision = \"allow\"\n"
    );
    let d = Daemon::start(&config);
    let owner = d.client("owner");
    let mut opts = RecordOptions::new(
        "rec",
        StreamSpec {
            format: SampleFormat::F32Le,
            rate: 48_000,
            channels: 2,
        },
    );
    opts.device = Some("out.monitor".into());
    let rec = owner.record(opts).unwrap();

    // Over the protocol, no request hands out another client's fds or even names the stream.
    let other = d.client("other");
    assert!(other.streams().unwrap().is_empty());
    let e = other.stream_info(rec.id()).unwrap_err();
    assert_eq!(e.kind(), Some(soundgate_proto::wire::ErrorKind::NotFound));

    // Through /proc, a different user cannot open the daemon's copy of the memfd, nor its mapping.
    let pid = d.pid();
    let fds = links_to(&format!("/proc/{pid}/fd"), "soundgate-rec");
    let maps = links_to(&format!("/proc/{pid}/map_files"), "soundgate-rec");
    assert!(!maps.is_empty(), "the daemon should map the record ring");
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: setpriv is missing; cannot run as another user");
        return;
    }
    for path in fds.iter().chain(&maps) {
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "head",
                "-c",
                "16",
            ])
            .arg(path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "uid 65534 read {path}");
    }
    rec.close().unwrap();
}

/// Entries of a /proc directory of symlinks whose target mentions `needle`.
fn links_to(dir: &str, needle: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let target = std::fs::read_link(&path).ok()?;
            target
                .to_string_lossy()
                .contains(needle)
                .then(|| path.to_string_lossy().to_string())
        })
        .collect()
}
