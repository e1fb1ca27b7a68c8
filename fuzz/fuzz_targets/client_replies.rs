//! A malicious server: the client library (`soundgate_proto::client`) connects to a fake
//! server that answers with the input's datagrams and fds (see `soundgate_fuzz::script`), then
//! runs what a player and a recorder do: handshake, server info, lists, a playback stream
//! (write, volume, info, close), a record stream (read, close), events.
//!
//! Holds: whatever the server sends (garbage, wrong ids, wrong reply kinds, rings of the wrong
//! size, unsealed memfds, impossible indices, too few or too many fds), every call returns
//! `Ok` or `Err` — no panic, no crash (SIGBUS on a short memfd), no hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use soundgate_fuzz::{script, Datagram};
use soundgate_proto::client::{Client, PlaybackOptions, RecordOptions};
use soundgate_proto::format::{SampleFormat, StreamSpec};
use soundgate_proto::sock::SeqPacket;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

struct Server {
    path: PathBuf,
    scripts: Mutex<mpsc::Sender<Vec<Datagram>>>,
}

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sg-fuzz-client-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("native");
        let _ = std::fs::remove_file(&path);
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        socket::bind(fd.as_raw_fd(), &UnixAddr::new(&path).expect("addr")).expect("bind");
        socket::listen(&fd, socket::Backlog::new(4).expect("backlog")).expect("listen");
        let (tx, rx) = mpsc::channel::<Vec<Datagram>>();
        std::thread::spawn(move || serve(fd, rx));
        Server {
            path,
            scripts: Mutex::new(tx),
        }
    })
}

/// Accepts one connection per script, sends the script, half-closes, and waits for the client
/// to hang up.
fn serve(listener: OwnedFd, scripts: mpsc::Receiver<Vec<Datagram>>) {
    while let Ok(script) = scripts.recv() {
        let Ok(raw) = socket::accept(listener.as_raw_fd()) else {
            continue;
        };
        // SAFETY: accept returned a new fd that nothing else owns.
        let conn = unsafe { OwnedFd::from_raw_fd(raw) };
        let sock = SeqPacket::from(conn.try_clone().expect("dup"));
        for d in script {
            // An honest record ring: 4800 frames of s16 stereo (what the seeds ask for), larger
            // than a page, so a forged short one has data past its end.
            let honest = Some((256 + 4800 * 4, Some((4800u64, 4usize))));
            let fds: Vec<OwnedFd> = d.fds.iter().filter_map(|k| k.make(honest)).collect();
            let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
            if sock.send(&d.bytes, &borrowed).is_err() {
                break;
            }
        }
        let _ = socket::shutdown(conn.as_raw_fd(), socket::Shutdown::Write);
        let mut buf = soundgate_proto::sock::recv_buffer();
        while sock.recv(&mut buf).is_ok() {}
    }
}

fuzz_target!(|data: &[u8]| {
    let s = server();
    s.scripts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(script(data))
        .expect("server thread alive");
    let Ok(client) = Client::connect(&s.path, "fuzz") else {
        return;
    };
    let _ = client.server_info();
    let _ = client.sinks();
    let _ = client.sources();
    let _ = client.streams();
    let _ = client.stream_info(1);
    let spec = StreamSpec {
        format: SampleFormat::S16Le,
        rate: 48_000,
        channels: 2,
    };
    if let Ok(mut p) = client.playback(PlaybackOptions::new("fuzz", spec)) {
        let _ = p.write(&[0u8; 256]);
        let _ = p.set_volume(0.5);
        let _ = p.info();
        let _ = p.close();
    }
    if let Ok(mut r) = client.record(RecordOptions::new("fuzz", spec)) {
        let mut out = Vec::new();
        let _ = r.read(&mut out, Some(Duration::ZERO));
        let _ = r.read(&mut out, Some(Duration::ZERO));
        let _ = r.overruns();
        let _ = r.close();
    }
    let _ = client.take_events();
});
