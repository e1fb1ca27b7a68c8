//! Grants: the answers prompt agents gave, remembered so the same question is not asked again.
//!
//! A grant lets (or forbids) one app of one user do one [`Action`] to one device (or any
//! device). Its [`GrantScope`] says how long it lives:
//!
//! - [`GrantScope::Once`]: for the one check it was given for (see [`GrantStore::consume_once`]);
//! - [`GrantScope::Session`]: until the client that asked disconnects
//!   ([`GrantStore::end_session`]);
//! - [`GrantScope::Always`]: for the `(uid, app_id)` pair, across clients and restarts. Only
//!   these are written to disk, in `STATE_DIR/grants.json`.
//!
//! # On disk
//!
//! `grants.json` is `{"version": 1, "next_id": N, "grants": [...]}`, mode 0600. It is replaced
//! atomically on every change (temp file, `fsync`, `rename`, `fsync` of the directory), so a
//! crash at any moment leaves either the old or the new list, never a mix. A file that cannot be
//! read or parsed is an error naming the file and the reason: the store never silently starts
//! empty over a file it could not understand (that would drop every "deny always").
//!
//! # Lookup
//!
//! [`GrantStore::lookup`] returns the most specific grant that applies, in this order:
//! a Once/Session grant of this very client with this exact target, then one with any target,
//! then an Always grant of `(uid, app_id)` with this exact target, then one with any target.
//! A newer grant replaces an older one with the same key when it is added, so there is at most
//! one grant per key and tier.

use super::state_file::OrderedWriter;
use crate::policy::{Action, Subject};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The grants file in the state dir.
pub const GRANTS_FILE: &str = "grants.json";
/// The temp file a new version is written to before it is renamed over [`GRANTS_FILE`].
pub const GRANTS_TMP: &str = "grants.json.tmp";
/// The format version written and accepted.
const FORMAT_VERSION: u32 = 1;

/// How long a grant lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrantScope {
    /// For the one check it was given for.
    Once,
    /// Until the client disconnects.
    Session,
    /// For the `(uid, app_id)`, persisted.
    Always,
}

impl GrantScope {
    /// `once`, `session`, `always`.
    pub const fn name(self) -> &'static str {
        match self {
            GrantScope::Once => "once",
            GrantScope::Session => "session",
            GrantScope::Always => "always",
        }
    }
}

/// A remembered answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Unique within this store (never reused for Always grants, even after a restart).
    pub id: u64,
    /// The user it applies to.
    pub uid: u32,
    /// The app it applies to (the daemon-established app id).
    pub app_id: String,
    /// The action it allows or denies.
    pub action: Action,
    /// The device name; `None` for any device.
    pub target: Option<String>,
    /// Allow (`true`) or deny.
    pub allow: bool,
    /// How long it lives.
    pub scope: GrantScope,
    /// Once/Session: the client it belongs to. Always: `None`.
    pub client: Option<u32>,
    /// When it was made, in unix seconds.
    pub created: u64,
    /// Who answered, e.g. `agent pid 123 uid 0`.
    pub by: String,
}

/// A grant to add: [`Grant`] without the id and creation time, which the store assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantNew {
    /// The user it applies to.
    pub uid: u32,
    /// The app it applies to.
    pub app_id: String,
    /// The action it allows or denies.
    pub action: Action,
    /// The device name; `None` for any device.
    pub target: Option<String>,
    /// Allow or deny.
    pub allow: bool,
    /// How long it lives.
    pub scope: GrantScope,
    /// Once/Session: the client it belongs to (required). Ignored (stored as `None`) for Always.
    pub client: Option<u32>,
    /// Who answered.
    pub by: String,
}

/// Failures of the grant store.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The grants file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// The grants file could not be understood; it was left as it is.
    #[error("{path} is corrupt ({reason}); fix or remove it (the daemon does not replace it)")]
    Corrupt { path: PathBuf, reason: String },
    /// A new version of the grants file could not be written; the old one is still in place.
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// The grant to add is not well formed.
    #[error("invalid grant: {0}")]
    Invalid(&'static str),
}

/// What `grants.json` holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    version: u32,
    next_id: u64,
    grants: Vec<Grant>,
}

