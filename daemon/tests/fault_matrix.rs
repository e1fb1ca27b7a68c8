#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The device fault matrix, through the real ALSA code path in-process (as in
//! `alsa_faults.rs`): a playback sink and a capture source on alsa-lib's `file` plugin over
//! `null`, wrapped by the fault-injection seam (`backend::fault`). While a player, a microphone
//! recorder and a monitor recorder run, faults are injected at random cycles, in a random
//! (seeded, replayable) order: EPIPE, ESTRPIPE, EIO, storms of EAGAIN, ENODEV (unplugged, then
//! back) and a device that comes back with other parameters (only float samples, while the
//! device was opened for s16le), which the reopen refuses until the device is as before.
//!
//! Holds: no panic; the player's stream moves to the fallback sink while its sink is away and
//! back when it returns, and plays on; both recorders keep receiving data (their streams pause
//! while their device is away); every client keeps exactly its one stream (none lost, none
//! duplicated); each device's xrun and suspend counters equal the EPIPEs and ESTRPIPEs
//! injected into it. `SOUNDGATE_SEED=S` replays an order; `SOUNDGATE_FAULT_STEPS=N` runs more.
//!
//! Lives in the daemon's tests (not `tests/`) because the fault plans are in-process.

use soundgate_proto::client::{Client, PlaybackOptions, RecordOptions};
use soundgate_proto::wire::{DeviceInfo, DeviceState, StreamInfo};
use soundgate_proto::{SampleFormat, StreamSpec};
use soundgated::backend::fault::{self, FaultPlan};
use soundgated::config::Config;
use soundgated::core::Core;
use soundgated::transport;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const OUT: &str = "sg_fm_out";
const IN: &str = "sg_fm_in";
const LONG: Duration = Duration::from_secs(30);

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// The ALSA config: both PCMs as they should be, or one of them only taking float samples.
fn write_alsa_conf(conf: &Path, dir: &Path, float_only: Option<&str>) {
    let pcm = |name: &str, body: String| {
        if float_only == Some(name) {
            format!("pcm.{name} {{ type lfloat slave {{ pcm {{ {body} }} format S32_LE }} }}\n")
        } else {
            format!("pcm.{name} {{ {body} }}\n")
        }
    };
    let text = format!(
        "</usr/share/alsa/alsa.conf>\n{}{}",
        pcm(
            OUT,
            format!(
                "type file slave.pcm \"null\" file \"{}\" format \"raw\"",
                dir.join("out.raw").display()
            )
        ),
        pcm(
            IN,
            "type file slave.pcm \"null\" file \"/dev/null\" infile \"/dev/zero\" format \"raw\""
                .to_string()
        ),
    );
    // A new file renamed into place, so alsa-lib sees a changed config on its next open.
    let tmp = conf.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, conf).unwrap();
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Epipe,
    Estrpipe,
    Eio,
    EagainStorm,
    Unplug,
    OtherParams,
}

const ALL: [Fault; 6] = [
    Fault::Epipe,
    Fault::Estrpipe,
    Fault::Eio,
    Fault::EagainStorm,
    Fault::Unplug,
    Fault::OtherParams,
];

