//! Atomic, ordered writes of the state dir's files (`grants.json`, `stream-settings.json`).
//!
//! A file is replaced whole: its new bytes go to `NAME.tmp` (mode 0600, never through a
//! symlink), which is `fsync`ed and renamed over `NAME`, then the directory is `fsync`ed. A
//! crash at any moment leaves either the old or the new version, never a mix, and once
//! [`write_atomically`] returns the new version survives a crash.
//!
//! [`OrderedWriter`] adds the order: each version carries a generation (bumped, under the
//! owner's lock, with every change); a version older than the one already on disk is skipped,
//! since that one includes its change. So versions can be written outside the owner's lock
//! by whichever task made them, and the file never goes back in time.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `dir/name` replaced by `bytes`: temp file `dir/name.tmp`, `write_all`, `fsync`, `rename`,
/// `fsync` of the directory (created 0700 if missing). On error the old file is untouched.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = tmp_path(dir, name);
    let path = dir.join(name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            // Never write through a symlink someone planted in the state dir.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        // A stale temp file keeps its old mode through O_TRUNC.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Best effort; the old file is untouched either way.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The temp file a new version of `dir/name` is written to.
pub fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.tmp"))
}

/// Writes the versions of one file in generation order, newest wins (see the module doc).
#[derive(Debug, Clone)]
pub struct OrderedWriter {
    dir: PathBuf,
    name: &'static str,
    /// The newest generation on disk, shared by every clone.
    written: Arc<Mutex<u64>>,
}

impl OrderedWriter {
    /// A writer of `dir/name`, nothing written yet.
    pub fn new(dir: &Path, name: &'static str) -> OrderedWriter {
        OrderedWriter {
            dir: dir.to_path_buf(),
            name,
            written: Arc::default(),
        }
    }

    /// The file it writes.
    pub fn path(&self) -> PathBuf {
        self.dir.join(self.name)
    }

    /// Puts version `generation` on disk unless a newer one is there already. Returns once it
    /// is durable (or was superseded by one that is).
    pub fn write(&self, generation: u64, bytes: &[u8]) -> io::Result<()> {
        // This lock orders the writers of one file; it guards no other state.
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if generation <= *written {
            return Ok(());
        }
        write_atomically(&self.dir, self.name, bytes)?;
        *written = generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_generations_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let w = OrderedWriter::new(dir.path(), "f.json");
        w.write(2, b"two").unwrap();
        w.clone().write(1, b"one").unwrap();
        assert_eq!(fs::read(w.path()).unwrap(), b"two");
        w.write(3, b"three").unwrap();
        assert_eq!(fs::read(w.path()).unwrap(), b"three");
        assert!(!tmp_path(dir.path(), "f.json").exists());
        let mode = fs::metadata(w.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn never_writes_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, tmp_path(dir.path(), "f.json")).unwrap();
        assert!(write_atomically(dir.path(), "f.json", b"new").is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(!dir.path().join("f.json").exists());
    }
}
