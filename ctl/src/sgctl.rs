//! `sgctl`: the administrators' command line for a soundgate server, on its admin socket.
//!
//! The command line is [`Args`] (also reachable as [`command`] for the man page, the shell
//! completions and tests); [`run`] does the work and returns an error that [`crate::exit`]
//! turns into one line and an exit code ([`UsageError`] exits 2).
//!
//! Output: aligned tables for people by default; with `--json` one JSON document per command
//! (an object with named fields), or JSON lines for the commands that stream (`watch`,
//! `audit --follow`, `agent`).

use crate::client::{Client, ClientError};
use anyhow::{anyhow, Context, Result};
use clap::{Args as ClapArgs, CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use soundgate_proto::wire::{
    self, ClientInfo, DeviceInfo, DeviceKind, Event, GrantInfo, NewDevice, PromptAnswer,
    PromptInfo, Reply, Request, SampleInfo, StreamInfo, WireError,
};
use soundgate_proto::{SampleFormat, StreamSpec};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the system daemon's admin socket is.
pub const DEFAULT_ADMIN: &str = "/run/soundgate/admin";
/// Environment variable naming the admin socket.
pub const ADMIN_ENV: &str = "SOUNDGATE_ADMIN";
/// Highest linear volume (400%).
pub const MAX_VOLUME: f32 = 4.0;
/// The name sgctl declares to the server (a label only).
const CLIENT_NAME: &str = "sgctl";
/// How often streaming commands look for new events.
const POLL: Duration = Duration::from_millis(20);

/// Control a soundgate server.
///
/// sgctl talks to the server's admin socket, which only root and members of the group
/// `soundgate-admin` may use (the server checks the caller's credentials). It lists and
/// changes streams and devices, answers permission prompts, manages grants, and shows
/// events, the audit log and engine statistics.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sgctl",
    version,
    about = "Control a soundgate server (administrators)"
)]
pub struct Args {
    /// Admin socket (default: $SOUNDGATE_ADMIN, else /run/soundgate/admin).
    #[arg(long, global = true, value_name = "PATH")]
    pub admin: Option<PathBuf>,

    /// Print JSON: one document per command, JSON lines for watch, agent and audit --follow.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Cmd {
    /// Server, defaults, and how many clients, streams and prompts there are.
    Status,
    /// List clients, streams (the default), sinks, sources, grants, prompts or samples.
    Ls {
        /// What to list.
        #[arg(value_enum, default_value_t = ListWhat::Streams)]
        what: ListWhat,
    },
    /// Everything about a stream (`ID`), a client (`client:ID`) or a device (`NAME`).
    Info {
        /// A stream id, `client:ID`, or a sink or source name.
        #[arg(value_parser = parse_target)]
        id: Target,
    },
    /// Set the volume of a stream or a device: `50%`, `0.7`, `-3dB`, `+5%` (a sign: relative).
    Volume {
        /// A stream id, or a sink or source name.
        #[arg(value_parser = parse_target)]
        id: Target,
        /// `50%`, `0.7` (linear), `3dB`; with `+` or `-` relative to the current volume.
        #[arg(value_parser = parse_level, allow_hyphen_values = true)]
        level: Level,
    },
    /// Mute, unmute or toggle a stream or a device.
    Mute {
        /// A stream id, or a sink or source name.
        #[arg(value_parser = parse_target)]
        id: Target,
        /// on, off or toggle.
        #[arg(value_enum, default_value_t = Toggle::Toggle)]
        state: Toggle,
    },
    /// Move a stream to another sink (playback) or source (record).
    Move {
        /// The stream id.
        stream: u32,
        /// The sink or source.
        device: String,
    },
    /// End a stream (`ID`), or disconnect a client and end its streams (`client:ID`).
    Kill {
        /// A stream id or `client:ID`.
        #[arg(value_parser = parse_target)]
        id: Target,
    },
    /// Make a sink (or, with `source`, a capture source) the default.
    Default {
        /// `sink` or `source` then the NAME, or only the NAME of a sink.
        #[arg(num_args = 1..=2, value_names = ["sink|source", "NAME"], required = true)]
        args: Vec<String>,
    },
    /// Suspend or resume a device.
    Suspend {
        /// The sink or source.
        device: String,
        /// on (suspend, the default) or off (resume).
        #[arg(value_enum, default_value_t = OnOff::On)]
        state: OnOff,
    },
    /// Add or remove a sink.
    #[command(subcommand)]
    Sink(DeviceOp),
    /// Add or remove a capture source.
    #[command(subcommand)]
    Source(DeviceOp),
    /// Add an always grant: let (or with --deny, forbid) APP do ACTION.
    Grant {
        /// The app id (`exe:/usr/bin/arecord`, `flatpak:org.example.App`).
        app: String,
        /// The action (`record`, `passthrough`, …).
        action: String,
        /// The user it applies to (default: yours).
        #[arg(long, value_name = "UID")]
        uid: Option<u32>,
        /// The device it applies to (default: any).
        #[arg(long, value_name = "DEVICE")]
        target: Option<String>,
        /// A denying grant.
        #[arg(long)]
        deny: bool,
    },
    /// Revoke a grant; capture streams it allowed end at once.
    Revoke {
        /// The grant id (see `sgctl ls grants`).
        grant: u64,
    },
    /// The pending permission prompts.
    Prompts,
    /// Answer a pending prompt.
    Answer {
        /// The prompt id (see `sgctl prompts`).
        prompt: u64,
        /// allow or deny.
        #[arg(value_enum)]
        decision: AllowDeny,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Be a prompt agent: show each permission prompt and read the answer from the terminal.
    Agent {
        /// Answer every prompt this way without asking (for scripts).
        #[arg(long, value_enum, value_name = "ANSWER")]
        answer: Option<AnswerArg>,
        /// Exit after answering this many prompts.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Print events as they happen (streams, devices, clients, decisions, xruns).
    Watch {
        /// Also level meters at this rate (1 to 60 per second).
        #[arg(long, value_name = "HZ", value_parser = clap::value_parser!(u32).range(1..=60))]
        meters: Option<u32>,
    },
    /// The last lines of the audit log.
    Audit {
        /// How many lines.
        #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 20)]
        lines: u32,
        /// Then print new decisions as they are made.
        #[arg(short, long)]
        follow: bool,
    },
    /// Engine and server statistics: cycle times, load, memory, cost per client.
    Stats,
    /// The remembered stream settings (volume and mute per user, app and device).
    #[command(subcommand)]
    Restore(RestoreOp),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `sink …` and `source …`.
#[derive(Debug, Clone, Subcommand)]
pub enum DeviceOp {
    /// Create a device at run time.
    Add(NewDeviceArgs),
    /// Remove a device.
    Rm {
        /// The device name.
        name: String,
    },
}

/// `restore …`.
#[derive(Debug, Clone, Subcommand)]
pub enum RestoreOp {
    /// List the remembered settings, least recently used first.
    List,
    /// Forget the remembered settings of APP (exit status 4 if none were remembered).
    Forget {
        /// The app id (`exe:/usr/bin/mpv`, `flatpak:org.example.App`).
        app: String,
        /// Only this user's (default: every user's).
        #[arg(long, value_name = "UID")]
        uid: Option<u32>,
        /// Only on this device (default: every device).
        #[arg(long, value_name = "DEVICE")]
        device: Option<String>,
    },
}

/// The options of `sink add` and `source add`.
#[derive(Debug, Clone, ClapArgs)]
pub struct NewDeviceArgs {
    /// The device name.
    pub name: String,
    /// null, file (sinks) or alsa.
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// For `file`: the WAV file to write.
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// For `alsa`: the PCM name (`hw:0,0`, `plughw:1`, `default`).
    #[arg(long, value_name = "PCM")]
    pub device: Option<String>,
    /// Sample rate in Hz.
    #[arg(long, default_value_t = 48_000)]
    pub rate: u32,
    /// Channels.
    #[arg(long, default_value_t = 2)]
    pub channels: u8,
    /// Sample format: s16le, s32le or f32le.
    #[arg(long, default_value = "s16le", value_parser = parse_format)]
    pub format: SampleFormat,
    /// Frames per engine cycle.
    #[arg(long, default_value_t = 512)]
    pub quantum: u32,
}

/// `--once`, `--session`, `--always`.
#[derive(Debug, Clone, Copy, ClapArgs)]
#[group(multiple = false)]
pub struct ScopeArgs {
    /// For this one request (the default).
    #[arg(long)]
    pub once: bool,
    /// Until the client disconnects (allow only).
    #[arg(long)]
    pub session: bool,
    /// From now on, for this app of this user (persisted).
    #[arg(long)]
    pub always: bool,
}

/// What `ls` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListWhat {
    Clients,
    Streams,
    Sinks,
    Sources,
    Grants,
    Prompts,
    Samples,
}

/// on / off / toggle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    On,
    Off,
    Toggle,
}

/// on / off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// allow / deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AllowDeny {
    Allow,
    Deny,
}

