//! Device administration (admin-only by default): suspend and resume, a device's own volume
//! and mute, the default capture source, and creating or removing devices.
//!
//! Every request is authorised first, against the device it names (`Object::Sink` for a sink
//! or an unknown name, `Object::Source` for a capture source), so a client that may not
//! administer devices is refused the same way whether the device exists or not. Only then are
//! the arguments checked (`Invalid`) and the device looked up (`NotFound`).
//!
//! The controls are atomics in the device's [`crate::engine::SinkShared`]; the engine applies
//! them from its next cycle (see its module doc: a suspended sink consumes nothing and writes
//! silence, a device gain ramps over one cycle and applies before clamping). Each change is
//! published to subscribers as `DeviceChanged`.
//!
//! Creating and removing devices at run time: the device list is an append-only table with
//! stable indices ([`super::devices::DeviceTable`]). `CreateDevice` validates like the config
//! does, opens the device as at start-up, appends it and hands its index to the housekeeping
//! task (which watches its notify eventfd). `RemoveDevice` refuses the last sink and the
//! default sink; otherwise it marks the device removed (every lookup skips it from then on),
//! ends its record streams (`StreamEnded`), moves its playback streams to the fallback sink
//! (the default sink if it works; a stream that fits nowhere ends), then stops its engine,
//! which retires every stream it carried, and reaps them (landing the moved ones). A removed
//! device keeps its slot, so its name can be used again by a new device.

use super::{check_volume, err, Core, Registry, MONITOR_SUFFIX};
use crate::config::{check_device_name, AlsaConfig, SinkBackend, SinkConfig, QUANTUM_RANGE};
use crate::policy::{Action, Object};
use soundgate_proto::wire::{
    ClientId, DeviceKind, Direction, ErrorKind, Event, NewDevice, Reply, Request, WireError,
};
use std::sync::atomic::Ordering;

impl Core {
    pub(super) fn device_request(
        &self,
        client: ClientId,
        req: Request,
    ) -> Result<Reply, WireError> {
        match req {
            Request::SuspendDevice { device, suspend } => {
                self.set_device(client, &device, Action::Suspend, Ok(()), |sh| {
                    sh.set_suspended(suspend);
                    (if suspend { "suspended" } else { "resumed" }).to_string()
                })
            }
            Request::SetDeviceVolume { device, volume } => {
                let valid = check_volume(volume);
                self.set_device(client, &device, Action::DeviceVolume, valid, |sh| {
                    sh.set_volume(volume);
                    format!("volume set to {volume}")
                })
            }
            Request::SetDeviceMute { device, muted } => {
                self.set_device(client, &device, Action::DeviceVolume, Ok(()), |sh| {
                    sh.set_muted(muted);
                    (if muted { "muted" } else { "unmuted" }).to_string()
                })
            }
            Request::SetDefaultSource { source } => self.set_default_source(client, &source),
            Request::CreateDevice { device } => {
                let mut reg = self.reg();
                let name = device.name.as_str();
                self.authorize(
                    &mut reg,
                    client,
                    Action::ManageDevices,
                    &Object::Sink { name },
                )?;
                drop(reg);
                self.create_device(client, device)
            }
            Request::RemoveDevice { name } => {
                let mut reg = self.reg();
                self.authorize(
                    &mut reg,
                    client,
                    Action::ManageDevices,
                    &self.device_object(&name),
                )?;
                drop(reg);
                self.remove_device(client, &name)
            }
            other => Err(err(
                ErrorKind::Internal,
                format!("not a device request: {other:?}"),
            )),
        }
    }

