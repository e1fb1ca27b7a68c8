//! The administrators' control plane: connected clients, disconnecting one, level meters, the
//! audit log's tail, engine statistics, and grants added by hand.
//!
//! Every request here is for administrators. The policy decides, on [`Object::Server`], with
//! one action each: `ListClients` is `list-clients`, `Stats` is `read-stats`, `AuditTail` is
//! `read-audit`, `SubscribeMeters` is `read-meters`, `KillClient` is `kill-client`, `AddGrant`
//! is `manage-consent`. The first five reach other clients: the policy never allows them to a
//! non-administrator, whatever the rules (and the config refuses allow rules for them). Reads
//! are checked without an audit line (through [`Core::permitted`], the same path as listings,
//! so a control centre polling statistics does not flood the audit log); acts (kill, meters,
//! grant) are checked and audited through [`Core::authorize`].
//!
//! Meters: [`Core::run_meters`] is one task for all subscribers. Each subscriber has its own
//! period; readings come from the engine's atomics only (never the real-time thread's timing)
//! and go through the subscriber's bounded event queue, so a subscriber that does not read is
//! cut off like any other client that lets its queue fill.
//!
//! Lock order: the meter subscriptions, then the registry, then consents.

use super::{err, Core, Registry};
use crate::policy::{Action, Decision, Object, Role};
use soundgate_proto::wire::{
    ClientConvert, ClientId, ClientInfo, DeviceStats, ErrorKind, Event, Meter, Reply, Request,
    ServerStats, StreamId, StreamWakeups, WireError,
};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The highest meter rate a subscriber may ask for.
pub const MAX_METER_HZ: u32 = 60;
/// Bytes of audit lines one reply carries at most (the wire caps a message at 64 KiB); the
/// oldest lines are left out beyond it.
const AUDIT_REPLY_BYTES: usize = 56 * 1024;

/// One meter subscriber.
#[derive(Debug, Clone, Copy)]
struct MeterSub {
    period: Duration,
    next: Instant,
}

/// The control plane's own state: when the server started, and who wants meters.
#[derive(Debug)]
pub(super) struct ControlState {
    started: Instant,
    meters: Mutex<BTreeMap<ClientId, MeterSub>>,
    /// Wakes [`Core::run_meters`] when subscriptions change.
    wake: Notify,
    /// Wakes the housekeeping tick from its idle wait ([`Core::housekeeping_kick`]).
    pub(super) housekeeping: Notify,
    /// Housekeeping ticks run ([`Core::tick`]), for tests and diagnostics.
    pub(super) ticks: std::sync::atomic::AtomicU64,
    /// Conversion cost per client, as transports that convert report it
    /// ([`Core::convert_take`], [`Core::convert_give`]).
    convert: Mutex<BTreeMap<ClientId, Convert>>,
}

/// One client's conversion cost, as its transport reported it.
#[derive(Debug, Clone, Copy)]
struct Convert {
    uid: u32,
    samples_per_sec: u64,
    budget: u64,
}

impl ControlState {
    pub(super) fn new() -> ControlState {
        ControlState {
            started: Instant::now(),
            meters: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            housekeeping: Notify::new(),
            ticks: std::sync::atomic::AtomicU64::new(0),
            convert: Mutex::new(BTreeMap::new()),
        }
    }

