//! Transport: listeners and per-connection tasks. Decodes datagrams into core requests and
//! encodes replies and events; holds no object state and makes no access decision.
//!
//! Per connection: the first message must be `Hello` with our protocol version; after that one
//! request is handled at a time (so at most one is pending per connection; the kernel's socket
//! buffer bounds what a client can queue). A malformed, oversized or fd-overloaded datagram gets
//! a `protocol` error reply and ends that connection; nothing a client sends can reach another
//! client's task.
//!
//! What a connection may cost the daemon is bounded (see [`budget`] and [`Settings`]):
//! - each accepted socket is admitted to a [`Budget`] under its socket's [`Class`] (apps, or
//!   the admin socket's own budget) and charged to its uid; connections that have not finished
//!   the handshake are capped per uid and in total, the oldest shed first, and a uid at its fd
//!   budget gets no more connections;
//! - the handshake (identity lookup and `Hello`) has a deadline; the identity lookup, which
//!   reads `/proc` through the peer's mount namespace, runs on a blocking thread with its own
//!   timeout, and a peer whose lookup does not finish is refused;
//! - after `Hello`, requests are paced by a token bucket; a client over its rate is slowed,
//!   and one that stays over it is disconnected with a logged reason;
//! - when `accept` fails for want of fds (`EMFILE`/`ENFILE`), the loop sheds the oldest
//!   unauthenticated connections and backs off instead of spinning;
//! - log lines a client can trigger are rate limited ([`crate::ratelimit::LogLimit`]);
//! - a connection task that ends for any reason, a panic included, disconnects its client
//!   from the core (a drop guard).

pub mod budget;
pub mod pulse;

use crate::config::Limits;
use crate::core::{Core, Handled, Outcome, Parked, EVENT_QUEUE};
use crate::identity::{self, Identity, IdentityError};
use crate::ratelimit::{LogLimit, Pace, TokenBucket};
pub use budget::{Budget, BudgetLimits, Class, Ticket};
use nix::errno::Errno;
use soundgate_proto::sock::{self, recv_buffer, AsyncSeqPacket, SeqPacketListener, SockError};
use soundgate_proto::wire::{
    self, ClientId, ClientMsg, ErrorKind, Event, Reply, Request, ServerMsg, WireError,
    PROTOCOL_VERSION,
};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Refusals of connections and requests (budgets, identity, admin check, rate limit).
static REFUSALS: LogLimit = LogLimit::new(20, Duration::from_secs(10));
/// Malformed or oversized datagrams, bad handshakes.
static BAD_INPUT: LogLimit = LogLimit::new(20, Duration::from_secs(10));
/// `accept` failures.
static ACCEPT_ERRORS: LogLimit = LogLimit::new(5, Duration::from_secs(10));

/// First pause of the accept loop after `EMFILE`; doubled while it persists.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause of the accept loop.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Unauthenticated connections shed each time `accept` finds the fd table full.
const SHED_ON_EMFILE: usize = 16;
/// Longest an identity lookup may take (less if the handshake deadline is shorter).
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(2);

/// TEST ONLY: `SOUNDGATED_TEST_IDENTITY_DELAY=UID:MS` makes every identity lookup of a peer
/// with that uid sleep MS milliseconds first, standing in for a `/proc` read that hangs on a
/// FUSE mount (the end-to-end suite uses it; it can only make the daemon refuse that uid).
pub const TEST_IDENTITY_DELAY: &str = "SOUNDGATED_TEST_IDENTITY_DELAY";

fn test_identity_delay(uid: u32) -> Option<Duration> {
    static PARSED: OnceLock<Option<(u32, Duration)>> = OnceLock::new();
    let (u, d) = (*PARSED.get_or_init(|| {
        let v = std::env::var(TEST_IDENTITY_DELAY).ok()?;
        let (u, ms) = v.split_once(':')?;
        Some((u.parse().ok()?, Duration::from_millis(ms.parse().ok()?)))
    }))?;
    (u == uid).then_some(d)
}

/// Per-connection settings, from the config's `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// From accept to a completed `Hello`.
    pub handshake: Duration,
    /// For the identity lookup alone.
    pub identity_timeout: Duration,
    /// Requests per second a connection may make on average.
    pub requests_per_second: u32,
    /// Requests it may make at once above that.
    pub request_burst: u32,
    /// How long it may stay over its rate (slowed) before it is disconnected.
    pub throttle_disconnect: Duration,
}