    /// The policy object for a device name: a capture source, else a sink (known or not).
    fn device_object<'a>(&self, name: &'a str) -> Object<'a> {
        match self.find_source(name) {
            Ok((_, false)) => Object::Source {
                name,
                monitor: false,
            },
            _ => Object::Sink { name },
        }
    }

    /// Index of the sink or capture source named `name` (a monitor is not a device of its
    /// own: its sink's controls are the sink's).
    pub(super) fn find_device(&self, name: &str) -> Result<usize, WireError> {
        if let Some(i) = self.find_sink(name) {
            return Ok(i);
        }
        match self.find_source(name) {
            Ok((i, false)) => Ok(i),
            Ok((_, true)) => Err(err(
                ErrorKind::Invalid,
                format!(
                    "{name} is a monitor; control its sink {}",
                    name.strip_suffix(MONITOR_SUFFIX).unwrap_or(name)
                ),
            )),
            Err(_) => Err(err(ErrorKind::NotFound, format!("no device named {name}"))),
        }
    }

    /// Authorises `action` on device `name`, then returns `valid` if it is an error (the
    /// argument check), else applies `f` to the device's engine controls, tells subscribers,
    /// and logs what `f` says it did.
    fn set_device(
        &self,
        client: ClientId,
        name: &str,
        action: Action,
        valid: Result<(), WireError>,
        f: impl FnOnce(&crate::engine::SinkShared) -> String,
    ) -> Result<Reply, WireError> {
        let mut reg = self.reg();
        self.authorize(&mut reg, client, action, &self.device_object(name))?;
        valid?;
        let index = self.find_device(name)?;
        let what = f(self.sinks[index].handle.shared());
        self.device_changed(&mut reg, index);
        tracing::info!(client, device = name, "device {what}");
        Ok(Reply::Ok)
    }

    fn set_default_source(&self, client: ClientId, name: &str) -> Result<Reply, WireError> {
        let mut reg = self.reg();
        let object = Object::Source {
            name,
            monitor: name.ends_with(MONITOR_SUFFIX),
        };
        self.authorize(&mut reg, client, Action::SetDefault, &object)?;
        let index = match self.find_source(name)? {
            (i, false) => i,
            (_, true) => {
                return Err(err(
                    ErrorKind::Invalid,
                    format!("{name} is a monitor; only a capture source can be the default"),
                ))
            }
        };
        self.move_default_source(&mut reg, index);
        tracing::info!(client, source = name, "default source changed");
        Ok(Reply::Ok)
    }

    /// Makes capture source `index` the only default one and tells subscribers.
    pub(super) fn move_default_source(&self, reg: &mut Registry, index: usize) {
        let mut changed = vec![index];
        for (i, s) in self.sinks.iter().enumerate() {
            let was = s.dev.default_source.swap(i == index, Ordering::AcqRel);
            if was && i != index {
                changed.push(i);
            }
        }
        for i in changed {
            self.device_changed(reg, i);
        }
    }
}

/// The device config for `d`, validated as the config file's `[[sink]]`/`[[source]]` are.
fn device_config(d: &NewDevice) -> Result<(SinkConfig, bool), WireError> {
    let invalid = |m: String| err(ErrorKind::Invalid, m);
    let source = match d.kind {
        DeviceKind::Sink => false,
        DeviceKind::Capture => true,
        DeviceKind::Monitor => {
            return Err(invalid(
                "a monitor cannot be created: every sink has one".into(),
            ))
        }
    };
    let kind = if source { "source" } else { "sink" };
    let name = &d.name;
    check_device_name(name, false).map_err(|why| invalid(format!("{kind} {name:?}: {why}")))?;
    if d.backend != "alsa" && d.pcm.is_some() {
        return Err(invalid(format!(
            "{kind} {name:?}: a PCM is only for backend \"alsa\""
        )));
    }
    if d.backend != "file" && d.path.is_some() {
        return Err(invalid(format!(
            "{kind} {name:?}: a path is only for sink backend \"file\""
        )));
    }
    let backend = match (d.backend.as_str(), source) {
        ("null", _) => SinkBackend::Null,
        ("file", true) => {
            return Err(invalid(format!(
                "source {name:?}: backend \"file\" is for sinks only"
            )))
        }
        ("file", false) => {
            let Some(path) = &d.path else {
                return Err(invalid(format!(
                    "sink {name:?}: backend \"file\" needs a path"
                )));
            };
            let path = std::path::PathBuf::from(path);
            if !path.is_absolute() {
                return Err(invalid(format!(
                    "sink {name:?}: path {path:?} must be absolute"
                )));
            }
            SinkBackend::File { path }
        }
        ("alsa", _) => {
            let Some(pcm) = &d.pcm else {
                return Err(invalid(format!(
                    "{kind} {name:?}: backend \"alsa\" needs a PCM (e.g. \"hw:0,0\")"
                )));
            };
            if pcm.is_empty() || pcm.len() > 256 || pcm.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "{kind} {name:?}: the PCM must be a name of 1 to 256 printable characters"
                )));
            }
            SinkBackend::Alsa(AlsaConfig {
                device: pcm.clone(),
                clock: None,
                period_frames: None,
                periods: None,
                format_explicit: true,
            })
        }
        (other, _) => {
            return Err(invalid(format!(
                "{kind} {name:?}: unknown backend {other:?} (expected {})",
                if source {
                    "\"null\" or \"alsa\""
                } else {
                    "\"null\", \"file\" or \"alsa\""
                }
            )))
        }
    };
    d.spec
        .validate()
        .map_err(|e| invalid(format!("{kind} {name:?}: {e}")))?;
    if !QUANTUM_RANGE.contains(&i64::from(d.quantum)) {
        return Err(invalid(format!(
            "{kind} {name:?}: quantum {} is outside {}..={}",
            d.quantum,
            QUANTUM_RANGE.start,
            QUANTUM_RANGE.end - 1
        )));
    }
    let sc = SinkConfig {
        name: name.clone(),
        backend,
        spec: d.spec,
        quantum: d.quantum,
        default: false,
    };
    Ok((sc, source))
}

