#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The ALSA backend end to end, without a sound card: alsa-lib's `file` plugin over its `null`
//! PCM, declared in an ALSA config the daemon reads through `ALSA_CONFIG_PATH`. The sink's PCM
//! writes what the engine plays into a raw file; the source's PCM reads its capture data from
//! another (`infile`). Both are timer-clocked (the plugins do not pace themselves).

mod common;

use common::{wait_for, Daemon};
use soundgate_proto::client::{PlaybackOptions, RecordOptions};
use soundgate_proto::wire::{DeviceKind, DeviceState, ErrorKind};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

const RATE: u32 = 48_000;
/// Seconds of capture data in the infile (long, so a slow start never reaches its end).
const IN_SECONDS: usize = 30;

struct Alsa {
    _dir: tempfile::TempDir,
    out: PathBuf,
    input: Vec<i16>,
}

/// Writes the ALSA config and the capture file once, and points `ALSA_CONFIG_PATH` at it
/// before any test starts a daemon (the daemons inherit it).
fn alsa() -> &'static Alsa {
    static ALSA: OnceLock<Alsa> = OnceLock::new();
    ALSA.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("sg-alsa-").tempdir().unwrap();
        let out = dir.path().join("out.raw");
        let infile = dir.path().join("in.raw");
        // A pseudo-random sequence: any 16 samples in a row occur once.
        let mut x: u32 = 0x1234_5678;
        let input: Vec<i16> = (0..RATE as usize * IN_SECONDS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 16) as u16 as i16
            })
            .collect();
        let bytes: Vec<u8> = input.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&infile, bytes).unwrap();
        let conf = dir.path().join("asound.conf");
        std::fs::write(
            &conf,
            format!(
                "</usr/share/alsa/alsa.conf>\n\
                 pcm.sg_out {{ type file slave.pcm \"null\" file \"{}\" format \"raw\" }}\n\
                 pcm.sg_in {{ type file slave.pcm \"null\" file \"/dev/null\" infile \"{}\" format \"raw\" }}\n",
                out.display(),
                infile.display()
            ),
        )
        .unwrap();
        std::env::set_var("ALSA_CONFIG_PATH", &conf);
        Alsa {
            _dir: dir,
            out,
            input,
        }
    })
}

fn my_app_id() -> String {
    format!(
        "exe:{}",
        std::fs::read_link("/proc/self/exe").unwrap().display()
    )
}

fn config() -> String {
    format!(
        r#"
[engine]
realtime_priority = "off"

[[sink]]
name = "speakers"
backend = "alsa"
device = "sg_out"
clock = "timer"
rate = 48000
channels = 2
format = "s16le"
quantum = 480

[[source]]
name = "mic"
backend = "alsa"
device = "sg_in"
clock = "timer"
rate = 48000
channels = 1
format = "s16le"
quantum = 480

[[rule]]
app = "{}"
action = "record"
target = "mic"
decision = "allow"
"#,
        my_app_id()
    )
}

const STEREO: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: RATE,
    channels: 2,
};

fn play_tone(d: &Daemon, name: &str, freq: f64, seconds: f64) -> std::thread::JoinHandle<()> {
    let client = d.client(name);
    let name = name.to_string();
    std::thread::spawn(move || {
        let mut opts = PlaybackOptions::new(&name, STEREO);
        opts.latency_ms = 200;
        let mut p = client.playback(opts).unwrap();
        let frames = (f64::from(RATE) * seconds) as usize;
        let bytes: Vec<u8> = common::sine(freq, RATE, frames, 0.25, 2)
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        for chunk in bytes.chunks(4800 * 8) {
            p.write(chunk).unwrap();
        }
        p.drain().unwrap();
    })
}

