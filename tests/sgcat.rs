//! End-to-end: the real `sgcat` against a real `soundgated`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{
    bin, channel, exe_id, read_wav, sine, tone_at, tone_fit, wait_for, write_wav, Daemon,
};
use std::process::Stdio;
use std::time::Duration;

fn file_sink(format: &str) -> String {
    format!(
        r#"
[[sink]]
name = "out"
backend = "file"
path = "$DIR/mix.wav"
rate = 48000
channels = 2
format = "{format}"
quantum = 256
"#
    )
}

fn grant_monitor(app: &str) -> String {
    format!("\n[[rule]]\napp = \"{app}\"\naction = \"record\"\ntarget = \"out.monitor\"\ndecision = \"allow\"\n")
}

#[test]
fn two_clients_mix_sample_accurately_with_their_volumes() {
    let mut d = Daemon::start(&file_sink("f32le"));
    let (a, b) = (d.path("a.wav"), d.path("b.wav"));
    // 2 s each: 440 Hz at 0.3 (mono), 1 kHz at 0.4 (stereo) played at 50 %.
    write_wav(&a, 48_000, 1, &sine(440.0, 48_000, 96_000, 0.3, 1), true);
    write_wav(&b, 48_000, 2, &sine(1000.0, 48_000, 96_000, 0.4, 2), true);
    let pa = d
        .sgcat()
        .arg("-p")
        .arg(&a)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pb = d
        .sgcat()
        .args(["-p", "--volume", "50%"])
        .arg(&b)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for p in [pa, pb] {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sgcat failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = d.stop();
    let (spec, samples) = read_wav(&d.path("mix.wav"));
    assert_eq!((spec.sample_rate, spec.channels), (48_000, 2), "{log}");
    for ch in 0..2 {
        let x = channel(&samples, 2, ch);
        let start = common::onset(&x, 1e-6).expect("the sink wrote silence only");
        // Both clients start within a fraction of a second of each other and play 2 s, so
        // 0.6–1.1 s after the first onset both are playing. 24000 samples hold whole periods
        // of both tones, so the fit is exact.
        let w = &x[start + 28_800..start + 28_800 + 24_000];
        let f440 = tone_fit(w, 440.0, 48_000);
        let f1k = tone_fit(w, 1000.0, 48_000);
        let amp = |(c, s): (f64, f64)| (c * c + s * s).sqrt();
        assert!(
            (amp(f440) - 0.3).abs() < 1e-3,
            "440 Hz amplitude {}",
            amp(f440)
        );
        assert!(
            (amp(f1k) - 0.2).abs() < 1e-3,
            "1 kHz amplitude {} (volume 50 %)",
            amp(f1k)
        );
        let worst = w
            .iter()
            .enumerate()
            .map(|(n, &v)| {
                (f64::from(v) - tone_at(f440, 440.0, 48_000, n) - tone_at(f1k, 1000.0, 48_000, n))
                    .abs()
            })
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-4,
            "output differs from the sum of the two signals by {worst}"
        );
    }
}

#[test]
fn a_44100_hz_file_plays_at_48000_hz_with_its_pitch() {
    let mut d = Daemon::start(&file_sink("s16le"));
    let input = d.path("cd.wav");
    write_wav(
        &input,
        44_100,
        2,
        &sine(1000.0, 44_100, 66_150, 0.5, 2),
        false,
    );
    let out = d.sgcat().arg("-p").arg(&input).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.stop();
    let (spec, samples) = read_wav(&d.path("mix.wav"));
    assert_eq!(spec.sample_rate, 48_000);
    let x = channel(&samples, 2, 0);
    let start = common::onset(&x, 1e-3).unwrap();
    let end = x.iter().rposition(|v| v.abs() > 1e-3).unwrap();
    let played = (end - start) as f64 / 48_000.0;
    assert!(
        (played - 1.5).abs() < 0.01,
        "1.5 s of audio became {played:.4} s"
    );
    let w = &x[start + 12_000..start + 12_000 + 48_000];
    let f = common::dominant_frequency(w, 48_000, 900.0, 1100.0);
    assert!((f - 1000.0).abs() < 0.5, "pitch moved: {f} Hz");
    let amp = {
        let (c, s) = tone_fit(w, f, 48_000);
        (c * c + s * s).sqrt()
    };
    assert!((amp - 0.5).abs() < 0.01, "amplitude {amp}");
}

#[test]
fn recording_a_monitor_without_a_grant_is_refused() {
    let d = Daemon::start(&file_sink("f32le"));
    // The victim whose mix the attacker wants to hear.
    let victim = common::Victim::start(&d);
    let rec = d.path("rec.wav");
    let out = d
        .sgcat()
        .args(["-r", "--device", "out.monitor", "--duration", "0.5"])
        .arg(&rec)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(
        err.trim(),
        "sgcat: permission denied: recording from out.monitor needs a grant"
    );
    assert!(
        !rec.exists() || std::fs::metadata(&rec).unwrap().len() == 0,
        "something was delivered"
    );
    // The monitor is not even listed for this client.
    let c = d.client("probe");
    assert!(c.sources().unwrap().iter().all(|s| s.name != "out.monitor"));
    victim.check();
}

