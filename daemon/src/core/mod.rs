//! The mediated core: the object registry (clients, sinks and their monitors, streams) and the
//! one API every transport calls. Every request carries the connection's [`Subject`] and goes
//! through [`Policy::check`] before it acts; enumeration is filtered by the same checks, so a
//! client sees its own streams and the devices it may use, and nothing else.
//!
//! **Architecture invariant:** the core knows nothing of sockets or encodings (it takes parsed
//! [`Request`]s and fds, and returns [`Reply`]s or [`WireError`]s), and it never touches the
//! real-time thread's state except through [`SinkHandle`]'s queue and the streams' atomics.
//!
//! Locking: one `std::sync::Mutex` guards the registry; it is held for short, non-blocking
//! sections only (never across an await, never by the engine).

pub mod admin_devices;
pub mod audit;
pub mod consent;
pub mod control;
pub mod devices;
pub mod grants;
pub mod prompts;
pub mod reload;
pub mod restore;
pub mod samples;
pub mod state_file;
pub mod streams;

use crate::backend;
use crate::config::{Config, Limits, SinkConfig};
use crate::engine::{EndReason, PlaybackStream, RecordStream, Retired, SinkHandle, StreamShared};
use crate::identity::Identity;
pub use crate::policy::AdminAccess;
use crate::policy::{Action, Decision, Object, Policy, Subject};
pub use consent::{Handled, Parked};
use soundgate_proto::ring::{self, Ring};
use soundgate_proto::shm::{self, Mapping};
use soundgate_proto::wire::{
    ClientId, DeviceInfo, DeviceKind, Direction, ErrorKind, Event, Reply, Request, ServerInfo,
    ServerMsg, StreamId, StreamInfo, WireError, MAX_NAME, PROTOCOL_VERSION,
};
use soundgate_proto::StreamSpec;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use tokio::sync::mpsc;

/// Suffix that names a sink's monitor source.
pub const MONITOR_SUFFIX: &str = ".monitor";
/// Events queued per connection before a client that does not read is cut off.
pub const EVENT_QUEUE: usize = 256;
/// How long a prompt waits for an answer unless the config says otherwise.
pub const DEFAULT_PROMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The highest linear volume a stream may have.
pub const MAX_VOLUME: f32 = 4.0;

/// Failures building the core.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The state directory (grants, audit log) could not be used.
    #[error("state: {0}")]
    State(String),
    /// A sink's backend could not be opened.
    #[error("sink {name}: {source}")]
    Backend {
        name: String,
        source: backend::BackendError,
    },
    /// A sink's engine could not be started.
    #[error("sink {name}: {source}")]
    Engine {
        name: String,
        source: crate::engine::EngineError,
    },
}

/// What [`Core::handle`] returns: the reply and any fds to send with it.
#[derive(Debug)]
pub struct Outcome {
    pub result: Result<Reply, WireError>,
    pub fds: Vec<OwnedFd>,
}

impl From<Result<Reply, WireError>> for Outcome {
    fn from(result: Result<Reply, WireError>) -> Self {
        Outcome {
            result,
            fds: Vec::new(),
        }
    }
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> WireError {
    WireError::new(kind, msg)
}

/// A sink with its engine.
#[derive(Debug)]
pub struct Sink {
    name: String,
    backend: &'static str,
    handle: SinkHandle,
    /// Capture source or sink, availability (see [`devices`]).
    dev: devices::DevState,
}

impl Sink {
    /// The sink's engine.
    pub fn handle(&self) -> &SinkHandle {
        &self.handle
    }

    /// The sink's or source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is a capture source rather than a sink.
    pub fn is_source(&self) -> bool {
        self.dev.source
    }

    /// Whether it was removed at run time (its engine is stopped or stopping).
    pub fn is_removed(&self) -> bool {
        self.dev.is_removed()
    }
}

#[derive(Debug)]
struct ClientEntry {
    subject: Subject,
    identity: Identity,
    label: String,
    events: Option<mpsc::Sender<ServerMsg>>,
    /// Log lines this client's requests may cause (see [`LogBudget`]).
    logs: LogBudget,
    /// Receives stream, device (and, for admins, client) events (see [`streams`]).
    subscribed: bool,
    /// Came in on the admin socket: counted in that socket's connection quota, never in the
    /// apps' (a bookkeeping fact, not an access decision).
    on_admin_socket: bool,
}

#[derive(Debug)]
struct StreamEntry {
    owner: ClientId,
    /// The owner's uid (for the quotas, which outlive the owner's connection).
    uid: u32,
    direction: Direction,
    name: String,
    sink: usize,
    /// The device the stream was created on; it moves back there when that comes back.
    home: usize,
    device: String,
    spec: StreamSpec,
    shared: Arc<StreamShared>,
    reported_underruns: u64,
    /// Ring capacity in frames.
    capacity: u64,
    /// Bytes of its ring mapped into the daemon (counted in `[limits] shm_bytes_per_uid`).
    shm_bytes: u64,
    /// Exclusive (passthrough) stream: other clients may not open streams on its sink.
    exclusive: bool,
}

#[derive(Debug, Default)]
struct Registry {
    clients: BTreeMap<ClientId, ClientEntry>,
    streams: BTreeMap<StreamId, StreamEntry>,
    default_sink: Option<usize>,
    next_client: ClientId,
    next_stream: StreamId,
    /// Every client's cached samples and the sample plays in progress (see [`samples`]).
    samples: samples::SampleCache,
    /// Streams handed back by their engine and not yet landed on the next (see [`devices`]).
    moving: std::collections::BTreeSet<StreamId>,
    /// Streams out of the registry whose engine has not handed them back yet (owner, uid,
    /// ring bytes): they still count against the quotas until [`Core::reap`] has unmapped them.
    releasing: BTreeMap<StreamId, (ClientId, u32, u64)>,
    /// Ring bytes a transport maps on its own side for a uid's streams (the pulse transport's
    /// writer of a playback ring, its reader of a record ring), by uid; see [`ShmCharge`].
    transport_shm: BTreeMap<u32, u64>,
    /// Log lines about refused connections (any uid can cause them).
    refusals_logged: LogBudget,
}

impl Registry {
    /// Whether a line `client`'s request caused may be logged now (`Some(lines suppressed
    /// before it)`), charged to that client's budget. An unknown client logs nothing.
    fn may_log(&mut self, client: ClientId) -> Option<u64> {
        let now = std::time::Instant::now();
        self.clients.get_mut(&client)?.logs.take(now)
    }
}

/// Log lines a client can cause: a burst of [`LOG_BURST`], then [`LOG_PER_SEC`] a second; the
/// ones beyond are counted and the count goes with the next line logged.
#[derive(Debug)]
pub(crate) struct LogBudget {
    tokens: f64,
    at: std::time::Instant,
    suppressed: u64,
}

/// Lines a client may cause at once.
pub const LOG_BURST: f64 = 20.0;
/// Lines a client may cause per second, sustained.
pub const LOG_PER_SEC: f64 = 1.0;

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget::new()
    }
}