impl Core {
    /// `CreateDevice`, once authorised.
    fn create_device(&self, client: ClientId, d: NewDevice) -> Result<Reply, WireError> {
        let (sc, source) = device_config(&d)?;
        let backend = self.add_device(&sc, source)?;
        tracing::info!(
            client, device = %sc.name, backend, spec = %sc.spec, quantum = sc.quantum,
            "{} created", if source { "capture source" } else { "sink" }
        );
        Ok(Reply::Ok)
    }

    /// Opens device `sc` and adds it (for `CreateDevice` and a reload); its backend's name.
    pub(super) fn add_device(
        &self,
        sc: &SinkConfig,
        source: bool,
    ) -> Result<&'static str, WireError> {
        // Unique among sinks and sources; a name ending in `.monitor` was refused above.
        let taken = || {
            self.find_sink(&sc.name).is_some()
                || self
                    .find_source(&sc.name)
                    .is_ok_and(|(_, monitor)| !monitor)
        };
        if taken() {
            return Err(err(
                ErrorKind::Invalid,
                format!("a device named {} exists", sc.name),
            ));
        }
        // Opening may take a while (ALSA): outside the registry lock.
        let sink = super::devices::open(sc, source, &self.live().config).map_err(|e| {
            tracing::warn!("opening device {}: {e}", sc.name);
            err(ErrorKind::Invalid, e.to_string())
        })?;
        let mut reg = self.reg();
        // Again, under the lock: another request may have created the name meanwhile. A
        // refused device is dropped here, which stops its engine.
        if taken() {
            return Err(err(
                ErrorKind::Invalid,
                format!("a device named {} exists", sc.name),
            ));
        }
        let backend = sink.backend;
        let index = self.sinks.push(Box::new(sink)).map_err(|_| {
            err(
                ErrorKind::Quota,
                format!(
                    "the server has had {} devices, its most; restart it to create more",
                    super::devices::MAX_DEVICES
                ),
            )
        })?;
        if source && self.default_source_name().is_none() {
            self.sinks[index]
                .dev
                .default_source
                .store(true, Ordering::Release);
        }
        if let Some(tx) = self.new_devices.get() {
            let _ = tx.send(index);
        }
        self.device_changed(&mut reg, index);
        Ok(backend)
    }

    /// `RemoveDevice`, once authorised.
    fn remove_device(&self, client: ClientId, name: &str) -> Result<Reply, WireError> {
        let source = self.find_device(name).map(|i| self.sinks[i].dev.source)?;
        let (moved, ended) = self.drop_device(name)?;
        tracing::info!(
            client,
            device = name,
            moved,
            ended,
            "{} removed",
            if source { "capture source" } else { "sink" }
        );
        Ok(Reply::Ok)
    }

    /// Removes device `name` (for `RemoveDevice` and a reload): its playback streams move to
    /// the fallback sink, the others end with an event. How many (moved, ended).
    pub(super) fn drop_device(&self, name: &str) -> Result<(usize, usize), WireError> {
        let mut reg = self.reg();
        let index = self.find_device(name)?;
        let dev = &self.sinks[index];
        let source = dev.dev.source;
        if !source {
            if self.sinks.live().all(|(i, s)| i == index || s.dev.source) {
                return Err(err(
                    ErrorKind::Invalid,
                    format!("{name} is the last sink; the server needs one"),
                ));
            }
            if reg.default_sink == Some(index) {
                return Err(err(
                    ErrorKind::Invalid,
                    format!("{name} is the default sink; make another sink the default first"),
                ));
            }
        }
        // From here on no lookup finds it, so no stream is added to it.
        dev.dev.removed.store(true, Ordering::Release);
        let target = if source {
            None
        } else {
            self.fallback(index, reg.default_sink)
        };
        let on_it: Vec<u32> = reg
            .streams
            .iter()
            .filter(|(_, s)| s.sink == index)
            .map(|(id, _)| *id)
            .collect();
        let (mut moved, mut ended) = (0usize, 0usize);
        for id in on_it {
            let fits = |s: &super::StreamEntry| {
                let t = target?;
                (s.direction == Direction::Playback
                    && self
                        .check_geometry(
                            &self.sinks[t],
                            &s.spec,
                            s.capacity,
                            2,
                            self.live().limits.max_latency_ms,
                        )
                        .is_ok())
                .then_some(t)
            };
            let to = reg.streams.get(&id).and_then(fits);
            if let Some(t) = to {
                if self.start_move(&mut reg, id, t).is_ok() {
                    if let Some(s) = reg.streams.get_mut(&id) {
                        s.home = t;
                    }
                    moved += 1;
                    continue;
                }
            }
            let Some(s) = reg.streams.remove(&id) else {
                continue;
            };
            // Ending it marks nothing in the engine: it is dropped when the stopped engine
            // retires it (see `reap`).
            self.detach(&mut reg, &s, id);
            self.stream_removed(&mut reg, id, &s);
            let what = if s.direction == Direction::Record {
                "recorded from"
            } else {
                "played to"
            };
            let error = err(
                ErrorKind::NotFound,
                format!("stream {id} ended: the device it {what}, {name}, was removed"),
            );
            Self::send_event(&mut reg, s.owner, Event::StreamEnded { stream: id, error });
            ended += 1;
        }
        // Streams elsewhere that would go home to it stay where they are.
        for s in reg.streams.values_mut() {
            if s.home == index {
                s.home = s.sink;
            }
        }
        if source && dev.dev.default_source.swap(false, Ordering::AcqRel) {
            if let Some((i, _)) = self.sinks.live().find(|(_, s)| s.dev.source) {
                self.move_default_source(&mut reg, i);
            }
        }
        if source {
            self.device_removed(&mut reg, name, DeviceKind::Capture);
        } else {
            self.device_removed(&mut reg, name, DeviceKind::Sink);
            let monitor = format!("{name}{MONITOR_SUFFIX}");
            self.device_removed(&mut reg, &monitor, DeviceKind::Monitor);
        }
        drop(reg);
        // Blocks for up to a cycle and the backend's finish (a WAV file's header): outside the
        // registry lock. The engine retires every stream it carried or had queued.
        if let Err(e) = dev.handle.stop() {
            tracing::error!(device = name, "stopping removed device: {e}");
        }
        // Lands the moved streams on their new device, frees the ended ones.
        self.reap(index);
        // Wakes the housekeeping watcher of this device so that it sees it is gone and ends.
        // Its watcher holds its own clone of the eventfd; the handle's end is closed now, so
        // a removed device keeps no fd.
        dev.handle.wake_notify();
        dev.handle.release_notify();
        Ok((moved, ended))
    }
}
