//! Reloading the config at run time (`SIGHUP`) and ending every client's streams on the way
//! out (`SIGTERM`).
//!
//! A reload replaces in one piece what [`Core::live`] holds: the rules, the `[limits]` the
//! core enforces (stream and connection quotas, latency, the sample cache) and the engine
//! settings devices opened from then on get; and the prompt timeout of prompts raised from then
//! on. A request takes [`Core::live`] once, so it is decided wholly by the old or wholly by the
//! new settings. Streams are never touched by that swap: they keep playing.
//!
//! Devices: the new file's `[[sink]]`s and `[[source]]`s are compared, by name and kind, with
//! those the config opened ([`Core::managed`]): a new one is opened (as `CreateDevice` does),
//! one no longer listed is removed (as `RemoveDevice` does: its playback streams move to the
//! default sink, streams that cannot move end with an event), an unchanged one keeps running
//! untouched, and one whose entry changed (backend, format, rate, quantum) keeps running as it
//! is and is reported as needing a restart. The `default` marks are followed. Devices created
//! at run time (`sgctl device create`) or discovered without a config file are left alone, and
//! without a config file the devices are not touched at all.
//!
//! Not reloaded (reported by the daemon's log line, needing a restart): `[admin]`, `[audit]`,
//! `[pulse]` (the pulse conversion budget and whether its socket exists).

use super::{err, Core, Live};
use crate::config::{Config, SinkConfig};
use crate::policy::Policy;
use soundgate_proto::wire::{ClientId, ErrorKind, Event, StreamId};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What a reload changed, for its one log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Rules now in force.
    pub rules: usize,
    /// Whether the `[limits]` differ from the old ones.
    pub limits_changed: bool,
    /// Sinks and sources opened.
    pub added: Vec<String>,
    /// Sinks and sources removed.
    pub removed: Vec<String>,
    /// Playback streams moved off removed devices, and streams that ended with them.
    pub moved: usize,
    pub ended: usize,
    /// Devices whose entry changed: still running as they were until a restart.
    pub restart_needed: Vec<String>,
    /// Devices that could not be opened or removed, with the reason.
    pub failed: Vec<String>,
    /// Sections whose change needs a restart (`admin`, `audit`, `pulse`).
    pub sections_need_restart: Vec<&'static str>,
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "{} rules, limits {}, devices added: {}, removed: {} ({} streams moved, {} ended)",
            self.rules,
            if self.limits_changed {
                "changed"
            } else {
                "unchanged"
            },
            list(&self.added),
            list(&self.removed),
            self.moved,
            self.ended
        )?;
        if !self.restart_needed.is_empty() {
            write!(
                f,
                "; changed devices keep their old settings until a restart: {}",
                self.restart_needed.join(", ")
            )?;
        }
        if !self.sections_need_restart.is_empty() {
            write!(
                f,
                "; [{}] changed and needs a restart",
                self.sections_need_restart.join("], [")
            )?;
        }
        if !self.failed.is_empty() {
            write!(f, "; failed: {}", self.failed.join("; "))?;
        }
        Ok(())
    }
}

/// Whether two device entries differ in more than their `default` mark.
fn same_device(a: &SinkConfig, b: &SinkConfig) -> bool {
    SinkConfig {
        default: false,
        ..a.clone()
    } == SinkConfig {
        default: false,
        ..b.clone()
    }
}

fn kind(source: bool) -> &'static str {
    if source {
        "source"
    } else {
        "sink"
    }
}

impl Core {
    /// Puts `config` in force (see the module doc). Opening a device may block (ALSA): call it
    /// off the async workers.
    pub fn reload(&self, config: &Config) -> ReloadReport {
        let old = self.live();
        let mut report = ReloadReport {
            rules: config.rules.len(),
            limits_changed: old.limits != config.limits,
            ..ReloadReport::default()
        };
        if old.config.admin != config.admin {
            report.sections_need_restart.push("admin");
        }
        if old.config.audit != config.audit {
            report.sections_need_restart.push("audit");
        }
        if old.config.pulse != config.pulse {
            report.sections_need_restart.push("pulse");
        }
        let next = Config {
            admin: old.config.admin.clone(),
            audit: old.config.audit.clone(),
            pulse: old.config.pulse.clone(),
            ..config.clone()
        };
        let policy =
            Policy::new(config.rules.clone()).with_admin_access(old.policy.admin_access().clone());
        let live = Arc::new(Live {
            config: next,
            policy,
            limits: config.limits.clone(),
        });
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = live;
        self.consents()
            .set_prompt_timeout(Duration::from_secs(config.prompts.timeout_secs));
        if config.source_path.is_some() {
            self.reload_devices(config, &mut report);
        }
        report
    }