/// A whole answer, for `agent --answer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AnswerArg {
    AllowOnce,
    AllowSession,
    AllowAlways,
    DenyOnce,
    DenyAlways,
}

impl From<AnswerArg> for PromptAnswer {
    fn from(a: AnswerArg) -> PromptAnswer {
        match a {
            AnswerArg::AllowOnce => PromptAnswer::AllowOnce,
            AnswerArg::AllowSession => PromptAnswer::AllowSession,
            AnswerArg::AllowAlways => PromptAnswer::AllowAlways,
            AnswerArg::DenyOnce => PromptAnswer::DenyOnce,
            AnswerArg::DenyAlways => PromptAnswer::DenyAlways,
        }
    }
}

/// Device backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Null,
    File,
    Alsa,
}

/// What an `ID` argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A stream id.
    Stream(u32),
    /// `client:N`.
    Client(u32),
    /// A sink or source name.
    Device(String),
}

/// A volume argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    /// Set to this linear volume.
    Absolute(f32),
    /// Add this to the linear volume.
    Add(f32),
    /// Multiply the linear volume by this (a relative dB change).
    Times(f32),
}

impl Level {
    /// The new linear volume from the current one, within 0..=[`MAX_VOLUME`].
    pub fn apply(self, current: f32) -> f32 {
        let v = match self {
            Level::Absolute(v) => v,
            Level::Add(d) => current + d,
            Level::Times(f) => current * f,
        };
        v.clamp(0.0, MAX_VOLUME)
    }
}

/// A command-line mistake found after parsing; exits 2 like clap's own.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `client:N` → client, `N` → stream, anything else → a device name.
pub fn parse_target(s: &str) -> Result<Target, String> {
    if let Some(n) = s.strip_prefix("client:") {
        return n
            .parse()
            .map(Target::Client)
            .map_err(|_| format!("{s:?}: expected client:NUMBER"));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Target::Stream)
            .map_err(|_| format!("{s:?}: stream id out of range"));
    }
    if s.is_empty() {
        return Err("an empty name".into());
    }
    Ok(Target::Device(s.to_string()))
}

/// `50%`, `0.7`, `3dB`, `-3dB`, `+5%`, `-0.1`.
pub fn parse_level(s: &str) -> Result<Level, String> {
    let bad = || format!("{s:?}: expected a volume such as 50%, 0.7, -3dB or +5%");
    let t = s.trim();
    let (sign, body) = match t.as_bytes().first() {
        Some(b'+') => (Some(1.0f32), &t[1..]),
        Some(b'-') => (Some(-1.0f32), &t[1..]),
        _ => (None, t),
    };
    let lower = body.to_ascii_lowercase();
    let (number, unit) = if let Some(n) = lower.strip_suffix("db") {
        (n, "db")
    } else if let Some(n) = lower.strip_suffix('%') {
        (n, "%")
    } else {
        (lower.as_str(), "")
    };
    let x: f32 = number.trim().parse().map_err(|_| bad())?;
    if !x.is_finite() || x < 0.0 {
        return Err(bad());
    }
    let level = match (unit, sign) {
        ("db", None) => Level::Absolute(10f32.powf(x / 20.0)),
        ("db", Some(s)) => Level::Times(10f32.powf(s * x / 20.0)),
        ("%", None) => Level::Absolute(x / 100.0),
        ("%", Some(s)) => Level::Add(s * x / 100.0),
        (_, None) => Level::Absolute(x),
        (_, Some(s)) => Level::Add(s * x),
    };
    if let Level::Absolute(v) = level {
        if v > MAX_VOLUME {
            return Err(format!("{s:?}: the highest volume is 400% (4.0)"));
        }
    }
    Ok(level)
}

fn parse_format(s: &str) -> Result<SampleFormat, String> {
    s.parse::<SampleFormat>().map_err(|e| e.to_string())
}

/// The clap command (for the man page, completions and tests).
pub fn command() -> clap::Command {
    Args::command()
}

/// The admin socket: `explicit` (`--admin`), else `$SOUNDGATE_ADMIN`, else [`DEFAULT_ADMIN`].
pub fn admin_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os(ADMIN_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_ADMIN),
    }
}

/// Runs the command line.
pub fn run(args: &Args) -> Result<()> {
    if let Cmd::Completions { shell } = &args.cmd {
        let mut cmd = command();
        clap_complete::generate(*shell, &mut cmd, "sgctl", &mut io::stdout());
        return Ok(());
    }
    let path = admin_path(args.admin.as_deref());
    let client = connect(&path)?;
    let ctl = Ctl {
        client,
        json: args.json,
    };
    ctl.dispatch(&args.cmd)
}

/// Connects to the admin socket. A server that refuses the caller says why (the client
/// library returns that reason as the error).
fn connect(path: &Path) -> Result<Client> {
    match Client::connect(path, CLIENT_NAME) {
        Ok(c) => Ok(c),
        Err(e @ ClientError::Server(_)) => Err(e.into()),
        Err(e) => Err(e).with_context(|| format!("connecting to {}", path.display())),
    }
}

struct Ctl {
    client: Client,
    json: bool,
}

