//! The daemon thread: the only place that talks to soundgated. It connects to the admin
//! socket (retrying every second while the daemon is away), subscribes to prompts, events and
//! meters, polls the lists, runs the UI's commands, and turns all of it into [`AppEvent`]s on
//! one channel. The client library is blocking, so this runs on its own thread.

use crate::event::{AppEvent, Command, Data, Fetched};
use soundgate_proto::client::{Client, ClientError};
use soundgate_proto::wire::{Event, Reply, Request};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often pushed events (prompts, meters) are read from the socket.
const EVENT_POLL: Duration = Duration::from_millis(30);
/// How often the slow lists (devices, clients, grants, audit, stats) are reloaded.
const SLOW_POLL: Duration = Duration::from_secs(1);
/// How often streams are reloaded when their peaks are the only meters there are.
const STREAM_POLL_METERLESS: Duration = Duration::from_millis(100);
/// How often grants are reloaded while the Permissions view is on screen.
const GRANTS_POLL: Duration = Duration::from_secs(5);
/// Delay between reconnection attempts.
const RETRY: Duration = Duration::from_secs(1);
/// Lines of audit log shown.
pub const AUDIT_LINES: u32 = 40;

/// Settings of the daemon thread.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The admin socket.
    pub admin: PathBuf,
    /// Meter rate asked of the daemon (Hz).
    pub meter_hz: u32,
}

/// Starts the daemon thread.
pub fn spawn(
    cfg: WorkerConfig,
    events: Sender<AppEvent>,
    commands: Receiver<Command>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sgtop-daemon".into())
        .spawn(move || run(&cfg, &events, &commands))
}

/// Why a session ended.
enum End {
    /// The UI is gone or asked to quit.
    Quit,
    /// The connection failed.
    Lost(String),
}

fn run(cfg: &WorkerConfig, events: &Sender<AppEvent>, commands: &Receiver<Command>) {
    let mut perms_visible = false;
    let perms = &mut perms_visible;
    loop {
        match Client::connect(&cfg.admin, "sgtop") {
            Ok(client) => {
                tracing::info!(admin = %cfg.admin.display(), "connected");
                match session(cfg, &client, events, commands, perms) {
                    End::Quit => return,
                    End::Lost(reason) => {
                        tracing::warn!(%reason, "connection lost");
                        if events.send(AppEvent::Disconnected(reason)).is_err() {
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "connect failed");
                if events.send(AppEvent::Disconnected(e.to_string())).is_err() {
                    return;
                }
            }
        }
        // Wait before retrying, but keep answering Quit.
        let until = Instant::now() + RETRY;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match commands.recv_timeout(left) {
                Ok(Command::Quit) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Command::Send { what, .. }) => {
                    let result = Err("not connected to the daemon".to_string());
                    if events.send(AppEvent::Done { what, result }).is_err() {
                        return;
                    }
                }
                Ok(Command::Refresh) => {}
                Ok(Command::PermissionsVisible(v)) => *perms = v,
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
    }
}

/// A failure of one request: the connection is gone (`Err`), or the daemon refused it (`Ok`
/// with the message, shown as "not available" in the UI).
fn classify(e: ClientError) -> Result<String, String> {
    match e {
        ClientError::Server(w) => Ok(w.to_string()),
        other => Err(other.to_string()),
    }
}

/// Sends one request, mapping the reply with `pick`. `Err` means the connection is lost.
fn fetch<T>(
    client: &Client,
    req: Request,
    pick: impl FnOnce(Reply) -> Option<T>,
) -> Result<Fetched<T>, String> {
    match client.request(req, &[]) {
        Ok((reply, _)) => Ok(pick(reply).ok_or_else(|| "unexpected reply".to_string())),
        Err(e) => classify(e).map(Err),
    }
}

struct Session<'a> {
    client: &'a Client,
    events: &'a Sender<AppEvent>,
    meters: bool,
    /// The Permissions view is on screen.
    perms: bool,
}

impl Session<'_> {
    fn send(&self, ev: AppEvent) -> Result<(), End> {
        self.events.send(ev).map_err(|_| End::Quit)
    }

    fn data(&self, d: Result<Data, String>) -> Result<(), End> {
        match d {
            Ok(d) => self.send(AppEvent::Data(d)),
            Err(lost) => Err(End::Lost(lost)),
        }
    }

    fn streams(&self) -> Result<(), End> {
        self.data(
            fetch(self.client, Request::ListStreams, |r| match r {
                Reply::Streams(v) => Some(v),
                _ => None,
            })
            .map(Data::Streams),
        )
    }

    fn slow(&self) -> Result<(), End> {
        let c = self.client;
        self.data(
            fetch(c, Request::ListSinks, |r| match r {
                Reply::Sinks(v) => Some(v),
                _ => None,
            })
            .map(Data::Sinks),
        )?;
        self.data(
            fetch(c, Request::ListSources, |r| match r {
                Reply::Sources(v) => Some(v),
                _ => None,
            })
            .map(Data::Sources),
        )?;
        self.data(
            fetch(c, Request::ListClients, |r| match r {
                Reply::Clients(v) => Some(v),
                _ => None,
            })
            .map(Data::Clients),
        )?;
        if self.perms {
            self.data(
                fetch(c, Request::AuditTail { lines: AUDIT_LINES }, |r| match r {
                    Reply::Audit(v) => Some(v),
                    _ => None,
                })
                .map(Data::Audit),
            )?;
        }
        self.data(
            fetch(c, Request::Stats, |r| match r {
                Reply::Stats(v) => Some(v),
                _ => None,
            })
            .map(Data::Stats),
        )
    }

    fn grants(&self) -> Result<(), End> {
        self.data(
            fetch(self.client, Request::ListGrants, |r| match r {
                Reply::Grants(v) => Some(v),
                _ => None,
            })
            .map(Data::Grants),
        )
    }

    fn all(&self) -> Result<(), End> {
        self.streams()?;
        self.grants()?;
        self.slow()
    }

    fn command(&self, reqs: Vec<Request>, what: String) -> Result<(), End> {
        let mut result = Ok(());
        for req in reqs {
            tracing::info!(?req, "command");
            if let Err(e) = self.client.request(req, &[]) {
                match classify(e) {
                    Ok(refused) => {
                        result = Err(refused);
                        break;
                    }
                    Err(lost) => return Err(End::Lost(lost)),
                }
            }
        }
        if let Err(e) = &result {
            tracing::warn!(%what, error = %e, "command failed");
        }
        self.send(AppEvent::Done { what, result })
    }
}

