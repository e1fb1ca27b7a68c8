//! Crash safety of the daemon's state: SIGKILL at random moments while grants are added,
//! answered (prompts) and revoked through the admin socket and the audit log is written.
//!
//! After each kill the test checks, before and after restarting the daemon on the same state
//! dir:
//! - `grants.json` parses and holds exactly the always-grants of a prefix of the changes: every
//!   acknowledged one, plus possibly the one in flight at the kill (which the daemon may have
//!   made durable without getting to say so), nothing else, nothing half-written;
//! - the restarted daemon serves, lists the same grants, and never reuses a grant id;
//! - every line of the audit log is one JSON object, except that the last line of the file may
//!   be a fragment with no newline (a write the kill cut short). Such a fragment is tolerated
//!   because the daemon ends it with a newline when it reopens the log, so the next record
//!   starts on its own line; the daemon's `AuditTail` returns the fragment as it is (sgctl
//!   shows a line that is not JSON raw), see `torn_audit_line_stays_alone`.
//!
//! `sigkill_while_changing_volumes_loses_nothing_acknowledged` does the same for the persisted
//! stream settings: a client of this test process and an administrator change the volume and
//! mute of its streams on two sinks (acknowledged = the `SetVolume`/`SetMute` reply arrived),
//! and after each kill `stream-settings.json` must parse and hold exactly the acknowledged
//! settings, or those plus the change in flight; a stream created after the restart starts
//! with them.
//!
//! CI runs a few dozen kills. The long form (the issue asks for at least 1000):
//! `cargo build --workspace && SOUNDGATE_LONG=1 cargo test --test crash_safety -- --nocapture`
//! (`SOUNDGATE_KILLS=N` sets the count; `SOUNDGATE_SEED=S` replays a run).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{wait_for, Daemon};
use soundgate_proto::client::{Client, ClientError, PlaybackOptions, RecordOptions};
use soundgate_proto::wire::{Event, GrantInfo, PromptAnswer, Reply, Request};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A null sink whose monitor asks for consent, with a prompt timeout longer than any round.
const CONFIG: &str = r#"
[prompts]
timeout_secs = 60

[[sink]]
name = "out"
backend = "null"

[[rule]]
action = "record"
target = "out.monitor"
decision = "ask"
"#;

/// Two null sinks, for the stream settings test (settings are per device).
const VOLUME_CONFIG: &str = r#"
[[sink]]
name = "out"
backend = "null"

[[sink]]
name = "out2"
backend = "null"
"#;

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

/// What identifies an always-grant: a newer grant with the same key replaces the older.
type Key = (u32, String, String, Option<String>);

/// The persisted always-grants the test expects: key → (allow, id if the test learnt it).
type Model = BTreeMap<Key, (bool, Option<u64>)>;

/// One change to the grants.
#[derive(Debug, Clone)]
enum Change {
    Add(Key, bool),
    Revoke(Key),
}

fn apply(model: &mut Model, change: &Change, id: Option<u64>) {
    match change {
        Change::Add(k, allow) => {
            model.insert(k.clone(), (*allow, id));
        }
        Change::Revoke(k) => {
            model.remove(k);
        }
    }
}

/// What the workload has told the checker: acknowledged changes, and the one in flight.
#[derive(Default)]
struct Journal {
    model: Model,
    in_flight: Option<Change>,
    acked: usize,
}

/// A small deterministic PRNG (xorshift64*), so a failing run can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn grants_of(admin: &Client) -> Result<Vec<GrantInfo>, ClientError> {
    match admin.request(Request::ListGrants, &[])?.0 {
        Reply::Grants(g) => Ok(g),
        r => panic!("ListGrants answered {r:?}"),
    }
}

fn key_of(g: &GrantInfo) -> Key {
    (g.uid, g.app_id.clone(), g.action.clone(), g.target.clone())
}

