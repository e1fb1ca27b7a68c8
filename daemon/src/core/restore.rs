//! Persistent stream settings (what PulseAudio's stream-restore does): the volume and mute
//! last set on a stream are remembered for the stream owner's `(uid, app id)` and the stream's
//! device, and a new stream of that app on that device starts with them.
//!
//! - The key is the daemon-established identity (`identity.rs`: Flatpak, Snap, systemd unit,
//!   executable), never a client's label, plus the owner's uid, so one user's choice never
//!   changes another user's streams. An app whose id is `unknown` is not remembered.
//! - Remembered settings win over the volume and mute a create request asks for (as in
//!   PulseAudio, where stream-restore overrides the client's initial volume).
//! - Bounded: at most [`MAX_ENTRIES`] in all and [`MAX_PER_UID`] per uid; beyond that the
//!   least recently used entry (of that uid first) is dropped.
//!
//! # On disk
//!
//! `STATE_DIR/stream-settings.json`: `{"version": 1, "settings": [...]}`, least recently used
//! first, mode 0600, replaced atomically on every change through the same
//! [`OrderedWriter`] as `grants.json` (temp file, `fsync`, `rename`, `fsync` of the directory).
//! The core writes it with no lock held, before the reply that acknowledges the change, so an
//! acknowledged `SetVolume`/`SetMute` is durable. Unlike the grants file (whose loss would drop
//! every "deny always"), a file that cannot be understood is not worth refusing to start
//! over: it is renamed to `stream-settings.json.corrupt`, a warning is logged, and the store
//! starts empty.

use super::state_file::{self, OrderedWriter};
use super::{err, Registry};
use crate::policy::Action;
use serde::{Deserialize, Serialize};
use soundgate_proto::wire::{
    ClientId, ErrorKind, Reply, Request, StreamId, StreamSetting, WireError,
};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;

/// The settings file in the state dir.
pub const SETTINGS_FILE: &str = "stream-settings.json";
/// Where an unreadable settings file is moved at start-up.
pub const CORRUPT_FILE: &str = "stream-settings.json.corrupt";
/// The format version written and accepted.
const FORMAT_VERSION: u32 = 1;
/// Entries kept in all.
pub const MAX_ENTRIES: usize = 1024;
/// Entries kept per uid.
pub const MAX_PER_UID: usize = 256;
/// Longest app id remembered (longer ones are not).
const MAX_APP_ID: usize = 4096;

/// One remembered setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// The stream owner's uid.
    pub uid: u32,
    /// The stream owner's app id (daemon-established).
    pub app_id: String,
    /// The device the stream played to or recorded from.
    pub device: String,
    /// Linear volume, 0.0..=4.0.
    pub volume: f32,
    pub muted: bool,
}

/// What `stream-settings.json` holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    version: u32,
    settings: Vec<Setting>,
}

/// A version of the file to write (outside every lock) with [`RestoreStore::writer`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    generation: u64,
    bytes: Vec<u8>,
}

/// The remembered settings, least recently used first.
#[derive(Debug)]
pub struct RestoreStore {
    settings: Vec<Setting>,
    generation: u64,
    /// `None` for a store kept in memory.
    writer: Option<OrderedWriter>,
}

impl RestoreStore {
    /// A store with no file (a daemon run without a state dir).
    pub fn in_memory() -> RestoreStore {
        RestoreStore {
            settings: Vec::new(),
            generation: 0,
            writer: None,
        }
    }

    /// Loads `state_dir/stream-settings.json` if it exists. A file that cannot be read or
    /// understood is moved aside to [`CORRUPT_FILE`] (logged) and the store starts empty.
    pub fn open(state_dir: &Path) -> RestoreStore {
        let mut store = RestoreStore {
            writer: Some(OrderedWriter::new(state_dir, SETTINGS_FILE)),
            ..RestoreStore::in_memory()
        };
        let path = state_dir.join(SETTINGS_FILE);
        match load(&path) {
            Ok(settings) => {
                tracing::debug!(path = %path.display(), settings = settings.len(), "loaded stream settings");
                store.settings = settings;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                let aside = state_dir.join(CORRUPT_FILE);
                match fs::rename(&path, &aside) {
                    Ok(()) => tracing::warn!(
                        path = %path.display(), kept = %aside.display(),
                        "stream settings unreadable ({e}); kept aside, starting with none"
                    ),
                    Err(re) => tracing::warn!(
                        path = %path.display(),
                        "stream settings unreadable ({e}) and cannot be moved aside ({re}); \
                         starting with none"
                    ),
                }
            }
        }
        store
    }

