//! Wire messages and their encoding. Only this module knows the encoding (postcard).
//!
//! Every datagram on a soundgate socket is one message. A client sends [`ClientMsg`]s, each with
//! an id the reply repeats; the server sends [`ServerMsg`]s: replies and unsolicited events.
//! The first request on a connection must be [`Request::Hello`] with [`PROTOCOL_VERSION`].
//! File descriptors travel beside a message as SCM_RIGHTS; which request carries which fds is
//! said on each variant.

use crate::format::StreamSpec;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Version of this protocol; the server refuses any other in the handshake.
pub const PROTOCOL_VERSION: u32 = 1;
/// Hard cap on one datagram's size, in bytes. A larger one ends the connection.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most file descriptors one message may carry.
pub const MAX_FDS: usize = 4;
/// Longest client-declared name (bytes); longer ones are refused.
pub const MAX_NAME: usize = 256;

/// Identifies a stream on one server.
pub type StreamId = u32;
/// Identifies a client connection on one server.
pub type ClientId = u32;

/// A request with the id its reply will carry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientMsg {
    /// Chosen by the client; echoed in the reply.
    pub id: u32,
    /// The request.
    pub req: Request,
}

/// Everything a client can ask of the server on the native socket.
///
/// Each request is checked by the server's policy for the connection's identity before it acts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Request {
    /// Handshake; must come first. `name` is a label only, never an identity.
    Hello { version: u32, name: String },
    /// Server name, version, default devices.
    ServerInfo,
    /// Sinks the client may use.
    ListSinks,
    /// Sources (capture devices and monitors) the client may see.
    ListSources,
    /// The client's own streams.
    ListStreams,
    /// Create a playback stream. Carries exactly one fd: a sealed memfd holding the ring
    /// (see [`crate::ring`]); wake-ups go through the ring header's futex word, so no other fd
    /// is taken (a request with more or fewer fds is a protocol error).
    /// `spec.rate` must equal the sink's rate (the client library resamples).
    CreatePlayback {
        name: String,
        sink: Option<String>,
        spec: StreamSpec,
        capacity_frames: u64,
        volume: f32,
        muted: bool,
        corked: bool,
        /// Exclusive (passthrough) use of the sink: while it lives, other clients cannot open
        /// streams there. Denied unless policy grants `passthrough`.
        exclusive: bool,
    },
    /// Create a record stream. The reply carries one fd: a read-only ring memfd created and
    /// sealed by the server, whose header's futex word the server wakes when it produced frames.
    CreateRecord {
        name: String,
        source: Option<String>,
        spec: StreamSpec,
        capacity_frames: u64,
    },
    /// Set a stream's linear volume (0.0..=4.0).
    SetVolume { stream: StreamId, volume: f32 },
    /// Mute or unmute a stream.
    SetMute { stream: StreamId, muted: bool },
    /// Pause (cork) or resume a stream.
    Cork { stream: StreamId, corked: bool },
    /// Mark a playback stream as draining: running out of data is then no underrun. The
    /// client waits for the ring to empty on the ring header's futex word.
    Drain { stream: StreamId },
    /// Counters and state of one stream.
    StreamInfo { stream: StreamId },
    /// Delete a stream.
    DeleteStream { stream: StreamId },
    /// Admin: make a sink the default.
    SetDefaultSink { sink: String },
    /// Move one of the client's streams to another device it may use.
    MoveStream { stream: StreamId, device: String },
    /// Receive events about this client's own streams and the devices it may see (an
    /// administrator: about everything): [`Event::StreamAdded`], [`Event::StreamChanged`],
    /// [`Event::StreamRemoved`], [`Event::DeviceChanged`], [`Event::DeviceRemoved`], and for
    /// administrators also [`Event::ClientAdded`], [`Event::ClientRemoved`],
    /// [`Event::Decision`] and [`Event::Xrun`].
    Subscribe,
    /// Sample cache: upload a short sound once under `name` (this client's own namespace).
    /// Carries one fd: a sealed memfd holding exactly `frames` frames of `spec`, raw PCM.
    UploadSample {
        name: String,
        spec: StreamSpec,
        frames: u64,
    },
    /// Play one of this client's samples with low latency.
    PlaySample {
        name: String,
        device: Option<String>,
        volume: f32,
    },
    /// Remove one of this client's samples.
    RemoveSample { name: String },
    /// This client's samples (an administrator: everyone's).
    ListSamples,
    /// Admin: suspend or resume a device.
    SuspendDevice { device: String, suspend: bool },
    /// Admin: a device's own volume (linear, 0.0..=4.0).
    SetDeviceVolume { device: String, volume: f32 },
    /// Admin: mute or unmute a device.
    SetDeviceMute { device: String, muted: bool },
    /// Admin: make a capture source the default.
    SetDefaultSource { source: String },
    /// Admin: create a sink or source at run time.
    CreateDevice { device: NewDevice },
    /// Admin: remove a sink or source created at run time or from the config.
    RemoveDevice { name: String },
    /// Admin: every client with its identity.
    ListClients,
    /// Admin: disconnect a client.
    KillClient { client: ClientId },
    /// Admin: level meters at `hz` (1..=60) as [`Event::Meters`]; 0 stops them.
    SubscribeMeters { hz: u32 },
    /// Admin: the last `lines` lines of the audit log.
    AuditTail { lines: u32 },
    /// Admin: engine and server statistics.
    Stats,
    /// Admin: add a grant directly.
    AddGrant {
        uid: u32,
        app_id: String,
        action: String,
        target: Option<String>,
        allow: bool,
    },
    /// Control plane (admin socket only): receive [`Event::Prompt`] and
    /// [`Event::PromptResolved`] as a prompt agent. The reply lists the prompts already pending.
    SubscribePrompts,
    /// Control plane: answer a pending prompt. The first answer wins.
    AnswerPrompt { prompt: u64, answer: PromptAnswer },
    /// Control plane: the pending prompts.
    ListPrompts,
    /// Control plane: the grants in force.
    ListGrants,
    /// Control plane: revoke a grant. Capture streams it authorised end at once.
    RevokeGrant { grant: u64 },
    /// Admin: the remembered stream settings (volume and mute per uid, app id and device),
    /// least recently used first.
    ListStreamSettings,
    /// Admin: forget the remembered settings of `app_id`: of every uid or only `uid`'s, on
    /// every device or only `device`. The reply lists what was forgotten; none is `NotFound`.
    ForgetStreamSettings {
        app_id: String,
        uid: Option<u32>,
        device: Option<String>,
    },
}