#[test]
fn two_clients_mix_into_the_alsa_file_and_capture_reaches_only_the_authorised_client() {
    let a = alsa();
    let _ = std::fs::remove_file(&a.out);
    let mut d = Daemon::start(&config());
    let log = d.log();
    assert!(
        log.contains("ALSA PCM \"sg_out\" granted s16le 2ch 48000Hz"),
        "granted parameters are logged:\n{log}"
    );
    let probe = d.client("probe");
    let sinks = probe.sinks().unwrap();
    let speakers = sinks.iter().find(|s| s.name == "speakers").unwrap();
    assert_eq!(speakers.backend, "alsa");
    assert_eq!(speakers.device.as_deref(), Some("sg_out"));
    assert_eq!(speakers.clock, "timer");
    assert_eq!(speakers.state, DeviceState::Running);
    assert!(speakers.buffer_frames > 0, "{speakers:?}");
    let sources = probe.sources().unwrap();
    let mic = sources.iter().find(|s| s.name == "mic").unwrap();
    assert_eq!(mic.kind, DeviceKind::Capture);
    assert_eq!(
        probe.server_info().unwrap().default_source.as_deref(),
        Some("mic")
    );

    // Capture: an authorised client gets the infile's samples exactly, in order.
    let mono = StreamSpec {
        format: SampleFormat::S16Le,
        rate: RATE,
        channels: 1,
    };
    let recorder = d.client("recorder");
    let mut opts = RecordOptions::new("rec", mono);
    opts.device = Some("mic".into());
    opts.latency_ms = 500;
    let mut rec = recorder.record(opts).unwrap();
    let mut got = Vec::new();
    let ok = wait_for(Duration::from_secs(30), || {
        rec.read(&mut got, Some(Duration::from_millis(200)))
            .unwrap();
        got.len() >= RATE as usize // half a second of s16 mono
    });
    assert!(ok, "recorded only {} bytes", got.len());
    let samples: Vec<i16> = got
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let start = a
        .input
        .windows(16)
        .position(|w| w == &samples[..16])
        .expect("the first recorded samples are not in the capture file");
    assert!(start + samples.len() <= a.input.len());
    assert!(
        samples == a.input[start..start + samples.len()],
        "the recording differs from the capture file from offset {start}"
    );

    // An unauthorised client (sgcat: another app) is refused with a permission error.
    let out = d
        .sgcat()
        .args(["--record", "--device", "mic", "--duration", "0.1"])
        .arg(d.path("denied.wav"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "sgcat said: {err}");

    // Playback: two clients' tones arrive in the ALSA output file as their mix.
    let t1 = play_tone(&d, "low", 440.0, 1.5);
    let t2 = play_tone(&d, "high", 1000.0, 1.5);
    t1.join().unwrap();
    t2.join().unwrap();
    d.stop();
    let raw = std::fs::read(&a.out).unwrap();
    let all: Vec<f32> = raw
        .chunks_exact(2)
        .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0)
        .collect();
    let left = common::channel(&all, 2, 0);
    let block = 4800;
    let both = left
        .chunks_exact(block)
        .filter(|b| {
            let (a440, _) = common::tone(b, 440.0, RATE);
            let (a1000, _) = common::tone(b, 1000.0, RATE);
            (a440 - 0.25).abs() < 0.02 && (a1000 - 0.25).abs() < 0.02
        })
        .count();
    assert!(
        both >= 5,
        "expected the two tones mixed in at least 5 blocks of 100 ms, found {both} ({} frames in the file)",
        left.len()
    );
}

#[test]
fn a_missing_pcm_is_one_line_naming_it_and_the_daemon_starts_with_what_works() {
    let _ = alsa();
    let d = Daemon::start(
        r#"
[engine]
realtime_priority = "off"

[[sink]]
name = "ok"
backend = "null"

[[sink]]
name = "ghost"
backend = "alsa"
device = "sg_no_such_pcm"

[[source]]
name = "ghostmic"
backend = "alsa"
device = "sg_no_such_pcm_in"
"#,
    );
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("ALSA PCM \"sg_no_such_pcm\""))
        .unwrap_or_else(|| panic!("no error line for the sink:\n{log}"));
    assert!(
        line.contains("cannot open for playback: No such file or directory"),
        "{line}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("ALSA PCM \"sg_no_such_pcm_in\""))
        .unwrap_or_else(|| panic!("no error line for the source:\n{log}"));
    assert!(line.contains("cannot open for capture"), "{line}");
    let c = d.client("probe");
    let sinks = c.sinks().unwrap();
    assert_eq!(
        sinks.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["ok"]
    );
    assert!(!c.sources().unwrap().iter().any(|s| s.name == "ghostmic"));
}

#[test]
fn without_a_card_or_config_it_starts_on_null_devices_and_plays() {
    let _ = alsa();
    let d = Daemon::start_default();
    let c = d.client("probe");
    let info = c.server_info().unwrap();
    assert!(
        info.notice
            .as_deref()
            .is_some_and(|n| n.contains("no sound card")),
        "{info:?}"
    );
    assert!(d.log().contains("no sound card found"));
    let sinks = c.sinks().unwrap();
    assert_eq!(sinks.len(), 1);
    assert_eq!(sinks[0].backend, "null");
    let src = c.sources().unwrap();
    assert!(src
        .iter()
        .any(|s| s.kind == DeviceKind::Capture && s.backend == "null"));
    // Recording silence from the null source needs consent like any capture device.
    let e = c
        .record(RecordOptions::new(
            "r",
            StreamSpec {
                format: SampleFormat::S16Le,
                rate: 48_000,
                channels: 1,
            },
        ))
        .unwrap_err();
    assert!(
        matches!(e, soundgate_proto::client::ClientError::Server(ref w) if w.kind == ErrorKind::Denied),
        "{e}"
    );
    let wav = d.path("tone.wav");
    common::write_wav(
        &wav,
        48_000,
        2,
        &common::sine(440.0, 48_000, 9600, 0.2, 2),
        false,
    );
    let out = d.sgcat().arg("--playback").arg(&wav).output().unwrap();
    assert!(
        out.status.success(),
        "sgcat --playback failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
