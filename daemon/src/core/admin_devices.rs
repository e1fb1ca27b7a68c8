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
//! Creating and removing devices at run time is not supported: the device list is fixed at
//! start-up and indexed by position (streams and the housekeeping task refer to devices by
//! index), so `CreateDevice` and `RemoveDevice` answer `Invalid` after the policy check.

use super::{check_volume, err, Core, Registry, MONITOR_SUFFIX};
use crate::policy::{Action, Object};
use soundgate_proto::wire::{ClientId, ErrorKind, Reply, Request, WireError};
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
                Err(not_at_run_time("creating"))
            }
            Request::RemoveDevice { name } => {
                let mut reg = self.reg();
                self.authorize(
                    &mut reg,
                    client,
                    Action::ManageDevices,
                    &self.device_object(&name),
                )?;
                Err(not_at_run_time("removing"))
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
    fn find_device(&self, name: &str) -> Result<usize, WireError> {
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
    fn move_default_source(&self, reg: &mut Registry, index: usize) {
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

fn not_at_run_time(what: &str) -> WireError {
    err(
        ErrorKind::Invalid,
        format!("{what} devices is not supported at run time; edit the config and restart"),
    )
}