/// A device to create at run time ([`Request::CreateDevice`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewDevice {
    pub name: String,
    /// A sink (plays) or a capture source.
    pub kind: DeviceKind,
    /// `null`, `file` (sinks) or `alsa`.
    pub backend: String,
    /// For `file`: the WAV file.
    pub path: Option<String>,
    /// For `alsa`: the PCM name.
    pub pcm: Option<String>,
    pub spec: StreamSpec,
    pub quantum: u32,
}

/// A connected client, as administrators see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientInfo {
    pub id: ClientId,
    pub pid: i32,
    pub uid: u32,
    pub user: Option<String>,
    pub app_id: String,
    /// How the app id was derived (`flatpak`, `snap`, `systemd`, `exe`, `unknown`).
    pub app_source: String,
    /// The declared name: a label, unverified.
    pub label: String,
    /// Connected on the admin socket.
    pub admin: bool,
    pub streams: u32,
}

/// A cached sample.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SampleInfo {
    pub name: String,
    pub owner: ClientId,
    pub spec: StreamSpec,
    pub frames: u64,
    pub bytes: u64,
}

/// One level meter reading.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meter {
    /// A stream id, or `None` for a device.
    pub stream: Option<StreamId>,
    /// The device (for a stream: the device it plays to or records from).
    pub device: String,
    /// Peak of the last period, 0.0..=1.0.
    pub peak: f32,
    /// RMS of the last period, 0.0..=1.0.
    pub rms: f32,
}

/// Engine figures of one device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceStats {
    pub name: String,
    pub cycles: u64,
    pub late_cycles: u64,
    pub xruns: u64,
    /// Engine cycle time in microseconds: mean, 99th percentile, maximum.
    pub cycle_mean_us: f64,
    pub cycle_p99_us: f64,
    pub cycle_max_us: f64,
    /// Cycle time over the cycle budget (quantum / rate), 0.0..
    pub load: f64,
    /// Streams the registry places on this device.
    pub streams: u32,
    /// Streams the engine thread actually carried in its last cycle.
    pub engine_streams: u32,
    /// Streams handed to the engine and not yet released back (carried, queued, or retired
    /// and not yet freed). Equal to `streams` once the engine has caught up.
    pub engine_held: u32,
    /// Client wake-ups (futex wakes) the engine made since the device started.
    pub wakeups: u64,
}

