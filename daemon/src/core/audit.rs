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
//!
//! # Off the locks: [`AuditWriter`]
//!
//! The core never writes the file itself: it hands finished lines to an [`AuditWriter`], a
//! thread of its own fed by a bounded queue ([`AUDIT_QUEUE`] lines), so no file I/O happens
//! under the registry or consent locks. When the queue is full, a line that only records an
//! allowed decision is dropped and counted (the count is written as a `dropped` line once
//! there is room); every other line — deny, ask, prompt, answer, grant, revoke, an
//! administrator's act — **blocks** its sender until there is room: it is never lost.
//!
//! # Coalescing: [`Coalescer`]
//!
//! Identical allowed decisions in a row (same client, action, object, decider) become one
//! line with `count`, `first` and `last` times. A client's pending line is written when a
//! different line of that client comes, when it is [`COALESCE_WINDOW`] old, or when more than
//! [`COALESCE_KEYS`] are pending (the oldest first). So a client looping `SetVolume` writes one
//! line per window instead of one per request, and cannot rotate earlier lines away.

use serde::Serialize;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lines the writer thread's queue holds.
pub const AUDIT_QUEUE: usize = 4096;
/// How long identical allowed decisions are gathered into one line at most.
pub const COALESCE_WINDOW: Duration = Duration::from_secs(2);
/// Most coalesced lines pending at once.
pub const COALESCE_KEYS: usize = 64;

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
        self.write_line(&line)
    }

    fn write_line(&mut self, line: &[u8]) -> Result<(), AuditError> {
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

    /// Appends one finished JSON line (`line` without its newline), rotating first like
    /// [`append`](Self::append).
    pub fn append_line(&mut self, line: &[u8]) -> Result<(), AuditError> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
        self.write_line(&bytes)
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

/// What the writer thread is sent.
enum Msg {
    Line(Vec<u8>),
    /// Answer once every line sent before is written.
    Sync(mpsc::Sender<()>),
}

/// The sending side of the writer thread (cheap to clone).
#[derive(Debug, Clone)]
pub struct AuditQueue {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Line(l) => write!(f, "Line({} bytes)", l.len()),
            Msg::Sync(_) => f.write_str("Sync"),
        }
    }
}

