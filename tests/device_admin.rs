#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Device administration: every device request from the native socket is refused while a
//! victim keeps playing and the devices stay as they were; from the admin socket each works
//! and its effect shows in a `file` sink's WAV.

mod common;

use common::{read_wav, tone_fit, wait_for, Daemon};
use soundgate_proto::client::{Client, ClientError, PlaybackOptions};
use soundgate_proto::wire::{DeviceInfo, DeviceKind, ErrorKind, NewDevice, Reply, Request};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const CONFIG: &str = r#"
[[sink]]
name = "speakers"
backend = "null"
rate = 48000
channels = 1
format = "f32le"
quantum = 256
default = true

[[sink]]
name = "tape"
backend = "file"
path = "$DIR/tape.wav"
rate = 48000
channels = 1
format = "f32le"
quantum = 256

[[source]]
name = "mic"
backend = "null"
rate = 48000
channels = 1
quantum = 256
default = true

[[source]]
name = "mic2"
backend = "null"
rate = 48000
channels = 1
quantum = 256
"#;

const RATE: u32 = 48_000;
const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: RATE,
    channels: 1,
};
const LONG: Duration = Duration::from_secs(20);

fn bytes(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn kind(r: Result<(Reply, Vec<std::os::fd::OwnedFd>), ClientError>) -> (ErrorKind, String) {
    match r {
        Err(ClientError::Server(e)) => (e.kind, e.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn ok(c: &Client, req: Request) {
    let (reply, _) = c.request(req, &[]).unwrap();
    assert_eq!(reply, Reply::Ok);
}

/// A null sink named `name` at [`SPEC`], quantum 256, for `CreateDevice`.
fn null_sink(name: &str) -> NewDevice {
    NewDevice {
        name: name.into(),
        kind: DeviceKind::Sink,
        backend: "null".into(),
        path: None,
        pcm: None,
        spec: SPEC,
        quantum: 256,
    }
}

fn device(admin: &Client, name: &str) -> DeviceInfo {
    let mut all = admin.sinks().unwrap();
    all.extend(admin.sources().unwrap());
    all.into_iter()
        .find(|d| d.name == name && d.kind != DeviceKind::Monitor)
        .unwrap_or_else(|| panic!("no device {name}"))
}

/// A client that plays a tone to `sink` until stopped, then reports (underruns, frames).
struct Player {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, u64)>,
    id: u32,
}

impl Player {
    fn start(client: Client, sink: &str, freq: f64, amp: f64) -> Player {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let mut opts = PlaybackOptions::new("player", SPEC);
        opts.device = Some(sink.into());
        opts.latency_ms = 300;
        let mut p = client.playback(opts).expect("player stream");
        let id = p.id();
        let thread = std::thread::spawn(move || {
            let chunk = bytes(&common::sine(freq, RATE, 480, amp, 1));
            while !flag.load(Ordering::Relaxed) {
                p.write(&chunk).expect("player write");
            }
            let info = p.info().expect("player info");
            drop(client);
            (info.underruns, info.frames)
        });
        Player { stop, thread, id }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("player thread")
    }
}

#[test]
fn native_clients_cannot_administer_devices() {
    let d = Daemon::start(CONFIG);
    let admin = d.admin("admin");
    let before: Vec<DeviceInfo> = ["speakers", "tape", "mic", "mic2"]
        .iter()
        .map(|n| device(&admin, n))
        .collect();
    let victim = Player::start(d.client("victim"), "speakers", 440.0, 0.2);
    let attacker = d.client("attacker");
    let new = null_sink("evil");
    let attacks = [
        Request::SuspendDevice {
            device: "speakers".into(),
            suspend: true,
        },
        Request::SuspendDevice {
            device: "mic".into(),
            suspend: true,
        },
        Request::SetDeviceVolume {
            device: "speakers".into(),
            volume: 0.0,
        },
        Request::SetDeviceMute {
            device: "speakers".into(),
            muted: true,
        },
        Request::SetDefaultSink {
            sink: "tape".into(),
        },
        Request::SetDefaultSource {
            source: "mic2".into(),
        },
        Request::CreateDevice { device: new },
        Request::RemoveDevice {
            name: "speakers".into(),
        },
        // Unknown devices are refused the same way: existence does not leak.
        Request::SuspendDevice {
            device: "nonexistent".into(),
            suspend: true,
        },
    ];
    for req in attacks {
        let (k, msg) = kind(attacker.request(req.clone(), &[]));
        assert_eq!(k, ErrorKind::Denied, "{req:?}: {msg}");
    }
    // Let the victim play on for a second of its own frames, then check nothing changed.
    let vinfo = || {
        admin
            .streams()
            .unwrap()
            .into_iter()
            .find(|s| s.id == victim.id)
    };
    let f0 = vinfo().unwrap().frames;
    assert!(wait_for(LONG, || vinfo().unwrap().frames > f0 + u64::from(RATE)));
    let after: Vec<DeviceInfo> = ["speakers", "tape", "mic", "mic2"]
        .iter()
        .map(|n| device(&admin, n))
        .collect();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (b.suspended, b.volume, b.muted, b.is_default),
            (a.suspended, a.volume, a.muted, a.is_default),
            "{} changed",
            a.name
        );
    }
    let info = admin.server_info().unwrap();
    assert_eq!(info.default_sink.as_deref(), Some("speakers"));
    assert_eq!(info.default_source.as_deref(), Some("mic"));
    let (underruns, frames) = victim.finish();
    assert_eq!(underruns, 0, "the victim underran");
    assert!(frames > u64::from(RATE));
}

#[test]
fn admin_device_volume_halves_the_file_sink_and_mute_silences_it() {
    let mut d = Daemon::start(CONFIG);
    let admin = d.admin("admin");
    // Argument checks come after the policy check, for an administrator.
    for v in [4.5f32, -0.1, f32::NAN] {
        let req = Request::SetDeviceVolume {
            device: "tape".into(),
            volume: v,
        };
        assert_eq!(kind(admin.request(req, &[])).0, ErrorKind::Invalid, "{v}");
    }
    let req = Request::SetDeviceVolume {
        device: "nonexistent".into(),
        volume: 1.0,
    };
    assert_eq!(kind(admin.request(req, &[])).0, ErrorKind::NotFound);
    ok(
        &admin,
        Request::SetDeviceVolume {
            device: "tape".into(),
            volume: 0.5,
        },
    );
    assert_eq!(device(&admin, "tape").volume, 0.5);

    let play = |freq: f64| {
        let c = d.client("music");
        let mut opts = PlaybackOptions::new("tone", SPEC);
        opts.device = Some("tape".into());
        let mut p = c.playback(opts).unwrap();
        p.write(&bytes(&common::sine(freq, RATE, RATE as usize, 0.4, 1)))
            .unwrap();
        p.drain().unwrap();
        assert_eq!(p.info().unwrap().underruns, 0);
    };
    play(1000.0);
    ok(
        &admin,
        Request::SetDeviceMute {
            device: "tape".into(),
            muted: true,
        },
    );
    assert!(device(&admin, "tape").muted);
    play(660.0);
    d.stop();
    let (_, samples) = read_wav(&d.dir.path().join("tape.wav"));
    let start = samples.iter().position(|&x| x.abs() > 0.01).unwrap();
    // The middle half-second of the first tone: 0.4 at device volume 0.5.
    let mid = &samples[start + 12_000..start + 36_000];
    let (c, s) = tone_fit(mid, 1000.0, RATE);
    let amp = (c * c + s * s).sqrt();
    assert!((amp - 0.2).abs() < 0.01, "amplitude {amp}, expected 0.2");
    // Everything after the first tone is silence: the second tone played into a muted device.
    let rest = &samples[start + RATE as usize + 256..];
    assert!(
        rest.len() > RATE as usize / 2,
        "the second tone was written"
    );
    let loudest = rest.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert_eq!(loudest, 0.0, "a muted device writes silence");
}

#[test]
fn admin_suspend_freezes_streams_and_the_file_sink_records_silence() {
    let mut d = Daemon::start(CONFIG);
    let admin = d.admin("admin");
    let wav = d.dir.path().join("tape.wav");
    let player = Player::start(d.client("player"), "tape", 1000.0, 0.3);
    let frames = || {
        admin
            .streams()
            .unwrap()
            .into_iter()
            .find(|s| s.id == player.id)
            .unwrap()
            .frames
    };
    assert!(wait_for(LONG, || frames() > u64::from(RATE) / 2));
    ok(
        &admin,
        Request::SuspendDevice {
            device: "tape".into(),
            suspend: true,
        },
    );
    assert!(device(&admin, "tape").suspended);
    let frozen = frames();
    // While the file grows by one second (of silence), the stream does not move.
    let size = || std::fs::metadata(&wav).map(|m| m.len()).unwrap_or(0);
    let s0 = size();
    assert!(wait_for(LONG, || size() > s0 + 4 * u64::from(RATE)));
    assert!(frames() <= frozen + 256, "a suspended sink consumed frames");
    let still = frames();
    assert!(wait_for(LONG, || size() > s0 + 8 * u64::from(RATE)));
    assert_eq!(frames(), still, "a suspended sink consumed frames");
    ok(
        &admin,
        Request::SuspendDevice {
            device: "tape".into(),
            suspend: false,
        },
    );
    assert!(!device(&admin, "tape").suspended);
    assert!(wait_for(LONG, || frames() > still + u64::from(RATE) / 2));
    let (underruns, _) = player.finish();
    assert_eq!(underruns, 0, "suspending is no underrun");
    d.stop();
    let (_, samples) = read_wav(&wav);
    let start = samples.iter().position(|&x| x.abs() > 0.01).unwrap();
    // The longest silent run after the tone began is the suspension: at least one second.
    let (mut run, mut longest) = (0usize, 0usize);
    for &x in &samples[start..] {
        run = if x == 0.0 { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    assert!(longest >= RATE as usize, "silent run of {longest} frames");
}

#[test]
fn admin_sets_the_default_source_and_bad_new_devices_are_refused() {
    let d = Daemon::start(CONFIG);
    let admin = d.admin("admin");
    ok(
        &admin,
        Request::SetDefaultSource {
            source: "mic2".into(),
        },
    );
    assert_eq!(
        admin.server_info().unwrap().default_source.as_deref(),
        Some("mic2")
    );
    assert!(device(&admin, "mic2").is_default);
    assert!(!device(&admin, "mic").is_default);
    let req = Request::SetDefaultSource {
        source: "speakers.monitor".into(),
    };
    assert_eq!(kind(admin.request(req, &[])).0, ErrorKind::Invalid);
    let req = Request::SetDefaultSource {
        source: "nonexistent".into(),
    };
    assert_eq!(kind(admin.request(req, &[])).0, ErrorKind::NotFound);
    ok(
        &admin,
        Request::SuspendDevice {
            device: "mic2".into(),
            suspend: true,
        },
    );
    assert!(device(&admin, "mic2").suspended);
    ok(
        &admin,
        Request::SetDefaultSink {
            sink: "tape".into(),
        },
    );
    assert_eq!(
        admin.server_info().unwrap().default_sink.as_deref(),
        Some("tape")
    );
    let new = |name: &str, backend: &str, path: Option<&str>, quantum: u32| NewDevice {
        name: name.into(),
        kind: DeviceKind::Sink,
        backend: backend.into(),
        path: path.map(Into::into),
        pcm: None,
        spec: SPEC,
        quantum,
    };
    for (bad, why) in [
        (new("x.monitor", "null", None, 256), "reserved"),
        (new("bad name", "null", None, 256), "not allowed"),
        (new("mic", "null", None, 256), "exists"),
        (new("speakers", "null", None, 256), "exists"),
        (new("f", "file", None, 256), "needs a path"),
        (new("f", "file", Some("rel.wav"), 256), "absolute"),
        (new("q", "null", None, 8), "quantum"),
        (new("w", "wave", None, 256), "unknown backend"),
    ] {
        let (k, msg) = kind(admin.request(Request::CreateDevice { device: bad }, &[]));
        assert_eq!(k, ErrorKind::Invalid, "{msg}");
        assert!(msg.contains(why), "{msg}");
    }
    let req = Request::RemoveDevice {
        name: "nonexistent".into(),
    };
    assert_eq!(kind(admin.request(req, &[])).0, ErrorKind::NotFound);
    assert_eq!(admin.sinks().unwrap().len(), 2);
}

#[test]
fn admin_creates_a_file_sink_at_run_time_and_removing_it_moves_its_streams() {
    let d = Daemon::start(CONFIG);
    let admin = d.admin("admin");
    let watcher = d.admin("watcher");
    watcher.request(Request::Subscribe, &[]).unwrap();
    let wav = d.dir.path().join("extra.wav");
    let extra = NewDevice {
        name: "extra".into(),
        kind: DeviceKind::Sink,
        backend: "file".into(),
        path: Some(wav.to_str().unwrap().into()),
        pcm: None,
        spec: SPEC,
        quantum: 256,
    };
    // A native client may neither create nor remove devices.
    let native = d.client("native");
    let (k, _) = kind(native.request(
        Request::CreateDevice {
            device: extra.clone(),
        },
        &[],
    ));
    assert_eq!(k, ErrorKind::Denied);
    ok(
        &admin,
        Request::CreateDevice {
            device: extra.clone(),
        },
    );
    let info = device(&admin, "extra");
    assert_eq!(
        (info.kind, info.backend.as_str()),
        (DeviceKind::Sink, "file")
    );
    assert!(!info.is_default);
    let (k, _) = kind(native.request(
        Request::RemoveDevice {
            name: "extra".into(),
        },
        &[],
    ));
    assert_eq!(k, ErrorKind::Denied);
    // The same name again is refused.
    let (k, _) = kind(admin.request(Request::CreateDevice { device: extra }, &[]));
    assert_eq!(k, ErrorKind::Invalid);

    let player = Player::start(d.client("player"), "extra", 1000.0, 0.3);
    let stream = || {
        admin
            .streams()
            .unwrap()
            .into_iter()
            .find(|s| s.id == player.id)
            .unwrap()
    };
    assert_eq!(stream().device, "extra");
    assert!(wait_for(LONG, || stream().frames > u64::from(RATE)));

    // The default sink and (later) the last sink cannot be removed.
    let (k, msg) = kind(admin.request(
        Request::RemoveDevice {
            name: "speakers".into(),
        },
        &[],
    ));
    assert_eq!(k, ErrorKind::Invalid);
    assert!(msg.contains("default sink"), "{msg}");

    ok(
        &admin,
        Request::RemoveDevice {
            name: "extra".into(),
        },
    );
    assert!(!admin.sinks().unwrap().iter().any(|s| s.name == "extra"));
    assert!(!admin
        .sources()
        .unwrap()
        .iter()
        .any(|s| s.name == "extra.monitor"));
    // The stream moved to the default sink and keeps playing there.
    assert!(wait_for(LONG, || stream().device == "speakers"));
    let f0 = stream().frames;
    assert!(wait_for(LONG, || stream().frames > f0 + u64::from(RATE) / 2));
    let req = Request::RemoveDevice {
        name: "extra".into(),
    };
    assert_eq!(kind(admin.request(req, &[])).0, ErrorKind::NotFound);
    // Subscribers heard of it.
    let mut events = Vec::new();
    assert!(wait_for(LONG, || {
        events.extend(watcher.take_events().unwrap());
        events.iter().any(|e| {
            matches!(e, soundgate_proto::wire::Event::DeviceRemoved { name } if name == "extra")
        })
    }));
    assert!(events.iter().any(|e| matches!(
        e,
        soundgate_proto::wire::Event::DeviceChanged(i) if i.name == "extra"
    )));

    // The WAV was finalised when the sink was removed and holds the tone.
    let (spec, samples) = read_wav(&wav);
    assert_eq!(spec.sample_rate, RATE);
    let start = samples.iter().position(|&x| x.abs() > 0.01).unwrap();
    assert!(
        samples.len() > start + RATE as usize,
        "{} samples",
        samples.len()
    );
    let mid = &samples[start + 4800..start + 4800 + 24_000];
    let (c, s) = tone_fit(mid, 1000.0, RATE);
    let amp = (c * c + s * s).sqrt();
    assert!((amp - 0.3).abs() < 0.01, "amplitude {amp}, expected 0.3");

    // The last sink stays.
    ok(
        &admin,
        Request::RemoveDevice {
            name: "tape".into(),
        },
    );
    let (k, msg) = kind(admin.request(
        Request::RemoveDevice {
            name: "speakers".into(),
        },
        &[],
    ));
    assert_eq!(k, ErrorKind::Invalid);
    assert!(msg.contains("last sink"), "{msg}");
    assert_eq!(device(&admin, "speakers").name, "speakers");
    let (_, frames) = player.finish();
    assert!(frames > u64::from(RATE) * 3 / 2, "{frames} frames");
}

#[test]
fn removing_a_source_ends_its_record_streams() {
    // This test binary may record from mic3 (a rule may name a device yet to be created).
    let me = common::exe_id(&std::env::current_exe().unwrap());
    let config = format!(
        "{CONFIG}\n[[rule]]\napp = \"{me}\"\naction = \"record\"\ntarget = \"mic3\"\n\
         decision = \"allow\"\n"
    );
    let d = Daemon::start(&config);
    let admin = d.admin("admin");
    let mic3 = NewDevice {
        name: "mic3".into(),
        kind: DeviceKind::Capture,
        backend: "null".into(),
        path: None,
        pcm: None,
        spec: SPEC,
        quantum: 256,
    };
    ok(&admin, Request::CreateDevice { device: mic3 });
    assert_eq!(device(&admin, "mic3").kind, DeviceKind::Capture);
    let recorder = d.client("recorder");
    let mut opts = soundgate_proto::client::RecordOptions::new("rec", SPEC);
    opts.device = Some("mic3".into());
    let rec = recorder.record(opts).unwrap();
    let id = rec.id();
    ok(
        &admin,
        Request::RemoveDevice {
            name: "mic3".into(),
        },
    );
    assert!(!admin.sources().unwrap().iter().any(|s| s.name == "mic3"));
    let mut events = Vec::new();
    assert!(wait_for(LONG, || {
        events.extend(recorder.take_events().unwrap());
        events.iter().any(|e| {
            matches!(e, soundgate_proto::wire::Event::StreamEnded { stream, .. } if *stream == id)
        })
    }));
    assert!(!admin.streams().unwrap().iter().any(|s| s.id == id));
    // The name is free again.
    let again = NewDevice {
        name: "mic3".into(),
        kind: DeviceKind::Capture,
        backend: "null".into(),
        path: None,
        pcm: None,
        spec: SPEC,
        quantum: 256,
    };
    ok(&admin, Request::CreateDevice { device: again });
    assert_eq!(device(&admin, "mic3").kind, DeviceKind::Capture);
}

/// A device added and removed at run time leaves nothing behind: after 20 rounds of
/// `CreateDevice` + a stream + `RemoveDevice`, the daemon holds no more fds than before (each
/// removed device used to keep its engine's notify eventfd) and no engine thread.
#[test]
fn removed_devices_keep_no_fd_and_no_thread() {
    let d = Daemon::start(CONFIG);
    let admin = d.admin("admin");
    let app = d.client("app");
    let pid = d.pid();
    let threads = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    // One round first, so lazily created things (a reaper task's registration) exist.
    let round = |i: usize| {
        let name = format!("churn{i}");
        ok(
            &admin,
            Request::CreateDevice {
                device: null_sink(&name),
            },
        );
        let mut opts = PlaybackOptions::new("churn", SPEC);
        opts.device = Some(name.clone());
        let mut p = app.playback(opts).unwrap();
        ok(&admin, Request::RemoveDevice { name });
        // Its stream moved to another sink and still takes audio there.
        p.write(&bytes(&[0.0; 256 * 2])).unwrap();
        drop(p);
    };
    round(0);
    let settled = |n: usize| wait_for(LONG, || common::fd_count(pid) <= n);
    std::thread::sleep(Duration::from_millis(200));
    let (fds0, threads0) = (common::fd_count(pid), threads());
    for i in 1..=20 {
        round(i);
    }
    assert!(
        settled(fds0),
        "fds after 20 removed devices: {} (baseline {fds0})",
        common::fd_count(pid)
    );
    assert!(
        wait_for(LONG, || threads() <= threads0),
        "threads after 20 removed devices: {} (baseline {threads0})",
        threads()
    );
}