    fn convert(&self) -> MutexGuard<'_, BTreeMap<ClientId, Convert>> {
        self.convert.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn meters(&self) -> MutexGuard<'_, BTreeMap<ClientId, MeterSub>> {
        self.meters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Core {
    /// Administrators' requests: clients, kill, meters, audit tail, statistics, grants.
    pub(super) fn admin_request(&self, client: ClientId, req: Request) -> Result<Reply, WireError> {
        match req {
            Request::ListClients => {
                self.may_read(client, Action::ListClients)?;
                Ok(Reply::Clients(self.client_list()))
            }
            Request::Stats => {
                self.may_read(client, Action::ReadStats)?;
                Ok(Reply::Stats(self.stats()))
            }
            Request::AuditTail { lines } => {
                self.may_read(client, Action::ReadAudit)?;
                self.audit_tail(lines)
            }
            Request::KillClient { client: target } => {
                self.act(client, Action::KillClient)?;
                self.kill_client(client, target)
            }
            Request::SubscribeMeters { hz } => {
                self.act(client, Action::ReadMeters)?;
                self.subscribe_meters(client, hz)
            }
            Request::AddGrant {
                uid,
                app_id,
                action,
                target,
                allow,
            } => {
                self.act(client, Action::ManageConsent)?;
                let action: Action =
                    action.parse().map_err(|e: crate::policy::UnknownAction| {
                        err(ErrorKind::Invalid, e.to_string())
                    })?;
                if let Some(t) = &target {
                    if t.is_empty() || t.len() > soundgate_proto::wire::MAX_NAME {
                        return Err(err(ErrorKind::Invalid, "the target must be a device name"));
                    }
                }
                if app_id.len() > 4096 {
                    return Err(err(ErrorKind::Invalid, "the app id is too long"));
                }
                let g = self.add_grant(client, (uid, app_id, action, target, allow))?;
                Ok(Reply::Grants(vec![g]))
            }
            other => Err(err(
                ErrorKind::Invalid,
                format!("{other:?} is not an administrator's request"),
            )),
        }
    }

    /// A read-only check: the decision on `action` to the server, not audited.
    pub(super) fn may_read(&self, client: ClientId, action: Action) -> Result<(), WireError> {
        let reg = self.reg();
        let c = reg
            .clients
            .get(&client)
            .ok_or_else(|| err(ErrorKind::Protocol, "unknown client"))?;
        match self.permitted(&c.subject, action, &Object::Server) {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(err(ErrorKind::Denied, reason)),
            Decision::Ask => Err(err(
                ErrorKind::Denied,
                format!("{} on the server needs consent", action.name()),
            )),
        }
    }

    /// An audited check for an act on the server.
    pub(super) fn act(&self, client: ClientId, action: Action) -> Result<(), WireError> {
        let mut reg = self.reg();
        self.authorize(&mut reg, client, action, &Object::Server)
    }

    fn client_list(&self) -> Vec<ClientInfo> {
        let reg = self.reg();
        let mut streams: BTreeMap<ClientId, u32> = BTreeMap::new();
        for s in reg.streams.values() {
            *streams.entry(s.owner).or_default() += 1;
        }
        reg.clients
            .iter()
            .map(|(id, c)| {
                let ident = &c.identity;
                ClientInfo {
                    id: *id,
                    pid: ident.pid,
                    uid: ident.uid,
                    user: ident.user.clone(),
                    app_id: ident.app.id.clone(),
                    app_source: ident.app.source.name().to_string(),
                    label: c.label.clone(),
                    admin: c.subject.role() == Role::Administrator,
                    streams: streams.get(id).copied().unwrap_or(0),
                }
            })
            .collect()
    }

    /// Ends `target`'s streams (telling it why), then its connection.
    fn kill_client(&self, admin: ClientId, target: ClientId) -> Result<Reply, WireError> {
        let streams = {
            let mut reg = self.reg();
            if !reg.clients.contains_key(&target) {
                return Err(err(ErrorKind::NotFound, format!("no client {target}")));
            }
            let mine: Vec<StreamId> = reg
                .streams
                .iter()
                .filter(|(_, s)| s.owner == target)
                .map(|(id, _)| *id)
                .collect();
            for id in &mine {
                let error = err(
                    ErrorKind::Denied,
                    format!("stream {id} ended: an administrator disconnected this client"),
                );
                Self::send_event(&mut reg, target, Event::StreamEnded { stream: *id, error });
            }
            mine.len()
        };
        self.audit_admin_act(admin, "kill-client", &format!("client {target}"));
        tracing::info!(
            admin,
            client = target,
            streams,
            "client disconnected by an administrator"
        );
        // Dropping its event queue makes its connection task hang up (after delivering the
        // events above); its streams end here, at once.
        self.disconnect(target);
        self.control.meters().remove(&target);
        Ok(Reply::Ok)
    }

    fn subscribe_meters(&self, client: ClientId, hz: u32) -> Result<Reply, WireError> {
        if hz > MAX_METER_HZ {
            return Err(err(
                ErrorKind::Invalid,
                format!("meter rate {hz} Hz is outside 1..={MAX_METER_HZ} (0 stops)"),
            ));
        }
        let mut subs = self.control.meters();
        if hz == 0 {
            subs.remove(&client);
        } else {
            let period = Duration::from_secs(1) / hz;
            subs.insert(
                client,
                MeterSub {
                    period,
                    next: Instant::now(),
                },
            );
        }
        drop(subs);
        self.control.wake.notify_one();
        Ok(Reply::Ok)
    }

    /// Sends [`Event::Meters`] to every subscriber, each at its own rate. Runs for the life of
    /// the daemon (spawned by the transport's housekeeping); sleeps while nobody subscribes.
    pub async fn run_meters(&self) {
        loop {
            let next = self.meters_due(Instant::now());
            let wake = self.control.wake.notified();
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = wake => {}
                    }
                }
                None => wake.await,
            }
        }
    }

    /// Sends readings to the subscribers that are due; the next time one is due.
    fn meters_due(&self, now: Instant) -> Option<Instant> {
        let mut subs = self.control.meters();
        let due: Vec<ClientId> = subs
            .iter()
            .filter(|(_, s)| s.next <= now)
            .map(|(c, _)| *c)
            .collect();
        if !due.is_empty() {
            let mut reg = self.reg();
            let readings = self.meter_readings(&reg);
            for c in due {
                if reg.clients.get(&c).is_some_and(|e| e.events.is_some()) {
                    Self::send_event(&mut reg, c, Event::Meters(readings.clone()));
                }
                // Gone, or cut off just now for not reading its events.
                let connected = reg.clients.get(&c).is_some_and(|e| e.events.is_some());
                if !connected {
                    subs.remove(&c);
                    continue;
                }
                if let Some(s) = subs.get_mut(&c) {
                    s.next += s.period;
                    if s.next <= now {
                        // We fell behind (a busy runtime): skip, never burst.
                        s.next = now + s.period;
                    }
                }
            }
        }
        subs.values().map(|s| s.next).min()
    }

    /// Peak and RMS of every stream and every device, from the engines' atomics.
    fn meter_readings(&self, reg: &Registry) -> Vec<Meter> {
        let streams = reg.streams.iter().map(|(id, s)| Meter {
            stream: Some(*id),
            device: s.device.clone(),
            peak: s.shared.peak(),
            rms: s.shared.rms(),
        });
        let devices = self.sinks.live().map(|(_, s)| {
            let shared = s.handle.shared();
            Meter {
                stream: None,
                device: s.name.clone(),
                peak: shared.peak(),
                rms: shared.rms(),
            }
        });
        streams.chain(devices).collect()
    }

    fn audit_tail(&self, lines: u32) -> Result<Reply, WireError> {
        let flushed = self.consents().audit_flush();
        let Some((queue, path)) = flushed else {
            return Err(err(
                ErrorKind::NotFound,
                "this server keeps no audit log (it runs without a state directory)",
            ));
        };
        // Read what was decided before this request (outside every lock).
        if !queue.sync(Duration::from_secs(5)) {
            tracing::warn!("the audit writer is behind; the tail may miss the newest lines");
        }
        let n = usize::try_from(lines).unwrap_or(usize::MAX).min(100_000);
        let mut tail = super::audit::AuditLog::tail(&path, n)
            .map_err(|e| err(ErrorKind::Internal, format!("reading the audit log: {e}")))?;
        // Keep the newest lines that fit in one message.
        let mut bytes = 0usize;
        let keep = tail
            .iter()
            .rev()
            .take_while(|l| {
                bytes += l.len() + 8;
                bytes <= AUDIT_REPLY_BYTES
            })
            .count();
        tail.drain(..tail.len() - keep);
        Ok(Reply::Audit(tail))
    }

    /// A transport that converts audio for `client` (of `uid`, whose budget is `budget`
    /// samples/s) took `cost` more samples/s of it; shown in [`ServerStats::convert`].
    pub fn convert_take(&self, client: ClientId, uid: u32, cost: u64, budget: u64) {
        let mut map = self.control.convert();
        let e = map.entry(client).or_insert(Convert {
            uid,
            samples_per_sec: 0,
            budget,
        });
        e.samples_per_sec = e.samples_per_sec.saturating_add(cost);
        e.budget = budget;
    }

    /// `client`'s transport gave back `cost` samples/s of conversion (a stream ended).
    pub fn convert_give(&self, client: ClientId, cost: u64) {
        let mut map = self.control.convert();
        if let Some(e) = map.get_mut(&client) {
            e.samples_per_sec = e.samples_per_sec.saturating_sub(cost);
            if e.samples_per_sec == 0 {
                map.remove(&client);
            }
        }
    }

    fn stats(&self) -> ServerStats {
        let convert: Vec<ClientConvert> = self
            .control
            .convert()
            .iter()
            .map(|(client, c)| ClientConvert {
                client: *client,
                uid: c.uid,
                samples_per_sec: c.samples_per_sec,
                budget: c.budget,
            })
            .collect();
        let reg = self.reg();
        let mut devices = Vec::with_capacity(self.sinks.len());
        let mut loads = Vec::with_capacity(self.sinks.len());
        let mut on_device = vec![0u32; self.sinks.len()];
        for s in reg.streams.values() {
            if let Some(n) = on_device.get_mut(s.sink) {
                *n += 1;
            }
        }
        for (i, s) in self.sinks.iter().enumerate() {
            let shared = s.handle.shared();
            if s.dev.is_removed() {
                // Keeps `loads` indexed by device; a removed device carries no stream.
                loads.push(0.0);
                continue;
            }
            let cycle = shared.cycle_stats();
            let budget = shared.budget_us();
            let load = if budget > 0.0 {
                cycle.mean_us / budget
            } else {
                0.0
            };
            loads.push(load);
            devices.push(DeviceStats {
                name: s.name.clone(),
                cycles: shared.cycles(),
                late_cycles: shared.late_cycles(),
                xruns: shared.xruns(),
                cycle_mean_us: cycle.mean_us,
                cycle_p99_us: cycle.p99_us,
                cycle_max_us: cycle.max_us,
                load,
                streams: on_device.get(i).copied().unwrap_or(0),
                engine_streams: shared.engine_streams(),
                engine_held: u32::try_from(s.handle.held()).unwrap_or(u32::MAX),
                wakeups: shared.wakeups(),
            });
        }
        let mut cost: BTreeMap<ClientId, f64> = reg.clients.keys().map(|c| (*c, 0.0)).collect();
        for s in reg.streams.values() {
            let (Some(load), Some(n)) = (loads.get(s.sink), on_device.get(s.sink)) else {
                continue;
            };
            *cost.entry(s.owner).or_default() += load / f64::from((*n).max(1));
        }
        ServerStats {
            uptime_secs: self.control.started.elapsed().as_secs(),
            clients: u32::try_from(reg.clients.len()).unwrap_or(u32::MAX),
            streams: u32::try_from(reg.streams.len()).unwrap_or(u32::MAX),
            rss_bytes: rss_bytes(),
            devices,
            client_cost: cost.into_iter().collect(),
            stream_wakeups: reg
                .streams
                .iter()
                .map(|(id, s)| StreamWakeups {
                    stream: *id,
                    device: self
                        .sinks
                        .get(s.sink)
                        .map_or_else(|| s.device.clone(), |k| k.name.clone()),
                    wakeups: s.shared.wakeups(),
                    per_sec: s.shared.wakeups_per_sec(),
                })
                .collect(),
            convert,
        }
    }
}

/// The daemon's resident memory: `VmRSS` of `/proc/self/status` (in kB there, so no page
/// size is needed), 0 if it cannot be read.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_vm_rss(&status).unwrap_or(0)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
    use super::*;

    #[test]
    fn vm_rss_is_parsed_in_bytes() {
        let status = "Name:\tsoundgated\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_bytes() > 0, "this process has resident memory");
    }
}
