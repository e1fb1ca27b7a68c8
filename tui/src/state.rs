//! What sgtop knows about the daemon: the lists it last received, the pending prompts, level
//! meters with peak hold, and the connection. Pure data; [`State::apply`] folds one
//! [`AppEvent`] into it and says whether anything visible changed.

use crate::event::{Data, Fetched};
use soundgate_proto::wire::{
    ClientId, ClientInfo, DeviceInfo, DeviceKind, Direction, Event, GrantInfo, Meter, PromptInfo,
    ServerInfo, ServerStats, StreamId, StreamInfo,
};
use std::collections::BTreeMap;

/// How long a meter's peak mark holds before it falls back to the level.
pub const PEAK_HOLD_MS: u64 = 1500;
/// The bottom of the meter scale, in dB (full scale is 0 dB).
pub const METER_FLOOR_DB: f32 = -60.0;

/// A list as far as sgtop knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Avail<T> {
    /// Not received yet.
    Loading,
    /// The daemon refused or does not serve it: why.
    Unavailable(String),
    /// The latest copy.
    Ready(T),
}

impl<T> Avail<T> {
    /// The value, if there is one.
    pub fn ready(&self) -> Option<&T> {
        match self {
            Avail::Ready(v) => Some(v),
            _ => None,
        }
    }

    fn from_fetched(f: Fetched<T>) -> Avail<T> {
        match f {
            Ok(v) => Avail::Ready(v),
            Err(e) => Avail::Unavailable(e),
        }
    }
}

/// The connection to the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    /// Before the first attempt finished.
    Connecting,
    /// Connected to this server.
    Up(ServerInfo),
    /// Lost or refused: why. The daemon thread retries.
    Down(String),
}

/// One level meter: the latest peak and a peak-hold mark.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MeterState {
    /// Latest peak, linear 0.0..=1.0.
    pub level: f32,
    /// Highest recent peak, held for [`PEAK_HOLD_MS`].
    pub hold: f32,
    hold_since_ms: u64,
}

impl MeterState {
    /// Records a new peak at `now_ms`.
    pub fn update(&mut self, peak: f32, now_ms: u64) {
        let peak = if peak.is_finite() {
            peak.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.level = peak;
        if peak >= self.hold || now_ms.saturating_sub(self.hold_since_ms) >= PEAK_HOLD_MS {
            self.hold = peak;
            self.hold_since_ms = now_ms;
        }
    }

    /// Lets an expired hold fall to the level; returns whether it moved.
    pub fn decay(&mut self, now_ms: u64) -> bool {
        if self.hold > self.level && now_ms.saturating_sub(self.hold_since_ms) >= PEAK_HOLD_MS {
            self.hold = self.level;
            self.hold_since_ms = now_ms;
            return true;
        }
        false
    }

    /// Whether it shows anything but silence.
    pub fn active(&self) -> bool {
        self.level > 0.0 || self.hold > 0.0
    }
}

/// A linear peak in dB full scale (`-inf` for silence).
pub fn to_db(peak: f32) -> f32 {
    if peak <= 0.0 {
        f32::NEG_INFINITY
    } else {
        20.0 * peak.log10()
    }
}

/// Where a peak sits on the meter scale, 0.0 (floor or below) ..= 1.0 (full scale).
pub fn scale_fraction(peak: f32) -> f32 {
    let db = to_db(peak);
    if db.is_finite() {
        ((db - METER_FLOOR_DB) / -METER_FLOOR_DB).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// A message on the status line.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub text: String,
    pub error: bool,
}

/// Everything sgtop shows.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// The admin socket, for the header.
    pub admin: String,
    pub connection: Connection,
    pub streams: Avail<Vec<StreamInfo>>,
    pub sinks: Avail<Vec<DeviceInfo>>,
    pub sources: Avail<Vec<DeviceInfo>>,
    pub clients: Avail<Vec<ClientInfo>>,
    pub grants: Avail<Vec<GrantInfo>>,
    pub audit: Avail<Vec<String>>,
    pub stats: Avail<ServerStats>,
    /// Pending prompts, oldest first (the first is shown).
    pub prompts: Vec<PromptInfo>,
    /// Why this connection receives no prompts, if it does not.
    pub prompts_error: Option<String>,
    /// Whether the daemon pushes meters; otherwise stream peaks come from the stream list
    /// and devices have none.
    pub meters: Avail<()>,
    pub stream_meters: BTreeMap<StreamId, MeterState>,
    pub device_meters: BTreeMap<String, MeterState>,
    /// Wall clock (Unix ms) as of the last event or tick: prompt countdowns, peak hold.
    pub now_ms: u64,
    pub status: Option<Status>,
}

impl State {
    /// An empty state for the admin socket `admin`.
    pub fn new(admin: &str) -> State {
        State {
            admin: admin.to_string(),
            connection: Connection::Connecting,
            streams: Avail::Loading,
            sinks: Avail::Loading,
            sources: Avail::Loading,
            clients: Avail::Loading,
            grants: Avail::Loading,
            audit: Avail::Loading,
            stats: Avail::Loading,
            prompts: Vec::new(),
            prompts_error: None,
            meters: Avail::Loading,
            stream_meters: BTreeMap::new(),
            device_meters: BTreeMap::new(),
            now_ms: 0,
            status: None,
        }
    }