/// Runs changes against the daemon until it dies (or `stop` is set), recording each in the
/// journal before it is sent (in flight) and after it is acknowledged.
fn workload(
    d_native: std::path::PathBuf,
    d_admin: std::path::PathBuf,
    own_app: String,
    seed: u64,
    journal: Arc<Mutex<Journal>>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(seed | 1);
    let Ok(admin) = Client::connect(&d_admin, "crash-admin") else {
        return;
    };
    let Ok(agent) = Client::connect(&d_admin, "crash-agent") else {
        return;
    };
    if agent.request(Request::SubscribePrompts, &[]).is_err() {
        return;
    }
    let own_key: Key = (0, own_app, "record".into(), Some("out.monitor".into()));
    while !stop.load(Ordering::Relaxed) {
        let op = rng.below(10);
        let known: Vec<(Key, u64)> = {
            let j = journal.lock().unwrap();
            j.model
                .iter()
                .filter_map(|(k, (_, id))| id.map(|id| (k.clone(), id)))
                .collect()
        };
        if op < 4 {
            // An administrator adds a grant directly.
            let key: Key = (
                1000 + rng.below(3) as u32,
                format!("exe:/opt/crash/app-{}", rng.below(4)),
                "record".into(),
                if rng.below(2) == 0 {
                    Some("out.monitor".into())
                } else {
                    None
                },
            );
            let allow = rng.below(2) == 0;
            let change = Change::Add(key.clone(), allow);
            journal.lock().unwrap().in_flight = Some(change.clone());
            let req = Request::AddGrant {
                uid: key.0,
                app_id: key.1.clone(),
                action: key.2.clone(),
                target: key.3.clone(),
                allow,
            };
            let Ok((reply, _)) = admin.request(req, &[]) else {
                return;
            };
            let Reply::Grants(g) = reply else {
                panic!("AddGrant answered {reply:?}")
            };
            let mut j = journal.lock().unwrap();
            apply(&mut j.model, &change, Some(g[0].id));
            j.in_flight = None;
            j.acked += 1;
        } else if op < 7 && !known.is_empty() {
            // Revoke one of the grants in force.
            let (key, id) = known[rng.below(known.len() as u64) as usize].clone();
            let change = Change::Revoke(key);
            journal.lock().unwrap().in_flight = Some(change.clone());
            if admin
                .request(Request::RevokeGrant { grant: id }, &[])
                .is_err()
            {
                return;
            }
            let mut j = journal.lock().unwrap();
            apply(&mut j.model, &change, None);
            j.in_flight = None;
            j.acked += 1;
        } else {
            // This test process records from the monitor: decided at once by a grant of its
            // own, else a prompt the agent answers (an always answer is persisted).
            let has_own = journal.lock().unwrap().model.contains_key(&own_key);
            let native = d_native.clone();
            let recorder = std::thread::spawn(move || {
                let client = Client::connect(&native, "crash-recorder")?;
                let mut opts = RecordOptions::new("rec", SPEC);
                opts.device = Some("out.monitor".into());
                client.record(opts).map(drop)
            });
            if !has_own {
                let mut prompt = None;
                let seen = wait_for(Duration::from_secs(20), || {
                    match agent.take_events() {
                        Ok(evs) => {
                            for ev in evs {
                                if let Event::Prompt(p) = ev {
                                    prompt.get_or_insert(p.id);
                                }
                            }
                        }
                        Err(_) => return true,
                    }
                    prompt.is_some() || stop.load(Ordering::Relaxed)
                });
                let Some(prompt) = prompt.filter(|_| seen) else {
                    let _ = recorder.join();
                    return;
                };
                let (answer, change) = match rng.below(3) {
                    0 => (
                        PromptAnswer::AllowAlways,
                        Some(Change::Add(own_key.clone(), true)),
                    ),
                    1 => (
                        PromptAnswer::DenyAlways,
                        Some(Change::Add(own_key.clone(), false)),
                    ),
                    _ => (PromptAnswer::AllowOnce, None),
                };
                journal.lock().unwrap().in_flight = change.clone();
                if agent
                    .request(Request::AnswerPrompt { prompt, answer }, &[])
                    .is_err()
                {
                    let _ = recorder.join();
                    return;
                }
                {
                    let mut j = journal.lock().unwrap();
                    if let Some(c) = &change {
                        apply(&mut j.model, c, None);
                        j.acked += 1;
                    }
                    j.in_flight = None;
                }
                // Learn the new grant's id so that it can be revoked later.
                if change.is_some() {
                    let Ok(list) = grants_of(&admin) else {
                        let _ = recorder.join();
                        return;
                    };
                    let mut j = journal.lock().unwrap();
                    for g in list.iter().filter(|g| g.scope == "always") {
                        if let Some(e) = j.model.get_mut(&key_of(g)) {
                            e.1 = Some(g.id);
                        }
                    }
                }
            }
            let _ = recorder.join();
        }
    }
}

