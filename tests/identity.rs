//! Identity comes from the kernel at accept, never from what a client says, and a dead peer's
//! identity is never inherited by whoever holds its socket or reuses its pid.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{exe_id, Daemon};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use soundgate_proto::client::RecordOptions;
use soundgate_proto::sock::{recv_buffer, SeqPacket};
use soundgate_proto::wire::{self, ClientMsg, ErrorKind, Reply, Request, ServerMsg};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Command;

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

fn grant_config(app: &str) -> String {
    format!("[[sink]]\nname = \"out\"\nbackend = \"null\"\n\n[[rule]]\napp = \"{app}\"\naction = \"record\"\ntarget = \"out.monitor\"\ndecision = \"allow\"\n")
}

fn python() -> Option<std::path::PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os,sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A python process connects to `socket` and hands the connected fd to us over a socketpair,
/// then exits (`linger`: stays alive until its stdin closes).
fn connect_via_python(socket: &std::path::Path, linger: bool) -> (OwnedFd, std::process::Child) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let script = format!(
        r#"
import socket, sys, os
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect({path:?})
chan = socket.socket(fileno=3)
socket.send_fds(chan, [b"x"], [s.fileno()])
if {linger}:
    sys.stdin.read()
"#,
        path = socket.to_string_lossy(),
        linger = if linger { "True" } else { "False" },
    );
    use std::os::fd::AsRawFd;
    let theirs_fd = theirs.as_raw_fd();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", &script])
        .stdin(std::process::Stdio::piped());
    // SAFETY: between fork and exec we only call dup2, which is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::dup2(theirs_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(theirs);
    let mut buf = [0u8; 8];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        ours.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed this fd for us; we take sole ownership.
            fd = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    (fd.expect("python sent no fd"), child)
}

/// Handshake and a monitor record request over a raw connection; returns the error kind or Ok.
fn try_record(sock: &SeqPacket) -> Result<(), ErrorKind> {
    let mut buf = recv_buffer();
    let mut call = |id: u32, req: Request| -> Result<Reply, ErrorKind> {
        sock.send(&wire::encode(&ClientMsg { id, req }).unwrap(), &[])
            .unwrap();
        loop {
            let got = sock.recv(&mut buf).unwrap();
            match wire::decode::<ServerMsg>(&buf[..got.len]).unwrap() {
                ServerMsg::Reply { result, .. } => return result.map_err(|e| e.kind),
                ServerMsg::Event(_) => continue,
            }
        }
    };
    call(
        1,
        Request::Hello {
            version: wire::PROTOCOL_VERSION,
            name: "python".into(),
        },
    )
    .unwrap();
    let req = Request::CreateRecord {
        name: "r".into(),
        source: Some("out.monitor".into()),
        spec: SPEC,
        capacity_frames: 96_000,
    };
    call(2, req).map(drop)
}

#[test]
fn a_dead_peers_identity_is_not_inherited_by_whoever_holds_its_socket() {
    let Some(py) = python() else {
        eprintln!("SKIP: python3 is not installed");
        return;
    };
    let d = Daemon::start(&grant_config(&exe_id(&py)));

    // Control: while the python process lives, its connection carries its identity.
    let (fd, mut alive) = connect_via_python(&d.socket(), true);
    assert_eq!(
        try_record(&SeqPacket::from(fd)),
        Ok(()),
        "the rule for {} should apply",
        py.display()
    );
    drop(alive.stdin.take());
    alive.wait().unwrap();

    // Stop the daemon so it accepts only after the connecting process is gone; the socket
    // lives on in this process. Whoever holds it (or reuses the pid) inherits nothing.
    let daemon = Pid::from_raw(d.pid() as i32);
    kill(daemon, Signal::SIGSTOP).unwrap();
    let (fd, mut gone) = connect_via_python(&d.socket(), false);
    gone.wait().unwrap();
    kill(daemon, Signal::SIGCONT).unwrap();
    assert_eq!(try_record(&SeqPacket::from(fd)), Err(ErrorKind::Denied));
    assert!(d.log().contains("app=unknown"), "{}", d.log());
}

#[test]
fn a_declared_name_is_only_a_label() {
    // A grant for an app id the client merely claims to be does not apply to it.
    let d = Daemon::start(&grant_config("flatpak:org.example.Recorder"));
    let c = soundgate_proto::client::Client::connect(&d.socket(), "flatpak:org.example.Recorder")
        .unwrap();
    let mut opts = RecordOptions::new("flatpak:org.example.Recorder", SPEC);
    opts.device = Some("out.monitor".into());
    let e = c.record(opts).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Denied), "{e}");
}
