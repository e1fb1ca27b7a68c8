//! `sg-churn`: the client-churn soak of issue 14 (item 3).
//!
//! Runs N clients against a live soundgated, each a child process (this same executable,
//! re-executed with the hidden `child` subcommand) that does one scenario and reports its
//! phases on stdout: connect and stop before the Hello, send the Hello and never read the
//! reply, finish the handshake, play (killed while writing), record a granted monitor, ask to
//! record a monitor whose policy is `ask` (killed while parked on the prompt), upload and play
//! a sample, subscribe to events, or one of the hostile requests of `tests/hostile.rs`. Besides
//! them, `pacat`/`paplay` on the pulse socket when `--pulse` names it and they are installed.
//! The parent SIGKILLs each child at a random delay after the phase its scenario aims at (a
//! watchdog kills whatever did not get there), at most `--concurrency` alive at once.
//!
//! Before and after, on the admin socket and in /proc, it takes the daemon's fd count, its
//! memfd mappings (rings), VmRSS, the registry's clients, streams, samples and prompts and the
//! engine's streams per device; afterwards it polls (up to `--settle-secs`) until all are back
//! at the baseline, RSS within `--rss-slack-mib`. Exit status 0 when they are, 1 when not.

#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use soundgate_proto::client::{Client, PlaybackOptions, RecordOptions};
use soundgate_proto::ring::{self, Ring};
use soundgate_proto::shm::{self, Mapping};
use soundgate_proto::sock::{recv_buffer, SeqPacket};
use soundgate_proto::wire::{self, Event, PromptAnswer, Reply, Request, MAX_MESSAGE};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "sg-churn",
    about = "Client-churn soak against a running soundgated"
)]
struct Cli {
    #[command(subcommand)]
    child: Option<ChildCmd>,
    /// The daemon's native socket.
    #[arg(
        long,
        env = "SOUNDGATE_SERVER",
        default_value = "/run/soundgate/native"
    )]
    server: PathBuf,
    /// The daemon's admin socket (for the counts; the caller must be an administrator).
    #[arg(long, env = "SOUNDGATE_ADMIN", default_value = "/run/soundgate/admin")]
    admin: PathBuf,
    /// The daemon's pulse socket: adds pacat/paplay clients (when installed).
    #[arg(long)]
    pulse: Option<PathBuf>,
    /// Clients to run in all.
    #[arg(long, default_value_t = 300)]
    clients: u64,
    /// Clients alive at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Add the hostile requests of tests/hostile.rs to the mix.
    #[arg(long)]
    hostile: bool,
    /// Be a prompt agent on the admin socket meanwhile, answering at random after a random
    /// delay (without one, a parked request is denied at once unless another agent runs).
    #[arg(long)]
    agent: bool,
    /// The monitor that policy lets this program record.
    #[arg(long, default_value = "speakers.monitor")]
    granted: String,
    /// The monitor whose policy asks.
    #[arg(long, default_value = "aux.monitor")]
    asked: String,
    /// Longest wait after the aimed-at phase before the SIGKILL, milliseconds.
    #[arg(long, default_value_t = 400)]
    max_kill_ms: u64,
    /// Seed of the random choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Skip the baseline checks (several drivers at once, or other load, as in bench/soak.sh).
    #[arg(long)]
    no_check: bool,
    /// How long the counts may take to come back, seconds.
    #[arg(long, default_value_t = 30)]
    settle_secs: u64,
    /// RSS allowed above the baseline afterwards, MiB (allocator arenas and caches that stay).
    #[arg(long, default_value_t = 8)]
    rss_slack_mib: u64,
    /// Print only the summary.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum ChildCmd {
    /// (internal) One client: run `scenario`, reporting phases on stdout.
    #[command(hide = true)]
    Child {
        scenario: String,
        #[arg(long)]
        server: PathBuf,
        #[arg(long)]
        granted: String,
        #[arg(long)]
        asked: String,
        #[arg(long)]
        seed: u64,
    },
}