/// The always-grants in `grants.json`, checking that it parses and is well formed.
fn grants_file(state: &std::path::Path) -> BTreeMap<Key, (bool, u64)> {
    let path = state.join("grants.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return BTreeMap::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "grants.json does not parse after a kill ({e}):\n{}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(v["version"], 1, "{v}");
    let next_id = v["next_id"].as_u64().expect("next_id");
    let mut out = BTreeMap::new();
    for g in v["grants"].as_array().expect("grants array") {
        assert_eq!(
            g["scope"], "always",
            "only always-grants are persisted: {g}"
        );
        let id = g["id"].as_u64().expect("id");
        assert!(id < next_id, "grant id {id} not below next_id {next_id}");
        let key: Key = (
            g["uid"].as_u64().expect("uid") as u32,
            g["app_id"].as_str().expect("app_id").to_string(),
            g["action"].as_str().expect("action").to_string(),
            g["target"].as_str().map(str::to_string),
        );
        let allow = g["allow"].as_bool().expect("allow");
        assert!(
            out.insert(key.clone(), (allow, id)).is_none(),
            "two grants with one key: {key:?}"
        );
    }
    out
}

fn matches_model(file: &BTreeMap<Key, (bool, u64)>, model: &Model) -> bool {
    file.len() == model.len()
        && model.iter().all(|(k, (allow, id))| {
            file.get(k)
                .is_some_and(|(a, i)| a == allow && id.is_none_or(|id| id == *i))
        })
}

/// Checks every audit file: whole lines are JSON objects; a final fragment without a newline
/// is returned (the kill cut a write short). `allowed` are earlier fragments, which the daemon
/// has since ended with a newline and which stay as lines of their own.
fn check_audit(state: &std::path::Path, allowed: &[String]) -> Option<String> {
    let mut torn = None;
    let mut files = vec![state.join("audit.log")];
    for i in 1..10 {
        files.push(state.join(format!("audit.log.{i}")));
    }
    for path in files {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut lines: Vec<&str> = text.split('\n').collect();
        let last = lines.pop().unwrap_or("");
        for (n, line) in lines.iter().enumerate() {
            if allowed.iter().any(|a| a == line) {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "{}:{}: not a JSON line ({e}): {line:?}",
                    path.display(),
                    n + 1
                )
            });
            assert!(v.is_object() && v.get("decision").is_some(), "{line}");
        }
        if !last.is_empty() {
            assert!(
                path.ends_with("audit.log"),
                "a rotated file ends mid-line: {}",
                path.display()
            );
            torn = Some(last.to_string());
        }
    }
    torn
}

/// SIGKILLs the daemon and waits until it is dead (a zombie: every write it had in progress
/// has finished or never will), so the state files read next are final.
fn kill(d: &Daemon) {
    let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let dead = wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    });
    assert!(dead, "the daemon (pid {pid}) did not die of SIGKILL");
}