    /// Sinks then sources, as one list.
    pub fn devices(&self) -> Vec<&DeviceInfo> {
        let mut v: Vec<&DeviceInfo> = Vec::new();
        if let Some(s) = self.sinks.ready() {
            v.extend(s.iter());
        }
        if let Some(s) = self.sources.ready() {
            v.extend(s.iter());
        }
        v
    }

    /// Why the devices cannot be shown, if neither list is there.
    pub fn devices_unavailable(&self) -> Option<&str> {
        match (&self.sinks, &self.sources) {
            (Avail::Unavailable(e), Avail::Unavailable(_) | Avail::Loading) => Some(e),
            (Avail::Loading, Avail::Unavailable(e)) => Some(e),
            _ => None,
        }
    }

    /// The client with id `id`, if the client list is there.
    pub fn client(&self, id: ClientId) -> Option<&ClientInfo> {
        self.clients.ready()?.iter().find(|c| c.id == id)
    }

    /// Streams recording now: (app or stream name, user, device).
    pub fn recorders(&self) -> Vec<(String, String, String)> {
        let Some(streams) = self.streams.ready() else {
            return Vec::new();
        };
        streams
            .iter()
            .filter(|s| s.direction == Direction::Record)
            .map(|s| {
                let (app, user) = match self.client(s.client) {
                    Some(c) => (short_app(&c.app_id), user_name(c.user.as_deref(), c.uid)),
                    None => (format!("{} (client {})", s.name, s.client), "?".into()),
                };
                (app, user, s.device.clone())
            })
            .collect()
    }

    /// Folds one piece of data in; returns whether anything changed.
    pub fn apply_data(&mut self, d: Data) -> bool {
        match d {
            Data::Streams(f) => {
                let new = Avail::from_fetched(f);
                if self.meters.ready().is_none() {
                    if let Avail::Ready(list) = &new {
                        let now = self.now_ms;
                        self.stream_meters
                            .retain(|id, _| list.iter().any(|s| s.id == *id));
                        for s in list {
                            self.stream_meters
                                .entry(s.id)
                                .or_default()
                                .update(s.peak, now);
                        }
                    }
                }
                replace(&mut self.streams, new)
            }
            Data::Sinks(f) => replace(&mut self.sinks, Avail::from_fetched(f)),
            Data::Sources(f) => replace(&mut self.sources, Avail::from_fetched(f)),
            Data::Clients(f) => replace(&mut self.clients, Avail::from_fetched(f)),
            Data::Grants(f) => replace(&mut self.grants, Avail::from_fetched(f)),
            Data::Audit(f) => replace(&mut self.audit, Avail::from_fetched(f)),
            Data::Stats(f) => replace(&mut self.stats, Avail::from_fetched(f)),
            Data::Meters(f) => replace(&mut self.meters, Avail::from_fetched(f)),
            Data::Prompts(Ok(list)) => {
                let before = (self.prompts.clone(), self.prompts_error.take());
                self.prompts = list;
                before != (self.prompts.clone(), None)
            }
            Data::Prompts(Err(e)) => {
                self.prompts.clear();
                let changed = self.prompts_error.as_deref() != Some(e.as_str());
                self.prompts_error = Some(e);
                changed
            }
        }
    }

