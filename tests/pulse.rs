//! The PulseAudio-protocol socket (issue 11), driven by the real PulseAudio client tools
//! (`pactl`, `paplay`, `pacat`, `parec`; `aplay -D pulse`; `mpv --ao=pulse`) and by raw frames
//! for the hostile cases. Each test starts a private daemon.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{channel, dominant_frequency, read_wav, tone, wait_for, write_wav, Daemon, Victim};
use soundgate_proto::wire::{PromptAnswer, Reply, Request};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FILE_SINK: &str = r#"
[[sink]]
name = "out"
backend = "file"
path = "$DIR/mix.wav"
rate = 48000
channels = 2
format = "f32le"
quantum = 256
"#;

fn pulse_socket(d: &Daemon) -> PathBuf {
    d.runtime.join("pulse").join("native")
}

/// A PulseAudio client tool pointed at this daemon's pulse socket, with a private HOME so
/// no user configuration or autospawn gets in the way.
fn tool(d: &Daemon, name: &str) -> Command {
    let mut c = Command::new(name);
    c.env(
        "PULSE_SERVER",
        format!("unix:{}", pulse_socket(d).display()),
    )
    .env("HOME", d.path("home"))
    .env("XDG_CONFIG_HOME", d.path("home/.config"))
    .env("XDG_RUNTIME_DIR", d.path("home/run"))
    .env_remove("PULSE_COOKIE")
    .stdin(Stdio::null());
    c
}

fn run(mut c: Command) -> Output {
    let out = c
        .output()
        .expect("run a PulseAudio client tool (is pulseaudio-utils installed?)");
    out
}

fn ok(mut c: Command) -> String {
    let dbg = format!("{c:?}");
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "{dbg} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pactl(d: &Daemon, args: &[&str]) -> Output {
    let mut c = tool(d, "pactl");
    c.args(args);
    run(c)
}

fn pactl_ok(d: &Daemon, args: &[&str]) -> String {
    let mut c = tool(d, "pactl");
    c.args(args);
    ok(c)
}

fn s16_bytes(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| {
            ((f64::from(*s) * 32768.0).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes()
        })
        .collect()
}

/// The mix's left channel, from the first non-silent sample on.
fn mix_left(d: &Daemon) -> Vec<f32> {
    let (spec, samples) = read_wav(&d.path("mix.wav"));
    assert_eq!(spec.sample_rate, 48_000);
    channel(&samples, 2, 0)
}

#[test]
fn pactl_info_and_every_list_succeed() {
    let d = Daemon::start(FILE_SINK);
    let sock = pulse_socket(&d);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o666, "the pulse socket is for everyone");
    let info = pactl_ok(&d, &["info"]);
    assert!(info.contains("Server Name: soundgate"), "{info}");
    assert!(info.contains("Default Sink: out"), "{info}");
    assert!(info.contains("Server Protocol Version: 35"), "{info}");
    let sinks = pactl_ok(&d, &["list", "sinks"]);
    assert!(sinks.contains("Name: out"), "{sinks}");
    assert!(sinks.contains("Monitor Source: out.monitor"), "{sinks}");
    for section in [
        "modules",
        "sinks",
        "sources",
        "sink-inputs",
        "source-outputs",
        "clients",
        "samples",
        "cards",
    ] {
        pactl_ok(&d, &["list", section]);
        pactl_ok(&d, &["list", "short", section]);
        let json = pactl_ok(&d, &["--format=json", "list", section]);
        serde_json::from_str::<serde_json::Value>(&json)
            .unwrap_or_else(|e| panic!("pactl --format=json list {section}: {e}: {json}"));
    }
    pactl_ok(&d, &["list"]);
    pactl_ok(&d, &["list", "short"]);
    let all = pactl_ok(&d, &["--format=json", "list"]);
    let v: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(v["sinks"][0]["name"], "out", "{all}");
    // Lookups by name and the defaults.
    let vol = pactl_ok(&d, &["get-sink-volume", "@DEFAULT_SINK@"]);
    assert!(vol.contains("100%"), "{vol}");
    let bad = pactl(&d, &["get-sink-volume", "nosuchsink"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("No such entity"),
        "{bad:?}"
    );
}

