//! Shared harness for the end-to-end tests: a private `soundgated` per test in a temporary
//! runtime dir, the real `sgcat`, and small signal-analysis helpers.
//!
//! Binaries come from the workspace's target dir (next to this test executable), so run
//! `cargo build --workspace` before `cargo test` (the README's test command does both).

#![allow(dead_code, clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use soundgate_proto::client::Client;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running private daemon.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub runtime: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `soundgated` with `config` (TOML text; `$DIR` is replaced by the temp dir).
    pub fn start(config: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("sg-e2e-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().to_path_buf();
        let config_path = d.join("soundgate.toml");
        std::fs::write(&config_path, config.replace("$DIR", &d.to_string_lossy())).expect("config");
        Self::start_with(dir, Some(config_path))
    }

    /// Starts `soundgated` with no config file at all (built-in defaults).
    pub fn start_default() -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("sg-e2e-")
            .tempdir()
            .expect("tempdir");
        Self::start_with(dir, None)
    }

    /// Like [`Daemon::start`], with `tweak` applied to the daemon's command before it is
    /// spawned (environment, resource limits).
    pub fn start_tweaked(config: &str, tweak: impl FnOnce(&mut Command)) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("sg-e2e-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().to_path_buf();
        let config_path = d.join("soundgate.toml");
        std::fs::write(&config_path, config.replace("$DIR", &d.to_string_lossy())).expect("config");
        Self::start_inner(dir, Some(config_path), tweak)
    }

    /// Stops the daemon (SIGTERM) and starts it again on the same dirs and config, as after
    /// a reboot: state on disk must carry over.
    pub fn restart(self) -> Daemon {
        let mut me = self;
        me.stop();
        let dir = std::mem::replace(&mut me.dir, tempfile::tempdir().expect("tempdir"));
        let config = me.config.clone();
        drop(me);
        Self::start_with(dir, Some(config))
    }

    /// The admin socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.runtime.join("admin")
    }

    /// A library client on the admin socket (the tests run as root, an administrator).
    pub fn admin(&self, name: &str) -> Client {
        Client::connect(&self.admin_socket(), name).expect("connect to the admin socket")
    }

    fn start_with(dir: tempfile::TempDir, config: Option<PathBuf>) -> Daemon {
        Self::start_inner(dir, config, |_| {})
    }

    fn start_inner(
        dir: tempfile::TempDir,
        config: Option<PathBuf>,
        tweak: impl FnOnce(&mut Command),
    ) -> Daemon {
        let d = dir.path().to_path_buf();
        let runtime = d.join("run");
        let state = d.join("state");
        let log = d.join("daemon.log");
        let config = config.unwrap_or_else(|| d.join("absent.toml"));
        let mut cmd = Command::new(bin("soundgated"));
        cmd.arg("--runtime-dir")
            .arg(&runtime)
            .arg("--state-dir")
            .arg(&state)
            .arg("-v");
        if config.exists() {
            cmd.arg("--config").arg(&config);
        } else {
            // No --config: the default path must not exist either, so point HOME/XDG away.
            cmd.env("XDG_CONFIG_HOME", d.join("xdg"));
        }
        tweak(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn soundgated");
        let mut daemon = Daemon {
            child: Some(child),
            dir,
            runtime,
            state,
            config,
            log,
        };
        let socket = daemon.socket();
        let up = wait_for(Duration::from_secs(20), || {
            if let Some(Ok(Some(_))) = daemon.child.as_mut().map(|c| c.try_wait()) {
                return true;
            }
            socket.exists() && Client::connect(&socket, "probe").is_ok()
        });
        let exited = daemon.child.as_mut().map(|c| c.try_wait());
        if let Some(Ok(Some(status))) = exited {
            panic!("soundgated exited early ({status}):\n{}", daemon.log());
        }
        assert!(up, "soundgated did not come up:\n{}", daemon.log());
        daemon
    }

    /// The native socket.
    pub fn socket(&self) -> PathBuf {
        self.runtime.join("native")
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    /// A library client.
    pub fn client(&self, name: &str) -> Client {
        Client::connect(&self.socket(), name).expect("connect")
    }

    /// `sgcat` pointed at this daemon.
    pub fn sgcat(&self) -> Command {
        let mut c = Command::new(bin("sgcat"));
        c.arg("--server").arg(self.socket());
        c
    }

    /// Path inside the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal the daemon");
    }

    /// Waits up to `timeout` for the daemon to exit; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait_for(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// SIGTERM, then wait (file sinks finalise their WAV). Returns the log.
    pub fn stop(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let done = wait_for(Duration::from_secs(15), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if !done {
                let _ = child.kill();
                let _ = child.wait();
                panic!("soundgated ignored SIGTERM:\n{}", self.log());
            }
        }
        self.log()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Interleaved sine samples.
pub fn sine(freq: f64, rate: u32, frames: usize, amp: f64, channels: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(frames * channels);
    for n in 0..frames {
        let s =
            (amp * (2.0 * std::f64::consts::PI * freq * n as f64 / f64::from(rate)).sin()) as f32;
        v.extend(std::iter::repeat_n(s, channels));
    }
    v
}

/// Writes a WAV file of f32 or s16 samples.
pub fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[f32], float: bool) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: if float { 32 } else { 16 },
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create wav");
    for &s in samples {
        if float {
            w.write_sample(s).expect("write");
        } else {
            w.write_sample((f64::from(s) * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
                .expect("write");
        }
    }
    w.finalize().expect("finalize");
}

/// Reads a WAV as f32 (integers scaled to -1..1) with its spec.
pub fn read_wav(path: &Path) -> (hound::WavSpec, Vec<f32>) {
    let mut r =
        hound::WavReader::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let spec = r.spec();
    let samples = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(|s| s.expect("sample")).collect(),
        hound::SampleFormat::Int => {
            let scale = f64::from(1u32 << (spec.bits_per_sample - 1));
            r.samples::<i32>()
                .map(|s| (f64::from(s.expect("sample")) / scale) as f32)
                .collect()
        }
    };
    (spec, samples)
}

/// One channel of interleaved samples.
pub fn channel(samples: &[f32], channels: usize, ch: usize) -> Vec<f32> {
    samples.iter().skip(ch).step_by(channels).copied().collect()
}

/// Complex amplitude (amplitude, phase) of `freq` in `x` by correlation over the whole slice.
pub fn tone(x: &[f32], freq: f64, rate: u32) -> (f64, f64) {
    let (mut re, mut im) = (0.0f64, 0.0f64);
    for (n, &v) in x.iter().enumerate() {
        let w = 2.0 * std::f64::consts::PI * freq * n as f64 / f64::from(rate);
        re += f64::from(v) * w.cos();
        im += f64::from(v) * w.sin();
    }
    let n = x.len() as f64;
    let (re, im) = (2.0 * re / n, 2.0 * im / n);
    ((re * re + im * im).sqrt(), im.atan2(re))
}

/// First index from which `x` stays non-silent for a while (the start of the audio).
pub fn onset(x: &[f32], threshold: f32) -> Option<usize> {
    x.iter().position(|v| v.abs() > threshold)
}

/// Frequency of the strongest tone in `lo..hi` Hz, scanned in 0.1 Hz steps near the peak.
pub fn dominant_frequency(x: &[f32], rate: u32, lo: f64, hi: f64) -> f64 {
    let mut best = (0.0, lo);
    let mut f = lo;
    while f <= hi {
        let (a, _) = tone(x, f, rate);
        if a > best.0 {
            best = (a, f);
        }
        f += 1.0;
    }
    let (mut fine, center) = ((0.0, best.1), best.1);
    let mut f = center - 1.0;
    while f <= center + 1.0 {
        let (a, _) = tone(x, f, rate);
        if a > fine.0 {
            fine = (a, f);
        }
        f += 0.05;
    }
    fine.1
}

/// Least-squares fit of a tone at `freq` over `x` (exact when `x` holds whole periods):
/// returns (cos, sin) coefficients so that x[n] ≈ c·cos(wn) + s·sin(wn).
pub fn tone_fit(x: &[f32], freq: f64, rate: u32) -> (f64, f64) {
    let (mut c, mut s) = (0.0f64, 0.0f64);
    for (n, &v) in x.iter().enumerate() {
        let w = 2.0 * std::f64::consts::PI * freq * n as f64 / f64::from(rate);
        c += f64::from(v) * w.cos();
        s += f64::from(v) * w.sin();
    }
    let n = x.len() as f64;
    (2.0 * c / n, 2.0 * s / n)
}

/// Value of a fitted tone at sample `n`.
pub fn tone_at((c, s): (f64, f64), freq: f64, rate: u32, n: usize) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq * n as f64 / f64::from(rate);
    c * w.cos() + s * w.sin()
}

