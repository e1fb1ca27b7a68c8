//! Memory bounded by design (issue 12, item 4): every stream ring a uid makes the daemon map
//! counts against `[limits] shm_bytes_per_uid`. One uid flooding huge-latency streams (native
//! or over the pulse socket) is refused once its rings would pass the budget, the daemon's
//! memfd mappings stay within it, another uid still plays, and once the flooder is gone the
//! budget is back.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{bin, sine, wait_for, write_wav, Daemon};
use soundgate_proto::client::{Client, PlaybackOptions};
use soundgate_proto::wire::ErrorKind;
use soundgate_proto::{SampleFormat, StreamSpec};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// 8 MiB per uid; rings up to 5 s.
const BUDGET: u64 = 8 << 20;
const CONFIG: &str = r#"
[limits]
max_latency_ms = 5000
shm_bytes_per_uid = 8388608

[pulse]
convert_samples_per_sec = 1000000000

[[sink]]
name = "out"
backend = "null"
quantum = 256
"#;

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

/// Bytes of the daemon's stream-ring mappings (every `memfd:soundgate…` line of its maps).
fn ring_bytes_mapped(pid: u32) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter(|l| l.contains("memfd:soundgate"))
        .map(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            u64::from_str_radix(b, 16).unwrap() - u64::from_str_radix(a, 16).unwrap()
        })
        .sum()
}

