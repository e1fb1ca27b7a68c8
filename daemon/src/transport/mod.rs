//! Transport: listeners and per-connection tasks. Decodes datagrams into core requests and
//! encodes replies and events; holds no object state and makes no access decision.
//!
//! Per connection: the first message must be `Hello` with our protocol version; after that one
//! request is handled at a time (so at most one is pending per connection; the kernel's socket
//! buffer bounds what a client can queue). A malformed, oversized or fd-overloaded datagram gets
//! a `protocol` error reply and ends that connection; nothing a client sends can reach another
//! client's task.

pub mod pulse;

use crate::core::{Core, Handled, Outcome, Parked, EVENT_QUEUE};
use crate::identity;
use soundgate_proto::sock::{self, recv_buffer, AsyncSeqPacket, SeqPacketListener, SockError};
use soundgate_proto::wire::{
    self, ClientId, ClientMsg, ErrorKind, Event, Reply, Request, ServerMsg, WireError,
    PROTOCOL_VERSION,
};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

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
    /// The privileged control plane: only peers that [`AdminAccess::permits`].
    Admin(AdminAccess),
}

/// Who may use the admin socket: root, members of `gid`, and the listed uids. Checked on every
/// accept, whatever the socket file's mode says.
#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    /// The admin group, if it exists on this system.
    pub gid: Option<u32>,
    /// Its name, for messages.
    pub group_name: String,
    /// Further uids allowed.
    pub uids: Vec<u32>,
}

impl AdminAccess {
    /// Whether a peer with these credentials is an administrator.
    pub fn permits(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        uid == 0
            || self.uids.contains(&uid)
            || self.gid.is_some_and(|g| g == gid || groups.contains(&g))
    }
}

/// Accepts connections forever, one task each.
pub async fn serve(core: Arc<Core>, listener: SeqPacketListener, socket: Socket) {
    loop {
        match listener.accept().await {
            Ok(conn) => {
                let core = Arc::clone(&core);
                let socket = socket.clone();
                tokio::spawn(async move { serve_connection(core, conn, socket).await });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
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
async fn read_request(
    conn: &AsyncSeqPacket,
    buf: &mut [u8],
    peer: &str,
) -> Option<(ClientMsg, Vec<OwnedFd>)> {
    match conn.recv(buf).await {
        Ok(got) => match wire::decode::<ClientMsg>(&buf[..got.len]) {
            Ok(msg) => Some((msg, got.fds)),
            Err(e) => {
                tracing::debug!(peer, "malformed message: {e}");
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
            tracing::debug!(peer, "bad datagram: {e}");
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

async fn serve_connection(core: Arc<Core>, conn: AsyncSeqPacket, socket: Socket) {
    let identity = match identity::identify_peer(conn.as_fd()) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("refusing a connection whose peer cannot be identified: {e}");
            let msg = format!("cannot identify you: {e}");
            reply_error(&conn, 0, ErrorKind::Denied, msg).await;
            return;
        }
    };
    let admin = match &socket {
        Socket::Native => false,
        Socket::Admin(access) => {
            if !access.permits(identity.uid, identity.gid, &identity.groups) {
                tracing::warn!(
                    pid = identity.pid,
                    uid = identity.uid,
                    "refused on the admin socket"
                );
                let msg = format!(
                    "the admin socket is for root and members of group {}",
                    access.group_name
                );
                reply_error(&conn, 0, ErrorKind::Denied, msg).await;
                // Read the peer's first message (its Hello) before hanging up: closing with
                // unread data would reset the connection, and the peer might see the reset
                // before our reason.
                let mut buf = recv_buffer();
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.recv(&mut buf)).await;
                return;
            }
            true
        }
    };
    let peer = format!("pid {} uid {}", identity.pid, identity.uid);
    let mut buf = recv_buffer();

    // Handshake.
    let Some((first, fds)) = read_request(&conn, &mut buf, &peer).await else {
        return;
    };
    let name = match first.req {
        Request::Hello { version, name } if version == PROTOCOL_VERSION && fds.is_empty() => name,
        Request::Hello { version, .. } => {
            let msg = format!(
                "protocol version {version} is not supported (server speaks {PROTOCOL_VERSION})"
            );
            reply_error(&conn, first.id, ErrorKind::Protocol, msg).await;
            return;
        }
        _ => {
            let msg = "the first request must be Hello".to_string();
            reply_error(&conn, first.id, ErrorKind::Protocol, msg).await;
            return;
        }
    };
    let (tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let client = match core.connect(identity, &name, tx, admin) {
        Ok(c) => c,
        Err(e) => {
            reply_error(&conn, first.id, e.kind, e.message).await;
            return;
        }
    };
    let hello = Reply::Hello {
        version: PROTOCOL_VERSION,
        server: "soundgated".into(),
        client,
    };
    let mut up = send(
        &conn,
        &ServerMsg::Reply {
            id: first.id,
            result: Ok(hello),
        },
        &[],
    )
    .await
    .is_ok();
    while up {
        tokio::select! {
            req = read_request(&conn, &mut buf, &peer) => {
                let Some((msg, fds)) = req else { break };
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
    core.disconnect(client);
    tracing::trace!(fd = conn.as_fd().as_raw_fd(), "connection task ends");
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
/// periodically.
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
        loop {
            every.tick().await;
            core.tick();
        }
    });
    Ok(())
}

/// One task that reaps device `index` whenever its engine signals, until the device is
/// removed and its engine stopped.
fn watch_device(core: &Arc<Core>, index: usize) -> std::io::Result<()> {
    let Some(sink) = core.sinks().get(index) else {
        return Ok(());
    };
    let fd = sink.handle().notify_fd().try_clone_to_owned()?;
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
