//! Snapshot tests of every `sgctl --json` document against a real daemon, so that a change
//! of shape is a visible decision. Ids, pids, counters, levels, times and temp paths are
//! normalised; the snapshots are `tests/snapshots/sgctl_json/*.json` and
//! `SOUNDGATE_BLESS=1 cargo test --test sgctl_json` rewrites them.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{bin, wait_for, Daemon};
use serde_json::Value;
use soundgate_proto::client::PlaybackOptions;
use soundgate_proto::{SampleFormat, StreamSpec};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CONFIG: &str = r#"
[prompts]
timeout_secs = 30

[[sink]]
name = "out"
backend = "null"

[[sink]]
name = "other"
backend = "null"

[[source]]
name = "mic"
backend = "null"

[[rule]]
action = "record"
target = "out.monitor"
decision = "ask"
"#;

/// Numbers that differ from run to run (ids, pids, counters, levels, times, sizes).
const VOLATILE: &[&str] = &[
    "id",
    "count",
    "engine_held",
    "engine_streams",
    "wakeups",
    "per_sec",
    "client",
    "pid",
    "stream",
    "prompt",
    "grant",
    "answered",
    "resolved",
    "request",
    "clients",
    "streams",
    "frames",
    "underruns",
    "peak",
    "rms",
    "uptime_secs",
    "rss_bytes",
    "cycle_mean_us",
    "cycle_p99_us",
    "cycle_max_us",
    "cycles",
    "load",
    "share",
    "budget_us",
    "overruns",
    "revoked",
    "expires_in_secs",
    "late_cycles",
    "xruns",
    "samples_per_sec",
    "budget",
];

/// String fields that hold times.
const TIMES: &[&str] = &[
    "time",
    "ts",
    "at",
    "since",
    "deadline_unix_ms",
    "first",
    "last",
];

fn normalise(v: &mut Value, dir: &str, bindir: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if VOLATILE.contains(&k.as_str()) && x.is_number() {
                    *x = Value::String("<n>".into());
                } else if TIMES.contains(&k.as_str()) && (x.is_string() || x.is_number()) {
                    *x = Value::String("<time>".into());
                } else {
                    normalise(x, dir, bindir);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| normalise(x, dir, bindir)),
        Value::String(s) => {
            // This test binary's name carries a build hash.
            let me = std::env::current_exe().unwrap();
            let me = std::fs::canonicalize(&me).unwrap_or(me);
            *s = s
                .replace(&*me.to_string_lossy(), "$TEST")
                .replace(bindir, "$BIN")
                .replace(dir, "$DIR");
            // "admin pid 4399 uid 0" (who made a grant).
            if let Some(at) = s.find("pid ") {
                let digits = s[at + 4..].bytes().take_while(u8::is_ascii_digit).count();
                if digits > 0 {
                    s.replace_range(at + 4..at + 4 + digits, "<n>");
                }
            }
        }
        _ => {}
    }
}

struct Snap<'a> {
    d: &'a Daemon,
    dir: String,
    bindir: String,
    failures: Vec<String>,
}

impl Snap<'_> {
    fn new(d: &Daemon) -> Snap<'_> {
        let bindir = bin("sgctl").parent().unwrap().to_string_lossy().to_string();
        let bindir = std::fs::canonicalize(&bindir)
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or(bindir);
        Snap {
            d,
            dir: d.dir.path().to_string_lossy().to_string(),
            bindir,
            failures: Vec::new(),
        }
    }

    fn sgctl(&self) -> Command {
        let mut c = Command::new(bin("sgctl"));
        c.arg("--json").arg("--admin").arg(self.d.admin_socket());
        c
    }

    /// Runs `sgctl --json ARGS` and checks its single document.
    fn doc(&mut self, name: &str, args: &[&str]) -> Value {
        let out = self.sgctl().args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "sgctl --json {args:?}: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("sgctl --json {args:?}: {e}: {text}"));
        self.check(name, std::slice::from_ref(&v));
        v
    }

    /// Checks JSON documents (one, or the lines of a streaming command) against a snapshot.
    fn check(&mut self, name: &str, docs: &[Value]) {
        for v in docs {
            assert_eq!(v["schema_version"], 1, "{name}: {v}");
        }
        let mut docs = docs.to_vec();
        for v in &mut docs {
            normalise(v, &self.dir, &self.bindir);
        }
        let text = docs
            .iter()
            .map(|v| serde_json::to_string_pretty(v).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots/sgctl_json")
            .join(format!("{name}.json"));
        if std::env::var_os("SOUNDGATE_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != text {
            self.failures.push(format!(
                "{name}: snapshot {} differs (SOUNDGATE_BLESS=1 rewrites it):\n--- committed\n{committed}\n--- now\n{text}",
                path.display()
            ));
        }
    }
}