    /// The file, or `None` for a store kept in memory.
    pub fn path(&self) -> Option<PathBuf> {
        self.writer.as_ref().map(OrderedWriter::path)
    }

    /// Writes this store's snapshots; `None` for a store kept in memory.
    pub fn writer(&self) -> Option<OrderedWriter> {
        self.writer.clone()
    }

    /// The volume and mute remembered for `(uid, app_id)` on `device`, marking it used.
    pub fn lookup(&mut self, uid: u32, app_id: &str, device: &str) -> Option<(f32, bool)> {
        let pos = self.position(uid, app_id, device)?;
        let s = self.settings.remove(pos);
        let found = (s.volume, s.muted);
        self.settings.push(s);
        Some(found)
    }

    /// Remembers `volume` and `muted` for `(uid, app_id)` on `device`. Returns the version to
    /// write, or `None` if nothing changed on disk (the same values, an app that is not
    /// remembered, or a store in memory).
    pub fn remember(
        &mut self,
        uid: u32,
        app_id: &str,
        device: &str,
        volume: f32,
        muted: bool,
    ) -> Option<Snapshot> {
        if !rememberable(app_id) || !volume.is_finite() {
            return None;
        }
        let new = Setting {
            uid,
            app_id: app_id.to_string(),
            device: device.to_string(),
            volume,
            muted,
        };
        if let Some(pos) = self.position(uid, app_id, device) {
            let old = self.settings.remove(pos);
            self.settings.push(new);
            if old.volume == volume && old.muted == muted {
                return None;
            }
        } else {
            if self.settings.iter().filter(|s| s.uid == uid).count() >= MAX_PER_UID {
                if let Some(pos) = self.settings.iter().position(|s| s.uid == uid) {
                    self.settings.remove(pos);
                }
            }
            if self.settings.len() >= MAX_ENTRIES {
                self.settings.remove(0);
            }
            self.settings.push(new);
        }
        self.snapshot()
    }

    /// Forgets the settings of `app_id` (of every uid, or only `uid`'s), on every device or
    /// only `device`. Returns what was forgotten and the version to write.
    pub fn forget(
        &mut self,
        app_id: &str,
        uid: Option<u32>,
        device: Option<&str>,
    ) -> (Vec<Setting>, Option<Snapshot>) {
        let (gone, kept): (Vec<Setting>, Vec<Setting>) = std::mem::take(&mut self.settings)
            .into_iter()
            .partition(|s| {
                s.app_id == app_id
                    && uid.is_none_or(|u| u == s.uid)
                    && device.is_none_or(|d| d == s.device)
            });
        self.settings = kept;
        if gone.is_empty() {
            return (gone, None);
        }
        let snap = self.snapshot();
        (gone, snap)
    }

    /// Every setting, least recently used first.
    pub fn list(&self) -> &[Setting] {
        &self.settings
    }

    fn position(&self, uid: u32, app_id: &str, device: &str) -> Option<usize> {
        self.settings
            .iter()
            .position(|s| s.uid == uid && s.app_id == app_id && s.device == device)
    }

    /// The settings now, as a new generation (`None` for a store kept in memory).
    fn snapshot(&mut self) -> Option<Snapshot> {
        self.writer.as_ref()?;
        let file = SettingsFile {
            version: FORMAT_VERSION,
            settings: self.settings.clone(),
        };
        // Serialising plain strings, numbers and booleans cannot fail; a volume that is not
        // finite is never stored (see `remember`).
        let mut bytes = serde_json::to_vec_pretty(&file).ok()?;
        bytes.push(b'\n');
        self.generation = self.generation.saturating_add(1);
        Some(Snapshot {
            generation: self.generation,
            bytes,
        })
    }
}

/// Puts `snap` on disk with `writer` (see [`state_file`]); returns once it is durable.
pub fn write(writer: &OrderedWriter, snap: &Snapshot) -> io::Result<()> {
    writer.write(snap.generation, &snap.bytes)
}

/// Whether settings of this app are remembered: not for an app the daemon could not identify.
pub fn rememberable(app_id: &str) -> bool {
    app_id != "unknown" && !app_id.is_empty() && app_id.len() <= MAX_APP_ID
}

