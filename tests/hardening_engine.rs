#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Hardening of the engine (issue 10, items 1 and 3), as attacks through the real daemon:
//!
//! - a hostile client does everything it can to the wake-up of its playback and record streams
//!   (garbage in every header word, futex waiters and PI-lock attempts on the futex word,
//!   fcntl on the ring's fd, writes to the read-only record ring): victims on the same sink and
//!   source keep advancing without an underrun, and SIGTERM still ends the daemon;
//! - an eventfd sent beside the ring (the old wake-up) is refused and not kept;
//! - clients with 32 streams each SIGKILLed at once, five rounds: the engine holds exactly the
//!   streams the registry lists, the daemon's memfd mappings are back to baseline, and the
//!   quota gives the uid its streams back.

mod common;

use common::{bin, exe_id, fd_count, maps_with, wait_for, Daemon, Victim};
use soundgate_proto::client::{Client, ClientError, PlaybackOptions, RecordOptions};
use soundgate_proto::futex;
use soundgate_proto::ring::{self, Ring};
use soundgate_proto::shm::{self, Mapping};
use soundgate_proto::wire::{DeviceStats, ErrorKind, Reply, Request, ServerStats};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::io::BufRead;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEREO: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};
const MONO: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 1,
};

fn config_with_mic() -> String {
    let me = exe_id(&std::env::current_exe().unwrap());
    format!(
        r#"
[[sink]]
name = "speakers"
backend = "null"
rate = 48000
channels = 2
format = "f32le"
quantum = 256

[[source]]
name = "mic"
backend = "null"
rate = 48000
channels = 1
quantum = 256
default = true

[[rule]]
app = "{me}"
action = "record"
target = "mic"
decision = "allow"
"#
    )
}

fn create_playback(capacity: u64) -> Request {
    Request::CreatePlayback {
        name: "hostile".into(),
        sink: Some("speakers".into()),
        spec: STEREO,
        capacity_frames: capacity,
        volume: 1.0,
        muted: false,
        corked: false,
        exclusive: false,
    }
}

fn stats(admin: &Client) -> ServerStats {
    match admin.request(Request::Stats, &[]).unwrap().0 {
        Reply::Stats(s) => s,
        r => panic!("{r:?}"),
    }
}

fn device(s: &ServerStats, name: &str) -> DeviceStats {
    s.devices.iter().find(|d| d.name == name).unwrap().clone()
}

/// `FUTEX_LOCK_PI` on `word` with a 5 ms timeout: turns the wake word into a PI lock (or fails
/// trying), as a hostile client might. The result does not matter.
fn futex_lock_pi(word: &std::sync::atomic::AtomicU32) {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec on our stack for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let mut deadline = now;
    deadline.tv_nsec += 5_000_000;
    if deadline.tv_nsec >= 1_000_000_000 {
        deadline.tv_sec += 1;
        deadline.tv_nsec -= 1_000_000_000;
    }
    // SAFETY: `word` is a live, aligned u32 in a mapping this process holds; `deadline` is a
    // valid timespec that outlives the call. The kernel may write our TID into the word (it is
    // an atomic in shared memory; any value is valid there) and we unlock right after.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_LOCK_PI,
            0,
            &deadline as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_UNLOCK_PI,
            0,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Clears O_NONBLOCK on `fd` (the old eventfd attack's first step) and returns whether it
/// worked (it does on a memfd: and the engine does not care).
fn clear_nonblock(fd: BorrowedFd<'_>) -> bool {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let Ok(flags) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) else {
        return false;
    };
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).is_ok()
}

