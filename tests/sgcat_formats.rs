//! `sgcat -p` plays Ogg Vorbis, MP3 and M4A (AAC and ALAC) files, from a path and from
//! standard input, at the right pitch and level into a file sink; a file it cannot read gets
//! one clear line and no decoder log noise. The fixtures are in tests/fixtures (README there).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{channel, dominant_frequency, onset, read_wav, tone, Daemon};
use std::path::{Path, PathBuf};
use std::process::Stdio;

const SINK: &str = r#"
[[sink]]
name = "out"
backend = "file"
path = "$DIR/mix.wav"
rate = 48000
channels = 2
format = "f32le"
quantum = 256
"#;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Plays `name` (from its path, or through stdin) and checks pitch and level of the mix.
fn plays_at_pitch_and_level(name: &str, freq: f64, stdin: bool) {
    let mut d = Daemon::start(SINK);
    let path = fixture(name);
    let out = if stdin {
        d.sgcat()
            .arg("-p")
            .arg("-")
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .unwrap()
    } else {
        d.sgcat().arg("-p").arg(&path).output().unwrap()
    };
    let how = if stdin { "stdin" } else { "path" };
    assert!(
        out.status.success(),
        "sgcat -p {name} ({how}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{name} ({how}): sgcat wrote {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.stop();
    let (spec, mix) = read_wav(&d.path("mix.wav"));
    assert_eq!((spec.sample_rate, spec.channels), (48_000, 2));
    for ch in 0..2 {
        let x = channel(&mix, 2, ch);
        let start = onset(&x, 0.05).unwrap_or_else(|| panic!("{name} ({how}): silence"));
        // 0.3 s from 50 ms after the onset: past any encoder ramp, before the end.
        let body = &x[start + 2_400..start + 2_400 + 14_400];
        let f = dominant_frequency(body, 48_000, freq - 100.0, freq + 100.0);
        assert!(
            (f - freq).abs() < 1.0,
            "{name} ({how}) ch {ch}: {f} Hz, not {freq}"
        );
        let (amp, _) = tone(body, freq, 48_000);
        assert!(
            (amp - 0.5).abs() < 0.03,
            "{name} ({how}) ch {ch}: level {amp}, not 0.5"
        );
    }
}

#[test]
fn ogg_vorbis_plays_at_pitch_and_level() {
    plays_at_pitch_and_level("tone440.ogg", 440.0, false);
    plays_at_pitch_and_level("tone440.ogg", 440.0, true);
}

#[test]
fn mp3_at_44100_hz_plays_at_pitch_and_level() {
    plays_at_pitch_and_level("tone523.mp3", 523.25, false);
    plays_at_pitch_and_level("tone523.mp3", 523.25, true);
}

#[test]
fn aac_in_m4a_plays_at_pitch_and_level() {
    plays_at_pitch_and_level("tone660-aac.m4a", 660.0, false);
    plays_at_pitch_and_level("tone660-aac.m4a", 660.0, true);
}

#[test]
fn alac_in_m4a_plays_at_pitch_and_level() {
    plays_at_pitch_and_level("tone880-alac.m4a", 880.0, false);
    plays_at_pitch_and_level("tone880-alac.m4a", 880.0, true);
}

#[test]
fn an_unreadable_file_gets_one_clear_line_and_no_decoder_noise() {
    let d = Daemon::start(SINK);
    let ogg = std::fs::read(fixture("tone440.ogg")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // An MP3 name and an ID3 tag in front of nothing playable.
        (
            "tagged.mp3",
            [b"ID3\x04\0\0\0\0\0\x10".as_slice(), &[0u8; 64]].concat(),
        ),
        // An Ogg cut inside its headers.
        ("cut.ogg", ogg[..200].to_vec()),
        // An MP4 box header with nothing after it.
        ("empty.m4a", b"\0\0\0\x18ftypM4A \0\0\0\0".to_vec()),
        // Text.
        ("notes.txt", b"just some words, not audio at all\n".to_vec()),
    ];
    for (name, bytes) in cases {
        let path = d.path(name);
        std::fs::write(&path, &bytes).unwrap();
        for stdin in [false, true] {
            let mut cmd = d.sgcat();
            cmd.arg("-p");
            if stdin {
                cmd.arg("-").stdin(std::fs::File::open(&path).unwrap());
            } else {
                cmd.arg(&path).stdin(Stdio::null());
            }
            let out = cmd.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{name} (stdin {stdin}) played");
            assert_eq!(
                err.trim_end().lines().count(),
                1,
                "{name} (stdin {stdin}): one line expected: {err:?}"
            );
            assert!(err.starts_with("sgcat: "), "{name}: {err:?}");
            for noise in ["ERROR", "WARN", "probe", "symphonia"] {
                assert!(!err.contains(noise), "{name} (stdin {stdin}): {err:?}");
            }
        }
    }
}