fn unexpected(r: &Reply) -> anyhow::Error {
    anyhow!("unexpected reply from the server: {r:?}")
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Version of the `--json` shapes documented in sgctl(1). Raised when a field is renamed or
/// removed or a value changes meaning; new fields do not raise it.
pub const SCHEMA_VERSION: u64 = 1;

/// Keys whose string values are names from a fixed set (enum variants on the wire).
const ENUM_KEYS: &[&str] = &["kind", "state", "direction", "answer", "event"];

/// `F32Le` → `f32le`, `NotFound` → `not_found`, `AllowOnce` → `allow_once`.
fn value_name(key: &str, v: &str) -> String {
    if key == "format" {
        return v.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(v.len() + 4);
    for (i, c) in v.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The stable form of a document: enum values in lowercase (see [`value_name`]) and
/// `schema_version` at the top.
pub fn stable(v: Value) -> Value {
    fn walk(v: Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(s)
                                if k == "format" || ENUM_KEYS.contains(&k.as_str()) =>
                            {
                                Value::String(value_name(&k, &s))
                            }
                            other => walk(other),
                        };
                        (k, v)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(walk).collect()),
            other => other,
        }
    }
    match walk(v) {
        Value::Object(mut m) => {
            m.insert("schema_version".into(), json!(SCHEMA_VERSION));
            Value::Object(m)
        }
        other => json!({ "schema_version": SCHEMA_VERSION, "value": other }),
    }
}

/// Stream entries with their owner's identity (`app_id`, `pid`, `uid`, `user`, `label`), so
/// that a script needs no join; null when the owner left between the two requests.
fn streams_json(list: &[StreamInfo], clients: &[ClientInfo]) -> Value {
    Value::Array(
        list.iter()
            .map(|s| {
                let mut v = to_json(s);
                let owner = clients.iter().find(|c| c.id == s.client);
                if let Value::Object(m) = &mut v {
                    m.insert("app_id".into(), json!(owner.map(|c| &c.app_id)));
                    m.insert("pid".into(), json!(owner.map(|c| c.pid)));
                    m.insert("uid".into(), json!(owner.map(|c| c.uid)));
                    m.insert("user".into(), json!(owner.and_then(|c| c.user.as_ref())));
                    m.insert("label".into(), json!(owner.map(|c| &c.label)));
                }
                v
            })
            .collect(),
    )
}

/// Prints one JSON document.
fn print_json(v: &Value) -> Result<()> {
    let v = &stable(v.clone());
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v).context("writing JSON")?;
    writeln!(out).context("writing to standard output")?;
    Ok(())
}

/// Prints one JSON line (and flushes, for streaming commands).
fn print_json_line(v: &Value) -> Result<()> {
    let v = &stable(v.clone());
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, v).context("writing JSON")?;
    writeln!(out).context("writing to standard output")?;
    out.flush().context("writing to standard output")?;
    Ok(())
}

fn say(line: impl AsRef<str>) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", line.as_ref()).context("writing to standard output")?;
    out.flush().context("writing to standard output")?;
    Ok(())
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn pct(v: f32) -> String {
    format!("{:.0}%", f64::from(v) * 100.0)
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn kind_name(k: DeviceKind) -> &'static str {
    match k {
        DeviceKind::Sink => "sink",
        DeviceKind::Capture => "capture",
        DeviceKind::Monitor => "monitor",
    }
}

fn user_of(uid: u32, user: &Option<String>) -> String {
    match user {
        Some(u) => format!("{u} ({uid})"),
        None => uid.to_string(),
    }
}

/// `{"event": "StreamAdded", "data": {...}}` from serde's `{"StreamAdded": {...}}`.
fn event_json(ev: &Event) -> Value {
    match to_json(ev) {
        Value::Object(m) if m.len() == 1 => {
            let (k, v) = m.into_iter().next().unwrap_or_default();
            json!({ "event": k, "data": v })
        }
        other => json!({ "event": other }),
    }
}

fn event_line(ev: &Event) -> String {
    match ev {
        Event::StreamAdded(s) => format!(
            "stream-added    {} client {} {:?} {:?} on {} volume {}",
            s.id,
            s.client,
            s.name,
            s.direction,
            s.device,
            pct(s.volume)
        ),
        Event::StreamChanged(s) => format!(
            "stream-changed  {} volume {} muted {} corked {} on {}",
            s.id,
            pct(s.volume),
            yes(s.muted),
            yes(s.corked),
            s.device
        ),
        Event::StreamRemoved { stream } => format!("stream-removed  {stream}"),
        Event::StreamEnded { stream, error } => format!("stream-ended    {stream}: {error}"),
        Event::Underrun { stream, underruns } => {
            format!("underrun        {stream} ({underruns} in all)")
        }
        Event::DeviceChanged(d) => format!(
            "device-changed  {} {} volume {} muted {} suspended {} default {}",
            d.name,
            kind_name(d.kind),
            pct(d.volume),
            yes(d.muted),
            yes(d.suspended),
            yes(d.is_default)
        ),
        Event::DeviceRemoved { name } => format!("device-removed  {name}"),
        Event::ClientAdded(c) => format!(
            "client-added    {} pid {} uid {} {} label {:?}",
            c.id, c.pid, c.uid, c.app_id, c.label
        ),
        Event::ClientRemoved { client } => format!("client-removed  {client}"),
        Event::Decision(line) => format!("decision        {}", audit_human(line)),
        Event::Xrun { device, xruns } => format!("xrun            {device} ({xruns} in all)"),
        Event::Meters(ms) => {
            let parts: Vec<String> = ms
                .iter()
                .map(|m| {
                    let who = m
                        .stream
                        .map_or_else(|| m.device.clone(), |s| format!("stream {s}"));
                    format!("{who} peak {:.2} rms {:.2}", m.peak, m.rms)
                })
                .collect();
            format!("meters          {}", parts.join(", "))
        }
        Event::Prompt(p) => format!(
            "prompt          {} {} wants to {} {}",
            p.id, p.app_id, p.action, p.target
        ),
        Event::PromptResolved { prompt, outcome } => {
            format!("prompt-resolved {prompt}: {outcome}")
        }
        Event::PermissionPending { request, prompt } => {
            format!("pending         request {request} prompt {prompt}")
        }
    }
}

/// An audit log line (JSON) for people; the raw line if it is not what we expect.
fn audit_human(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let subj = v.get("subject").cloned().unwrap_or(Value::Null);
    let n = |k: &str| subj.get(k).map_or_else(|| "-".into(), Value::to_string);
    let app = subj.get("app_id").and_then(Value::as_str).unwrap_or("-");
    let mut out = format!(
        "{} {:<12} {} {} client {} pid {} uid {} {} by {}",
        s("time"),
        s("decision"),
        s("action"),
        s("object"),
        n("client"),
        n("pid"),
        n("uid"),
        app,
        s("by")
    );
    if let Some(r) = v.get("reason").and_then(Value::as_str) {
        out.push_str(&format!(": {r}"));
    }
    out
}

fn stream_rows(list: &[StreamInfo], clients: &[ClientInfo]) -> Vec<Vec<String>> {
    list.iter()
        .map(|s| {
            let app = clients
                .iter()
                .find(|c| c.id == s.client)
                .map_or_else(|| "-".to_string(), |c| c.app_id.clone());
            vec![
                s.id.to_string(),
                s.client.to_string(),
                app,
                format!("{:?}", s.direction).to_lowercase(),
                s.device.clone(),
                pct(s.volume),
                yes(s.muted),
                yes(s.corked),
                s.underruns.to_string(),
                s.name.clone(),
            ]
        })
        .collect()
}