#[test]
fn hostile_wake_ups_freeze_nothing_and_sigterm_still_ends_the_daemon() {
    let mut daemon = Daemon::start(&config_with_mic());
    let pid = daemon.pid();
    let admin = daemon.admin("watch");
    let victim = Victim::start(&daemon);

    // A victim recorder on the source the attacker also records from.
    let stop = Arc::new(AtomicBool::new(false));
    let rec_client = daemon.client("victim-rec");
    let rec_stop = Arc::clone(&stop);
    let rec_victim = std::thread::spawn(move || {
        let mut opts = RecordOptions::new("victim-rec", MONO);
        opts.device = Some("mic".into());
        let mut rec = rec_client.record(opts).expect("victim record stream");
        let (mut bytes, start) = (0usize, Instant::now());
        let mut buf = Vec::new();
        while !rec_stop.load(Ordering::Relaxed) {
            buf.clear();
            bytes += rec.read(&mut buf, Some(Duration::from_secs(5))).unwrap();
        }
        (bytes / 4, start.elapsed(), rec.overruns())
    });

    // --- the hostile playback stream: its own ring, fed, with every header word abused ---
    let attacker = daemon.client("attacker");
    let capacity = 4096u64;
    let size = ring::ring_bytes(capacity, STEREO.frame_bytes()).unwrap();
    let memfd = shm::create_sealed("hostile", size).unwrap();
    let ring = Arc::new(
        Ring::init(
            Mapping::new(memfd.as_fd(), size, true).unwrap(),
            capacity,
            STEREO.frame_bytes(),
        )
        .unwrap(),
    );
    // The old attack's fd, sent beside the ring: refused.
    let efd: OwnedFd = nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
    )
    .unwrap()
    .into();
    match attacker.request(create_playback(capacity), &[memfd.as_fd(), efd.as_fd()]) {
        Err(ClientError::Server(e)) => assert_eq!(e.kind, ErrorKind::Protocol, "{e}"),
        other => panic!("an eventfd beside the ring was accepted: {other:?}"),
    }
    let (reply, _) = attacker
        .request(create_playback(capacity), &[memfd.as_fd()])
        .unwrap();
    assert!(matches!(reply, Reply::StreamCreated { .. }), "{reply:?}");
    assert!(
        clear_nonblock(memfd.as_fd()),
        "fcntl on one's own memfd works"
    );

    // --- the hostile record stream: the reply carries the ring only ---
    let (reply, mut fds) = attacker
        .request(
            Request::CreateRecord {
                name: "hostile-rec".into(),
                source: Some("mic".into()),
                spec: MONO,
                capacity_frames: 96_000,
            },
            &[],
        )
        .unwrap();
    let Reply::StreamCreated {
        capacity_frames, ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert_eq!(
        fds.len(),
        1,
        "a record stream hands out its ring and nothing else"
    );
    let rec_fd = fds.pop().unwrap();
    let rec_size = ring::ring_bytes(capacity_frames, MONO.frame_bytes()).unwrap();
    let rec_ring = Arc::new(
        Ring::attach(
            Mapping::new(rec_fd.as_fd(), rec_size, false).unwrap(),
            capacity_frames,
            MONO.frame_bytes(),
        )
        .unwrap(),
    );
    assert!(
        rec_ring.arm_wake(u64::MAX).is_err(),
        "the record ring is read-only"
    );
    assert!(
        nix::sys::uio::pwrite(rec_fd.as_fd(), &[0xff; 64], 192).is_err(),
        "the record ring's header cannot be written"
    );
    clear_nonblock(rec_fd.as_fd());

    let mut attackers = Vec::new();
    // Feeder: keeps the hostile stream playing, so the engine consumes and decides wake-ups.
    {
        let (ring, stop) = (Arc::clone(&ring), Arc::clone(&stop));
        attackers.push(std::thread::spawn(move || {
            let chunk = vec![0u8; 256 * STEREO.frame_bytes()];
            let mut written = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let read = ring.load_read();
                if written.saturating_sub(read) + 256 <= capacity {
                    ring.copy_in(written, &chunk).unwrap();
                    written += 256;
                    ring.store_write(written).unwrap();
                }
                // Ask to be woken at any fill, all the time.
                ring.arm_wake(u64::MAX).unwrap();
                std::thread::yield_now();
            }
        }));
    }
    // Garbage in the whole wake area and the geometry words (the engine never re-reads them).
    {
        let (fd, stop) = (memfd.try_clone().unwrap(), Arc::clone(&stop));
        attackers.push(std::thread::spawn(move || {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let junk: Vec<u8> = (0..64).map(|i| (x >> (i % 8 * 8)) as u8).collect();
                nix::sys::uio::pwrite(fd.as_fd(), &junk, 192).unwrap();
                nix::sys::uio::pwrite(fd.as_fd(), &junk[..24], 0).unwrap();
                std::thread::yield_now();
            }
        }));
    }
    // Futex waiters and PI-lock attempts on both rings' wake words.
    for i in 0..6 {
        let (play, rec, stop) = (Arc::clone(&ring), Arc::clone(&rec_ring), Arc::clone(&stop));
        attackers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = if i % 2 == 0 { &play } else { &rec };
                if i < 2 {
                    futex_lock_pi(r.wake_word());
                } else {
                    let seen = r.wake_seq();
                    futex::wait(r.wake_word(), seen, Duration::from_millis(20));
                }
            }
        }));
    }

    // The attack runs while everyone else plays and records.
    let before = stats(&admin);
    std::thread::sleep(Duration::from_millis(1500));
    let during = stats(&admin);
    for name in ["speakers", "mic"] {
        let (b, d) = (device(&before, name), device(&during, name));
        assert!(
            d.cycles > b.cycles + 50,
            "{name} stalled under the attack: {} -> {} cycles",
            b.cycles,
            d.cycles
        );
    }
    let sink = device(&during, "speakers");
    assert!(
        sink.wakeups - device(&before, "speakers").wakeups
            <= 2 * (sink.cycles - device(&before, "speakers").cycles) + 2,
        "wake-ups bounded by one per stream per cycle"
    );
    victim.check();
    stop.store(true, Ordering::Relaxed);
    let (frames, elapsed, _overruns) = rec_victim.join().unwrap();
    assert!(
        frames as f64 > 48_000.0 * elapsed.as_secs_f64() * 0.25,
        "the victim recorder got only {frames} frames in {elapsed:?}"
    );
    // Restart the attack for the shutdown: SIGTERM lands while it is in full swing.
    for t in attackers {
        t.join().unwrap();
    }
    stop.store(false, Ordering::Relaxed);
    let mut attackers = Vec::new();
    for i in 0..4 {
        let (play, rec, stop) = (Arc::clone(&ring), Arc::clone(&rec_ring), Arc::clone(&stop));
        attackers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = if i % 2 == 0 { &play } else { &rec };
                if i < 2 {
                    futex_lock_pi(r.wake_word());
                } else {
                    let seen = r.wake_seq();
                    futex::wait(r.wake_word(), seen, Duration::from_millis(20));
                }
                if i % 2 == 0 {
                    let _ = play.arm_wake(u64::MAX);
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(fd_count(pid) > 0);
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let ended = wait_for(Duration::from_secs(5), || !daemon.alive());
    stop.store(true, Ordering::Relaxed);
    for t in attackers {
        t.join().unwrap();
    }
    assert!(
        ended,
        "SIGTERM did not end the daemon within 5 s:\n{}",
        daemon.log()
    );
    eprintln!("daemon ended {:?} after SIGTERM", t.elapsed());
}

#[test]
fn an_eventfd_beside_the_ring_is_refused_and_not_kept() {
    let daemon = Daemon::start(&config_with_mic());
    let pid = daemon.pid();
    let client = daemon.client("extra-fd");
    assert!(client.server_info().is_ok());
    let baseline = fd_count(pid);
    let capacity = 4096u64;
    let size = ring::ring_bytes(capacity, STEREO.frame_bytes()).unwrap();
    for _ in 0..50 {
        let memfd = shm::create_sealed("ring", size).unwrap();
        Ring::init(
            Mapping::new(memfd.as_fd(), size, true).unwrap(),
            capacity,
            STEREO.frame_bytes(),
        )
        .unwrap();
        let efd: OwnedFd =
            nix::sys::eventfd::EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_CLOEXEC)
                .unwrap()
                .into();
        match client.request(create_playback(capacity), &[memfd.as_fd(), efd.as_fd()]) {
            Err(ClientError::Server(e)) => {
                assert_eq!(e.kind, ErrorKind::Protocol, "{e}");
                assert!(e.message.contains("exactly 1 fd"), "{e}");
            }
            other => panic!("an eventfd beside the ring was accepted: {other:?}"),
        }
    }
    assert!(client.streams().unwrap().is_empty());
    assert!(
        wait_for(Duration::from_secs(5), || fd_count(pid) <= baseline),
        "the daemon kept fds: {} now, {baseline} before",
        fd_count(pid)
    );
    // The library's own streams carry the ring only, and work.
    let mut p = client.playback(PlaybackOptions::new("ok", STEREO)).unwrap();
    p.write(&vec![0u8; 4800 * STEREO.frame_bytes()]).unwrap();
    p.drain().unwrap();
    p.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Streams of SIGKILLed clients

const HOLDER_ENV: &str = "SG_TEST_STREAM_HOLDER";
const STREAMS_PER_HOLDER: usize = 32;

/// Not a test on its own: the child process of
/// `sigkilled_clients_leave_no_stream_in_the_engine`. Opens 32 playing streams on the socket
/// named by `SG_TEST_STREAM_HOLDER`, says READY, and waits to be killed.
#[test]
#[ignore = "helper process, spawned by sigkilled_clients_leave_no_stream_in_the_engine"]
fn stream_holder() {
    let Some(socket) = std::env::var_os(HOLDER_ENV) else {
        return;
    };
    let client = Client::connect(std::path::Path::new(&socket), "holder").unwrap();
    let mut streams = Vec::new();
    let chunk = vec![0u8; 2400 * STEREO.frame_bytes()];
    for i in 0..STREAMS_PER_HOLDER {
        let mut opts = PlaybackOptions::new(&format!("held-{i}"), STEREO);
        opts.latency_ms = 100;
        let mut p = client.playback(opts).unwrap();
        p.write(&chunk).unwrap();
        streams.push(p);
    }
    println!("READY");
    std::thread::sleep(Duration::from_secs(120));
}

fn spawn_holder(daemon: &Daemon) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "stream_holder", "--ignored", "--nocapture"])
        .env(HOLDER_ENV, daemon.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(out).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("READY") => break,
            Some(Ok(_)) => {}
            _ => panic!("stream holder exited before it was ready"),
        }
    }
    child
}