/// A small deterministic generator (splitmix64): the driver needs no statistical quality.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::S16Le,
    rate: 48_000,
    channels: 2,
};

/// What a child does, and the phase after which the parent kills it.
const NATIVE: &[(&str, &str)] = &[
    ("pre-hello", "connected"),
    ("mid-handshake", "hello-sent"),
    ("hello", "hello"),
    ("play", "playing"),
    ("record", "recording"),
    ("ask", "parked"),
    ("upload", "uploaded"),
    ("subscribe", "subscribed"),
];
const HOSTILE: &[&str] = &[
    "unsealed-memfd",
    "small-memfd",
    "extra-fd",
    "missing-fd",
    "bogus-write-index",
    "lying-header",
    "oversized",
    "garbage",
    "no-handshake",
    "flood",
];

fn main() {
    let cli = Cli::parse();
    let code = match &cli.child {
        Some(ChildCmd::Child {
            scenario,
            server,
            granted,
            asked,
            seed,
        }) => match child(scenario, server, granted, asked, *seed) {
            Ok(()) => 0,
            Err(e) => {
                phase(&format!("error {e:#}"));
                1
            }
        },
        None => match parent(&cli) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("sg-churn: {e:#}");
                2
            }
        },
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------------
// The child side: one client, one scenario.

fn phase(p: &str) {
    let mut out = std::io::stdout().lock();
    // The parent may already have stopped reading: nothing to do about it then.
    let _ = writeln!(out, "{p}");
    let _ = out.flush();
}

