//! Streams as others see them: moving a stream between devices ([`Request::MoveStream`]),
//! exclusive use of a sink, and filtered event subscription ([`Request::Subscribe`]).
//!
//! # Events
//!
//! A subscribed client gets events about what it may see, decided per event and per subscriber
//! by the same [`Core::permitted`] calls (policy and grants) that filter the lists: stream
//! events pass `list-streams` on the stream (its owner; administrators), device events pass
//! `play` on a sink or `record` on a source unless that is denied (the `ListSinks` /
//! `ListSources` filter; a grant to record a monitor makes its events visible). Clients coming
//! and going pass `list-clients`, audit lines ([`Event::Decision`]) `read-audit`, device xruns
//! `read-stats` (all administrators only). [`Core::permitted`] writes no audit line and uses
//! up no once grant, so delivering events cannot feed back into the log.
//!
//! Events go through each connection's bounded queue ([`Core::send_event`]): a subscriber that
//! does not read is cut off when its queue is full; the publisher never waits.
//!
//! Audit lines are written while the registry may be locked by the caller, so they cannot be
//! delivered there: [`DecisionOutbox`] (inside the consent state) keeps them, at most
//! [`DECISIONS_PER_TICK`] per housekeeping tick and only while an administrator is subscribed,
//! and [`Core::publish_tick`] hands them out. A client that floods the server with denied
//! requests therefore cannot overrun an administrator's queue: lines beyond the cap are dropped
//! from the event stream (never from the audit log) and counted in one warning.
//!
//! # Moving
//!
//! The mover must control the stream (`control-stream`; others' streams are *not found*), and
//! the stream's **owner** must be allowed to use the target (`play` on the sink, `record` on
//! the source), decided for the owner's subject with its grants, never by prompting — so an
//! administrator cannot move a stream where its owner's policy forbids it. Rates must match
//! (the client resamples). The stream's `home` becomes the target, so the move outlives a
//! device outage. The move itself is `devices`' machinery (the engine lets go, the core adds
//! the stream to the target engine at its current position); a stream still in transit cannot
//! be moved again until it has landed, which bounds the engine commands one client can cause.
//!
//! # Exclusive streams
//!
//! `CreatePlayback { exclusive: true }` needs `passthrough` on the sink (default deny). While
//! an exclusive stream lives on a sink, other clients' new or moved playback streams there are
//! refused with [`ErrorKind::Busy`]; an exclusive request on a sink where other clients already
//! play is refused the same way. Existing streams are never cut off.

use super::{err, stream_info, Core, Registry, StreamEntry, MONITOR_SUFFIX};
use crate::policy::{Action, Decision, Object, Role, Subject};
use soundgate_proto::wire::{
    ClientId, ClientInfo, DeviceKind, Direction, ErrorKind, Event, Reply, Request, StreamId,
    WireError,
};
use std::sync::atomic::Ordering;

/// Most audit lines handed to administrator subscribers per housekeeping tick.
pub const DECISIONS_PER_TICK: usize = 64;

/// Audit lines waiting for delivery to administrator subscribers (see the module doc).
#[derive(Debug, Default)]
pub(super) struct DecisionOutbox {
    /// Whether an administrator is subscribed; nothing is kept otherwise.
    watched: bool,
    lines: Vec<String>,
    dropped: u64,
}

impl DecisionOutbox {
    /// Whether lines wait for the next tick.
    pub(super) fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.dropped == 0
    }

    /// Keeps an audit record, as its JSON line, for the next tick.
    pub(super) fn record(&mut self, rec: &impl serde::Serialize) {
        if !self.watched {
            return;
        }
        if self.lines.len() >= DECISIONS_PER_TICK {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        match serde_json::to_string(rec) {
            Ok(line) => self.lines.push(line),
            Err(e) => tracing::error!("encoding a decision event: {e}"),
        }
    }
}