fn load(path: &Path) -> io::Result<Vec<Setting>> {
    let bytes = fs::read(path)?;
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let file: SettingsFile = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if file.version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {} (this daemon reads version {FORMAT_VERSION})",
            file.version
        )));
    }
    let mut out: Vec<Setting> = Vec::with_capacity(file.settings.len().min(MAX_ENTRIES));
    for s in file.settings {
        if !s.volume.is_finite() || !(0.0..=super::MAX_VOLUME).contains(&s.volume) {
            return Err(bad(format!("volume {} is out of range", s.volume)));
        }
        if !rememberable(&s.app_id) {
            return Err(bad(format!("app id {:?} is not remembered", s.app_id)));
        }
        if out
            .iter()
            .any(|o| o.uid == s.uid && o.app_id == s.app_id && o.device == s.device)
        {
            return Err(bad(format!(
                "{} on {} (uid {}) appears twice",
                s.app_id, s.device, s.uid
            )));
        }
        out.push(s);
    }
    // An older or edited file may hold more than the bounds: keep the most recent.
    let excess = out.len().saturating_sub(MAX_ENTRIES);
    out.drain(..excess);
    Ok(out)
}

// The core's use of the store. Lock order: the registry, then the store; neither is held
// while the file is written.
impl super::Core {
    fn restore_store(&self) -> MutexGuard<'_, RestoreStore> {
        self.restore.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The volume and mute remembered for `client`'s app on `device`, if any.
    pub(super) fn remembered(
        &self,
        reg: &Registry,
        client: ClientId,
        device: &str,
    ) -> Option<(f32, bool)> {
        let c = reg.clients.get(&client)?;
        self.restore_store()
            .lookup(c.subject.uid, &c.subject.app_id, device)
    }

    /// Applies the settings remembered for `stream`'s owner on its device (now), if any.
    pub(super) fn restore_onto(&self, reg: &Registry, stream: StreamId, device: &str) {
        let Some(s) = reg.streams.get(&stream) else {
            return;
        };
        if let Some((volume, muted)) = self.remembered(reg, s.owner, device) {
            s.shared.set_volume(volume);
            s.shared.set_muted(muted);
        }
    }

    /// Remembers `stream`'s volume and mute for its owner's app on its device, after
    /// `client` changed one of them, and writes the file before returning (so the reply that
    /// follows acknowledges a durable change). A failed write is logged; the setting is then
    /// kept in memory only, until the next write succeeds.
    pub(super) fn remember_stream(&self, client: ClientId, stream: StreamId) {
        let (snap, writer) = {
            let reg = self.reg();
            let Some(s) = reg.streams.get(&stream) else {
                return;
            };
            let Some(owner) = reg.clients.get(&s.owner) else {
                return;
            };
            let mut store = self.restore_store();
            let snap = store.remember(
                s.uid,
                &owner.subject.app_id,
                &s.device,
                s.shared.volume(),
                s.shared.muted(),
            );
            (snap, store.writer())
        };
        let (Some(snap), Some(writer)) = (snap, writer) else {
            return;
        };
        if let Err(e) = write(&writer, &snap) {
            if let Some(suppressed) = self.reg().may_log(client) {
                tracing::warn!(
                    client, stream, suppressed, path = %writer.path().display(),
                    "cannot remember the stream's settings: {e}"
                );
            }
        }
    }

    /// `ListStreamSettings` and `ForgetStreamSettings` (administrators).
    pub(super) fn stream_settings_request(
        &self,
        client: ClientId,
        req: Request,
    ) -> Result<Reply, WireError> {
        match req {
            Request::ListStreamSettings => {
                self.may_read(client, Action::ReadStreamSettings)?;
                let list = self.restore_store().list().iter().map(to_wire).collect();
                Ok(Reply::StreamSettings(list))
            }
            Request::ForgetStreamSettings {
                app_id,
                uid,
                device,
            } => {
                self.act(client, Action::ManageStreamSettings)?;
                let (gone, snap, writer) = {
                    let mut store = self.restore_store();
                    let (gone, snap) = store.forget(&app_id, uid, device.as_deref());
                    (gone, snap, store.writer())
                };
                if gone.is_empty() {
                    let on = device.map(|d| format!(" on {d}")).unwrap_or_default();
                    let of = uid.map(|u| format!(" of uid {u}")).unwrap_or_default();
                    return Err(err(
                        ErrorKind::NotFound,
                        format!("no stream settings remembered for {app_id}{of}{on}"),
                    ));
                }
                if let (Some(snap), Some(w)) = (snap, writer) {
                    write(&w, &snap).map_err(|e| {
                        err(
                            ErrorKind::Internal,
                            format!(
                                "forgotten until the daemon restarts: cannot write {}: {e}",
                                w.path().display()
                            ),
                        )
                    })?;
                }
                tracing::info!(client, app = %app_id, forgotten = gone.len(), "stream settings forgotten");
                Ok(Reply::StreamSettings(gone.iter().map(to_wire).collect()))
            }
            other => Err(err(
                ErrorKind::Invalid,
                format!("{other:?} is not a stream settings request"),
            )),
        }
    }
}