/// The grants: all of them in memory, the Always ones also on disk.
#[derive(Debug)]
pub struct GrantStore {
    /// The state dir; `None` for a store kept in memory only.
    dir: Option<PathBuf>,
    /// In the order they were added.
    grants: Vec<Grant>,
    next_id: u64,
    /// Bumped by every change of the Always grants; what [`Snapshot`]s are ordered by.
    generation: u64,
    /// Writes this store's snapshots in generation order; `None` for a store in memory.
    writer: Option<OrderedWriter>,
}

/// The Always grants as of one change, to be written by a [`GrantWriter`] (outside the lock
/// that guards the store).
#[derive(Debug, Clone)]
pub struct Snapshot {
    generation: u64,
    bytes: Vec<u8>,
}

/// Writes [`Snapshot`]s of one store atomically, newest wins: a snapshot older than the one
/// already on disk is skipped, since that one includes its change.
#[derive(Debug, Clone)]
pub struct GrantWriter(OrderedWriter);

impl GrantWriter {
    /// Puts `snap` on disk (temp file, `fsync`, `rename`, `fsync` of the directory; see
    /// [`state_file`](super::state_file)) unless a newer one is there already. Returns once it
    /// is durable.
    pub fn write(&self, snap: &Snapshot) -> Result<(), GrantError> {
        self.0
            .write(snap.generation, &snap.bytes)
            .map_err(|source| GrantError::Write {
                path: self.0.path(),
                source,
            })
    }
}

/// A change made in memory whose Always grants still have to be written (see
/// [`GrantStore::add_deferred`]).
#[derive(Debug)]
pub struct Deferred {
    /// The grant added or removed.
    pub grant: Grant,
    /// What to write; `None` if nothing on disk changes.
    pub snapshot: Option<Snapshot>,
    /// Grants the addition replaced (put back by [`GrantStore::undo_add`]).
    replaced: Vec<Grant>,
}

