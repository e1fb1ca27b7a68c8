//! Reload (`SIGHUP`) and clean stop (`SIGTERM`): a changed config decides the next request
//! while streams keep playing; a broken one is refused with its `FILE:LINE:` and the old one
//! stays; sinks come and go without dropping a stream; on SIGTERM every client is told, the
//! grants survive and the sockets go.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{wait_for, Daemon};
use nix::sys::signal::Signal;
use soundgate_proto::client::{Client, Playback, PlaybackOptions};
use soundgate_proto::wire::{Reply, Request};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::time::{Duration, Instant};

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

const SINKS: &str = "[engine]\nrealtime_priority = \"off\"\n\n\
[[sink]]\nname = \"a\"\nbackend = \"null\"\ndefault = true\n\n\
[[sink]]\nname = \"b\"\nbackend = \"null\"\n";

const DENY_B: &str = "\n[[rule]]\naction = \"play\"\ntarget = \"b\"\ndecision = \"deny\"\n";

fn chunk() -> Vec<u8> {
    common::sine(440.0, 48_000, 480, 0.1, 2)
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect()
}

fn open(client: &Client, name: &str, sink: Option<&str>) -> Result<Playback, String> {
    let mut opts = PlaybackOptions::new(name, SPEC);
    opts.latency_ms = 300;
    opts.device = sink.map(str::to_string);
    client.playback(opts).map_err(|e| e.to_string())
}

/// The error of a request that must be refused.
fn refusal(r: Result<Playback, String>, what: &str) -> String {
    match r {
        Ok(_) => panic!("{what}: the stream was created"),
        Err(e) => e,
    }
}

/// Writes to `p` on its own thread until `stop` holds; the stream comes back at the end.
struct Player {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(Playback, Option<String>)>,
}