impl LogBudget {
    fn new() -> LogBudget {
        LogBudget {
            tokens: LOG_BURST,
            at: std::time::Instant::now(),
            suppressed: 0,
        }
    }

    /// `Some(suppressed so far)` if a line may be logged at `now`, else `None` (counted).
    fn take(&mut self, now: std::time::Instant) -> Option<u64> {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * LOG_PER_SEC).min(LOG_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

/// What a reload replaces in one piece: a request sees either the old or the new settings,
/// never a mix.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    /// What devices created at run time are opened with (limits, engine settings).
    pub(crate) config: Config,
    pub(crate) policy: Policy,
    pub(crate) limits: Limits,
}

/// The core. Shared by all connection tasks (`Arc<Core>`).
#[derive(Debug)]
pub struct Core {
    /// Sinks and capture sources, by stable index (see [`devices::DeviceTable`]).
    sinks: devices::DeviceTable,
    /// The reloadable settings: config, rules, limits (see [`reload`]). Read once per request
    /// through [`Core::live`]; never held across an await.
    live: RwLock<Arc<Live>>,
    /// The devices the config file opened (name, kind, entry), which a reload compares with
    /// the new file; devices created at run time are not in it (see [`reload`]).
    managed: Mutex<Vec<(SinkConfig, bool)>>,
    /// Where the indices of devices created at run time go, for the housekeeping task to
    /// watch their notify eventfds (see [`Core::watch_new_devices`]).
    new_devices: std::sync::OnceLock<mpsc::UnboundedSender<usize>>,
    reg: Mutex<Registry>,
    /// Grants, prompts, audit log (see [`consent`]).
    consent: Mutex<consent::Consents>,
    /// For the server info (e.g. "no sound card found").
    notice: Option<String>,
    /// Start time and meter subscriptions (see [`control`]).
    control: control::ControlState,
    /// Remembered stream volumes and mutes (see [`restore`]).
    restore: Mutex<restore::RestoreStore>,
}

impl Core {
    /// Opens every configured sink and capture source and starts their engines (see
    /// [`devices`]: a device that cannot be opened is left out with one log line).
    pub fn new(config: &Config) -> Result<Core, CoreError> {
        let (sinks, managed, notice) = devices::open_all(config)?;
        let mut default_sink = None;
        for (i, s) in sinks.iter().enumerate() {
            if s.dev.source {
                tracing::info!(source = %s.name, backend = s.backend, spec = %s.handle.spec(), quantum = s.handle.quantum(), "capture source ready");
                continue;
            }
            tracing::info!(
                sink = %s.name, backend = s.backend, spec = %s.handle.spec(), quantum = s.handle.quantum(),
                "sink ready; its monitor is {}{MONITOR_SUFFIX}", s.name
            );
            let marked = config.sinks.iter().any(|c| c.default && c.name == s.name);
            if marked || default_sink.is_none() {
                default_sink = Some(i);
            }
        }
        let reg = Registry {
            default_sink,
            next_client: 1,
            next_stream: 1,
            ..Registry::default()
        };
        Ok(Core {
            sinks: devices::DeviceTable::new(sinks),
            live: RwLock::new(Arc::new(Live {
                config: config.clone(),
                policy: Policy::new(config.rules.clone()),
                limits: config.limits.clone(),
            })),
            managed: Mutex::new(managed),
            new_devices: std::sync::OnceLock::new(),
            reg: Mutex::new(reg),
            consent: Mutex::new(
                consent::Consents::open(None, DEFAULT_PROMPT_TIMEOUT, &config.audit)
                    .map_err(CoreError::State)?,
            ),
            notice,
            control: control::ControlState::new(),
            restore: Mutex::new(restore::RestoreStore::in_memory()),
        })
    }

    /// Keeps grants, the audit log and the remembered stream settings in `state_dir` (loading
    /// the grants and settings there), and waits
    /// `prompt_timeout` for answers to prompts. Without this, grants live in memory only.
    pub fn open_state(
        &mut self,
        state_dir: &std::path::Path,
        prompt_timeout: std::time::Duration,
    ) -> Result<(), CoreError> {
        let audit = self.live().config.audit.clone();
        let consents = consent::Consents::open(Some(state_dir), prompt_timeout, &audit)
            .map_err(CoreError::State)?;
        self.consent = Mutex::new(consents);
        self.restore = Mutex::new(restore::RestoreStore::open(state_dir));
        Ok(())
    }

    /// Who may use the admin socket (the policy decides it on every accept; see
    /// [`Core::admit_admin`]). Without this, only root.
    pub fn set_admin_access(&mut self, access: AdminAccess) {
        let live = self.live.get_mut().unwrap_or_else(|p| p.into_inner());
        let policy = live.policy.clone().with_admin_access(access);
        *live = Arc::new(Live {
            policy,
            ..Live::clone(live)
        });
    }

    /// The settings in force now (swapped whole by a reload). Take it once per request.
    pub(crate) fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn reg(&self) -> MutexGuard<'_, Registry> {
        // A panic in one connection's handler must not take the daemon down; the registry's
        // invariants hold between statements, so carrying on with it is sound.
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sinks and capture sources, config order first, then those created at run time
    /// (removed ones keep their index; see [`Sink::is_removed`]).
    pub fn sinks(&self) -> &devices::DeviceTable {
        &self.sinks
    }

