//! `sgctl` end to end: the real binary against a real daemon, every subcommand in human and
//! `--json` form, checking its effect on the server.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{bin, wait_for, Daemon};
use serde_json::Value;
use soundgate_proto::client::{Client, PlaybackOptions};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

const CONFIG: &str = r#"
[prompts]
timeout_secs = 20

[[sink]]
name = "out"
backend = "null"

[[sink]]
name = "other"
backend = "null"

[[rule]]
action = "record"
target = "out.monitor"
decision = "ask"
"#;

/// One sgctl run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn sgctl_cmd(d: &Daemon) -> Command {
    let mut c = Command::new(bin("sgctl"));
    c.arg("--admin").arg(d.admin_socket());
    c
}

fn run(d: &Daemon, args: &[&str]) -> Run {
    let out = sgctl_cmd(d).args(args).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs, expects success, returns standard output.
fn ok(d: &Daemon, args: &[&str]) -> String {
    let r = run(d, args);
    assert_eq!(
        r.code, 0,
        "sgctl {args:?} failed: {}\n{}",
        r.stderr, r.stdout
    );
    assert!(r.stderr.is_empty(), "sgctl {args:?} wrote {}", r.stderr);
    r.stdout
}

/// Runs with `--json`, expects success and one JSON document.
fn json(d: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ok(d, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("sgctl {args:?}: {e}: {out}"))
}

/// Runs, expects failure with `code` and one `sgctl: …` line.
fn fails(d: &Daemon, args: &[&str], code: i32) -> String {
    let r = run(d, args);
    assert_eq!(r.code, code, "sgctl {args:?}: {}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.starts_with("sgctl: ") && r.stderr.trim_end().lines().count() == 1,
        "one error line expected: {:?}",
        r.stderr
    );
    r.stderr
}

fn stream_json(d: &Daemon, id: u32) -> Value {
    json(d, &["info", &id.to_string()])["stream"].clone()
}

fn player(d: &Daemon, name: &str) -> (Client, soundgate_proto::client::Playback) {
    let c = d.client(name);
    let mut opts = PlaybackOptions::new("music", SPEC);
    opts.device = Some("out".into());
    let p = c.playback(opts).unwrap();
    (c, p)
}

#[test]
fn lists_inspects_and_controls_streams() {
    let d = Daemon::start(CONFIG);
    let (client, playback) = player(&d, "player");
    let id = playback.id();
    let sid = id.to_string();
    let cid = client.client_id();

    // status
    let human = ok(&d, &["status"]);
    assert!(
        human.contains("default sink") && human.contains("out"),
        "{human}"
    );
    let v = json(&d, &["status"]);
    assert_eq!(v["server"]["default_sink"], "out");
    assert_eq!(v["streams"], 1);
    assert_eq!(v["sinks"], 2);
    assert!(v["clients"].as_u64().unwrap() >= 2, "{v}");

    // ls, every kind
    let human = ok(&d, &["ls"]);
    assert!(
        human.starts_with("ID") && human.contains("music"),
        "{human}"
    );
    let v = json(&d, &["ls", "streams"]);
    assert_eq!(v["streams"][0]["id"], id);
    assert_eq!(v["streams"][0]["client"], cid);
    let v = json(&d, &["ls", "clients"]);
    let me = v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == cid)
        .unwrap()
        .clone();
    assert_eq!(me["label"], "player");
    assert_eq!(me["app_source"], "exe");
    assert_eq!(me["admin"], false);
    assert_eq!(me["streams"], 1);
    assert!(ok(&d, &["ls", "clients"]).contains("\"player\""));
    let v = json(&d, &["ls", "sinks"]);
    let names: Vec<&str> = v["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["out", "other"]);
    assert!(ok(&d, &["ls", "sinks"]).contains("null"));
    let v = json(&d, &["ls", "sources"]);
    assert!(v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "out.monitor"));
    for what in ["grants", "prompts", "samples"] {
        let v = json(&d, &["ls", what]);
        assert!(v[what].is_array(), "{what}: {v}");
        assert!(ok(&d, &["ls", what]).starts_with(if what == "samples" { "OWNER" } else { "ID" }));
    }
    assert!(json(&d, &["prompts"])["prompts"].is_array());

    // info: stream, client, device
    assert!(ok(&d, &["info", &sid]).contains("music"));
    let v = json(&d, &["info", &format!("client:{cid}")]);
    assert_eq!(v["client"]["id"], cid);
    assert_eq!(v["streams"][0]["id"], id);
    assert!(ok(&d, &["info", &format!("client:{cid}")]).contains("unverified"));
    let v = json(&d, &["info", "out"]);
    assert_eq!(v["device"]["name"], "out");
    assert_eq!(v["device"]["kind"], "sink");
    assert!(ok(&d, &["info", "out.monitor"]).contains("monitor"));

    // volume: percent, relative percent, relative dB, linear
    ok(&d, &["volume", &sid, "50%"]);
    assert_eq!(stream_json(&d, id)["volume"], 0.5);
    let v = json(&d, &["volume", &sid, "+10%"]);
    assert_eq!(v["ok"], true);
    let vol = stream_json(&d, id)["volume"].as_f64().unwrap();
    assert!((vol - 0.6).abs() < 1e-6, "{vol}");
    ok(&d, &["volume", &sid, "-6dB"]);
    let vol = stream_json(&d, id)["volume"].as_f64().unwrap();
    assert!((vol - 0.6 * 0.501).abs() < 1e-3, "{vol}");
    ok(&d, &["volume", &sid, "0.7"]);
    let vol = stream_json(&d, id)["volume"].as_f64().unwrap();
    assert!((vol - 0.7).abs() < 1e-6, "{vol}");
    assert!((playback.info().unwrap().volume - 0.7).abs() < 1e-6);

    // mute on, toggle, off
    ok(&d, &["mute", &sid, "on"]);
    assert_eq!(stream_json(&d, id)["muted"], true);
    let v = json(&d, &["mute", &sid]);
    assert_eq!(v["muted"], false);
    assert_eq!(stream_json(&d, id)["muted"], false);
    ok(&d, &["mute", &sid, "on"]);
    ok(&d, &["mute", &sid, "off"]);
    assert!(!playback.info().unwrap().muted);

    // move, and default
    ok(&d, &["move", &sid, "other"]);
    assert!(wait_for(Duration::from_secs(10), || stream_json(&d, id)
        ["device"]
        == "other"));
    // A stream in transit answers "busy: try again" until it has landed.
    let mut moved = Value::Null;
    assert!(wait_for(Duration::from_secs(10), || {
        let r = run(&d, &["--json", "move", &sid, "out"]);
        if r.code == 0 {
            moved = serde_json::from_str(&r.stdout).unwrap();
        } else {
            assert!(r.stderr.starts_with("sgctl: busy"), "{}", r.stderr);
        }
        r.code == 0
    }));
    assert_eq!(moved["device"], "out");
    assert!(wait_for(Duration::from_secs(10), || stream_json(&d, id)
        ["device"]
        == "out"));
    ok(&d, &["default", "other"]);
    assert_eq!(json(&d, &["status"])["server"]["default_sink"], "other");
    let v = json(&d, &["default", "sink", "out"]);
    assert_eq!(v["default"]["name"], "out");
    assert_eq!(json(&d, &["status"])["server"]["default_sink"], "out");

    // stats: the player's stream costs something on a device that has run cycles
    let v = json(&d, &["stats"]);
    assert!(v["rss_bytes"].as_u64().unwrap() > 0);
    let out = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "out")
        .unwrap()
        .clone();
    assert!(out["cycles"].as_u64().unwrap() > 0, "{out}");
    assert!(out["cycle_mean_us"].as_f64().unwrap() > 0.0, "{out}");
    assert!(out["cycle_max_us"].as_f64().unwrap() >= out["cycle_p99_us"].as_f64().unwrap());
    let cost = v["client_cost"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == cid)
        .unwrap()
        .clone();
    assert!(cost["share"].as_f64().unwrap() > 0.0, "{v}");
    let human = ok(&d, &["stats"]);
    assert!(
        human.contains("MEAN_US") && human.contains("COST"),
        "{human}"
    );

    // kill a stream: gone for everyone
    let v = json(&d, &["kill", &sid]);
    assert_eq!(v["killed"]["stream"], id);
    let err = fails(&d, &["info", &sid], 4);
    assert!(err.contains("not found"), "{err}");
    fails(&d, &["volume", &sid, "50%"], 4);

    // kill a client: its connection closes
    ok(&d, &["kill", &format!("client:{cid}")]);
    let v = json(&d, &["ls", "clients"]);
    assert!(!v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == cid));
    assert!(
        wait_for(Duration::from_secs(10), || client.take_events().is_err()),
        "the killed client's connection is still open"
    );
    let err = fails(&d, &["kill", &format!("client:{cid}")], 4);
    assert!(err.contains("no client"), "{err}");
}