fn session(
    cfg: &WorkerConfig,
    client: &Client,
    events: &Sender<AppEvent>,
    commands: &Receiver<Command>,
    perms: &mut bool,
) -> End {
    match session_inner(cfg, client, events, commands, perms) {
        Ok(()) => End::Quit,
        Err(end) => end,
    }
}

fn session_inner(
    cfg: &WorkerConfig,
    client: &Client,
    events: &Sender<AppEvent>,
    commands: &Receiver<Command>,
    perms: &mut bool,
) -> Result<(), End> {
    let mut s = Session {
        client,
        events,
        meters: false,
        perms: *perms,
    };
    let info = fetch(client, Request::ServerInfo, |r| match r {
        Reply::ServerInfo(i) => Some(i),
        _ => None,
    })
    .map_err(End::Lost)?
    .map_err(End::Lost)?;
    s.send(AppEvent::Connected(info))?;
    s.data(
        fetch(client, Request::SubscribePrompts, |r| match r {
            Reply::Prompts(v) => Some(v),
            _ => None,
        })
        .map(Data::Prompts),
    )?;
    // Subscribe and SubscribeMeters may not be served by every daemon: without them the lists
    // are polled and stream peaks come from the stream list.
    let subscribed = fetch(client, Request::Subscribe, |_| Some(())).map_err(End::Lost)?;
    if let Err(e) = &subscribed {
        tracing::info!(error = %e, "no event subscription; polling");
    }
    let meters = fetch(
        client,
        Request::SubscribeMeters { hz: cfg.meter_hz },
        |_| Some(()),
    )
    .map_err(End::Lost)?;
    s.meters = meters.is_ok();
    s.data(Ok(Data::Meters(meters)))?;
    s.all()?;

    let mut last_slow = Instant::now();
    let mut last_streams = Instant::now();
    let mut last_grants = Instant::now();
    loop {
        match commands.recv_timeout(EVENT_POLL) {
            Ok(Command::Quit) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
            Ok(Command::Send { reqs, what }) => {
                s.command(reqs, what)?;
                s.all()?;
                last_slow = Instant::now();
                last_streams = last_slow;
            }
            Ok(Command::Refresh) => {
                s.all()?;
                last_slow = Instant::now();
                last_streams = last_slow;
            }
            Ok(Command::PermissionsVisible(v)) => {
                *perms = v;
                s.perms = v;
                if v {
                    s.grants()?;
                    s.slow()?;
                    last_grants = Instant::now();
                    last_slow = last_grants;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        let pushed = client.take_events().map_err(|e| End::Lost(e.to_string()))?;
        let mut changed = false;
        let mut answered = false;
        for ev in pushed {
            // Decision events are not a reason to reload: our own reloads cause some.
            changed |= matches!(
                ev,
                Event::ClientAdded(_)
                    | Event::ClientRemoved { .. }
                    | Event::StreamAdded(_)
                    | Event::StreamRemoved { .. }
            );
            answered |= matches!(ev, Event::PromptResolved { .. });
            s.send(AppEvent::Server(ev))?;
        }
        if answered || (s.perms && last_grants.elapsed() >= GRANTS_POLL) {
            s.grants()?;
            last_grants = Instant::now();
        }
        let stream_every = if s.meters {
            SLOW_POLL
        } else {
            STREAM_POLL_METERLESS
        };
        if changed || last_streams.elapsed() >= stream_every {
            s.streams()?;
            last_streams = Instant::now();
        }
        if changed || last_slow.elapsed() >= SLOW_POLL {
            s.slow()?;
            last_slow = Instant::now();
        }
    }
}
