#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Client churn (issue 14, item 3), the short CI form: a few hundred client processes of the
//! churn driver `sg-churn` connect, play, record, ask, upload, subscribe, attack, and are
//! SIGKILLed at random points (before the Hello, after it, mid-write, while parked on a
//! prompt); pacat/paplay too when installed. Afterwards the daemon's fd count, memfd (ring)
//! mappings, registry clients/streams/samples/prompts and engine streams are back at their
//! baseline: the driver checks that, and this test checks fds, mappings and counts again
//! itself. The long form (≥ 10 000 clients, release build) is bench/churn.sh.
//!
//! `SOUNDGATE_CHURN_CLIENTS` changes the number of clients, `SOUNDGATE_SEED` replays a run.

mod common;

use common::{bin, exe_id, fd_count, maps_with, wait_for, Daemon};
use soundgate_proto::wire::{Reply, Request};
use std::process::Command;
use std::time::Duration;

fn config() -> String {
    let churn = exe_id(&bin("sg-churn"));
    format!(
        r#"
[prompts]
timeout_secs = 5

[[sink]]
name = "speakers"
backend = "null"
format = "s16le"
rate = 48000
channels = 2

[[sink]]
name = "aux"
backend = "null"

[[rule]]
app = "{churn}"
action = "record"
target = "speakers.monitor"
decision = "allow"

[[rule]]
app = "{churn}"
action = "record"
target = "aux.monitor"
decision = "ask"
"#
    )
}

/// (registry clients, registry streams, engine streams over all devices), as an admin sees
/// them; the asking connection itself is one of the clients.
fn registry(daemon: &Daemon) -> (u32, u32, u32) {
    let admin = daemon.admin("check");
    let Reply::Stats(s) = admin.request(Request::Stats, &[]).unwrap().0 else {
        panic!("no stats")
    };
    let engine = s
        .devices
        .iter()
        .map(|d| d.engine_streams.max(d.engine_held))
        .sum();
    (s.clients, s.streams, engine)
}

/// Killed and exited counts of the driver's table row for `scenario` ending in `phase`.
fn row(out: &str, scenario: &str, phase: &str) -> (usize, usize) {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[0] == scenario && f[1] == phase)
                .then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .next()
        .unwrap_or((0, 0))
}

#[test]
fn churned_clients_leave_nothing_behind() {
    let mut daemon = Daemon::start(&config());
    let pid = daemon.pid();
    // Warm up what the daemon opens once and keeps (the audit log, first decisions), so the
    // baseline is the steady state, not the fresh one.
    let warm = Command::new(bin("sg-churn"))
        .arg("--server")
        .arg(daemon.socket())
        .arg("--admin")
        .arg(daemon.admin_socket())
        .args([
            "--clients",
            "20",
            "--concurrency",
            "4",
            "--no-check",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(warm.status.success(), "{warm:?}");
    assert!(wait_for(Duration::from_secs(30), || registry(&daemon) == (1, 0, 0)));
    let fds = fd_count(pid);
    let rings = maps_with(pid, "memfd:");

    let clients: u64 = std::env::var("SOUNDGATE_CHURN_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let mut cmd = Command::new(bin("sg-churn"));
    cmd.arg("--server")
        .arg(daemon.socket())
        .arg("--admin")
        .arg(daemon.admin_socket())
        .arg("--pulse")
        .arg(daemon.runtime.join("pulse/native"))
        .args(["--clients", &clients.to_string()])
        .args(["--concurrency", "16", "--hostile", "--agent"]);
    if let Ok(seed) = std::env::var("SOUNDGATE_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let run = cmd.output().unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    println!("{out}");
    assert!(
        run.status.success(),
        "sg-churn: {}\n{out}\n{}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr),
        daemon.log()
    );
    assert!(out.contains("result: baseline"), "{out}");

    // The run really went through the phases it is meant to kill in.
    for (scenario, phase) in [
        ("pre-hello", "connected"),
        ("mid-handshake", "hello-sent"),
        ("play", "playing"),
        ("record", "recording"),
        ("ask", "parked"),
        ("upload", "uploaded"),
        ("subscribe", "subscribed"),
    ] {
        let (killed, _) = row(&out, scenario, phase);
        assert!(
            killed > 0,
            "no {scenario} client was killed at {phase}:\n{out}"
        );
    }

    // And independently of the driver's own check.
    assert!(daemon.alive(), "the daemon died:\n{}", daemon.log());
    assert!(
        wait_for(Duration::from_secs(30), || fd_count(pid) <= fds
            && maps_with(pid, "memfd:") == rings
            && registry(&daemon) == (1, 0, 0)),
        "fds {} (baseline {fds}), ring mappings {} (baseline {rings}), registry {:?}",
        fd_count(pid),
        maps_with(pid, "memfd:"),
        registry(&daemon)
    );
    // It still serves.
    let c = daemon.client("after");
    assert!(!c.sinks().unwrap().is_empty());
}
