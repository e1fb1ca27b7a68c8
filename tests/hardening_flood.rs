//! One client cannot drown the control plane (issue 10, item 4, transport half): a client
//! looping `SetVolume` as fast as it can is slowed to its request rate and then disconnected
//! with a logged reason, while another client's `CreatePlayback` stays quick and an earlier
//! denied monitor attempt is still in the audit log.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::Daemon;
use soundgate_proto::client::{ClientError, PlaybackOptions, RecordOptions};
use soundgate_proto::wire::ErrorKind;
use soundgate_proto::{SampleFormat, StreamSpec};
use std::time::{Duration, Instant};

// A rate well below what even a debug daemon on a loaded machine answers (each SetVolume is
// a synchronous write of stream-settings.json; a loaded CI machine was seen answering 280/s),
// so the synchronous flooder below is over it whatever the machine's speed (the test is about
// the pacing, not about how fast the daemon is).
const CONFIG: &str = r#"
[limits]
requests_per_second = 60
request_burst = 120

[[sink]]
name = "out"
backend = "null"
"#;

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

#[test]
fn a_set_volume_flood_is_slowed_then_cut_off_and_others_carry_on() {
    let d = Daemon::start(CONFIG);
    // An app's attempt to record the monitor is denied and audited, before the flood.
    let snoop = d.client("snoop");
    let mut rec = RecordOptions::new("snoop", SPEC);
    rec.device = Some("out.monitor".into());
    match snoop.record(rec) {
        Err(ClientError::Server(e)) => assert_eq!(e.kind, ErrorKind::Denied, "{e:?}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an app recorded the monitor"),
    }
    drop(snoop);

    // The flooder loops SetVolume for 10 s, reconnecting whenever it is cut off.
    let socket = d.socket();
    let flood = std::thread::spawn(move || {
        let start = Instant::now();
        let mut sent = 0u64;
        let mut connections = 0u64;
        let mut cut_off = Vec::new();
        let mut volume = 0.0f32;
        while start.elapsed() < Duration::from_secs(10) {
            let flooder = soundgate_proto::client::Client::connect(&socket, "flooder").unwrap();
            connections += 1;
            let p = flooder
                .playback(PlaybackOptions::new("flood", SPEC))
                .unwrap();
            while start.elapsed() < Duration::from_secs(10) {
                volume = if volume > 0.5 { 0.1 } else { 0.9 };
                match p.set_volume(volume) {
                    Ok(()) => sent += 1,
                    Err(e) => {
                        cut_off.push(e);
                        break;
                    }
                }
            }
        }
        (sent, connections, start.elapsed(), cut_off)
    });

    // Meanwhile another client opens and closes streams; each CreatePlayback is timed.
    let other = d.client("bystander");
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(9) {
        let t = Instant::now();
        let p = other.playback(PlaybackOptions::new("quick", SPEC)).unwrap();
        times.push(t.elapsed());
        p.close().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let (sent, connections, took, cut_off) = flood.join().unwrap();
    times.sort();
    let median = times[times.len() / 2];
    eprintln!(
        "flooder: {sent} requests on {connections} connections in {took:?}, cut off {} times \
         ({:?}); bystander: {} streams, median CreatePlayback {median:?}, worst {:?}",
        cut_off.len(),
        cut_off.first(),
        times.len(),
        times.last()
    );
    assert!(
        median < Duration::from_millis(50),
        "median CreatePlayback {median:?}"
    );
    // Slowed: no more than a burst (120) per connection plus the rate (60/s, set above) for
    // the time it lasted.
    let allowed = 120.0 * connections as f64 + 60.0 * took.as_secs_f64() * 1.1 + 10.0;
    assert!(
        (sent as f64) <= allowed,
        "{sent} requests in {took:?}: not slowed"
    );
    // And cut off, with the reason given to it and logged.
    assert!(!cut_off.is_empty(), "the flooder was never disconnected");
    for e in &cut_off {
        match e {
            ClientError::Server(e) => {
                assert_eq!(e.kind, ErrorKind::Busy, "{e:?}");
                assert!(e.message.contains("requests/s"), "{e:?}");
            }
            other => panic!("the flooder was cut off by {other:?}"),
        }
    }
    let log = d.log();
    assert!(log.contains("disconnecting: over 60 requests/s"), "{log}");
    // The denied monitor attempt is still in the audit log.
    let audit = std::fs::read_to_string(d.state.join("audit.log")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"deny\"") && l.contains("out.monitor")),
        "the denied record attempt is gone from the audit log"
    );
    // The bystander's connection is intact.
    other.server_info().unwrap();
}
