#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Device faults through the real ALSA code path, in-process: the daemon's core, engines and
//! native transport run in this test process on an ALSA `file` PCM (alsa-lib's plugin over
//! `null`), wrapped by the fault-injection seam (`backend::fault`) so that it returns EPIPE,
//! ESTRPIPE and ENODEV mid-stream. A client keeps playing throughout.

use soundgate_proto::client::{Client, PlaybackOptions};
use soundgate_proto::wire::{DeviceState, StreamInfo};
use soundgate_proto::{SampleFormat, StreamSpec};
use soundgated::backend::fault;
use soundgated::config::Config;
use soundgated::core::Core;
use soundgated::transport;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::F32Le,
    rate: 48_000,
    channels: 2,
};

#[test]
fn xrun_suspend_and_unplug_keep_the_client_playing() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("asound.conf");
    std::fs::write(
        &conf,
        format!(
            "</usr/share/alsa/alsa.conf>\n\
             pcm.sg_fault_out {{ type file slave.pcm \"null\" file \"{}\" format \"raw\" }}\n",
            dir.path().join("out.raw").display()
        ),
    )
    .unwrap();
    // The only test in this binary: nothing else reads the environment concurrently.
    std::env::set_var("ALSA_CONFIG_PATH", &conf);
    let plan = fault::plan("sg_fault_out");

    let config = Config::parse(
        r#"
[engine]
realtime_priority = "off"

[[sink]]
name = "speakers"
backend = "alsa"
device = "sg_fault_out"
clock = "timer"
rate = 48000
channels = 2
format = "s16le"
quantum = 480
default = true

[[sink]]
name = "fallback"
backend = "null"
rate = 48000
channels = 2
quantum = 480
"#,
        Path::new("test.toml"),
    )
    .unwrap();
    let core = Arc::new(Core::new(&config).unwrap());
    let socket = dir.path().join("native");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    {
        let core = Arc::clone(&core);
        let socket = socket.clone();
        rt.block_on(async move {
            let listener = transport::bind(&socket, 0o666).unwrap();
            transport::spawn_housekeeping(&core).unwrap();
            let budget = transport::Budget::new(
                transport::BudgetLimits::apps(&Default::default()),
                transport::BudgetLimits::admin(),
            );
            tokio::spawn(transport::serve(
                core,
                listener,
                transport::Socket::Native,
                budget,
                transport::Settings::default(),
            ));
        });
    }

    // A client that plays until told to stop, publishing its stream's info as it goes.
    let info: Arc<Mutex<Option<StreamInfo>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let player = {
        let (info, stop) = (Arc::clone(&info), Arc::clone(&stop));
        let client = Client::connect(&socket, "player").unwrap();
        std::thread::spawn(move || {
            let mut opts = PlaybackOptions::new("music", SPEC);
            opts.latency_ms = 200;
            let mut p = client.playback(opts).unwrap();
            let chunk: Vec<u8> = (0..960)
                .flat_map(|n| {
                    let s = (0.2 * (n as f32 * 0.0576).sin()).to_le_bytes();
                    [s, s].concat()
                })
                .collect();
            while !stop.load(Ordering::Relaxed) {
                p.write(&chunk).unwrap();
                *info.lock().unwrap() = Some(p.info().unwrap());
            }
            p.info().unwrap()
        })
    };
    let probe = Client::connect(&socket, "probe").unwrap();
    let speakers = || {
        probe
            .sinks()
            .unwrap()
            .into_iter()
            .find(|s| s.name == "speakers")
            .unwrap()
    };
    let stream = || info.lock().unwrap().clone();
    wait_for("the stream to play", Duration::from_secs(20), || {
        stream().is_some_and(|s| s.frames > 4800 && s.device == "speakers")
    });

    // EPIPE: re-prepared and counted.
    plan.inject_once(libc::EPIPE);
    wait_for("an xrun to be counted", Duration::from_secs(20), || {
        speakers().xruns >= 1
    });
    assert_eq!(speakers().state, DeviceState::Running);

    // ESTRPIPE: resumed or re-prepared, counted.
    plan.inject_once(libc::ESTRPIPE);
    wait_for("a suspend to be counted", Duration::from_secs(20), || {
        speakers().suspends >= 1
    });
    assert_eq!(speakers().state, DeviceState::Running);

    // ENODEV: unavailable; the stream moves to the fallback sink and keeps playing.
    plan.set_gone(true);
    wait_for(
        "the sink to become unavailable",
        Duration::from_secs(20),
        || speakers().state == DeviceState::Unavailable,
    );
    let s = speakers();
    assert!(s.detail.is_some(), "{s:?}");
    wait_for(
        "the stream to move to the fallback",
        Duration::from_secs(20),
        || stream().is_some_and(|s| s.device == "fallback"),
    );
    let at = stream().unwrap().frames;
    wait_for(
        "the stream to play on the fallback",
        Duration::from_secs(20),
        || stream().is_some_and(|s| s.frames > at + 9600),
    );

    // The device comes back: the sink reopens it, and the stream moves home.
    plan.set_gone(false);
    wait_for("the sink to come back", Duration::from_secs(30), || {
        speakers().state == DeviceState::Running
    });
    wait_for("the stream to move back", Duration::from_secs(20), || {
        stream().is_some_and(|s| s.device == "speakers")
    });
    let at = stream().unwrap().frames;
    wait_for(
        "the stream to play on the sink again",
        Duration::from_secs(20),
        || stream().is_some_and(|s| s.frames > at + 9600),
    );
    assert!(plan.injected() >= 3);

    stop.store(true, Ordering::Relaxed);
    let last = player.join().unwrap();
    assert_eq!(last.device, "speakers");
    // The server still answers.
    assert!(probe.server_info().is_ok());
    drop(probe);
    rt.shutdown_timeout(Duration::from_secs(2));
}
