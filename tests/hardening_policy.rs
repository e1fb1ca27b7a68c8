//! Issue 10, items 4 (core half) and 5, as attacks through the real daemon: a request flood
//! cannot rotate an earlier denial out of the audit log; no config rule lets an app kill
//! another client or touch its streams; listings and events follow grants like requests do;
//! a sample cannot break into a sink held by an exclusive stream.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{bin, exe_id, wait_for, Daemon};
use soundgate_proto::client::{Client, ClientError, PlaybackOptions};
use soundgate_proto::wire::{DeviceKind, ErrorKind, Event, NewDevice, Reply, Request};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::process::Command;
use std::time::{Duration, Instant};

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

const LONG: Duration = Duration::from_secs(10);

fn null_sink(name: &str) -> String {
    format!(
        "[[sink]]\nname = \"{name}\"\nbackend = \"null\"\nrate = 48000\nchannels = 2\n\
         format = \"f32le\"\nquantum = 256\n"
    )
}

fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (ErrorKind, String) {
    match r {
        Err(ClientError::Server(e)) => (e.kind, e.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn record_monitor(
    c: &Client,
    source: &str,
) -> Result<(Reply, Vec<std::os::fd::OwnedFd>), ClientError> {
    c.request(
        Request::CreateRecord {
            name: "spy".into(),
            source: Some(source.into()),
            spec: SPEC,
            capacity_frames: 48_000,
        },
        &[],
    )
}

/// Every line of the audit log and its rotated files, parsed.
fn audit_lines(d: &Daemon) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for name in ["audit.log.1", "audit.log"] {
        let Ok(text) = std::fs::read_to_string(d.state.join(name)) else {
            continue;
        };
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()),
        );
    }
    out
}

#[test]
fn a_set_volume_flood_cannot_rotate_away_an_earlier_denied_monitor_attempt() {
    // A 16 KiB log and one rotated file: without coalescing, a few hundred requests would
    // rotate the denial out (a line is ~250 bytes).
    // Request pacing (the transport's flood defence) is opened wide here so that the flood
    // reaches the audit log at full speed: this test is about the log, not the pacing.
    let config = format!(
        "[audit]\nmax_bytes = 16384\nkeep = 1\n[limits]\nrequests_per_second = 1000000\nrequest_burst = 1000000\n{}",
        null_sink("out")
    );
    let d = Daemon::start(&config);
    let spy = d.client("spy");
    let (k, msg) = refused(record_monitor(&spy, "out.monitor"));
    assert_eq!(k, ErrorKind::Denied, "{msg}");

    let mut opts = PlaybackOptions::new("loop", SPEC);
    opts.corked = true;
    let p = spy.playback(opts).unwrap();
    let start = Instant::now();
    let mut requests = 0u64;
    while start.elapsed() < Duration::from_secs(10) {
        p.set_volume(if requests.is_multiple_of(4) {
            0.5
        } else {
            0.25
        })
        .unwrap();
        p.info().unwrap();
        requests += 2;
    }
    assert!(requests > 400, "only {requests} requests in 10 s");

    // The tail as an administrator sees it (flushed and synced by the daemon first).
    let admin = d.admin("admin");
    let tail = match admin
        .request(Request::AuditTail { lines: 100_000 }, &[])
        .unwrap()
        .0
    {
        Reply::Audit(lines) => lines,
        other => panic!("{other:?}"),
    };
    let tail: Vec<serde_json::Value> = tail
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines = audit_lines(&d);
    for (what, lines) in [("the tail", &tail), ("the files", &lines)] {
        let denial = lines.iter().find(|v| {
            v["decision"] == "deny"
                && v["action"] == "record"
                && v["object"] == "monitor out.monitor"
        });
        assert!(
            denial.is_some(),
            "{what} lost the denied monitor attempt after {requests} requests: {lines:#?}"
        );
        let gathered: u64 = lines
            .iter()
            .filter(|v| v["action"] == "control-stream" && v["decision"] == "allow")
            .map(|v| v["count"].as_u64().unwrap_or(1))
            .sum();
        let biggest = lines
            .iter()
            .filter_map(|v| v["count"].as_u64())
            .max()
            .unwrap_or(0);
        assert!(biggest > 1, "{what}: no coalesced line with a count");
        // Every request's decision is accounted for, in counts (the tail may start after the
        // first lines; the files hold them all unless rotation dropped some).
        if what == "the files" {
            assert!(
                gathered >= requests / 2,
                "only {gathered} of {requests} decisions counted"
            );
        }
    }
}