/// Server-wide statistics ([`Request::Stats`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerStats {
    pub uptime_secs: u64,
    pub clients: u32,
    pub streams: u32,
    /// Resident memory of the daemon, bytes.
    pub rss_bytes: u64,
    pub devices: Vec<DeviceStats>,
    /// Estimated engine CPU per client, as a share of one cycle budget (client id, share).
    pub client_cost: Vec<(ClientId, f64)>,
    /// Client wake-ups per stream.
    pub stream_wakeups: Vec<StreamWakeups>,
    /// Format conversion each client's streams cost the daemon (pulse clients; native
    /// clients convert on their own side and are not listed). Absent from older daemons.
    #[serde(default)]
    pub convert: Vec<ClientConvert>,
}

/// The conversion (format, rate, channel map) one client's streams make the daemon do
/// ([`ServerStats::convert`]), charged to its uid's conversion budget.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientConvert {
    pub client: ClientId,
    pub uid: u32,
    /// Samples per second this client's streams convert (client side plus device side).
    pub samples_per_sec: u64,
    /// The budget of its uid, shared by all that uid's clients, samples per second.
    pub budget: u64,
}

/// How often the engine woke one stream's client ([`ServerStats::stream_wakeups`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamWakeups {
    pub stream: StreamId,
    pub device: String,
    /// Futex wakes since the stream was created.
    pub wakeups: u64,
    /// Mean wakes per second since the stream was created.
    pub per_sec: f64,
}

/// How a prompt is answered, and for how long the answer holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum PromptAnswer {
    /// Allow this one request (this stream).
    AllowOnce,
    /// Allow until the client disconnects.
    AllowSession,
    /// Allow this app of this user from now on (persisted).
    AllowAlways,
    /// Refuse this one request.
    DenyOnce,
    /// Refuse this app of this user from now on (persisted).
    DenyAlways,
}

/// A request that waits for a user's consent, as prompt agents see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PromptInfo {
    pub id: u64,
    pub client: ClientId,
    pub pid: i32,
    pub uid: u32,
    pub user: Option<String>,
    /// The app id the server derived (`flatpak:…`, `snap:…`, `systemd:…`, `exe:…`).
    pub app_id: String,
    /// How the app id was derived (`flatpak`, `snap`, `systemd`, `exe`, `unknown`).
    pub app_source: String,
    pub exe: Option<String>,
    /// The name the client declared: a label, unverified.
    pub label: String,
    /// What it asks to do (`record`).
    pub action: String,
    /// The device.
    pub target: String,
    /// Unix milliseconds when the prompt is denied for want of an answer.
    pub deadline_unix_ms: u64,
}

/// A grant in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantInfo {
    pub id: u64,
    pub uid: u32,
    pub app_id: String,
    pub action: String,
    pub target: Option<String>,
    pub allow: bool,
    /// `once`, `session` or `always`.
    pub scope: String,
    /// The client a once/session grant belongs to.
    pub client: Option<ClientId>,
    pub by: String,
}

/// A message from the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ServerMsg {
    /// The answer to request `id`.
    Reply {
        id: u32,
        result: Result<Reply, WireError>,
    },
    /// Something happened that concerns this client.
    Event(Event),
}

/// Successful answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Reply {
    /// Handshake accepted.
    Hello {
        version: u32,
        server: String,
        client: ClientId,
    },
    /// Done, nothing to report.
    Ok,
    /// See [`Request::ServerInfo`].
    ServerInfo(ServerInfo),
    /// See [`Request::ListSinks`].
    Sinks(Vec<DeviceInfo>),
    /// See [`Request::ListSources`].
    Sources(Vec<DeviceInfo>),
    /// See [`Request::ListStreams`].
    Streams(Vec<StreamInfo>),
    /// A stream was created. For record streams the reply carries its fds.
    StreamCreated {
        stream: StreamId,
        spec: StreamSpec,
        capacity_frames: u64,
        /// Frames the device consumes or produces per cycle.
        quantum: u32,
    },
    /// See [`Request::StreamInfo`].
    Stream(StreamInfo),
    /// See [`Request::ListPrompts`] and [`Request::SubscribePrompts`].
    Prompts(Vec<PromptInfo>),
    /// See [`Request::ListGrants`].
    Grants(Vec<GrantInfo>),
    /// See [`Request::ListSamples`].
    Samples(Vec<SampleInfo>),
    /// See [`Request::ListClients`].
    Clients(Vec<ClientInfo>),
    /// See [`Request::AuditTail`]: JSON lines, oldest first.
    Audit(Vec<String>),
    /// See [`Request::Stats`].
    Stats(ServerStats),
    /// See [`Request::ListStreamSettings`] and [`Request::ForgetStreamSettings`].
    StreamSettings(Vec<StreamSetting>),
}