impl AuditQueue {
    /// Queues `line`. `must`: never dropped (blocks while the queue is full); otherwise dropped
    /// and counted when the queue is full.
    pub fn send(&self, line: Vec<u8>, must: bool) {
        if must {
            // Err only if the writer thread is gone (it logged why).
            let _ = self.tx.send(Msg::Line(line));
            return;
        }
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits (at most `timeout`) until every line queued so far is in the file. Never call it
    /// holding a lock the core's requests need.
    pub fn sync(&self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Msg::Sync(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }

    /// Allowed-decision lines dropped because the queue was full, not yet reported in the log.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The audit log's writer thread (see the module doc). Dropping it writes what is queued,
/// syncs the file and joins the thread.
#[derive(Debug)]
pub struct AuditWriter {
    queue: Option<AuditQueue>,
    path: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditWriter {
    /// Starts the thread that owns `log`, with a queue of `capacity` lines.
    pub fn start(mut log: AuditLog, capacity: usize) -> io::Result<AuditWriter> {
        let (tx, rx) = mpsc::sync_channel::<Msg>(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        let path = log.path().to_path_buf();
        let thread = std::thread::Builder::new()
            .name("sg-audit".into())
            .spawn(move || {
                let mut failing = false;
                while let Ok(msg) = rx.recv() {
                    let line = match msg {
                        Msg::Sync(done) => {
                            let _ = done.send(());
                            continue;
                        }
                        Msg::Line(line) => line,
                    };
                    let lost = counter.swap(0, Ordering::Relaxed);
                    let mut result = Ok(());
                    if lost > 0 {
                        result = log.append_line(&dropped_line(lost));
                    }
                    let result = result.and_then(|()| log.append_line(&line));
                    match result {
                        // One error line per run of failures, not one per line.
                        Err(e) if !failing => {
                            tracing::error!("audit log: {e}");
                            failing = true;
                        }
                        Err(_) => {}
                        Ok(()) => failing = false,
                    }
                }
                let lost = counter.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let _ = log.append_line(&dropped_line(lost));
                }
                if let Err(e) = log.sync() {
                    tracing::error!("audit log: {e}");
                }
            })?;
        Ok(AuditWriter {
            queue: Some(AuditQueue { tx, dropped }),
            path,
            thread: Some(thread),
        })
    }

    /// The sending side.
    pub fn queue(&self) -> Option<&AuditQueue> {
        self.queue.as_ref()
    }

    /// The log's current file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The line that reports allowed-decision lines the full queue dropped.
fn dropped_line(count: u64) -> Vec<u8> {
    let v = serde_json::json!({
        "time": rfc3339_now(),
        "decision": "dropped",
        "count": count,
        "reason": "the audit queue was full: this many allowed-decision lines were not written",
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Gathers identical allowed decisions (see the module doc). Pure bookkeeping: it returns the
/// lines to write, in order, and writes nothing itself.
#[derive(Debug, Default)]
pub struct Coalescer {
    pending: Vec<Pending>,
}

#[derive(Debug)]
struct Pending {
    client: u32,
    /// The record without its time: what "identical" means.
    key: String,
    record: serde_json::Map<String, serde_json::Value>,
    first: String,
    last: String,
    since: Instant,
    count: u64,
}

impl Pending {
    fn line(mut self) -> Vec<u8> {
        if self.count > 1 {
            self.record
                .insert("time".into(), serde_json::Value::String(self.first.clone()));
            self.record.insert("count".into(), self.count.into());
            self.record
                .insert("first".into(), serde_json::Value::String(self.first));
            self.record
                .insert("last".into(), serde_json::Value::String(self.last));
        }
        serde_json::to_vec(&self.record).unwrap_or_default()
    }
}

impl Coalescer {
    /// Whether no line is being gathered (nothing for [`Coalescer::expire`] to hand out).
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes `rec` at `now`; returns the lines now due, each with whether it must be written
    /// (`true` for everything but allowed decisions). `coalesce`: `rec` is an allowed decision
    /// that may be gathered.
    pub fn push(
        &mut self,
        rec: &AuditRecord<'_>,
        coalesce: bool,
        now: Instant,
    ) -> Vec<(Vec<u8>, bool)> {
        let mut out = self.expire(now);
        let client = rec.subject.client;
        let Ok(serde_json::Value::Object(mut record)) = serde_json::to_value(rec) else {
            return out;
        };
        let time = record.remove("time");
        let key = serde_json::to_string(&record).unwrap_or_default();
        if let Some(time) = time.clone() {
            record.insert("time".into(), time);
        }
        let time = rec.time.clone();
        if coalesce {
            if let Some(p) = self.pending.iter_mut().find(|p| p.key == key) {
                p.count += 1;
                p.last = time;
                return out;
            }
        }
        // A different line of this client: its gathered one goes first.
        if let Some(i) = self.pending.iter().position(|p| p.client == client) {
            out.push((self.pending.remove(i).line(), false));
        }
        if coalesce {
            if self.pending.len() >= COALESCE_KEYS {
                out.push((self.pending.remove(0).line(), false));
            }
            self.pending.push(Pending {
                client,
                key,
                record,
                first: time.clone(),
                last: time,
                since: now,
                count: 1,
            });
        } else {
            out.push((serde_json::to_vec(rec).unwrap_or_default(), true));
        }
        out
    }

    /// The gathered lines that are [`COALESCE_WINDOW`] old at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            if now.duration_since(self.pending[i].since) >= COALESCE_WINDOW {
                out.push((self.pending.remove(i).line(), false));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Every gathered line, now.
    pub fn flush(&mut self) -> Vec<(Vec<u8>, bool)> {
        self.pending.drain(..).map(|p| (p.line(), false)).collect()
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

    fn allow(client: u32, object: &str) -> AuditRecord<'_> {
        AuditRecord {
            subject: AuditSubject {
                client,
                pid: 1,
                uid: 1000,
                app_id: "exe:/usr/bin/sgcat",
            },
            action: "control-stream",
            decision: "allow",
            reason: None,
            object,
            ..rec(0, "")
        }
    }

    fn json(line: &[u8]) -> serde_json::Value {
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn identical_allowed_decisions_are_coalesced_and_the_rest_are_not() {
        let mut c = Coalescer::default();
        let t0 = Instant::now();
        let a = allow(1, "a stream on out");
        for i in 0..1000 {
            assert!(c.push(&a, true, t0 + Duration::from_millis(i)).is_empty());
        }
        // Another client's lines are gathered apart.
        assert!(c.push(&allow(2, "a stream on out"), true, t0).is_empty());
        // A deny of client 1: its gathered line first, then the deny, both due now.
        let deny = rec(1, "monitor out.monitor");
        let out = c.push(&deny, false, t0 + Duration::from_millis(1000));
        assert_eq!(out.len(), 2);
        let (first, must) = &out[0];
        assert!(!must);
        let v = json(first);
        assert_eq!(v["count"], 1000);
        assert_eq!(v["decision"], "allow");
        assert!(v["first"].as_str().unwrap() <= v["last"].as_str().unwrap());
        let (second, must) = &out[1];
        assert!(must);
        assert_eq!(json(second)["decision"], "deny");
        // Client 2's line is written when its window ends, alone (no count).
        assert!(c.expire(t0 + COALESCE_WINDOW / 2).is_empty());
        let out = c.expire(t0 + COALESCE_WINDOW);
        assert_eq!(out.len(), 1);
        assert_eq!(json(&out[0].0)["count"], serde_json::Value::Null);
        assert_eq!(json(&out[0].0)["subject"]["client"], 2);
        // Bounded: more keys than COALESCE_KEYS push the oldest out.
        let names: Vec<String> = (0..=COALESCE_KEYS).map(|i| format!("o{i}")).collect();
        let mut written = 0;
        for (i, n) in names.iter().enumerate() {
            written += c.push(&allow(100 + i as u32, n), true, t0).len();
        }
        assert_eq!(written, 1);
        assert_eq!(c.flush().len(), COALESCE_KEYS);
    }

    #[test]
    fn the_writer_thread_writes_in_order_and_never_drops_a_must_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, 1 << 30, 1).unwrap();
        let w = AuditWriter::start(log, 4).unwrap();
        let q = w.queue().unwrap().clone();
        for i in 0..2000u32 {
            q.send(format!("{{\"must\":{i}}}").into_bytes(), true);
            q.send(format!("{{\"may\":{i}}}").into_bytes(), false);
        }
        assert!(q.sync(Duration::from_secs(30)));
        let unreported = q.dropped();
        // The thread ends when the last sender is gone.
        drop(q);
        drop(w);
        let text = fs::read_to_string(&path).unwrap();
        let musts: Vec<u64> = text
            .lines()
            .filter_map(|l| json(l.as_bytes())["must"].as_u64())
            .collect();
        assert_eq!(musts, (0..2000).collect::<Vec<u64>>());
        // Whatever was dropped is reported.
        let mays = text.lines().filter(|l| l.contains("\"may\"")).count() as u64;
        let dropped: u64 = text
            .lines()
            .map(|l| json(l.as_bytes()))
            .filter(|v| v["decision"] == "dropped")
            .map(|v| v["count"].as_u64().unwrap())
            .sum();
        assert!(unreported <= 2000 - mays - dropped);
        assert_eq!(mays + dropped + unreported, 2000);
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