fn forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn child(scenario: &str, server: &Path, granted: &str, asked: &str, seed: u64) -> Result<()> {
    let mut rng = Rng(seed);
    match scenario {
        "pre-hello" => {
            let _sock = SeqPacket::connect(server)?;
            phase("connected");
            forever()
        }
        "mid-handshake" => {
            let sock = SeqPacket::connect(server)?;
            phase("connected");
            let hello = Request::Hello {
                version: wire::PROTOCOL_VERSION,
                name: "churn".into(),
            };
            sock.send(&wire::encode(&wire::ClientMsg { id: 1, req: hello })?, &[])?;
            phase("hello-sent");
            forever()
        }
        "hello" => {
            let _c = Client::connect(server, "churn")?;
            phase("hello");
            forever()
        }
        "play" => {
            let c = Client::connect(server, "churn")?;
            let sinks = c.sinks()?;
            let mut opts = PlaybackOptions::new("churn-play", SPEC);
            if !sinks.is_empty() {
                let i = rng.below(sinks.len() as u64) as usize;
                opts.device = Some(sinks[i].name.clone());
            }
            opts.latency_ms = 20 + rng.below(200) as u32;
            let mut p = c.playback(opts)?;
            phase("playing");
            // Writes of random lengths (whole frames, as the library takes them): the kill lands
            // inside one of them or between.
            loop {
                let n = (1 + rng.below(2048) as usize) * SPEC.frame_bytes();
                p.write(&rng.bytes(n))?;
            }
        }
        "record" | "ask" => {
            let c = Client::connect(server, "churn")?;
            c.on_permission_pending(|_| phase("parked"));
            let mut opts = RecordOptions::new("churn-rec", SPEC);
            opts.device = Some(if scenario == "record" { granted } else { asked }.to_string());
            match c.record(opts) {
                Ok(mut r) => {
                    phase("recording");
                    let mut buf = vec![0u8; 4096];
                    loop {
                        r.read(&mut buf, Some(Duration::from_millis(100)))?;
                    }
                }
                Err(e) => {
                    phase(&format!("denied {e}"));
                    Ok(())
                }
            }
        }
        "upload" => {
            let c = Client::connect(server, "churn")?;
            let frames = 4800 + rng.below(9600) as usize;
            let pcm = rng.bytes(frames * SPEC.frame_bytes());
            c.upload_sample_raw("churn", SPEC, &pcm)?;
            phase("uploaded");
            // Playing may be refused (another rate on the default sink): still a client with
            // a sample that dies.
            let _ = c.play_sample("churn", None, 0.5);
            forever()
        }
        "subscribe" => {
            let c = Client::connect(server, "churn")?;
            c.request(Request::Subscribe, &[])?;
            phase("subscribed");
            loop {
                c.take_events()?;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        attack => hostile(attack, server),
    }
}

fn create_req(capacity: u64) -> Request {
    Request::CreatePlayback {
        name: "attacker".into(),
        sink: None,
        spec: SPEC,
        capacity_frames: capacity,
        volume: 1.0,
        muted: false,
        corked: false,
        exclusive: false,
    }
}

/// A raw connection that has done the handshake.
fn handshaken(server: &Path) -> Result<SeqPacket> {
    let sock = SeqPacket::connect(server)?;
    let hello = Request::Hello {
        version: wire::PROTOCOL_VERSION,
        name: "raw".into(),
    };
    sock.send(&wire::encode(&wire::ClientMsg { id: 1, req: hello })?, &[])?;
    let mut buf = recv_buffer();
    sock.recv(&mut buf)?;
    Ok(sock)
}

/// The attacks of tests/hostile.rs, one per child; the server's answers are not checked here
/// (that test does), only what they leave behind once the attacker is killed.
fn hostile(attack: &str, server: &Path) -> Result<()> {
    let capacity = 4096u64;
    let size = ring::ring_bytes(capacity, SPEC.frame_bytes())?;
    let c = || Client::connect(server, "attacker");
    match attack {
        "unsealed-memfd" => {
            let mfd = memfd::MemfdOptions::default()
                .allow_sealing(true)
                .create("x")?;
            mfd.as_file().set_len(size as u64)?;
            let _ = c()?.request(create_req(capacity), &[mfd.as_file().as_fd()]);
        }
        "small-memfd" => {
            let small = shm::create_sealed("small", size / 2)?;
            let _ = c()?.request(create_req(capacity), &[small.as_fd()]);
        }
        "extra-fd" => {
            let good = shm::create_sealed("ring", size)?;
            Ring::init(
                Mapping::new(good.as_fd(), size, true)?,
                capacity,
                SPEC.frame_bytes(),
            )?;
            let (r, _w) = nix::unistd::pipe()?;
            let _ = c()?.request(create_req(capacity), &[good.as_fd(), r.as_fd()]);
        }
        "missing-fd" => {
            let _ = c()?.request(create_req(capacity), &[]);
        }
        "bogus-write-index" => {
            let fd = shm::create_sealed("ring", size)?;
            let ring = Ring::init(
                Mapping::new(fd.as_fd(), size, true)?,
                capacity,
                SPEC.frame_bytes(),
            )?;
            let client = c()?;
            if client.request(create_req(capacity), &[fd.as_fd()]).is_ok() {
                ring.store_write(capacity * 10)?;
            }
            phase("attacked");
            // Alive while the engine notices and ends the stream, or killed before.
            forever()
        }
        "lying-header" => {
            let liar = shm::create_sealed("ring", size)?;
            Ring::init(
                Mapping::new(liar.as_fd(), size, true)?,
                capacity / 2,
                SPEC.frame_bytes() * 2,
            )?;
            let _ = c()?.request(create_req(capacity), &[liar.as_fd()]);
        }
        "oversized" => {
            let big = handshaken(server)?;
            let _ = nix::sys::socket::send(
                big.as_fd().as_raw_fd(),
                &vec![0u8; MAX_MESSAGE + 1000],
                nix::sys::socket::MsgFlags::empty(),
            );
        }
        "garbage" => {
            let g = handshaken(server)?;
            let _ = g.send(&[0xff; 40], &[]);
        }
        "no-handshake" => {
            let raw = SeqPacket::connect(server)?;
            let bytes = wire::encode(&wire::ClientMsg {
                id: 1,
                req: Request::ListSinks,
            })?;
            let _ = raw.send(&bytes, &[]);
        }
        "flood" => {
            let f = c()?;
            phase("attacked");
            for _ in 0..2000 {
                let _ = f.request(Request::ListStreams, &[]);
            }
        }
        other => bail!("unknown scenario {other}"),
    }
    phase("attacked");
    forever()
}

// ---------------------------------------------------------------------------------------------
// The parent side.

/// What the daemon holds, from /proc and the admin socket.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counts {
    fds: usize,
    rings: usize,
    clients: u32,
    streams: u32,
    engine: u32,
    samples: usize,
    prompts: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fds {} rings {} clients {} streams {} engine streams {} samples {} prompts {}",
            self.fds,
            self.rings,
            self.clients,
            self.streams,
            self.engine,
            self.samples,
            self.prompts
        )
    }
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Mappings of memfds: the rings (playback rings the clients made, record rings the server
/// made) and nothing else the daemon maps.
fn ring_maps(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_or(0, |m| m.lines().filter(|l| l.contains("memfd:")).count())
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The server's pid, from the kernel's credentials of a connection to it.
fn server_pid(admin: &Path) -> Result<i32> {
    let sock = SeqPacket::connect(admin).with_context(|| format!("{}", admin.display()))?;
    let cred = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(cred.pid())
}

fn counts(admin: &Client, pid: i32) -> Result<Counts> {
    let Reply::Stats(stats) = admin.request(Request::Stats, &[])?.0 else {
        bail!("unexpected reply to Stats");
    };
    let Reply::Samples(samples) = admin.request(Request::ListSamples, &[])?.0 else {
        bail!("unexpected reply to ListSamples");
    };
    let Reply::Prompts(prompts) = admin.request(Request::ListPrompts, &[])?.0 else {
        bail!("unexpected reply to ListPrompts");
    };
    Ok(Counts {
        fds: fd_count(pid),
        rings: ring_maps(pid),
        clients: stats.clients,
        streams: stats.streams,
        engine: stats
            .devices
            .iter()
            .map(|d| d.engine_streams.max(d.engine_held))
            .sum(),
        samples: samples.len(),
        prompts: prompts.len(),
    })
}

/// How one client ended.
#[derive(Debug)]
struct Outcome {
    scenario: String,
    /// The last phase it reported before it was killed or exited.
    last: String,
    killed: bool,
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    })
}