#[test]
fn grants_revoke_audit_and_completions() {
    let d = Daemon::start(CONFIG);
    let v = json(
        &d,
        &[
            "grant",
            "exe:/usr/bin/arecord",
            "record",
            "--uid",
            "1000",
            "--target",
            "out.monitor",
        ],
    );
    let id = v["grant"]["id"].as_u64().unwrap();
    assert_eq!(v["grant"]["scope"], "always");
    assert_eq!(v["grant"]["allow"], true);
    let human = ok(&d, &["grant", "exe:/usr/bin/spy", "record", "--deny"]);
    assert!(human.starts_with("grant "), "{human}");
    let grants = json(&d, &["ls", "grants"])["grants"].clone();
    let list = grants.as_array().unwrap();
    assert!(list
        .iter()
        .any(|g| g["id"] == id && g["uid"] == 1000 && g["target"] == "out.monitor"));
    assert!(list
        .iter()
        .any(|g| g["app_id"] == "exe:/usr/bin/spy" && g["allow"] == false && g["uid"] == 0));
    assert!(ok(&d, &["ls", "grants"]).contains("exe:/usr/bin/arecord"));
    // persisted
    let file = std::fs::read_to_string(d.state.join("grants.json")).unwrap();
    assert!(file.contains("exe:/usr/bin/arecord"), "{file}");
    let err = fails(&d, &["grant", "exe:/x", "fly"], 1);
    assert!(err.contains("unknown action"), "{err}");

    let v = json(&d, &["revoke", &id.to_string()]);
    assert_eq!(v["revoked"], id);
    let grants = json(&d, &["ls", "grants"])["grants"].clone();
    assert!(!grants.as_array().unwrap().iter().any(|g| g["id"] == id));
    fails(&d, &["revoke", &id.to_string()], 4);

    // the audit log saw the grant and the revocation
    let v = json(&d, &["audit", "-n", "50"]);
    let lines = v["audit"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 50);
    assert!(
        lines
            .iter()
            .any(|l| l["decision"] == "grant:allow" && l["object"] == "out.monitor"),
        "{v}"
    );
    assert!(lines.iter().any(|l| l["decision"] == "revoke"), "{v}");
    let v = json(&d, &["audit", "-n", "1"]);
    assert_eq!(v["audit"].as_array().unwrap().len(), 1);
    assert!(ok(&d, &["audit"]).contains("revoke"));

    // usage errors and local failures
    fails(&d, &["volume", "1", "loud"], 2);
    fails(&d, &["frobnicate"], 2);
    fails(&d, &["default", "speaker", "out"], 2);
    fails(&d, &["kill", "out"], 2);
    let r = Command::new(bin("sgctl"))
        .args(["--admin", "/nonexistent/admin", "status"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("/nonexistent/admin"));
    // $SOUNDGATE_ADMIN is used without --admin
    let r = Command::new(bin("sgctl"))
        .env("SOUNDGATE_ADMIN", d.admin_socket())
        .args(["--json", "status"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(0));

    for shell in ["bash", "zsh", "fish"] {
        let out = ok(&d, &["completions", shell]);
        assert!(out.contains("sgctl") && out.contains("volume"), "{shell}");
    }
}

/// A sink and a capture source.
const DEVICE_CONFIG: &str = r#"
[[sink]]
name = "out"
backend = "null"

[[sink]]
name = "other"
backend = "null"

[[source]]
name = "mic"
backend = "null"
"#;

/// Device administration through sgctl: volume, mute, suspend, default source.
#[test]
fn device_commands() {
    let d = Daemon::start(DEVICE_CONFIG);
    ok(&d, &["volume", "out", "70%"]);
    let v = json(&d, &["info", "out"]);
    assert!((v["device"]["volume"].as_f64().unwrap() - 0.7).abs() < 1e-6);
    ok(&d, &["mute", "out", "on"]);
    assert_eq!(json(&d, &["info", "out"])["device"]["muted"], true);
    ok(&d, &["mute", "out"]);
    assert_eq!(json(&d, &["info", "out"])["device"]["muted"], false);
    ok(&d, &["suspend", "other"]);
    assert_eq!(json(&d, &["info", "other"])["device"]["suspended"], true);
    ok(&d, &["suspend", "other", "off"]);
    assert_eq!(json(&d, &["info", "other"])["device"]["suspended"], false);
    ok(&d, &["default", "source", "mic"]);
    assert_eq!(json(&d, &["status"])["server"]["default_source"], "mic");
    let v = json(&d, &["default", "source", "mic"]);
    assert_eq!(v["default"]["kind"], "source");
    let err = fails(&d, &["default", "source", "out.monitor"], 1);
    assert!(err.contains("only a capture source"), "{err}");
    fails(&d, &["suspend", "nosuch"], 4);
    fails(&d, &["sink", "add", "f", "--backend", "file"], 2);
}

/// Devices created and removed at run time.
#[test]
fn sink_and_source_add_rm() {
    let d = Daemon::start(DEVICE_CONFIG);
    let wav = d.path("extra.wav");
    let v = json(
        &d,
        &[
            "sink",
            "add",
            "extra",
            "--backend",
            "file",
            "--path",
            wav.to_str().unwrap(),
            "--rate",
            "44100",
            "--channels",
            "1",
        ],
    );
    assert_eq!(v["ok"], true);
    let v = json(&d, &["info", "extra"]);
    assert_eq!(v["device"]["spec"]["rate"], 44100);
    ok(&d, &["source", "add", "mic2", "--backend", "null"]);
    assert!(json(&d, &["ls", "sources"])["sources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "mic2"));
    ok(&d, &["source", "rm", "mic2"]);
    ok(&d, &["sink", "rm", "extra"]);
    fails(&d, &["info", "extra"], 4);
}

/// Reads a child's standard output lines on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line satisfying `f`; all lines seen so far on failure.
fn expect_line(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, f: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = f(&line);
                seen.push(line);
                if hit {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    panic!("expected line not seen; got:\n{}", seen.join("\n"));
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn watch_sees_a_stream_appear_change_and_go() {
    let d = Daemon::start(CONFIG);
    let mut child = Kill(
        sgctl_cmd(&d)
            .args(["--json", "watch"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let rx = lines_of(&mut child.0);
    let mut seen = Vec::new();
    // Once it has subscribed, every new connection is announced to it.
    let subscribed = wait_for(Duration::from_secs(20), || {
        drop(d.client("probe"));
        seen.extend(rx.try_iter());
        seen.iter().any(|l| l.contains("\"client_added\""))
    });
    assert!(subscribed, "sgctl watch never subscribed: {seen:?}");
    let (client, playback) = player(&d, "watched");
    let id = playback.id();
    let is = |line: &str, event: &str| {
        let v: Value = serde_json::from_str(line).unwrap();
        v["event"] == event && (v["data"]["id"] == id || v["data"]["stream"] == id)
    };
    expect_line(&rx, &mut seen, |l| is(l, "stream_added"));
    playback.set_volume(0.25).unwrap();
    expect_line(&rx, &mut seen, |l| {
        is(l, "stream_changed")
            && serde_json::from_str::<Value>(l).unwrap()["data"]["volume"] == 0.25
    });
    playback.close().unwrap();
    expect_line(&rx, &mut seen, |l| is(l, "stream_removed"));
    drop(client);
}

#[test]
fn agent_answers_a_prompt_raised_by_sgcat() {
    let d = Daemon::start(CONFIG);
    let mut agent = Kill(
        sgctl_cmd(&d)
            .args(["agent", "--answer", "allow-once", "--count", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let rx = lines_of(&mut agent.0);
    let mut seen = Vec::new();
    expect_line(&rx, &mut seen, |l| l.starts_with("prompt agent ready"));

    let rec = d.path("rec.wav");
    let sgcat = d
        .sgcat()
        .args([
            "-r",
            "--device",
            "out.monitor",
            "--duration",
            "0.2",
            "--name",
            "Totally Legit Recorder",
        ])
        .arg(&rec)
        .output()
        .unwrap();
    assert!(
        sgcat.status.success(),
        "sgcat: {}",
        String::from_utf8_lossy(&sgcat.stderr)
    );
    assert!(rec.exists());
    let exe = common::exe_id(&bin("sgcat"));
    expect_line(&rx, &mut seen, |l| l.starts_with("answered prompt"));
    let text = seen.join("\n");
    assert!(text.contains("wants to record out.monitor"), "{text}");
    assert!(
        text.contains(&exe) && text.contains("established from exe"),
        "{text}"
    );
    assert!(
        text.contains("\"Totally Legit Recorder\" (declared by the app, unverified)"),
        "{text}"
    );
    assert!(text.contains("root (0)"), "{text}");
    // --count 1: it exits by itself, successfully.
    let done = wait_for(Duration::from_secs(10), || {
        matches!(agent.0.try_wait(), Ok(Some(_)))
    });
    assert!(done, "the agent did not exit after --count 1");
    assert_eq!(agent.0.wait().unwrap().code(), Some(0));
    // allow-once left no grant behind.
    let grants = json(&d, &["ls", "grants"])["grants"].clone();
    assert!(grants.as_array().unwrap().is_empty(), "{grants}");
}