fn device_rows(list: &[DeviceInfo]) -> Vec<Vec<String>> {
    list.iter()
        .map(|d| {
            vec![
                d.name.clone(),
                kind_name(d.kind).to_string(),
                d.backend.clone(),
                d.spec.to_string(),
                d.quantum.to_string(),
                pct(d.volume),
                yes(d.muted),
                yes(d.suspended),
                yes(d.is_default),
                format!("{:?}", d.state).to_lowercase(),
            ]
        })
        .collect()
}

fn prompt_block(p: &PromptInfo) -> String {
    let exe = p.exe.as_deref().unwrap_or("(unknown)");
    format!(
        "prompt {id}: {app} wants to {action} {target}\n  \
         app id   {app} (established from {src})\n  \
         user     {user}\n  \
         pid      {pid} (client {client})\n  \
         exe      {exe}\n  \
         label    {label:?} (declared by the app, unverified)",
        id = p.id,
        app = p.app_id,
        action = p.action,
        target = p.target,
        src = p.app_source,
        user = user_of(p.uid, &p.user),
        pid = p.pid,
        client = p.client,
        label = p.label,
    )
}

impl Ctl {
    fn call(&self, req: Request) -> Result<Reply> {
        let what = request_name(&req);
        Ok(self
            .client
            .request(req, &[])
            .with_context(|| format!("{what} failed"))?
            .0)
    }

    fn ok(&self, req: Request) -> Result<()> {
        match self.call(req)? {
            Reply::Ok => Ok(()),
            r => Err(unexpected(&r)),
        }
    }

    fn streams(&self) -> Result<Vec<StreamInfo>> {
        match self.call(Request::ListStreams)? {
            Reply::Streams(l) => Ok(l),
            r => Err(unexpected(&r)),
        }
    }

    fn sinks(&self) -> Result<Vec<DeviceInfo>> {
        match self.call(Request::ListSinks)? {
            Reply::Sinks(l) => Ok(l),
            r => Err(unexpected(&r)),
        }
    }

    fn sources(&self) -> Result<Vec<DeviceInfo>> {
        match self.call(Request::ListSources)? {
            Reply::Sources(l) => Ok(l),
            r => Err(unexpected(&r)),
        }
    }

    fn clients(&self) -> Result<Vec<ClientInfo>> {
        match self.call(Request::ListClients)? {
            Reply::Clients(l) => Ok(l),
            r => Err(unexpected(&r)),
        }
    }

    fn prompts(&self) -> Result<Vec<PromptInfo>> {
        match self.call(Request::ListPrompts)? {
            Reply::Prompts(l) => Ok(l),
            r => Err(unexpected(&r)),
        }
    }

    fn grants(&self) -> Result<Vec<GrantInfo>> {
        match self.call(Request::ListGrants)? {
            Reply::Grants(l) => Ok(l),
            r => Err(unexpected(&r)),
        }
    }

    /// `restore list` and `restore forget`.
    fn restore(&self, op: &RestoreOp) -> Result<()> {
        let (req, key) = match op {
            RestoreOp::List => (Request::ListStreamSettings, "settings"),
            RestoreOp::Forget { app, uid, device } => (
                Request::ForgetStreamSettings {
                    app_id: app.clone(),
                    uid: *uid,
                    device: device.clone(),
                },
                "forgotten",
            ),
        };
        let l = match self.call(req)? {
            Reply::StreamSettings(l) => l,
            r => return Err(unexpected(&r)),
        };
        self.emit(json!({ key: to_json(&l) }), || {
            let rows: Vec<Vec<String>> = l
                .iter()
                .map(|s| {
                    vec![
                        s.uid.to_string(),
                        s.app_id.clone(),
                        s.device.clone(),
                        pct(s.volume),
                        yes(s.muted),
                    ]
                })
                .collect();
            if matches!(op, RestoreOp::Forget { .. }) {
                say(format!("forgot {} setting(s)", l.len()))?;
            }
            say(table(&["UID", "APP", "DEVICE", "VOLUME", "MUTED"], &rows))
        })
    }

    fn samples(&self) -> Result<Vec<SampleInfo>> {
        match self.call(Request::ListSamples)? {
            Reply::Samples(l) => Ok(l),
            r => Err(unexpected(&r)),
        }
    }

    fn stream(&self, id: u32) -> Result<StreamInfo> {
        match self.call(Request::StreamInfo { stream: id })? {
            Reply::Stream(s) => Ok(s),
            r => Err(unexpected(&r)),
        }
    }

    /// A sink or source by name.
    fn device(&self, name: &str) -> Result<DeviceInfo> {
        let mut all = self.sinks()?;
        all.extend(self.sources()?);
        all.into_iter().find(|d| d.name == name).ok_or_else(|| {
            anyhow::Error::new(WireError::new(
                wire::ErrorKind::NotFound,
                format!("no sink or source named {name}"),
            ))
        })
    }

