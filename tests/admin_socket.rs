//! The admin socket and the control plane: who the daemon lets in (whatever the socket file's
//! mode), that native clients cannot use admin requests, meters, and that a meter subscriber
//! that never reads is cut off without disturbing anyone's audio.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{bin, wait_for, Daemon};
use soundgate_proto::client::ClientError;
use soundgate_proto::wire::{ErrorKind, Event, Reply, Request};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CONFIG: &str = r#"
[[sink]]
name = "out"
backend = "null"
"#;

fn setpriv() -> Option<&'static str> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// Opens the temp dir, runtime dir and admin socket to everyone, so that only the daemon's own
/// check stands between another user and the admin requests.
fn open_up(d: &Daemon) {
    for (p, mode) in [
        (d.dir.path(), 0o755),
        (d.runtime.as_path(), 0o755),
        (d.admin_socket().as_path(), 0o666),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// sgctl as another user.
fn sgctl_as(d: &Daemon, setpriv: &str, ids: &[&str], args: &[&str]) -> std::process::Output {
    Command::new(setpriv)
        .args(ids)
        .arg(bin("sgctl"))
        .arg("--admin")
        .arg(d.admin_socket())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn non_admin_is_refused_by_the_daemon_and_root_is_accepted() {
    let Some(setpriv) = setpriv() else {
        eprintln!("NOTE: setpriv is missing; skipping the other-user half of this test");
        return;
    };
    let d = Daemon::start(CONFIG);
    open_up(&d);
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let out = sgctl_as(&d, setpriv, &nobody, &["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(
        err.trim_end(),
        "sgctl: permission denied: the admin socket is for root and members of group soundgate-admin"
    );
    // The filesystem did not stop it: the same user reaches the native socket.
    let native = d.socket();
    std::fs::set_permissions(&native, std::fs::Permissions::from_mode(0o666)).unwrap();
    let probe = Command::new(setpriv)
        .args(nobody)
        .arg(bin("sgcat"))
        .args([
            "-p",
            "--raw",
            "--format",
            "s16le",
            "--rate",
            "48000",
            "--channels",
            "2",
        ])
        .arg("--server")
        .arg(&native)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "nobody could not use the native socket: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    // Root is an administrator.
    let out = sgctl_as(
        &d,
        setpriv,
        &["--reuid=0", "--regid=0", "--clear-groups"],
        &["--json", "status"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.log().contains("refused on the admin socket"));
}

#[test]
fn members_of_the_admin_group_are_administrators() {
    let Some(setpriv) = setpriv() else {
        eprintln!("NOTE: setpriv is missing; skipping");
        return;
    };
    let made = Command::new("groupadd")
        .args(["-f", "soundgate-admin"])
        .status()
        .is_ok_and(|s| s.success());
    let user = "sgtest-admin";
    let exists = Command::new("id")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let user_ok = exists
        || Command::new("useradd")
            .args([
                "-M",
                "-N",
                "-s",
                "/usr/sbin/nologin",
                "-G",
                "soundgate-admin",
                user,
            ])
            .status()
            .is_ok_and(|s| s.success());
    if !made || !user_ok {
        eprintln!("NOTE: cannot create group soundgate-admin or user {user}; skipping");
        return;
    }
    let uid = String::from_utf8(
        Command::new("id")
            .args(["-u", user])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    // The daemon resolves the group when it starts.
    let d = Daemon::start(CONFIG);
    open_up(&d);
    let member = [
        format!("--reuid={uid}"),
        "--regid=65534".to_string(),
        "--init-groups".to_string(),
    ];
    let member: Vec<&str> = member.iter().map(String::as_str).collect();
    let out = sgctl_as(&d, setpriv, &member, &["--json", "ls", "clients"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let uid: u64 = uid.parse().unwrap();
    assert!(
        v["clients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["uid"] == uid && c["admin"] == true),
        "{v}"
    );
    // Outside the group, the same uid is refused.
    let outsider = [
        format!("--reuid={uid}"),
        "--regid=65534".to_string(),
        "--clear-groups".to_string(),
    ];
    let outsider: Vec<&str> = outsider.iter().map(String::as_str).collect();
    let out = sgctl_as(&d, setpriv, &outsider, &["status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn native_clients_cannot_use_admin_requests() {
    let d = Daemon::start(CONFIG);
    let c = d.client("attacker");
    let victim = d.client("victim");
    for req in [
        Request::ListClients,
        Request::KillClient {
            client: victim.client_id(),
        },
        Request::SubscribeMeters { hz: 10 },
        Request::AuditTail { lines: 10 },
        Request::Stats,
        Request::AddGrant {
            uid: 0,
            app_id: "exe:/usr/bin/evil".into(),
            action: "record".into(),
            target: Some("out.monitor".into()),
            allow: true,
        },
    ] {
        let what = format!("{req:?}");
        match c.request(req, &[]) {
            Err(ClientError::Server(e)) => {
                assert_eq!(e.kind, ErrorKind::Denied, "{what}: {e}");
                assert!(e.message.contains("administrators"), "{what}: {e}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // The victim is still connected and no grant was added.
    assert!(victim.server_info().is_ok());
    let admin = d.admin("admin");
    let (reply, _) = admin.request(Request::ListGrants, &[]).unwrap();
    assert_eq!(reply, Reply::Grants(vec![]));
    match admin.request(Request::KillClient { client: 999_999 }, &[]) {
        Err(ClientError::Server(e)) => assert_eq!(e.kind, ErrorKind::NotFound, "{e}"),
        other => panic!("killing a client that does not exist: {other:?}"),
    }
}

/// A long sine WAV for sgcat to play in real time.
fn tone_file(d: &Daemon, secs: usize) -> std::path::PathBuf {
    let path = d.path("tone.wav");
    let s = common::sine(440.0, 48_000, 48_000 * secs, 0.5, 2);
    common::write_wav(&path, 48_000, 2, &s, false);
    path
}

#[test]
fn meters_report_peak_and_rms_of_streams_and_devices() {
    let d = Daemon::start(CONFIG);
    let tone = tone_file(&d, 20);
    let mut sgcat = d.sgcat().arg("-p").arg(&tone).spawn().unwrap();
    let admin = d.admin("meters");
    match admin.request(Request::SubscribeMeters { hz: 61 }, &[]) {
        Err(ClientError::Server(e)) => assert_eq!(e.kind, ErrorKind::Invalid),
        other => panic!("61 Hz: {other:?}"),
    }
    let (reply, _) = admin
        .request(Request::SubscribeMeters { hz: 30 }, &[])
        .unwrap();
    assert_eq!(reply, Reply::Ok);
    let mut found = None;
    let ok = wait_for(Duration::from_secs(20), || {
        for ev in admin.take_events().unwrap() {
            if let Event::Meters(ms) = ev {
                let stream = ms.iter().find(|m| m.stream.is_some() && m.peak > 0.3);
                let device = ms.iter().find(|m| m.stream.is_none() && m.device == "out");
                if let (Some(s), Some(dev)) = (stream, device) {
                    found = Some((s.clone(), dev.clone()));
                }
            }
        }
        found.is_some()
    });
    let _ = sgcat.kill();
    let _ = sgcat.wait();
    assert!(ok, "no meter reading with the tone playing");
    let (s, dev) = found.unwrap();
    assert_eq!(s.device, "out");
    // A 0.5 sine: peak ≈ 0.5, RMS ≈ 0.354; RMS is measured, not a copy of the peak.
    assert!((s.peak - 0.5).abs() < 0.05, "{s:?}");
    assert!((s.rms - 0.354).abs() < 0.05, "{s:?}");
    assert!(dev.rms <= dev.peak, "{dev:?}");
    // 0 stops them.
    let (reply, _) = admin
        .request(Request::SubscribeMeters { hz: 0 }, &[])
        .unwrap();
    assert_eq!(reply, Reply::Ok);
    admin.take_events().unwrap();
    let stats = match admin.request(Request::Stats, &[]).unwrap().0 {
        Reply::Stats(s) => s,
        r => panic!("{r:?}"),
    };
    assert!(stats.rss_bytes > 0 && stats.devices.iter().any(|d| d.name == "out"));
}

#[test]
fn a_meter_subscriber_that_never_reads_is_cut_off_without_harming_playback() {
    let d = Daemon::start(CONFIG);
    let tone = tone_file(&d, 60);
    let mut sgcat = d
        .sgcat()
        .args(["-p", "--latency-msec", "400"])
        .arg(&tone)
        .spawn()
        .unwrap();
    let admin = d.admin("observer");
    let stream = || -> Option<soundgate_proto::wire::StreamInfo> {
        match admin.request(Request::ListStreams, &[]).ok()?.0 {
            Reply::Streams(l) => l.into_iter().next(),
            _ => None,
        }
    };
    assert!(wait_for(Duration::from_secs(20), || stream()
        .is_some_and(|s| s.frames > 48_000)));
    let before = stream().unwrap();

    let lazy = d.admin("lazy");
    let lazy_id = lazy.client_id();
    let (reply, _) = lazy
        .request(Request::SubscribeMeters { hz: 60 }, &[])
        .unwrap();
    assert_eq!(reply, Reply::Ok);
    // It never reads. Its socket buffer and then its event queue fill, and the daemon hangs up.
    let listed = |id| match admin.request(Request::ListClients, &[]).unwrap().0 {
        Reply::Clients(l) => l.iter().any(|c| c.id == id),
        r => panic!("{r:?}"),
    };
    assert!(
        wait_for(Duration::from_secs(60), || !listed(lazy_id)),
        "the non-reading meter subscriber is still connected"
    );
    assert!(d.log().contains("event queue full"), "{}", d.log());
    let after = stream().unwrap();
    assert_eq!(after.id, before.id);
    assert!(after.frames > before.frames, "playback stalled");
    assert_eq!(
        after.underruns, before.underruns,
        "the player underran while the subscriber was flooded"
    );
    // What it had buffered can still be read, then the connection ends.
    assert!(wait_for(Duration::from_secs(10), || lazy
        .take_events()
        .is_err()));
    let _ = sgcat.kill();
    let _ = sgcat.wait();
}

#[test]
fn a_uid_listed_in_the_config_is_an_administrator() {
    let Some(setpriv) = setpriv() else {
        eprintln!("NOTE: setpriv is missing; skipping");
        return;
    };
    let d = Daemon::start(&format!("[admin]\nuids = [65534]\n{CONFIG}"));
    open_up(&d);
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let out = sgctl_as(&d, setpriv, &nobody, &["status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another unprivileged uid is still refused.
    let other = ["--reuid=65533", "--regid=65534", "--clear-groups"];
    let out = sgctl_as(&d, setpriv, &other, &["status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
