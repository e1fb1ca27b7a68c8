#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Attacks on the native protocol: each hostile request gets an error or ends that one
//! connection, while a second client keeps playing without an underrun.

mod common;

use common::{wait_for, Daemon, Victim};
use soundgate_proto::client::{Client, ClientError, PlaybackOptions};
use soundgate_proto::ring::{self, Ring};
use soundgate_proto::shm::{self, Mapping};
use soundgate_proto::sock::{recv_buffer, SeqPacket, SockError};
use soundgate_proto::wire::{self, ErrorKind, Event, Reply, Request, MAX_MESSAGE};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

const CONFIG: &str = r#"
[[sink]]
name = "speakers"
backend = "null"
rate = 48000
channels = 2
format = "f32le"
quantum = 256
"#;

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

fn eventfd() -> OwnedFd {
    nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
    )
    .expect("eventfd")
    .into()
}

fn create_req(capacity: u64) -> Request {
    Request::CreatePlayback {
        name: "attacker".into(),
        sink: Some("speakers".into()),
        spec: SPEC,
        capacity_frames: capacity,
        volume: 1.0,
        muted: false,
        corked: false,
        exclusive: false,
    }
}

fn server_kind(r: Result<(Reply, Vec<OwnedFd>), ClientError>) -> (ErrorKind, String) {
    match r {
        Err(ClientError::Server(e)) => (e.kind, e.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// A raw connection that has done the handshake.
fn handshaken(daemon: &Daemon) -> SeqPacket {
    let sock = SeqPacket::connect(&daemon.socket()).unwrap();
    let hello = Request::Hello {
        version: wire::PROTOCOL_VERSION,
        name: "raw".into(),
    };
    sock.send(
        &wire::encode(&wire::ClientMsg { id: 1, req: hello }).unwrap(),
        &[],
    )
    .unwrap();
    let mut buf = recv_buffer();
    let got = sock.recv(&mut buf).unwrap();
    let reply: wire::ServerMsg = wire::decode(&buf[..got.len]).unwrap();
    assert!(
        matches!(
            reply,
            wire::ServerMsg::Reply {
                result: Ok(Reply::Hello { .. }),
                ..
            }
        ),
        "{reply:?}"
    );
    sock
}

fn expect_error_then_close(sock: &SeqPacket, fragment: &str) {
    let mut buf = recv_buffer();
    let got = sock.recv(&mut buf).unwrap();
    let reply: wire::ServerMsg = wire::decode(&buf[..got.len]).unwrap();
    match reply {
        wire::ServerMsg::Reply { result: Err(e), .. } => {
            assert_eq!(e.kind, ErrorKind::Protocol, "{e}");
            assert!(e.message.contains(fragment), "{e}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(
        matches!(sock.recv(&mut buf), Err(SockError::Closed)),
        "connection not closed"
    );
}

#[test]
fn hostile_requests_harm_no_one_else() {
    let mut daemon = Daemon::start(CONFIG);
    let victim = Victim::start(&daemon);
    let capacity = 4096u64;
    let size = ring::ring_bytes(capacity, SPEC.frame_bytes()).unwrap();

    // 1. An unsealed memfd: the client could shrink it under the server's mapping.
    let attacker = daemon.client("attacker");
    let mfd = memfd::MemfdOptions::default()
        .allow_sealing(true)
        .create("x")
        .unwrap();
    mfd.as_file().set_len(size as u64).unwrap();
    let (kind, msg) = server_kind(attacker.request(create_req(capacity), &[mfd.as_file().as_fd()]));
    assert_eq!(kind, ErrorKind::Protocol, "{msg}");
    assert!(msg.contains("not sealed"), "{msg}");

    // 2. A sealed memfd smaller than the ring it claims to hold.
    let small = shm::create_sealed("small", size / 2).unwrap();
    let (kind, msg) = server_kind(attacker.request(create_req(capacity), &[small.as_fd()]));
    assert_eq!(kind, ErrorKind::Protocol, "{msg}");
    assert!(msg.contains("needs exactly"), "{msg}");

    // 3. Extra fds beside the ring (a pipe, or a raw eventfd as the old protocol took for
    // wake-ups): refused, never kept; and a missing fd.
    let good = shm::create_sealed("ring", size).unwrap();
    Ring::init(
        Mapping::new(good.as_fd(), size, true).unwrap(),
        capacity,
        SPEC.frame_bytes(),
    )
    .unwrap();
    let (r, _w) = nix::unistd::pipe().unwrap();
    let (kind, msg) =
        server_kind(attacker.request(create_req(capacity), &[good.as_fd(), r.as_fd()]));
    assert_eq!(kind, ErrorKind::Protocol, "{msg}");
    let efd = eventfd();
    let (kind, msg) =
        server_kind(attacker.request(create_req(capacity), &[good.as_fd(), efd.as_fd()]));
    assert_eq!(kind, ErrorKind::Protocol, "{msg}");
    assert!(msg.contains("exactly 1 fd"), "{msg}");
    let (kind, _) = server_kind(attacker.request(create_req(capacity), &[]));
    assert_eq!(kind, ErrorKind::Protocol);
    assert!(
        attacker.streams().unwrap().is_empty(),
        "no stream came of a refused request"
    );
    // The connection survives request-level errors.
    assert!(attacker.server_info().is_ok());

    // 4. A ring whose write index is bogus after creation: the engine ends that stream.
    let ring_fd = shm::create_sealed("ring", size).unwrap();
    let ring = Ring::init(
        Mapping::new(ring_fd.as_fd(), size, true).unwrap(),
        capacity,
        SPEC.frame_bytes(),
    )
    .unwrap();
    let (reply, _) = attacker
        .request(create_req(capacity), &[ring_fd.as_fd()])
        .unwrap();
    let Reply::StreamCreated { stream, .. } = reply else {
        panic!("{reply:?}")
    };
    ring.store_write(capacity * 10).unwrap();
    let mut ended = None;
    assert!(
        wait_for(Duration::from_secs(10), || {
            for ev in attacker.take_events().unwrap() {
                if let Event::StreamEnded { stream: s, error } = ev {
                    assert_eq!(s, stream);
                    ended = Some(error);
                }
            }
            ended.is_some()
        }),
        "no StreamEnded event for the bogus ring"
    );
    let error = ended.unwrap();
    assert_eq!(error.kind, ErrorKind::Protocol, "{error}");
    assert!(
        attacker.streams().unwrap().is_empty(),
        "the ended stream is gone"
    );

    // 5. A ring header that lies about its geometry at creation.
    let liar = shm::create_sealed("ring", size).unwrap();
    Ring::init(
        Mapping::new(liar.as_fd(), size, true).unwrap(),
        capacity / 2,
        SPEC.frame_bytes() * 2,
    )
    .unwrap();
    let (kind, msg) = server_kind(attacker.request(create_req(capacity), &[liar.as_fd()]));
    assert_eq!(kind, ErrorKind::Protocol, "{msg}");

    // 6. A datagram over the size cap gets a protocol error and ends that connection.
    let big = handshaken(&daemon);
    nix::sys::socket::send(
        big.as_fd().as_raw_fd(),
        &vec![0u8; MAX_MESSAGE + 1000],
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    expect_error_then_close(&big, "exceeds");

    // 7. Garbage gets a protocol error and ends that connection.
    let garbage = handshaken(&daemon);
    garbage.send(&[0xff; 40], &[]).unwrap();
    expect_error_then_close(&garbage, "malformed");

    // 8. Skipping the handshake is refused.
    let raw = SeqPacket::connect(&daemon.socket()).unwrap();
    let bytes = wire::encode(&wire::ClientMsg {
        id: 1,
        req: Request::ListSinks,
    })
    .unwrap();
    raw.send(&bytes, &[]).unwrap();
    let mut buf = recv_buffer();
    let got = raw.recv(&mut buf).unwrap();
    let reply: wire::ServerMsg = wire::decode(&buf[..got.len]).unwrap();
    assert!(
        matches!(reply, wire::ServerMsg::Reply { result: Err(ref e), .. } if e.kind == ErrorKind::Protocol),
        "{reply:?}"
    );

    // 9. A flood of requests on one connection only keeps that connection busy.
    let flood = daemon.client("flood");
    for _ in 0..2000 {
        let _ = flood.request(Request::ListStreams, &[]);
    }

    victim.check();
    assert!(daemon.alive(), "the daemon died:\n{}", daemon.log());
    // And it still serves new clients.
    let after: Client = daemon.client("after");
    assert!(!after.sinks().unwrap().is_empty());
}

#[test]
fn other_clients_streams_are_invisible_and_untouchable() {
    let daemon = Daemon::start(CONFIG);
    let owner = daemon.client("owner");
    let mut opts = PlaybackOptions::new("mine", SPEC);
    opts.corked = true;
    let p = owner.playback(opts).unwrap();
    let other = daemon.client("other");
    assert!(
        other.streams().unwrap().is_empty(),
        "another client's stream is listed"
    );
    for req in [
        Request::SetVolume {
            stream: p.id(),
            volume: 0.0,
        },
        Request::SetMute {
            stream: p.id(),
            muted: true,
        },
        Request::Cork {
            stream: p.id(),
            corked: false,
        },
        Request::DeleteStream { stream: p.id() },
        Request::StreamInfo { stream: p.id() },
    ] {
        let (kind, msg) = server_kind(other.request(req.clone(), &[]));
        assert_eq!(kind, ErrorKind::NotFound, "{req:?}: {msg}");
    }
    let info = p.info().unwrap();
    assert_eq!((info.volume, info.muted, info.corked), (1.0, false, true));
    assert_eq!(owner.streams().unwrap().len(), 1);
}

#[test]
fn admin_actions_are_refused_on_the_native_socket() {
    let daemon = Daemon::start(CONFIG);
    let c = daemon.client("wannabe-admin");
    let (kind, msg) = server_kind(c.request(
        Request::SetDefaultSink {
            sink: "speakers".into(),
        },
        &[],
    ));
    assert_eq!(kind, ErrorKind::Denied, "{msg}");
}