    fn client_info(&self, id: u32) -> Result<ClientInfo> {
        self.clients()?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| {
                anyhow::Error::new(WireError::new(
                    wire::ErrorKind::NotFound,
                    format!("no client {id}"),
                ))
            })
    }

    /// Prints `v` as JSON, or runs `human`.
    fn emit(&self, v: Value, human: impl FnOnce() -> Result<()>) -> Result<()> {
        if self.json {
            print_json(&v)
        } else {
            human()
        }
    }

    /// A change that prints nothing for people and `{"ok": true, ...}` as JSON.
    fn done(&self, v: Value) -> Result<()> {
        if self.json {
            let mut v = v;
            if let Value::Object(m) = &mut v {
                m.insert("ok".into(), Value::Bool(true));
            }
            print_json(&v)
        } else {
            Ok(())
        }
    }

    fn dispatch(&self, cmd: &Cmd) -> Result<()> {
        match cmd {
            Cmd::Status => self.status(),
            Cmd::Ls { what } => self.ls(*what),
            Cmd::Info { id } => self.info(id),
            Cmd::Volume { id, level } => self.volume(id, *level),
            Cmd::Mute { id, state } => self.mute(id, *state),
            Cmd::Move { stream, device } => {
                self.ok(Request::MoveStream {
                    stream: *stream,
                    device: device.clone(),
                })?;
                self.done(json!({ "stream": stream, "device": device }))
            }
            Cmd::Kill { id } => self.kill(id),
            Cmd::Default { args } => self.default(args),
            Cmd::Suspend { device, state } => {
                let suspend = *state == OnOff::On;
                self.ok(Request::SuspendDevice {
                    device: device.clone(),
                    suspend,
                })?;
                self.done(json!({ "device": device, "suspended": suspend }))
            }
            Cmd::Sink(op) => self.device_op(op, DeviceKind::Sink),
            Cmd::Source(op) => self.device_op(op, DeviceKind::Capture),
            Cmd::Grant {
                app,
                action,
                uid,
                target,
                deny,
            } => self.grant(app, action, *uid, target.clone(), *deny),
            Cmd::Revoke { grant } => {
                self.ok(Request::RevokeGrant { grant: *grant })?;
                self.done(json!({ "revoked": grant }))
            }
            Cmd::Prompts => self.ls(ListWhat::Prompts),
            Cmd::Answer {
                prompt,
                decision,
                scope,
            } => self.answer(*prompt, *decision, *scope),
            Cmd::Agent { answer, count } => self.agent(*answer, *count),
            Cmd::Watch { meters } => self.watch(*meters),
            Cmd::Audit { lines, follow } => self.audit(*lines, *follow),
            Cmd::Stats => self.stats(),
            Cmd::Restore(op) => self.restore(op),
            Cmd::Completions { .. } => Ok(()),
        }
    }

    fn status(&self) -> Result<()> {
        let info = match self.call(Request::ServerInfo)? {
            Reply::ServerInfo(i) => i,
            r => return Err(unexpected(&r)),
        };
        let clients = self.clients()?.len();
        let streams = self.streams()?.len();
        let sinks = self.sinks()?.len();
        let sources = self.sources()?.len();
        let prompts = self.prompts()?.len();
        let v = json!({
            "server": to_json(&info),
            "clients": clients,
            "streams": streams,
            "sinks": sinks,
            "sources": sources,
            "prompts": prompts,
        });
        self.emit(v, || {
            let none = || "(none)".to_string();
            let mut rows = vec![
                vec![
                    "server".into(),
                    format!(
                        "{} {} (protocol {})",
                        info.name, info.version, info.protocol
                    ),
                ],
                vec![
                    "default sink".into(),
                    info.default_sink.clone().unwrap_or_else(none),
                ],
                vec![
                    "default source".into(),
                    info.default_source.clone().unwrap_or_else(none),
                ],
                vec!["clients".into(), clients.to_string()],
                vec!["streams".into(), streams.to_string()],
                vec!["sinks".into(), sinks.to_string()],
                vec!["sources".into(), sources.to_string()],
                vec!["prompts".into(), format!("{prompts} pending")],
            ];
            if let Some(n) = &info.notice {
                rows.push(vec!["notice".into(), n.clone()]);
            }
            let text = table(&["", ""], &rows);
            say(text.lines().skip(1).collect::<Vec<_>>().join("\n"))
        })
    }

    fn ls(&self, what: ListWhat) -> Result<()> {
        match what {
            ListWhat::Streams => {
                let l = self.streams()?;
                let clients = self.clients()?;
                self.emit(json!({ "streams": streams_json(&l, &clients) }), || {
                    say(table(
                        &[
                            "ID",
                            "CLIENT",
                            "APP",
                            "DIR",
                            "DEVICE",
                            "VOLUME",
                            "MUTED",
                            "CORKED",
                            "UNDERRUNS",
                            "NAME",
                        ],
                        &stream_rows(&l, &clients),
                    ))
                })
            }
            ListWhat::Sinks | ListWhat::Sources => {
                let (key, l) = if what == ListWhat::Sinks {
                    ("sinks", self.sinks()?)
                } else {
                    ("sources", self.sources()?)
                };
                self.emit(json!({ key: to_json(&l) }), || {
                    say(table(
                        &[
                            "NAME",
                            "KIND",
                            "BACKEND",
                            "SPEC",
                            "QUANTUM",
                            "VOLUME",
                            "MUTED",
                            "SUSPENDED",
                            "DEFAULT",
                            "STATE",
                        ],
                        &device_rows(&l),
                    ))
                })
            }
            ListWhat::Clients => {
                let l = self.clients()?;
                self.emit(json!({ "clients": to_json(&l) }), || {
                    let rows: Vec<Vec<String>> = l
                        .iter()
                        .map(|c| {
                            vec![
                                c.id.to_string(),
                                c.pid.to_string(),
                                user_of(c.uid, &c.user),
                                yes(c.admin),
                                c.streams.to_string(),
                                c.app_source.clone(),
                                c.app_id.clone(),
                                format!("{:?}", c.label),
                            ]
                        })
                        .collect();
                    say(table(
                        &[
                            "ID", "PID", "USER", "ADMIN", "STREAMS", "VIA", "APP", "LABEL",
                        ],
                        &rows,
                    ))
                })
            }
            ListWhat::Grants => {
                let l = self.grants()?;
                self.emit(json!({ "grants": to_json(&l) }), || {
                    let rows: Vec<Vec<String>> = l
                        .iter()
                        .map(|g| {
                            vec![
                                g.id.to_string(),
                                g.uid.to_string(),
                                g.app_id.clone(),
                                g.action.clone(),
                                g.target.clone().unwrap_or_else(|| "*".into()),
                                if g.allow { "allow" } else { "deny" }.into(),
                                g.scope.clone(),
                                g.client.map_or_else(|| "-".into(), |c| c.to_string()),
                                g.by.clone(),
                            ]
                        })
                        .collect();
                    say(table(
                        &[
                            "ID", "UID", "APP", "ACTION", "TARGET", "DECISION", "SCOPE", "CLIENT",
                            "BY",
                        ],
                        &rows,
                    ))
                })
            }
            ListWhat::Prompts => {
                let l = self.prompts()?;
                self.emit(json!({ "prompts": to_json(&l) }), || {
                    let rows: Vec<Vec<String>> = l
                        .iter()
                        .map(|p| {
                            vec![
                                p.id.to_string(),
                                p.client.to_string(),
                                p.pid.to_string(),
                                user_of(p.uid, &p.user),
                                p.action.clone(),
                                p.target.clone(),
                                p.app_id.clone(),
                                format!("{:?} (unverified)", p.label),
                            ]
                        })
                        .collect();
                    say(table(
                        &[
                            "ID", "CLIENT", "PID", "USER", "ACTION", "TARGET", "APP", "LABEL",
                        ],
                        &rows,
                    ))
                })
            }
            ListWhat::Samples => {
                let l = self.samples()?;
                self.emit(json!({ "samples": to_json(&l) }), || {
                    let rows: Vec<Vec<String>> = l
                        .iter()
                        .map(|s| {
                            vec![
                                s.owner.to_string(),
                                s.name.clone(),
                                s.spec.to_string(),
                                s.frames.to_string(),
                                s.bytes.to_string(),
                            ]
                        })
                        .collect();
                    say(table(&["OWNER", "NAME", "SPEC", "FRAMES", "BYTES"], &rows))
                })
            }
        }
    }

    fn info(&self, id: &Target) -> Result<()> {
        match id {
            Target::Stream(n) => {
                let s = self.stream(*n)?;
                let clients = self.clients()?;
                let v = streams_json(std::slice::from_ref(&s), &clients);
                let v = json!({ "stream": v.get(0).cloned().unwrap_or(Value::Null) });
                self.emit(v, || {
                    let owner = clients.iter().find(|c| c.id == s.client);
                    let rows = vec![
                        vec!["stream".into(), s.id.to_string()],
                        vec!["name".into(), format!("{:?}", s.name)],
                        vec!["client".into(), s.client.to_string()],
                        vec![
                            "app id".into(),
                            owner.map_or_else(|| "-".into(), |c| c.app_id.clone()),
                        ],
                        vec![
                            "user".into(),
                            owner.map_or_else(|| "-".into(), |c| user_of(c.uid, &c.user)),
                        ],
                        vec![
                            "direction".into(),
                            format!("{:?}", s.direction).to_lowercase(),
                        ],
                        vec!["device".into(), s.device.clone()],
                        vec!["spec".into(), s.spec.to_string()],
                        vec![
                            "volume".into(),
                            format!("{} ({:.3})", pct(s.volume), s.volume),
                        ],
                        vec!["muted".into(), yes(s.muted)],
                        vec!["corked".into(), yes(s.corked)],
                        vec!["exclusive".into(), yes(s.exclusive)],
                        vec!["underruns".into(), s.underruns.to_string()],
                        vec!["frames".into(), s.frames.to_string()],
                        vec!["buffer".into(), format!("{} frames", s.capacity_frames)],
                        vec!["peak".into(), format!("{:.3}", s.peak)],
                    ];
                    say(kv(&rows))
                })
            }
            Target::Client(n) => {
                let c = self.client_info(*n)?;
                let streams: Vec<StreamInfo> = self
                    .streams()?
                    .into_iter()
                    .filter(|s| s.client == c.id)
                    .collect();
                let v = json!({
                    "client": to_json(&c),
                    "streams": streams_json(&streams, std::slice::from_ref(&c)),
                });
                self.emit(v, || {
                    let rows = vec![
                        vec!["client".into(), c.id.to_string()],
                        vec!["pid".into(), c.pid.to_string()],
                        vec!["user".into(), user_of(c.uid, &c.user)],
                        vec![
                            "app id".into(),
                            format!("{} (established from {})", c.app_id, c.app_source),
                        ],
                        vec![
                            "label".into(),
                            format!("{:?} (declared, unverified)", c.label),
                        ],
                        vec!["admin".into(), yes(c.admin)],
                        vec!["streams".into(), c.streams.to_string()],
                    ];
                    say(kv(&rows))?;
                    if !streams.is_empty() {
                        say("")?;
                        say(table(
                            &[
                                "ID",
                                "CLIENT",
                                "APP",
                                "DIR",
                                "DEVICE",
                                "VOLUME",
                                "MUTED",
                                "CORKED",
                                "UNDERRUNS",
                                "NAME",
                            ],
                            &stream_rows(&streams, std::slice::from_ref(&c)),
                        ))?;
                    }
                    Ok(())
                })
            }
            Target::Device(name) => {
                let d = self.device(name)?;
                self.emit(json!({ "device": to_json(&d) }), || {
                    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
                    let rows = vec![
                        vec!["device".into(), d.name.clone()],
                        vec!["kind".into(), kind_name(d.kind).into()],
                        vec!["backend".into(), d.backend.clone()],
                        vec!["opened".into(), opt(&d.device)],
                        vec!["spec".into(), d.spec.to_string()],
                        vec!["quantum".into(), d.quantum.to_string()],
                        vec!["clock".into(), d.clock.clone()],
                        vec!["state".into(), format!("{:?}", d.state).to_lowercase()],
                        vec![
                            "volume".into(),
                            format!("{} ({:.3})", pct(d.volume), d.volume),
                        ],
                        vec!["muted".into(), yes(d.muted)],
                        vec!["suspended".into(), yes(d.suspended)],
                        vec!["default".into(), yes(d.is_default)],
                        vec!["monitor of".into(), opt(&d.monitor_of)],
                        vec!["xruns".into(), d.xruns.to_string()],
                        vec!["detail".into(), opt(&d.detail)],
                    ];
                    say(kv(&rows))
                })
            }
        }
    }

    fn volume(&self, id: &Target, level: Level) -> Result<()> {
        match id {
            Target::Stream(n) => {
                let v = level.apply(self.stream(*n)?.volume);
                self.ok(Request::SetVolume {
                    stream: *n,
                    volume: v,
                })?;
                self.done(json!({ "stream": n, "volume": v }))
            }
            Target::Device(name) => {
                let v = level.apply(self.device(name)?.volume);
                self.ok(Request::SetDeviceVolume {
                    device: name.clone(),
                    volume: v,
                })?;
                self.done(json!({ "device": name, "volume": v }))
            }
            Target::Client(_) => Err(UsageError(
                "volume takes a stream id or a device name, not a client".into(),
            )
            .into()),
        }
    }

    fn mute(&self, id: &Target, state: Toggle) -> Result<()> {
        let want = |current: bool| match state {
            Toggle::On => true,
            Toggle::Off => false,
            Toggle::Toggle => !current,
        };
        match id {
            Target::Stream(n) => {
                let muted = want(self.stream(*n)?.muted);
                self.ok(Request::SetMute { stream: *n, muted })?;
                self.done(json!({ "stream": n, "muted": muted }))
            }
            Target::Device(name) => {
                let muted = want(self.device(name)?.muted);
                self.ok(Request::SetDeviceMute {
                    device: name.clone(),
                    muted,
                })?;
                self.done(json!({ "device": name, "muted": muted }))
            }
            Target::Client(_) => Err(UsageError(
                "mute takes a stream id or a device name, not a client".into(),
            )
            .into()),
        }
    }

    fn kill(&self, id: &Target) -> Result<()> {
        match id {
            Target::Stream(n) => {
                self.ok(Request::DeleteStream { stream: *n })?;
                self.done(json!({ "killed": { "stream": n } }))
            }
            Target::Client(n) => {
                self.ok(Request::KillClient { client: *n })?;
                self.done(json!({ "killed": { "client": n } }))
            }
            Target::Device(d) => Err(UsageError(format!(
                "kill takes a stream id or client:ID, not {d:?} (to remove a device: sgctl sink rm)"
            ))
            .into()),
        }
    }

    fn default(&self, args: &[String]) -> Result<()> {
        let (kind, name) = match args {
            [name] => ("sink", name),
            [kind, name] if kind == "sink" || kind == "source" => (kind.as_str(), name),
            [kind, _] => {
                return Err(UsageError(format!("expected sink or source, not {kind:?}")).into())
            }
            _ => return Err(UsageError("default takes [sink|source] NAME".into()).into()),
        };
        let req = if kind == "sink" {
            Request::SetDefaultSink { sink: name.clone() }
        } else {
            Request::SetDefaultSource {
                source: name.clone(),
            }
        };
        self.ok(req)?;
        self.done(json!({ "default": { "kind": kind, "name": name } }))
    }

    fn device_op(&self, op: &DeviceOp, kind: DeviceKind) -> Result<()> {
        match op {
            DeviceOp::Add(a) => {
                let backend = match a.backend {
                    Backend::Null => "null",
                    Backend::File => "file",
                    Backend::Alsa => "alsa",
                };
                if a.backend == Backend::File && a.path.is_none() {
                    return Err(UsageError("--backend file needs --path".into()).into());
                }
                if a.backend == Backend::Alsa && a.device.is_none() {
                    return Err(UsageError("--backend alsa needs --device PCM".into()).into());
                }
                let device = NewDevice {
                    name: a.name.clone(),
                    kind,
                    backend: backend.into(),
                    path: a.path.clone(),
                    pcm: a.device.clone(),
                    spec: StreamSpec {
                        format: a.format,
                        rate: a.rate,
                        channels: a.channels,
                    },
                    quantum: a.quantum,
                };
                let v = json!({ "added": to_json(&device) });
                self.ok(Request::CreateDevice { device })?;
                self.done(v)
            }
            DeviceOp::Rm { name } => {
                self.ok(Request::RemoveDevice { name: name.clone() })?;
                self.done(json!({ "removed": name }))
            }
        }
    }

    fn grant(
        &self,
        app: &str,
        action: &str,
        uid: Option<u32>,
        target: Option<String>,
        deny: bool,
    ) -> Result<()> {
        let uid = match uid {
            Some(u) => u,
            None => my_uid()?,
        };
        let reply = self.call(Request::AddGrant {
            uid,
            app_id: app.to_string(),
            action: action.to_string(),
            target,
            allow: !deny,
        })?;
        let grants = match reply {
            Reply::Grants(g) => g,
            Reply::Ok => Vec::new(),
            r => return Err(unexpected(&r)),
        };
        let v = match grants.first() {
            Some(g) => json!({ "grant": to_json(g) }),
            None => json!({ "grant": Value::Null }),
        };
        self.emit(v, || match grants.first() {
            Some(g) => say(format!("grant {}", g.id)),
            None => Ok(()),
        })
    }

    fn answer(&self, prompt: u64, decision: AllowDeny, scope: ScopeArgs) -> Result<()> {
        let answer = match (decision, scope.session, scope.always) {
            (AllowDeny::Allow, false, false) => PromptAnswer::AllowOnce,
            (AllowDeny::Allow, true, _) => PromptAnswer::AllowSession,
            (AllowDeny::Allow, _, true) => PromptAnswer::AllowAlways,
            (AllowDeny::Deny, false, false) => PromptAnswer::DenyOnce,
            (AllowDeny::Deny, _, true) => PromptAnswer::DenyAlways,
            (AllowDeny::Deny, true, _) => {
                return Err(UsageError(
                    "deny --session does not exist: deny once, or --always".into(),
                )
                .into())
            }
        };
        self.ok(Request::AnswerPrompt { prompt, answer })?;
        self.done(json!({ "prompt": prompt, "answer": to_json(&answer) }))
    }

    /// Waits for events, calling `f` on each until it says stop; fails when the server hangs up.
    fn for_each_event(&self, mut f: impl FnMut(Event) -> Result<bool>) -> Result<()> {
        loop {
            let events = self
                .client
                .take_events()
                .context("the server closed the connection")?;
            if events.is_empty() {
                std::thread::sleep(POLL);
                continue;
            }
            for ev in events {
                if !f(ev)? {
                    return Ok(());
                }
            }
        }
    }

    fn agent(&self, auto: Option<AnswerArg>, count: Option<u64>) -> Result<()> {
        let pending = match self.call(Request::SubscribePrompts)? {
            Reply::Prompts(p) => p,
            r => return Err(unexpected(&r)),
        };
        if !self.json {
            say(format!(
                "prompt agent ready ({} pending); answers: a = allow once, s = allow for the \
                 session, A = allow always, d = deny once, D = deny always",
                pending.len()
            ))?;
        }
        let mut answered = 0u64;
        if count == Some(0) {
            return Ok(());
        }
        let stdin = io::stdin();
        let mut handle = |p: PromptInfo| -> Result<bool> {
            if self.json {
                print_json_line(&json!({ "prompt": to_json(&p) }))?;
            } else {
                say(prompt_block(&p))?;
            }
            let answer = match auto {
                Some(a) => PromptAnswer::from(a),
                None => match read_answer(&mut stdin.lock(), self.json)? {
                    Some(a) => a,
                    None => return Ok(false),
                },
            };
            match self.call(Request::AnswerPrompt {
                prompt: p.id,
                answer,
            }) {
                Ok(_) => {
                    answered += 1;
                    if self.json {
                        print_json_line(&json!({ "answered": p.id, "answer": to_json(&answer) }))?;
                    } else {
                        say(format!("answered prompt {}: {answer:?}", p.id))?;
                    }
                }
                Err(e) => {
                    // Timed out or answered elsewhere meanwhile: say so, keep serving.
                    let line = crate::exit::error_line(&e);
                    if self.json {
                        print_json_line(&json!({ "prompt": p.id, "error": line }))?;
                    } else {
                        say(format!("prompt {}: {line}", p.id))?;
                    }
                }
            }
            Ok(!matches!(count, Some(n) if answered >= n))
        };
        for p in pending {
            if !handle(p)? {
                return Ok(());
            }
        }
        self.for_each_event(|ev| match ev {
            Event::Prompt(p) => handle(p),
            Event::PromptResolved { prompt, outcome } => {
                if self.json {
                    print_json_line(&json!({ "resolved": prompt, "outcome": outcome }))?;
                } else {
                    say(format!("prompt {prompt} resolved: {outcome}"))?;
                }
                Ok(true)
            }
            _ => Ok(true),
        })
    }

    fn watch(&self, meters: Option<u32>) -> Result<()> {
        self.ok(Request::Subscribe)?;
        if let Some(hz) = meters {
            self.ok(Request::SubscribeMeters { hz })?;
        }
        // Stream events carry their owner in JSON, as `ls streams` does: the clients known at
        // subscription, then as they come and go.
        let mut clients = if self.json {
            self.clients()?
        } else {
            Vec::new()
        };
        self.for_each_event(|ev| {
            if self.json {
                match &ev {
                    Event::ClientAdded(c) => clients.push(c.clone()),
                    Event::ClientRemoved { client } => clients.retain(|c| c.id != *client),
                    _ => {}
                }
                let mut v = event_json(&ev);
                if let Event::StreamAdded(s) | Event::StreamChanged(s) = &ev {
                    let owned = streams_json(std::slice::from_ref(s), &clients);
                    v["data"] = owned.get(0).cloned().unwrap_or(Value::Null);
                }
                print_json_line(&v)?;
            } else {
                say(event_line(&ev))?;
            }
            Ok(true)
        })
    }

    fn audit(&self, lines: u32, follow: bool) -> Result<()> {
        if follow {
            // Subscribe first so that nothing falls between the tail and the events.
            self.ok(Request::Subscribe)?;
        }
        let tail = match self.call(Request::AuditTail { lines })? {
            Reply::Audit(l) => l,
            r => return Err(unexpected(&r)),
        };
        let parse = |l: &str| serde_json::from_str::<Value>(l).unwrap_or(Value::String(l.into()));
        if self.json && !follow {
            let v: Vec<Value> = tail.iter().map(|l| parse(l)).collect();
            return print_json(&json!({ "audit": v }));
        }
        let show = |l: &str| -> Result<()> {
            if self.json {
                print_json_line(&parse(l))
            } else {
                say(audit_human(l))
            }
        };
        for l in &tail {
            show(l)?;
        }
        if !follow {
            return Ok(());
        }
        self.for_each_event(|ev| {
            if let Event::Decision(line) = ev {
                show(&line)?;
            }
            Ok(true)
        })
    }

    fn stats(&self) -> Result<()> {
        let s = match self.call(Request::Stats)? {
            Reply::Stats(s) => s,
            r => return Err(unexpected(&r)),
        };
        let v = json!({
            "uptime_secs": s.uptime_secs,
            "clients": s.clients,
            "streams": s.streams,
            "rss_bytes": s.rss_bytes,
            "devices": to_json(&s.devices),
            "client_cost": s.client_cost.iter()
                .map(|(c, share)| json!({ "client": c, "share": share }))
                .collect::<Vec<_>>(),
            "stream_wakeups": to_json(&s.stream_wakeups),
            "convert": to_json(&s.convert),
        });
        self.emit(v, || {
            say(kv(&[
                vec!["uptime".into(), format!("{} s", s.uptime_secs)],
                vec!["clients".into(), s.clients.to_string()],
                vec!["streams".into(), s.streams.to_string()],
                vec![
                    "memory".into(),
                    format!("{:.1} MiB resident", s.rss_bytes as f64 / 1048576.0),
                ],
            ]))?;
            say("")?;
            let rows: Vec<Vec<String>> = s
                .devices
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.cycles.to_string(),
                        d.late_cycles.to_string(),
                        d.xruns.to_string(),
                        format!("{:.1}", d.cycle_mean_us),
                        format!("{:.1}", d.cycle_p99_us),
                        format!("{:.1}", d.cycle_max_us),
                        format!("{:.2}%", d.load * 100.0),
                        format!("{}/{}", d.engine_streams, d.streams),
                        d.wakeups.to_string(),
                    ]
                })
                .collect();
            say(table(
                &[
                    "DEVICE",
                    "CYCLES",
                    "LATE",
                    "XRUNS",
                    "MEAN_US",
                    "P99_US",
                    "MAX_US",
                    "LOAD",
                    "ENGINE/REG",
                    "WAKEUPS",
                ],
                &rows,
            ))?;
            say("")?;
            let rows: Vec<Vec<String>> = s
                .client_cost
                .iter()
                .map(|(c, share)| vec![c.to_string(), format!("{:.3}%", share * 100.0)])
                .collect();
            say(table(&["CLIENT", "COST"], &rows))?;
            say("")?;
            let rows: Vec<Vec<String>> = s
                .stream_wakeups
                .iter()
                .map(|w| {
                    vec![
                        w.stream.to_string(),
                        w.device.clone(),
                        w.wakeups.to_string(),
                        format!("{:.1}", w.per_sec),
                    ]
                })
                .collect();
            say(table(&["STREAM", "DEVICE", "WAKEUPS", "WAKEUPS/S"], &rows))?;
            say("")?;
            let rows: Vec<Vec<String>> = s
                .convert
                .iter()
                .map(|c| {
                    vec![
                        c.client.to_string(),
                        c.uid.to_string(),
                        c.samples_per_sec.to_string(),
                        c.budget.to_string(),
                    ]
                })
                .collect();
            say(table(
                &["CLIENT", "UID", "CONVERT/S", "UID_BUDGET/S"],
                &rows,
            ))
        })
    }
}