/// A remembered stream setting: the next stream of this app of this user on this device
/// starts with this volume and mute.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamSetting {
    pub uid: u32,
    /// The daemon-established app id of the streams' owner.
    pub app_id: String,
    pub device: String,
    /// Linear, 0.0..=4.0.
    pub volume: f32,
    pub muted: bool,
}

/// Server-wide facts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerInfo {
    pub name: String,
    pub version: String,
    pub protocol: u32,
    pub default_sink: Option<String>,
    pub default_source: Option<String>,
    /// Something an operator should know about how the server runs, e.g. that no sound card
    /// was found and it plays to a `null` sink.
    pub notice: Option<String>,
}

/// Whether a device plays or captures.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum DeviceKind {
    /// Plays the mix of its playback streams.
    Sink,
    /// Captures from hardware (a microphone).
    Capture,
    /// Carries the mix of a sink.
    Monitor,
}

/// A sink or source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceInfo {
    pub name: String,
    pub kind: DeviceKind,
    /// Backend name: `null`, `file`, `alsa`.
    pub backend: String,
    pub spec: StreamSpec,
    /// Frames per engine cycle.
    pub quantum: u32,
    pub is_default: bool,
    pub suspended: bool,
    /// For a monitor, the sink it watches.
    pub monitor_of: Option<String>,
    /// Whether the device works now.
    pub state: DeviceState,
    /// What paces the device: `device` (the PCM's own clock) or `timer`.
    pub clock: String,
    /// The device name the backend opened (an ALSA PCM name such as `hw:0,0`), if any.
    pub device: Option<String>,
    /// Frames per device period, as granted by the device (0 if it has no periods).
    pub period_frames: u32,
    /// Frames in the device buffer, as granted by the device (0 if it has no buffer).
    pub buffer_frames: u32,
    /// Over- or underruns of the device (ALSA `EPIPE`) the server recovered from.
    pub xruns: u64,
    /// Times the device was suspended (ALSA `ESTRPIPE`) and resumed.
    pub suspends: u64,
    /// Why the device is unavailable, or other news about it.
    pub detail: Option<String>,
    /// The device's own volume (linear) and mute, applied after the mix.
    pub volume: f32,
    pub muted: bool,
}

/// A device's availability.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum DeviceState {
    /// Working.
    Running,
    /// The device failed or vanished; the server retries opening it. Its playback streams
    /// moved to the fallback sink; its record streams are paused.
    Unavailable,
    /// No stream for `[engine] idle_suspend_secs`: the clock is stopped (an ALSA device is
    /// stopped) until the next stream, which starts it again within one quantum.
    Idle,
}

/// Direction of a stream.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Direction {
    Playback,
    Record,
}

/// A stream's state and counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamInfo {
    pub id: StreamId,
    pub client: ClientId,
    pub name: String,
    pub direction: Direction,
    /// Sink or source name.
    pub device: String,
    pub spec: StreamSpec,
    pub volume: f32,
    pub muted: bool,
    pub corked: bool,
    /// Times the stream ran dry while playing.
    pub underruns: u64,
    /// Frames the engine has consumed from (playback) or written to (record) the ring.
    pub frames: u64,
    /// Latest peak level (0.0..=1.0) after gain.
    pub peak: f32,
    /// Ring capacity in frames (the stream's buffering).
    pub capacity_frames: u64,
    /// Exclusive (passthrough) stream.
    pub exclusive: bool,
}