struct Plan {
    exe: PathBuf,
    server: PathBuf,
    granted: String,
    asked: String,
    pulse: Option<PathBuf>,
    pacat: Option<PathBuf>,
    paplay: Option<PathBuf>,
    scenarios: Vec<String>,
    max_kill_ms: u64,
    quiet: bool,
}

fn kill_child(child: &mut Child) {
    // Already gone is fine: it exited on its own first.
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs one client to its end.
fn run_one(plan: &Plan, rng: &mut Rng) -> Result<Outcome> {
    let scenario = plan.scenarios[rng.below(plan.scenarios.len() as u64) as usize].clone();
    let delay = Duration::from_millis(rng.below(plan.max_kill_ms + 1));
    if scenario == "pacat" || scenario == "paplay" {
        let prog = if scenario == "pacat" {
            &plan.pacat
        } else {
            &plan.paplay
        };
        let (Some(prog), Some(pulse)) = (prog, &plan.pulse) else {
            bail!("no {scenario}");
        };
        let mut child = Command::new(prog)
            .args(["--raw", "--rate=48000", "--channels=2", "--format=s16le"])
            .arg(format!("--latency-msec={}", 20 + rng.below(300)))
            .env("PULSE_SERVER", format!("unix:{}", pulse.display()))
            .stdin(std::fs::File::open("/dev/urandom")?)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(100) + delay * 3);
        let killed = matches!(child.try_wait(), Ok(None));
        kill_child(&mut child);
        return Ok(Outcome {
            scenario,
            last: "running".into(),
            killed,
        });
    }
    let target = NATIVE
        .iter()
        .find(|(s, _)| *s == scenario)
        .map_or("attacked", |(_, t)| t);
    let mut child = Command::new(&plan.exe)
        .arg("child")
        .arg(&scenario)
        .arg("--server")
        .arg(&plan.server)
        .arg("--granted")
        .arg(&plan.granted)
        .arg("--asked")
        .arg(&plan.asked)
        .arg("--seed")
        .arg(rng.next().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = "spawned".to_string();
    let mut killed = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(p) => {
                last = p.split_whitespace().next().unwrap_or("").to_string();
                if last == target {
                    std::thread::sleep(delay);
                    killed = matches!(child.try_wait(), Ok(None));
                    break;
                }
            }
            // Exited on its own (denied, an error) before the phase.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                killed = true;
                last = format!("watchdog:{last}");
                break;
            }
        }
    }
    kill_child(&mut child);
    let _ = reader.join();
    // A child that ended on its own says why on its last line.
    if !killed {
        if let Some(e) = rx.try_iter().filter(|l| l.starts_with("error")).last() {
            last = "error".into();
            if !plan.quiet {
                eprintln!("sg-churn: {scenario}: {e}");
            }
        }
    }
    Ok(Outcome {
        scenario,
        last,
        killed,
    })
}

