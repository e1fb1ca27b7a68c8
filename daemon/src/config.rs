//! The configuration file (`/etc/soundgate/soundgate.toml`; see `soundgate.toml(5)`).
//!
//! [`Config::load`] reads, parses and validates it in one go. Every error names the file and
//! the line it is about (`FILE:LINE: reason`): TOML syntax and type errors take the line from
//! the parser's span, semantic ones from [`toml::Spanned`] values kept while parsing. Unknown
//! keys are errors, so a misspelt key never silently falls back to a default.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use soundgate_proto::{SampleFormat, StreamSpec};
use toml::Spanned;

use crate::policy::{Action, Rule, RuleDecision};

/// The whole configuration, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Sinks, in file order; exactly one has `default == true`.
    pub sinks: Vec<SinkConfig>,
    /// Capture sources (`[[source]]`), in file order; if any, exactly one is the default.
    pub sources: Vec<SourceConfig>,
    /// Policy rules, in file order (first match wins).
    pub rules: Vec<Rule>,
    /// Resource limits.
    pub limits: Limits,
    /// Engine settings.
    pub engine: EngineConfig,
    /// Consent prompts.
    pub prompts: PromptsConfig,
    /// Who may use the admin socket besides root.
    pub admin: AdminConfig,
    /// The audit log's rotation.
    pub audit: AuditConfig,
    /// The PulseAudio-protocol socket (`[pulse]`).
    pub pulse: PulseConfig,
    /// The file it came from (`None` for the built-in default).
    pub source_path: Option<PathBuf>,
}

/// One `[[sink]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkConfig {
    /// Unique name: `[A-Za-z0-9_.-]`, 1 to 64 characters, not ending in `.monitor`.
    pub name: String,
    /// Where the mix goes.
    pub backend: SinkBackend,
    /// The device's format, rate and channels.
    pub spec: StreamSpec,
    /// Frames per engine cycle (16..=8192).
    pub quantum: u32,
    /// Whether this is the default sink.
    pub default: bool,
}

/// One `[[source]]`: a capture device. Same fields as a sink; its backend is `null`
/// (silence) or `alsa`.
pub type SourceConfig = SinkConfig;

/// A sink's or source's backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkBackend {
    /// Timer-paced, discards the mix (a source: produces silence).
    Null,
    /// Timer-paced, writes the mix to a WAV file (sinks only).
    File {
        /// Absolute path of the WAV file.
        path: PathBuf,
    },
    /// An ALSA PCM.
    Alsa(AlsaConfig),
}

/// The `alsa` backend's keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlsaConfig {
    /// The PCM name (`hw:0,0`, `plughw:1`, `default`, a PCM from an asoundrc).
    pub device: String,
    /// `device` or `timer`; `None`: the device's clock for `hw:`/`plughw:`, else the timer.
    pub clock: Option<crate::backend::Clock>,
    /// Frames per period to ask for (default: the quantum).
    pub period_frames: Option<u32>,
    /// Periods per buffer to ask for (default: 4 with the device clock, 2 with the timer).
    pub periods: Option<u32>,
    /// Whether `format` was given (then it is tried first; else the device's native one).
    pub format_explicit: bool,
}

/// Resource limits (`[limits]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Streams one client connection may have open (default 32).
    pub streams_per_client: usize,
    /// Streams all connections of one uid may have open (default 64).
    pub streams_per_uid: usize,
    /// Streams in the whole server (default 1024).
    pub streams_total: usize,
    /// Connections one uid may have open (default 64).
    pub connections_per_uid: usize,
    /// Largest buffer latency a stream may ask for, in milliseconds (default 2000).
    pub max_latency_ms: u32,
    /// Bytes of PCM one client connection may keep in the sample cache (default 8 MiB).
    pub sample_cache_bytes: u64,
    /// Largest shared-memory ring one stream may have, header included, in bytes (default
    /// 8 MiB; 4096..=1 GiB). A cap in bytes beside `max_latency_ms`'s cap in time.
    pub max_ring_bytes: u64,
    /// Bytes of stream rings all streams of one uid may map into the daemon (default 16 MiB;
    /// 4096..=16 GiB): playback, record and sample rings, and the pulse transport's own
    /// mapping of its streams' rings; counted until the engine released the stream.
    pub shm_bytes_per_uid: u64,
    // -- transport (connection and request budgets; see transport::budget) --
    /// Milliseconds a new connection has to identify and say Hello (default 5000).
    pub handshake_timeout_ms: u32,
    /// App connections that have not finished Hello, all uids together (default 256).
    pub pending_connections: usize,
    /// App connections of one uid that have not finished Hello (default 64).
    pub pending_connections_per_uid: usize,
    /// File descriptors the daemon holds for one uid's app connections: their sockets, their
    /// peers' pidfds and the fds of requests being handled (default 256).
    pub fds_per_uid: usize,
    /// Requests per second one connection may make on average (default 1000).
    pub requests_per_second: u32,
    /// Requests one connection may make at once above that rate (default 2000).
    pub request_burst: u32,
    /// Milliseconds a connection may stay over its request rate (slowed) before it is
    /// disconnected (default 5000).
    pub throttle_disconnect_ms: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            streams_per_client: 32,
            streams_per_uid: 64,
            streams_total: 1024,
            connections_per_uid: 64,
            max_latency_ms: 2000,
            sample_cache_bytes: 8 << 20,
            max_ring_bytes: DEFAULT_MAX_RING_BYTES,
            shm_bytes_per_uid: DEFAULT_SHM_BYTES_PER_UID,
            handshake_timeout_ms: 5000,
            pending_connections: 256,
            pending_connections_per_uid: 64,
            fds_per_uid: 256,
            requests_per_second: 1000,
            request_burst: 2000,
            throttle_disconnect_ms: 5000,
        }
    }
}

/// Default of `[limits] max_ring_bytes`: 8 MiB, a 2 s ring of 8 channels of f32 at 96 kHz
/// (6 MiB) fits; a 2 s stereo f32 ring at 48 kHz needs 768 KiB.
pub const DEFAULT_MAX_RING_BYTES: u64 = 8 << 20;

/// Default of `[limits] shm_bytes_per_uid`: 16 MiB, so a flood of huge-latency streams from
/// one uid keeps the daemon's resident memory well under 32 MiB, while a desktop session
/// still opens twenty 2-second stereo f32 rings at 48 kHz (or hundreds of usual 20–200 ms ones).
pub const DEFAULT_SHM_BYTES_PER_UID: u64 = 16 << 20;