impl GrantStore {
    /// Loads `state_dir/grants.json` if it exists. Creates nothing: the directory and the file
    /// appear with the first Always grant.
    pub fn open(state_dir: &Path) -> Result<GrantStore, GrantError> {
        let path = state_dir.join(GRANTS_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(GrantStore {
                    dir: Some(state_dir.to_path_buf()),
                    grants: Vec::new(),
                    next_id: 1,
                    generation: 0,
                    writer: Some(OrderedWriter::new(state_dir, GRANTS_FILE)),
                });
            }
            Err(source) => return Err(GrantError::Read { path, source }),
        };
        if let Ok(meta) = fs::metadata(&path) {
            if meta.permissions().mode() & 0o022 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                    "grants file is writable by others than its owner"
                );
            }
        }
        let corrupt = |reason: String| GrantError::Corrupt {
            path: path.clone(),
            reason,
        };
        let file: GrantsFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {} (this daemon reads version {FORMAT_VERSION})",
                file.version
            )));
        }
        let mut max_id = 0;
        for (i, g) in file.grants.iter().enumerate() {
            if g.scope != GrantScope::Always || g.client.is_some() {
                return Err(corrupt(format!(
                    "grant {} is scoped {} to a client; only always grants are stored",
                    g.id,
                    g.scope.name()
                )));
            }
            if file.grants[..i].iter().any(|h| h.id == g.id) {
                return Err(corrupt(format!("grant id {} appears twice", g.id)));
            }
            max_id = max_id.max(g.id);
        }
        let next_id = file.next_id.max(max_id.saturating_add(1)).max(1);
        tracing::debug!(path = %path.display(), grants = file.grants.len(), "loaded grants");
        Ok(GrantStore {
            dir: Some(state_dir.to_path_buf()),
            grants: file.grants,
            next_id,
            generation: 0,
            writer: Some(OrderedWriter::new(state_dir, GRANTS_FILE)),
        })
    }

    /// A store with no file: Always grants last until the daemon exits (for a daemon run
    /// without a state dir).
    pub fn in_memory() -> GrantStore {
        GrantStore {
            dir: None,
            grants: Vec::new(),
            next_id: 1,
            generation: 0,
            writer: None,
        }
    }

    /// The path of the grants file (which may not exist yet); `None` when kept in memory.
    pub fn path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(GRANTS_FILE))
    }

    /// The most specific grant for `s` doing `action` to the device `target` (see the module
    /// docs for the order), if any.
    pub fn lookup(&self, s: &Subject, action: Action, target: &str) -> Option<&Grant> {
        let applies = |g: &&Grant| {
            g.action == action
                && g.uid == s.uid
                && g.app_id == s.app_id
                && match g.target.as_deref() {
                    None => true,
                    Some(t) => t == target,
                }
        };
        // Lower is more specific.
        let rank = |g: &Grant| {
            let tier = if g.scope == GrantScope::Always { 2 } else { 0 };
            tier + usize::from(g.target.is_none())
        };
        self.grants
            .iter()
            .filter(applies)
            .filter(|g| match g.scope {
                GrantScope::Once | GrantScope::Session => g.client == Some(s.client),
                GrantScope::Always => true,
            })
            // Newest first among equals (there should be none: add replaces).
            .rev()
            .min_by_key(|g| rank(g))
    }

    /// Adds a grant, assigning its id and creation time. An Always grant is on disk before this
    /// returns; if it cannot be written, nothing changes. A grant replaces an earlier one with
    /// the same key: same tier (the client for Once/Session, `(uid, app_id)` for Always),
    /// action and target.
    pub fn add(&mut self, g: GrantNew) -> Result<Grant, GrantError> {
        let change = self.add_deferred(g)?;
        if let (Some(snap), Some(w)) = (&change.snapshot, self.writer()) {
            if let Err(e) = w.write(snap) {
                self.undo_add(change);
                return Err(e);
            }
        }
        Ok(change.grant)
    }

    /// Like [`add`](Self::add), but only in memory: the caller writes the returned snapshot
    /// with [`writer`](Self::writer) outside its lock, before it acknowledges the grant, and
    /// calls [`undo_add`](Self::undo_add) if that fails.
    pub fn add_deferred(&mut self, g: GrantNew) -> Result<Deferred, GrantError> {
        let client = match g.scope {
            GrantScope::Always => None,
            GrantScope::Once | GrantScope::Session => match g.client {
                Some(c) => Some(c),
                None => {
                    return Err(GrantError::Invalid(
                        "a once or session grant needs a client",
                    ))
                }
            },
        };
        if g.app_id.is_empty() {
            return Err(GrantError::Invalid("the app id is empty"));
        }
        let grant = Grant {
            id: self.next_id,
            uid: g.uid,
            app_id: g.app_id,
            action: g.action,
            target: g.target,
            allow: g.allow,
            scope: g.scope,
            client,
            created: unix_secs(),
            by: g.by,
        };
        let same_key = |h: &Grant| {
            (h.scope == GrantScope::Always) == (grant.scope == GrantScope::Always)
                && h.client == grant.client
                && h.uid == grant.uid
                && h.app_id == grant.app_id
                && h.action == grant.action
                && h.target == grant.target
        };
        let (replaced, mut kept): (Vec<Grant>, Vec<Grant>) = std::mem::take(&mut self.grants)
            .into_iter()
            .partition(same_key);
        kept.push(grant.clone());
        self.grants = kept;
        self.next_id = self.next_id.saturating_add(1);
        let snapshot = if grant.scope == GrantScope::Always {
            match self.snapshot() {
                Ok(s) => s,
                Err(e) => {
                    self.undo_add(Deferred {
                        grant,
                        snapshot: None,
                        replaced,
                    });
                    return Err(e);
                }
            }
        } else {
            None
        };
        tracing::info!(
            id = grant.id,
            uid = grant.uid,
            app = %grant.app_id,
            action = grant.action.name(),
            target = grant.target.as_deref().unwrap_or("*"),
            allow = grant.allow,
            scope = grant.scope.name(),
            by = %grant.by,
            "grant added"
        );
        Ok(Deferred {
            grant,
            snapshot,
            replaced,
        })
    }

    /// Takes back an [`add_deferred`](Self::add_deferred) whose write failed: the grant goes,
    /// the ones it replaced come back. (Its id stays used.)
    pub fn undo_add(&mut self, change: Deferred) {
        self.grants.retain(|g| g.id != change.grant.id);
        self.grants.extend(change.replaced);
        self.grants.sort_by_key(|g| g.id);
        if change.grant.scope == GrantScope::Always {
            self.generation = self.generation.saturating_add(1);
        }
        tracing::warn!(
            id = change.grant.id,
            "grant taken back: it could not be written"
        );
    }

    /// Writes this store's snapshots; `None` for a store kept in memory.
    pub fn writer(&self) -> Option<GrantWriter> {
        self.writer.clone().map(GrantWriter)
    }

    /// The Always grants now, as a new generation (`None` for a store kept in memory).
    fn snapshot(&mut self) -> Result<Option<Snapshot>, GrantError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let file = GrantsFile {
            version: FORMAT_VERSION,
            next_id: self.next_id,
            grants: self
                .grants
                .iter()
                .filter(|g| g.scope == GrantScope::Always)
                .cloned()
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| GrantError::Write {
            path: dir.join(GRANTS_FILE),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        self.generation = self.generation.saturating_add(1);
        Ok(Some(Snapshot {
            generation: self.generation,
            bytes,
        }))
    }

    /// Uses up a Once grant (no-op for any other id).
    pub fn consume_once(&mut self, id: u64) {
        self.grants
            .retain(|g| !(g.id == id && g.scope == GrantScope::Once));
    }

    /// Drops the Once and Session grants of a client that went away.
    pub fn end_session(&mut self, client: u32) {
        self.grants
            .retain(|g| g.scope == GrantScope::Always || g.client != Some(client));
    }

    /// Removes a grant, returning it (`None` if there is no such grant). Removing an Always
    /// grant rewrites the file first; if that fails, nothing changes.
    pub fn revoke(&mut self, id: u64) -> Result<Option<Grant>, GrantError> {
        let Some(change) = self.revoke_deferred(id)? else {
            return Ok(None);
        };
        if let (Some(snap), Some(w)) = (&change.snapshot, self.writer()) {
            if let Err(e) = w.write(snap) {
                self.undo_revoke(change);
                return Err(e);
            }
        }
        Ok(Some(change.grant))
    }

    /// Like [`revoke`](Self::revoke), in memory only (see [`add_deferred`](Self::add_deferred));
    /// [`undo_revoke`](Self::undo_revoke) if the write fails.
    pub fn revoke_deferred(&mut self, id: u64) -> Result<Option<Deferred>, GrantError> {
        let Some(pos) = self.grants.iter().position(|g| g.id == id) else {
            return Ok(None);
        };
        let g = self.grants.remove(pos);
        let snapshot = if g.scope == GrantScope::Always {
            match self.snapshot() {
                Ok(s) => s,
                Err(e) => {
                    self.grants.insert(pos, g);
                    return Err(e);
                }
            }
        } else {
            None
        };
        tracing::info!(id, scope = g.scope.name(), "grant revoked");
        Ok(Some(Deferred {
            grant: g,
            snapshot,
            replaced: Vec::new(),
        }))
    }

    /// Puts back a grant whose revocation could not be written.
    pub fn undo_revoke(&mut self, change: Deferred) {
        let id = change.grant.id;
        self.grants.push(change.grant);
        self.grants.sort_by_key(|g| g.id);
        self.generation = self.generation.saturating_add(1);
        tracing::warn!(id, "revocation taken back: it could not be written");
    }

    /// Every grant, in the order they were added.
    pub fn list(&self) -> &[Grant] {
        &self.grants
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn subject(client: u32) -> Subject {
        Subject::new(
            client,
            (1000, 1000, vec![]),
            "exe:/usr/bin/sgcat".into(),
            false,
        )
    }

    fn new(scope: GrantScope, client: Option<u32>, target: Option<&str>, allow: bool) -> GrantNew {
        GrantNew {
            uid: 1000,
            app_id: "exe:/usr/bin/sgcat".into(),
            action: Action::Record,
            target: target.map(str::to_string),
            allow,
            scope,
            client,
            by: "agent pid 1 uid 0".into(),
        }
    }

    #[test]
    fn round_trip_only_always_is_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut st = GrantStore::open(&state).unwrap();
        assert!(!state.exists(), "open creates nothing");
        st.add(new(GrantScope::Session, Some(1), Some("mic"), true))
            .unwrap();
        st.add(new(GrantScope::Once, Some(1), None, true)).unwrap();
        assert!(!state.exists(), "session and once grants stay in memory");
        let always = st
            .add(new(GrantScope::Always, Some(1), Some("mic"), true))
            .unwrap();
        assert_eq!(always.client, None);
        let other = st
            .add(new(GrantScope::Always, None, Some("line-in"), false))
            .unwrap();
        let path = state.join(GRANTS_FILE);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!state.join(GRANTS_TMP).exists());
        assert_eq!(st.path(), Some(path.clone()));

        let st2 = GrantStore::open(&state).unwrap();
        assert_eq!(st2.list(), &[always.clone(), other.clone()]);
        let found = st2.lookup(&subject(7), Action::Record, "mic").unwrap();
        assert_eq!(found, &always);
        assert!(st2.lookup(&subject(7), Action::Play, "mic").is_none());
        assert!(st2
            .lookup(
                &Subject::new(7, (1001, 1000, vec![]), "exe:/usr/bin/sgcat".into(), false),
                Action::Record,
                "mic"
            )
            .is_none());

        // Revoke persists; ids are never reused.
        let mut st2 = st2;
        assert_eq!(st2.revoke(always.id).unwrap(), Some(always.clone()));
        assert_eq!(st2.revoke(always.id).unwrap(), None);
        let mut st3 = GrantStore::open(&state).unwrap();
        assert_eq!(st3.list(), std::slice::from_ref(&other));
        let next = st3
            .add(new(GrantScope::Always, None, Some("mic"), true))
            .unwrap();
        assert!(next.id > always.id && next.id > other.id);
    }

    #[test]
    fn corrupt_file_is_an_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GRANTS_FILE);
        for junk in [
            &b"{\"version\": 1, \"next_id\": 3, \"grants\": ["[..],
            b"",
            b"{\"version\": 9, \"next_id\": 1, \"grants\": []}",
            br#"{"version":1,"next_id":2,"grants":[{"id":1,"uid":1,"app_id":"a","action":"record","target":null,"allow":true,"scope":"session","client":4,"created":0,"by":"x"}]}"#,
        ] {
            fs::write(&path, junk).unwrap();
            let err = GrantStore::open(dir.path()).unwrap_err();
            assert!(matches!(err, GrantError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("grants.json"), "{err}");
            assert_eq!(fs::read(&path).unwrap(), junk, "the file is untouched");
        }
    }

    #[test]
    fn specificity() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = GrantStore::open(dir.path()).unwrap();
        let deny_always = st
            .add(new(GrantScope::Always, None, Some("mic"), false))
            .unwrap();
        let me = subject(1);
        assert_eq!(st.lookup(&me, Action::Record, "mic"), Some(&deny_always));
        // Another target: the exact-target Always grant does not apply.
        assert_eq!(st.lookup(&me, Action::Record, "line-in"), None);

        // A Once grant of this client beats Always deny, even with target None.
        let once = st.add(new(GrantScope::Once, Some(1), None, true)).unwrap();
        assert_eq!(st.lookup(&me, Action::Record, "mic"), Some(&once));
        assert_eq!(st.lookup(&me, Action::Record, "line-in"), Some(&once));
        // ... but only for that client.
        assert_eq!(
            st.lookup(&subject(2), Action::Record, "mic"),
            Some(&deny_always)
        );
        // ... and it is used up.
        st.consume_once(once.id);
        assert_eq!(st.lookup(&me, Action::Record, "mic"), Some(&deny_always));

        // Exact target beats None within a tier.
        let any = st
            .add(new(GrantScope::Session, Some(1), None, false))
            .unwrap();
        let exact = st
            .add(new(GrantScope::Session, Some(1), Some("mic"), true))
            .unwrap();
        assert_eq!(st.lookup(&me, Action::Record, "mic"), Some(&exact));
        assert_eq!(st.lookup(&me, Action::Record, "hdmi"), Some(&any));
        // consume_once leaves a Session grant alone.
        st.consume_once(exact.id);
        assert_eq!(st.lookup(&me, Action::Record, "mic"), Some(&exact));
        // A newer answer replaces an older one with the same key.
        let flipped = st
            .add(new(GrantScope::Session, Some(1), Some("mic"), false))
            .unwrap();
        assert_eq!(st.lookup(&me, Action::Record, "mic"), Some(&flipped));
        assert_eq!(st.list().len(), 3);

        // Always with target None matches any target.
        let any_always = st.add(new(GrantScope::Always, None, None, true)).unwrap();
        assert_eq!(
            st.lookup(&subject(2), Action::Record, "hdmi"),
            Some(&any_always)
        );
        assert_eq!(
            st.lookup(&subject(2), Action::Record, "mic"),
            Some(&deny_always)
        );

        // The session ends: back to the Always grants.
        st.end_session(1);
        assert_eq!(st.lookup(&me, Action::Record, "mic"), Some(&deny_always));
        assert_eq!(st.list(), &[deny_always, any_always]);

        assert!(matches!(
            st.add(new(GrantScope::Session, None, None, true)),
            Err(GrantError::Invalid(_))
        ));
    }

    #[test]
    fn in_memory_store() {
        let mut st = GrantStore::in_memory();
        assert_eq!(st.path(), None);
        let g = st.add(new(GrantScope::Always, None, None, true)).unwrap();
        assert_eq!(st.lookup(&subject(3), Action::Record, "mic"), Some(&g));
        assert_eq!(st.revoke(g.id).unwrap(), Some(g));
        assert!(st.list().is_empty());
    }

    #[test]
    fn failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // The state "dir" is a file: nothing can be written under it.
        let state = dir.path().join("not-a-dir");
        let mut st = GrantStore::open(&state).unwrap();
        fs::write(&state, b"").unwrap();
        let err = st
            .add(new(GrantScope::Always, None, None, true))
            .unwrap_err();
        assert!(matches!(err, GrantError::Write { .. }), "{err}");
        assert!(st.list().is_empty());
    }

    const WRITER_ENV: &str = "SG_GRANTS_WRITER";
    const WRITER_TEST: &str = "core::grants::tests::crash_writer_child";

    /// Not a test on its own: the body of the child process of [`crash_safety`]. Adds Always
    /// grants `dev{N}` in a tight loop, printing `written N` once the Nth is on disk.
    #[test]
    fn crash_writer_child() {
        let Some(dir) = std::env::var_os(WRITER_ENV) else {
            return;
        };
        let mut st = GrantStore::open(Path::new(&dir)).unwrap();
        let mut out = io::stdout().lock();
        loop {
            let n = st.list().len();
            st.add(new(
                GrantScope::Always,
                None,
                Some(&format!("dev{n}")),
                n & 1 == 0,
            ))
            .unwrap();
            writeln!(out, "written {}", n + 1).unwrap();
            out.flush().unwrap();
        }
    }

    /// SIGKILLs a writer at random moments; the file must always parse and hold a prefix of the
    /// sequence of writes, at least as long as the last one reported done.
    #[test]
    fn crash_safety() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64
            | 1;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let started = Instant::now();
        let mut completed = 0usize;
        let (mut torn, mut unreported) = (0, 0);
        for round in 0..30 {
            let mut child = Command::new(&exe)
                .args([WRITER_TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env(WRITER_ENV, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_micros(5_000 + rand() % 40_000));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            for n in out
                .lines()
                // libtest may print "test NAME ... " before the first line.
                .filter_map(|l| l.split("written ").nth(1))
                .filter_map(|n| n.parse::<usize>().ok())
            {
                completed = completed.max(n);
            }

            let st = GrantStore::open(dir.path()).unwrap_or_else(|e| panic!("round {round}: {e}"));
            let n = st.list().len();
            assert!(
                n >= completed && n <= completed + 1,
                "round {round}: {n} grants on disk, {completed} reported written"
            );
            for (i, g) in st.list().iter().enumerate() {
                assert_eq!(g.target.as_deref(), Some(format!("dev{i}").as_str()));
                assert_eq!(g.allow, i & 1 == 0);
                assert_eq!(g.id, st.list()[0].id + i as u64, "round {round}");
            }
            torn += usize::from(dir.path().join(GRANTS_TMP).exists());
            unreported += usize::from(n > completed);
            completed = n;
        }
        println!(
            "{completed} grants written; {torn} kills left a temp file, {unreported} came \
             between the rename and the report; {:?}",
            started.elapsed()
        );
        assert!(completed >= 10, "only {completed} writes in 30 rounds");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