/// Records the monitor while playing a tone; returns (sink output, recording) as f32.
fn record_what_the_sink_plays(format: &str) -> (Vec<f32>, Vec<f32>) {
    let sgcat = exe_id(&bin("sgcat"));
    let mut d = Daemon::start(&(file_sink(format) + &grant_monitor(&sgcat)));
    let (tone, rec) = (d.path("tone.wav"), d.path("rec.wav"));
    write_wav(
        &tone,
        48_000,
        2,
        &sine(523.25, 48_000, 24_000, 0.6, 2),
        true,
    );
    let recorder = d
        .sgcat()
        .args([
            "-r",
            "--device",
            "out.monitor",
            "--format",
            format,
            "--duration",
            "1.5",
        ])
        .arg(&rec)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || d
            .log()
            .contains("record stream created")),
        "{}",
        d.log()
    );
    let out = d.sgcat().arg("-p").arg(&tone).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = recorder.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "recorder: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.stop();
    let (rspec, recorded) = read_wav(&rec);
    assert_eq!((rspec.sample_rate, rspec.channels), (48_000, 2));
    assert_eq!(
        recorded.len(),
        2 * 72_000,
        "--duration 1.5 gives exactly 72000 frames"
    );
    (read_wav(&d.path("mix.wav")).1, recorded)
}

fn aligned(x: &[f32]) -> &[f32] {
    let start = common::onset(x, 1e-6).expect("nothing but silence");
    &x[start - start % 2..]
}

#[test]
fn a_granted_monitor_recording_is_bit_exact_in_f32() {
    let (played, recorded) = record_what_the_sink_plays("f32le");
    let (p, r) = (aligned(&played), aligned(&recorded));
    let n = 2 * 20_000;
    assert!(p.len() >= n && r.len() >= n);
    for i in 0..n {
        assert_eq!(
            p[i].to_bits(),
            r[i].to_bits(),
            "sample {i}: sink {} vs recording {}",
            p[i],
            r[i]
        );
    }
}

#[test]
fn a_granted_monitor_recording_is_within_one_lsb_in_s16() {
    let (played, recorded) = record_what_the_sink_plays("s16le");
    let (p, r) = (aligned(&played), aligned(&recorded));
    let n = 2 * 20_000;
    assert!(p.len() >= n && r.len() >= n);
    for i in 0..n {
        let diff = ((p[i] - r[i]) * 32_768.0).abs();
        assert!(
            diff <= 1.0,
            "sample {i}: sink {} vs recording {} ({diff} LSB)",
            p[i],
            r[i]
        );
    }
}

#[test]
fn a_killed_client_leaves_no_stream_fd_or_mapping() {
    let d = Daemon::start(&file_sink("f32le").replace("file\"\npath = \"$DIR/mix.wav\"", "null\""));
    let pid = d.pid();
    // The harness's probe connection must be gone before the baseline is taken.
    assert!(
        wait_for(Duration::from_secs(5), || d
            .log()
            .contains("client disconnected")),
        "{}",
        d.log()
    );
    let baseline = common::fd_count(pid);
    let long = d.path("long.wav");
    write_wav(
        &long,
        48_000,
        2,
        &sine(300.0, 48_000, 48_000 * 20, 0.2, 2),
        true,
    );
    let mut player = d
        .sgcat()
        .arg("-p")
        .arg(&long)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || common::maps_with(
            pid,
            "soundgate-play"
        ) > 0),
        "the daemon never mapped the stream's ring"
    );
    assert!(common::fd_count(pid) > baseline);
    player.kill().unwrap();
    player.wait().unwrap();
    let clean = wait_for(Duration::from_secs(10), || {
        common::maps_with(pid, "soundgate-play") == 0 && common::fd_count(pid) == baseline
    });
    assert!(
        clean,
        "left behind: {} mappings, {} fds (baseline {baseline})",
        common::maps_with(pid, "soundgate-play"),
        common::fd_count(pid)
    );
    assert!(
        wait_for(Duration::from_secs(5), || d.log().contains("streams=1")),
        "{}",
        d.log()
    );
}

#[test]
fn no_config_means_a_null_sink_named_default_that_plays() {
    let d = Daemon::start_default();
    assert!(d.log().contains("built-in defaults"), "{}", d.log());
    let c = d.client("probe");
    let sinks = c.sinks().unwrap();
    assert_eq!(sinks.len(), 1);
    assert_eq!(sinks[0].name, "default");
    assert_eq!(
        (
            sinks[0].spec.rate,
            sinks[0].spec.channels,
            sinks[0].backend.as_str()
        ),
        (48_000, 2, "null")
    );
    let tone = d.path("t.wav");
    write_wav(&tone, 48_000, 2, &sine(440.0, 48_000, 4_800, 0.2, 2), false);
    let out = d.sgcat().arg("-p").arg(&tone).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn raw_stdin_playback_and_errors_have_exit_codes() {
    let d = Daemon::start(&file_sink("s16le"));
    let mut p = d
        .sgcat()
        .args([
            "-p",
            "--raw",
            "--rate",
            "48000",
            "--channels",
            "1",
            "--format",
            "s16le",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = p.stdin.take().unwrap();
        let bytes: Vec<u8> = sine(440.0, 48_000, 4_800, 0.3, 1)
            .iter()
            .flat_map(|s| ((s * 32767.0) as i16).to_le_bytes())
            .collect();
        stdin.write_all(&bytes).unwrap();
    }
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tone = d.path("t.wav");
    write_wav(&tone, 48_000, 1, &sine(440.0, 48_000, 480, 0.2, 1), false);
    let out = d
        .sgcat()
        .args(["-p", "--device", "nosuch"])
        .arg(&tone)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.sgcat().arg("-p").arg("-r").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(bin("sgcat"))
        .args(["--server", "/nonexistent/sock", "-p"])
        .arg(&tone)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("sgcat: cannot connect to soundgate at /nonexistent/sock"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
