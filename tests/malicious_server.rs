//! A malicious server must not crash a client: the client library against a fake server that
//! answers a record request with a ring memfd that does not match the geometry it claims.
//! (Found while writing the `client_replies` fuzz target, whose seed `short-memfd` sends the
//! same forged ring: the library mapped the server's memfd without checking its size or
//! seals, so a valid header on a memfd shorter than its geometry killed the client with SIGBUS
//! on its first read of the data.)
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use soundgate_proto::client::{Client, ClientError, RecordOptions};
use soundgate_proto::sock::{recv_buffer, SeqPacket};
use soundgate_proto::wire::{self, *};
use soundgate_proto::{ring, shm, SampleFormat, StreamSpec};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::S16Le,
    rate: 48_000,
    channels: 2,
};
const CAPACITY: u64 = 4800;

/// What the fake server sends as the record ring.
#[derive(Clone, Copy)]
enum RingFd {
    Honest,
    Short,
    Unsealed,
}

fn ring_fd(kind: RingFd) -> OwnedFd {
    let size = ring::ring_bytes(CAPACITY, SPEC.frame_bytes()).unwrap();
    match kind {
        RingFd::Honest => {
            let (fd, map) = shm::create_read_only_for_peer("fake-ring", size).unwrap();
            ring::Ring::init(map, CAPACITY, SPEC.frame_bytes()).unwrap();
            fd
        }
        RingFd::Short => {
            // A valid header claiming CAPACITY frames, written up to frame 4000, on one page:
            // the frames it claims past the page are not there.
            let m = memfd::MemfdOptions::default()
                .allow_sealing(true)
                .create("fake-ring")
                .unwrap();
            let mut header = [0u8; ring::HEADER_BYTES];
            header[0..4].copy_from_slice(&ring::MAGIC.to_le_bytes());
            header[4..8].copy_from_slice(&ring::RING_VERSION.to_le_bytes());
            header[8..16].copy_from_slice(&CAPACITY.to_le_bytes());
            header[16..20].copy_from_slice(&(SPEC.frame_bytes() as u32).to_le_bytes());
            header[64..72].copy_from_slice(&4000u64.to_le_bytes());
            std::io::Write::write_all(&mut m.as_file(), &header).unwrap();
            m.as_file().set_len(4096).unwrap();
            m.add_seals(&[
                memfd::FileSeal::SealShrink,
                memfd::FileSeal::SealGrow,
                memfd::FileSeal::SealSeal,
            ])
            .unwrap();
            m.into_file().into()
        }
        RingFd::Unsealed => {
            let m = memfd::MemfdOptions::default().create("fake-ring").unwrap();
            m.as_file().set_len(size as u64).unwrap();
            m.into_file().into()
        }
    }
}

fn device() -> DeviceInfo {
    DeviceInfo {
        name: "out.monitor".into(),
        kind: DeviceKind::Monitor,
        backend: "null".into(),
        spec: SPEC,
        quantum: 480,
        is_default: true,
        suspended: false,
        monitor_of: Some("out".into()),
        state: DeviceState::Running,
        clock: "timer".into(),
        device: None,
        period_frames: 0,
        buffer_frames: 0,
        xruns: 0,
        suspends: 0,
        detail: None,
        volume: 1.0,
        muted: false,
    }
}

/// A fake server on `path` that answers one connection, request by request.
fn fake_server(path: &Path, kind: RingFd) -> std::thread::JoinHandle<()> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket::bind(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
    socket::listen(&fd, socket::Backlog::new(1).unwrap()).unwrap();
    std::thread::spawn(move || {
        let raw = socket::accept(fd.as_raw_fd()).unwrap();
        // SAFETY: accept returned a new fd that nothing else owns.
        let conn = SeqPacket::from(unsafe { OwnedFd::from_raw_fd(raw) });
        let mut buf = recv_buffer();
        while let Ok(got) = conn.recv(&mut buf) {
            let msg: ClientMsg = wire::decode(&buf[..got.len]).unwrap();
            let mut fds: Vec<OwnedFd> = Vec::new();
            let reply = match msg.req {
                Request::Hello { .. } => Reply::Hello {
                    version: PROTOCOL_VERSION,
                    server: "fake".into(),
                    client: 1,
                },
                Request::ServerInfo => Reply::ServerInfo(ServerInfo {
                    name: "fake".into(),
                    version: "0".into(),
                    protocol: PROTOCOL_VERSION,
                    default_sink: None,
                    default_source: Some("out.monitor".into()),
                    notice: None,
                }),
                Request::ListSources => Reply::Sources(vec![device()]),
                Request::CreateRecord { .. } => {
                    // The record reply carries the ring alone (wake-ups are its futex word).
                    fds.push(ring_fd(kind));
                    Reply::StreamCreated {
                        stream: 1,
                        spec: SPEC,
                        capacity_frames: CAPACITY,
                        quantum: 480,
                    }
                }
                _ => Reply::Ok,
            };
            let bytes = wire::encode(&ServerMsg::Reply {
                id: msg.id,
                result: Ok(reply),
            })
            .unwrap();
            let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
            if conn.send(&bytes, &borrowed).is_err() {
                break;
            }
        }
    })
}

fn record_against(kind: RingFd) -> Result<usize, ClientError> {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("native");
    let server = fake_server(&path, kind);
    let client = Client::connect(&path, "victim")?;
    let mut opts = RecordOptions::new("rec", SPEC);
    opts.device = Some("out.monitor".into());
    let result = client.record(opts).and_then(|mut r| {
        let mut out = Vec::new();
        r.read(&mut out, Some(std::time::Duration::ZERO))
    });
    drop(client);
    server.join().unwrap();
    result
}

#[test]
fn an_honest_fake_server_records() {
    assert_eq!(
        record_against(RingFd::Honest).unwrap(),
        0,
        "an empty ring reads nothing"
    );
}

#[test]
fn a_short_ring_memfd_is_refused_not_a_crash() {
    let e = record_against(RingFd::Short).unwrap_err();
    assert!(matches!(e, ClientError::Shm(_)), "{e}");
    assert!(e.to_string().contains("bytes"), "{e}");
}

#[test]
fn an_unsealed_ring_memfd_is_refused() {
    let e = record_against(RingFd::Unsealed).unwrap_err();
    assert!(matches!(e, ClientError::Shm(_)), "{e}");
}