/// Who may receive an event.
#[derive(Debug, Clone, Copy)]
pub(super) enum Audience<'a> {
    /// Whoever may see this stream (its owner; administrators).
    Stream { owner: ClientId, device: &'a str },
    /// Whoever may play to this sink (or ask to).
    Sink(&'a str),
    /// Whoever may record from this source (or ask to).
    Source { name: &'a str, monitor: bool },
    /// Whoever may list the clients (`list-clients`: administrators).
    Clients,
    /// Whoever may read the audit log (`read-audit`: administrators).
    Audit,
    /// Whoever may read the statistics (`read-stats`: administrators).
    Stats,
}

impl Core {
    pub(super) fn streams_request(
        &self,
        client: ClientId,
        req: Request,
    ) -> Result<Reply, WireError> {
        match req {
            Request::Subscribe => self.subscribe(client),
            Request::MoveStream { stream, device } => self.move_stream(client, stream, &device),
            other => Err(err(
                ErrorKind::Invalid,
                format!("{other:?} is not a stream request"),
            )),
        }
    }

    /// Starts events for `client`. Each event is filtered for it as it is sent, so subscribing
    /// itself grants nothing.
    fn subscribe(&self, client: ClientId) -> Result<Reply, WireError> {
        let mut reg = self.reg();
        let Some(c) = reg.clients.get_mut(&client) else {
            return Err(err(ErrorKind::Protocol, "unknown client"));
        };
        c.subscribed = true;
        let subject = c.subject.clone();
        if self.may_see(&subject, Audience::Audit) {
            self.consents().decisions.watched = true;
        }
        tracing::debug!(client, role = ?subject.role(), "subscribed to events");
        Ok(Reply::Ok)
    }

    fn may_see(&self, subject: &Subject, audience: Audience<'_>) -> bool {
        let (action, object) = match audience {
            Audience::Stream { owner, device } => {
                let object = Object::Stream { owner, device };
                return self.permitted(subject, Action::ListStreams, &object) == Decision::Allow;
            }
            Audience::Sink(name) => (Action::Play, Object::Sink { name }),
            Audience::Source { name, monitor } => {
                (Action::Record, Object::Source { name, monitor })
            }
            Audience::Clients => (Action::ListClients, Object::Server),
            Audience::Audit => (Action::ReadAudit, Object::Server),
            Audience::Stats => (Action::ReadStats, Object::Server),
        };
        match object {
            // A device is seen by whoever may use it or ask to.
            Object::Sink { .. } | Object::Source { .. } => {
                !matches!(self.permitted(subject, action, &object), Decision::Deny(_))
            }
            _ => self.permitted(subject, action, &object) == Decision::Allow,
        }
    }

    /// Sends `ev` to every subscriber in `audience`.
    pub(super) fn publish(&self, reg: &mut Registry, audience: Audience<'_>, ev: Event) {
        let to: Vec<ClientId> = reg
            .clients
            .iter()
            .filter(|(_, c)| c.subscribed && self.may_see(&c.subject, audience))
            .map(|(id, _)| *id)
            .collect();
        for id in to {
            Self::send_event(reg, id, ev.clone());
        }
    }

    /// A stream appeared.
    pub(super) fn stream_added(&self, reg: &mut Registry, id: StreamId) {
        if let Some(s) = reg.streams.get(&id) {
            let (owner, device, info) = (s.owner, s.device.clone(), stream_info(id, s));
            let audience = Audience::Stream {
                owner,
                device: &device,
            };
            self.publish(reg, audience, Event::StreamAdded(info));
        }
    }

    /// A stream's volume, mute, cork state or device changed.
    pub(super) fn stream_changed(&self, reg: &mut Registry, id: StreamId) {
        if let Some(s) = reg.streams.get(&id) {
            let (owner, device, info) = (s.owner, s.device.clone(), stream_info(id, s));
            let audience = Audience::Stream {
                owner,
                device: &device,
            };
            self.publish(reg, audience, Event::StreamChanged(info));
        }
    }

    /// [`stream_changed`](Self::stream_changed) for callers that do not hold the registry.
    pub(super) fn stream_changed_now(&self, id: StreamId) {
        let mut reg = self.reg();
        self.stream_changed(&mut reg, id);
    }

    /// Stream `id` (`s`, already out of the registry) is gone: deleted, ended or its owner left.
    pub(super) fn stream_removed(&self, reg: &mut Registry, id: StreamId, s: &StreamEntry) {
        reg.moving.remove(&id);
        let audience = Audience::Stream {
            owner: s.owner,
            device: &s.device,
        };
        self.publish(reg, audience, Event::StreamRemoved { stream: id });
    }

    /// Device `index` (a sink or a capture source) changed: availability, default, volume…
    pub(super) fn device_changed(&self, reg: &mut Registry, index: usize) {
        let Some(dev) = self.sinks.get(index) else {
            return;
        };
        let (kind, default) = if dev.dev.source {
            (DeviceKind::Capture, dev.dev.is_default_source())
        } else {
            (DeviceKind::Sink, reg.default_sink == Some(index))
        };
        let info = self.device_info_of(index, kind, default);
        let audience = match kind {
            DeviceKind::Sink => Audience::Sink(&dev.name),
            _ => Audience::Source {
                name: &dev.name,
                monitor: false,
            },
        };
        self.publish(reg, audience, Event::DeviceChanged(info));
    }

    /// A device named `name` of `kind` was removed (for a sink, call it for its monitor too).
    pub(super) fn device_removed(&self, reg: &mut Registry, name: &str, kind: DeviceKind) {
        let audience = match kind {
            DeviceKind::Sink => Audience::Sink(name),
            DeviceKind::Capture => Audience::Source {
                name,
                monitor: false,
            },
            DeviceKind::Monitor => Audience::Source {
                name,
                monitor: true,
            },
        };
        let ev = Event::DeviceRemoved {
            name: name.to_string(),
        };
        self.publish(reg, audience, ev);
    }

    /// Client `id` connected (it is in the registry).
    pub(super) fn client_added(&self, reg: &mut Registry, id: ClientId) {
        let Some(c) = reg.clients.get(&id) else {
            return;
        };
        let streams = reg.streams.values().filter(|s| s.owner == id).count();
        let ident = &c.identity;
        let info = ClientInfo {
            id,
            pid: ident.pid,
            uid: ident.uid,
            user: ident.user.clone(),
            app_id: ident.app.id.clone(),
            app_source: ident.app.source.name().to_string(),
            label: c.label.clone(),
            admin: c.subject.role() == Role::Administrator,
            streams: u32::try_from(streams).unwrap_or(u32::MAX),
        };
        self.publish(reg, Audience::Clients, Event::ClientAdded(info));
    }

    /// Client `id` disconnected (it has left the registry).
    pub(super) fn client_removed(&self, reg: &mut Registry, id: ClientId) {
        self.publish(reg, Audience::Clients, Event::ClientRemoved { client: id });
    }

    /// Periodic: hands out the audit lines kept since the last tick and reports xruns, to
    /// administrator subscribers.
    pub(super) fn publish_tick(&self, reg: &mut Registry) {
        let watched = reg
            .clients
            .values()
            .any(|c| c.subscribed && self.may_see(&c.subject, Audience::Audit));
        let (lines, dropped) = {
            let mut c = self.consents();
            let out = &mut c.decisions;
            out.watched = watched;
            (
                std::mem::take(&mut out.lines),
                std::mem::take(&mut out.dropped),
            )
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "more than {DECISIONS_PER_TICK} decisions in one tick: not all were sent as \
                 events (the audit log has them all)"
            );
        }
        for line in lines {
            self.publish(reg, Audience::Audit, Event::Decision(line));
        }
        for (_, s) in self.sinks.live() {
            let now = s.handle.shared().xruns();
            let before = s.dev.published_xruns.swap(now, Ordering::Relaxed);
            if now > before {
                let ev = Event::Xrun {
                    device: s.name.clone(),
                    xruns: now,
                };
                self.publish(reg, Audience::Stats, ev);
            }
        }
    }

    /// Refuses a playback stream of `client` on sink `index` while another client uses that
    /// sink exclusively, and an `exclusive` one while other clients play there.
    pub(super) fn check_exclusive(
        &self,
        reg: &Registry,
        index: usize,
        client: ClientId,
        exclusive: bool,
    ) -> Result<(), WireError> {
        let name = self.sinks.get(index).map_or("?", |s| s.name.as_str());
        let mut others = false;
        for s in reg.streams.values() {
            if s.sink != index || s.direction != Direction::Playback || s.owner == client {
                continue;
            }
            if s.exclusive {
                return Err(err(
                    ErrorKind::Busy,
                    format!("sink {name} is in exclusive use by another client"),
                ));
            }
            others = true;
        }
        if exclusive && others {
            return Err(err(
                ErrorKind::Busy,
                format!("sink {name} is in use by other clients; exclusive use needs it to itself"),
            ));
        }
        Ok(())
    }

    /// The decision for `owner` (a client in the registry) doing `action` to `object`, with
    /// its grants, audited, but never prompting.
    fn owner_may(
        &self,
        reg: &Registry,
        owner: ClientId,
        action: Action,
        object: &Object<'_>,
    ) -> Result<(), String> {
        let Some(c) = reg.clients.get(&owner) else {
            return Err("the stream's owner is gone".into());
        };
        let (decision, _) = self.decide(&c.subject, c.identity.pid, action, object);
        if decision == Decision::Ask {
            // Not the owner's own request: no prompt may come of it.
            self.consents().wanted.remove(&owner);
        }
        match decision {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(reason),
            Decision::Ask => Err(format!(
                "{} {object} needs the owner's consent, and a move does not ask for it",
                action.name()
            )),
        }
    }

    fn move_stream(
        &self,
        client: ClientId,
        stream: StreamId,
        device: &str,
    ) -> Result<Reply, WireError> {
        let mut reg = self.reg();
        let not_found = || err(ErrorKind::NotFound, format!("no stream {stream}"));
        let Some(s) = reg.streams.get(&stream) else {
            return Err(not_found());
        };
        let (owner, current, direction) = (s.owner, s.device.clone(), s.direction);
        let (spec, capacity, exclusive, from) = (s.spec, s.capacity, s.exclusive, s.sink);
        self.authorize(
            &mut reg,
            client,
            Action::ControlStream,
            &Object::Stream {
                owner,
                device: &current,
            },
        )
        .map_err(|_| not_found())?;
        let (to, action, monitor) = match direction {
            Direction::Playback => {
                let to = self
                    .find_sink(device)
                    .ok_or_else(|| err(ErrorKind::NotFound, format!("no sink named {device}")))?;
                (to, Action::Play, false)
            }
            Direction::Record => {
                let (to, monitor) = self.find_source(device)?;
                (to, Action::Record, monitor)
            }
        };
        let object = match direction {
            Direction::Playback => Object::Sink { name: device },
            Direction::Record => Object::Source {
                name: device,
                monitor,
            },
        };
        self.owner_may(&reg, owner, action, &object)
            .map_err(|why| {
                err(
                    ErrorKind::Denied,
                    format!("stream {stream} cannot move to {device}: {why}"),
                )
            })?;
        if current == device {
            if let Some(s) = reg.streams.get_mut(&stream) {
                s.home = to;
            }
            return Ok(Reply::Ok);
        }
        if reg.moving.contains(&stream) {
            return Err(err(
                ErrorKind::Busy,
                format!("stream {stream} is still moving; try again"),
            ));
        }
        let target = &self.sinks[to];
        if !monitor && !target.handle.shared().available() {
            return Err(err(ErrorKind::Busy, format!("{device} is unavailable now")));
        }
        match direction {
            Direction::Playback => {
                if exclusive {
                    self.owner_may(&reg, owner, Action::Passthrough, &object)
                        .map_err(|why| {
                            err(
                                ErrorKind::Denied,
                                format!("exclusive stream {stream} cannot move to {device}: {why}"),
                            )
                        })?;
                }
                self.check_exclusive(&reg, to, owner, exclusive)?;
                self.check_geometry(
                    target,
                    &spec,
                    capacity,
                    2,
                    self.live().limits.max_latency_ms,
                )?;
            }
            Direction::Record => {
                let max_ms = self.live().limits.max_latency_ms.max(2000);
                self.check_geometry(target, &spec, capacity, 4, max_ms)?;
            }
        }
        self.start_move(&mut reg, stream, to).map_err(|e| {
            err(
                ErrorKind::Busy,
                format!("stream {stream} cannot move now: {e}"),
            )
        })?;
        if let Some(s) = reg.streams.get_mut(&stream) {
            s.home = to;
        }
        // Settings are remembered per device: the target's, if any, apply from now on.
        self.restore_onto(&reg, stream, device);
        let from_name = &self.sinks[from].name;
        if let Some(suppressed) = reg.may_log(client) {
            tracing::info!(client, stream, owner, from = %from_name, to = %device, suppressed, "moving stream");
        }
        Ok(Reply::Ok)
    }
}

/// The name a stream on device `dev` goes by: a record stream on a sink records its monitor.
pub(super) fn device_name(dev: &super::Sink, direction: Direction) -> String {
    if direction == Direction::Record && !dev.dev.source {
        format!("{}{MONITOR_SUFFIX}", dev.name)
    } else {
        dev.name.clone()
    }
}