/// The admin socket's users (`[admin]`): root always; members of `group` (resolved when the
/// daemon starts; a missing group is logged and ignored) and the listed `uids`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Group whose members are administrators (default `soundgate-admin`).
    pub group: String,
    /// Further administrator uids.
    pub uids: Vec<u32>,
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig {
            group: "soundgate-admin".to_string(),
            uids: Vec::new(),
        }
    }
}

/// The audit log (`[audit]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// Bytes the current file may reach before it rotates (default 4 MiB; 4096..=1 GiB).
    pub max_bytes: u64,
    /// Rotated files kept (default 4; 0..=100).
    pub keep: usize,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            max_bytes: 4 << 20,
            keep: 4,
        }
    }
}

/// The PulseAudio-protocol socket (`[pulse]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulseConfig {
    /// Listen on `<runtime-dir>/pulse/native`.
    pub enabled: bool,
    /// Per-uid budget of samples per second (frames × channels, counted at the client's and
    /// the sink's rate) the pulse transport converts for that uid's streams.
    pub convert_samples_per_sec: u64,
}

/// Default conversion budget: 40 stereo 48 kHz streams played to a 48 kHz sink, each counted
/// on both sides (40 × (2 × 48000 + 2 × 48000)), so a desktop plays a dozen such streams with
/// room to spare, while eight 384 kHz stereo streams (864 000 each) exhaust it.
pub const DEFAULT_CONVERT_BUDGET: u64 = 40 * (2 * 48_000 + 2 * 48_000);

impl Default for PulseConfig {
    fn default() -> PulseConfig {
        PulseConfig {
            enabled: true,
            convert_samples_per_sec: DEFAULT_CONVERT_BUDGET,
        }
    }
}

/// Consent prompts (`[prompts]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptsConfig {
    /// How long a prompt waits for an answer before the request is denied (1..=3600 s).
    pub timeout_secs: u64,
}

impl Default for PromptsConfig {
    fn default() -> PromptsConfig {
        PromptsConfig { timeout_secs: 30 }
    }
}

/// Engine settings (`[engine]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// SCHED_FIFO priority of the engine threads (1..=99); `None`: no real-time scheduling.
    pub realtime_priority: Option<i32>,
    /// Seconds a sink or source (null or ALSA) carries no stream before its clock stops
    /// (`idle_suspend_secs`, 0..=3600; 0 never stops it).
    pub idle_suspend_secs: u64,
}

/// Default of `[engine] idle_suspend_secs`.
pub const DEFAULT_IDLE_SUSPEND_SECS: u64 = 5;

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            realtime_priority: Some(20),
            idle_suspend_secs: DEFAULT_IDLE_SUSPEND_SECS,
        }
    }
}

/// Why a config could not be used. Display reads `FILE:LINE: reason` (or `FILE: reason` when
/// the whole file is at fault).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (part of the message, not a separate cause, so that an error chain
        /// does not print it twice).
        error: std::io::Error,
    },
    /// The file is writable by everyone, so its rules cannot be trusted.
    #[error("{}: is writable by everyone; refusing to trust it (chmod o-w)", path.display())]
    Insecure {
        /// The file.
        path: PathBuf,
    },
    /// Not valid TOML, or a value of the wrong type or an unknown key.
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Valid TOML that says something impossible (duplicate sink, unknown group, …).
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The line the error is about, if it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Syntax { line, .. } | ConfigError::Invalid { line, .. } => Some(*line),
            ConfigError::Read { .. } | ConfigError::Insecure { .. } => None,
        }
    }
}

const DEFAULT_RATE: u32 = 48_000;
const DEFAULT_CHANNELS: u8 = 2;
const DEFAULT_FORMAT: SampleFormat = SampleFormat::F32Le;
const DEFAULT_QUANTUM: u32 = 512;
pub(crate) const QUANTUM_RANGE: Range<i64> = 16..8193;
const MAX_COUNT: i64 = 1 << 20;
const MAX_LATENCY_MS: i64 = 60_000;
const MAX_SAMPLE_CACHE_BYTES: i64 = 1 << 30;
const MIN_SHM_BYTES: i64 = 4096;
const MAX_RING_BYTES: i64 = 1 << 30;
const MAX_SHM_BYTES_PER_UID: i64 = 16 << 30;

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read_err = |error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o002 != 0 {
            return Err(ConfigError::Insecure {
                path: path.to_path_buf(),
            });
        }
        let text = std::io::read_to_string(file).map_err(read_err)?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `origin` names it in errors and rule origins.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let cx = Cx { text, path: origin };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_path_buf(),
            line: e.span().map_or(1, |s| cx.line(s.start)),
            message: e.message().trim_end().replace('\n', "; "),
        })?;
        let engine = cx.engine(raw.engine)?;
        let prompts = cx.prompts(raw.prompts)?;
        let admin = cx.admin(raw.admin)?;
        let audit = cx.audit(raw.audit)?;
        let pulse = cx.pulse(raw.pulse)?;
        let limits = cx.limits(raw.limits)?;
        let mut sinks = cx.sinks(&raw.sink, "sink")?;
        if sinks.is_empty() {
            sinks = Config::builtin_default().sinks;
        }
        let sources = cx.sinks(&raw.source, "source")?;
        let rules = raw
            .rule
            .iter()
            .map(|r| cx.rule(r))
            .collect::<Result<_, _>>()?;
        Ok(Config {
            sinks,
            sources,
            rules,
            limits,
            engine,
            prompts,
            admin,
            audit,
            pulse,
            source_path: Some(origin.to_path_buf()),
        })
    }

    /// The configuration used without a file: one null sink `default` (48000 Hz, 2 channels,
    /// f32le, quantum 512), no rules, default limits and engine settings.
    pub fn builtin_default() -> Config {
        Config {
            sinks: vec![SinkConfig {
                name: "default".to_string(),
                backend: SinkBackend::Null,
                spec: StreamSpec {
                    format: DEFAULT_FORMAT,
                    rate: DEFAULT_RATE,
                    channels: DEFAULT_CHANNELS,
                },
                quantum: DEFAULT_QUANTUM,
                default: true,
            }],
            sources: Vec::new(),
            rules: Vec::new(),
            limits: Limits::default(),
            engine: EngineConfig::default(),
            prompts: PromptsConfig::default(),
            admin: AdminConfig::default(),
            audit: AuditConfig::default(),
            pulse: PulseConfig::default(),
            source_path: None,
        }
    }

    /// The default sink.
    pub fn default_sink(&self) -> Option<&SinkConfig> {
        self.sinks.iter().find(|s| s.default)
    }
}