impl Player {
    fn start(mut p: Playback) -> Player {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let data = chunk();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Err(e) = p.write(&data) {
                    return (p, Some(e.to_string()));
                }
            }
            (p, None)
        });
        Player { stop, thread }
    }

    /// Waits for the writes to fail on their own; the error.
    fn failure(self, timeout: Duration) -> Option<String> {
        if !wait_for(timeout, || self.thread.is_finished()) {
            return None;
        }
        self.thread.join().unwrap().1
    }

    fn finish(self) -> (Playback, Option<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Whether `e` is the refusal of a stream on sink `b` (a sink a client may not play to is
/// not even shown to it: "no sink named b").
fn refused_b(e: &str) -> bool {
    e.contains("denied") || e.contains("no sink named b")
}

/// Rewrites the config file (keeping it private to its owner, as the daemon requires).
fn rewrite(d: &Daemon, text: &str) {
    std::fs::write(&d.config, text).unwrap();
}

/// Sends SIGHUP and waits for the reload's log line (the `n`th reload line of the log).
fn reload(d: &Daemon, n: usize) -> String {
    d.signal(Signal::SIGHUP);
    let lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("SIGHUP: "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_for(Duration::from_secs(10), || lines(&d.log()).len() >= n),
        "no reload line:\n{}",
        d.log()
    );
    lines(&d.log())[n - 1].clone()
}

#[test]
fn a_changed_rule_decides_the_next_request_while_a_stream_keeps_playing() {
    let d = Daemon::start(&format!("{SINKS}{DENY_B}"));
    let client = d.client("player");
    let player = Player::start(open(&client, "music", Some("a")).unwrap());
    let other = d.client("other");
    let refused = refusal(open(&other, "beep", Some("b")), "b is denied");
    assert!(refused_b(&refused), "{refused}");

    std::thread::sleep(Duration::from_millis(300));
    rewrite(&d, SINKS);
    let line = reload(&d, 1);
    assert!(line.contains("configuration reloaded"), "{line}");
    assert!(line.contains("0 rules"), "{line}");

    let allowed = open(&other, "beep", Some("b"));
    assert!(allowed.is_ok(), "the new rules did not apply: {allowed:?}");

    // And back: the deny is in force again for the next request.
    rewrite(&d, &format!("{SINKS}{DENY_B}"));
    reload(&d, 2);
    let refused = refusal(open(&other, "beep 2", Some("b")), "b is denied again");
    assert!(refused_b(&refused), "{refused}");

    std::thread::sleep(Duration::from_millis(300));
    let (p, error) = player.finish();
    assert_eq!(error, None, "the stream failed across the reloads");
    let info = p.info().unwrap();
    assert_eq!(info.underruns, 0, "the stream underran during the reloads");
    let frames = info.frames;
    let mut p = p;
    for _ in 0..100 {
        p.write(&chunk()).unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(5), || p.info().unwrap().frames > frames),
        "the stream does not play after the reloads"
    );
}

#[test]
fn a_broken_config_is_refused_with_its_line_and_the_old_rules_stay() {
    let d = Daemon::start(&format!("{SINKS}{DENY_B}"));
    let client = d.client("c");
    // One line of the new file is not TOML.
    let broken = format!("{SINKS}\n[[rule]]\naction = \"play\"\ntarget = = \"b\"\n");
    let bad_line = broken.lines().position(|l| l.contains("= =")).unwrap() + 1;
    rewrite(&d, &broken);
    let line = reload(&d, 1);
    let path = d.config.display().to_string();
    assert!(line.contains("reload refused"), "{line}");
    assert!(
        line.contains(&format!("{path}:{bad_line}:")),
        "no FILE:LINE in {line}"
    );
    let refused = refusal(open(&client, "beep", Some("b")), "the old deny stays");
    assert!(refused_b(&refused), "{refused}");
    assert!(open(&client, "beep", Some("a")).is_ok());
}

#[test]
fn sinks_added_and_removed_by_a_reload_and_the_stream_moves() {
    let d = Daemon::start(SINKS);
    let client = d.client("c");
    let p = open(&client, "on b", Some("b")).unwrap();
    let id = p.id();
    let player = Player::start(p);
    std::thread::sleep(Duration::from_millis(300));

    rewrite(
        &d,
        "[engine]\nrealtime_priority = \"off\"\n\n\
         [[sink]]\nname = \"a\"\nbackend = \"null\"\ndefault = true\n\n\
         [[sink]]\nname = \"c\"\nbackend = \"null\"\n",
    );
    let line = reload(&d, 1);
    assert!(line.contains("added: sink c"), "{line}");
    assert!(line.contains("removed: sink b"), "{line}");
    let names: Vec<String> = client
        .sinks()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(names.contains(&"c".to_string()), "{names:?}");
    assert!(!names.contains(&"b".to_string()), "{names:?}");

    assert!(
        wait_for(Duration::from_secs(5), || client
            .stream_info(id)
            .is_ok_and(|s| s.device == "a")),
        "the stream did not land on a: {:?}",
        client.stream_info(id)
    );
    let before = client.stream_info(id).unwrap().frames;
    assert!(
        wait_for(Duration::from_secs(5), || client
            .stream_info(id)
            .is_ok_and(|s| s.frames > before + 4800)),
        "the moved stream does not play"
    );
    let (_p, error) = player.finish();
    assert_eq!(error, None, "the stream was dropped");
    // The new sink takes streams.
    assert!(open(&client, "on c", Some("c")).is_ok());
}

#[test]
fn a_limits_reload_applies_to_the_next_request() {
    let limits = |n: u32| format!("[limits]\nstreams_per_client = {n}\n\n{SINKS}");
    let d = Daemon::start(&limits(2));
    let client = d.client("c");
    let mut held = vec![
        open(&client, "1", None).unwrap(),
        open(&client, "2", None).unwrap(),
    ];
    let e = refusal(open(&client, "3", None), "over the quota");
    assert!(e.contains("limit 2"), "{e}");

    rewrite(&d, &limits(3));
    let line = reload(&d, 1);
    assert!(line.contains("limits changed"), "{line}");
    held.push(open(&client, "3", None).unwrap());
    let e = refusal(open(&client, "4", None), "over the new quota");
    assert!(e.contains("limit 3"), "{e}");
    drop(held);
}

#[test]
fn sigterm_during_playback_ends_cleanly() {
    let d = Daemon::start(&format!("[pulse]\nenabled = true\n\n{SINKS}"));
    let admin = d.admin("admin");
    let req = Request::AddGrant {
        uid: 1234,
        app_id: "exe:/usr/bin/recorder".into(),
        action: "record".into(),
        target: Some("a.monitor".into()),
        allow: true,
    };
    let (reply, _) = admin.request(req, &[]).unwrap();
    assert!(matches!(reply, Reply::Grants(_)), "{reply:?}");

    // sgcat plays a long file; the library client plays too.
    let wav = d.path("long.wav");
    common::write_wav(
        &wav,
        48_000,
        2,
        &common::sine(440.0, 48_000, 48_000 * 30, 0.2, 2),
        true,
    );
    let mut sgcat = d
        .sgcat()
        .arg("-p")
        .arg(&wav)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = d.client("lib");
    let player = Player::start(open(&client, "music", None).unwrap());
    assert!(wait_for(Duration::from_secs(10), || client
        .streams()
        .is_ok_and(|s| s.len() == 1)));
    assert!(
        wait_for(Duration::from_secs(10), || d
            .log()
            .matches("client connected")
            .count()
            >= 4),
        "sgcat did not connect:\n{}",
        d.log()
    );
    std::thread::sleep(Duration::from_millis(300));

    let mut d = d;
    let started = Instant::now();
    d.signal(Signal::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(15))
        .expect("soundgated exits");
    assert!(status.success(), "exit status {status}:\n{}", d.log());
    assert!(started.elapsed() < Duration::from_secs(10));

    let error = player
        .failure(Duration::from_secs(10))
        .expect("the library client's stream ended");
    assert!(error.contains("shutting down"), "{error}");

    let sgcat_status = sgcat.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut sgcat.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("server is shutting down"),
        "sgcat said: {stderr}"
    );
    assert!(!sgcat_status.success(), "sgcat exited {sgcat_status}");

    let grants: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.state.join("grants.json")).unwrap()).unwrap();
    let list = grants["grants"].as_array().unwrap();
    assert!(
        list.iter()
            .any(|g| g["app_id"] == "exe:/usr/bin/recorder" && g["uid"] == 1234),
        "{grants}"
    );
    for s in ["native", "admin", "pulse/native"] {
        assert!(!d.runtime.join(s).exists(), "{s} socket left behind");
    }
    let log = d.log();
    assert!(log.contains("told the server is shutting down"), "{log}");
    assert!(log.contains("soundgated stopped"), "{log}");
}