/// An agent on the admin socket that answers each prompt at random after a random delay.
fn agent(admin: PathBuf, stop: Arc<AtomicBool>, seed: u64, answered: Arc<AtomicU64>) {
    let mut rng = Rng(seed);
    let Ok(c) = Client::connect(&admin, "churn-agent") else {
        return;
    };
    if c.request(Request::SubscribePrompts, &[]).is_err() {
        return;
    }
    let mut pending: Vec<(u64, Instant)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(events) = c.take_events() else { return };
        for ev in events {
            if let Event::Prompt(p) = ev {
                let wait = Duration::from_millis(rng.below(600));
                pending.push((p.id, Instant::now() + wait));
            }
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(_, t)| *t <= now);
        pending = later;
        for (prompt, _) in due {
            let answer = match rng.below(3) {
                0 => PromptAnswer::AllowOnce,
                1 => PromptAnswer::AllowSession,
                _ => PromptAnswer::DenyOnce,
            };
            // The client may be gone and its prompt resolved already.
            if c.request(Request::AnswerPrompt { prompt, answer }, &[])
                .is_ok()
            {
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parent(cli: &Cli) -> Result<bool> {
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut scenarios: Vec<String> = NATIVE.iter().map(|(s, _)| s.to_string()).collect();
    if cli.hostile {
        scenarios.extend(HOSTILE.iter().map(|s| s.to_string()));
    }
    let (pacat, paplay) = (which("pacat"), which("paplay"));
    if cli.pulse.is_some() {
        if pacat.is_some() {
            scenarios.push("pacat".into());
        }
        if paplay.is_some() {
            scenarios.push("paplay".into());
        }
    }
    let plan = Arc::new(Plan {
        exe: std::env::current_exe().context("current_exe")?,
        server: cli.server.clone(),
        granted: cli.granted.clone(),
        asked: cli.asked.clone(),
        pulse: cli.pulse.clone(),
        pacat,
        paplay,
        scenarios,
        max_kill_ms: cli.max_kill_ms,
        quiet: cli.quiet,
    });

    let check = !cli.no_check;
    let mut pid = 0;
    let mut admin = None;
    let mut before = None;
    let mut rss_before = 0;
    if check {
        pid = server_pid(&cli.admin)?;
        let a = Client::connect(&cli.admin, "sg-churn").context("the admin socket")?;
        let b = counts(&a, pid)?;
        rss_before = rss_kib(pid);
        if !cli.quiet {
            println!("baseline: {b}, rss {rss_before} KiB (daemon pid {pid})");
        }
        before = Some(b);
        admin = Some(a);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let agent_thread = cli.agent.then(|| {
        let (admin, stop, answered) = (cli.admin.clone(), Arc::clone(&stop), Arc::clone(&answered));
        std::thread::spawn(move || agent(admin, stop, seed ^ 0xa5a5, answered))
    });
    // Peaks, sampled every 100 ms while the clients run.
    let peaks = Arc::new(Mutex::new((0usize, 0usize, 0u64)));
    let sampler = check.then(|| {
        let (stop, peaks) = (Arc::clone(&stop), Arc::clone(&peaks));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut p = peaks.lock().unwrap_or_else(|e| e.into_inner());
                p.0 = p.0.max(fd_count(pid));
                p.1 = p.1.max(ring_maps(pid));
                p.2 = p.2.max(rss_kib(pid));
                drop(p);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });

    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let workers: Vec<_> = (0..cli.concurrency.max(1))
        .map(|w| {
            let (plan, next, outcomes, failures) = (
                Arc::clone(&plan),
                Arc::clone(&next),
                Arc::clone(&outcomes),
                Arc::clone(&failures),
            );
            let total = cli.clients;
            let quiet = cli.quiet;
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (w as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1));
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    match run_one(&plan, &mut rng) {
                        Ok(o) => outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(o),
                        Err(e) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            if !quiet {
                                eprintln!("sg-churn: a client could not run: {e:#}");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = agent_thread {
        let _ = t.join();
    }
    if let Some(t) = sampler {
        let _ = t.join();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|e| e.into_inner()));
    let n = outcomes.len();
    let killed = outcomes.iter().filter(|o| o.killed).count();
    println!(
        "clients: {n} in {:.1} s ({:.1} clients/s), {killed} SIGKILLed, {} exited first, {} could not start; seed {seed}",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64().max(1e-9),
        n - killed,
        failures.load(Ordering::Relaxed),
    );
    if cli.agent {
        println!(
            "agent: {} prompts answered",
            answered.load(Ordering::Relaxed)
        );
    }
    let mut by: BTreeMap<(String, String, bool), usize> = BTreeMap::new();
    for o in &outcomes {
        *by.entry((o.scenario.clone(), o.last.clone(), o.killed))
            .or_default() += 1;
    }
    if !cli.quiet {
        println!(
            "{:<18} {:<22} {:>6} {:>7}",
            "scenario", "last phase", "killed", "exited"
        );
        let mut rows: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
        for ((s, p, k), c) in by {
            let r = rows.entry((s, p)).or_default();
            if k {
                r.0 += c;
            } else {
                r.1 += c;
            }
        }
        for ((s, p), (k, e)) in rows {
            println!("{s:<18} {p:<22} {k:>6} {e:>7}");
        }
    }

    let (Some(admin), Some(before)) = (admin, before) else {
        return Ok(true);
    };
    let settle = Instant::now();
    let mut after = counts(&admin, pid)?;
    while after != before && settle.elapsed() < Duration::from_secs(cli.settle_secs) {
        std::thread::sleep(Duration::from_millis(200));
        after = counts(&admin, pid)?;
    }
    let rss_after = rss_kib(pid);
    let peaks = *peaks.lock().unwrap_or_else(|e| e.into_inner());
    println!(
        "fds: before {} peak {} after {}",
        before.fds, peaks.0, after.fds
    );
    println!(
        "ring mappings: before {} peak {} after {}",
        before.rings, peaks.1, after.rings
    );
    println!(
        "rss: before {rss_before} KiB peak {} KiB after {rss_after} KiB (allowed +{} MiB)",
        peaks.2, cli.rss_slack_mib
    );
    println!(
        "after: {after} (settled in {:.1} s)",
        settle.elapsed().as_secs_f64()
    );
    let counts_ok = after == before;
    let rss_ok = rss_after <= rss_before + cli.rss_slack_mib * 1024;
    if !counts_ok {
        println!("NOT BACK AT BASELINE: before {before}");
    }
    if !rss_ok {
        println!("RSS GREW beyond the allowance");
    }
    println!(
        "result: {}",
        if counts_ok && rss_ok {
            "baseline"
        } else {
            "LEAK"
        }
    );
    Ok(counts_ok && rss_ok)
}