// ---- the file as written -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    engine: Option<RawEngine>,
    prompts: Option<RawPrompts>,
    admin: Option<RawAdmin>,
    audit: Option<RawAudit>,
    pulse: Option<RawPulse>,
    limits: Option<RawLimits>,
    #[serde(default)]
    sink: Vec<Spanned<RawSink>>,
    #[serde(default)]
    source: Vec<Spanned<RawSink>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    group: Option<Spanned<String>>,
    uids: Option<Spanned<Vec<i64>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    max_bytes: Option<Spanned<i64>>,
    keep: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPulse {
    enabled: Option<bool>,
    convert_samples_per_sec: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrompts {
    timeout_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    realtime_priority: Option<Spanned<toml::Value>>,
    idle_suspend_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    streams_per_client: Option<Spanned<i64>>,
    streams_per_uid: Option<Spanned<i64>>,
    streams_total: Option<Spanned<i64>>,
    connections_per_uid: Option<Spanned<i64>>,
    max_latency_ms: Option<Spanned<i64>>,
    sample_cache_bytes: Option<Spanned<i64>>,
    max_ring_bytes: Option<Spanned<i64>>,
    shm_bytes_per_uid: Option<Spanned<i64>>,
    handshake_timeout_ms: Option<Spanned<i64>>,
    pending_connections: Option<Spanned<i64>>,
    pending_connections_per_uid: Option<Spanned<i64>>,
    fds_per_uid: Option<Spanned<i64>>,
    requests_per_second: Option<Spanned<i64>>,
    request_burst: Option<Spanned<i64>>,
    throttle_disconnect_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    name: Spanned<String>,
    backend: Option<Spanned<String>>,
    path: Option<Spanned<PathBuf>>,
    device: Option<Spanned<String>>,
    clock: Option<Spanned<String>>,
    period_frames: Option<Spanned<i64>>,
    periods: Option<Spanned<i64>>,
    rate: Option<Spanned<i64>>,
    channels: Option<Spanned<i64>>,
    format: Option<Spanned<String>>,
    quantum: Option<Spanned<i64>>,
    default: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    app: Option<Spanned<String>>,
    uid: Option<Spanned<i64>>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<toml::Value>>,
    action: Spanned<String>,
    target: Option<Spanned<String>>,
    decision: Spanned<String>,
}

// ---- validation ----------------------------------------------------------------------

/// The text being validated, to turn spans into lines.
struct Cx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Cx<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line(span.start),
            message: message.into(),
        }
    }

    fn admin(&self, raw: Option<RawAdmin>) -> Result<AdminConfig, ConfigError> {
        let mut admin = AdminConfig::default();
        let Some(raw) = raw else { return Ok(admin) };
        if let Some(g) = raw.group {
            if g.get_ref().is_empty() {
                return Err(self.err(g.span(), "admin: group must not be empty"));
            }
            admin.group = g.into_inner();
        }
        if let Some(u) = raw.uids {
            let span = u.span();
            admin.uids = u
                .into_inner()
                .into_iter()
                .map(|v| {
                    u32::try_from(v).map_err(|_| {
                        self.err(
                            span.clone(),
                            "admin: uids must be user ids (0..=4294967295)",
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        Ok(admin)
    }

    fn audit(&self, raw: Option<RawAudit>) -> Result<AuditConfig, ConfigError> {
        let mut audit = AuditConfig::default();
        let Some(raw) = raw else { return Ok(audit) };
        if let Some(v) = raw.max_bytes {
            audit.max_bytes = match u64::try_from(*v.get_ref()) {
                Ok(n @ 4096..=0x4000_0000) => n,
                _ => return Err(self.err(v.span(), "audit: max_bytes must be 4096..=1073741824")),
            };
        }
        if let Some(v) = raw.keep {
            audit.keep = match usize::try_from(*v.get_ref()) {
                Ok(n @ 0..=100) => n,
                _ => return Err(self.err(v.span(), "audit: keep must be 0..=100")),
            };
        }
        Ok(audit)
    }

    fn pulse(&self, raw: Option<RawPulse>) -> Result<PulseConfig, ConfigError> {
        let mut pulse = PulseConfig::default();
        let Some(raw) = raw else {
            return Ok(pulse);
        };
        if let Some(on) = raw.enabled {
            pulse.enabled = on;
        }
        if let Some(b) = raw.convert_samples_per_sec {
            match u64::try_from(*b.get_ref()) {
                Ok(n @ 1..=1_000_000_000) => pulse.convert_samples_per_sec = n,
                _ => {
                    return Err(self.err(
                        b.span(),
                        "pulse: convert_samples_per_sec must be 1..=1000000000",
                    ))
                }
            }
        }
        Ok(pulse)
    }

    fn prompts(&self, raw: Option<RawPrompts>) -> Result<PromptsConfig, ConfigError> {
        let Some(t) = raw.and_then(|p| p.timeout_secs) else {
            return Ok(PromptsConfig::default());
        };
        match u64::try_from(*t.get_ref()) {
            Ok(timeout_secs @ 1..=3600) => Ok(PromptsConfig { timeout_secs }),
            _ => Err(self.err(t.span(), "prompts: timeout_secs must be 1..=3600")),
        }
    }

    fn engine(&self, raw: Option<RawEngine>) -> Result<EngineConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(EngineConfig::default());
        };
        let idle_suspend_secs = match &raw.idle_suspend_secs {
            None => DEFAULT_IDLE_SUSPEND_SECS,
            Some(v) => match u64::try_from(*v.get_ref()) {
                Ok(secs @ 0..=3600) => secs,
                _ => {
                    return Err(self.err(
                        v.span(),
                        "engine: idle_suspend_secs must be 0..=3600 (0: never)",
                    ))
                }
            },
        };
        let Some(prio) = raw.realtime_priority else {
            return Ok(EngineConfig {
                idle_suspend_secs,
                ..EngineConfig::default()
            });
        };
        let realtime_priority = match prio.get_ref() {
            toml::Value::Integer(0) => None,
            toml::Value::Integer(n @ 1..=99) => i32::try_from(*n).ok(),
            toml::Value::String(s) if s == "off" => None,
            _ => {
                return Err(self.err(
                    prio.span(),
                    "engine: realtime_priority must be 1..=99, or 0 or \"off\" to disable it",
                ))
            }
        };
        Ok(EngineConfig {
            realtime_priority,
            idle_suspend_secs,
        })
    }

    fn count(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        default: usize,
    ) -> Result<usize, ConfigError> {
        match v {
            None => Ok(default),
            Some(v) => match usize::try_from(*v.get_ref()) {
                Ok(n) if (1..=MAX_COUNT as usize).contains(&n) => Ok(n),
                _ => Err(self.err(v.span(), format!("limits: {key} must be 1..={MAX_COUNT}"))),
            },
        }
    }

    /// A byte count of `[limits]` in `MIN_SHM_BYTES..=max`.
    fn bytes(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        max: i64,
        default: u64,
    ) -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(v) if (MIN_SHM_BYTES..=max).contains(v.get_ref()) => {
                Ok(v.get_ref().unsigned_abs())
            }
            Some(v) => Err(self.err(
                v.span(),
                format!("limits: {key} must be {MIN_SHM_BYTES}..={max} bytes"),
            )),
        }
    }

    fn limits(&self, raw: Option<RawLimits>) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let Some(raw) = raw else { return Ok(d) };
        let max_latency_ms = match &raw.max_latency_ms {
            None => d.max_latency_ms,
            Some(v) => match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=MAX_LATENCY_MS as u32).contains(&n) => n,
                _ => {
                    return Err(self.err(
                        v.span(),
                        format!("limits: max_latency_ms must be 1..={MAX_LATENCY_MS}"),
                    ))
                }
            },
        };
        let sample_cache_bytes = match &raw.sample_cache_bytes {
            None => d.sample_cache_bytes,
            Some(v) => match u64::try_from(*v.get_ref()) {
                Ok(n) if (1..=MAX_SAMPLE_CACHE_BYTES as u64).contains(&n) => n,
                _ => {
                    return Err(self.err(
                        v.span(),
                        format!("limits: sample_cache_bytes must be 1..={MAX_SAMPLE_CACHE_BYTES}"),
                    ))
                }
            },
        };
        let max_ring_bytes = self.bytes(
            &raw.max_ring_bytes,
            "max_ring_bytes",
            MAX_RING_BYTES,
            d.max_ring_bytes,
        )?;
        let shm_bytes_per_uid = self.bytes(
            &raw.shm_bytes_per_uid,
            "shm_bytes_per_uid",
            MAX_SHM_BYTES_PER_UID,
            d.shm_bytes_per_uid,
        )?;
        Ok(Limits {
            max_ring_bytes,
            shm_bytes_per_uid,
            streams_per_client: self.count(
                &raw.streams_per_client,
                "streams_per_client",
                d.streams_per_client,
            )?,
            streams_per_uid: self.count(
                &raw.streams_per_uid,
                "streams_per_uid",
                d.streams_per_uid,
            )?,
            streams_total: self.count(&raw.streams_total, "streams_total", d.streams_total)?,
            connections_per_uid: self.count(
                &raw.connections_per_uid,
                "connections_per_uid",
                d.connections_per_uid,
            )?,
            max_latency_ms,
            sample_cache_bytes,
            handshake_timeout_ms: self.millis(
                &raw.handshake_timeout_ms,
                "handshake_timeout_ms",
                100..=60_000,
                d.handshake_timeout_ms,
            )?,
            pending_connections: self.count(
                &raw.pending_connections,
                "pending_connections",
                d.pending_connections,
            )?,
            pending_connections_per_uid: self.count(
                &raw.pending_connections_per_uid,
                "pending_connections_per_uid",
                d.pending_connections_per_uid,
            )?,
            fds_per_uid: self.count(&raw.fds_per_uid, "fds_per_uid", d.fds_per_uid)?,
            requests_per_second: self.count(
                &raw.requests_per_second,
                "requests_per_second",
                d.requests_per_second as usize,
            )? as u32,
            request_burst: self.count(
                &raw.request_burst,
                "request_burst",
                d.request_burst as usize,
            )? as u32,
            throttle_disconnect_ms: self.millis(
                &raw.throttle_disconnect_ms,
                "throttle_disconnect_ms",
                100..=3_600_000,
                d.throttle_disconnect_ms,
            )?,
        })
    }

    /// A `[limits]` duration in milliseconds within `range`.
    fn millis(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        range: std::ops::RangeInclusive<u32>,
        default: u32,
    ) -> Result<u32, ConfigError> {
        match v {
            None => Ok(default),
            Some(v) => match u32::try_from(*v.get_ref()) {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(self.err(
                    v.span(),
                    format!("limits: {key} must be {}..={}", range.start(), range.end()),
                )),
            },
        }
    }

    fn sinks(
        &self,
        raw: &[Spanned<RawSink>],
        kind: &'static str,
    ) -> Result<Vec<SinkConfig>, ConfigError> {
        let mut sinks: Vec<SinkConfig> = Vec::with_capacity(raw.len());
        let mut lines: HashMap<String, usize> = HashMap::new();
        let mut default_line: Option<(String, usize)> = None;
        for s in raw {
            let s = s.get_ref();
            let sink = self.sink(s, kind)?;
            let line = self.line(s.name.span().start);
            if let Some(first) = lines.get(&sink.name) {
                return Err(self.err(
                    s.name.span(),
                    format!(
                        "duplicate {kind} {:?} (first defined on line {first})",
                        sink.name
                    ),
                ));
            }
            lines.insert(sink.name.clone(), line);
            if sink.default {
                if let Some((other, other_line)) = &default_line {
                    let span = s.default.as_ref().map_or(s.name.span(), Spanned::span);
                    return Err(self.err(
                        span,
                        format!(
                            "{kind} {:?}: only one {kind} can be the default, and {kind} \
                             {other:?} (line {other_line}) already is",
                            sink.name
                        ),
                    ));
                }
                default_line = Some((sink.name.clone(), line));
            }
            sinks.push(sink);
        }
        if default_line.is_none() {
            if let Some(first) = sinks.first_mut() {
                first.default = true;
            }
        }
        Ok(sinks)
    }

    fn sink(&self, s: &RawSink, kind: &'static str) -> Result<SinkConfig, ConfigError> {
        let name = s.name.get_ref().clone();
        if let Err(why) = check_device_name(&name, false) {
            return Err(self.err(s.name.span(), format!("{kind} {name:?}: {why}")));
        }
        let backend_name = s.backend.as_ref().map_or("null", |b| b.get_ref().as_str());
        let backend_span = s.backend.as_ref().map_or(s.name.span(), Spanned::span);
        if backend_name != "alsa" {
            for (key, span) in [
                ("device", s.device.as_ref().map(Spanned::span)),
                ("clock", s.clock.as_ref().map(Spanned::span)),
                ("period_frames", s.period_frames.as_ref().map(Spanned::span)),
                ("periods", s.periods.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    return Err(self.err(
                        span,
                        format!("{kind} {name:?}: {key} is only for backend \"alsa\""),
                    ));
                }
            }
        }
        let backend = match (backend_name, &s.path) {
            ("alsa", Some(p)) | ("file", Some(p)) if kind == "source" || backend_name == "alsa" => {
                return Err(self.err(
                    p.span(),
                    format!("{kind} {name:?}: path is only for sink backend \"file\""),
                ))
            }
            ("file", _) if kind == "source" => {
                return Err(self.err(
                    backend_span,
                    format!("source {name:?}: backend \"file\" is for sinks only"),
                ))
            }
            ("alsa", None) => SinkBackend::Alsa(self.alsa(s, kind, &name, backend_span.clone())?),
            ("null", None) => SinkBackend::Null,
            ("null", Some(p)) => {
                return Err(self.err(
                    p.span(),
                    format!("{kind} {name:?}: path is only for backend \"file\""),
                ))
            }
            ("file", None) => {
                return Err(self.err(
                    backend_span,
                    format!("{kind} {name:?}: backend \"file\" needs a path"),
                ))
            }
            ("file", Some(p)) => {
                if !p.get_ref().is_absolute() {
                    return Err(self.err(
                        p.span(),
                        format!("{kind} {name:?}: path {:?} must be absolute", p.get_ref()),
                    ));
                }
                SinkBackend::File {
                    path: p.get_ref().clone(),
                }
            }
            (other, _) => {
                return Err(self.err(
                    backend_span,
                    format!(
                        "{kind} {name:?}: unknown backend {other:?} (expected {})",
                        if kind == "sink" {
                            "\"null\", \"file\" or \"alsa\""
                        } else {
                            "\"null\" or \"alsa\""
                        }
                    ),
                ))
            }
        };
        let format = match &s.format {
            None => DEFAULT_FORMAT,
            Some(f) => f
                .get_ref()
                .parse::<SampleFormat>()
                .map_err(|e| self.err(f.span(), format!("{kind} {name:?}: {e}")))?,
        };
        let range = |v: &Spanned<i64>, lo: i64, hi: i64, what: &str| {
            let n = *v.get_ref();
            if (lo..=hi).contains(&n) {
                Ok(n)
            } else {
                Err(self.err(
                    v.span(),
                    format!("{kind} {name:?}: {what} {n} is outside {lo}..={hi}"),
                ))
            }
        };
        let rate = match &s.rate {
            None => DEFAULT_RATE,
            Some(r) => {
                let (lo, hi) = (
                    soundgate_proto::format::MIN_RATE,
                    soundgate_proto::format::MAX_RATE,
                );
                range(r, lo.into(), hi.into(), "sample rate")? as u32
            }
        };
        let channels = match &s.channels {
            None => DEFAULT_CHANNELS,
            Some(c) => range(
                c,
                1,
                soundgate_proto::format::MAX_CHANNELS.into(),
                "channel count",
            )? as u8,
        };
        let quantum = match &s.quantum {
            None => DEFAULT_QUANTUM,
            Some(q) => range(q, QUANTUM_RANGE.start, QUANTUM_RANGE.end - 1, "quantum")? as u32,
        };
        let spec = StreamSpec {
            format,
            rate,
            channels,
        };
        // Belt and braces: the ranges above are the proto's own.
        if let Err(e) = spec.validate() {
            return Err(self.err(s.name.span(), format!("{kind} {name:?}: {e}")));
        }
        Ok(SinkConfig {
            name,
            backend,
            spec,
            quantum,
            default: s.default.as_ref().is_some_and(|d| *d.get_ref()),
        })
    }

    fn rule(&self, spanned: &Spanned<RawRule>) -> Result<Rule, ConfigError> {
        let r = spanned.get_ref();
        let action: Action = r
            .action
            .get_ref()
            .parse()
            .map_err(|e| self.err(r.action.span(), format!("rule: {e}")))?;
        let decision: RuleDecision = r
            .decision
            .get_ref()
            .parse()
            .map_err(|e| self.err(r.decision.span(), format!("rule: {e}")))?;
        if let Some(app) = &r.app {
            check_app_pattern(app.get_ref())
                .map_err(|why| self.err(app.span(), format!("rule: {why}")))?;
        }
        if let Some(t) = &r.target {
            check_device_name(t.get_ref(), true).map_err(|why| {
                self.err(t.span(), format!("rule: target {:?}: {why}", t.get_ref()))
            })?;
        }
        let uid = match (&r.uid, &r.user) {
            (Some(_), Some(u)) => {
                return Err(self.err(u.span(), "rule: give uid or user, not both"));
            }
            (Some(u), None) => Some(u32::try_from(*u.get_ref()).map_err(|_| {
                self.err(u.span(), format!("rule: uid {} is not a uid", u.get_ref()))
            })?),
            (None, Some(u)) => match nix::unistd::User::from_name(u.get_ref()) {
                Ok(Some(user)) => Some(user.uid.as_raw()),
                Ok(None) => {
                    return Err(self.err(u.span(), format!("rule: unknown user {:?}", u.get_ref())))
                }
                Err(e) => {
                    return Err(self.err(
                        u.span(),
                        format!("rule: looking up user {:?} failed: {e}", u.get_ref()),
                    ))
                }
            },
            (None, None) => None,
        };
        let gid = match &r.group {
            None => None,
            Some(g) => Some(self.group(g)?),
        };
        // The span of a `[[rule]]` table starts at its header.
        let line = self.line(spanned.span().start);
        let rule = Rule {
            app: r.app.as_ref().map(|a| a.get_ref().clone()),
            uid,
            gid,
            action,
            target: r.target.as_ref().map(|t| t.get_ref().clone()),
            decision,
            origin: format!("{}:{line}", self.path.display()),
        };
        // A rule the policy's invariants would overrule is refused, not silently ignored.
        if let Some(why) = rule.refusal() {
            return Err(self.err(r.decision.span(), why));
        }
        Ok(rule)
    }

    fn alsa(
        &self,
        s: &RawSink,
        kind: &str,
        name: &str,
        backend_span: Range<usize>,
    ) -> Result<AlsaConfig, ConfigError> {
        let Some(device) = &s.device else {
            return Err(self.err(
                backend_span,
                format!("{kind} {name:?}: backend \"alsa\" needs a device (e.g. \"hw:0,0\")"),
            ));
        };
        let dev = device.get_ref();
        if dev.is_empty() || dev.len() > 256 || dev.chars().any(|c| c.is_control()) {
            return Err(self.err(
                device.span(),
                format!(
                    "{kind} {name:?}: device must be a PCM name of 1 to 256 printable characters"
                ),
            ));
        }
        let clock = match &s.clock {
            None => None,
            Some(c) => match c.get_ref().as_str() {
                "device" => Some(crate::backend::Clock::Device),
                "timer" => Some(crate::backend::Clock::Timer),
                other => {
                    return Err(self.err(
                        c.span(),
                        format!("{kind} {name:?}: clock {other:?} must be \"device\" or \"timer\""),
                    ))
                }
            },
        };
        let num = |v: &Option<Spanned<i64>>, key: &str, lo: i64, hi: i64| match v {
            None => Ok(None),
            Some(v) if (lo..=hi).contains(v.get_ref()) => Ok(Some(*v.get_ref() as u32)),
            Some(v) => Err(self.err(
                v.span(),
                format!(
                    "{kind} {name:?}: {key} {} is outside {lo}..={hi}",
                    v.get_ref()
                ),
            )),
        };
        Ok(AlsaConfig {
            device: dev.clone(),
            clock,
            period_frames: num(&s.period_frames, "period_frames", 16, 65_536)?,
            periods: num(&s.periods, "periods", 2, 64)?,
            format_explicit: s.format.is_some(),
        })
    }

    fn group(&self, g: &Spanned<toml::Value>) -> Result<u32, ConfigError> {
        match g.get_ref() {
            toml::Value::Integer(n) => u32::try_from(*n)
                .map_err(|_| self.err(g.span(), format!("rule: group {n} is not a gid"))),
            toml::Value::String(name) => match nix::unistd::Group::from_name(name) {
                Ok(Some(group)) => Ok(group.gid.as_raw()),
                Ok(None) => Err(self.err(g.span(), format!("rule: unknown group {name:?}"))),
                Err(e) => Err(self.err(
                    g.span(),
                    format!("rule: looking up group {name:?} failed: {e}"),
                )),
            },
            _ => Err(self.err(g.span(), "rule: group must be a group name or a gid")),
        }
    }
}

