//! The blocking client library: connect, play, record.
//!
//! ```no_run
//! use soundgate_proto::client::{server_path, Client, PlaybackOptions};
//! use soundgate_proto::{SampleFormat, StreamSpec};
//! let client = Client::connect(&server_path(None), "demo")?;
//! let spec = StreamSpec { format: SampleFormat::S16Le, rate: 44_100, channels: 2 };
//! let mut stream = client.playback(PlaybackOptions::new("demo", spec))?;
//! stream.write(&[0u8; 4 * 441])?; // 10 ms of silence; resampled to the sink's rate
//! stream.drain()?;
//! stream.close()?;
//! # Ok::<(), soundgate_proto::client::ClientError>(())
//! ```
//!
//! The server mixes only at the device's rate, so the library converts: a stream's ring carries
//! the caller's format and channels at the device's rate, or f32 when it has to resample.
//! Writing blocks while the ring is full: the library sleeps on the header's futex word
//! ([`crate::futex`]) with a timeout predicting when half the ring will be free (the engine
//! consumes at the device's rate, [`ring::playback_wake_plan`]), and asks, in the ring header,
//! to be woken by the server only as a safety net if the fill drops a quantum further first,
//! so the server normally makes no wake-up syscall for it. A stream that is not consumed
//! (corked, device stopped) asks to be woken once half the ring is free instead. Reading sleeps on the record
//! ring's futex word for a quarter of the latency the reader asked for, then looks (its own
//! timer); the server wakes it early only when a quarter of the ring filled. Waits are sliced
//! ([`WAIT_SLICE`]): between slices the library reads its connection without blocking, so a
//! dead server or an ended stream is noticed. Neither busy-loops.
//!
//! A [`Client`] is a cheap handle (clone it freely); its streams share the connection.

use crate::convert;
use crate::format::{SampleFormat, SpecError, StreamSpec};
use crate::futex;
use crate::resample::{ResampleError, Resampler};
use crate::ring::{self, Ring, RingError};
use crate::shm::{self, Mapping, ShmError};
use crate::sock::{recv_buffer, SeqPacket, SockError};
use crate::wire::{
    self, ClientId, ClientMsg, CodecError, DeviceInfo, ErrorKind, Event, Reply, Request,
    ServerInfo, ServerMsg, StreamId, StreamInfo, WireError, PROTOCOL_VERSION,
};
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where the system daemon listens.
pub const DEFAULT_SERVER: &str = "/run/soundgate/native";
/// Environment variable naming the server socket.
pub const SERVER_ENV: &str = "SOUNDGATE_SERVER";
/// Longest single futex sleep; between slices the connection is checked (events, hang-up).
pub const WAIT_SLICE: Duration = Duration::from_millis(100);

/// The server socket: `explicit` (a `--server` flag), else `$SOUNDGATE_SERVER`, else
/// [`DEFAULT_SERVER`].
pub fn server_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os(SERVER_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_SERVER),
    }
}

