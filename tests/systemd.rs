//! systemd integration: the unit passes `systemd-analyze verify`, the sysusers.d and
//! tmpfiles.d files make the user, groups and directories, and readiness reaches a
//! `NOTIFY_SOCKET` only once both sockets accept.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{bin, wait_for};
use soundgate_proto::client::Client;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `name` on PATH, or a printed reason to skip.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.exists());
    if found.is_none() {
        eprintln!("SKIPPED: {name} is not installed (.ci/run installs the systemd package)");
    }
    found
}

/// A MANPATH holding the repository's pages in man1/, man5/, ... (what `make install` lays
/// out), so that `systemd-analyze verify` can check the unit's Documentation= lines.
fn manpath(dir: &Path) -> PathBuf {
    let mp = dir.join("man");
    for e in std::fs::read_dir(root().join("man")).unwrap() {
        let p = e.unwrap().path();
        let section = p.extension().unwrap().to_string_lossy().to_string();
        let sub = mp.join(format!("man{section}"));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(&p, sub.join(p.file_name().unwrap())).unwrap();
    }
    mp
}

/// The unit with @BINDIR@ pointing at the built binaries.
fn unit_text() -> String {
    let unit = std::fs::read_to_string(root().join("dist/soundgated.service")).unwrap();
    let bindir = bin("soundgated").parent().unwrap().to_path_buf();
    unit.replace("@BINDIR@", &bindir.to_string_lossy())
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("soundgated.service");
    std::fs::write(&unit, unit_text()).unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", manpath(dir.path()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // verify exits 0 on some warnings; any line about our unit is a finding.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("soundgated.service"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");

    // A broken unit is caught, so the check above is not vacuous.
    let bad = dir.path().join("broken.service");
    std::fs::write(
        &bad,
        unit_text().replace("Type=notify", "Type=notify\nLimitRTTIME=soon"),
    )
    .unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&bad)
        .env("MANPATH", manpath(dir.path()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Failed to parse resource value"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of `key=` in the unit (the last one wins, as in systemd).
fn unit_value(key: &str) -> Option<String> {
    unit_text()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .map(str::to_string)
}

#[test]
fn the_unit_carries_the_hardening_and_limits_the_engine_needs() {
    let expect = [
        ("Type", "notify"),
        ("User", "soundgate"),
        ("SupplementaryGroups", "audio soundgate-admin"),
        ("RuntimeDirectory", "soundgate"),
        ("StateDirectory", "soundgate"),
        ("ConfigurationDirectory", "soundgate"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateNetwork", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_NETLINK"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("CapabilityBoundingSet", ""),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "char-alsa rw"),
        // The engine's RT guard: RLIMIT_RTTIME 200 ms soft, 2 s hard (engine/rt.rs), and
        // SCHED_FIFO at the default realtime_priority.
        ("LimitRTTIME", "200ms:2s"),
        ("LimitRTPRIO", "20"),
    ];
    for (k, v) in expect {
        assert_eq!(unit_value(k).as_deref(), Some(v), "{k}=");
    }
    // What would break the daemon is absent: SCHED_FIFO, /proc of peers, /dev/snd.
    for k in [
        "RestrictRealtime",
        "ProtectProc",
        "ProcSubset",
        "PrivateDevices",
    ] {
        assert_eq!(unit_value(k), None, "{k}= must not be set");
    }
    let rt = std::fs::read_to_string(root().join("daemon/src/engine/rt.rs")).unwrap();
    assert!(
        rt.contains("RTTIME_SOFT_US: u64 = 200_000"),
        "rt.rs changed"
    );
    assert!(
        rt.contains("RTTIME_HARD_US: u64 = 2_000_000"),
        "rt.rs changed"
    );
    let config = std::fs::read_to_string(root().join("daemon/src/config.rs")).unwrap();
    assert!(
        config.contains("realtime_priority: Some(20)"),
        "the default realtime_priority changed; change LimitRTPRIO too"
    );
}

#[test]
fn sysusers_and_tmpfiles_make_the_user_groups_and_directories() {
    let (Some(sysusers), Some(tmpfiles)) = (tool("systemd-sysusers"), tool("systemd-tmpfiles"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    let out = Command::new(sysusers)
        .arg(format!("--root={}", r.display()))
        .arg(root().join("dist/soundgate.sysusers"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    let user: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("soundgate:"))
        .expect("user soundgate")
        .split(':')
        .collect();
    assert_eq!(user[5], "/var/lib/soundgate");
    let uid: u32 = user[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "a system uid: {uid}");
    assert!(group.lines().any(|l| l.starts_with("soundgate-admin:")));
    assert!(group.lines().any(|l| l.starts_with("soundgate:")));

    let out = Command::new(tmpfiles)
        .arg("--create")
        .arg(format!("--root={}", r.display()))
        .arg(root().join("dist/soundgate.tmpfiles"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (path, mode, owner) in [
        ("run/soundgate", 0o755, uid),
        ("var/lib/soundgate", 0o750, uid),
        ("etc/soundgate", 0o755, 0),
    ] {
        let m = std::fs::metadata(r.join(path)).unwrap();
        assert!(m.is_dir(), "{path}");
        assert_eq!(m.mode() & 0o7777, mode, "{path}");
        assert_eq!(m.uid(), owner, "{path}");
    }
}

#[test]
fn ready_reaches_notify_socket_only_after_both_sockets_accept() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let rx = UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (runtime, state) = (dir.path().join("run"), dir.path().join("state"));
    let log = dir.path().join("daemon.log");
    let config = dir.path().join("soundgate.toml");
    std::fs::write(
        &config,
        "[[sink]]\nname = \"out\"\nbackend = \"null\"\nrate = 48000\nchannels = 2\n",
    )
    .unwrap();
    let mut child = Command::new(bin("soundgated"))
        .arg("--config")
        .arg(&config)
        .arg("--runtime-dir")
        .arg(&runtime)
        .arg("--state-dir")
        .arg(&state)
        .env("NOTIFY_SOCKET", &notify)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let daemon_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut buf = [0u8; 512];
    let n = rx
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification ({e}):\n{}", daemon_log()));
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    // The very first datagram is READY=1, and at that instant both sockets accept a client
    // (nothing is retried: the daemon is paused in no way, so a late listener would fail here).
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert!(
        msg.lines()
            .any(|l| l == format!("MAINPID={}", child.id()).as_str()),
        "{msg:?}"
    );
    let native = Client::connect(&runtime.join("native"), "after-ready");
    let admin = Client::connect(&runtime.join("admin"), "after-ready");
    assert!(
        native.is_ok(),
        "native: {:?}\n{}",
        native.err(),
        daemon_log()
    );
    assert!(admin.is_ok(), "admin: {:?}\n{}", admin.err(), daemon_log());
    // Both really serve: the admin socket answers a request.
    let sinks = admin.unwrap().sinks().unwrap();
    assert_eq!(sinks[0].name, "out");

    // Shutdown says STOPPING=1 before the sockets go.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let n = rx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(wait_for(Duration::from_secs(15), || matches!(
        child.try_wait(),
        Ok(Some(_))
    )));
    assert!(!runtime.join("native").exists());
}

#[test]
fn without_notify_socket_nothing_is_sent_and_a_bad_one_is_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, state) = (dir.path().join("run"), dir.path().join("state"));
    let log = dir.path().join("daemon.log");
    let mut child = Command::new(bin("soundgated"))
        .arg("--runtime-dir")
        .arg(&runtime)
        .arg("--state-dir")
        .arg(&state)
        .env("XDG_CONFIG_HOME", dir.path().join("xdg"))
        // Nobody listens there: the daemon warns and serves anyway.
        .env("NOTIFY_SOCKET", dir.path().join("absent"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let up = wait_for(Duration::from_secs(20), || {
        Client::connect(&runtime.join("native"), "probe").is_ok()
    });
    // The warning follows the bind by a moment.
    wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("NOTIFY_SOCKET"))
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "{text}");
    assert!(text.contains("NOTIFY_SOCKET"), "{text}");
}