/// Canonical path of a binary, as the daemon sees it in /proc/PID/exe.
pub fn exe_id(path: &Path) -> String {
    format!(
        "exe:{}",
        std::fs::canonicalize(path).expect("canonicalize").display()
    )
}

/// Entries in /proc/PID/fd.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Lines of /proc/PID/maps containing `needle`.
pub fn maps_with(pid: u32, needle: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| m.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}

/// A well-behaved client that plays a tone until told to stop, then reports its counters.
pub struct Victim {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64)>,
    started: std::time::Instant,
}

impl Victim {
    pub fn start(daemon: &Daemon) -> Victim {
        let client = daemon.client("victim");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut opts = soundgate_proto::client::PlaybackOptions::new(
                "victim",
                soundgate_proto::StreamSpec {
                    format: soundgate_proto::SampleFormat::F32Le,
                    rate: 48_000,
                    channels: 2,
                },
            );
            opts.latency_ms = 300;
            let mut p = client.playback(opts).expect("victim stream");
            let chunk: Vec<u8> = sine(440.0, 48_000, 480, 0.2, 2)
                .iter()
                .flat_map(|s| s.to_le_bytes())
                .collect();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                p.write(&chunk).expect("victim write");
            }
            let info = p.info().expect("victim info");
            (info.underruns, info.frames)
        });
        Victim {
            stop,
            thread,
            started: std::time::Instant::now(),
        }
    }

    /// Stops and asserts the victim played throughout without an underrun.
    pub fn check(self) {
        // Let it play for a while whatever the attacks took.
        if let Some(rest) = Duration::from_millis(1500).checked_sub(self.started.elapsed()) {
            std::thread::sleep(rest);
        }
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (underruns, frames) = self.thread.join().expect("victim thread");
        assert_eq!(underruns, 0, "the victim underran");
        assert!(frames > 48_000, "the victim played only {frames} frames");
    }
}