fn setpriv() -> Option<&'static str> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// Opens the dirs to other users and writes a WAV they can read.
fn open_up(d: &Daemon) -> PathBuf {
    for p in [d.dir.path(), d.runtime.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let wav = d.path("tone.wav");
    write_wav(&wav, 48_000, 2, &sine(440.0, 48_000, 24_000, 0.2, 2), false);
    std::fs::set_permissions(&wav, std::fs::Permissions::from_mode(0o644)).unwrap();
    wav
}

/// Another uid (nobody) plays half a second with sgcat; root when setpriv is missing.
fn another_uid_plays(d: &Daemon, wav: &Path) {
    let out = match setpriv() {
        Some(setpriv) => Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin("sgcat"))
            .arg("--server")
            .arg(d.socket())
            .arg("-p")
            .arg(wav)
            .stdin(Stdio::null())
            .output()
            .unwrap(),
        None => {
            eprintln!("NOTE: setpriv is missing; the other-uid client runs as the flooder's uid");
            return;
        }
    };
    assert!(
        out.status.success(),
        "another uid could not play: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

fn huge(name: &str) -> PlaybackOptions {
    let mut opts = PlaybackOptions::new(name, SPEC);
    opts.latency_ms = 5000;
    opts.corked = true;
    opts
}

/// A huge-latency stream of this uid is accepted again within a few seconds.
fn budget_comes_back(d: &Daemon) {
    let c = d.client("after");
    let mut last = None;
    let back = wait_for(Duration::from_secs(10), || {
        match c.playback(huge("after")) {
            Ok(_) => true,
            Err(e) => {
                last = Some(e.to_string());
                false
            }
        }
    });
    assert!(back, "the budget did not come back: {last:?}");
}

#[test]
fn a_native_flood_of_huge_rings_stops_at_the_uid_budget() {
    let d = Daemon::start(CONFIG);
    let wav = open_up(&d);
    // Each 5 s stereo f32 ring at 48 kHz: 240 000 frames × 8 bytes + the 256-byte header.
    let ring = 240_000 * 8 + 256;
    let flooder = Client::connect(&d.socket(), "flooder").unwrap();
    let mut streams = Vec::new();
    let refusal = loop {
        match flooder.playback(huge("flood")) {
            Ok(p) => streams.push(p),
            Err(e) => break e,
        }
        assert!(streams.len() < 64, "the budget never refused a stream");
    };
    assert_eq!(refusal.kind(), Some(ErrorKind::Quota), "{refusal}");
    assert!(
        refusal.to_string().contains("shm_bytes_per_uid"),
        "{refusal}"
    );
    assert_eq!(streams.len() as u64, BUDGET / ring, "{refusal}");
    let mapped = ring_bytes_mapped(d.pid());
    assert!(
        mapped <= BUDGET && mapped >= streams.len() as u64 * ring,
        "the daemon maps {mapped} bytes of rings (budget {BUDGET})"
    );

    // sgcat of the same uid is refused with one line naming the limit.
    let out = d
        .sgcat()
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
        .args(["--latency-msec", "5000", "/dev/zero"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "sgcat played over the budget");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("sgcat: quota exceeded: ") && err.contains("shm_bytes_per_uid"),
        "{err}"
    );

    // Another uid has its own budget.
    another_uid_plays(&d, &wav);

    // The flooder goes away; its rings stop counting once the engine let them go.
    drop(streams);
    drop(flooder);
    budget_comes_back(&d);
    assert!(ring_bytes_mapped(d.pid()) <= BUDGET);
}

fn pacat(d: &Daemon) -> Child {
    Command::new("pacat")
        .args([
            "-p",
            "--raw",
            "--format=s16le",
            "--rate=48000",
            "--channels=2",
        ])
        .arg("--latency-msec=5000")
        .arg("/dev/zero")
        .env(
            "PULSE_SERVER",
            format!("unix:{}", d.runtime.join("pulse/native").display()),
        )
        .env("HOME", d.path("home"))
        .env("XDG_CONFIG_HOME", d.path("home/.config"))
        .env("XDG_RUNTIME_DIR", d.path("home/run"))
        .env_remove("PULSE_COOKIE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pacat (is pulseaudio-utils installed?)")
}

#[test]
fn a_pulse_flood_counts_both_mappings_against_the_uid_budget() {
    if Command::new("pacat").arg("--version").output().is_err() {
        eprintln!("NOTE: pacat is missing; skipping the pulse half");
        return;
    }
    let d = Daemon::start(CONFIG);
    let wav = open_up(&d);
    let mut pacats: Vec<Child> = (0..16).map(|_| pacat(&d)).collect();
    // Every pacat either plays (its ring mapped twice: the transport writes it, the engine
    // reads it) or was refused and exited.
    let settled = wait_for(Duration::from_secs(20), || {
        let mut exited = 0;
        for c in pacats.iter_mut() {
            if c.try_wait().unwrap().is_some() {
                exited += 1;
            }
        }
        let mapped = common::maps_with(d.pid(), "memfd:soundgate-pulse");
        exited + mapped / 2 == pacats.len()
    });
    let exited: Vec<usize> = (0..pacats.len())
        .filter(|&i| pacats[i].try_wait().unwrap().is_some())
        .collect();
    assert!(
        settled,
        "pacats did not settle: {} exited\n{}",
        exited.len(),
        d.log()
    );
    assert!(
        !exited.is_empty() && exited.len() < pacats.len(),
        "{} of {} pacats were refused\n{}",
        exited.len(),
        pacats.len(),
        d.log()
    );
    let mapped = ring_bytes_mapped(d.pid());
    assert!(mapped <= BUDGET, "the daemon maps {mapped} bytes of rings");
    // A refused pacat was told `Too large` (PulseAudio's word for a quota).
    let mut err = String::new();
    std::io::Read::read_to_string(pacats[exited[0]].stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.to_lowercase().contains("too large"), "{err}");
    // The native socket's budget is the same one: this uid has no room for a huge ring.
    let c = d.client("native");
    let Err(e) = c.playback(huge("over")) else {
        panic!("a ring over the budget was accepted");
    };
    assert_eq!(e.kind(), Some(ErrorKind::Quota), "{e}");
    drop(c);

    another_uid_plays(&d, &wav);

    for p in &mut pacats {
        let _ = p.kill();
        let _ = p.wait();
    }
    budget_comes_back(&d);
}
