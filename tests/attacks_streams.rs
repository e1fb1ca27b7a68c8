#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Attacks on other clients' streams, exclusive sinks and moves (issue 5 rows 4, 5 and 10):
//! each forbidden request is refused with the right error kind while the victim's stream keeps
//! playing without an underrun.

mod common;

use common::{wait_for, Daemon};
use soundgate_proto::client::{Client, ClientError, Playback, PlaybackOptions, RecordOptions};
use soundgate_proto::wire::{ErrorKind, Reply, Request, StreamId, StreamInfo};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

const LONG: Duration = Duration::from_secs(10);

fn null_sink(name: &str) -> String {
    format!(
        "[[sink]]\nname = \"{name}\"\nbackend = \"null\"\nrate = 48000\nchannels = 2\n\
         format = \"f32le\"\nquantum = 256\n"
    )
}

/// A client that plays a tone on one sink until told to stop, then reports its stream.
struct Player {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<StreamInfo>,
    id: StreamId,
    started: Instant,
}

impl Player {
    fn start(client: Client, device: &str, freq: f64) -> Player {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (tx, rx) = mpsc::channel();
        let device = device.to_string();
        let thread = std::thread::spawn(move || {
            let mut opts = PlaybackOptions::new("victim", SPEC);
            opts.latency_ms = 300;
            opts.device = Some(device);
            let mut p = client.playback(opts).expect("victim stream");
            tx.send(p.id()).unwrap();
            let chunk: Vec<u8> = common::sine(freq, 48_000, 480, 0.2, 2)
                .iter()
                .flat_map(|s| s.to_le_bytes())
                .collect();
            while !flag.load(Ordering::Relaxed) {
                p.write(&chunk).expect("victim write");
            }
            p.info().expect("victim info")
        });
        let id = rx.recv_timeout(LONG).expect("the victim's stream started");
        Player {
            stop,
            thread,
            id,
            started: Instant::now(),
        }
    }

    /// Stops; asserts the stream played throughout without an underrun; returns its info.
    fn finish(self) -> StreamInfo {
        if let Some(rest) = Duration::from_millis(1500).checked_sub(self.started.elapsed()) {
            std::thread::sleep(rest);
        }
        self.stop.store(true, Ordering::Relaxed);
        let info = self.thread.join().expect("victim thread");
        assert_eq!(info.underruns, 0, "the victim underran: {info:?}");
        assert!(info.frames > 48_000, "the victim played only {info:?}");
        info
    }
}