    /// Folds one pushed event in; returns whether anything changed.
    pub fn apply_event(&mut self, ev: Event) -> bool {
        match ev {
            Event::Prompt(p) => {
                if self.prompts.iter().any(|q| q.id == p.id) {
                    return false;
                }
                self.prompts.push(p);
                true
            }
            Event::PromptResolved { prompt, outcome } => {
                let before = self.prompts.len();
                self.prompts.retain(|p| p.id != prompt);
                if self.prompts.len() != before {
                    self.status = Some(Status {
                        text: format!("prompt {prompt} resolved elsewhere: {outcome}"),
                        error: false,
                    });
                    return true;
                }
                false
            }
            Event::Meters(list) => self.apply_meters(&list),
            Event::StreamAdded(s) | Event::StreamChanged(s) => {
                if let Avail::Ready(list) = &mut self.streams {
                    match list.iter_mut().find(|x| x.id == s.id) {
                        Some(x) => *x = s,
                        None => list.push(s),
                    }
                    return true;
                }
                false
            }
            Event::StreamRemoved { stream } | Event::StreamEnded { stream, .. } => {
                self.stream_meters.remove(&stream);
                if let Avail::Ready(list) = &mut self.streams {
                    list.retain(|s| s.id != stream);
                }
                true
            }
            Event::Underrun { stream, underruns } => {
                if let Avail::Ready(list) = &mut self.streams {
                    if let Some(s) = list.iter_mut().find(|s| s.id == stream) {
                        s.underruns = underruns;
                        return true;
                    }
                }
                false
            }
            Event::DeviceChanged(d) => {
                let list = if d.kind == DeviceKind::Sink {
                    &mut self.sinks
                } else {
                    &mut self.sources
                };
                if let Avail::Ready(list) = list {
                    match list.iter_mut().find(|x| x.name == d.name) {
                        Some(x) => *x = d,
                        None => list.push(d),
                    }
                    return true;
                }
                false
            }
            Event::DeviceRemoved { name } => {
                for list in [&mut self.sinks, &mut self.sources] {
                    if let Avail::Ready(list) = list {
                        list.retain(|d| d.name != name);
                    }
                }
                self.device_meters.remove(&name);
                true
            }
            Event::Xrun { device, xruns } => {
                for list in [&mut self.sinks, &mut self.sources] {
                    if let Avail::Ready(list) = list {
                        for d in list.iter_mut().filter(|d| d.name == device) {
                            d.xruns = xruns;
                        }
                    }
                }
                true
            }
            Event::ClientAdded(c) => {
                if let Avail::Ready(list) = &mut self.clients {
                    if !list.iter().any(|x| x.id == c.id) {
                        list.push(c);
                        return true;
                    }
                }
                false
            }
            Event::ClientRemoved { client } => {
                if let Avail::Ready(list) = &mut self.clients {
                    list.retain(|c| c.id != client);
                }
                true
            }
            Event::Decision(line) => {
                if let Avail::Ready(lines) = &mut self.audit {
                    lines.push(line);
                    let excess = lines
                        .len()
                        .saturating_sub(crate::worker::AUDIT_LINES as usize);
                    lines.drain(..excess);
                    return true;
                }
                false
            }
            Event::PermissionPending { .. } => false,
        }
    }

    fn apply_meters(&mut self, list: &[Meter]) -> bool {
        let now = self.now_ms;
        let mut changed = false;
        for m in list {
            let slot = match m.stream {
                Some(id) => self.stream_meters.entry(id).or_default(),
                None => self.device_meters.entry(m.device.clone()).or_default(),
            };
            let before = (slot.level, slot.hold);
            slot.update(m.peak, now);
            // Only what is drawn counts: silence staying silent needs no redraw.
            changed |= before != (slot.level, slot.hold);
        }
        changed
    }

    /// Advances the clock to `now_ms`; returns whether anything visible changed (a prompt
    /// countdown ticked, a peak hold fell).
    pub fn tick(&mut self, now_ms: u64) -> bool {
        let second = |ms: u64| ms / 1000;
        let countdown = !self.prompts.is_empty() && second(now_ms) != second(self.now_ms);
        self.now_ms = now_ms;
        let mut changed = countdown;
        for m in self
            .stream_meters
            .values_mut()
            .chain(self.device_meters.values_mut())
        {
            changed |= m.decay(now_ms);
        }
        changed
    }

    /// Whether meters are moving, so the UI should tick at the frame rate.
    pub fn animating(&self) -> bool {
        self.stream_meters
            .values()
            .chain(self.device_meters.values())
            .any(MeterState::active)
    }
}

fn replace<T: PartialEq>(slot: &mut T, new: T) -> bool {
    if *slot == new {
        return false;
    }
    *slot = new;
    true
}

/// An app id shortened for a table cell: executables by file name (`exe:…/sgcat`).
pub fn short_app(app_id: &str) -> String {
    match app_id.strip_prefix("exe:") {
        Some(path) => match path.rsplit_once('/') {
            Some((dir, file)) if !dir.is_empty() => format!("exe:…/{file}"),
            _ => app_id.to_string(),
        },
        None => app_id.to_string(),
    }
}

/// A user for display: the name if known, else the uid.
pub fn user_name(user: Option<&str>, uid: u32) -> String {
    match user {
        Some(u) => u.to_string(),
        None => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_scale() {
        assert_eq!(to_db(1.0), 0.0);
        assert!((to_db(0.5) + 6.0206).abs() < 1e-3);
        assert_eq!(to_db(0.0), f32::NEG_INFINITY);
        assert_eq!(scale_fraction(1.0), 1.0);
        assert_eq!(scale_fraction(0.0), 0.0);
        assert_eq!(scale_fraction(0.000_1), 0.0); // -80 dB is below the floor
        assert!((scale_fraction(0.1) - 2.0 / 3.0).abs() < 1e-4); // -20 dB
    }

    #[test]
    fn peak_hold_holds_then_falls() {
        let mut m = MeterState::default();
        m.update(0.8, 0);
        m.update(0.2, 100);
        assert_eq!((m.level, m.hold), (0.2, 0.8));
        assert!(!m.decay(PEAK_HOLD_MS - 1));
        assert!(m.decay(PEAK_HOLD_MS));
        assert_eq!(m.hold, 0.2);
        m.update(f32::NAN, PEAK_HOLD_MS + 1);
        assert_eq!(m.level, 0.0);
    }

    #[test]
    fn short_app_ids() {
        assert_eq!(short_app("exe:/usr/bin/arecord"), "exe:…/arecord");
        assert_eq!(
            short_app("flatpak:org.example.App"),
            "flatpak:org.example.App"
        );
    }
}