    /// Hands the indices of devices created from now on to `tx` (the housekeeping task, which
    /// watches their notify eventfds). Only the first call takes effect.
    pub fn watch_new_devices(&self, tx: mpsc::UnboundedSender<usize>) {
        let _ = self.new_devices.set(tx);
    }

    /// Registers a connection that has shaken hands. `label` is what the client calls itself.
    pub fn connect(
        &self,
        identity: Identity,
        label: &str,
        events: mpsc::Sender<ServerMsg>,
        admin: bool,
    ) -> Result<ClientId, WireError> {
        if label.len() > MAX_NAME {
            return Err(err(
                ErrorKind::Invalid,
                format!("client name longer than {MAX_NAME} bytes"),
            ));
        }
        let mut reg = self.reg();
        // Admin-socket connections have their own quota, never shared with apps: no number
        // of app connections of a uid (root's included) locks that uid's console out.
        let same_uid = reg
            .clients
            .values()
            .filter(|c| c.subject.uid == identity.uid && c.on_admin_socket == admin)
            .count();
        let limit = self.live().limits.connections_per_uid;
        if same_uid >= limit {
            let socket = if admin { "admin" } else { "app" };
            if let Some(suppressed) = reg.refusals_logged.take(std::time::Instant::now()) {
                tracing::warn!(
                    uid = identity.uid,
                    suppressed,
                    "refusing connection: {same_uid} {socket} connections already open for this uid"
                );
            }
            return Err(err(
                ErrorKind::Quota,
                format!(
                    "uid {} already has {same_uid} {socket} connections (limit {})",
                    identity.uid, limit
                ),
            ));
        }
        let id = reg.next_client;
        reg.next_client = reg.next_client.wrapping_add(1).max(1);
        let subject = identity.subject(id, admin);
        tracing::info!(
            client = id, pid = identity.pid, uid = identity.uid, app = %identity.app.id,
            via = %identity.app.source, label, "client connected"
        );
        reg.clients.insert(
            id,
            ClientEntry {
                subject,
                identity,
                label: label.to_string(),
                events: Some(events),
                logs: LogBudget::new(),
                subscribed: false,
                on_admin_socket: admin,
            },
        );
        self.client_added(&mut reg, id);
        Ok(id)
    }

    /// Forgets a connection and ends all its streams.
    pub fn disconnect(&self, client: ClientId) {
        self.forget_consents(client);
        // Its streams go back through the engine: the tick watches them until they are reaped.
        self.housekeeping_kick();
        let mut reg = self.reg();
        let Some(entry) = reg.clients.remove(&client) else {
            return;
        };
        reg.samples.forget(client);
        let mine: Vec<StreamId> = reg
            .streams
            .iter()
            .filter(|(_, s)| s.owner == client)
            .map(|(id, _)| *id)
            .collect();
        for id in &mine {
            if let Some(s) = reg.streams.remove(id) {
                self.detach(&mut reg, &s, *id);
                self.stream_removed(&mut reg, *id, &s);
            }
        }
        self.client_removed(&mut reg, client);
        tracing::info!(client, pid = entry.identity.pid, label = %entry.label, streams = mine.len(), "client disconnected");
    }

    /// Stream `id` (`s`, already out of the registry) leaves its engine: its release flag is
    /// set (which cannot fail or be lost), and it counts against its owner's quotas until the
    /// engine hands it back and [`Core::reap`] frees it.
    fn detach(&self, reg: &mut Registry, s: &StreamEntry, id: StreamId) {
        self.sinks[s.sink].handle.remove(&s.shared);
        reg.releasing.insert(id, (s.owner, s.uid, s.shm_bytes));
    }

    /// Collects streams sink `index`'s engine has let go, tells owners about those it ended on
    /// its own (a bad ring index), and frees them.
    pub fn reap(&self, index: usize) {
        self.housekeeping_kick();
        let Some(sink) = self.sinks.get(index) else {
            return;
        };
        let retired = sink.handle.collect_retired();
        let changed = sink
            .dev
            .seen_available
            .load(std::sync::atomic::Ordering::Acquire)
            != sink.handle.shared().available();
        if retired.is_empty() && !changed {
            return;
        }
        let mut reg = self.reg();
        for r in &retired {
            let id = r.id();
            let ended = match r {
                Retired::Playback(p) => p.shared.ended(),
                Retired::Record(rec) => rec.shared.ended(),
            };
            if ended.is_none() && reg.streams.contains_key(&id) {
                // In transit between devices (see `devices`).
                continue;
            }
            if let Some(EndReason::BadIndex) = ended {
                if let Some(s) = reg.streams.remove(&id) {
                    if let Some(suppressed) = reg.may_log(s.owner) {
                        tracing::warn!(
                            stream = id,
                            client = s.owner,
                            suppressed,
                            "ended stream: ring index out of range"
                        );
                    }
                    self.stream_removed(&mut reg, id, &s);
                    let error = err(
                        ErrorKind::Protocol,
                        format!("stream {id} was ended: its ring's write index was out of range"),
                    );
                    Self::send_event(&mut reg, s.owner, Event::StreamEnded { stream: id, error });
                }
            }
        }
        let mut rest = Vec::with_capacity(retired.len());
        for r in retired {
            let moving = r.shared().ended().is_none() && reg.streams.contains_key(&r.id());
            if moving {
                rest.extend(self.land(&mut reg, r));
            } else {
                rest.push(r);
            }
        }
        let freed: Vec<StreamId> = rest.iter().map(Retired::id).collect();
        if !sink.dev.is_removed() {
            self.device_events(index, &mut reg);
        }
        drop(reg);
        // Unmapping and closing happen here, outside the engine and outside the lock; only
        // then do the streams stop counting, so what the quotas allow is what is mapped.
        drop(rest);
        if !freed.is_empty() {
            let mut reg = self.reg();
            for id in freed {
                reg.releasing.remove(&id);
            }
        }
    }