#[test]
fn sigkill_while_granting_loses_nothing_acknowledged() {
    let (kills, seed) = kills_and_seed("crash_safety");
    let mut rng = Rng(seed | 1);
    let own_app = common::exe_id(&std::env::current_exe().unwrap());
    let mut d = Daemon::start(CONFIG);
    let mut model = Model::new();
    let mut max_id = 0u64;
    let mut allowed_fragments: Vec<String> = Vec::new();
    let (mut total_acked, mut in_flight_landed, mut torn_tails) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    for round in 0..kills {
        let journal = Arc::new(Mutex::new(Journal {
            model: model.clone(),
            ..Journal::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (native, admin) = (d.socket(), d.admin_socket());
            let (journal, stop, app) = (journal.clone(), stop.clone(), own_app.clone());
            let s = rng.next();
            std::thread::spawn(move || workload(native, admin, app, s, journal, stop))
        };
        // Kill at a random moment: mostly within the first few changes, sometimes later.
        let delay = if rng.below(4) == 0 {
            rng.below(400)
        } else {
            rng.below(60)
        };
        std::thread::sleep(Duration::from_millis(delay));
        kill(&d);
        stop.store(true, Ordering::Relaxed);
        worker.join().expect("workload thread panicked");
        let j = journal.lock().unwrap();
        total_acked += j.acked;

        // The file as the kill left it: the acknowledged prefix, or that plus the in-flight one.
        let file = grants_file(&d.state);
        let mut after = j.model.clone();
        if let Some(c) = &j.in_flight {
            apply(&mut after, c, None);
        }
        let landed = if matches_model(&file, &j.model) {
            false
        } else if j.in_flight.is_some() && matches_model(&file, &after) {
            true
        } else {
            panic!(
                "round {round} (seed {seed}): grants.json is not a prefix of the changes\n\
                 file:     {file:?}\nacked:    {:?}\nin flight: {:?}",
                j.model, j.in_flight
            );
        };
        in_flight_landed += usize::from(landed);
        model = if landed { after } else { j.model.clone() };
        // Ids are now known for every grant in the file.
        for (k, (_, id)) in &file {
            if let Some(e) = model.get_mut(k) {
                e.1 = Some(*id);
            }
        }
        drop(j);
        for (_, id) in file.values() {
            max_id = max_id.max(*id);
        }
        if let Some(t) = check_audit(&d.state, &allowed_fragments) {
            torn_tails += 1;
            allowed_fragments.push(t);
        }

        // The daemon comes back on the same state, serves, and agrees with the file.
        d = d.restart();
        let admin = d.admin("crash-check");
        assert!(d.client("crash-probe").server_info().is_ok());
        let listed: BTreeMap<Key, (bool, u64)> = grants_of(&admin)
            .unwrap()
            .into_iter()
            .filter(|g| g.scope == "always")
            .map(|g| (key_of(&g), (g.allow, g.id)))
            .collect();
        assert_eq!(
            listed, file,
            "round {round}: the daemon lists other grants than its file"
        );
        check_audit(&d.state, &allowed_fragments);
        drop(admin);
        if round % 100 == 99 {
            eprintln!(
                "crash_safety: {} kills in {:.0?}, {total_acked} acknowledged changes",
                round + 1,
                started.elapsed()
            );
        }
    }
    // Ids are never reused: a grant added now gets one above every id seen.
    let admin = d.admin("crash-final");
    let (reply, _) = admin
        .request(
            Request::AddGrant {
                uid: 4242,
                app_id: "exe:/opt/crash/final".into(),
                action: "record".into(),
                target: None,
                allow: true,
            },
            &[],
        )
        .unwrap();
    let Reply::Grants(g) = reply else {
        panic!("{reply:?}")
    };
    assert!(
        g[0].id > max_id,
        "grant id {} reused (max seen {max_id})",
        g[0].id
    );
    eprintln!(
        "crash_safety: {kills} kills, {total_acked} acknowledged changes, \
         {in_flight_landed} in-flight changes made durable, {torn_tails} torn audit tails, \
         {:.0?}",
        started.elapsed()
    );
    assert!(
        total_acked > 0,
        "no change was acknowledged in any round: the test did not exercise anything"
    );
}

/// A torn last line (what a kill in the middle of an audit write leaves) stays a line of its
/// own: the daemon ends it with a newline when it opens the log, so the next record is whole,
/// and `AuditTail` returns the fragment as it is, between whole JSON lines.
#[test]
fn torn_audit_line_stays_alone() {
    let d = Daemon::start(CONFIG);
    let admin = d.admin("torn");
    let add = |app: &str| Request::AddGrant {
        uid: 7,
        app_id: app.into(),
        action: "record".into(),
        target: None,
        allow: true,
    };
    admin.request(add("exe:/opt/torn/before"), &[]).unwrap();
    drop(admin);
    let log = d.state.join("audit.log");
    // The audit writer thread puts the line on disk after the reply; kill once it is there.
    assert!(
        wait_for(Duration::from_secs(20), || std::fs::read(&log).is_ok_and(
            |b| b.ends_with(b"\n") && String::from_utf8_lossy(&b).contains("grant:allow")
        )),
        "the grant's audit line never reached the log: {:?}",
        std::fs::read_to_string(&log)
    );
    kill(&d);
    let fragment = r#"{"time":"2026-01-01T00:00:00.000Z","subject":{"cli"#;
    let mut bytes = std::fs::read(&log).unwrap();
    assert!(bytes.ends_with(b"\n"));
    bytes.extend_from_slice(fragment.as_bytes());
    std::fs::write(&log, &bytes).unwrap();

    let d = d.restart();
    let admin = d.admin("torn");
    admin.request(add("exe:/opt/torn/after"), &[]).unwrap();
    let tail = match admin
        .request(Request::AuditTail { lines: 50 }, &[])
        .unwrap()
        .0
    {
        Reply::Audit(l) => l,
        r => panic!("{r:?}"),
    };
    let at = tail
        .iter()
        .position(|l| l == fragment)
        .unwrap_or_else(|| panic!("the fragment is not a line of its own: {tail:#?}"));
    let later: Vec<&String> = tail[at + 1..].iter().collect();
    assert!(
        later
            .iter()
            .any(|l| l.contains("\"decision\":\"grant:allow\"")),
        "the record after the fragment is missing: {tail:#?}"
    );
    for l in tail.iter().filter(|l| *l != fragment) {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in {tail:#?}"));
        assert!(v.is_object());
    }
}

/// The sinks of [`VOLUME_CONFIG`].
const VOLUME_SINKS: [&str; 2] = ["out", "out2"];

/// The remembered (volume, muted) of this test process's app, per device.
type Levels = BTreeMap<String, (f32, bool)>;

/// Acknowledged settings, and the one in flight (device, new levels).
#[derive(Default)]
struct LevelJournal {
    model: Levels,
    in_flight: Option<(String, (f32, bool))>,
    acked: usize,
    /// Streams created mid-round whose initial levels were checked against the model.
    restored: usize,
}

fn kills_and_seed(name: &str) -> (usize, u64) {
    let long = std::env::var_os("SOUNDGATE_LONG").is_some();
    let kills: usize = std::env::var("SOUNDGATE_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if long { 1000 } else { 30 });
    let seed: u64 = std::env::var("SOUNDGATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{name}: {kills} kills, SOUNDGATE_SEED={seed}");
    (kills, seed)
}

/// A playback stream of this process on `device`, checked to start with the remembered levels.
fn level_stream(
    client: &Client,
    device: &str,
    expect: (f32, bool),
) -> Option<soundgate_proto::client::Playback> {
    let mut opts = PlaybackOptions::new("levels", SPEC);
    opts.device = Some(device.to_string());
    opts.corked = true;
    let p = client.playback(opts).ok()?;
    let info = p.info().ok()?;
    assert_eq!(
        (info.volume, info.muted),
        expect,
        "a new stream on {device} does not start with the remembered settings"
    );
    Some(p)
}

/// Changes the volume and mute of this process's streams until the daemon dies (or `stop`).
fn level_workload(
    d_native: std::path::PathBuf,
    d_admin: std::path::PathBuf,
    seed: u64,
    journal: Arc<Mutex<LevelJournal>>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(seed | 1);
    let Ok(client) = Client::connect(&d_native, "levels") else {
        return;
    };
    let Ok(admin) = Client::connect(&d_admin, "levels-admin") else {
        return;
    };
    let level = |dev: &str| {
        let j = journal.lock().unwrap();
        j.model.get(dev).copied().unwrap_or((1.0, false))
    };
    let mut streams = Vec::new();
    for dev in VOLUME_SINKS {
        let Some(p) = level_stream(&client, dev, level(dev)) else {
            return;
        };
        streams.push(p);
    }
    while !stop.load(Ordering::Relaxed) {
        let i = rng.below(VOLUME_SINKS.len() as u64) as usize;
        let dev = VOLUME_SINKS[i];
        let (volume, muted) = level(dev);
        let op = rng.below(10);
        if op == 9 {
            // A new stream of the app on this device starts with what is remembered.
            let old = streams.remove(i);
            if old.close().is_err() {
                return;
            }
            let Some(p) = level_stream(&client, dev, (volume, muted)) else {
                return;
            };
            streams.insert(i, p);
            journal.lock().unwrap().restored += 1;
            continue;
        }
        let stream = streams[i].id();
        let new_volume = (1 + rng.below(400)) as f32 / 100.0;
        let (req, new) = if op < 6 {
            let req = Request::SetVolume {
                stream,
                volume: new_volume,
            };
            (req, (new_volume, muted))
        } else {
            let req = Request::SetMute {
                stream,
                muted: !muted,
            };
            (req, (volume, !muted))
        };
        // The app itself, or an administrator (`sgctl volume`), makes the change.
        let by = if op.is_multiple_of(2) {
            &client
        } else {
            &admin
        };
        journal.lock().unwrap().in_flight = Some((dev.to_string(), new));
        if by.request(req, &[]).is_err() {
            return;
        }
        let mut j = journal.lock().unwrap();
        j.model.insert(dev.to_string(), new);
        j.in_flight = None;
        j.acked += 1;
    }
}

/// This process's settings in `stream-settings.json`, checking that it parses.
fn levels_file(state: &std::path::Path, app: &str) -> Levels {
    let path = state.join("stream-settings.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return Levels::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "stream-settings.json does not parse after a kill ({e}):\n{}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(v["version"], 1, "{v}");
    let mut out = Levels::new();
    for e in v["settings"].as_array().expect("settings array") {
        assert_eq!(e["app_id"], app, "a setting of another app: {e}");
        let dev = e["device"].as_str().expect("device").to_string();
        let levels = (
            e["volume"].as_f64().expect("volume") as f32,
            e["muted"].as_bool().expect("muted"),
        );
        assert!(out.insert(dev, levels).is_none(), "a device twice: {v}");
    }
    out
}

#[test]
fn sigkill_while_changing_volumes_loses_nothing_acknowledged() {
    let (kills, seed) = kills_and_seed("crash_safety (stream settings)");
    let mut rng = Rng(seed | 1);
    let own_app = common::exe_id(&std::env::current_exe().unwrap());
    let mut d = Daemon::start(VOLUME_CONFIG);
    let mut model = Levels::new();
    let (mut total_acked, mut landed_count, mut restored) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    for round in 0..kills {
        let journal = Arc::new(Mutex::new(LevelJournal {
            model: model.clone(),
            ..LevelJournal::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (native, admin) = (d.socket(), d.admin_socket());
            let (journal, stop) = (journal.clone(), stop.clone());
            let s = rng.next();
            std::thread::spawn(move || level_workload(native, admin, s, journal, stop))
        };
        let delay = if rng.below(4) == 0 {
            rng.below(400)
        } else {
            rng.below(60)
        };
        std::thread::sleep(Duration::from_millis(delay));
        kill(&d);
        stop.store(true, Ordering::Relaxed);
        worker.join().expect("workload thread panicked");
        let j = journal.lock().unwrap();
        total_acked += j.acked;
        restored += j.restored;
        let file = levels_file(&d.state, &own_app);
        let mut after = j.model.clone();
        if let Some((dev, levels)) = &j.in_flight {
            after.insert(dev.clone(), *levels);
        }
        let landed = if file == j.model {
            false
        } else if j.in_flight.is_some() && file == after {
            true
        } else {
            panic!(
                "round {round} (seed {seed}): stream-settings.json is not a prefix of the \
                 changes\nfile:      {file:?}\nacked:     {:?}\nin flight: {:?}",
                j.model, j.in_flight
            );
        };
        landed_count += usize::from(landed);
        model = file;
        drop(j);

        // The daemon comes back on the same state, serves, and lists what the file holds.
        d = d.restart();
        let admin = d.admin("levels-check");
        let listed: Levels = match admin.request(Request::ListStreamSettings, &[]).unwrap().0 {
            Reply::StreamSettings(l) => l
                .into_iter()
                .map(|s| (s.device, (s.volume, s.muted)))
                .collect(),
            r => panic!("ListStreamSettings answered {r:?}"),
        };
        assert_eq!(
            listed, model,
            "round {round}: the daemon lists other settings than its file"
        );
        drop(admin);
        if round % 100 == 99 {
            eprintln!(
                "crash_safety (stream settings): {} kills in {:.0?}, {total_acked} acknowledged",
                round + 1,
                started.elapsed()
            );
        }
    }
    eprintln!(
        "crash_safety (stream settings): {kills} kills, {total_acked} acknowledged changes, \
         {landed_count} in-flight changes made durable, {restored} new streams restored, {:.0?}",
        started.elapsed()
    );
    assert!(
        total_acked > 0,
        "no change was acknowledged in any round: the test did not exercise anything"
    );
}
