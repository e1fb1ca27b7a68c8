//! Persistent stream settings end to end: a volume or mute set with `sgctl` on an app's stream
//! is applied to that app's next stream on that device, also after a daemon restart; `sgctl
//! restore list` shows the settings and `sgctl restore forget` removes them; a corrupt file is
//! kept aside and the daemon starts anyway.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{bin, wait_for, Daemon};
use serde_json::Value;
use soundgate_proto::client::{Client, PlaybackOptions};
use soundgate_proto::wire::{Direction, Reply, Request, StreamInfo};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CONFIG: &str = r#"
[[sink]]
name = "out"
backend = "null"

[[sink]]
name = "other"
backend = "null"
"#;

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

fn sgctl(d: &Daemon, args: &[&str]) -> std::process::Output {
    Command::new(bin("sgctl"))
        .arg("--admin")
        .arg(d.admin_socket())
        .args(args)
        .output()
        .unwrap()
}

fn sgctl_ok(d: &Daemon, args: &[&str]) -> String {
    let out = sgctl(d, args);
    assert!(
        out.status.success(),
        "sgctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sgctl_json(d: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = sgctl_ok(d, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("sgctl {args:?}: {e}: {out}"))
}

/// A 20 s WAV of silence-ish tone, long enough to still play while the test looks at it.
fn long_wav(d: &Daemon) -> std::path::PathBuf {
    let path = d.path("long.wav");
    if !path.exists() {
        let s = common::sine(440.0, 48_000, 48_000 * 20, 0.1, 2);
        common::write_wav(&path, 48_000, 2, &s, true);
    }
    path
}

/// `sgcat -p` on `sink`, and its stream once the daemon lists it.
fn sgcat_on(d: &Daemon, admin: &Client, sink: &str) -> (Child, StreamInfo) {
    let wav = long_wav(d);
    let before: Vec<u32> = streams(admin).iter().map(|s| s.id).collect();
    let child = d
        .sgcat()
        .args(["-p", "--device", sink])
        .arg(&wav)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut found = None;
    let up = wait_for(Duration::from_secs(20), || {
        found = streams(admin)
            .into_iter()
            .find(|s| !before.contains(&s.id) && s.direction == Direction::Playback);
        found.is_some()
    });
    assert!(up, "sgcat's stream did not appear:\n{}", d.log());
    (child, found.unwrap())
}

fn streams(admin: &Client) -> Vec<StreamInfo> {
    match admin.request(Request::ListStreams, &[]).unwrap().0 {
        Reply::Streams(l) => l,
        r => panic!("{r:?}"),
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn settings_file(state: &Path) -> Value {
    let bytes = std::fs::read(state.join("stream-settings.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn a_volume_set_with_sgctl_applies_to_the_apps_next_stream_also_after_a_restart() {
    let d = Daemon::start(CONFIG);
    let sgcat_app = common::exe_id(&bin("sgcat"));
    let admin = d.admin("restore-test");

    // A first stream starts at the requested volume: nothing is remembered yet.
    let (first, s) = sgcat_on(&d, &admin, "out");
    assert_eq!(s.volume, 1.0);
    sgctl_ok(&d, &["volume", &s.id.to_string(), "30%"]);
    // Acknowledged means durable: the file holds it as soon as sgctl returned.
    let file = settings_file(&d.state);
    assert_eq!(file["version"], 1, "{file}");
    let entry = &file["settings"][0];
    assert_eq!(entry["app_id"], sgcat_app.as_str(), "{file}");
    assert_eq!(entry["device"], "out");
    assert!(
        (entry["volume"].as_f64().unwrap() - 0.3).abs() < 1e-6,
        "{file}"
    );
    stop(first);

    // The app's next stream on that device starts at 30 %.
    let (second, s) = sgcat_on(&d, &admin, "out");
    assert!((s.volume - 0.3).abs() < 1e-6, "{s:?}");
    assert!(!s.muted);
    // Settings are per device: on another sink it starts at the requested volume.
    let (elsewhere, o) = sgcat_on(&d, &admin, "other");
    assert_eq!(o.volume, 1.0, "{o:?}");
    sgctl_ok(&d, &["mute", &o.id.to_string(), "on"]);
    stop(elsewhere);
    stop(second);

    // After a restart on the same state dir, still 30 % on `out`, and muted on `other`.
    drop(admin);
    let d = d.restart();
    let admin = d.admin("restore-test");
    let (third, s) = sgcat_on(&d, &admin, "out");
    assert!((s.volume - 0.3).abs() < 1e-6, "{s:?}");
    assert!(!s.muted);
    stop(third);
    let (fourth, o) = sgcat_on(&d, &admin, "other");
    assert!(o.muted, "{o:?}");
    assert_eq!(o.volume, 1.0);

    // A stream moved to a device with a remembered setting takes that device's setting.
    let v = sgctl_json(&d, &["move", &o.id.to_string(), "out"]);
    assert_eq!(v["ok"], true);
    let moved = wait_for(Duration::from_secs(10), || {
        streams(&admin)
            .iter()
            .any(|s| s.id == o.id && s.device == "out" && (s.volume - 0.3).abs() < 1e-6)
    });
    assert!(moved, "{:?}", streams(&admin));
    stop(fourth);

    // List: human and JSON.
    let human = sgctl_ok(&d, &["restore", "list"]);
    assert!(
        human.contains(&sgcat_app) && human.contains("30%") && human.contains("other"),
        "{human}"
    );
    let v = sgctl_json(&d, &["restore", "list"]);
    assert_eq!(v["schema_version"], 1, "{v}");
    let list = v["settings"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{v}");
    let on_other = list.iter().find(|e| e["device"] == "other").unwrap();
    assert_eq!(on_other["muted"], true);
    assert_eq!(on_other["app_id"], sgcat_app.as_str());

    // Forget one device's, then the rest; forgetting nothing is "not found" (4).
    let v = sgctl_json(&d, &["restore", "forget", &sgcat_app, "--device", "other"]);
    assert_eq!(v["forgotten"].as_array().unwrap().len(), 1, "{v}");
    let (fifth, o) = sgcat_on(&d, &admin, "other");
    assert!(!o.muted, "forgotten, yet restored: {o:?}");
    stop(fifth);
    sgctl_ok(&d, &["restore", "forget", &sgcat_app]);
    let out = sgctl(&d, &["restore", "forget", &sgcat_app]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(sgctl_json(&d, &["restore", "list"])["settings"]
        .as_array()
        .unwrap()
        .is_empty());
    let (sixth, s) = sgcat_on(&d, &admin, "out");
    assert_eq!(s.volume, 1.0, "forgotten, yet restored: {s:?}");
    stop(sixth);
    assert!(settings_file(&d.state)["settings"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// A client's own volume change is remembered for its own app only, and a stream of the same
/// app under another uid would not see it (the key holds the uid: checked through the file).
#[test]
fn a_clients_own_change_is_remembered_for_its_app_and_uid() {
    let d = Daemon::start(CONFIG);
    let me = common::exe_id(&std::env::current_exe().unwrap());
    let c = d.client("self");
    let mut opts = PlaybackOptions::new("mine", SPEC);
    opts.device = Some("out".into());
    let p = c.playback(opts).unwrap();
    p.set_volume(0.5).unwrap();
    p.set_mute(true).unwrap();
    let file = settings_file(&d.state);
    let list = file["settings"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{file}");
    assert_eq!(list[0]["app_id"], me.as_str());
    assert_eq!(list[0]["uid"], u64::from(nix::unistd::getuid().as_raw()));
    assert_eq!(list[0]["volume"], 0.5);
    assert_eq!(list[0]["muted"], true);
    p.close().unwrap();
    // The next stream asks for full volume, unmuted; the remembered setting wins.
    let mut opts = PlaybackOptions::new("again", SPEC);
    opts.device = Some("out".into());
    let p = c.playback(opts).unwrap();
    let info = p.info().unwrap();
    assert_eq!((info.volume, info.muted), (0.5, true));
    // Only administrators list or forget settings.
    let denied = c.request(Request::ListStreamSettings, &[]).unwrap_err();
    assert_eq!(
        denied.kind(),
        Some(soundgate_proto::wire::ErrorKind::Denied),
        "{denied}"
    );
    let denied = c
        .request(
            Request::ForgetStreamSettings {
                app_id: me.clone(),
                uid: None,
                device: None,
            },
            &[],
        )
        .unwrap_err();
    assert_eq!(
        denied.kind(),
        Some(soundgate_proto::wire::ErrorKind::Denied)
    );
}

#[test]
fn a_corrupt_settings_file_is_kept_aside_and_the_daemon_starts() {
    let d = Daemon::start(CONFIG);
    let mut d = d;
    d.stop();
    std::fs::create_dir_all(&d.state).unwrap();
    let garbage = b"{\"version\": 1, \"settings\": [{\"uid\": 0, \"app_";
    std::fs::write(d.state.join("stream-settings.json"), garbage).unwrap();
    let d = d.restart();
    assert!(d.client("probe").server_info().is_ok());
    assert_eq!(
        std::fs::read(d.state.join("stream-settings.json.corrupt")).unwrap(),
        garbage
    );
    assert!(!d.state.join("stream-settings.json").exists());
    assert!(
        d.log().contains("stream settings unreadable"),
        "{}",
        d.log()
    );
    let v = sgctl_json(&d, &["restore", "list"]);
    assert!(v["settings"].as_array().unwrap().is_empty(), "{v}");
    // And it remembers again from there.
    let c = d.client("after");
    let mut opts = PlaybackOptions::new("s", SPEC);
    opts.device = Some("out".into());
    let p = c.playback(opts).unwrap();
    p.set_volume(0.25).unwrap();
    assert_eq!(settings_file(&d.state)["settings"][0]["volume"], 0.25);
}