/// Spawns `c` (with output captured).
fn spawn(mut c: Command) -> std::process::Child {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn()
        .expect("spawn a client tool (are pulseaudio-utils, mpv, alsa-utils installed?)")
}

#[test]
fn paplay_pacat_aplay_and_mpv_play_at_once_each_at_its_pitch_and_level() {
    let mut d = Daemon::start(FILE_SINK);
    std::fs::create_dir_all(d.path("home")).unwrap();
    // paplay: a 44.1 kHz stereo s16 WAV of 440 Hz at 0.3 (resampled by the transport).
    let wav = d.path("paplay.wav");
    write_wav(
        &wav,
        44_100,
        2,
        &common::sine(440.0, 44_100, 3 * 44_100, 0.3, 2),
        false,
    );
    // pacat: raw 48 kHz mono s16le of 1000 Hz at 0.15 (up-mixed to both sides).
    let raw = d.path("pacat.raw");
    let pcm = s16_bytes(&common::sine(1000.0, 48_000, 3 * 48_000, 0.15, 1));
    std::fs::write(&raw, pcm).unwrap();
    // aplay through alsa-plugins' pulse PCM: 48 kHz stereo, 660 Hz at 0.2.
    let awav = d.path("aplay.wav");
    write_wav(
        &awav,
        48_000,
        2,
        &common::sine(660.0, 48_000, 3 * 48_000, 0.2, 2),
        false,
    );
    // mpv: 32 kHz mono, 250 Hz at 0.2.
    let mwav = d.path("mpv.wav");
    write_wav(
        &mwav,
        32_000,
        1,
        &common::sine(250.0, 32_000, 3 * 32_000, 0.2, 1),
        false,
    );

    let started = Instant::now();
    let mut paplay = tool(&d, "paplay");
    paplay.arg(&wav);
    let mut pacat = tool(&d, "pacat");
    pacat
        .args([
            "--playback",
            "--rate=48000",
            "--channels=1",
            "--format=s16le",
        ])
        .arg(&raw);
    let mut aplay = tool(&d, "aplay");
    aplay.args(["-q", "-D", "pulse"]).arg(&awav);
    let mut mpv = tool(&d, "mpv");
    mpv.args(["--no-config", "--really-quiet", "--no-video", "--ao=pulse"])
        .arg(&mwav);
    let children = [spawn(paplay), spawn(pacat), spawn(aplay), spawn(mpv)];
    for (name, child) in ["paplay", "pacat", "aplay", "mpv"].iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{name}: {out:?}\n{}", d.log());
    }
    let took = started.elapsed();
    // The files hold 3 s: the tools return only once it has been played (drain).
    assert!(
        took >= Duration::from_millis(2900),
        "returned after {took:?}"
    );
    d.stop();
    let left = mix_left(&d);
    let start = common::onset(&left, 0.01).expect("the mix holds sound");
    // A second in the middle, where all four play whatever their start-up times.
    let mid = &left[start + 60_000..start + 108_000];
    for (name, freq, level, lo, hi) in [
        ("paplay", 440.0, 0.3, 380.0, 500.0),
        ("pacat", 1000.0, 0.15, 900.0, 1100.0),
        ("aplay", 660.0, 0.2, 600.0, 720.0),
        ("mpv", 250.0, 0.2, 200.0, 300.0),
    ] {
        let f = dominant_frequency(mid, 48_000, lo, hi);
        assert!(
            (f - freq).abs() < 1.0,
            "{name}'s tone at {f} Hz, not {freq}"
        );
        let (amp, _) = tone(mid, freq, 48_000);
        assert!(
            (amp - level).abs() < 0.1 * level,
            "{name}'s level {amp}, not {level}"
        );
    }
    // Every sample made it: about 3 s of sound in all (plus the tools' start-up skew).
    let end = left.iter().rposition(|v| v.abs() > 0.01).unwrap();
    let secs = (end - start) as f64 / 48_000.0;
    assert!((2.95..4.5).contains(&secs), "{secs} s of sound");
}

#[test]
fn disabled_means_no_pulse_socket() {
    let d = Daemon::start(&format!("[pulse]\nenabled = false\n{FILE_SINK}"));
    assert!(d.socket().exists());
    assert!(!pulse_socket(&d).exists(), "no pulse socket when disabled");
}