impl Settings {
    /// The settings `[limits]` gives.
    pub fn from_limits(l: &Limits) -> Settings {
        let handshake = Duration::from_millis(u64::from(l.handshake_timeout_ms));
        Settings {
            handshake,
            identity_timeout: IDENTITY_TIMEOUT.min(handshake),
            requests_per_second: l.requests_per_second,
            request_burst: l.request_burst,
            throttle_disconnect: Duration::from_millis(u64::from(l.throttle_disconnect_ms)),
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::from_limits(&Limits::default())
    }
}

/// Errors setting up a listener.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Another daemon answers on the socket.
    #[error("another soundgated is already listening on {0}")]
    InUse(PathBuf),
    /// Filesystem trouble around the socket.
    #[error("{what} {path}: {source}")]
    Fs {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Binding or listening failed.
    #[error("listening on {path}: {source}")]
    Listen { path: PathBuf, source: SockError },
}

/// Binds a seqpacket socket at `path` with permission bits `mode`, replacing a stale socket
/// file left by a daemon that died, but never one a live daemon answers on.
pub fn bind(path: &Path, mode: u32) -> Result<SeqPacketListener, TransportError> {
    if path.exists() {
        if sock::SeqPacket::connect(path).is_ok() {
            return Err(TransportError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(|source| TransportError::Fs {
            what: "removing stale socket",
            path: path.to_path_buf(),
            source,
        })?;
    }
    let listener = SeqPacketListener::bind(path).map_err(|source| TransportError::Listen {
        path: path.to_path_buf(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        TransportError::Fs {
            what: "setting permissions of",
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(listener)
}

/// Which socket a connection came in on.
#[derive(Debug, Clone)]
pub enum Socket {
    /// Applications (mode 0666).
    Native,
    /// The privileged control plane: only peers [`Core::admit_admin`] admits.
    Admin(AdminAccess),
}

impl Socket {
    /// The budget its connections draw on.
    pub fn class(&self) -> Class {
        match self {
            Socket::Native => Class::App,
            Socket::Admin(_) => Class::Admin,
        }
    }
}

/// Who may use the admin socket; decided by the policy through [`Core::admit_admin`].
pub use crate::core::AdminAccess;

/// Accepts connections forever, one task each, each admitted to `budget` first.
pub async fn serve(
    core: Arc<Core>,
    listener: SeqPacketListener,
    socket: Socket,
    budget: Budget,
    settings: Settings,
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        match listener.accept().await {
            Ok(conn) => {
                backoff = ACCEPT_BACKOFF_MIN;
                admit(&core, conn, &socket, &budget, &settings);
            }
            Err(SockError::Sys {
                errno: errno @ (Errno::EMFILE | Errno::ENFILE),
                ..
            }) => {
                // Out of fds: make room by dropping the oldest connections that have not
                // said Hello, and give their tasks a moment to close them.
                let shed = budget.shed_oldest(SHED_ON_EMFILE);
                if let Some(suppressed) = ACCEPT_ERRORS.allow() {
                    tracing::warn!(
                        suppressed,
                        shed,
                        "accept: {errno}; shed {shed} connections that had not said Hello, \
                         retrying in {backoff:?}"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
            Err(e) => {
                if let Some(suppressed) = ACCEPT_ERRORS.allow() {
                    tracing::warn!(suppressed, "accept: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Charges a new connection to its uid's budget and starts its task, or refuses it at once.
fn admit(
    core: &Arc<Core>,
    conn: AsyncSeqPacket,
    socket: &Socket,
    budget: &Budget,
    settings: &Settings,
) {
    let uid = match identity::peer_uid(conn.as_fd()) {
        Ok(uid) => uid,
        Err(e) => {
            if let Some(suppressed) = REFUSALS.allow() {
                tracing::warn!(suppressed, "refusing a connection: {e}");
            }
            return;
        }
    };
    match budget.admit(socket.class(), uid) {
        Ok((ticket, shed)) => {
            if shed > 0 {
                if let Some(suppressed) = REFUSALS.allow() {
                    tracing::warn!(
                        uid,
                        shed,
                        suppressed,
                        "too many connections waiting for their handshake: shed the oldest"
                    );
                }
            }
            let core = Arc::clone(core);
            let socket = socket.clone();
            let settings = settings.clone();
            tokio::spawn(
                async move { serve_connection(core, conn, socket, ticket, settings).await },
            );
        }
        Err(e) => {
            if let Some(suppressed) = REFUSALS.allow() {
                tracing::warn!(uid, suppressed, "refusing a connection: {e}");
            }
            refuse_now(&conn, ErrorKind::Quota, &e.to_string());
        }
    }
}

/// Tells a peer why it is refused without waiting for anything: a reply if its socket has
/// room, and whatever it already sent is read (closing with unread data would reset the
/// connection, and the peer might see the reset before our reason).
fn refuse_now(conn: &AsyncSeqPacket, kind: ErrorKind, message: &str) {
    let msg = ServerMsg::Reply {
        id: 0,
        result: Err(WireError::new(kind, message)),
    };
    if let Ok(bytes) = wire::encode(&msg) {
        let _ = conn.try_send(&bytes, &[]);
    }
    let mut scratch = [0u8; 512];
    for _ in 0..4 {
        // Any fds that came along are closed as `Received` drops.
        if let Err(SockError::WouldBlock | SockError::Closed) = conn.try_recv(&mut scratch) {
            break;
        }
    }
}

async fn send(conn: &AsyncSeqPacket, msg: &ServerMsg, fds: &[OwnedFd]) -> Result<(), SockError> {
    let bytes = match wire::encode(msg) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("encoding a reply: {e}");
            let fallback = ServerMsg::Reply {
                id: 0,
                result: Err(WireError::new(ErrorKind::Internal, "reply too large")),
            };
            wire::encode(&fallback).unwrap_or_default()
        }
    };
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    conn.send(&bytes, &borrowed).await
}

async fn reply_error(conn: &AsyncSeqPacket, id: u32, kind: ErrorKind, message: String) {
    let msg = ServerMsg::Reply {
        id,
        result: Err(WireError::new(kind, message)),
    };
    let _ = send(conn, &msg, &[]).await;
}

/// Reads one datagram and decodes it; a bad one gets an error reply and `None` (hang up).
/// A request whose fds the kernel could not install (the daemon's fd table is full) gets a
/// `busy` reply and the next one is read: the client did nothing wrong.
async fn read_request(
    conn: &AsyncSeqPacket,
    buf: &mut [u8],
    peer: &str,
) -> Option<(ClientMsg, Vec<OwnedFd>)> {
    loop {
        match conn.recv(buf).await {
            Ok(got) if got.fds_lost => match wire::decode::<ClientMsg>(&buf[..got.len]) {
                Ok(msg) => {
                    if let Some(suppressed) = REFUSALS.allow() {
                        tracing::warn!(peer, suppressed, "out of fds: a request's fds were lost");
                    }
                    let why = "the server is out of file descriptors; try again".to_string();
                    reply_error(conn, msg.id, ErrorKind::Busy, why).await;
                }
                Err(_) => return None,
            },
            other => return decode_request(conn, buf, peer, other).await,
        }
    }
}

async fn decode_request(
    conn: &AsyncSeqPacket,
    buf: &mut [u8],
    peer: &str,
    got: Result<sock::Received, SockError>,
) -> Option<(ClientMsg, Vec<OwnedFd>)> {
    match got {
        Ok(got) => match wire::decode::<ClientMsg>(&buf[..got.len]) {
            Ok(msg) => Some((msg, got.fds)),
            Err(e) => {
                if let Some(suppressed) = BAD_INPUT.allow() {
                    tracing::warn!(peer, suppressed, "malformed message: {e}");
                }
                reply_error(
                    conn,
                    0,
                    ErrorKind::Protocol,
                    format!("{e}; closing the connection"),
                )
                .await;
                None
            }
        },
        Err(SockError::Closed) => None,
        Err(e @ (SockError::TooLarge | SockError::TooManyFds)) => {
            if let Some(suppressed) = BAD_INPUT.allow() {
                tracing::warn!(peer, suppressed, "bad datagram: {e}");
            }
            reply_error(
                conn,
                0,
                ErrorKind::Protocol,
                format!("{e}; closing the connection"),
            )
            .await;
            None
        }
        Err(e) => {
            tracing::debug!(peer, "receive failed: {e}");
            None
        }
    }
}

/// Why a peer could not be identified in time.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LookupError {
    #[error(transparent)]
    Creds(#[from] IdentityError),
    #[error(transparent)]
    Budget(#[from] budget::Refused),
    #[error("identifying the peer took longer than {0:?}")]
    Timeout(Duration),
    #[error("the identity lookup failed")]
    Failed,
}

/// Identifies the peer: its credentials and pidfd here (cheap syscalls), the `/proc` and user
/// database reads on a blocking thread, bounded by `timeout`. A lookup that hangs is left to
/// finish on its thread (holding its uid's lookup slot) while the connection is refused.
/// The peer's pidfd, kept for the connection's life, is charged to its uid's fd budget.
pub(crate) async fn lookup_identity(
    conn: std::os::fd::BorrowedFd<'_>,
    ticket: &Ticket,
    timeout: Duration,
) -> Result<(Identity, Option<budget::FdCharge>), LookupError> {
    let creds = identity::peer_credentials(conn)?;
    let pidfd_charge = if creds.has_pidfd() {
        Some(ticket.charge_fds(1)?)
    } else {
        None
    };
    let work = async move {
        let permit = ticket.lookup().await;
        let delay = test_identity_delay(creds.uid);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if let Some(delay) = delay {
                std::thread::sleep(delay);
            }
            creds.resolve()
        })
        .await
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(identity)) => Ok((identity, pidfd_charge)),
        Ok(Err(_)) => Err(LookupError::Failed),
        Err(_) => Err(LookupError::Timeout(timeout)),
    }
}

/// A connection that has said Hello, before the core knows it.
struct Shook {
    identity: Identity,
    /// The identity's pidfd, charged to the uid while the connection lives.
    pidfd_charge: Option<budget::FdCharge>,
    name: String,
    hello_id: u32,
    admin_socket: bool,
    peer: String,
}

/// Identifies the peer, checks the admin socket's users, and reads `Hello`.
async fn handshake(
    core: &Core,
    conn: &AsyncSeqPacket,
    socket: &Socket,
    ticket: &Ticket,
    settings: &Settings,
    buf: &mut [u8],
) -> Option<Shook> {
    let (identity, pidfd_charge) =
        match lookup_identity(conn.as_fd(), ticket, settings.identity_timeout).await {
            Ok(i) => i,
            Err(e) => {
                if let Some(suppressed) = REFUSALS.allow() {
                    tracing::warn!(
                        uid = ticket.uid(),
                        suppressed,
                        "refusing a connection whose peer cannot be identified: {e}"
                    );
                }
                let msg = format!("cannot identify you: {e}");
                reply_error(conn, 0, ErrorKind::Denied, msg).await;
                return None;
            }
        };
    let admin = match socket {
        Socket::Native => false,
        Socket::Admin(_) => {
            if let Err(msg) = core.admit_admin(&identity) {
                if let Some(suppressed) = REFUSALS.allow() {
                    tracing::warn!(
                        pid = identity.pid,
                        uid = identity.uid,
                        suppressed,
                        "refused on the admin socket"
                    );
                }
                reply_error(conn, 0, ErrorKind::Denied, msg).await;
                // Read the peer's first message (its Hello) before hanging up: closing with
                // unread data would reset the connection, and the peer might see the reset
                // before our reason.
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.recv(buf)).await;
                return None;
            }
            true
        }
    };
    let peer = format!("pid {} uid {}", identity.pid, identity.uid);
    let (first, fds) = read_request(conn, buf, &peer).await?;
    let name = match first.req {
        Request::Hello { .. } if !fds.is_empty() => {
            drop(fds);
            let msg = "Hello carries no file descriptors".to_string();
            reply_error(conn, first.id, ErrorKind::Protocol, msg).await;
            return None;
        }
        Request::Hello { version, name } if version == PROTOCOL_VERSION => name,
        Request::Hello { version, .. } => {
            let msg = format!(
                "protocol version {version} is not supported (server speaks {PROTOCOL_VERSION})"
            );
            reply_error(conn, first.id, ErrorKind::Protocol, msg).await;
            return None;
        }
        _ => {
            let msg = "the first request must be Hello".to_string();
            reply_error(conn, first.id, ErrorKind::Protocol, msg).await;
            return None;
        }
    };
    Some(Shook {
        identity,
        pidfd_charge,
        name,
        hello_id: first.id,
        admin_socket: admin,
        peer,
    })
}

/// Disconnects its client from the core when dropped: at the end of the connection task, and
/// when the task panics (unwinding drops it), so a panic never leaks a client's streams.
struct Connected {
    core: Arc<Core>,
    client: ClientId,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.core.disconnect(self.client);
    }
}

async fn serve_connection(
    core: Arc<Core>,
    conn: AsyncSeqPacket,
    socket: Socket,
    mut ticket: Ticket,
    settings: Settings,
) {
    let mut buf = recv_buffer();
    let deadline = tokio::time::Instant::now() + settings.handshake;
    let shook = tokio::select! {
        r = tokio::time::timeout_at(deadline, handshake(&core, &conn, &socket, &ticket, &settings, &mut buf)) => match r {
            Ok(shook) => shook,
            Err(_) => {
                if let Some(suppressed) = REFUSALS.allow() {
                    tracing::warn!(uid = ticket.uid(), suppressed, "no Hello within {:?}: closing", settings.handshake);
                }
                let msg = format!("no Hello within {} ms", settings.handshake.as_millis());
                refuse_now(&conn, ErrorKind::Protocol, &msg);
                None
            }
        },
        () = ticket.shed() => {
            refuse_now(&conn, ErrorKind::Busy, "too many connections are waiting for their handshake; try again");
            None
        }
    };
    let Some(shook) = shook else { return };
    let peer = shook.peer;
    let _pidfd_charge = shook.pidfd_charge;
    let (tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let client = match core.connect(shook.identity, &shook.name, tx, shook.admin_socket) {
        Ok(c) => c,
        Err(e) => {
            reply_error(&conn, shook.hello_id, e.kind, e.message).await;
            return;
        }
    };
    ticket.handshake_done();
    let _connected = Connected {
        core: Arc::clone(&core),
        client,
    };
    let hello = Reply::Hello {
        version: PROTOCOL_VERSION,
        server: "soundgated".into(),
        client,
    };
    let mut up = send(
        &conn,
        &ServerMsg::Reply {
            id: shook.hello_id,
            result: Ok(hello),
        },
        &[],
    )
    .await
    .is_ok();
    let mut pace = TokenBucket::new(
        settings.requests_per_second,
        settings.request_burst,
        settings.throttle_disconnect,
        Instant::now(),
    );
    while up {
        tokio::select! {
            req = read_request(&conn, &mut buf, &peer) => {
                let Some((msg, fds)) = req else { break };
                match pace.take() {
                    Pace::Go => {}
                    Pace::Wait(pause) => tokio::time::sleep(pause).await,
                    Pace::Disconnect { over_for } => {
                        if let Some(suppressed) = REFUSALS.allow() {
                            tracing::warn!(
                                client, peer, suppressed,
                                "disconnecting: over {} requests/s for {over_for:?}",
                                settings.requests_per_second
                            );
                        }
                        let why = format!(
                            "more than {} requests/s for {} ms; disconnecting",
                            settings.requests_per_second,
                            over_for.as_millis()
                        );
                        reply_error_now(&conn, msg.id, ErrorKind::Busy, why);
                        break;
                    }
                }
                // The fds of a request count against its uid's budget while it is handled.
                let charge = if fds.is_empty() {
                    None
                } else {
                    match ticket.charge_fds(fds.len()) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            if let Some(suppressed) = REFUSALS.allow() {
                                tracing::warn!(client, peer, suppressed, "refusing a request: {e}");
                            }
                            drop(fds);
                            reply_error(&conn, msg.id, ErrorKind::Quota, e.to_string()).await;
                            continue;
                        }
                    }
                };
                let out = match core.handle(client, msg.req, fds) {
                    Handled::Done(out) => Some(out),
                    Handled::Ask(parked) => {
                        let pending = Event::PermissionPending { request: msg.id, prompt: parked.prompt() };
                        up = send(&conn, &ServerMsg::Event(pending), &[]).await.is_ok();
                        if up {
                            wait_for_consent(&core, client, &conn, &mut events, parked).await
                        } else {
                            None
                        }
                    }
                };
                drop(charge);
                let Some(out) = out else { break };
                let reply = ServerMsg::Reply { id: msg.id, result: out.result };
                up = send(&conn, &reply, &out.fds).await.is_ok();
            }
            ev = events.recv() => {
                // `None`: the core dropped our queue (we fell behind); hang up.
                let Some(ev) = ev else { break };
                up = send_event(&conn, &ev, &events).await;
            }
        }
    }
    tracing::trace!(fd = conn.as_fd().as_raw_fd(), "connection task ends");
}

/// A reply sent only if the peer's socket has room right now (before hanging up on it).
fn reply_error_now(conn: &AsyncSeqPacket, id: u32, kind: ErrorKind, message: String) {
    let msg = ServerMsg::Reply {
        id,
        result: Err(WireError::new(kind, message)),
    };
    if let Ok(bytes) = wire::encode(&msg) {
        let _ = conn.try_send(&bytes, &[]);
    }
}

/// Sends one event; gives up (false) if the peer's socket stays full until the core cuts the
/// connection off (drops its queue: it fell `EVENT_QUEUE` events behind) or the send fails.
async fn send_event(
    conn: &AsyncSeqPacket,
    ev: &ServerMsg,
    events: &mpsc::Receiver<ServerMsg>,
) -> bool {
    let cut_off = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if events.is_closed() {
                return;
            }
        }
    };
    tokio::select! {
        sent = send(conn, ev, &[]) => sent.is_ok(),
        _ = cut_off => false,
    }
}

/// Waits for the answer to a parked request while still delivering the client's events;
/// `None` if the client hung up meanwhile (its prompt is cancelled when it disconnects).
async fn wait_for_consent(
    core: &Core,
    client: ClientId,
    conn: &AsyncSeqPacket,
    events: &mut mpsc::Receiver<ServerMsg>,
    parked: Parked,
) -> Option<Outcome> {
    let (wait, parked) = parked.split();
    tokio::pin!(wait);
    loop {
        tokio::select! {
            outcome = &mut wait => return Some(core.resume(client, parked, outcome)),
            _ = conn.closed() => return None,
            ev = events.recv() => {
                let ev = ev?;
                send(conn, &ev, &[]).await.ok()?;
            }
        }
    }
}

/// Watches each device's notify eventfd (those created at run time too, whose indices the
/// core sends) and lets the core reap what the engine retired; reports underruns
/// periodically (every 50 ms while [`Core::housekeeping_due`], not at all while the daemon
/// idles).
pub fn spawn_housekeeping(core: &Arc<Core>) -> std::io::Result<()> {
    let (tx, mut new_devices) = mpsc::unbounded_channel();
    core.watch_new_devices(tx);
    for index in 0..core.sinks().len() {
        watch_device(core, index)?;
    }
    let watcher = Arc::clone(core);
    tokio::spawn(async move {
        while let Some(index) = new_devices.recv().await {
            if let Err(e) = watch_device(&watcher, index) {
                tracing::error!("watching device {index}: {e}");
            }
        }
    });
    let meters = Arc::clone(core);
    tokio::spawn(async move { meters.run_meters().await });
    let core = Arc::clone(core);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // When the heap was last trimmed: at most once a second, so a connect/disconnect
        // flood cannot make the daemon trim per client.
        let mut trimmed: Option<tokio::time::Instant> = None;
        loop {
            every.tick().await;
            core.tick();
            let due = core.housekeeping_due();
            if due && trimmed.is_none_or(|t| t.elapsed() >= BUSY_TRIM_EVERY) {
                // Busy for long (something always plays): trim now and then all the same.
                crate::memory::release_free_memory();
                trimmed = Some(tokio::time::Instant::now());
            }
            if !due {
                // Nothing to watch: give the heap pages the busy time freed back to the
                // kernel (see `memory`), then sleep until a request, a disconnect or a reap
                // kicks us (a kick since the check above is kept, so none is lost), then tick
                // at once. A trim too soon after the last waits for the rest of the second
                // (or a kick).
                let wait = trimmed.map_or(Duration::ZERO, |t| {
                    Duration::from_secs(1).saturating_sub(t.elapsed())
                });
                let kicked = !wait.is_zero()
                    && tokio::time::timeout(wait, core.housekeeping_idle())
                        .await
                        .is_ok();
                if !kicked {
                    crate::memory::release_free_memory();
                    trimmed = Some(tokio::time::Instant::now());
                    core.housekeeping_idle().await;
                }
                every.reset_immediately();
            }
        }
    });
    Ok(())
}

/// How often the heap is trimmed while the housekeeping never goes idle (see `memory`).
const BUSY_TRIM_EVERY: Duration = Duration::from_secs(30);

/// One task that reaps device `index` whenever its engine signals, until the device is
/// removed and its engine stopped.
fn watch_device(core: &Arc<Core>, index: usize) -> std::io::Result<()> {
    let Some(sink) = core.sinks().get(index) else {
        return Ok(());
    };
    let fd = sink.handle().notify_fd()?;
    let afd = sock::register(fd)?;
    let core = Arc::clone(core);
    tokio::spawn(async move {
        loop {
            match afd.readable().await {
                Ok(mut guard) => {
                    let mut counter = [0u8; 8];
                    let _ = nix::unistd::read(afd.get_ref().as_raw_fd(), &mut counter);
                    guard.clear_ready();
                    core.reap(index);
                    let gone = core
                        .sinks()
                        .get(index)
                        .is_none_or(|s| s.is_removed() && s.handle().stopped());
                    if gone {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!("watching device {index}: {e}");
                    return;
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
    use super::*;

    fn core(config: &str) -> Arc<Core> {
        let config = crate::config::Config::parse(config, Path::new("test.toml")).unwrap();
        Arc::new(Core::new(&config).unwrap())
    }

    const ONE_CONNECTION: &str = "[engine]\nrealtime_priority = \"off\"\n\
        [limits]\nconnections_per_uid = 1\n\
        [[sink]]\nname = \"out\"\nbackend = \"null\"\n";

    #[tokio::test]
    async fn a_panicking_connection_task_still_disconnects_its_client() {
        let core = core(ONE_CONNECTION);
        let (a, _b) = sock::SeqPacket::pair().unwrap();
        let me = || identity::identify_peer(a.as_fd()).unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let client = core.connect(me(), "first", tx.clone(), false).unwrap();
        // The uid's one app connection is taken...
        assert!(core.connect(me(), "second", tx.clone(), false).is_err());
        let task_core = Arc::clone(&core);
        let task = tokio::spawn(async move {
            let _connected = Connected {
                core: task_core,
                client,
            };
            panic!("a bug in a connection task");
        });
        assert!(task.await.unwrap_err().is_panic());
        // ...and given back by the guard the panic unwound.
        let again = core.connect(me(), "again", tx, false);
        assert!(again.is_ok(), "{again:?}");
    }

    #[tokio::test]
    async fn app_connections_do_not_count_against_the_admin_quota() {
        let core = core(ONE_CONNECTION);
        let (a, _b) = sock::SeqPacket::pair().unwrap();
        let me = || identity::identify_peer(a.as_fd()).unwrap();
        let (tx, _rx) = mpsc::channel(1);
        core.connect(me(), "app", tx.clone(), false).unwrap();
        assert!(core.connect(me(), "app2", tx.clone(), false).is_err());
        core.connect(me(), "console", tx.clone(), true).unwrap();
        // The admin socket's quota is its own, and just as bounded.
        assert!(core.connect(me(), "console2", tx, true).is_err());
    }

    #[test]
    fn settings_follow_the_limits() {
        let l = Limits {
            handshake_timeout_ms: 800,
            requests_per_second: 7,
            ..Limits::default()
        };
        let s = Settings::from_limits(&l);
        assert_eq!(s.handshake, Duration::from_millis(800));
        assert_eq!(s.identity_timeout, Duration::from_millis(800));
        assert_eq!(s.requests_per_second, 7);
        assert_eq!(Settings::default().identity_timeout, IDENTITY_TIMEOUT);
    }
}