fn to_wire(s: &Setting) -> StreamSetting {
    StreamSetting {
        uid: s.uid,
        app_id: s.app_id.clone(),
        device: s.device.clone(),
        volume: s.volume,
        muted: s.muted,
    }
}

/// The path of the temp file, for tests that look for leftovers.
pub fn tmp_path(state_dir: &Path) -> PathBuf {
    state_file::tmp_path(state_dir, SETTINGS_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_snap(store: &RestoreStore, snap: Option<Snapshot>) {
        if let (Some(w), Some(s)) = (store.writer(), snap) {
            write(&w, &s).unwrap();
        }
    }

    #[test]
    fn remembered_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = RestoreStore::open(dir.path());
        let snap = s.remember(1000, "exe:/usr/bin/sgcat", "out", 0.3, false);
        write_snap(&s, snap);
        let snap = s.remember(1000, "exe:/usr/bin/sgcat", "other", 0.5, true);
        write_snap(&s, snap);
        // Same values: nothing to write.
        assert!(s
            .remember(1000, "exe:/usr/bin/sgcat", "out", 0.3, false)
            .is_none());
        let mut s = RestoreStore::open(dir.path());
        assert_eq!(
            s.lookup(1000, "exe:/usr/bin/sgcat", "out"),
            Some((0.3, false))
        );
        assert_eq!(
            s.lookup(1000, "exe:/usr/bin/sgcat", "other"),
            Some((0.5, true))
        );
        assert_eq!(s.lookup(1001, "exe:/usr/bin/sgcat", "out"), None);
        assert!(!tmp_path(dir.path()).exists());
        let (gone, snap) = s.forget("exe:/usr/bin/sgcat", None, Some("out"));
        assert_eq!(gone.len(), 1);
        write_snap(&s, snap);
        let s = RestoreStore::open(dir.path());
        assert_eq!(s.list().len(), 1);
        assert_eq!(s.list()[0].device, "other");
    }

    #[test]
    fn unknown_apps_are_not_remembered() {
        let mut s = RestoreStore::in_memory();
        assert!(s.remember(1000, "unknown", "out", 0.3, false).is_none());
        assert_eq!(s.lookup(1000, "unknown", "out"), None);
        assert!(s.list().is_empty());
    }

    #[test]
    fn bounded_least_recently_used_first() {
        let mut s = RestoreStore::in_memory();
        for i in 0..MAX_PER_UID + 10 {
            s.remember(7, &format!("exe:/a/{i}"), "out", 0.5, false);
        }
        assert_eq!(s.list().len(), MAX_PER_UID);
        assert_eq!(s.lookup(7, "exe:/a/0", "out"), None);
        assert_eq!(s.lookup(7, "exe:/a/10", "out"), Some((0.5, false)));
        // Another uid's entries are not evicted by this uid's.
        s.remember(8, "exe:/b", "out", 0.2, false);
        for i in 0..MAX_PER_UID {
            s.remember(7, &format!("exe:/c/{i}"), "out", 0.5, false);
        }
        assert_eq!(s.lookup(8, "exe:/b", "out"), Some((0.2, false)));
        // The total bound.
        for uid in 100..(100 + (MAX_ENTRIES / MAX_PER_UID) as u32 + 1) {
            for i in 0..MAX_PER_UID {
                s.remember(uid, &format!("exe:/d/{i}"), "out", 0.5, false);
            }
        }
        assert_eq!(s.list().len(), MAX_ENTRIES);
    }

    #[test]
    fn corrupt_file_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SETTINGS_FILE), b"{\"version\": 1, \"sett").unwrap();
        let s = RestoreStore::open(dir.path());
        assert!(s.list().is_empty());
        assert!(!dir.path().join(SETTINGS_FILE).exists());
        assert_eq!(
            fs::read(dir.path().join(CORRUPT_FILE)).unwrap(),
            b"{\"version\": 1, \"sett"
        );
    }
}