/// `[A-Za-z0-9_.-]`, 1..=64 characters; a sink name may not end in `.monitor` (that is its
/// monitor source); a target pattern may end in one `*`.
pub(crate) fn check_device_name(name: &str, pattern: bool) -> Result<(), String> {
    let body = if pattern {
        name.strip_suffix('*').unwrap_or(name)
    } else {
        name
    };
    if name.is_empty() || name.len() > 64 {
        return Err("names are 1 to 64 characters long".to_string());
    }
    if let Some(c) = body
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(if c == '*' {
            "`*` is only allowed at the end".to_string()
        } else {
            format!("{c:?} is not allowed (use A-Z, a-z, 0-9, _ . -)")
        });
    }
    if !pattern && name.ends_with(".monitor") {
        return Err("names ending in \".monitor\" are reserved for monitor sources".to_string());
    }
    Ok(())
}

/// `*`, `unknown`, or `flatpak:`/`snap:`/`systemd:`/`exe:` followed by an id, optionally
/// ending in one `*`.
fn check_app_pattern(p: &str) -> Result<(), String> {
    if let Some(i) = p.find('*') {
        if i + 1 != p.len() {
            return Err(format!("app {p:?}: `*` is only allowed at the end"));
        }
    }
    if p == "*" || p == "unknown" {
        return Ok(());
    }
    let known = ["flatpak", "snap", "systemd", "exe"];
    match p.split_once(':') {
        Some((source, rest)) if known.contains(&source) && !rest.is_empty() => Ok(()),
        _ => Err(format!(
            "app {p:?} must be \"unknown\", \"*\", or start with flatpak:, snap:, systemd: or \
             exe: followed by an id"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/soundgate/soundgate.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn shared_memory_limits_parse_and_are_bounded() {
        let d = Limits::default();
        assert_eq!((d.max_ring_bytes, d.shm_bytes_per_uid), (8 << 20, 16 << 20));
        let c = parse("[limits]\nmax_ring_bytes = 65536\nshm_bytes_per_uid = 1048576\n").unwrap();
        assert_eq!(
            (c.limits.max_ring_bytes, c.limits.shm_bytes_per_uid),
            (65536, 1 << 20)
        );
        assert_eq!(
            err("[limits]\nshm_bytes_per_uid = 4095\n"),
            "/etc/soundgate/soundgate.toml:2: limits: shm_bytes_per_uid must be 4096..=17179869184 bytes"
        );
        assert_eq!(
            err("\n[limits]\nmax_ring_bytes = 2147483648\n"),
            "/etc/soundgate/soundgate.toml:3: limits: max_ring_bytes must be 4096..=1073741824 bytes"
        );
    }

    #[test]
    fn empty_file_is_builtin_default() {
        let c = parse("").unwrap();
        let d = Config::builtin_default();
        assert_eq!(c.sinks, d.sinks);
        assert_eq!(c.limits, d.limits);
        assert_eq!(c.engine.realtime_priority, Some(20));
        assert!(c.rules.is_empty());
        assert_eq!(
            c.source_path.as_deref(),
            Some(Path::new("/etc/soundgate/soundgate.toml"))
        );
        assert_eq!(d.source_path, None);
        let s = d.default_sink().unwrap();
        assert_eq!(
            (s.name.as_str(), s.quantum, s.spec.rate, s.spec.channels),
            ("default", 512, 48_000, 2)
        );
        assert_eq!(s.spec.format, SampleFormat::F32Le);
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"
[engine]
realtime_priority = "off"

[limits]
streams_per_client = 8
max_latency_ms = 500

[[sink]]
name = "speakers"
rate = 44100
channels = 1
format = "s16le"
quantum = 256

[[sink]]
name = "capture.wav"
backend = "file"
path = "/tmp/mix.wav"
default = true

[[rule]]
app = "exe:/usr/bin/sgcat"
uid = 1000
group = 0
action = "record"
target = "speakers*"
decision = "allow"

[[rule]]
user = "root"
action = "suspend"
decision = "ask"
"#,
        )
        .unwrap();
        assert_eq!(c.engine.realtime_priority, None);
        assert_eq!(c.limits.streams_per_client, 8);
        assert_eq!(c.limits.streams_per_uid, 64);
        assert_eq!(c.limits.max_latency_ms, 500);
        let t = parse(
            "[limits]\nhandshake_timeout_ms = 2000\nrequests_per_second = 50\n\
             pending_connections = 9\npending_connections_per_uid = 3\nfds_per_uid = 70\n\
             throttle_disconnect_ms = 700\n",
        )
        .unwrap();
        assert_eq!(t.limits.handshake_timeout_ms, 2000);
        assert_eq!(t.limits.requests_per_second, 50);
        assert_eq!(t.limits.request_burst, 2000);
        assert_eq!(
            (
                t.limits.pending_connections,
                t.limits.pending_connections_per_uid,
                t.limits.fds_per_uid,
                t.limits.throttle_disconnect_ms
            ),
            (9, 3, 70, 700)
        );
        assert_eq!(c.sinks.len(), 2);
        assert_eq!(
            c.sinks[0].spec,
            StreamSpec {
                format: SampleFormat::S16Le,
                rate: 44_100,
                channels: 1
            }
        );
        assert_eq!(c.sinks[0].quantum, 256);
        assert!(!c.sinks[0].default);
        assert_eq!(
            c.sinks[1].backend,
            SinkBackend::File {
                path: "/tmp/mix.wav".into()
            }
        );
        assert!(c.sinks[1].default);
        assert_eq!(
            c.rules[0],
            Rule {
                app: Some("exe:/usr/bin/sgcat".into()),
                uid: Some(1000),
                gid: Some(0),
                action: Action::Record,
                target: Some("speakers*".into()),
                decision: RuleDecision::Allow,
                origin: "/etc/soundgate/soundgate.toml:22".into(),
            }
        );
        assert_eq!(c.rules[1].uid, Some(0));
        assert_eq!(c.rules[1].decision, RuleDecision::Ask);
        assert_eq!(c.rules[1].origin, "/etc/soundgate/soundgate.toml:30");
    }

    #[test]
    fn first_sink_is_default_without_one_marked() {
        let c = parse("[[sink]]\nname = \"a\"\n[[sink]]\nname = \"b\"\n").unwrap();
        assert_eq!(c.default_sink().unwrap().name, "a");
        assert_eq!(c.sinks.iter().filter(|s| s.default).count(), 1);
    }

    #[test]
    fn idle_suspend_secs_values() {
        assert_eq!(
            parse("").map(|c| c.engine.idle_suspend_secs).ok(),
            Some(DEFAULT_IDLE_SUSPEND_SECS)
        );
        for v in [0u64, 1, 3600] {
            let c = parse(&format!("[engine]\nidle_suspend_secs = {v}\n"));
            assert_eq!(c.map(|c| c.engine.idle_suspend_secs).ok(), Some(v));
        }
        for v in ["-1", "3601", "\"5\""] {
            let e = parse(&format!("[engine]\nidle_suspend_secs = {v}\n"));
            assert!(e.is_err(), "{v} accepted");
        }
        let e = parse("[engine]\nidle_suspend_secs = 9999\n").err();
        assert!(e.is_some_and(|e| e.to_string().contains(":2: engine: idle_suspend_secs")));
    }

    #[test]
    fn realtime_priority_values() {
        let prio = |v: &str| {
            parse(&format!("[engine]\nrealtime_priority = {v}\n"))
                .map(|c| c.engine.realtime_priority)
        };
        assert_eq!(prio("0").unwrap(), None);
        assert_eq!(prio("99").unwrap(), Some(99));
        assert_eq!(prio("\"off\"").unwrap(), None);
        for bad in ["100", "-1", "\"on\"", "true"] {
            let e = prio(bad).unwrap_err();
            assert_eq!(e.line(), Some(2), "{bad}");
            assert!(
                e.to_string().contains("realtime_priority must be 1..=99"),
                "{e}"
            );
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        assert_eq!(
            err("\n\n[[sink]]\nname = \"out\"\nbackend = \"file\"\n"),
            "/etc/soundgate/soundgate.toml:5: sink \"out\": backend \"file\" needs a path"
        );
        assert_eq!(
            err("[[sink]]\nname = \"a\"\n[[sink]]\nname = \"a\"\n"),
            "/etc/soundgate/soundgate.toml:4: duplicate sink \"a\" (first defined on line 2)"
        );
        assert!(err(
            "[[sink]]\nname = \"a\"\ndefault = true\n[[sink]]\nname = \"b\"\ndefault = true\n"
        )
        .starts_with(
            "/etc/soundgate/soundgate.toml:6: sink \"b\": only one sink can be the default"
        ));
        assert!(err("[[sink]]\nname = \"x.monitor\"\n")
            .starts_with("/etc/soundgate/soundgate.toml:2: "));
        assert!(err("[[sink]]\nname = \"\"\n").contains("1 to 64"));
        assert!(err("[[sink]]\nname = \"a b\"\n").contains("' ' is not allowed"));
        assert!(err("[[sink]]\nname = \"n\"\npath = \"/x\"\n")
            .contains(":3: sink \"n\": path is only for backend \"file\""));
        assert!(
            err("[[sink]]\nname = \"n\"\nbackend = \"file\"\npath = \"x.wav\"\n")
                .contains(":4: sink \"n\": path \"x.wav\" must be absolute")
        );
        assert!(err("[[sink]]\nname = \"n\"\nbackend = \"alsa\"\n")
            .contains(":3: sink \"n\": backend \"alsa\" needs a device"));
        assert!(err("[[sink]]\nname = \"n\"\nbackend = \"jack\"\n")
            .contains(":3: sink \"n\": unknown backend \"jack\""));
        assert!(err("[[sink]]\nname = \"n\"\ndevice = \"hw:0\"\n")
            .contains(":3: sink \"n\": device is only for backend \"alsa\""));
        assert!(err(
            "[[sink]]\nname = \"n\"\nbackend = \"alsa\"\ndevice = \"hw:0\"\nclock = \"wall\"\n"
        )
        .contains(":5: sink \"n\": clock \"wall\" must be"));
        assert!(
            err("[[source]]\nname = \"m\"\nbackend = \"file\"\npath = \"/x.wav\"\n")
                .contains(":4: source \"m\": path is only for sink backend \"file\"")
        );
        assert!(err("[[source]]\nname = \"m\"\n[[source]]\nname = \"m\"\n")
            .contains(":4: duplicate source \"m\""));
        assert!(err("[[sink]]\nname = \"n\"\nchannels = 9\n")
            .contains(":3: sink \"n\": channel count 9 is outside 1..=8"));
        assert!(err("[[sink]]\nname = \"n\"\nquantum = 8\n")
            .contains(":3: sink \"n\": quantum 8 is outside 16..=8192"));
        assert!(err("[limits]\nstreams_total = 0\n").contains(":2: limits: streams_total must be"));
        assert!(err("[limits]\nhandshake_timeout_ms = 5\n")
            .contains(":2: limits: handshake_timeout_ms must be 100..=60000"));
        assert!(err("[limits]\nrequests_per_second = 0\n")
            .contains(":2: limits: requests_per_second must be"));
        assert!(
            err("[limits]\nmax_latency_ms = -5\n").contains(":2: limits: max_latency_ms must be")
        );
        assert!(
            err("[[rule]]\naction = \"record\"\ndecision = \"allow\"\napp = \"firefox\"\n")
                .contains(":4: rule: app \"firefox\" must be")
        );
        assert!(err(
            "[[rule]]\naction = \"record\"\ndecision = \"allow\"\napp = \"exe:*/sgcat\"\n"
        )
        .contains("only allowed at the end"));
        assert!(
            err("[[rule]]\naction = \"record\"\ndecision = \"allow\"\ntarget = \"a*b\"\n")
                .contains(":4: rule: target \"a*b\": `*` is only allowed at the end")
        );
        assert!(
            err("[[rule]]\naction = \"kill-client\"\ndecision = \"allow\"\n")
                .contains(":3: rule: kill-client reaches other clients")
        );
        assert!(
            err("[[rule]]\naction = \"control-stream\"\ndecision = \"ask\"\n")
                .contains(":3: rule: an ask rule for control-stream without a target")
        );
        assert!(
            parse("[[rule]]\naction = \"kill-client\"\ndecision = \"deny\"\nuid = 0\n").is_ok()
        );
        assert!(parse(
            "[[rule]]\naction = \"control-stream\"\ndecision = \"allow\"\ntarget = \"hdmi*\"\n"
        )
        .is_ok());
        assert!(err("[[rule]]\naction = \"record\"\ndecision = \"maybe\"\n")
            .contains(":3: rule: unknown decision \"maybe\""));
        assert!(err(
            "[[rule]]\naction = \"record\"\ndecision = \"allow\"\nuid = 0\nuser = \"root\"\n"
        )
        .contains(":5: rule: give uid or user, not both"));
        assert!(
            err("[[rule]]\naction = \"record\"\ndecision = \"allow\"\nuid = -1\n")
                .contains(":4: rule: uid -1 is not a uid")
        );
        assert!(err(
            "[[rule]]\naction = \"record\"\ndecision = \"allow\"\nuser = \"no-such-user-sg\"\n"
        )
        .contains(":4: rule: unknown user"));
        assert!(
            err("[[rule]]\naction = \"record\"\ndecision = \"allow\"\ngroup = 1.5\n")
                .contains(":4: rule: group must be")
        );
    }

    #[test]
    fn syntax_and_type_errors_have_lines() {
        let e = parse("[limits]\nstreams_total = \n").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line: 2, .. }), "{e}");
        let e = parse("[limits]\n\nstreams_totl = 3\n").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line: 3, .. }), "{e}");
        assert!(
            e.to_string().contains("unknown field `streams_totl`"),
            "{e}"
        );
        let e = parse("[[rule]]\naction = \"record\"\n").unwrap_err();
        assert!(e.to_string().contains("missing field `decision`"), "{e}");
        assert_eq!(e.line(), Some(1), "{e}");
        let e = parse("[[sink]]\nname = \"a\"\nrate = \"fast\"\n").unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
        // Messages are one line: the parser's snippet is not repeated.
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn load_refuses_unreadable_and_world_writable_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let e = Config::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e
            .to_string()
            .starts_with(&format!("{}: cannot read", missing.display())));
        let open = dir.path().join("open.toml");
        std::fs::write(&open, "").unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        assert!(matches!(
            Config::load(&open),
            Err(ConfigError::Insecure { .. })
        ));
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert_eq!(
            Config::load(&open).unwrap().source_path.as_deref(),
            Some(open.as_path())
        );
    }

    /// Every fixture in `tests/configs/valid` loads; every one in `tests/configs/invalid`
    /// fails with the message fragment and line its first line announces:
    /// `# expect: LINE: FRAGMENT`.
    #[test]
    fn fixtures() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/configs");
        let list = |sub: &str| {
            let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(sub))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            files.sort();
            files
        };
        let valid = list("valid");
        assert!(valid.len() >= 3, "too few valid fixtures: {valid:?}");
        for path in &valid {
            if let Err(e) = Config::load(path) {
                panic!("{} should load: {e}", path.display());
            }
        }
        let invalid = list("invalid");
        assert!(invalid.len() >= 8, "too few invalid fixtures: {invalid:?}");
        for path in &invalid {
            let text = std::fs::read_to_string(path).unwrap();
            let expect = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: first line must be `# expect: LINE: FRAGMENT`",
                        path.display()
                    )
                });
            let (line, fragment) = expect.split_once(": ").unwrap();
            let line: usize = line.parse().unwrap();
            let e = match Config::load(path) {
                Ok(_) => panic!("{} should not load", path.display()),
                Err(e) => e,
            };
            let msg = e.to_string();
            let prefix = format!("{}:{line}: ", path.display());
            assert!(
                msg.starts_with(&prefix),
                "{}: wanted line {line}, got: {msg}",
                path.display()
            );
            assert!(
                msg.contains(fragment),
                "{}: wanted {fragment:?}, got: {msg}",
                path.display()
            );
        }
    }
}