fn refused(r: Result<(Reply, Vec<std::os::fd::OwnedFd>), ClientError>) -> (ErrorKind, String) {
    match r {
        Err(ClientError::Server(e)) => (e.kind, e.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn move_req(stream: StreamId, device: &str) -> Request {
    Request::MoveStream {
        stream,
        device: device.into(),
    }
}

fn playback(c: &Client, device: &str, exclusive: bool) -> Result<Playback, ClientError> {
    let mut opts = PlaybackOptions::new("p", SPEC);
    opts.device = Some(device.into());
    opts.exclusive = exclusive;
    opts.corked = true;
    c.playback(opts)
}

fn playback_err(c: &Client, device: &str, exclusive: bool) -> (ErrorKind, String) {
    match playback(c, device, exclusive) {
        Err(ClientError::Server(e)) => (e.kind, e.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// Row 4: another client can neither move nor delete (nor touch) a playing stream.
#[test]
fn others_cannot_move_or_kill_a_playing_stream() {
    let d = Daemon::start(&format!("{}{}", null_sink("speakers"), null_sink("other")));
    let victim = Player::start(d.client("victim"), "speakers", 440.0);
    let attacker = d.client("attacker");
    // The victim's stream by its id, and every id near it (the attacker owns none of them).
    for id in (1..=victim.id + 8).rev() {
        for req in [
            move_req(id, "other"),
            Request::DeleteStream { stream: id },
            Request::SetVolume {
                stream: id,
                volume: 0.0,
            },
            Request::SetMute {
                stream: id,
                muted: true,
            },
            Request::Cork {
                stream: id,
                corked: true,
            },
        ] {
            let (kind, msg) = refused(attacker.request(req.clone(), &[]));
            assert_eq!(kind, ErrorKind::NotFound, "{req:?}: {msg}");
        }
    }
    let info = victim.finish();
    assert_eq!(info.device, "speakers", "the victim's stream was moved");
    assert_eq!((info.volume, info.muted, info.corked), (1.0, false, false));
    assert!(attacker.server_info().is_ok());
}

/// Row 5: exclusive use needs `passthrough`; while it lasts, other clients' new or moved
/// streams are refused as busy, and streams already playing are never cut.
#[test]
fn exclusive_needs_a_grant_and_keeps_other_clients_out() {
    let config = format!(
        "{}{}{}[[rule]]\naction = \"passthrough\"\ntarget = \"hifi*\"\ndecision = \"allow\"\n",
        null_sink("speakers"),
        null_sink("hifi"),
        null_sink("hifi2")
    );
    let d = Daemon::start(&config);
    let victim = Player::start(d.client("victim"), "hifi", 440.0);
    let a = d.client("a");
    let b = d.client("b");

    // Without a grant (speakers has no passthrough rule): denied.
    let (kind, msg) = playback_err(&a, "speakers", true);
    assert_eq!(kind, ErrorKind::Denied, "{msg}");
    // Where another client already plays: busy, and the victim plays on.
    let (kind, msg) = playback_err(&a, "hifi", true);
    assert_eq!(kind, ErrorKind::Busy, "{msg}");

    // An idle sink: granted.
    let exclusive = playback(&a, "hifi2", true).expect("exclusive stream on an idle sink");
    let info = exclusive.info().unwrap();
    assert!(info.exclusive, "{info:?}");
    // Other clients can neither open a stream there nor move one there.
    let (kind, msg) = playback_err(&b, "hifi2", false);
    assert_eq!(kind, ErrorKind::Busy, "{msg}");
    assert!(msg.contains("exclusive use by another client"), "{msg}");
    let (kind, msg) = playback_err(&b, "hifi2", true);
    assert_eq!(kind, ErrorKind::Busy, "{msg}");
    let bs = playback(&b, "speakers", false).unwrap();
    let (kind, msg) = refused(b.request(move_req(bs.id(), "hifi2"), &[]));
    assert_eq!(kind, ErrorKind::Busy, "{msg}");
    assert_eq!(bs.info().unwrap().device, "speakers");
    // The holder itself may add streams to its sink.
    let second = playback(&a, "hifi2", false).expect("the exclusive holder's second stream");

    // Once the holder is gone, the sink is free again.
    drop((second, exclusive, a));
    assert!(
        wait_for(LONG, || playback(&b, "hifi2", false).is_ok()),
        "hifi2 stayed exclusive after its holder left"
    );
    victim.finish();
}

/// Row 10: a stream cannot be moved where its owner may not play — not by the owner, not by an
/// administrator — while allowed moves carry the audio on to the new sink; record streams
/// move between monitors under the same rule.
#[test]
fn moves_respect_the_owners_policy_even_for_admins() {
    let me = common::exe_id(&std::env::current_exe().unwrap());
    let sgcat = common::exe_id(&common::bin("sgcat"));
    let config = format!(
        "{}{}{}[[sink]]\nname = \"elsewhere\"\nbackend = \"file\"\npath = \"$DIR/elsewhere.wav\"\n\
         rate = 48000\nchannels = 2\nformat = \"f32le\"\nquantum = 256\n\
         [[rule]]\napp = \"{sgcat}\"\naction = \"play\"\ntarget = \"secret\"\ndecision = \"deny\"\n\
         [[rule]]\napp = \"{me}\"\naction = \"play\"\ntarget = \"vault\"\ndecision = \"deny\"\n\
         [[rule]]\napp = \"{me}\"\naction = \"record\"\ntarget = \"speakers.monitor\"\ndecision = \"allow\"\n\
         [[rule]]\napp = \"{me}\"\naction = \"record\"\ntarget = \"elsewhere.monitor\"\ndecision = \"allow\"\n",
        null_sink("speakers"),
        null_sink("secret"),
        null_sink("vault"),
    );
    let mut d = Daemon::start(&config);
    let admin = d.admin("admin");

    // The owner (this test's own client) may not play to vault: its move there is denied.
    let owner = d.client("owner");
    let mine = Player::start(owner.clone(), "speakers", 400.0);
    let (kind, msg) = refused(owner.request(move_req(mine.id, "vault"), &[]));
    assert_eq!(kind, ErrorKind::Denied, "{msg}");
    // A move it may make succeeds, and the audio goes on on the new sink.
    let (reply, _) = owner.request(move_req(mine.id, "elsewhere"), &[]).unwrap();
    assert_eq!(reply, Reply::Ok);
    let start = owner.stream_info(mine.id).unwrap();
    assert_eq!(start.device, "elsewhere");
    assert!(
        wait_for(LONG, || {
            owner.stream_info(mine.id).unwrap().frames > start.frames + 24_000
        }),
        "the moved stream does not advance on its new sink"
    );

    // sgcat's stream may not go to secret, even when an administrator asks (who may play there).
    let wav = d.path("tone.wav");
    common::write_wav(
        &wav,
        48_000,
        2,
        &common::sine(660.0, 48_000, 48_000 * 30, 0.2, 2),
        false,
    );
    let mut player = d
        .sgcat()
        .args(["-p", "-d", "speakers", "--latency-msec", "300"])
        .arg(&wav)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ours = [owner.client_id(), admin.client_id()];
    let mut theirs = None;
    assert!(
        wait_for(LONG, || {
            theirs = admin
                .streams()
                .unwrap()
                .into_iter()
                .find(|s| !ours.contains(&s.client));
            theirs.is_some()
        }),
        "sgcat's stream did not appear"
    );
    let theirs = theirs.unwrap().id;
    let _admins = playback(&admin, "secret", false).expect("the admin itself may play to secret");
    let (kind, msg) = refused(admin.request(move_req(theirs, "secret"), &[]));
    assert_eq!(kind, ErrorKind::Denied, "{msg}");
    assert_eq!(admin.stream_info(theirs).unwrap().device, "speakers");
    let (reply, _) = admin.request(move_req(theirs, "elsewhere"), &[]).unwrap();
    assert_eq!(reply, Reply::Ok);
    let f0 = admin.stream_info(theirs).unwrap().frames;
    assert!(
        wait_for(LONG, || {
            admin.stream_info(theirs).unwrap().frames > f0 + 24_000
        }),
        "sgcat's moved stream does not advance"
    );

    // A record stream moves between monitors its owner may record, and only those.
    let mut opts = RecordOptions::new("rec", SPEC);
    opts.device = Some("speakers.monitor".into());
    opts.latency_ms = 500;
    let mut rec = owner.record(opts).unwrap();
    let (kind, msg) = refused(owner.request(move_req(rec.id(), "secret.monitor"), &[]));
    assert_eq!(kind, ErrorKind::Denied, "{msg}");
    let (reply, _) = owner
        .request(move_req(rec.id(), "elsewhere.monitor"), &[])
        .unwrap();
    assert_eq!(reply, Reply::Ok);
    assert_eq!(
        owner.stream_info(rec.id()).unwrap().device,
        "elsewhere.monitor"
    );
    // What elsewhere plays (both tones) now reaches the recorder.
    let mut peak = 0.0f32;
    let heard = wait_for(LONG, || {
        let mut buf = Vec::new();
        rec.read(&mut buf, Some(Duration::from_millis(100)))
            .unwrap();
        for s in buf.chunks_exact(4) {
            peak = peak.max(f32::from_le_bytes(s.try_into().unwrap()).abs());
        }
        peak > 0.1
    });
    assert!(heard, "the moved record stream hears nothing (peak {peak})");

    let _ = player.kill();
    let _ = player.wait();
    let info = mine.finish();
    assert_eq!(info.device, "elsewhere");
    d.stop();
    // The file sink received both moved streams.
    let (_, samples) = common::read_wav(&d.path("elsewhere.wav"));
    let left = common::channel(&samples, 2, 0);
    // Strongest half second of each tone.
    let strongest = |freq: f64| {
        left.chunks(24_000)
            .map(|w| common::tone(w, freq, 48_000).0)
            .fold(0.0f64, f64::max)
    };
    let (a400, a660) = (strongest(400.0), strongest(660.0));
    assert!(a400 > 0.1, "400 Hz missing from elsewhere.wav ({a400})");
    assert!(a660 > 0.1, "660 Hz missing from elsewhere.wav ({a660})");
}
