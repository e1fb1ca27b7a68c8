//! The device side of the core: opening sinks and capture sources from the config (with ALSA
//! discovery when there is no config), looking sources up, and reacting to a device that
//! becomes unavailable or comes back (moving playback streams to the fallback sink and home
//! again).
//!
//! Sinks and capture sources share one list (`Core::sinks`, each a [`Sink`] with its engine);
//! a capture source has `source == true`. A sink's index is stable for the daemon's life, so
//! streams refer to devices by index.
//!
//! Moving a stream: the core points the stream's registry entry at the destination and asks
//! the current engine to remove it; when the engine hands it back (the notify eventfd, then
//! [`Core::reap`]), a retired stream still in the registry is in transit and is added to the
//! engine its entry names. It resumes at `StreamShared::frames()`, so its ring position is
//! kept and the client notices nothing but the device name in its stream info.

use super::{Core, CoreError, Sink, MONITOR_SUFFIX};
use crate::backend::{self, alsa, Clock};
use crate::config::{Config, SinkBackend, SinkConfig};
use crate::engine::{SinkHandle, SinkParams};
use soundgate_proto::wire::{DeviceInfo, DeviceKind, DeviceState, ErrorKind, WireError};
use soundgate_proto::StreamSpec;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The most devices the daemon has over its life: the configured ones plus those created at
/// run time. A removed device keeps its slot (indices are stable), so this bounds creations.
pub const MAX_DEVICES: usize = 1024;

/// The device list: append-only slots with stable indices. A device is added at start-up or
/// by `CreateDevice` and never leaves its slot; `RemoveDevice` marks it removed
/// ([`DevState::removed`]) and stops its engine, and every lookup skips removed devices.
/// Reading needs no lock (a slot is written once, before the length that publishes it).
#[derive(Debug)]
pub struct DeviceTable {
    slots: Box<[OnceLock<Box<Sink>>]>,
    len: AtomicUsize,
    /// Serialises [`DeviceTable::push`].
    grow: Mutex<()>,
}

impl DeviceTable {
    pub(crate) fn new(sinks: Vec<Sink>) -> DeviceTable {
        let cap = MAX_DEVICES.max(sinks.len());
        let slots: Box<[OnceLock<Box<Sink>>]> = (0..cap).map(|_| OnceLock::new()).collect();
        let len = sinks.len();
        for (slot, s) in slots.iter().zip(sinks) {
            let _ = slot.set(Box::new(s));
        }
        DeviceTable {
            slots,
            len: AtomicUsize::new(len),
            grow: Mutex::new(()),
        }
    }

    /// Slots in use (removed devices included).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether no device was ever added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Device `i`, removed or not.
    pub fn get(&self, i: usize) -> Option<&Sink> {
        if i >= self.len() {
            return None;
        }
        self.slots.get(i)?.get().map(|b| &**b)
    }

    /// Every device in index order, removed ones included (so positions are indices).
    pub fn iter(&self) -> impl Iterator<Item = &Sink> + '_ {
        let len = self.len();
        self.slots[..len.min(self.slots.len())]
            .iter()
            .map_while(|s| s.get().map(|b| &**b))
    }

    /// `(index, device)` of the devices not removed.
    pub fn live(&self) -> impl Iterator<Item = (usize, &Sink)> + '_ {
        self.iter().enumerate().filter(|(_, s)| !s.dev.is_removed())
    }

    /// Appends a device; its index, or the device back when the table is full.
    pub(crate) fn push(&self, sink: Box<Sink>) -> Result<usize, Box<Sink>> {
        let _grow = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let i = self.len();
        let Some(slot) = self.slots.get(i) else {
            return Err(sink);
        };
        slot.set(sink)?;
        self.len.store(i + 1, Ordering::Release);
        Ok(i)
    }

    /// Takes the devices out (at shutdown).
    pub(crate) fn into_sinks(self) -> impl Iterator<Item = Sink> {
        self.slots
            .into_vec()
            .into_iter()
            .filter_map(OnceLock::into_inner)
            .map(|b| *b)
    }
}

impl std::ops::Index<usize> for DeviceTable {
    type Output = Sink;