/// Events the server pushes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Event {
    /// A stream's underrun counter rose.
    Underrun { stream: StreamId, underruns: u64 },
    /// The server ended a stream (a protocol error in its ring, a revoked grant, a removed
    /// device). The stream id is no longer valid.
    StreamEnded { stream: StreamId, error: WireError },
    /// Request `request` waits for a user's consent (prompt `prompt`); its reply comes when
    /// the prompt is answered or times out.
    PermissionPending { request: u32, prompt: u64 },
    /// To prompt agents: a prompt was raised.
    Prompt(PromptInfo),
    /// To prompt agents: a prompt was answered (`answer`), timed out or was cancelled.
    PromptResolved { prompt: u64, outcome: String },
    /// To subscribers: a stream appeared.
    StreamAdded(StreamInfo),
    /// To subscribers: a stream's volume, mute, cork state or device changed.
    StreamChanged(StreamInfo),
    /// To subscribers: a stream is gone.
    StreamRemoved { stream: StreamId },
    /// To subscribers: a device appeared or changed (state, volume, default, suspended).
    DeviceChanged(DeviceInfo),
    /// To subscribers: a device was removed.
    DeviceRemoved { name: String },
    /// To admin subscribers: a client connected.
    ClientAdded(ClientInfo),
    /// To admin subscribers: a client disconnected.
    ClientRemoved { client: ClientId },
    /// To admin subscribers: a policy decision, as its audit log line (JSON).
    Decision(String),
    /// To admin subscribers: a device's xrun counter rose.
    Xrun { device: String, xruns: u64 },
    /// To meter subscribers: levels of every stream and device.
    Meters(Vec<Meter>),
}

/// Kinds of failure, stable on the wire; tools map them to exit codes.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ErrorKind {
    /// Policy refused it.
    Denied,
    /// No such object, or not one the client may see.
    NotFound,
    /// A quota is exhausted.
    Quota,
    /// The object is busy or the server is overloaded; retrying later may help.
    Busy,
    /// The client broke the protocol (malformed message, bad fd, bad ring index).
    Protocol,
    /// A well-formed request with an unacceptable argument.
    Invalid,
    /// Something failed inside the server.
    Internal,
}

impl ErrorKind {
    /// Short lower-case name, used as the prefix of error messages (`permission denied`).
    pub const fn label(self) -> &'static str {
        match self {
            ErrorKind::Denied => "permission denied",
            ErrorKind::NotFound => "not found",
            ErrorKind::Quota => "quota exceeded",
            ErrorKind::Busy => "busy",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::Invalid => "invalid argument",
            ErrorKind::Internal => "internal error",
        }
    }
}

/// An error as sent on the wire: a kind and a human sentence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

impl WireError {
    /// Builds an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        WireError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.label(), self.message)
    }
}

/// Failure to encode or decode a message.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    /// The encoded message would exceed [`MAX_MESSAGE`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE}-byte cap")]
    TooLarge(usize),
}

/// Encodes a message.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = postcard::to_stdvec(msg)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// Decodes a message; trailing bytes make it malformed.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let (msg, rest) = postcard::take_from_bytes(bytes)?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed(
            postcard::Error::DeserializeBadEncoding,
        ));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SampleFormat;

    #[test]
    fn round_trip() {
        let msg = ClientMsg {
            id: 7,
            req: Request::CreatePlayback {
                name: "music".into(),
                sink: Some("speakers".into()),
                spec: StreamSpec {
                    format: SampleFormat::S16Le,
                    rate: 48_000,
                    channels: 2,
                },
                capacity_frames: 4800,
                volume: 0.5,
                muted: false,
                corked: false,
                exclusive: false,
            },
        };
        let bytes = encode(&msg).unwrap();
        assert!(
            bytes.len() < 64,
            "encoding should be compact, got {} bytes",
            bytes.len()
        );
        assert_eq!(decode::<ClientMsg>(&bytes).unwrap(), msg);
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        assert!(decode::<ClientMsg>(&[0xff; 16]).is_err());
        let mut bytes = encode(&ClientMsg {
            id: 1,
            req: Request::ServerInfo,
        })
        .unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<ClientMsg>(&bytes),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_is_refused() {
        let big = ClientMsg {
            id: 1,
            req: Request::Hello {
                version: 1,
                name: "x".repeat(MAX_MESSAGE),
            },
        };
        assert!(matches!(encode(&big), Err(CodecError::TooLarge(_))));
    }

    #[test]
    fn error_display_names_kind() {
        let e = WireError::new(
            ErrorKind::Denied,
            "recording from default.monitor needs a grant",
        );
        assert_eq!(
            e.to_string(),
            "permission denied: recording from default.monitor needs a grant"
        );
    }
}
