#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! End-to-end: the sample cache. Upload, play into a file sink, privacy between clients (as
//! attacks), the byte quota, bad fds, and freeing on disconnect.

mod common;

use common::{channel, read_wav, sine, tone_fit, wait_for, Daemon};
use soundgate_proto::client::{Client, ClientError};
use soundgate_proto::shm;
use soundgate_proto::wire::{ErrorKind, Reply, Request};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(10);

fn file_sink(extra: &str) -> String {
    format!(
        r#"
{extra}
[[sink]]
name = "out"
backend = "file"
path = "$DIR/mix.wav"
rate = 48000
channels = 2
format = "f32le"
quantum = 256
"#
    )
}

const MONO_F32: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 1,
};

const MONO_S16: StreamSpec = StreamSpec {
    format: SampleFormat::S16Le,
    rate: 48_000,
    channels: 1,
};

fn f32_bytes(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn kind<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (ErrorKind, String) {
    match r {
        Err(ClientError::Server(e)) => (e.kind, e.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// Waits until `client` has no streams left (its sample plays were reaped).
fn wait_played_out(client: &Client) {
    assert!(
        wait_for(LONG, || client.streams().unwrap().is_empty()),
        "sample streams were not removed after playing: {:?}",
        client.streams().unwrap()
    );
}

/// Amplitude of `freq` in the 0.2 s window starting 50 ms after the first sound of channel
/// `ch`, and the loudest sample after `len` frames past that onset (plus a quantum).
fn measure(samples: &[f32], ch: usize, freq: f64, len: usize) -> (f64, f32) {
    let x = channel(samples, 2, ch);
    let start = common::onset(&x, 1e-4).expect("the sink wrote silence only");
    // 9600 samples (0.2 s) hold whole periods of both 1 kHz and 440 Hz, so the fit is exact.
    let w = &x[start + 2400..start + 2400 + 9600];
    let (c, s) = tone_fit(w, freq, 48_000);
    let tail = x
        .get(start + len + 256..)
        .unwrap_or(&[])
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    ((c * c + s * s).sqrt(), tail)
}

#[test]
fn an_uploaded_tone_plays_once_into_the_file_sink() {
    let mut d = Daemon::start(&file_sink(""));
    let c = d.client("chime");
    // 0.3 s of 1 kHz at 0.5, mono f32 at the sink's rate; played at volume 0.5.
    let pcm = f32_bytes(&sine(1000.0, 48_000, 14_400, 0.5, 1));
    let up = c.upload_sample("chime", MONO_F32, &pcm).unwrap();
    assert_eq!((up.frames, up.bytes, up.spec), (14_400, 57_600, MONO_F32));
    let listed = c.samples().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "chime");
    assert_eq!(listed[0].owner, c.client_id());
    assert_eq!((listed[0].frames, listed[0].bytes), (14_400, 57_600));

    c.play_sample("chime", None, 0.5).unwrap();
    wait_played_out(&c);
    // The sample stays cached after playing.
    assert_eq!(c.samples().unwrap().len(), 1);
    drop(c);

    let log = d.stop();
    let (spec, samples) = read_wav(&d.path("mix.wav"));
    assert_eq!((spec.sample_rate, spec.channels), (48_000, 2), "{log}");
    for ch in 0..2 {
        let (amp, tail) = measure(&samples, ch, 1000.0, 14_400);
        assert!(
            (amp - 0.25).abs() < 1e-3,
            "1 kHz amplitude {amp}, want 0.25"
        );
        assert!(
            tail < 1e-6,
            "the sample played more than once (tail peak {tail})"
        );
    }
}

#[test]
fn the_library_resamples_before_upload_and_the_server_refuses_another_rate() {
    let d = Daemon::start(&file_sink(""));
    let c = d.client("resampler");
    let spec44 = StreamSpec {
        format: SampleFormat::S16Le,
        rate: 44_100,
        channels: 1,
    };
    let pcm: Vec<u8> = sine(440.0, 44_100, 4410, 0.3, 1)
        .iter()
        .flat_map(|s| ((s * 32767.0) as i16).to_le_bytes())
        .collect();
    let up = c.upload_sample("click", spec44, &pcm).unwrap();
    assert_eq!(up.spec.rate, 48_000, "resampled to the default sink's rate");
    assert_eq!(up.spec.format, SampleFormat::F32Le);
    assert_eq!(up.frames, 4800, "100 ms at 48 kHz");
    c.play_sample("click", None, 1.0).unwrap();

    // Sent unchanged at 44.1 kHz, the server caches it but will not play it on a 48 kHz sink.
    c.upload_sample_raw("raw44", spec44, &pcm).unwrap();
    let (k, msg) = kind(c.play_sample("raw44", Some("out"), 1.0));
    assert_eq!(k, ErrorKind::Invalid, "{msg}");
    assert!(msg.contains("44100"), "{msg}");
    // Bad arguments are refused before anything is stored.
    let (k, _) = kind(c.upload_sample_raw(&"n".repeat(65), MONO_S16, &[0u8; 2]));
    assert_eq!(k, ErrorKind::Invalid, "65-byte name");
    let eleven_s = vec![0u8; 2 * 48_000 * 11];
    let (k, msg) = kind(c.upload_sample_raw("long", MONO_S16, &eleven_s));
    assert_eq!(k, ErrorKind::Invalid, "{msg}");
    let (k, _) = kind(c.play_sample("click", None, f32::NAN));
    assert_eq!(k, ErrorKind::Invalid, "NaN volume");
    let (k, _) = kind(c.play_sample("click", Some("nowhere"), 1.0));
    assert_eq!(k, ErrorKind::NotFound, "unknown sink");
    let names: Vec<String> = c.samples().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["click", "raw44"]);
    wait_played_out(&c);
}

#[test]
fn another_client_cannot_play_remove_or_see_a_sample_and_the_victim_still_plays() {
    let mut d = Daemon::start(&file_sink(""));
    let victim = d.client("victim");
    let attacker = d.client("attacker");
    let victim_pcm = f32_bytes(&sine(1000.0, 48_000, 14_400, 0.4, 1));
    victim.upload_sample("ding", MONO_F32, &victim_pcm).unwrap();

    // Same uid, same executable: only the connection differs.
    for (what, r) in [
        ("play", attacker.play_sample("ding", None, 4.0).map(|_| ())),
        (
            "play on out",
            attacker.play_sample("ding", Some("out"), 1.0).map(|_| ()),
        ),
        ("remove", attacker.remove_sample("ding")),
    ] {
        let (k, msg) = kind(r);
        assert_eq!(k, ErrorKind::NotFound, "attacker's {what}: {msg}");
    }
    assert!(
        attacker.samples().unwrap().is_empty(),
        "the attacker sees the victim's sample"
    );
    // Its own "ding" (440 Hz) lives in its own namespace and replaces nothing of the victim's.
    let attacker_pcm = f32_bytes(&sine(440.0, 48_000, 4800, 0.4, 1));
    attacker
        .upload_sample("ding", MONO_F32, &attacker_pcm)
        .unwrap();
    let mine = victim.samples().unwrap();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(
        (mine[0].owner, mine[0].frames),
        (victim.client_id(), 14_400)
    );
    // An administrator sees both, with their owners.
    let mut all: Vec<_> = d
        .admin("admin")
        .samples()
        .unwrap()
        .into_iter()
        .map(|s| (s.owner, s.frames))
        .collect();
    all.sort_unstable();
    let mut want = vec![(victim.client_id(), 14_400), (attacker.client_id(), 4800)];
    want.sort_unstable();
    assert_eq!(all, want);

    // The victim's sample still plays, and its play stream is invisible to the attacker.
    let stream = victim.play_sample("ding", None, 1.0).unwrap();
    let (k, _) = kind(attacker.request(Request::DeleteStream { stream }, &[]));
    assert_eq!(
        k,
        ErrorKind::NotFound,
        "attacker deleting the victim's sample stream"
    );
    assert!(attacker.streams().unwrap().iter().all(|s| s.id != stream));
    wait_played_out(&victim);
    drop((victim, attacker));

    let log = d.stop();
    let (_, samples) = read_wav(&d.path("mix.wav"));
    let (amp, tail) = measure(&samples, 0, 1000.0, 14_400);
    assert!(
        (amp - 0.4).abs() < 1e-3,
        "victim's 1 kHz amplitude {amp}\n{log}"
    );
    assert!(tail < 1e-6, "something else played: {tail}");
    let (a440, _) = measure(&samples, 0, 440.0, 14_400);
    assert!(a440 < 1e-3, "the attacker's sound played ({a440})");
}

#[test]
fn the_byte_quota_refuses_uploads_beyond_it_until_a_remove() {
    let d = Daemon::start(&file_sink("[limits]\nsample_cache_bytes = 100000\n"));
    let c = d.client("greedy");
    let s16 = |frames: usize| vec![0u8; frames * 2];
    c.upload_sample_raw("a", MONO_S16, &s16(40_000)).unwrap(); // 80000 bytes
    let (k, msg) = kind(c.upload_sample_raw("b", MONO_S16, &s16(15_000)));
    assert_eq!(k, ErrorKind::Quota, "{msg}");
    assert!(msg.contains("limit 100000 bytes"), "{msg}");
    assert_eq!(c.samples().unwrap().len(), 1, "the refused upload was kept");
    // Replacing "a" by itself counts its new size only.
    c.upload_sample_raw("a", MONO_S16, &s16(50_000)).unwrap(); // 100000 bytes: exactly full
    let (k, _) = kind(c.upload_sample_raw("b", MONO_S16, &s16(1)));
    assert_eq!(k, ErrorKind::Quota, "one frame over");

    // The quota is per client: another one still has all of its own.
    let other = d.client("other");
    other
        .upload_sample_raw("x", MONO_S16, &s16(50_000))
        .unwrap();

    c.remove_sample("a").unwrap();
    let (k, _) = kind(c.remove_sample("a"));
    assert_eq!(k, ErrorKind::NotFound, "removed twice");
    c.upload_sample_raw("b", MONO_S16, &s16(15_000)).unwrap(); // 30000
    c.upload_sample_raw("c", MONO_S16, &s16(30_000)).unwrap(); // 90000
    let (k, msg) = kind(c.upload_sample_raw("d", MONO_S16, &s16(10_000)));
    assert_eq!(k, ErrorKind::Quota, "{msg}");
    let total: u64 = c.samples().unwrap().iter().map(|s| s.bytes).sum();
    assert_eq!(total, 90_000);
}

#[test]
fn sample_plays_count_against_the_stream_quota() {
    let d = Daemon::start(&file_sink("[limits]\nstreams_per_client = 2\n"));
    let c = d.client("spammer");
    // 5 s: these plays outlast the test's requests by far.
    let pcm = f32_bytes(&sine(300.0, 48_000, 240_000, 0.1, 1));
    c.upload_sample("hum", MONO_F32, &pcm).unwrap();
    let a = c.play_sample("hum", None, 1.0).unwrap();
    let b = c.play_sample("hum", None, 1.0).unwrap();
    let (k, msg) = kind(c.play_sample("hum", None, 1.0));
    assert_eq!(k, ErrorKind::Quota, "{msg}");
    // Sample streams are the client's own: it may delete them, which frees the quota once the
    // engine has let go of them (a cycle or so later; until then they still count).
    for stream in [a, b] {
        c.request(Request::DeleteStream { stream }, &[]).unwrap();
    }
    let mut played = None;
    assert!(
        wait_for(Duration::from_secs(10), || {
            match c.play_sample("hum", None, 1.0) {
                Ok(id) => played = Some(id),
                Err(e) => assert_eq!(e.kind(), Some(ErrorKind::Quota), "{e}"),
            }
            played.is_some()
        }),
        "the deleted sample streams never left the quota"
    );
    let stream = played.unwrap();
    // While it plays it is one of the client's streams.
    let streams = c.streams().unwrap();
    assert_eq!(streams.len(), 1, "{streams:?}");
    let s = &streams[0];
    assert_eq!(s.id, stream);
    assert_eq!((s.name.as_str(), s.device.as_str()), ("sample:hum", "out"));
    assert_eq!((s.client, s.underruns), (c.client_id(), 0));
}

fn upload_req(frames: u64) -> Request {
    Request::UploadSample {
        name: "bad".into(),
        spec: MONO_S16,
        frames,
    }
}

fn raw_upload(c: &Client, frames: u64, fds: &[BorrowedFd<'_>]) -> (ErrorKind, String) {
    kind(c.request(upload_req(frames), fds).map(|(r, _)| r))
}

#[test]
fn unsealed_or_wrongly_sized_memfds_are_protocol_errors() {
    let mut d = Daemon::start(&file_sink(""));
    let c = d.client("hostile");
    // Unsealed: the client could shrink it under the server.
    let unsealed = memfd::MemfdOptions::default()
        .allow_sealing(true)
        .create("unsealed")
        .unwrap();
    unsealed.as_file().set_len(200).unwrap();
    let (k, msg) = raw_upload(&c, 100, &[unsealed.as_file().as_fd()]);
    assert_eq!(k, ErrorKind::Protocol, "unsealed: {msg}");
    // Sealed, but not the size the request claims (bigger and smaller).
    let sealed = shm::create_sealed("wrong-size", 200).unwrap();
    for frames in [99, 101, 1000] {
        let (k, msg) = raw_upload(&c, frames, &[sealed.as_fd()]);
        assert_eq!(
            k,
            ErrorKind::Protocol,
            "{frames} frames in 200 bytes: {msg}"
        );
    }
    // Not a memfd at all, no fd, two fds.
    let file = tempfile::tempfile().unwrap();
    file.set_len(200).unwrap();
    let (k, _) = raw_upload(&c, 100, &[file.as_fd()]);
    assert_eq!(k, ErrorKind::Protocol, "regular file");
    let (k, _) = raw_upload(&c, 100, &[]);
    assert_eq!(k, ErrorKind::Protocol, "no fd");
    let (k, _) = raw_upload(&c, 100, &[sealed.as_fd(), sealed.as_fd()]);
    assert_eq!(k, ErrorKind::Protocol, "two fds");
    // Fds on a request that takes none.
    let (k, _) = kind(
        c.request(Request::ListSamples, &[sealed.as_fd()])
            .map(|(r, _)| r),
    );
    assert_eq!(k, ErrorKind::Protocol, "fd with ListSamples");
    assert!(c.samples().unwrap().is_empty(), "a refused upload was kept");

    // The same connection then uploads properly, and what the server cached is a copy:
    // scribbling on the memfd afterwards changes nothing it plays.
    let good: OwnedFd = shm::create_sealed("good", 200).unwrap();
    let f = std::fs::File::from(good);
    f.write_all_at(&[0x11; 200], 0).unwrap();
    let (reply, _) = c.request(upload_req(100), &[f.as_fd()]).unwrap();
    assert_eq!(reply, Reply::Ok);
    f.write_all_at(&[0x22; 200], 0).unwrap();
    assert_eq!(c.samples().unwrap()[0].bytes, 200);
    assert!(d.alive(), "the daemon died");
    let _ = d.stop();
}

#[test]
fn disconnecting_frees_the_samples() {
    let d = Daemon::start(&file_sink(""));
    let admin = d.admin("admin");
    let c = d.client("leaver");
    let id = c.client_id();
    c.upload_sample("one", MONO_S16, &[0u8; 9600]).unwrap();
    c.upload_sample("two", MONO_S16, &[0u8; 9600]).unwrap();
    assert_eq!(admin.samples().unwrap().len(), 2);
    drop(c);
    assert!(
        wait_for(LONG, || admin.samples().unwrap().is_empty()),
        "the samples of client {id} outlived its connection: {:?}",
        admin.samples().unwrap()
    );
    // A new connection with the same name is a new principal: nothing of the old one's.
    let again = d.client("leaver");
    assert_ne!(again.client_id(), id);
    assert!(again.samples().unwrap().is_empty());
    let (k, _) = kind(again.play_sample("one", None, 1.0));
    assert_eq!(k, ErrorKind::NotFound);
}

#[test]
fn sample_cache_bytes_out_of_range_is_a_config_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "-1", "1073741825", "\"8M\""] {
        let path = dir.path().join("soundgate.toml");
        std::fs::write(&path, format!("[limits]\nsample_cache_bytes = {bad}\n")).unwrap();
        let out = std::process::Command::new(common::bin("soundgated"))
            .arg("--check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(
            err.contains(&format!("{}:2:", path.display())),
            "{bad}: no FILE:LINE in {err}"
        );
    }
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, "[limits]\nsample_cache_bytes = 1073741824\n").unwrap();
    let out = std::process::Command::new(common::bin("soundgated"))
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_sample_play_is_announced_to_subscribers_like_any_stream() {
    let d = Daemon::start(&file_sink(""));
    let c = d.client("announcer");
    c.request(Request::Subscribe, &[]).unwrap();
    c.upload_sample(
        "ding",
        MONO_F32,
        &f32_bytes(&sine(1000.0, 48_000, 2_400, 0.3, 1)),
    )
    .unwrap();
    let id = c.play_sample("ding", None, 1.0).unwrap();
    let (mut added, mut removed) = (false, false);
    let seen = wait_for(LONG, || {
        for ev in c.take_events().unwrap() {
            match ev {
                soundgate_proto::wire::Event::StreamAdded(s) if s.id == id => {
                    assert_eq!(s.name, "sample:ding");
                    added = true;
                }
                soundgate_proto::wire::Event::StreamRemoved { stream } if stream == id => {
                    removed = true
                }
                _ => {}
            }
        }
        added && removed
    });
    assert!(seen, "added {added}, removed {removed}");
}