/// Everything that can go wrong in the client library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to soundgate at {}: {source}", path.display())]
    Connect { path: PathBuf, source: SockError },
    /// The server refused the request.
    #[error("{0}")]
    Server(WireError),
    /// The connection failed.
    #[error("connection to soundgate: {0}")]
    Sock(#[from] SockError),
    /// A message could not be encoded or decoded.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// The server said something the library did not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Creating or mapping shared memory failed.
    #[error("{0}")]
    Shm(#[from] ShmError),
    /// The ring was misused or the server broke its protocol.
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    /// Resampling failed.
    #[error("resampling: {0}")]
    Resample(#[from] ResampleError),
    /// The requested stream format is out of range.
    #[error("{0}")]
    Spec(#[from] SpecError),
    /// An invalid argument to the library.
    #[error("{0}")]
    Invalid(String),
    /// A system call failed.
    #[error("{op}: {errno}")]
    Sys {
        op: &'static str,
        errno: nix::errno::Errno,
    },
}

impl ClientError {
    /// The server's error kind, when the server refused something.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Server(e) => Some(e.kind),
            _ => None,
        }
    }
}

/// Called with the prompt id when a request waits for the user's consent.
type PendingHook = Box<dyn Fn(u64) + Send>;

struct Conn {
    sock: SeqPacket,
    next_id: u32,
    events: VecDeque<Event>,
    buf: Vec<u8>,
    on_pending: Option<PendingHook>,
}

impl Conn {
    fn dispatch(&mut self, msg: ServerMsg) -> Option<(u32, Result<Reply, WireError>)> {
        match msg {
            ServerMsg::Event(ev) => {
                // Bound what we keep for a caller that never looks.
                if self.events.len() >= 1024 {
                    self.events.pop_front();
                }
                self.events.push_back(ev);
                None
            }
            ServerMsg::Reply { id, result } => Some((id, result)),
        }
    }

    fn call(
        &mut self,
        req: Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Reply, Vec<OwnedFd>), ClientError> {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let id = self.next_id;
        let bytes = wire::encode(&ClientMsg { id, req })?;
        if let Err(e) = self.sock.send(&bytes, fds) {
            return Err(self.refusal().map_or(e.into(), ClientError::Server));
        }
        loop {
            let got = match self.sock.recv(&mut self.buf) {
                Ok(got) => got,
                Err(e) => return Err(self.refusal().map_or(e.into(), ClientError::Server)),
            };
            let msg: ServerMsg = wire::decode(&self.buf[..got.len])?;
            if let ServerMsg::Event(Event::PermissionPending { request, prompt }) = &msg {
                if *request == id {
                    if let Some(hook) = &self.on_pending {
                        hook(*prompt);
                    }
                    continue;
                }
            }
            if let Some((rid, result)) = self.dispatch(msg) {
                // Id 0: the server refused the connection or a datagram it could not read,
                // and hangs up; its reason is the answer.
                if let (0, Err(e)) = (rid, &result) {
                    return Err(ClientError::Server(e.clone()));
                }
                if rid != id {
                    return Err(ClientError::Protocol(format!(
                        "reply to {rid} while waiting for {id}"
                    )));
                }
                return match result {
                    Ok(reply) => Ok((reply, got.fds)),
                    Err(e) => Err(ClientError::Server(e)),
                };
            }
        }
    }

    /// After a failed send or receive: the reason a server that refused us (at accept) sent
    /// before hanging up, if it is still queued. (A reset is reported before queued data; the
    /// next read returns the data.)
    fn refusal(&mut self) -> Option<WireError> {
        let got = self.sock.try_recv(&mut self.buf).ok()?;
        match wire::decode::<ServerMsg>(&self.buf[..got.len]).ok()? {
            ServerMsg::Reply {
                id: 0,
                result: Err(reason),
            } => Some(reason),
            _ => None,
        }
    }

    /// Reads whatever events are queued without blocking.
    fn pump(&mut self) -> Result<(), ClientError> {
        loop {
            match self.sock.try_recv(&mut self.buf) {
                Ok(got) => {
                    let msg: ServerMsg = wire::decode(&self.buf[..got.len])?;
                    if let Some((id, _)) = self.dispatch(msg) {
                        return Err(ClientError::Protocol(format!("unexpected reply {id}")));
                    }
                }
                Err(SockError::WouldBlock) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Fails if the server has ended `stream`.
    fn check_stream(&mut self, stream: StreamId) -> Result<(), ClientError> {
        // An end event read just before the server hung up (as when it shuts down) is the
        // better reason: report it rather than the closed connection.
        let pumped = self.pump();
        let ended = self
            .events
            .iter()
            .position(|e| matches!(e, Event::StreamEnded { stream: s, .. } if *s == stream));
        if let Some(i) = ended {
            if let Some(Event::StreamEnded { error, .. }) = self.events.remove(i) {
                return Err(ClientError::Server(error));
            }
        }
        pumped
    }
}

/// A connection to the server.
#[derive(Clone)]
pub struct Client {
    conn: Arc<Mutex<Conn>>,
    id: ClientId,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("id", &self.id).finish()
    }
}

impl Client {
    /// Connects and shakes hands. `name` is a label the server shows, never an identity.
    pub fn connect(path: &Path, name: &str) -> Result<Client, ClientError> {
        let sock = SeqPacket::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let mut conn = Conn {
            sock,
            next_id: 0,
            events: VecDeque::new(),
            buf: recv_buffer(),
            on_pending: None,
        };
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            name: name.to_string(),
        };
        let (reply, _) = conn.call(hello, &[])?;
        let Reply::Hello { client, .. } = reply else {
            return Err(ClientError::Protocol(format!(
                "unexpected handshake reply {reply:?}"
            )));
        };
        Ok(Client {
            conn: Arc::new(Mutex::new(conn)),
            id: client,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // A panic while holding the lock leaves the connection usable: the protocol state lives
        // in the kernel's datagram boundaries, not in the guarded struct.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `hook` with the prompt id whenever a request of this client waits for a user's
    /// consent (the reply then comes once the prompt is answered or times out).
    pub fn on_permission_pending(&self, hook: impl Fn(u64) + Send + 'static) {
        self.lock().on_pending = Some(Box::new(hook));
    }

    /// The id the server gave this connection.
    pub fn client_id(&self) -> ClientId {
        self.id
    }

    /// Sends any request with `fds`; returns the reply and the fds it carried.
    pub fn request(
        &self,
        req: Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Reply, Vec<OwnedFd>), ClientError> {
        self.lock().call(req, fds)
    }

    /// Sends raw bytes as one datagram (for tests of the server's input checks).
    pub fn send_raw(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ClientError> {
        Ok(self.lock().sock.send(bytes, fds)?)
    }

    /// Events received so far (underruns, ended streams), oldest first.
    pub fn take_events(&self) -> Result<Vec<Event>, ClientError> {
        let mut conn = self.lock();
        conn.pump()?;
        Ok(conn.events.drain(..).collect())
    }

    fn call_ok(&self, req: Request) -> Result<Reply, ClientError> {
        Ok(self.request(req, &[])?.0)
    }

    /// Server name, version and defaults.
    pub fn server_info(&self) -> Result<ServerInfo, ClientError> {
        match self.call_ok(Request::ServerInfo)? {
            Reply::ServerInfo(i) => Ok(i),
            r => Err(unexpected(&r)),
        }
    }

    /// Sinks this client may play to.
    pub fn sinks(&self) -> Result<Vec<DeviceInfo>, ClientError> {
        match self.call_ok(Request::ListSinks)? {
            Reply::Sinks(v) => Ok(v),
            r => Err(unexpected(&r)),
        }
    }

    /// Sources this client may record from (or ask to).
    pub fn sources(&self) -> Result<Vec<DeviceInfo>, ClientError> {
        match self.call_ok(Request::ListSources)? {
            Reply::Sources(v) => Ok(v),
            r => Err(unexpected(&r)),
        }
    }

    /// This client's streams.
    pub fn streams(&self) -> Result<Vec<StreamInfo>, ClientError> {
        match self.call_ok(Request::ListStreams)? {
            Reply::Streams(v) => Ok(v),
            r => Err(unexpected(&r)),
        }
    }

    /// One stream's state and counters.
    pub fn stream_info(&self, stream: StreamId) -> Result<StreamInfo, ClientError> {
        match self.call_ok(Request::StreamInfo { stream })? {
            Reply::Stream(s) => Ok(s),
            r => Err(unexpected(&r)),
        }
    }

    fn device(
        &self,
        list: Vec<DeviceInfo>,
        name: Option<&str>,
        fallback: Option<String>,
        what: &str,
    ) -> Result<Option<DeviceInfo>, ClientError> {
        let wanted = match name {
            Some(n) => Some(n.to_string()),
            None => fallback,
        };
        let Some(wanted) = wanted else {
            return Err(ClientError::Server(WireError::new(
                ErrorKind::NotFound,
                format!("the server has no default {what}; name one"),
            )));
        };
        Ok(list.into_iter().find(|d| d.name == wanted))
    }

    /// Creates a playback stream. The library creates, sizes and seals the ring's memfd.
    pub fn playback(&self, opts: PlaybackOptions) -> Result<Playback, ClientError> {
        opts.spec.validate()?;
        let info = self.server_info()?;
        let sink = self
            .device(
                self.sinks()?,
                opts.device.as_deref(),
                info.default_sink,
                "sink",
            )?
            .ok_or_else(|| {
                ClientError::Server(WireError::new(
                    ErrorKind::NotFound,
                    format!("no sink named {}", opts.device.as_deref().unwrap_or("?")),
                ))
            })?;
        let resampler = if opts.spec.rate == sink.spec.rate {
            None
        } else {
            Some(Resampler::new(
                opts.spec.rate,
                sink.spec.rate,
                opts.spec.channels.into(),
            )?)
        };
        let ring_spec = StreamSpec {
            format: if resampler.is_some() {
                SampleFormat::F32Le
            } else {
                opts.spec.format
            },
            rate: sink.spec.rate,
            channels: opts.spec.channels,
        };
        let quantum = u64::from(sink.quantum.max(1));
        let capacity = ring_spec.frames_for_ms(opts.latency_ms).max(3 * quantum);
        let size = ring::ring_bytes(capacity, ring_spec.frame_bytes())?;
        let memfd = shm::create_sealed("soundgate-play", size)?;
        let ring = Ring::init(
            Mapping::new(memfd.as_fd(), size, true)?,
            capacity,
            ring_spec.frame_bytes(),
        )?;
        let req = Request::CreatePlayback {
            name: opts.name.clone(),
            sink: Some(sink.name.clone()),
            spec: ring_spec,
            capacity_frames: capacity,
            volume: opts.volume,
            muted: opts.muted,
            corked: opts.corked,
            exclusive: opts.exclusive,
        };
        let (reply, _) = self.request(req, &[memfd.as_fd()])?;
        let Reply::StreamCreated { stream, .. } = reply else {
            return Err(unexpected(&reply));
        };
        Ok(Playback {
            client: self.clone(),
            id: stream,
            ring,
            input: opts.spec,
            ring_spec,
            resampler,
            written: 0,
            f32_buf: Vec::new(),
            resampled: Vec::new(),
            bytes: Vec::new(),
            device: sink.name,
            quantum,
            slept_at: None,
        })
    }

    /// Creates a record stream. The server creates the ring; this side maps it read-only.
    pub fn record(&self, opts: RecordOptions) -> Result<Record, ClientError> {
        opts.spec.validate()?;
        let info = self.server_info()?;
        let source = self.device(
            self.sources()?,
            opts.device.as_deref(),
            info.default_source,
            "source",
        )?;
        let name = opts
            .device
            .clone()
            .or_else(|| source.as_ref().map(|s| s.name.clone()));
        // A source we cannot see is still asked for, at the wanted rate: the server's policy
        // then answers (permission denied, or not found) rather than the library guessing.
        let device_rate = source.as_ref().map_or(opts.spec.rate, |s| s.spec.rate);
        let quantum = source
            .as_ref()
            .map_or(1024, |s| u64::from(s.quantum.max(1)));
        let resampler = if opts.spec.rate == device_rate {
            None
        } else {
            Some(Resampler::new(
                device_rate,
                opts.spec.rate,
                opts.spec.channels.into(),
            )?)
        };
        let ring_spec = StreamSpec {
            format: if resampler.is_some() {
                SampleFormat::F32Le
            } else {
                opts.spec.format
            },
            rate: device_rate,
            channels: opts.spec.channels,
        };
        let capacity = ring_spec
            .frames_for_ms(opts.latency_ms.max(1000) * 2)
            .max(4 * quantum);
        let req = Request::CreateRecord {
            name: opts.name.clone(),
            source: name,
            spec: ring_spec,
            capacity_frames: capacity,
        };
        let (reply, mut fds) = self.request(req, &[])?;
        let Reply::StreamCreated {
            stream,
            capacity_frames,
            ..
        } = reply
        else {
            return Err(unexpected(&reply));
        };
        if fds.len() != 1 {
            return Err(ClientError::Protocol(format!(
                "record reply carried {} fds, expected 1",
                fds.len()
            )));
        }
        let memfd = fds
            .pop()
            .ok_or_else(|| ClientError::Protocol("missing memfd".into()))?;
        let size = ring::ring_bytes(capacity_frames, ring_spec.frame_bytes())?;
        // The server is not trusted either: a memfd shorter than the geometry it claims (or one
        // it could still shrink) would fault (SIGBUS) on the first read past its end.
        shm::verify_sealed(memfd.as_fd(), size)?;
        let ring = Ring::attach(
            Mapping::new(memfd.as_fd(), size, false)?,
            capacity_frames,
            ring_spec.frame_bytes(),
        )?;
        Ok(Record {
            client: self.clone(),
            id: stream,
            ring,
            memfd,
            wanted: opts.spec,
            ring_spec,
            resampler,
            read: 0,
            last_write: 0,
            overruns: 0,
            raw: Vec::new(),
            f32_buf: Vec::new(),
            resampled: Vec::new(),
            period: record_period(opts.latency_ms),
        })
    }
}

/// How often a reader waiting in [`Record::read`] looks at its ring on its own timer: a
/// quarter of the latency it asked for (5 ms to [`WAIT_SLICE`]). The ring is far larger (at
/// least 2 s), and the server wakes a reader only per quarter of it
/// ([`ring::record_wake_every`]), so without this timer a reader would get its audio in
/// half-second lumps.
fn record_period(latency_ms: u32) -> Duration {
    Duration::from_millis(u64::from(latency_ms / 4)).clamp(Duration::from_millis(5), WAIT_SLICE)
}

fn unexpected(r: &Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {r:?}"))
}

/// Sleeps on `ring`'s futex word while it still holds `seq`, for at most `timeout` (capped at
/// [`WAIT_SLICE`]). The caller loads `seq` before checking its condition and re-checks after.
fn sleep_on(ring: &Ring, seq: u32, timeout: Duration) {
    // Every outcome (woken, changed, timed out, interrupted) sends the caller back to its
    // condition and its connection check.
    let _ = futex::wait(ring.wake_word(), seq, timeout.min(WAIT_SLICE));
}

/// Options for [`Client::playback`].
#[derive(Debug, Clone)]
pub struct PlaybackOptions {
    /// A label for the stream.
    pub name: String,
    /// Sink name; `None` = the server's default.
    pub device: Option<String>,
    /// What the caller will write (any rate; the library converts).
    pub spec: StreamSpec,
    /// Buffering between the caller and the device.
    pub latency_ms: u32,
    /// Linear volume, 0.0..=4.0.
    pub volume: f32,
    /// Start muted.
    pub muted: bool,
    /// Start corked (paused).
    pub corked: bool,
    /// Ask for exclusive (passthrough) use of the sink; needs a grant.
    pub exclusive: bool,
}

impl PlaybackOptions {
    /// Defaults: default sink, 100 ms, full volume.
    pub fn new(name: &str, spec: StreamSpec) -> PlaybackOptions {
        PlaybackOptions {
            name: name.to_string(),
            device: None,
            spec,
            latency_ms: 100,
            volume: 1.0,
            muted: false,
            corked: false,
            exclusive: false,
        }
    }
}

/// A playback stream.
#[derive(Debug)]
pub struct Playback {
    client: Client,
    id: StreamId,
    ring: Ring,
    input: StreamSpec,
    ring_spec: StreamSpec,
    resampler: Option<Resampler>,
    written: u64,
    f32_buf: Vec<f32>,
    resampled: Vec<f32>,
    bytes: Vec<u8>,
    device: String,
    /// The sink's quantum: frames the engine consumes per cycle (for [`ring::playback_wake_plan`]).
    quantum: u64,
    /// The server's read index when the last full-ring sleep began: unchanged at the next one
    /// means the stream is not being consumed (corked, device stopped).
    slept_at: Option<u64>,
}

impl Playback {
    /// The server's id for this stream.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// What travels over the ring (the sink's rate).
    pub fn ring_spec(&self) -> StreamSpec {
        self.ring_spec
    }

    /// The sink this stream plays to.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Writes whole frames in the format given at creation. Converts and resamples as needed,
    /// and blocks while the ring is full.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        let fb = self.input.frame_bytes();
        if !data.len().is_multiple_of(fb) {
            return Err(ClientError::Invalid(format!(
                "{} bytes is not a whole number of {fb}-byte frames",
                data.len()
            )));
        }
        match self.resampler.as_mut() {
            None => {
                // Same rate: the ring carries the caller's bytes unchanged.
                let bytes = std::mem::take(&mut self.bytes);
                let r = self.push(data);
                self.bytes = bytes;
                r
            }
            Some(rs) => {
                self.f32_buf
                    .resize(data.len() / self.input.format.bytes(), 0.0);
                convert::decode_into(self.input.format, data, &mut self.f32_buf);
                self.resampled.clear();
                rs.process(&self.f32_buf, &mut self.resampled)?;
                self.push_f32()
            }
        }
    }

    fn push_f32(&mut self) -> Result<(), ClientError> {
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.resize(self.resampled.len() * 4, 0);
        convert::encode_into(SampleFormat::F32Le, &self.resampled, &mut bytes);
        let r = self.push(&bytes);
        self.bytes = bytes;
        r
    }

    /// Copies ring-format bytes into the ring, waiting for room.
    fn push(&mut self, mut data: &[u8]) -> Result<(), ClientError> {
        let fb = self.ring_spec.frame_bytes();
        let cap = self.ring.capacity();
        while !data.is_empty() {
            let seq = self.ring.wake_seq();
            let free = cap - self.filled()?;
            if free == 0 {
                // Sleep until half the ring is free (the ring still holds the other half, so
                // this costs no latency), whatever the caller's chunk size. The engine
                // consumes at the device rate, so a timed wait predicts that moment and the
                // server's wake-up is armed only as a safety net a quantum lower: normally
                // the server makes no syscall for this stream at all. A stream that was not
                // consumed during the last sleep (corked, device stopped) cannot be
                // predicted: it asks the server to wake it at half the ring instead.
                let read = self.ring.load_read();
                let plan = ring::playback_wake_plan(cap, self.quantum, cap, self.ring_spec.rate);
                let stalled = self.slept_at == Some(read);
                let (below, sleep) = if stalled || plan.sleep.is_zero() {
                    (cap - (cap / 2).max(1) + 1, WAIT_SLICE)
                } else {
                    (plan.wake_below, plan.sleep)
                };
                self.ring.arm_wake(below)?;
                // Re-check after arming (the server may have consumed, or passed the level,
                // before it saw the flag): any room is written first, and the plan is made
                // again from a full ring. Then sleep on the sequence loaded before.
                if self.filled()? < cap {
                    self.ring.disarm_wake()?;
                    continue;
                }
                self.client.lock().check_stream(self.id)?;
                self.slept_at = Some(read);
                sleep_on(&self.ring, seq, sleep);
                // Woken by the timer (or the server, which then already cleared the flag):
                // withdraw the request so the server never wakes a client that is not asleep.
                self.ring.disarm_wake()?;
                continue;
            }
            let frames = free.min((data.len() / fb) as u64);
            let (now, rest) = data.split_at(frames as usize * fb);
            self.ring.copy_in(self.written, now)?;
            self.written += frames;
            self.ring.store_write(self.written)?;
            data = rest;
        }
        Ok(())
    }

    /// Frames written and not yet consumed by the server.
    fn filled(&self) -> Result<u64, ClientError> {
        ring::readable(self.written, self.ring.load_read(), self.ring.capacity())
            .map_err(|_| ClientError::Protocol("server published an impossible read index".into()))
    }

    /// Flushes the resampler, tells the server the end is coming, and waits until every frame
    /// has been consumed by the device.
    pub fn drain(&mut self) -> Result<(), ClientError> {
        if let Some(rs) = self.resampler.as_mut() {
            self.resampled.clear();
            rs.finish(&mut self.resampled)?;
            self.push_f32()?;
        }
        self.client.call_ok(Request::Drain { stream: self.id })?;
        let deadline_per_frame = Duration::from_secs(2);
        let mut last = (self.ring.load_read(), Instant::now());
        while self.ring.load_read() != self.written {
            let seq = self.ring.wake_seq();
            // Wake me when the ring is empty.
            self.ring.arm_wake(1)?;
            if self.ring.load_read() == self.written {
                self.ring.disarm_wake()?;
                break;
            }
            self.client.lock().check_stream(self.id)?;
            sleep_on(&self.ring, seq, WAIT_SLICE);
            let read = self.ring.load_read();
            if read != last.0 {
                last = (read, Instant::now());
            } else if last.1.elapsed() > deadline_per_frame {
                let info = self.client.stream_info(self.id)?;
                if info.corked {
                    return Err(ClientError::Invalid("cannot drain a corked stream".into()));
                }
                return Err(ClientError::Protocol(
                    "the server stopped consuming this stream".into(),
                ));
            }
        }
        Ok(())
    }

    /// Sets this stream's linear volume.
    pub fn set_volume(&self, volume: f32) -> Result<(), ClientError> {
        self.client
            .call_ok(Request::SetVolume {
                stream: self.id,
                volume,
            })
            .map(drop)
    }

    /// Mutes or unmutes.
    pub fn set_mute(&self, muted: bool) -> Result<(), ClientError> {
        self.client
            .call_ok(Request::SetMute {
                stream: self.id,
                muted,
            })
            .map(drop)
    }

    /// Pauses or resumes.
    pub fn cork(&self, corked: bool) -> Result<(), ClientError> {
        self.client
            .call_ok(Request::Cork {
                stream: self.id,
                corked,
            })
            .map(drop)
    }

    /// State and counters (underruns, frames played).
    pub fn info(&self) -> Result<StreamInfo, ClientError> {
        self.client.stream_info(self.id)
    }

    /// Deletes the stream.
    pub fn close(self) -> Result<(), ClientError> {
        self.client
            .call_ok(Request::DeleteStream { stream: self.id })
            .map(drop)
    }
}

/// Options for [`Client::record`].
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// A label for the stream.
    pub name: String,
    /// Source name (`speakers.monitor`, a capture device); `None` = the server's default.
    pub device: Option<String>,
    /// What the caller wants to read (any rate; the library converts).
    pub spec: StreamSpec,
    /// How much the server may buffer ahead of the reader.
    pub latency_ms: u32,
}

impl RecordOptions {
    /// Defaults: default source, 100 ms.
    pub fn new(name: &str, spec: StreamSpec) -> RecordOptions {
        RecordOptions {
            name: name.to_string(),
            device: None,
            spec,
            latency_ms: 100,
        }
    }
}

/// A record stream.
#[derive(Debug)]
pub struct Record {
    client: Client,
    id: StreamId,
    ring: Ring,
    memfd: OwnedFd,
    wanted: StreamSpec,
    ring_spec: StreamSpec,
    resampler: Option<Resampler>,
    read: u64,
    last_write: u64,
    overruns: u64,
    raw: Vec<u8>,
    f32_buf: Vec<f32>,
    resampled: Vec<f32>,
    /// The reader's own wake-up period ([`record_period`]).
    period: Duration,
}

impl Record {
    /// The server's id for this stream.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// What [`Record::read`] yields.
    pub fn spec(&self) -> StreamSpec {
        self.wanted
    }

    /// Times the reader fell more than a ring behind and lost audio.
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// The ring's memfd (read-only for this process).
    pub fn ring_fd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    /// Appends the frames the server has produced to `out`, in the wanted format. Waits up to
    /// `timeout` (forever if `None`) for at least one; returns the bytes appended (0 on timeout).
    pub fn read(
        &mut self,
        out: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<usize, ClientError> {
        let start = Instant::now();
        loop {
            let seq = self.ring.wake_seq();
            let got = self.read_available(out)?;
            if got > 0 {
                return Ok(got);
            }
            let left = match timeout {
                Some(t) => match t.checked_sub(start.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Ok(0),
                },
                None => Duration::from_millis(500),
            };
            self.client.lock().check_stream(self.id)?;
            sleep_on(&self.ring, seq, left.min(self.period));
        }
    }

    fn read_available(&mut self, out: &mut Vec<u8>) -> Result<usize, ClientError> {
        let cap = self.ring.capacity();
        let fb = self.ring_spec.frame_bytes();
        let write = self.ring.load_write();
        if write < self.last_write {
            return Err(ClientError::Protocol(
                "record ring's write index went backwards".into(),
            ));
        }
        self.last_write = write;
        let valid = ring::record_valid_from(write, cap);
        if self.read < valid {
            self.overruns += 1;
            self.read = valid;
        }
        let frames = write - self.read;
        if frames == 0 {
            return Ok(0);
        }
        self.raw.resize(frames as usize * fb, 0);
        self.ring.copy_out(self.read, &mut self.raw)?;
        // The writer may have lapped us while we copied: drop what it overwrote.
        let valid_after = ring::record_valid_from(self.ring.load_write(), cap);
        let mut skip = 0usize;
        if valid_after > self.read {
            self.overruns += 1;
            skip = ((valid_after - self.read).min(frames) as usize) * fb;
        }
        self.read = write;
        let raw = &self.raw[skip..];
        let before = out.len();
        match self.resampler.as_mut() {
            None if self.ring_spec.format == self.wanted.format => out.extend_from_slice(raw),
            None => {
                self.f32_buf
                    .resize(raw.len() / self.ring_spec.format.bytes(), 0.0);
                convert::decode_into(self.ring_spec.format, raw, &mut self.f32_buf);
                append_encoded(self.wanted.format, &self.f32_buf, out);
            }
            Some(rs) => {
                self.f32_buf.resize(raw.len() / 4, 0.0);
                convert::decode_into(SampleFormat::F32Le, raw, &mut self.f32_buf);
                self.resampled.clear();
                rs.process(&self.f32_buf, &mut self.resampled)?;
                append_encoded(self.wanted.format, &self.resampled, out);
            }
        }
        Ok(out.len() - before)
    }

    /// Deletes the stream.
    pub fn close(self) -> Result<(), ClientError> {
        self.client
            .call_ok(Request::DeleteStream { stream: self.id })
            .map(drop)
    }
}

fn append_encoded(format: SampleFormat, samples: &[f32], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + samples.len() * format.bytes(), 0);
    convert::encode_into(format, samples, &mut out[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_path_precedence() {
        assert_eq!(
            server_path(Some(Path::new("/x/native"))),
            PathBuf::from("/x/native")
        );
        // The environment is process-global; only read it here.
        let expected = match std::env::var_os(SERVER_ENV) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from(DEFAULT_SERVER),
        };
        assert_eq!(server_path(None), expected);
    }

    #[test]
    fn connect_error_names_the_path() {
        let err = Client::connect(Path::new("/nonexistent/soundgate/native"), "t").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/soundgate/native"), "{text}");
        assert_eq!(err.kind(), None);
    }
}