#[test]
fn sigkilled_clients_leave_no_stream_in_the_engine() {
    let config =
        "[limits]\nstreams_per_client = 64\nstreams_per_uid = 128\nstreams_total = 1024\n\n\
                  [[sink]]\nname = \"speakers\"\nbackend = \"null\"\nrate = 48000\nchannels = 2\n\
                  format = \"f32le\"\nquantum = 256\n";
    let daemon = Daemon::start(config);
    let pid = daemon.pid();
    let admin = daemon.admin("watch");
    let baseline = maps_with(pid, "memfd:");
    let settled = |want: u32| {
        let s = stats(&admin);
        let d = device(&s, "speakers");
        s.streams == want
            && d.streams == want
            && d.engine_streams == want
            && d.engine_held as usize == want as usize
    };
    let total = (4 * STREAMS_PER_HOLDER) as u32;
    for round in 0..5 {
        let mut children: Vec<_> = (0..4).map(|_| spawn_holder(&daemon)).collect();
        assert!(
            wait_for(Duration::from_secs(20), || settled(total)),
            "round {round}: the engine does not carry the {total} streams: {:?}",
            stats(&admin)
        );
        assert!(maps_with(pid, "memfd:") >= baseline + total as usize);
        // All at once.
        for c in &children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for c in &mut children {
            c.wait().unwrap();
        }
        assert!(
            wait_for(Duration::from_secs(20), || settled(0)),
            "round {round}: streams outlived their clients: {:?}",
            stats(&admin)
        );
        assert!(
            wait_for(Duration::from_secs(20), || maps_with(pid, "memfd:")
                == baseline),
            "round {round}: {} memfd mappings left, {baseline} at start",
            maps_with(pid, "memfd:")
        );
    }
    // sgctl shows the same: the engine holds exactly what the registry lists.
    let out = Command::new(bin("sgctl"))
        .arg("--admin")
        .arg(daemon.admin_socket())
        .args(["stats", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "speakers")
        .unwrap()
        .clone();
    assert_eq!(d["streams"], 0, "{d}");
    assert_eq!(d["engine_streams"], 0, "{d}");
    assert_eq!(d["engine_held"], 0, "{d}");

    // The quota gave the uid its streams back: 64 streams, twice, and not one more.
    let a = daemon.client("again-a");
    let b = daemon.client("again-b");
    let mut held = Vec::new();
    for c in [&a, &b] {
        for i in 0..64 {
            held.push(
                c.playback(PlaybackOptions::new(&format!("again-{i}"), STEREO))
                    .unwrap(),
            );
        }
    }
    match b.playback(PlaybackOptions::new("one-too-many", STEREO)) {
        Err(e) => assert_eq!(e.kind(), Some(ErrorKind::Quota), "{e}"),
        Ok(_) => panic!("the uid got more streams than its quota"),
    }
    assert!(wait_for(Duration::from_secs(20), || settled(128)));
}