/// Key-value lines, keys padded.
fn kv(rows: &[Vec<String>]) -> String {
    let text = table(&["", ""], rows);
    text.lines().skip(1).collect::<Vec<_>>().join("\n")
}

/// Reads one answer key from the terminal; `None` at the end of input.
fn read_answer(input: &mut impl BufRead, json: bool) -> Result<Option<PromptAnswer>> {
    loop {
        if !json {
            print!("answer [a/s/A/d/D]: ");
            io::stdout().flush().context("writing to standard output")?;
        }
        let mut line = String::new();
        if input
            .read_line(&mut line)
            .context("reading the answer from standard input")?
            == 0
        {
            return Ok(None);
        }
        let a = match line.trim() {
            "a" | "allow" | "allow-once" => PromptAnswer::AllowOnce,
            "s" | "session" | "allow-session" => PromptAnswer::AllowSession,
            "A" | "always" | "allow-always" => PromptAnswer::AllowAlways,
            "d" | "deny" | "deny-once" => PromptAnswer::DenyOnce,
            "D" | "deny-always" => PromptAnswer::DenyAlways,
            other => {
                if !json {
                    say(format!(
                        "{other:?}? a = allow once, s = session, A = always, d = deny, D = deny always"
                    ))?;
                }
                continue;
            }
        };
        return Ok(Some(a));
    }
}