    /// Like a `Vec`'s: an index out of range is a bug in the core (indices come from the table).
    #[allow(clippy::panic)]
    fn index(&self, i: usize) -> &Sink {
        match self.get(i) {
            Some(s) => s,
            None => panic!("device index {i} out of range ({} devices)", self.len()),
        }
    }
}

impl<'a> IntoIterator for &'a DeviceTable {
    type Item = &'a Sink;
    type IntoIter = Box<dyn Iterator<Item = &'a Sink> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Device-side state of a sink or source, beside its engine.
#[derive(Debug, Default)]
pub struct DevState {
    /// A capture source (not a sink).
    pub source: bool,
    /// The default capture source (changed at run time by `SetDefaultSource`).
    pub default_source: AtomicBool,
    /// Availability as last handled by the core.
    pub seen_available: AtomicBool,
    /// Xruns already logged.
    pub logged_xruns: AtomicU64,
    /// Xruns already sent to subscribers (see `streams`).
    pub published_xruns: AtomicU64,
    /// Why it is unavailable.
    pub detail: Mutex<Option<String>>,
    /// Removed at run time (`RemoveDevice`): lookups skip it; its engine is stopped.
    pub removed: AtomicBool,
}

impl DevState {
    /// Whether the device was removed at run time.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
}

impl DevState {
    /// Whether this is the default capture source.
    pub fn is_default_source(&self) -> bool {
        self.default_source.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens one sink or source and starts its engine.
pub(crate) fn open(sc: &SinkConfig, source: bool, config: &Config) -> Result<Sink, CoreError> {
    let what = if source { "source" } else { "sink" };
    let backend_err = |source| CoreError::Backend {
        name: sc.name.clone(),
        source,
    };
    let mut params = SinkParams {
        name: sc.name.clone(),
        spec: sc.spec,
        quantum: sc.quantum,
        max_streams: config.limits.streams_total,
        rt_priority: config.engine.realtime_priority,
    };
    let (handle, backend_name) = match (&sc.backend, source) {
        (SinkBackend::Alsa(a), _) => {
            let clock = a.clock.unwrap_or_else(|| alsa::default_clock(&a.device));
            let opened = alsa::open(alsa::AlsaParams {
                device: a.device.clone(),
                dir: if source {
                    alsa::Dir::Capture
                } else {
                    alsa::Dir::Playback
                },
                spec: sc.spec,
                format_explicit: a.format_explicit,
                period_frames: a.period_frames.unwrap_or(sc.quantum),
                periods: a
                    .periods
                    .unwrap_or(if clock == Clock::Device { 4 } else { 2 }),
                clock,
            })
            .map_err(backend_err)?;
            let g = opened.granted;
            tracing::info!(
                "{what} {}: ALSA PCM {:?} granted {}, period {} frames, buffer {} frames, {} clock",
                sc.name,
                a.device,
                g.spec,
                g.period_frames,
                g.buffer_frames,
                clock.name()
            );
            params.spec = g.spec;
            if clock == Clock::Device && (16..=8192).contains(&g.period_frames) {
                // One cycle per device period.
                params.quantum = g.period_frames;
            }
            let b = Box::new(opened.backend);
            let h = if source {
                SinkHandle::spawn_source(params, b)
            } else {
                SinkHandle::spawn(params, b)
            };
            (h, "alsa")
        }
        (SinkBackend::Null, true) => (
            SinkHandle::spawn_source(params, backend::open_null_capture(sc.spec)),
            "null",
        ),
        (SinkBackend::Null, false) => (
            SinkHandle::spawn(params, backend::open_null(sc.spec)),
            "null",
        ),
        (SinkBackend::File { path }, _) => (
            SinkHandle::spawn(
                params,
                backend::open_file(path, sc.spec).map_err(backend_err)?,
            ),
            "file",
        ),
    };
    let handle = handle.map_err(|source| CoreError::Engine {
        name: sc.name.clone(),
        source,
    })?;
    // Idle suspend for devices with a clock of their own to stop; a file sink's timeline is
    // its clock (silence where nothing played), so it never idles.
    if backend_name != "file" {
        handle
            .shared()
            .set_idle_suspend(std::time::Duration::from_secs(
                config.engine.idle_suspend_secs,
            ));
    }
    Ok(Sink {
        name: sc.name.clone(),
        backend: backend_name,
        handle,
        dev: DevState {
            source,
            default_source: AtomicBool::new(source && sc.default),
            seen_available: AtomicBool::new(true),
            ..DevState::default()
        },
    })
}

/// Opens every configured sink and source. A device that cannot be opened is logged (one
/// line with ALSA's reason) and left out; if no sink remains, a `null` sink stands in. With
/// no config file, ALSA cards are discovered first. Returns the devices and a notice for the
/// server info.
#[allow(clippy::type_complexity)]
pub(crate) fn open_all(
    config: &Config,
) -> Result<(Vec<Sink>, Vec<(SinkConfig, bool)>, Option<String>), CoreError> {
    let mut notice = None;
    let discovered;
    let config = if config.source_path.is_none() {
        let (c, n) = discover(config);
        discovered = c;
        notice = n;
        &discovered
    } else {
        config
    };
    let mut out = Vec::new();
    let mut managed = Vec::new();
    for (list, source) in [(&config.sinks, false), (&config.sources, true)] {
        for sc in list {
            match open(sc, source, config) {
                Ok(s) => {
                    out.push(s);
                    managed.push((sc.clone(), source));
                }
                Err(e @ CoreError::Backend { .. })
                    if matches!(sc.backend, SinkBackend::Alsa(_)) =>
                {
                    tracing::error!("{e}; starting without it");
                }
                Err(e) => return Err(e),
            }
        }
    }
    if !out.iter().any(|s| !s.dev.source) {
        let d = &Config::builtin_default().sinks[0];
        let null = SinkConfig {
            name: "null".into(),
            ..d.clone()
        };
        tracing::warn!("no sink could be opened; playing to a null sink");
        notice.get_or_insert_with(|| "no sink could be opened; playing to a null sink".into());
        out.push(open(&null, false, config)?);
    }
    // Exactly one default source, if any: the marked one, else the first.
    if !out.iter().any(|s| s.dev.is_default_source()) {
        if let Some(s) = out.iter_mut().find(|s| s.dev.source) {
            s.dev.default_source.store(true, Ordering::Relaxed);
        }
    }
    Ok((out, managed, notice))
}

/// Without a config: one sink and one source per ALSA card (its first PCM device, through
/// `plughw`), or a `null` sink and a `null` source when there is no card.
fn discover(base: &Config) -> (Config, Option<String>) {
    let mut config = base.clone();
    let cards = alsa::discover();
    let template = base.sinks.first().cloned().unwrap_or_else(|| SinkConfig {
        ..Config::builtin_default().sinks[0].clone()
    });
    if cards.is_empty() {
        let msg = "no sound card found: playing to a null sink and recording silence from a \
                   null source";
        tracing::warn!("{msg}");
        config.sources = vec![SinkConfig {
            name: "null-source".into(),
            backend: SinkBackend::Null,
            ..template.clone()
        }];
        config.sinks = vec![SinkConfig {
            backend: SinkBackend::Null,
            ..template
        }];
        return (config, Some(msg.into()));
    }
    config.sinks.clear();
    config.sources.clear();
    for (i, (device, card)) in cards.iter().enumerate() {
        tracing::info!("found ALSA card {card:?}: using {device}");
        let base_name: String = card
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(48)
            .collect();
        let base_name = format!("{base_name}-{i}");
        let alsa_cfg = crate::config::AlsaConfig {
            device: device.clone(),
            clock: None,
            period_frames: None,
            periods: None,
            format_explicit: false,
        };
        config.sinks.push(SinkConfig {
            name: base_name.clone(),
            backend: SinkBackend::Alsa(alsa_cfg.clone()),
            default: i == 0,
            ..template.clone()
        });
        config.sources.push(SinkConfig {
            name: format!("{base_name}-in"),
            backend: SinkBackend::Alsa(alsa_cfg),
            default: i == 0,
            ..template.clone()
        });
    }
    (config, None)
}

impl Core {
    /// Index of the sink (not source) named `name`.
    pub(crate) fn find_sink(&self, name: &str) -> Option<usize> {
        self.sinks
            .iter()
            .position(|s| !s.dev.source && !s.dev.is_removed() && s.name == name)
    }

    /// The default capture source's name.
    pub(crate) fn default_source_name(&self) -> Option<String> {
        self.sinks
            .iter()
            .find(|s| s.dev.is_default_source() && !s.dev.is_removed())
            .map(|s| s.name.clone())
    }

    /// `(index, monitor)` of the source named `name`: a capture source, or `SINK.monitor`.
    pub(crate) fn find_source(&self, name: &str) -> Result<(usize, bool), WireError> {
        if let Some(i) = self
            .sinks
            .iter()
            .position(|s| s.dev.source && !s.dev.is_removed() && s.name == name)
        {
            return Ok((i, false));
        }
        name.strip_suffix(MONITOR_SUFFIX)
            .and_then(|sink| self.find_sink(sink))
            .map(|i| (i, true))
            .ok_or_else(|| WireError::new(ErrorKind::NotFound, format!("no source named {name}")))
    }

    /// The info of device `i` (sink, capture source, or a sink's monitor).
    pub(crate) fn device_info_of(&self, i: usize, kind: DeviceKind, default: bool) -> DeviceInfo {
        let s = &self.sinks[i];
        let monitor = kind == DeviceKind::Monitor;
        let sh = s.handle.shared();
        let report = s.handle.report();
        let available = sh.available();
        DeviceInfo {
            name: if monitor {
                format!("{}{MONITOR_SUFFIX}", s.name)
            } else {
                s.name.clone()
            },
            kind,
            backend: s.backend.to_string(),
            spec: s.handle.spec(),
            quantum: s.handle.quantum(),
            is_default: default,
            suspended: sh.suspended(),
            volume: sh.volume(),
            muted: sh.muted(),
            monitor_of: monitor.then(|| s.name.clone()),
            state: if !(available || monitor) {
                DeviceState::Unavailable
            } else if sh.idle() {
                DeviceState::Idle
            } else {
                DeviceState::Running
            },
            clock: s.handle.clock().name().into(),
            device: report.device.clone(),
            period_frames: report.period_frames,
            buffer_frames: report.buffer_frames,
            xruns: sh.xruns(),
            suspends: sh.suspends(),
            detail: if available {
                None
            } else {
                lock(&s.dev.detail).clone()
            },
        }
    }

    /// Where the playback streams of unavailable sink `from` go: the default sink if it works,
    /// else the first working sink.
    pub(super) fn fallback(&self, from: usize, default: Option<usize>) -> Option<usize> {
        let ok = |i: usize| {
            let s = &self.sinks[i];
            i != from && !s.dev.source && !s.dev.is_removed() && s.handle.shared().available()
        };
        default
            .filter(|&d| ok(d))
            .or_else(|| (0..self.sinks.len()).find(|&i| ok(i)))
    }

    /// Called by `reap(index)`: reacts to a change of device `index`'s availability, and
    /// re-adds streams that arrived in transit. `retired` are the engine's returned streams
    /// still in the registry (not ended): they are moving.
    pub(super) fn device_events(&self, index: usize, reg: &mut super::Registry) {
        let sink = &self.sinks[index];
        let sh = sink.handle.shared();
        let now = sh.available();
        let before = sink.dev.seen_available.swap(now, Ordering::AcqRel);
        let what = if sink.dev.source { "source" } else { "sink" };
        if before && !now {
            let why = nix::errno::Errno::from_raw(sh.last_errno()).desc();
            *lock(&sink.dev.detail) = Some(format!("device error: {why}; retrying"));
            self.device_changed(reg, index);
            if sink.dev.source {
                tracing::error!(
                    "{what} {} is unavailable ({why}); its record streams pause until it is back",
                    sink.name
                );
                return;
            }
            let target = self.fallback(index, reg.default_sink);
            let moving: Vec<u32> = reg
                .streams
                .iter()
                .filter(|(_, s)| s.sink == index && s.direction == super::Direction::Playback)
                .map(|(id, _)| *id)
                .collect();
            match target {
                Some(t) => {
                    tracing::error!(
                        "{what} {} is unavailable ({why}); moving {} playback streams to {}",
                        sink.name,
                        moving.len(),
                        self.sinks[t].name
                    );
                    for id in moving {
                        let _ = self.start_move(reg, id, t); // a failure is logged
                    }
                }
                None => tracing::error!(
                    "{what} {} is unavailable ({why}) and no other sink works; its streams \
                     play into nothing until it is back",
                    sink.name
                ),
            }
        } else if !before && now {
            *lock(&sink.dev.detail) = None;
            self.device_changed(reg, index);
            let homecoming: Vec<u32> = reg
                .streams
                .iter()
                .filter(|(_, s)| s.home == index && s.sink != index)
                .map(|(id, _)| *id)
                .collect();
            tracing::info!(
                "{what} {} is available again; moving {} streams back",
                sink.name,
                homecoming.len()
            );
            for id in homecoming {
                let _ = self.start_move(reg, id, index); // a failure is logged
            }
        }
    }

    /// Points stream `id` at sink `to` and asks its current engine to let go of it (its release
    /// flag: this cannot fail).
    pub(super) fn start_move(
        &self,
        reg: &mut super::Registry,
        id: u32,
        to: usize,
    ) -> Result<(), crate::engine::EngineError> {
        let Some(s) = reg.streams.get_mut(&id) else {
            return Ok(());
        };
        let from = s.sink;
        if from == to {
            return Ok(());
        }
        self.sinks[from].handle.remove(&s.shared);
        s.sink = to;
        s.device = super::streams::device_name(&self.sinks[to], s.direction);
        reg.moving.insert(id);
        self.stream_changed(reg, id);
        Ok(())
    }

    /// A stream the engine handed back while its entry points elsewhere: add it there. On
    /// failure the stream ends and its owner is told.
    pub(super) fn land(
        &self,
        reg: &mut super::Registry,
        stream: crate::engine::Retired,
    ) -> Option<crate::engine::Retired> {
        use crate::engine::Retired;
        let id = stream.id();
        reg.moving.remove(&id);
        let Some(entry) = reg.streams.get(&id) else {
            return Some(stream);
        };
        let target = &self.sinks[entry.sink];
        // It left its last engine because we asked it to; the next must keep it.
        stream.shared().cancel_release();
        let res = match stream {
            Retired::Playback(p) => target.handle.add_playback(p),
            Retired::Record(r) => target.handle.add_record(r),
        };
        match res {
            Ok(()) => {
                tracing::info!(stream = id, device = %target.name, "stream moved");
                None
            }
            Err(e) => {
                let owner = entry.owner;
                if let Some(s) = reg.streams.remove(&id) {
                    self.stream_removed(reg, id, &s);
                }
                tracing::warn!(stream = id, "could not move stream to {}: {e}", target.name);
                let error = WireError::new(
                    ErrorKind::Busy,
                    format!("stream {id} ended: its device went away and {e}"),
                );
                Core::send_event(
                    reg,
                    owner,
                    soundgate_proto::wire::Event::StreamEnded { stream: id, error },
                );
                None
            }
        }
    }

    /// Logs new xruns of every device (rate-limited: at most once per call, called from
    /// `tick`) and real-time demotions.
    pub(crate) fn log_device_counters(&self) {
        for (_, s) in self.sinks.live() {
            let x = s.handle.shared().xruns();
            let seen = s.dev.logged_xruns.load(Ordering::Relaxed);
            // Rate-limited: the 1st, 2nd, 4th, 8th, ... xrun.
            if x > seen && (seen == 0 || x >= seen * 2) {
                s.dev.logged_xruns.store(x, Ordering::Relaxed);
                tracing::warn!(device = %s.name, xruns = x, "device xrun (recovered)");
            }
        }
    }
}

/// The spec a device's streams must match in rate (exposed for tests).
pub fn device_spec(s: &Sink) -> StreamSpec {
    s.handle.spec()
}
