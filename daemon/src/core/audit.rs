//! The audit log: one JSON object per line, append-only, rotated by size.
//!
//! Every decision (allow, deny, ask, a prompt's answer, a revocation, a quota refusal) is one
//! [`AuditRecord`], written as one line with a single `write(2)` on a file opened `O_APPEND`, so
//! lines never interleave and a crash leaves at worst a missing last line, never a torn one
//! in the middle. When the next line would take the file past `max_bytes`, the file is rotated
//! first: `audit.log` → `audit.log.1` → … → `audit.log.{keep}`, the oldest dropped.
//!
//! Lines are not fsynced one by one (a decision per stream open would make that costly); call
//! [`AuditLog::sync`] where durability matters (shutdown).

use serde::Serialize;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Who a record is about.
#[derive(Debug, Clone, Serialize)]
pub struct AuditSubject<'a> {
    /// The daemon's id for the connection.
    pub client: u32,
    /// The peer's pid (from `SO_PEERCRED`).
    pub pid: i32,
    /// The peer's effective uid.
    pub uid: u32,
    /// The daemon-established app id.
    pub app_id: &'a str,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord<'a> {
    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-26T10:00:00.123Z` (see [`rfc3339_now`]).
    pub time: String,
    /// Who.
    pub subject: AuditSubject<'a>,
    /// The action name (`record`, `play`, …).
    pub action: &'a str,
    /// What it was done to (`source mic`, `sink speakers`, …).
    pub object: &'a str,
    /// `allow`, `deny`, `ask`, `answer:allow-once`, `revoke`, `quota`, …
    pub decision: &'a str,
    /// Why, for denials.
    pub reason: Option<&'a str>,
    /// What decided: `policy`, `rule FILE:LINE`, `grant 7`, `agent pid 123`, `default`.
    pub by: &'a str,
}

/// Failures of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log (or its directory) could not be opened or created.
    #[error("cannot open audit log {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// A record could not be written.
    #[error("cannot write audit log {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// The log could not be read.
    #[error("cannot read audit log {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// A record could not be encoded (not expected to happen).
    #[error("cannot encode an audit record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// An open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl AuditLog {
    /// Opens (creating it, and its directory, if needed) the log at `path` for appending, mode
    /// 0600. A record that would take the file past `max_bytes` rotates it first; `keep`
    /// rotated files are kept (`keep == 0`: the old file is simply dropped).
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<AuditLog, AuditError> {
        let open_err = |source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(open_err)?;
        }
        let mut file = open_append(path).map_err(open_err)?;
        let mut size = file.metadata().map_err(open_err)?.len();
        // A crash mid-append can leave a torn last line: end it, so the next record starts on
        // a line of its own (readers then see one bad line, never a record glued to it).
        if size > 0 && last_byte(path).map_err(open_err)? != b'\n' {
            file.write_all(b"\n").map_err(open_err)?;
            size += 1;
        }
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            keep,
        })
    }

    /// Appends one record as one JSON line. The newest record is never lost to rotation: if
    /// rotating fails, the line goes to the current file anyway (and a warning is logged).
    pub fn append(&mut self, rec: &AuditRecord<'_>) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(rec)?;
        line.push(b'\n');
        let len = line.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
            if let Err(e) = self.rotate() {
                tracing::warn!(path = %self.path.display(), "audit log rotation failed: {e}");
            }
        }
        let write_err = |source| AuditError::Write {
            path: self.path.clone(),
            source,
        };
        let mut written = 0;
        while written < line.len() {
            match self.file.write(&line[written..]) {
                Ok(0) => return Err(write_err(io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(write_err(e)),
            }
        }
        self.size = self.size.saturating_add(len);
        Ok(())
    }

    /// Flushes the log to disk.
    pub fn sync(&self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|source| AuditError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// The path of the current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `audit.log` → `audit.log.1` → … → `audit.log.{keep}`, then a fresh `audit.log`.
    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            match fs::remove_file(rotated(&self.path, self.keep)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            for i in (1..self.keep).rev() {
                match fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = self.file.metadata()?.len();
        tracing::debug!(path = %self.path.display(), "audit log rotated");
        Ok(())
    }

    /// The last `n` lines of the log at `path`, oldest first, taken from the current file and,
    /// if it has fewer, from `PATH.1`. A missing file counts as empty.
    pub fn tail(path: &Path, n: usize) -> Result<Vec<String>, AuditError> {
        let read = |p: &Path, n: usize| {
            last_lines(p, n).map_err(|source| AuditError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let mut lines = read(path, n)?;
        if lines.len() < n {
            let mut older = read(&rotated(path, 1), n - lines.len())?;
            older.append(&mut lines);
            lines = older;
        }
        Ok(lines)
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let perm = file.metadata()?.permissions();
    if perm.mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// The last byte of the file at `path` (which is not empty).
fn last_byte(path: &Path) -> io::Result<u8> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::End(-1))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    Ok(b[0])
}

/// `PATH.i`.
fn rotated(path: &Path, i: usize) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// The last `n` lines of a file, read backwards in chunks (the file may be large).
fn last_lines(path: &Path, n: usize) -> io::Result<Vec<String>> {
    const CHUNK: u64 = 64 * 1024;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let mut pos = len;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0usize;
    // n lines need n+1 newlines before them unless the file starts there (the last byte is
    // usually a newline too).
    while pos > 0 && newlines <= n {
        let start = pos.saturating_sub(CHUNK);
        let mut buf = vec![0; (pos - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf)?;
        newlines += buf.iter().filter(|&&b| b == b'\n').count();
        chunks.push(buf);
        pos = start;
    }
    let bytes: Vec<u8> = chunks.into_iter().rev().flatten().collect();
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if pos > 0 && !lines.is_empty() {
        // The first piece may be the tail of an earlier line.
        lines.remove(0);
    }
    let lines: Vec<String> = lines
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let skip = lines.len().saturating_sub(n);
    Ok(lines.into_iter().skip(skip).collect())
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn rfc3339_now() -> String {
    rfc3339(SystemTime::now())
}

/// `t` as RFC 3339 UTC with milliseconds, e.g. `2026-11-26T10:00:00.123Z` (times before 1970
/// are written as the epoch).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rec<'a>(i: usize, object: &'a str) -> AuditRecord<'a> {
        AuditRecord {
            time: rfc3339_now(),
            subject: AuditSubject {
                client: i as u32,
                pid: 4242,
                uid: 1000,
                app_id: "exe:/usr/bin/sgcat",
            },
            action: "record",
            object,
            decision: if i & 1 == 0 { "allow" } else { "deny" },
            reason: (i & 1 == 1).then_some("recording from mic needs a grant"),
            by: "default",
        }
    }

    #[test]
    fn time_format() {
        let at = |s: u64, ms: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_687_200, 123), "2026-11-26T10:00:00.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
        assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59.000Z");
        assert_eq!(rfc3339_now().len(), 24);
    }

    #[test]
    fn lines_are_json_with_the_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/audit.log");
        let mut log = AuditLog::open(&path, 1 << 20, 3).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        log.append(&rec(0, "source mic")).unwrap();
        log.append(&rec(1, "source \"mic\"\n2")).unwrap();
        drop(log);
        // Reopening appends.
        let mut log = AuditLog::open(&path, 1 << 20, 3).unwrap();
        log.append(&rec(2, "sink speakers")).unwrap();
        log.sync().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(text.ends_with('\n'));
        for (i, l) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["subject"]["client"], i as u64);
            assert_eq!(v["subject"]["pid"], 4242);
            assert_eq!(v["subject"]["uid"], 1000);
            assert_eq!(v["subject"]["app_id"], "exe:/usr/bin/sgcat");
            assert_eq!(v["action"], "record");
            assert_eq!(v["by"], "default");
            assert!(v["time"].as_str().unwrap().ends_with('Z'));
        }
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["object"], "source \"mic\"\n2");
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["reason"], "recording from mic needs a grant");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["reason"], serde_json::Value::Null);
    }

    #[test]
    fn rotation_keeps_files_and_the_newest_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let max = 1000;
        let keep = 3;
        let mut log = AuditLog::open(&path, max, keep).unwrap();
        let total = 200;
        for i in 0..total {
            let obj = format!("sink n{i}");
            log.append(&rec(i, &obj)).unwrap();
            // The newest line is always the last line of the current file.
            let cur = fs::read_to_string(&path).unwrap();
            let last = cur.lines().last().unwrap();
            assert!(last.contains(&format!("\"sink n{i}\"")), "{i}: {last}");
            assert!(cur.len() as u64 <= max, "{i}: {} bytes", cur.len());
        }
        for i in 1..=keep {
            let f = rotated(&path, i);
            assert!(f.exists(), "{f:?}");
            let len = fs::metadata(&f).unwrap().len();
            assert!(len <= max && len > max / 2, "{f:?}: {len} bytes");
        }
        assert!(!rotated(&path, keep + 1).exists());
        // The kept files hold consecutive records, oldest in .keep.
        let mut clients = Vec::new();
        for f in (1..=keep)
            .rev()
            .map(|i| rotated(&path, i))
            .chain([path.clone()])
        {
            for l in fs::read_to_string(&f).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                clients.push(v["subject"]["client"].as_u64().unwrap());
            }
        }
        let first = clients[0];
        let want: Vec<u64> = (first..total as u64).collect();
        assert_eq!(clients, want);

        // A line larger than max_bytes is still written.
        let big = "x".repeat(2000);
        log.append(&rec(999, &big)).unwrap();
        let cur = fs::read_to_string(&path).unwrap();
        assert_eq!(cur.lines().count(), 1);
        assert!(cur.contains(&big));

        // keep == 0: just start over.
        let p0 = dir.path().join("zero.log");
        let mut log = AuditLog::open(&p0, 300, 0).unwrap();
        for i in 0..10 {
            log.append(&rec(i, "sink s")).unwrap();
        }
        assert!(!rotated(&p0, 1).exists());
        let last = fs::read_to_string(&p0).unwrap();
        assert!(last.lines().last().unwrap().contains("\"client\":9"));
    }

    #[test]
    fn tail_spans_the_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        assert!(AuditLog::tail(&path, 5).unwrap().is_empty());
        let mut log = AuditLog::open(&path, 1500, 2).unwrap();
        for i in 0..25 {
            log.append(&rec(i, "sink s")).unwrap();
        }
        let in_current = fs::read_to_string(&path).unwrap().lines().count();
        assert!(in_current < 10, "{in_current}");
        let client = |l: &str| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["subject"]["client"]
                .as_u64()
                .unwrap()
        };
        let t = AuditLog::tail(&path, 10).unwrap();
        assert_eq!(
            t.iter().map(|l| client(l)).collect::<Vec<_>>(),
            (15..25).collect::<Vec<_>>()
        );
        let t = AuditLog::tail(&path, 2).unwrap();
        assert_eq!(
            t.iter().map(|l| client(l)).collect::<Vec<_>>(),
            vec![23, 24]
        );
        assert!(AuditLog::tail(&path, 0).unwrap().is_empty());
        // More than .1 and the current file hold: what there is, still in order.
        let all = AuditLog::tail(&path, 1000).unwrap();
        let got: Vec<u64> = all.iter().map(|l| client(l)).collect();
        assert_eq!(got.last(), Some(&24));
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1));

        // Backwards reading across chunk boundaries.
        let big = dir.path().join("big.log");
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        fs::write(&big, text).unwrap();
        let t = last_lines(&big, 15_000).unwrap();
        assert_eq!(t.len(), 15_000);
        assert_eq!(t[0], "line 5000");
        assert_eq!(t[14_999], "line 19999");
        // No trailing newline: the last piece still counts.
        fs::write(&big, "a\nb\nc").unwrap();
        assert_eq!(last_lines(&big, 2).unwrap(), vec!["b", "c"]);
    }
}