/// The caller's uid (the owner of `/proc/self`).
fn my_uid() -> Result<u32> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self").context("finding out your uid from /proc/self")?;
    Ok(m.uid())
}

fn request_name(req: &Request) -> String {
    let dbg = format!("{req:?}");
    let name: String = dbg
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    if name.is_empty() {
        "the request".into()
    } else {
        name
    }
}

/// A clap error as one line: its first line without clap's `error: ` prefix, and a pointer to
/// `--help`.
pub fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("usage error");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    format!("{first} (see sgctl --help)")
}

/// Whether `err` is a usage mistake (exit 2).
pub fn is_usage(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<UsageError>().is_some())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(parse_level("50%").unwrap(), Level::Absolute(0.5));
        assert_eq!(parse_level("0.7").unwrap(), Level::Absolute(0.7));
        assert_eq!(parse_level("+5%").unwrap(), Level::Add(0.05));
        assert_eq!(parse_level("-0.1").unwrap(), Level::Add(-0.1));
        let Level::Times(f) = parse_level("-6dB").unwrap() else {
            panic!("relative dB")
        };
        assert!((f - 0.501).abs() < 0.001, "{f}");
        let Level::Absolute(v) = parse_level("0dB").unwrap() else {
            panic!("absolute dB")
        };
        assert!((v - 1.0).abs() < 1e-6);
        assert!(parse_level("loud").is_err());
        assert!(parse_level("500%").is_err());
        assert!(parse_level("").is_err());
        assert_eq!(Level::Add(-0.5).apply(0.2), 0.0);
        assert_eq!(Level::Add(0.1).apply(3.95), MAX_VOLUME);
        assert!((Level::Add(0.05).apply(0.5) - 0.55).abs() < 1e-6);
    }

    #[test]
    fn targets() {
        assert_eq!(parse_target("7").unwrap(), Target::Stream(7));
        assert_eq!(parse_target("client:3").unwrap(), Target::Client(3));
        assert!(parse_target("client:x").is_err());
        assert_eq!(
            parse_target("default.monitor").unwrap(),
            Target::Device("default.monitor".into())
        );
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "NAME"],
            &[vec!["1".into(), "a".into()], vec!["100".into(), "b".into()]],
        );
        assert_eq!(t, "ID   NAME\n1    a\n100  b");
    }

    #[test]
    fn usage_errors_are_found() {
        let e = anyhow::Error::new(UsageError("bad".into())).context("outer");
        assert!(is_usage(&e));
        assert!(!is_usage(&anyhow!("other")));
        command().debug_assert();
    }

    #[test]
    fn events_become_named_json_objects() {
        let v = event_json(&Event::StreamRemoved { stream: 4 });
        assert_eq!(
            v,
            json!({ "event": "StreamRemoved", "data": { "stream": 4 } })
        );
        assert_eq!(
            stable(v),
            json!({ "event": "stream_removed", "data": { "stream": 4 }, "schema_version": 1 })
        );
    }
}
