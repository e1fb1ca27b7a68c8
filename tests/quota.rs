//! Quotas: one client opening streams until refused leaves every other client able to play.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::Daemon;
use soundgate_proto::client::PlaybackOptions;
use soundgate_proto::wire::ErrorKind;
use soundgate_proto::{SampleFormat, StreamSpec};
use std::time::Duration;

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

fn play_for(client: &soundgate_proto::client::Client, name: &str, d: Duration) -> (u64, u64) {
    let mut opts = PlaybackOptions::new(name, SPEC);
    opts.latency_ms = 300;
    let mut p = client.playback(opts).unwrap();
    let chunk: Vec<u8> = common::sine(440.0, 48_000, 480, 0.1, 2)
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let start = std::time::Instant::now();
    while start.elapsed() < d {
        p.write(&chunk).unwrap();
    }
    let info = p.info().unwrap();
    (info.underruns, info.frames)
}

#[test]
fn a_stream_hog_is_refused_and_others_still_play() {
    let d = Daemon::start(
        "[limits]\nstreams_per_client = 8\nstreams_per_uid = 12\nstreams_total = 64\n\n[[sink]]\nname = \"out\"\nbackend = \"null\"\nquantum = 256\n",
    );
    // A plays throughout.
    let a = d.client("A");
    let player = std::thread::spawn(move || play_for(&a, "A", Duration::from_millis(2500)));

    // B opens streams until refused: by its own quota, with a clear error.
    let b = d.client("B");
    let mut hog = Vec::new();
    let refusal = loop {
        let mut opts = PlaybackOptions::new("hog", SPEC);
        opts.corked = true;
        match b.playback(opts) {
            Ok(p) => hog.push(p),
            Err(e) => break e,
        }
        assert!(hog.len() <= 8, "the per-client quota did not hold");
    };
    assert_eq!(refusal.kind(), Some(ErrorKind::Quota), "{refusal}");
    assert!(refusal.to_string().contains("limit 8"), "{refusal}");
    assert_eq!(hog.len(), 8);

    // C, same uid, can still create a stream and play without underruns.
    let c = d.client("C");
    let (underruns, frames) = play_for(&c, "C", Duration::from_millis(1500));
    assert_eq!(underruns, 0);
    assert!(frames > 48_000);

    // A never noticed.
    let (underruns, frames) = player.join().unwrap();
    assert_eq!(underruns, 0, "A underran while B hogged");
    assert!(frames > 96_000);
    drop(hog);
}

#[test]
fn connections_per_uid_are_bounded() {
    let d = Daemon::start(
        "[limits]\nconnections_per_uid = 4\n\n[[sink]]\nname = \"out\"\nbackend = \"null\"\n",
    );
    // The harness's probe connection may still be closing: wait until it is gone.
    assert!(common::wait_for(Duration::from_secs(5), || d
        .log()
        .contains("client disconnected")));
    let held: Vec<_> = (0..4).map(|i| d.client(&format!("c{i}"))).collect();
    let e = soundgate_proto::client::Client::connect(&d.socket(), "one-too-many").unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Quota), "{e}");
    assert!(e.to_string().contains("limit 4"), "{e}");
    // The connections already open keep working, and a freed slot can be reused.
    assert!(!held[0].sinks().unwrap().is_empty());
    drop(held);
    assert!(common::wait_for(Duration::from_secs(5), || {
        soundgate_proto::client::Client::connect(&d.socket(), "again").is_ok()
    }));
}