    /// Whether the periodic [`Core::tick`] has anything to watch: a stream (underruns, sample
    /// plays), a stream the engine has not handed back yet, audit or decision lines waiting,
    /// or a device whose clock runs (xruns). When none of these holds the housekeeping task
    /// sleeps in [`Core::housekeeping_idle`] until [`Core::housekeeping_kick`]: an idle
    /// daemon makes no periodic wake-up.
    pub fn housekeeping_due(&self) -> bool {
        {
            let reg = self.reg();
            if !reg.streams.is_empty() || !reg.releasing.is_empty() || !reg.samples.plays.is_empty()
            {
                return true;
            }
        }
        if self.consents().tick_pending() {
            return true;
        }
        self.sinks.live().any(|(_, s)| !s.handle.shared().idle())
    }

    /// Wakes the housekeeping task if it sleeps in [`Core::housekeeping_idle`] (or makes its
    /// next wait return at once). Called after everything that can make
    /// [`Core::housekeeping_due`] true: a request handled or resumed, a connection gone, a
    /// reap.
    pub fn housekeeping_kick(&self) {
        self.control.housekeeping.notify_one();
    }

    /// Waits for the next [`Core::housekeeping_kick`] (a kick made before this call counts).
    pub async fn housekeeping_idle(&self) {
        self.control.housekeeping.notified().await;
    }

    /// Housekeeping ticks run since start (constant while the daemon idles).
    pub fn housekeeping_ticks(&self) -> u64 {
        self.control.ticks.load(Ordering::Relaxed)
    }

    /// Reports new underruns to the owners of streams. Called periodically while
    /// [`Core::housekeeping_due`].
    pub fn tick(&self) {
        self.control.ticks.fetch_add(1, Ordering::Relaxed);
        self.consents().audit_tick();
        self.log_device_counters();
        self.samples_tick();
        let mut reg = self.reg();
        let mut events = Vec::new();
        for (id, s) in reg.streams.iter_mut() {
            let now = s.shared.underruns();
            if now != s.reported_underruns {
                s.reported_underruns = now;
                events.push((
                    s.owner,
                    Event::Underrun {
                        stream: *id,
                        underruns: now,
                    },
                ));
            }
        }
        for (owner, ev) in events {
            Self::send_event(&mut reg, owner, ev);
        }
        self.publish_tick(&mut reg);
    }

    fn send_event(reg: &mut Registry, client: ClientId, ev: Event) {
        let Some(c) = reg.clients.get_mut(&client) else {
            return;
        };
        let Some(tx) = &c.events else { return };
        if tx.try_send(ServerMsg::Event(ev)).is_err() {
            // The client does not read its events: cut it off rather than queue without bound.
            tracing::warn!(client, "event queue full; closing the connection");
            c.events = None;
        }
    }

    /// Stops every engine (finalising file sinks).
    pub fn shutdown(self) {
        for s in self.sinks.into_sinks() {
            let name = s.name.clone();
            if let Err(e) = s.handle.shutdown() {
                tracing::error!(sink = %name, "shutting down: {e}");
            }
        }
    }

    fn authorize(
        &self,
        reg: &mut Registry,
        client: ClientId,
        action: Action,
        object: &Object<'_>,
    ) -> Result<(), WireError> {
        let Some(c) = reg.clients.get_mut(&client) else {
            return Err(err(ErrorKind::Protocol, "unknown client"));
        };
        let (decision, _) = self.decide(&c.subject, c.identity.pid, action, object);
        let reason = match decision {
            Decision::Allow => return Ok(()),
            Decision::Deny(reason) => reason,
            // `handle` turns this into a prompt when an agent is connected.
            Decision::Ask if self.has_agents() => {
                format!("{} needs the user's consent", describe(action, object))
            }
            Decision::Ask => format!(
                "{} needs the user's consent and no prompt agent is connected",
                describe(action, object)
            ),
        };
        // A client can cause denials at will: its log lines are rate limited.
        if let Some(suppressed) = c.logs.take(std::time::Instant::now()) {
            tracing::info!(client, app = %c.subject.app_id, action = action.name(), suppressed, "denied: {reason}");
        }
        Err(err(ErrorKind::Denied, reason))
    }