fn check_config(text: &str) -> (Option<i32>, String, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("soundgate.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin("soundgated"))
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code(), err, path)
}

#[test]
fn rules_giving_an_app_other_clients_are_refused_at_load() {
    for (rule, line, why) in [
        (
            "[[rule]]\naction = \"control-stream\"\ndecision = \"allow\"\n",
            10,
            "without a target",
        ),
        (
            "[[rule]]\napp = \"*\"\naction = \"kill-client\"\ndecision = \"allow\"\n",
            11,
            "kill-client reaches other clients",
        ),
        (
            "[[rule]]\naction = \"read-meters\"\ndecision = \"ask\"\n",
            10,
            "read-meters reaches other clients",
        ),
        (
            "[[rule]]\nuid = 1000\naction = \"use-admin-socket\"\ndecision = \"allow\"\n",
            11,
            "cannot make anyone an administrator",
        ),
    ] {
        let (code, err, path) = check_config(&format!("{}{rule}", null_sink("out")));
        assert_eq!(code, Some(1), "{rule}: {err}");
        let want = format!("{}:{line}: rule: ", path.display());
        assert!(err.contains(&want) && err.contains(why), "{rule}: {err}");
    }
    // Deny rules on them load: they restrict administrators.
    let (code, err, _) = check_config(&format!(
        "{}[[rule]]\nuid = 0\naction = \"kill-client\"\ndecision = \"deny\"\n",
        null_sink("out")
    ));
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn the_loosest_loadable_rules_still_let_no_app_kill_or_touch_another_client() {
    // Every rule the config accepts for these actions, as loose as it gets.
    let config = format!(
        "{}[[rule]]\naction = \"control-stream\"\ntarget = \"*\"\ndecision = \"allow\"\n\
         [[rule]]\naction = \"list-streams\"\ntarget = \"*\"\ndecision = \"allow\"\n",
        null_sink("out")
    );
    let d = Daemon::start(&config);
    let victim = d.client("victim");
    let mut opts = PlaybackOptions::new("victim", SPEC);
    opts.corked = true;
    let vp = victim.playback(opts).unwrap();
    let attacker = d.client("attacker");
    let (k, msg) = refused(attacker.request(
        Request::KillClient {
            client: victim.client_id(),
        },
        &[],
    ));
    assert_eq!(k, ErrorKind::Denied, "{msg}");
    for req in [
        Request::SetVolume {
            stream: vp.id(),
            volume: 0.0,
        },
        Request::DeleteStream { stream: vp.id() },
        Request::StreamInfo { stream: vp.id() },
    ] {
        let what = format!("{req:?}");
        let (k, msg) = refused(attacker.request(req, &[]));
        assert_eq!(k, ErrorKind::NotFound, "{what}: {msg}");
    }
    for req in [
        Request::ListClients,
        Request::Stats,
        Request::SubscribeMeters { hz: 10 },
    ] {
        let what = format!("{req:?}");
        let (k, msg) = refused(attacker.request(req, &[]));
        assert_eq!(k, ErrorKind::Denied, "{what}: {msg}");
    }
    assert!(attacker.streams().unwrap().is_empty());
    // The victim is untouched: connected, its stream at full volume.
    let info = vp.info().unwrap();
    assert_eq!(info.volume, 1.0);
    // The attacker's own streams follow the rule.
    let mut opts = PlaybackOptions::new("mine", SPEC);
    opts.corked = true;
    let mine = attacker.playback(opts).unwrap();
    mine.set_volume(0.5).unwrap();
    // An administrator may kill (the default), and the victim's connection ends.
    let admin = d.admin("admin");
    admin
        .request(
            Request::KillClient {
                client: victim.client_id(),
            },
            &[],
        )
        .unwrap();
    assert!(wait_for(LONG, || vp.info().is_err()));
}

fn new_null(name: &str) -> NewDevice {
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

fn add_grant(admin: &Client, target: &str) {
    let me = exe_id(&std::env::current_exe().unwrap());
    admin
        .request(
            Request::AddGrant {
                uid: nix::unistd::geteuid().as_raw(),
                app_id: me,
                action: "record".into(),
                target: Some(target.into()),
                allow: true,
            },
            &[],
        )
        .unwrap();
}

/// Removes sink `name` and returns the names in the `DeviceRemoved` events `watcher` got.
fn removed_names(admin: &Client, watcher: &Client, name: &str) -> Vec<String> {
    admin
        .request(Request::RemoveDevice { name: name.into() }, &[])
        .unwrap();
    let mut names = Vec::new();
    assert!(wait_for(LONG, || {
        for e in watcher.take_events().unwrap() {
            if let Event::DeviceRemoved { name } = e {
                names.push(name);
            }
        }
        names.iter().any(|n| n == name)
    }));
    // The monitor's event comes right after the sink's; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    for e in watcher.take_events().unwrap() {
        if let Event::DeviceRemoved { name } = e {
            names.push(name);
        }
    }
    names
}

#[test]
fn listings_and_events_honour_grants() {
    let d = Daemon::start(&null_sink("out"));
    let admin = d.admin("admin");
    let app = d.client("app");
    let names =
        |c: &Client| -> Vec<String> { c.sources().unwrap().into_iter().map(|s| s.name).collect() };
    assert!(!names(&app).contains(&"out.monitor".to_string()));
    assert_eq!(
        refused(record_monitor(&app, "out.monitor")).0,
        ErrorKind::Denied
    );
    add_grant(&admin, "out.monitor");
    // The request passes now, and the listing says so too.
    record_monitor(&app, "out.monitor").expect("granted recording");
    assert!(
        names(&app).contains(&"out.monitor".to_string()),
        "{:?}",
        names(&app)
    );

    // Events: without a grant the monitor's removal is not announced to the app; with one it is.
    app.request(Request::Subscribe, &[]).unwrap();
    for n in ["tmp1", "tmp2"] {
        admin
            .request(
                Request::CreateDevice {
                    device: new_null(n),
                },
                &[],
            )
            .unwrap();
    }
    let seen = removed_names(&admin, &app, "tmp1");
    assert!(!seen.contains(&"tmp1.monitor".to_string()), "{seen:?}");
    add_grant(&admin, "tmp2.monitor");
    let seen = removed_names(&admin, &app, "tmp2");
    assert!(seen.contains(&"tmp2.monitor".to_string()), "{seen:?}");
}

#[test]
fn a_sample_cannot_play_on_a_sink_held_by_an_exclusive_stream() {
    let config = format!(
        "{}{}[[rule]]\naction = \"passthrough\"\ntarget = \"hifi\"\ndecision = \"allow\"\n",
        null_sink("out"),
        null_sink("hifi")
    );
    let d = Daemon::start(&config);
    let holder = d.client("holder");
    let mut opts = PlaybackOptions::new("exclusive", SPEC);
    opts.device = Some("hifi".into());
    opts.exclusive = true;
    let held = holder.playback(opts).unwrap();
    assert!(held.info().unwrap().exclusive);

    let other = d.client("other");
    let pcm: Vec<u8> = (0..4800)
        .flat_map(|i| ((i as f32 * 0.05).sin() * 0.3).to_le_bytes())
        .collect();
    let mono = StreamSpec {
        channels: 1,
        ..SPEC
    };
    other.upload_sample("ding", mono, &pcm).unwrap();
    let (k, msg) = refused(other.play_sample("ding", Some("hifi"), 1.0));
    assert_eq!(k, ErrorKind::Busy, "{msg}");
    assert!(msg.contains("exclusive"), "{msg}");
    assert!(other.streams().unwrap().is_empty());
    // Elsewhere it plays; and the holder itself may still play samples on its own sink.
    other.play_sample("ding", Some("out"), 1.0).unwrap();
    holder.upload_sample("ding", mono, &pcm).unwrap();
    holder.play_sample("ding", Some("hifi"), 1.0).unwrap();
    // Once the exclusive stream is gone, the sink is open to everyone again.
    held.close().unwrap();
    other.play_sample("ding", Some("hifi"), 1.0).unwrap();
}
