//! Idle suspend end to end (issue 12, item 2): a daemon whose sink has carried no stream for
//! `[engine] idle_suspend_secs` stops that sink's clock — its engine cycle counter stops, the
//! daemon burns (next to) no CPU, `sgctl ls sinks` shows it `idle` — and the next stream
//! starts it again and plays.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{bin, wait_for, Daemon};
use serde_json::Value;
use soundgate_proto::client::PlaybackOptions;
use soundgate_proto::wire::DeviceState;
use soundgate_proto::{SampleFormat, StreamSpec};
use std::process::Command;
use std::time::Duration;

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::S16Le,
    rate: 48_000,
    channels: 2,
};

const CONFIG: &str = r#"
[engine]
idle_suspend_secs = 1

[[sink]]
name = "out"
backend = "null"
quantum = 256
"#;

fn sgctl(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new(bin("sgctl"))
        .arg("--admin")
        .arg(d.admin_socket())
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "sgctl {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn cycles(d: &Daemon) -> u64 {
    let v: Value = serde_json::from_str(&sgctl(d, &["--json", "stats"])).unwrap();
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "out")
        .unwrap()["cycles"]
        .as_u64()
        .unwrap()
}

/// utime + stime of the whole process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn state(d: &Daemon) -> DeviceState {
    let c = d.client("probe");
    c.sinks()
        .unwrap()
        .into_iter()
        .find(|s| s.name == "out")
        .unwrap()
        .state
}

#[test]
fn an_idle_sink_stops_its_clock_and_the_next_stream_plays() {
    let d = Daemon::start(CONFIG);
    assert!(
        wait_for(Duration::from_secs(20), || state(&d) == DeviceState::Idle),
        "the sink never went idle"
    );
    let listing = sgctl(&d, &["ls", "sinks"]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("out") && l.contains("idle")),
        "{listing}"
    );
    // The clock is stopped: no engine cycle runs, and the daemon uses next to no CPU (a
    // generous bound: 0.2 s of CPU in 2 s; a running null sink costs a few ms, so this only
    // catches a busy loop, not a timer — the cycle counter catches that).
    let (c0, t0) = (cycles(&d), cpu_ticks(d.pid()));
    std::thread::sleep(Duration::from_secs(2));
    let (c1, t1) = (cycles(&d), cpu_ticks(d.pid()));
    assert_eq!(c1, c0, "an idle sink ran engine cycles");
    assert!(t1 - t0 <= 20, "idle daemon used {} ticks in 2 s", t1 - t0);

    // A new stream starts the clock again and is played.
    let c = d.client("player");
    let mut opts = PlaybackOptions::new("music", SPEC);
    opts.device = Some("out".into());
    let mut p = c.playback(opts).unwrap();
    // 0.1 s of a stereo sawtooth, s16.
    let tone: Vec<u8> = (0..4800u32)
        .flat_map(|i| {
            let v = (((i % 48) as i16) - 24) * 500;
            let b = v.to_le_bytes();
            [b[0], b[1], b[0], b[1]]
        })
        .collect();
    p.write(&tone).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || p.info().unwrap().frames > 0),
        "the stream was not played after idle"
    );
    assert_eq!(state(&d), DeviceState::Running);
    assert!(cycles(&d) > c1);
    // Half a second more than any ring holds: the writes wait (on their own timers, the
    // server's wake-up is only a safety net: see tests/wakeups.rs). The drain right after,
    // with the ring still full, asks the server to wake it once the ring is empty: `sgctl
    // stats` shows that stream's wake-ups (issue 12, item 7).
    for _ in 0..5 {
        p.write(&tone).unwrap();
    }
    p.drain().unwrap();
    let v: Value = serde_json::from_str(&sgctl(&d, &["--json", "stats"])).unwrap();
    let w = v["stream_wakeups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["stream"] == p.id())
        .cloned()
        .unwrap();
    assert_eq!(w["device"], "out");
    assert!(w["wakeups"].as_u64().unwrap() > 0, "{w}");
    assert!(w["per_sec"].as_f64().unwrap() > 0.0, "{w}");
    let human = sgctl(&d, &["stats"]);
    assert!(human.contains("WAKEUPS/S"), "{human}");
    p.close().unwrap();
    // And once it is gone the sink idles again.
    assert!(
        wait_for(Duration::from_secs(20), || state(&d) == DeviceState::Idle),
        "the sink did not idle again"
    );
}

/// Voluntary context switches of every thread of `pid`, by thread id.
fn switches(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap();
        // A thread may exit between the listing and the read: skip it.
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        let n = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .unwrap();
        out.insert(t.file_name().to_string_lossy().into_owned(), n);
    }
    out
}

/// Issue 12, item 2: once its sinks are idle and no stream exists, the daemon makes no
/// periodic wake-up at all — no housekeeping tick, no meter timer, no engine clock — so none
/// of its threads is scheduled. Counted with the kernel's voluntary context switches of every
/// thread over 2 s: the old 50 ms tick alone made 40 there. A few are allowed for one-off
/// events (a runtime thread retiring).
#[test]
fn an_idle_daemon_makes_no_periodic_wake_ups() {
    let d = Daemon::start(CONFIG);
    assert!(
        wait_for(Duration::from_secs(20), || state(&d) == DeviceState::Idle),
        "the sink never went idle"
    );
    // A stream comes and goes (the tick runs while it exists) ...
    {
        let c = d.client("player");
        let mut opts = PlaybackOptions::new("blip", SPEC);
        opts.device = Some("out".into());
        let mut p = c.playback(opts).unwrap();
        p.write(&[0u8; 4 * 4800]).unwrap();
        p.drain().unwrap();
        p.close().unwrap();
    }
    // ... and once the sink idles again, everything sleeps.
    assert!(
        wait_for(Duration::from_secs(20), || state(&d) == DeviceState::Idle),
        "the sink did not idle again"
    );
    // The probes' allowed decisions are gathered for the audit log's coalescing window (2 s)
    // and the tick runs until it hands them out: let that pass.
    std::thread::sleep(Duration::from_secs(3));
    let before = switches(d.pid());
    std::thread::sleep(Duration::from_secs(2));
    let after = switches(d.pid());
    let woke: u64 = after
        .iter()
        .filter_map(|(tid, n)| before.get(tid).map(|b| n.saturating_sub(*b)))
        .sum();
    assert!(
        woke <= 3,
        "an idle daemon's threads woke {woke} times in 2 s: {before:?} -> {after:?}"
    );
}