    /// Handles one request from `client`. Fds sent with it are consumed (closed on return).
    fn dispatch(&self, client: ClientId, req: Request, fds: Vec<OwnedFd>) -> Outcome {
        if !matches!(
            req,
            Request::CreatePlayback { .. } | Request::UploadSample { .. }
        ) && !fds.is_empty()
        {
            return Err(err(
                ErrorKind::Protocol,
                "this request takes no file descriptors",
            ))
            .into();
        }
        match req {
            Request::Hello { .. } => Err(err(ErrorKind::Protocol, "handshake already done")).into(),
            Request::ServerInfo => Ok(Reply::ServerInfo(self.server_info())).into(),
            Request::ListSinks => self.list_sinks(client).into(),
            Request::ListSources => self.list_sources(client).into(),
            Request::ListStreams => self.list_streams(client).into(),
            Request::CreatePlayback {
                name,
                sink,
                spec,
                capacity_frames,
                volume,
                muted,
                corked,
                exclusive,
            } => self
                .create_playback(
                    client,
                    name,
                    sink,
                    spec,
                    capacity_frames,
                    (volume, muted, corked, exclusive),
                    fds,
                )
                .into(),
            Request::CreateRecord {
                name,
                source,
                spec,
                capacity_frames,
            } => match self.create_record(client, name, source, spec, capacity_frames) {
                Ok((reply, fds)) => Outcome {
                    result: Ok(reply),
                    fds,
                },
                Err(e) => Err(e).into(),
            },
            Request::SetVolume { stream, volume } => self
                .with_own_stream(client, stream, |s| {
                    check_volume(volume)?;
                    s.shared.set_volume(volume);
                    Ok(Reply::Ok)
                })
                .inspect(|_| {
                    self.stream_changed_now(stream);
                    self.remember_stream(client, stream);
                })
                .into(),
            Request::SetMute { stream, muted } => self
                .with_own_stream(client, stream, |s| {
                    s.shared.set_muted(muted);
                    Ok(Reply::Ok)
                })
                .inspect(|_| {
                    self.stream_changed_now(stream);
                    self.remember_stream(client, stream);
                })
                .into(),
            Request::Cork { stream, corked } => self
                .with_own_stream(client, stream, |s| {
                    s.shared.set_corked(corked);
                    Ok(Reply::Ok)
                })
                .inspect(|_| self.stream_changed_now(stream))
                .into(),
            Request::Drain { stream } => self
                .with_own_stream(client, stream, |s| {
                    if s.direction != Direction::Playback {
                        return Err(err(ErrorKind::Invalid, "only playback streams drain"));
                    }
                    s.shared.set_draining(true);
                    Ok(Reply::Ok)
                })
                .into(),
            Request::StreamInfo { stream } => self
                .with_own_stream(client, stream, |s| {
                    Ok(Reply::Stream(stream_info(stream, s)))
                })
                .into(),
            Request::DeleteStream { stream } => self.delete_stream(client, stream).into(),
            Request::SetDefaultSink { sink } => self.set_default_sink(client, &sink).into(),
            req @ (Request::MoveStream { .. } | Request::Subscribe) => {
                self.streams_request(client, req).into()
            }
            req @ (Request::UploadSample { .. }
            | Request::PlaySample { .. }
            | Request::RemoveSample { .. }
            | Request::ListSamples) => self.samples_request(client, req, fds).into(),
            req @ (Request::SuspendDevice { .. }
            | Request::SetDeviceVolume { .. }
            | Request::SetDeviceMute { .. }
            | Request::SetDefaultSource { .. }
            | Request::CreateDevice { .. }
            | Request::RemoveDevice { .. }) => self.device_request(client, req).into(),
            req @ (Request::ListClients
            | Request::KillClient { .. }
            | Request::SubscribeMeters { .. }
            | Request::AuditTail { .. }
            | Request::Stats
            | Request::AddGrant { .. }) => self.admin_request(client, req).into(),
            req @ (Request::SubscribePrompts
            | Request::AnswerPrompt { .. }
            | Request::ListPrompts
            | Request::ListGrants
            | Request::RevokeGrant { .. }) => self.control(client, req).into(),
            req @ (Request::ListStreamSettings | Request::ForgetStreamSettings { .. }) => {
                self.stream_settings_request(client, req).into()
            }
        }
    }

    fn server_info(&self) -> ServerInfo {
        let reg = self.reg();
        ServerInfo {
            name: "soundgated".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL_VERSION,
            default_sink: reg
                .default_sink
                .and_then(|i| self.sinks.get(i))
                .map(|s| s.name.clone()),
            default_source: self.default_source_name(),
            notice: self.notice.clone(),
        }
    }

    fn device_info(
        &self,
        i: usize,
        _sink: &Sink,
        kind: DeviceKind,
        default: Option<usize>,
    ) -> DeviceInfo {
        let is_default = match kind {
            DeviceKind::Sink => default == Some(i),
            DeviceKind::Capture => self.sinks[i].dev.is_default_source(),
            DeviceKind::Monitor => false,
        };
        self.device_info_of(i, kind, is_default)
    }