/// A recorder that reads until told to stop, counting bytes; returns its last error, if any.
fn recorder(
    socket: &Path,
    device: &str,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<Vec<StreamInfo>, String>> {
    let client = Client::connect(socket, &format!("rec-{device}")).unwrap();
    let device = device.to_string();
    std::thread::spawn(move || {
        let spec = StreamSpec {
            format: SampleFormat::S16Le,
            rate: 48_000,
            channels: if device == "mic" { 1 } else { 2 },
        };
        let mut opts = RecordOptions::new("rec", spec);
        opts.device = Some(device.clone());
        let mut r = client.record(opts).map_err(|e| format!("{device}: {e}"))?;
        let mut buf = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            buf.clear();
            let n = r
                .read(&mut buf, Some(Duration::from_millis(100)))
                .map_err(|e| format!("{device}: record stream lost: {e}"))?;
            bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        client.streams().map_err(|e| e.to_string())
    })
}

#[test]
fn random_faults_on_playback_capture_and_monitor() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("asound.conf");
    write_alsa_conf(&conf, dir.path(), None);
    // The only test in this binary: nothing else reads the environment concurrently.
    std::env::set_var("ALSA_CONFIG_PATH", &conf);
    let out_plan = fault::plan(OUT);
    let in_plan = fault::plan(IN);
    let me = std::fs::read_link("/proc/self/exe").unwrap();

    let config = Config::parse(
        &format!(
            r#"
[engine]
realtime_priority = "off"

[[sink]]
name = "speakers"
backend = "alsa"
device = "{OUT}"
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

[[source]]
name = "mic"
backend = "alsa"
device = "{IN}"
clock = "timer"
rate = 48000
channels = 1
format = "s16le"
quantum = 480

[[rule]]
app = "exe:{me}"
action = "record"
decision = "allow"
"#,
            me = me.display()
        ),
        Path::new("fault_matrix.toml"),
    )
    .unwrap();
    let core = Arc::new(Core::new(&config).unwrap());
    let socket: PathBuf = dir.path().join("native");
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

    let stop = Arc::new(AtomicBool::new(false));
    // The player: plays until told to stop, publishing its stream's info as it goes.
    let info: Arc<Mutex<Option<StreamInfo>>> = Arc::default();
    let player = {
        let (info, stop) = (Arc::clone(&info), Arc::clone(&stop));
        let client = Client::connect(&socket, "player").unwrap();
        std::thread::spawn(move || -> Result<Vec<StreamInfo>, String> {
            let spec = StreamSpec {
                format: SampleFormat::F32Le,
                rate: 48_000,
                channels: 2,
            };
            let mut opts = PlaybackOptions::new("music", spec);
            opts.latency_ms = 200;
            let mut p = client.playback(opts).map_err(|e| e.to_string())?;
            let chunk: Vec<u8> = (0..960)
                .flat_map(|n| {
                    let s = (0.2 * (n as f32 * 0.0576).sin()).to_le_bytes();
                    [s, s].concat()
                })
                .collect();
            while !stop.load(Ordering::Relaxed) {
                p.write(&chunk)
                    .map_err(|e| format!("playback stream lost: {e}"))?;
                *info.lock().unwrap() = Some(p.info().map_err(|e| e.to_string())?);
            }
            client.streams().map_err(|e| e.to_string())
        })
    };
    let mic_bytes = Arc::new(AtomicU64::new(0));
    let mon_bytes = Arc::new(AtomicU64::new(0));
    let mic = recorder(&socket, "mic", Arc::clone(&mic_bytes), Arc::clone(&stop));
    let monitor = recorder(
        &socket,
        "speakers.monitor",
        Arc::clone(&mon_bytes),
        Arc::clone(&stop),
    );

    let probe = Client::connect(&socket, "probe").unwrap();
    let device = |name: &str| -> DeviceInfo {
        let sinks = probe.sinks().unwrap();
        let sources = probe.sources().unwrap();
        sinks
            .into_iter()
            .chain(sources)
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("device {name} is gone from the lists"))
    };
    let stream = || info.lock().unwrap().clone();
    let playing_on = |dev: &str, more: u64| {
        let at = stream().map_or(0, |s| s.frames);
        wait_for(&format!("the stream to play on {dev}"), LONG, || {
            stream().is_some_and(|s| s.device == dev && s.frames > at + more)
        });
    };
    let receiving = |what: &str, bytes: &AtomicU64| {
        let at = bytes.load(Ordering::Relaxed);
        wait_for(&format!("{what} to receive data"), LONG, || {
            bytes.load(Ordering::Relaxed) > at + 4800
        });
    };
    playing_on("speakers", 4800);
    receiving("the mic recorder", &mic_bytes);
    receiving("the monitor recorder", &mon_bytes);

    let seed: u64 = std::env::var("SOUNDGATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let steps: usize = std::env::var("SOUNDGATE_FAULT_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    eprintln!("fault_matrix: {steps} steps, SOUNDGATE_SEED={seed}");
    let mut rng = Rng(seed | 1);
    // Every kind on both devices first (in a random order), then random picks.
    let mut order: Vec<(bool, Fault)> =
        ALL.iter().flat_map(|f| [(true, *f), (false, *f)]).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    while order.len() < steps {
        order.push((rng.below(2) == 0, ALL[rng.below(ALL.len() as u64) as usize]));
    }
    let (mut xruns, mut suspends) = ([0u64; 2], [0u64; 2]);
    let base = [device("speakers"), device("mic")];
    for (step, &(on_sink, fault)) in order.iter().enumerate() {
        let (plan, name, pcm, d): (&FaultPlan, &str, &str, usize) = if on_sink {
            (&out_plan, "speakers", OUT, 0)
        } else {
            (&in_plan, "mic", IN, 1)
        };
        eprintln!("fault_matrix: step {step}: {fault:?} on {name}");
        // At a random cycle (quantum = 10 ms).
        std::thread::sleep(Duration::from_millis(rng.below(120)));
        let consumed =
            |plan: &FaultPlan| wait_for("the fault to be injected", LONG, || !plan.once_pending());
        match fault {
            Fault::Epipe => {
                plan.inject_once(libc::EPIPE);
                consumed(plan);
                xruns[d] += 1;
            }
            Fault::Estrpipe => {
                plan.inject_once(libc::ESTRPIPE);
                consumed(plan);
                suspends[d] += 1;
            }
            Fault::Eio => {
                // The device is handed to the reopen thread and comes back by itself.
                let opens = plan.opens();
                plan.inject_once(libc::EIO);
                consumed(plan);
                wait_for("the device to be reopened", LONG, || plan.opens() > opens);
            }
            Fault::EagainStorm => {
                let before = device(name);
                plan.inject_burst(libc::EAGAIN, 20 + rng.below(200));
                wait_for("the storm to pass", LONG, || plan.burst_left() == 0);
                let after = device(name);
                assert_eq!(after.state, DeviceState::Running, "{after:?}");
                assert_eq!(after.xruns, before.xruns, "EAGAIN is no xrun: {after:?}");
            }
            Fault::Unplug | Fault::OtherParams => {
                plan.set_gone(true);
                wait_for(&format!("{name} to become unavailable"), LONG, || {
                    device(name).state == DeviceState::Unavailable
                });
                if on_sink {
                    playing_on("fallback", 4800);
                }
                if fault == Fault::OtherParams {
                    write_alsa_conf(&conf, dir.path(), Some(pcm));
                    let opens = plan.opens();
                    plan.set_gone(false);
                    // Reopens are refused while the device only takes float samples.
                    wait_for("two reopens with other parameters", LONG, || {
                        plan.opens() >= opens + 2
                    });
                    let now = device(name);
                    assert_eq!(now.state, DeviceState::Unavailable, "{now:?}");
                    if on_sink {
                        assert_eq!(stream().unwrap().device, "fallback");
                    }
                    write_alsa_conf(&conf, dir.path(), None);
                } else {
                    std::thread::sleep(Duration::from_millis(rng.below(300)));
                    plan.set_gone(false);
                }
            }
        }
        wait_for(&format!("{name} to run"), LONG, || {
            device(name).state == DeviceState::Running
        });
        let now = device(name);
        assert_eq!(now.spec, base[d].spec, "came back with other parameters");
        playing_on("speakers", 4800);
        receiving("the mic recorder", &mic_bytes);
        receiving("the monitor recorder", &mon_bytes);
        // The counters match the injected faults, on both devices, at every step.
        for (i, n) in ["speakers", "mic"].iter().enumerate() {
            let dv = device(n);
            assert_eq!(
                (dv.xruns, dv.suspends),
                (xruns[i], suspends[i]),
                "{n}: xruns/suspends differ from the injected EPIPE/ESTRPIPE (seed {seed})"
            );
        }
    }

    stop.store(true, Ordering::Relaxed);
    let played = player.join().expect("player panicked").unwrap();
    let mic_streams = mic.join().expect("mic recorder panicked").unwrap();
    let mon_streams = monitor.join().expect("monitor recorder panicked").unwrap();
    // Every client still has exactly its one stream, where it belongs.
    assert_eq!(played.len(), 1, "{played:?}");
    assert_eq!(played[0].device, "speakers");
    assert_eq!(mic_streams.len(), 1, "{mic_streams:?}");
    assert_eq!(mic_streams[0].device, "mic");
    assert_eq!(mon_streams.len(), 1, "{mon_streams:?}");
    assert_eq!(mon_streams[0].device, "speakers.monitor");
    assert!(out_plan.injected() > 0 && in_plan.injected() > 0);
    assert!(probe.server_info().is_ok(), "the server still answers");
    drop(probe);
    rt.shutdown_timeout(Duration::from_secs(2));
}