    fn reload_devices(&self, new: &Config, report: &mut ReloadReport) {
        let managed = self
            .managed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let wanted: Vec<(SinkConfig, bool)> = new
            .sinks
            .iter()
            .map(|s| (s.clone(), false))
            .chain(new.sources.iter().map(|s| (s.clone(), true)))
            .collect();
        let mut kept: Vec<(SinkConfig, bool)> = Vec::new();
        for (sc, source) in &wanted {
            let was = managed
                .iter()
                .find(|(m, s)| m.name == sc.name && s == source);
            match was {
                Some((m, _)) if same_device(m, sc) => kept.push((sc.clone(), *source)),
                Some((m, _)) => {
                    report
                        .restart_needed
                        .push(format!("{} {}", kind(*source), sc.name));
                    kept.push((m.clone(), *source));
                }
                None => match self.add_device(sc, *source) {
                    Ok(_) => {
                        report.added.push(format!("{} {}", kind(*source), sc.name));
                        kept.push((sc.clone(), *source));
                    }
                    Err(e) => {
                        report
                            .failed
                            .push(format!("{} {}: {}", kind(*source), sc.name, e.message))
                    }
                },
            }
        }
        self.follow_defaults(new);
        let gone = managed
            .iter()
            .filter(|(m, s)| !wanted.iter().any(|(w, ws)| w.name == m.name && ws == s));
        for (m, source) in gone {
            if !source {
                self.move_default_off(&m.name);
            }
            match self.drop_device(&m.name) {
                Ok((moved, ended)) => {
                    report.removed.push(format!("{} {}", kind(*source), m.name));
                    report.moved += moved;
                    report.ended += ended;
                }
                Err(e) => {
                    report.failed.push(format!(
                        "removing {} {}: {}",
                        kind(*source),
                        m.name,
                        e.message
                    ));
                    kept.push((m.clone(), *source));
                }
            }
        }
        *self.managed.lock().unwrap_or_else(|p| p.into_inner()) = kept;
    }

    /// Makes the new file's default sink and default source the defaults, if they are open.
    fn follow_defaults(&self, new: &Config) {
        let mut reg = self.reg();
        if let Some(index) = new
            .sinks
            .iter()
            .find(|s| s.default)
            .and_then(|s| self.find_sink(&s.name))
        {
            if reg.default_sink != Some(index) {
                let old = reg.default_sink.replace(index);
                for i in old.into_iter().chain([index]) {
                    self.device_changed(&mut reg, i);
                }
            }
        }
        let source = new.sources.iter().find(|s| s.default);
        if let Some(Ok((index, false))) = source.map(|s| self.find_source(&s.name)) {
            if !self.sinks[index].dev.is_default_source() {
                self.move_default_source(&mut reg, index);
            }
        }
    }

    /// Before sink `name` is removed: if it is the default, another live sink becomes it.
    fn move_default_off(&self, name: &str) {
        let mut reg = self.reg();
        let Some(index) = self.find_sink(name) else {
            return;
        };
        if reg.default_sink != Some(index) {
            return;
        }
        let other = self
            .sinks
            .live()
            .find(|(i, s)| *i != index && !s.is_source())
            .map(|(i, _)| i);
        if let Some(to) = other {
            reg.default_sink = Some(to);
            self.device_changed(&mut reg, index);
            self.device_changed(&mut reg, to);
        }
    }

    /// Ends every client's streams with an event saying the server is shutting down, then
    /// drops every connection's event queue, so each connection task delivers those events and
    /// hangs up (a pulse client gets its streams killed). Returns (clients, streams).
    pub fn end_all(&self) -> (usize, usize) {
        let clients: Vec<ClientId> = {
            let mut reg = self.reg();
            let ended: Vec<(StreamId, ClientId)> =
                reg.streams.iter().map(|(id, s)| (*id, s.owner)).collect();
            for (id, owner) in &ended {
                let error = err(
                    ErrorKind::Busy,
                    format!("stream {id} ended: the server is shutting down"),
                );
                Self::send_event(&mut reg, *owner, Event::StreamEnded { stream: *id, error });
            }
            tracing::debug!(streams = ended.len(), "ending every stream");
            reg.clients.keys().copied().collect()
        };
        let streams = self.reg().streams.len();
        for c in &clients {
            self.disconnect(*c);
        }
        (clients.len(), streams)
    }
}