    fn list_sinks(&self, client: ClientId) -> Result<Reply, WireError> {
        let mut reg = self.reg();
        let default = reg.default_sink;
        let subject = reg.clients.get_mut(&client).map(|c| c.subject.clone());
        let Some(subject) = subject else {
            return Err(err(ErrorKind::Protocol, "unknown client"));
        };
        let list = self
            .sinks
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                !s.dev.source
                    && !s.dev.is_removed()
                    && !matches!(
                        self.permitted(&subject, Action::Play, &Object::Sink { name: &s.name }),
                        Decision::Deny(_)
                    )
            })
            .map(|(i, s)| self.device_info(i, s, DeviceKind::Sink, default))
            .collect();
        Ok(Reply::Sinks(list))
    }

    fn list_sources(&self, client: ClientId) -> Result<Reply, WireError> {
        let reg = self.reg();
        let Some(c) = reg.clients.get(&client) else {
            return Err(err(ErrorKind::Protocol, "unknown client"));
        };
        // A source is listed if the client may record from it, or may ask to.
        let list = self
            .sinks
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.dev.is_removed())
            .filter(|(_, s)| {
                let monitor = !s.dev.source;
                let name = if monitor {
                    format!("{}{MONITOR_SUFFIX}", s.name)
                } else {
                    s.name.clone()
                };
                !matches!(
                    self.permitted(
                        &c.subject,
                        Action::Record,
                        &Object::Source {
                            name: &name,
                            monitor
                        }
                    ),
                    Decision::Deny(_)
                )
            })
            .map(|(i, s)| {
                let kind = if s.dev.source {
                    DeviceKind::Capture
                } else {
                    DeviceKind::Monitor
                };
                self.device_info(i, s, kind, None)
            })
            .collect();
        Ok(Reply::Sources(list))
    }

    fn list_streams(&self, client: ClientId) -> Result<Reply, WireError> {
        let reg = self.reg();
        let Some(c) = reg.clients.get(&client) else {
            return Err(err(ErrorKind::Protocol, "unknown client"));
        };
        let list = reg
            .streams
            .iter()
            .filter(|(_, s)| {
                self.permitted(
                    &c.subject,
                    Action::ListStreams,
                    &Object::Stream {
                        owner: s.owner,
                        device: &s.device,
                    },
                ) == Decision::Allow
            })
            .map(|(id, s)| stream_info(*id, s))
            .collect();
        Ok(Reply::Streams(list))
    }

    /// Runs `f` on `stream` if the client may control it. Streams it may not control are
    /// reported as not found: a client cannot even learn that another's stream exists.
    fn with_own_stream(
        &self,
        client: ClientId,
        stream: StreamId,
        f: impl FnOnce(&StreamEntry) -> Result<Reply, WireError>,
    ) -> Result<Reply, WireError> {
        let mut reg = self.reg();
        let not_found = || err(ErrorKind::NotFound, format!("no stream {stream}"));
        let (owner, device) = match reg.streams.get(&stream) {
            Some(s) => (s.owner, s.device.clone()),
            None => return Err(not_found()),
        };
        self.authorize(
            &mut reg,
            client,
            Action::ControlStream,
            &Object::Stream {
                owner,
                device: &device,
            },
        )
        .map_err(|_| not_found())?;
        match reg.streams.get(&stream) {
            Some(s) => f(s),
            None => Err(not_found()),
        }
    }

    fn delete_stream(&self, client: ClientId, stream: StreamId) -> Result<Reply, WireError> {
        self.with_own_stream(client, stream, |_| Ok(Reply::Ok))?;
        let mut reg = self.reg();
        if let Some(s) = reg.streams.remove(&stream) {
            self.detach(&mut reg, &s, stream);
            self.stream_removed(&mut reg, stream, &s);
        }
        Ok(Reply::Ok)
    }

    fn set_default_sink(&self, client: ClientId, name: &str) -> Result<Reply, WireError> {
        let mut reg = self.reg();
        self.authorize(&mut reg, client, Action::SetDefault, &Object::Sink { name })?;
        let index = self
            .find_sink(name)
            .ok_or_else(|| err(ErrorKind::NotFound, format!("no sink named {name}")))?;
        let old = reg.default_sink.replace(index);
        for i in old.into_iter().chain([index]) {
            self.device_changed(&mut reg, i);
        }
        tracing::info!(client, sink = name, "default sink changed");
        Ok(Reply::Ok)
    }

    fn sink_index(&self, reg: &Registry, name: Option<&str>) -> Result<usize, WireError> {
        match name {
            None => reg
                .default_sink
                .ok_or_else(|| err(ErrorKind::NotFound, "the server has no default sink")),
            Some(n) => self
                .find_sink(n)
                .ok_or_else(|| err(ErrorKind::NotFound, format!("no sink named {n}"))),
        }
    }

    /// Checks the stream quotas for `client`. A stream counts from its creation until its
    /// engine has handed it back and it was freed ([`Registry::releasing`]), so a client
    /// cannot exceed a quota by dying and reconnecting faster than the engines let go.
    ///
    /// `ring_bytes` is what the new stream's ring maps into the daemon: with every ring of
    /// the same uid still mapped (streams, releasing ones, and transports' own mappings) it
    /// must fit in `[limits] shm_bytes_per_uid`.
    fn check_quota(
        &self,
        reg: &Registry,
        client: ClientId,
        ring_bytes: u64,
    ) -> Result<(), WireError> {
        let uid = reg.clients.get(&client).map(|c| c.subject.uid);
        let (mut mine, mut same_uid, mut mapped) = (0usize, 0usize, 0u64);
        let owners = reg.streams.values().map(|s| (s.owner, s.uid, s.shm_bytes));
        for (owner, owner_uid, bytes) in owners.chain(reg.releasing.values().copied()) {
            if owner == client {
                mine += 1;
            }
            if Some(owner_uid) == uid {
                same_uid += 1;
                mapped = mapped.saturating_add(bytes);
            }
        }
        if let Some(uid) = uid {
            let transport = reg.transport_shm.get(&uid).copied().unwrap_or(0);
            mapped = mapped.saturating_add(transport);
        }
        let total = reg.streams.len() + reg.releasing.len();
        let live = self.live();
        let l = &live.limits;
        if mine >= l.streams_per_client {
            return Err(err(
                ErrorKind::Quota,
                format!(
                    "this client already has {mine} streams (limit {})",
                    l.streams_per_client
                ),
            ));
        }
        if same_uid >= l.streams_per_uid {
            return Err(err(
                ErrorKind::Quota,
                format!(
                    "this uid already has {same_uid} streams (limit {})",
                    l.streams_per_uid
                ),
            ));
        }
        if total >= l.streams_total {
            return Err(err(
                ErrorKind::Quota,
                format!(
                    "the server already has {total} streams (limit {})",
                    l.streams_total
                ),
            ));
        }
        if mapped.saturating_add(ring_bytes) > l.shm_bytes_per_uid {
            return Err(shm_refusal(mapped, ring_bytes, l.shm_bytes_per_uid));
        }
        Ok(())
    }

    /// Charges `bytes` that `client`'s transport maps on its own side for one of its streams
    /// (the pulse transport's mapping of a ring it writes or reads) to the client's uid, within
    /// `[limits] shm_bytes_per_uid` alongside the uid's streams. Given back when the charge
    /// is dropped: keep it for as long as that mapping lives.
    pub fn charge_shm(
        self: &Arc<Self>,
        client: ClientId,
        bytes: u64,
    ) -> Result<ShmCharge, WireError> {
        let mut reg = self.reg();
        let uid = reg
            .clients
            .get(&client)
            .map(|c| c.subject.uid)
            .ok_or_else(|| err(ErrorKind::Protocol, "unknown client"))?;
        let streams = reg.streams.values().map(|s| (s.uid, s.shm_bytes));
        let releasing = reg.releasing.values().map(|&(_, uid, bytes)| (uid, bytes));
        let mapped = streams
            .chain(releasing)
            .filter(|&(u, _)| u == uid)
            .fold(0u64, |acc, (_, b)| acc.saturating_add(b))
            .saturating_add(reg.transport_shm.get(&uid).copied().unwrap_or(0));
        let limit = self.live().limits.shm_bytes_per_uid;
        if mapped.saturating_add(bytes) > limit {
            return Err(shm_refusal(mapped, bytes, limit));
        }
        *reg.transport_shm.entry(uid).or_insert(0) += bytes;
        Ok(ShmCharge {
            core: Arc::clone(self),
            uid,
            bytes,
        })
    }

    /// `[limits] max_ring_bytes`: the largest ring one stream may have.
    pub fn max_ring_bytes(&self) -> u64 {
        self.live().limits.max_ring_bytes
    }

    fn check_geometry(
        &self,
        sink: &Sink,
        spec: &StreamSpec,
        capacity: u64,
        min_quanta: u64,
        max_ms: u32,
    ) -> Result<(), WireError> {
        spec.validate()
            .map_err(|e| err(ErrorKind::Invalid, e.to_string()))?;
        let dev = sink.handle.spec();
        if spec.rate != dev.rate {
            return Err(err(
                ErrorKind::Invalid,
                format!(
                    "stream rate {} Hz differs from {}'s {} Hz (the client library resamples)",
                    spec.rate, sink.name, dev.rate
                ),
            ));
        }
        let quantum = u64::from(sink.handle.quantum());
        let min = min_quanta * quantum;
        let max = dev.frames_for_ms(max_ms).max(min);
        if !(min..=max).contains(&capacity) {
            return Err(err(
                ErrorKind::Invalid,
                format!("ring capacity {capacity} frames is outside {min}..={max}"),
            ));
        }
        let bytes = ring_size(capacity, spec)?;
        let max_ring = self.live().limits.max_ring_bytes;
        if bytes > max_ring {
            return Err(err(
                ErrorKind::Invalid,
                format!(
                    "a ring of {capacity} frames takes {bytes} bytes, more than the {} a stream \
                     may have ([limits] max_ring_bytes); ask for less latency",
                    max_ring
                ),
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn create_playback(
        &self,
        client: ClientId,
        name: String,
        sink: Option<String>,
        spec: StreamSpec,
        capacity: u64,
        (volume, muted, corked, exclusive): (f32, bool, bool, bool),
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, WireError> {
        check_name(&name)?;
        let mut reg = self.reg();
        let index = self.sink_index(&reg, sink.as_deref())?;
        let sink = &self.sinks[index];
        self.authorize(
            &mut reg,
            client,
            Action::Play,
            &Object::Sink { name: &sink.name },
        )?;
        if exclusive {
            let name = &sink.name;
            self.authorize(
                &mut reg,
                client,
                Action::Passthrough,
                &Object::Sink { name },
            )?;
        }
        self.check_exclusive(&reg, index, client, exclusive)?;
        let max_ms = self.live().limits.max_latency_ms;
        self.check_geometry(sink, &spec, capacity, 2, max_ms)?;
        self.check_quota(&reg, client, ring_size(capacity, &spec)?)?;
        check_volume(volume)?;
        // Exactly the ring: wake-ups go through its header's futex word, so an extra fd (an
        // eventfd, a pipe) is refused, never kept.
        let [memfd]: [OwnedFd; 1] = fds.try_into().map_err(|fds: Vec<OwnedFd>| {
            err(
                ErrorKind::Protocol,
                format!(
                    "a playback stream takes exactly 1 fd (the ring memfd), got {}",
                    fds.len()
                ),
            )
        })?;
        let size = ring::ring_bytes(capacity, spec.frame_bytes())
            .map_err(|e| err(ErrorKind::Invalid, e.to_string()))?;
        let protocol = |e: &dyn std::fmt::Display| err(ErrorKind::Protocol, e.to_string());
        shm::verify_sealed(memfd.as_fd(), size).map_err(|e| protocol(&e))?;
        let map = Mapping::new(memfd.as_fd(), size, true).map_err(|e| protocol(&e))?;
        let ring = Ring::attach(map, capacity, spec.frame_bytes()).map_err(|e| protocol(&e))?;
        drop(memfd);
        // Remembered settings of this app on this sink win over the request's (see `restore`).
        let (volume, muted) = self
            .remembered(&reg, client, &sink.name)
            .unwrap_or((volume, muted));
        let shared = StreamShared::new(volume, muted, corked);
        let new = NewPlayback {
            name,
            ring,
            spec,
            shared,
            capacity,
            exclusive,
        };
        let id = self.attach_playback(&mut reg, client, index, new, "stream")?;
        tracing::debug!(client, stream = id, sink = %sink.name, %spec, capacity, "playback stream created");
        Ok(Reply::StreamCreated {
            stream: id,
            spec,
            capacity_frames: capacity,
            quantum: sink.handle.quantum(),
        })
    }

    fn create_record(
        &self,
        client: ClientId,
        name: String,
        source: Option<String>,
        spec: StreamSpec,
        capacity: u64,
    ) -> Result<(Reply, Vec<OwnedFd>), WireError> {
        check_name(&name)?;
        let mut reg = self.reg();
        let Some(source) = source.or_else(|| self.default_source_name()) else {
            return Err(err(
                ErrorKind::NotFound,
                "the server has no default source; name one (e.g. default.monitor)",
            ));
        };
        let (index, monitor) = self.find_source(&source)?;
        self.authorize(
            &mut reg,
            client,
            Action::Record,
            &Object::Source {
                name: &source,
                monitor,
            },
        )?;
        let sink = &self.sinks[index];
        self.check_geometry(
            sink,
            &spec,
            capacity,
            4,
            self.live().limits.max_latency_ms.max(2000),
        )?;
        self.check_quota(&reg, client, ring_size(capacity, &spec)?)?;
        let size = ring::ring_bytes(capacity, spec.frame_bytes())
            .map_err(|e| err(ErrorKind::Invalid, e.to_string()))?;
        let internal = |e: &dyn std::fmt::Display| err(ErrorKind::Internal, e.to_string());
        let (memfd, map) =
            shm::create_read_only_for_peer("soundgate-rec", size).map_err(|e| internal(&e))?;
        let ring = Ring::init(map, capacity, spec.frame_bytes()).map_err(|e| internal(&e))?;
        let id = next_stream(&mut reg);
        let (volume, muted) = self
            .remembered(&reg, client, &source)
            .unwrap_or((1.0, false));
        let shared = StreamShared::new(volume, muted, false);
        let stream = RecordStream {
            id,
            ring,
            spec,
            shared: Arc::clone(&shared),
        };
        sink.handle.add_record(stream).map_err(|e| {
            err(
                ErrorKind::Busy,
                format!("source {source} cannot take the stream now: {e}"),
            )
        })?;
        if let Some(suppressed) = reg.may_log(client) {
            tracing::info!(client, stream = id, %source, %spec, suppressed, "record stream created");
        }
        let uid = reg.clients.get(&client).map_or(u32::MAX, |c| c.subject.uid);
        let entry = StreamEntry {
            owner: client,
            uid,
            direction: Direction::Record,
            name,
            sink: index,
            home: index,
            device: source,
            spec,
            shared,
            reported_underruns: 0,
            capacity,
            shm_bytes: ring_size(capacity, &spec)?,
            exclusive: false,
        };
        reg.streams.insert(id, entry);
        self.stream_added(&mut reg, id);
        let reply = Reply::StreamCreated {
            stream: id,
            spec,
            capacity_frames: capacity,
            quantum: sink.handle.quantum(),
        };
        Ok((reply, vec![memfd]))
    }
}

/// A playback stream ready for an engine: its ring is mapped and checked.
struct NewPlayback {
    name: String,
    ring: Ring,
    spec: StreamSpec,
    shared: Arc<StreamShared>,
    capacity: u64,
    exclusive: bool,
}

impl Core {
    /// Hands `new` to sink `index`'s engine, registers it as `client`'s stream and tells
    /// subscribers. `what` names it in the busy error ("stream", "sample").
    fn attach_playback(
        &self,
        reg: &mut Registry,
        client: ClientId,
        index: usize,
        new: NewPlayback,
        what: &str,
    ) -> Result<StreamId, WireError> {
        let sink = &self.sinks[index];
        let shm_bytes = ring_size(new.capacity, &new.spec)?;
        let id = next_stream(reg);
        let stream = PlaybackStream {
            id,
            ring: new.ring,
            spec: new.spec,
            shared: Arc::clone(&new.shared),
        };
        sink.handle.add_playback(stream).map_err(|e| {
            err(
                ErrorKind::Busy,
                format!("sink {} cannot take the {what} now: {e}", sink.name),
            )
        })?;
        let uid = reg.clients.get(&client).map_or(u32::MAX, |c| c.subject.uid);
        let entry = StreamEntry {
            owner: client,
            uid,
            direction: Direction::Playback,
            name: new.name,
            sink: index,
            home: index,
            device: sink.name.clone(),
            spec: new.spec,
            shared: new.shared,
            reported_underruns: 0,
            capacity: new.capacity,
            shm_bytes,
            exclusive: new.exclusive,
        };
        reg.streams.insert(id, entry);
        self.stream_added(reg, id);
        Ok(id)
    }
}

/// A transport's own mapping of a stream ring, charged to a uid's shared-memory budget
/// ([`Core::charge_shm`]); dropping it gives the bytes back.
#[derive(Debug)]
pub struct ShmCharge {
    core: Arc<Core>,
    uid: u32,
    bytes: u64,
}

impl Drop for ShmCharge {
    fn drop(&mut self) {
        let mut reg = self.core.reg();
        if let Some(used) = reg.transport_shm.get_mut(&self.uid) {
            *used = used.saturating_sub(self.bytes);
            if *used == 0 {
                reg.transport_shm.remove(&self.uid);
            }
        }
    }
}

/// Bytes a ring of `capacity` frames of `spec` maps (header included).
fn ring_size(capacity: u64, spec: &StreamSpec) -> Result<u64, WireError> {
    ring::ring_bytes(capacity, spec.frame_bytes())
        .map(|n| n as u64)
        .map_err(|e| err(ErrorKind::Invalid, e.to_string()))
}

/// The refusal of a ring that does not fit in its uid's shared-memory budget.
fn shm_refusal(mapped: u64, bytes: u64, limit: u64) -> WireError {
    err(
        ErrorKind::Quota,
        format!(
            "this uid's streams already map {} KiB of shared memory and this ring needs {} KiB \
             more (limit {} KiB, [limits] shm_bytes_per_uid); close streams or ask for less latency",
            mapped.div_ceil(1024),
            bytes.div_ceil(1024),
            limit / 1024
        ),
    )
}

fn next_stream(reg: &mut Registry) -> StreamId {
    let id = reg.next_stream;
    reg.next_stream = reg.next_stream.wrapping_add(1).max(1);
    id
}

fn describe(action: Action, object: &Object<'_>) -> String {
    match object {
        Object::Source { name, .. } => format!("recording from {name}"),
        Object::Sink { name } => format!("{} on {name}", action.name()),
        Object::Stream { .. } => format!("{} on that stream", action.name()),
        Object::Server => action.name().to_string(),
    }
}

fn check_name(name: &str) -> Result<(), WireError> {
    if name.len() > MAX_NAME {
        return Err(err(
            ErrorKind::Invalid,
            format!("stream name longer than {MAX_NAME} bytes"),
        ));
    }
    Ok(())
}

fn check_volume(v: f32) -> Result<(), WireError> {
    if !v.is_finite() || !(0.0..=MAX_VOLUME).contains(&v) {
        return Err(err(
            ErrorKind::Invalid,
            format!("volume {v} is outside 0.0..={MAX_VOLUME}"),
        ));
    }
    Ok(())
}

fn stream_info(id: StreamId, s: &StreamEntry) -> StreamInfo {
    StreamInfo {
        id,
        client: s.owner,
        name: s.name.clone(),
        direction: s.direction,
        device: s.device.clone(),
        spec: s.spec,
        volume: s.shared.volume(),
        muted: s.shared.muted(),
        corked: s.shared.corked(),
        underruns: s.shared.underruns(),
        frames: s.shared.frames(),
        peak: s.shared.peak(),
        capacity_frames: s.capacity,
        exclusive: s.exclusive,
    }
}

#[cfg(test)]
mod log_budget_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_a_trickle_with_the_suppressed_count() {
        let mut b = LogBudget::new();
        let t0 = b.at;
        let allowed = (0..1000).filter(|_| b.take(t0).is_some()).count();
        assert_eq!(allowed, LOG_BURST as usize);
        assert_eq!(b.take(t0 + Duration::from_secs(1)), Some(1000 - 20));
        assert_eq!(b.take(t0 + Duration::from_secs(1)), None);
    }
}