/// Lines of a child's standard output, on a thread.
fn lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
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

fn next_json(rx: &mpsc::Receiver<String>, what: &str) -> Value {
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("no {what} line: {e}"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
}

/// Records out.monitor with sgcat in the background (it asks for consent).
fn recorder(d: &Daemon) -> std::process::Child {
    d.sgcat()
        .args([
            "-r",
            "--device",
            "out.monitor",
            "--duration",
            "0.2",
            "--name",
            "rec",
        ])
        .arg(d.path("rec.wav"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn every_sgctl_json_document_matches_its_snapshot() {
    let d = Daemon::start(CONFIG);
    let mut s = Snap::new(&d);
    let c = d.client("player");
    let mut opts = PlaybackOptions::new(
        "music",
        StreamSpec {
            format: SampleFormat::F32Le,
            rate: 48_000,
            channels: 2,
        },
    );
    opts.device = Some("out".into());
    let p = c.playback(opts).unwrap();
    let id = p.id().to_string();
    let client = format!("client:{}", c.client_id());

    s.doc("status", &["status"]);
    let streams = s.doc("ls_streams", &["ls", "streams"]);
    // Lowercase values and the owner on each stream entry.
    let entry = &streams["streams"][0];
    assert_eq!(entry["direction"], "playback");
    assert_eq!(entry["spec"]["format"], "f32le");
    assert_eq!(
        entry["app_id"],
        common::exe_id(&std::env::current_exe().unwrap())
    );
    assert_eq!(entry["pid"], std::process::id());
    assert_eq!(entry["uid"], 0);
    assert_eq!(entry["user"], "root");
    assert_eq!(entry["label"], "player");
    let sinks = s.doc("ls_sinks", &["ls", "sinks"]);
    assert_eq!(sinks["sinks"][0]["kind"], "sink");
    s.doc("ls_sources", &["ls", "sources"]);
    s.doc("ls_clients", &["ls", "clients"]);
    s.doc("ls_samples", &["ls", "samples"]);
    s.doc("info_stream", &["info", &id]);
    s.doc("info_client", &["info", &client]);
    let dev = s.doc("info_device", &["info", "out"]);
    assert_eq!(dev["device"]["state"], "running");
    s.doc("volume_stream", &["volume", &id, "50%"]);
    s.doc("volume_device", &["volume", "out", "80%"]);
    s.doc("mute_stream", &["mute", &id, "on"]);
    s.doc("mute_device", &["mute", "out", "off"]);
    s.doc("move", &["move", &id, "other"]);
    s.doc("default", &["default", "sink", "other"]);
    s.doc("suspend", &["suspend", "out"]);
    s.doc("resume", &["suspend", "out", "off"]);
    let wav = d.path("extra.wav");
    s.doc(
        "sink_add",
        &[
            "sink",
            "add",
            "extra",
            "--backend",
            "file",
            "--path",
            wav.to_str().unwrap(),
        ],
    );
    s.doc("sink_rm", &["sink", "rm", "extra"]);
    s.doc(
        "source_add",
        &["source", "add", "mic2", "--backend", "null"],
    );
    s.doc("source_rm", &["source", "rm", "mic2"]);
    let g = s.doc(
        "grant",
        &[
            "grant",
            "exe:/usr/bin/obs",
            "record",
            "--uid",
            "1000",
            "--target",
            "out.monitor",
        ],
    );
    s.doc("ls_grants", &["ls", "grants"]);
    let gid = g["grant"]["id"].as_u64().unwrap().to_string();
    s.doc("revoke", &["revoke", &gid]);
    s.doc("stats", &["stats"]);
    // The volume and mute set above on `out` are remembered for this test's app.
    let me = common::exe_id(&std::env::current_exe().unwrap());
    let r = s.doc("restore_list", &["restore", "list"]);
    assert_eq!(r["settings"][0]["app_id"], me.as_str(), "{r}");
    assert_eq!(r["settings"][0]["muted"], true, "{r}");
    s.doc(
        "restore_forget",
        &["restore", "forget", &me, "--device", "out"],
    );
    s.doc("kill_stream", &["kill", &id]);
    s.doc("kill_client", &["kill", &client]);
    drop(p);
    drop(c);

    // A prompt agent that answers from standard input, a recorder that asks: `prompts`
    // lists the pending prompt, `answer` settles it, and the agent's lines are JSON too.
    let mut agent = s
        .sgctl()
        .arg("agent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let agent_lines = lines(&mut agent);
    // The recorder is refused at once until the agent has subscribed; retry until it waits.
    let mut rec = recorder(&d);
    let pending = wait_for(Duration::from_secs(30), || {
        if let Ok(Some(_)) = rec.try_wait() {
            rec = recorder(&d);
        }
        let out = s.sgctl().arg("prompts").output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["prompts"].as_array().is_some_and(|a| !a.is_empty())
    });
    assert!(pending, "no prompt was raised:\n{}", d.log());
    let prompt_line = next_json(&agent_lines, "agent prompt");
    let prompts = s.doc("prompts", &["prompts"]);
    let pid = prompts["prompts"][0]["id"].as_u64().unwrap().to_string();
    s.doc("answer", &["answer", &pid, "allow", "--once"]);
    // (This agent waits for its own answer on standard input; `answer` settled the prompt.)
    s.check("agent", &[prompt_line]);
    drop(agent.stdin.take().map(|mut i| i.flush()));
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(rec.wait().unwrap().success(), "{}", d.log());

    // watch: a stream appears, changes and goes.
    let mut watch = s
        .sgctl()
        .arg("watch")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let watch_lines = lines(&mut watch);
    let subscribed = wait_for(Duration::from_secs(30), || {
        drop(d.client("probe"));
        matches!(watch_lines.recv_timeout(Duration::from_millis(200)), Ok(l) if l.contains("client_added"))
    });
    assert!(subscribed);
    while watch_lines.recv_timeout(Duration::from_millis(300)).is_ok() {}
    let c = d.client("watched");
    let mut opts = PlaybackOptions::new(
        "tune",
        StreamSpec {
            format: SampleFormat::S16Le,
            rate: 48_000,
            channels: 2,
        },
    );
    opts.device = Some("out".into());
    let p = c.playback(opts).unwrap();
    p.set_volume(0.25).unwrap();
    p.close().unwrap();
    let mut events = Vec::new();
    for _ in 0..20 {
        let v = next_json(&watch_lines, "watch");
        // Underrun events depend on timing, and decision events reach subscribers on the
        // core's 50 ms tick, so where they fall among the stream events does too (their shape
        // is the audit snapshot's); the shape and order of the rest is fixed.
        if v["event"] == "underrun" || v["event"] == "decision" {
            continue;
        }
        let last = v["event"] == "stream_removed";
        events.push(v);
        if last {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let added = events
        .iter()
        .find(|v| v["event"] == "stream_added")
        .unwrap();
    assert_eq!(added["data"]["label"], "watched", "{added}");
    assert_eq!(added["data"]["direction"], "playback");
    assert_eq!(added["data"]["spec"]["format"], "s16le");
    s.check("watch", &events);

    let audit = s.doc("audit", &["audit", "-n", "3"]);
    assert_eq!(audit["audit"].as_array().unwrap().len(), 3);

    assert!(s.failures.is_empty(), "{}", s.failures.join("\n\n"));
}
