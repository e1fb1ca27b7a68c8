//! Who a peer is: the trusted [`Identity`] of a client connection, built only by the daemon.
//!
//! On accept, [`identify_peer`] takes the kernel's credentials for the socket (SO_PEERCRED:
//! pid, uid, gid), a pidfd for that process at once, then reads the app id and supplementary
//! groups from `/proc`, and finally checks through the pidfd that the process is still the one
//! that connected. If it exited in between, its pid may already belong to another process, so
//! nothing read from `/proc` is kept: the app is `unknown` and only the primary gid counts.
//!
//! The name a client declares for itself is a label, shown as such; it never reaches here.
//!
//! # App ids, most trusted first
//!
//! | source | where | id |
//! |---|---|---|
//! | Flatpak | `/proc/PID/root/.flatpak-info`, `[Application]` `name=` | `flatpak:org.gnome.Foo` |
//! | Snap | a `snap.NAME.APP…` component in `/proc/PID/cgroup` | `snap:NAME` |
//! | systemd | an `app-…` unit in `/proc/PID/cgroup` (see below) | `systemd:org.gnome.Foo` |
//! | executable | `readlink /proc/PID/exe`, " (deleted)" stripped | `exe:/usr/bin/sgcat` |
//! | none of these | | `unknown` |
//!
//! systemd app units follow the freedesktop convention
//! `app[-<launcher>]-<ApplicationID>[@<RANDOM>].service` or
//! `app[-<launcher>]-<ApplicationID>-<RANDOM>.scope`. The convention requires dashes inside the
//! application id to be escaped (`\x2d`), so after the random part is removed at most two
//! dash-separated parts may remain: `[launcher-]id`. A unit name with more (an unescaped dash
//! that makes the split ambiguous) is not trusted and resolution falls through to the
//! executable. `\xNN` escapes are then undone and the id must consist of `[A-Za-z0-9._-]`.
//! The innermost matching cgroup path component wins.
//!
//! # What each source is worth
//!
//! - The executable path is read in the daemon's own mount namespace only: a peer in another
//!   mount namespace (a container, a user namespace it made itself) can make any path name any
//!   binary, so its `exe:` id is not given (`unknown` instead).
//! - Snap and systemd ids come from cgroup names. Any process of a user can start a scope of
//!   any name under that user's own systemd manager, so these ids are only as strong as the
//!   uid: rules that grant on them should also name the uid.
//! - A Flatpak id is read from the root the process sees; a process able to create user and
//!   mount namespaces can forge one. The same caveat applies.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Uid, User};

use crate::policy::Subject;

/// Largest `.flatpak-info` or `/proc` file read; anything bigger is not believed.
const MAX_PROC_FILE: u64 = 64 * 1024;

/// Where an app id came from, most trusted first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppSource {
    /// `/.flatpak-info` inside the process's root.
    Flatpak,
    /// A `snap.NAME.*` cgroup.
    Snap,
    /// A freedesktop `app-…` systemd unit in the cgroup path.
    SystemdUnit,
    /// The executable's path.
    Exe,
    /// Nothing could be established.
    Unknown,
}

impl AppSource {
    /// The prefix used in app ids and in config rules (`flatpak`, `snap`, `systemd`, `exe`,
    /// `unknown`).
    pub const fn name(self) -> &'static str {
        match self {
            AppSource::Flatpak => "flatpak",
            AppSource::Snap => "snap",
            AppSource::SystemdUnit => "systemd",
            AppSource::Exe => "exe",
            AppSource::Unknown => "unknown",
        }
    }
}

impl fmt::Display for AppSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An application id established by the daemon, e.g. `flatpak:org.gnome.Foo` or
/// `exe:/usr/bin/sgcat`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AppId {
    /// The full id with its source prefix, as config rules match it.
    pub id: String,
    /// Where it came from.
    pub source: AppSource,
}

impl AppId {
    /// The id of a process nothing could be established about.
    pub fn unknown() -> AppId {
        AppId {
            id: "unknown".to_string(),
            source: AppSource::Unknown,
        }
    }

    fn new(source: AppSource, rest: &str) -> AppId {
        AppId {
            id: format!("{}:{rest}", source.name()),
            source,
        }
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// The trusted identity of a connected peer. Only [`identify_peer`] builds one.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Process id at connect time (0 if the peer is in a pid namespace we cannot see).
    pub pid: i32,
    /// Effective uid at connect time.
    pub uid: u32,
    /// Effective gid at connect time.
    pub gid: u32,
    /// Supplementary groups (from `/proc/PID/status`); empty if they could not be read safely.
    pub groups: Vec<u32>,
    /// The user name of `uid`, if it has one.
    pub user: Option<String>,
    /// The application id.
    pub app: AppId,
    /// A pidfd for the process, if one could be had.
    pidfd: Option<Arc<OwnedFd>>,
}

impl Identity {
    /// Whether the process that connected is still running (not exited, not a zombie).
    ///
    /// Uses the pidfd, so a reused pid never makes a dead peer look alive. Without a pidfd
    /// (peer in an invisible pid namespace, kernel older than 5.3) the answer is `false`: the
    /// process cannot be shown to be alive.
    pub fn is_alive(&self) -> bool {
        self.pidfd.as_deref().is_some_and(pidfd_alive)
    }

    /// The policy subject for this identity as client `client`.
    pub fn subject(&self, client: u32, admin: bool) -> Subject {
        let ids = (self.uid, self.gid, self.groups.clone());
        Subject::new(client, ids, self.app.id.clone(), admin)
    }
}

/// Why a peer could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `getsockopt(SO_PEERCRED)` failed: not a connected Unix socket.
    #[error("reading the peer's credentials (SO_PEERCRED) failed: {0}")]
    PeerCred(#[source] nix::Error),
}

/// Identifies the process at the other end of a connected Unix socket.
///
/// Fails only if the socket has no peer credentials; everything after that degrades to less
/// information (an `unknown` app, no supplementary groups), never to someone else's.
///
/// This reads `/proc` (through the peer's own mount namespace, where a FUSE mount can hang)
/// and the user database: the daemon calls [`peer_credentials`] on its async workers and runs
/// [`PeerCreds::resolve`] on a blocking thread with a timeout instead.
pub fn identify_peer(sock: BorrowedFd<'_>) -> Result<Identity, IdentityError> {
    identify_peer_at(sock, Path::new("/proc"))
}

fn identify_peer_at(sock: BorrowedFd<'_>, proc_root: &Path) -> Result<Identity, IdentityError> {
    Ok(peer_credentials(sock)?.resolve_at(proc_root))
}

/// The uid the kernel recorded for the peer of `sock` (`SO_PEERCRED`): one syscall, never
/// blocks.
pub fn peer_uid(sock: BorrowedFd<'_>) -> Result<u32, IdentityError> {
    Ok(getsockopt(&sock, PeerCredentials)
        .map_err(IdentityError::PeerCred)?
        .uid())
}

/// What the kernel says about a peer, with a pidfd for it taken at once: the part of
/// identification that never blocks. [`PeerCreds::resolve`] does the rest.
#[derive(Debug)]
pub struct PeerCreds {
    /// Process id at connect time (0 if the peer is in a pid namespace we cannot see).
    pub pid: i32,
    /// Effective uid at connect time.
    pub uid: u32,
    /// Effective gid at connect time.
    pub gid: u32,
    pidfd: Option<OwnedFd>,
}

/// Reads the peer's credentials and takes a pidfd for it (no `/proc` access).
pub fn peer_credentials(sock: BorrowedFd<'_>) -> Result<PeerCreds, IdentityError> {
    let cred = getsockopt(&sock, PeerCredentials).map_err(IdentityError::PeerCred)?;
    let pid = cred.pid();
    // The pidfd must be taken before anything is read from /proc. SO_PEERPIDFD (Linux 6.5)
    // names the very process that connected; pidfd_open(pid) is the fallback, with the small
    // window in which the peer could exit and its pid be reused before the call.
    let pidfd = if pid > 0 {
        peer_pidfd(sock).or_else(|_| pidfd_open(pid)).ok()
    } else {
        None
    };
    Ok(PeerCreds {
        pid,
        uid: cred.uid(),
        gid: cred.gid(),
        pidfd,
    })
}

impl PeerCreds {
    /// Whether a pidfd was taken (one more fd the daemon holds for this peer).
    pub fn has_pidfd(&self) -> bool {
        self.pidfd.is_some()
    }

    /// Reads the app id and groups from `/proc` and the user name, then checks through the
    /// pidfd that the process is still the one that connected. May block (a hung FUSE mount
    /// in the peer's namespace, a slow user database): not for an async worker.
    pub fn resolve(self) -> Identity {
        self.resolve_at(Path::new("/proc"))
    }

    fn resolve_at(self, proc_root: &Path) -> Identity {
        resolve(proc_root, self.pid, self.uid, self.gid, self.pidfd)
    }
}

/// Builds the identity once the pidfd is held: reads /proc, then checks the process is still
/// the one the pidfd names.
fn resolve(proc_root: &Path, pid: i32, uid: u32, gid: u32, pidfd: Option<OwnedFd>) -> Identity {
    let mut app = AppId::unknown();
    let mut groups = Vec::new();
    if let Some(fd) = &pidfd {
        let read_app = app_id_from_proc(proc_root, pid);
        let read_groups = groups_from_proc(proc_root, pid);
        if pidfd_alive(fd) {
            app = read_app;
            groups = read_groups;
        } else {
            tracing::debug!(
                pid,
                "peer exited while being identified; app id not trusted"
            );
        }
    }
    let user = User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    Identity {
        pid,
        uid,
        gid,
        groups,
        user,
        app,
        pidfd: pidfd.map(Arc::new),
    }
}

/// The app id of process `pid`, read from a directory shaped like `/proc`.
///
/// Does no liveness check: [`identify_peer`] does that around it.
pub fn app_id_from_proc(proc_root: &Path, pid: i32) -> AppId {
    let dir = proc_root.join(pid.to_string());
    if let Some(name) = flatpak_app(&dir) {
        return AppId::new(AppSource::Flatpak, &name);
    }
    let cgroup = read_small(&dir.join("cgroup")).unwrap_or_default();
    let paths: Vec<&str> = cgroup
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .collect();
    if let Some(name) = paths.iter().find_map(|p| snap_from_cgroup(p)) {
        return AppId::new(AppSource::Snap, &name);
    }
    if let Some(name) = paths.iter().find_map(|p| systemd_app_from_cgroup(p)) {
        return AppId::new(AppSource::SystemdUnit, &name);
    }
    if same_mount_namespace(proc_root, &dir) {
        if let Some(exe) = exe_path(&dir) {
            return AppId::new(AppSource::Exe, &exe);
        }
    }
    AppId::unknown()
}

/// Reads a small regular file without following a final symlink and without blocking on a
/// FIFO: parts of it (`/proc/PID/root/…`) are laid out by the peer.
fn read_small(path: &Path) -> Option<String> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    let ft = meta.file_type();
    if !ft.is_file() || ft.is_fifo() {
        return None;
    }
    let mut text = String::new();
    (&mut file as &mut File)
        .take(MAX_PROC_FILE + 1)
        .read_to_string(&mut text)
        .ok()?;
    (text.len() as u64 <= MAX_PROC_FILE).then_some(text)
}

fn flatpak_app(dir: &Path) -> Option<String> {
    let info = read_small(&dir.join("root/.flatpak-info"))?;
    let mut in_application = false;
    for line in info.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_application = line == "[Application]";
        } else if in_application {
            if let Some((key, value)) = line.split_once('=') {
                if key.trim() == "name" {
                    let value = value.trim();
                    return valid_app_name(value).then(|| value.to_string());
                }
            }
        }
    }
    None
}

/// Characters allowed in a Flatpak, Snap or systemd application id.
fn valid_app_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `snap.NAME.APP.scope`, `snap.NAME.APP-UUID.scope`, `snap.NAME.APP.service`,
/// `snap.NAME.hook.HOOK-….scope` → `NAME` (snap names: `[a-z0-9-]`, plus `_KEY` for
/// parallel instances).
fn snap_from_cgroup(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|comp| {
        let rest = comp.strip_prefix("snap.")?;
        let (name, after) = rest.split_once('.')?;
        let ok = !name.is_empty()
            && !after.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        ok.then(|| name.to_string())
    })
}

/// The innermost freedesktop `app-…` unit in a cgroup path → its ApplicationID.
fn systemd_app_from_cgroup(path: &str) -> Option<String> {
    path.rsplit('/').find_map(systemd_app_from_unit)
}

fn systemd_app_from_unit(unit: &str) -> Option<String> {
    let body = unit.strip_prefix("app-")?;
    let launcher_and_id = if let Some(service) = body.strip_suffix(".service") {
        // `[launcher-]ID[@RANDOM]`
        service
            .split_once('@')
            .map_or(service, |(before, _)| before)
    } else if let Some(scope) = body.strip_suffix(".scope") {
        // `[launcher-]ID-RANDOM`: the random part is required.
        let (before, random) = scope.rsplit_once('-')?;
        if random.is_empty() {
            return None;
        }
        before
    } else {
        return None;
    };
    let parts: Vec<&str> = launcher_and_id.split('-').collect();
    let escaped = match parts.as_slice() {
        [id] | [_, id] if !id.is_empty() => *id,
        _ => return None,
    };
    let id = unescape_unit(escaped)?;
    valid_app_name(&id).then_some(id)
}

/// Undoes systemd's `\xNN` unit name escaping.
fn unescape_unit(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) != Some(&b'x') {
                return None;
            }
            let hex = s.get(i + 2..i + 4)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `dir` (a `/proc/PID`) is in the same mount namespace as the reader. In a
/// directory without `ns/mnt` links on either side (a test fixture) this is taken as true.
fn same_mount_namespace(proc_root: &Path, dir: &Path) -> bool {
    let own = std::fs::read_link(proc_root.join("self/ns/mnt"));
    let peer = std::fs::read_link(dir.join("ns/mnt"));
    match (own, peer) {
        (Ok(a), Ok(b)) => a == b,
        (Err(_), Err(_)) => !proc_root.join("self").exists(),
        _ => false,
    }
}

fn exe_path(dir: &Path) -> Option<String> {
    let target: PathBuf = std::fs::read_link(dir.join("exe")).ok()?;
    let target = target.to_str()?;
    let target = target.strip_suffix(" (deleted)").unwrap_or(target);
    target.starts_with('/').then(|| target.to_string())
}

/// Supplementary groups from the `Groups:` line of `/proc/PID/status`.
fn groups_from_proc(proc_root: &Path, pid: i32) -> Vec<u32> {
    let status = read_small(&proc_root.join(pid.to_string()).join("status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A pidfd for the socket's peer through SO_PEERPIDFD (Linux 6.5 and later).
fn peer_pidfd(sock: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `sock` is a valid open fd for the duration of the call; `fd` and `len` are live
    // locals of the size we declare, which is what SO_PEERPIDFD writes (one int).
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: on success the kernel installed a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_open(pid, 0)`.
fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1; no memory is shared.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(rc).map_err(|_| std::io::Error::other("pidfd out of range"))?;
    // SAFETY: on success the kernel installed a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pidfd polls readable once its process has exited (zombie or reaped).
fn pidfd_alive(fd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => true,
        Ok(_) => fds[0].revents().is_some_and(|r| r.is_empty()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::process::Command;

    /// A directory shaped like /proc with one process `pid`.
    struct FakeProc {
        root: tempfile::TempDir,
        pid: i32,
    }

    impl FakeProc {
        fn new(pid: i32) -> FakeProc {
            let root = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(root.path().join(pid.to_string()).join("root")).unwrap();
            FakeProc { root, pid }
        }
        fn dir(&self) -> PathBuf {
            self.root.path().join(self.pid.to_string())
        }
        fn flatpak(self, info: &str) -> Self {
            std::fs::write(self.dir().join("root/.flatpak-info"), info).unwrap();
            self
        }
        fn cgroup(self, text: &str) -> Self {
            std::fs::write(self.dir().join("cgroup"), text).unwrap();
            self
        }
        fn exe(self, target: &str) -> Self {
            std::os::unix::fs::symlink(target, self.dir().join("exe")).unwrap();
            self
        }
        fn status(self, text: &str) -> Self {
            std::fs::write(self.dir().join("status"), text).unwrap();
            self
        }
        fn app(&self) -> AppId {
            app_id_from_proc(self.root.path(), self.pid)
        }
    }

    const FLATPAK_INFO: &str =
        "[Application]\nname=org.gnome.Foo\nruntime=runtime/org.gnome.Platform/x86_64/45\n";
    const SNAP_CG: &str =
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/snap.firefox.firefox-1f2e.scope\n";
    const SYSTEMD_CG: &str =
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-org.gnome.Nautilus-4242.scope\n";

    #[test]
    fn each_source_and_precedence() {
        let all = FakeProc::new(7)
            .flatpak(FLATPAK_INFO)
            .cgroup(SNAP_CG)
            .exe("/usr/bin/foo");
        assert_eq!(all.app(), AppId::new(AppSource::Flatpak, "org.gnome.Foo"));
        assert_eq!(all.app().id, "flatpak:org.gnome.Foo");

        let snap = FakeProc::new(7)
            .cgroup(SNAP_CG)
            .exe("/snap/firefox/1/usr/lib/firefox");
        assert_eq!(snap.app().id, "snap:firefox");
        assert_eq!(snap.app().source, AppSource::Snap);

        let sd = FakeProc::new(7).cgroup(SYSTEMD_CG).exe("/usr/bin/nautilus");
        assert_eq!(sd.app().id, "systemd:org.gnome.Nautilus");
        assert_eq!(sd.app().source, AppSource::SystemdUnit);

        let exe = FakeProc::new(7)
            .cgroup("0::/user.slice/user-1000.slice/session-2.scope\n")
            .exe("/usr/bin/sgcat (deleted)");
        assert_eq!(exe.app(), AppId::new(AppSource::Exe, "/usr/bin/sgcat"));

        assert_eq!(FakeProc::new(7).app(), AppId::unknown());
        assert_eq!(FakeProc::new(7).app().to_string(), "unknown");
        assert_eq!(
            FakeProc::new(7).exe("relative/path").app(),
            AppId::unknown()
        );
    }

    #[test]
    fn flatpak_info_parsing() {
        let other_section = FakeProc::new(3).flatpak("[Runtime]\nname=org.gnome.Platform\n");
        assert_eq!(other_section.app(), AppId::unknown());
        let spaced =
            FakeProc::new(3).flatpak("[Instance]\nname=x\n\n[Application]\n name = org.a.B \n");
        assert_eq!(spaced.app().id, "flatpak:org.a.B");
        let bad = FakeProc::new(3).flatpak("[Application]\nname=org.a.B;rm -rf\n");
        assert_eq!(bad.app(), AppId::unknown());
        // A symlinked .flatpak-info is not followed (it would resolve in the daemon's root).
        let linked = FakeProc::new(3);
        std::fs::write(linked.root.path().join("real-info"), FLATPAK_INFO).unwrap();
        std::os::unix::fs::symlink(
            linked.root.path().join("real-info"),
            linked.dir().join("root/.flatpak-info"),
        )
        .unwrap();
        assert_eq!(linked.app(), AppId::unknown());
        // A FIFO does not block the daemon.
        let fifo = FakeProc::new(3);
        nix::unistd::mkfifo(
            &fifo.dir().join("root/.flatpak-info"),
            nix::sys::stat::Mode::S_IRWXU,
        )
        .unwrap();
        assert_eq!(fifo.app(), AppId::unknown());
    }

    #[test]
    fn systemd_unit_names() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "app-gnome-org.gnome.Evince@12345.service",
                Some("org.gnome.Evince"),
            ),
            (
                "app-flatpak-org.telegram.desktop@12345.service",
                Some("org.telegram.desktop"),
            ),
            (
                "app-KDE-org.kde.okular@12345.service",
                Some("org.kde.okular"),
            ),
            ("app-org.kde.amarok.service", Some("org.kde.amarok")),
            ("app-org.gnome.Evince-12345.scope", Some("org.gnome.Evince")),
            ("app-gnome-firefox-3345.scope", Some("firefox")),
            (
                "app-gnome-google\\x2dchrome-3345.scope",
                Some("google-chrome"),
            ),
            // Unescaped dash: ambiguous, not trusted.
            ("app-gnome-google-chrome-3345.scope", None),
            // A scope needs its random part.
            ("app-org.gnome.Evince.scope", None),
            ("app-gnome-org.gnome.Evince-.scope", None),
            ("app-.service", None),
            ("app-gnome-bad\\x2fslash-1.scope", None),
            ("app-gnome-bad\\q-1.scope", None),
            ("session-2.scope", None),
            ("app.slice", None),
            ("user@1000.service", None),
        ];
        for (unit, want) in cases {
            assert_eq!(systemd_app_from_unit(unit).as_deref(), *want, "{unit}");
        }
        // The innermost app unit wins; cgroup v1 lines are read too.
        let nested =
            "1:name=systemd:/user.slice/app-gnome-org.a.Outer-1.scope/app-org.b.Inner-2.scope\n";
        assert_eq!(
            FakeProc::new(9).cgroup(nested).app().id,
            "systemd:org.b.Inner"
        );
    }

    #[test]
    fn snap_cgroups() {
        for (cg, want) in [
            ("0::/system.slice/snap.lxd.daemon.service", Some("lxd")),
            (
                "0::/user.slice/snap.spotify.spotify-7b1f.scope",
                Some("spotify"),
            ),
            ("0::/user.slice/snap.foo_bar.app.scope", Some("foo_bar")),
            ("0::/user.slice/snap.Bad.app.scope", None),
            ("0::/user.slice/snap.noapp", None),
            ("0::/user.slice/snapd.service", None),
        ] {
            let app = FakeProc::new(5).cgroup(&format!("{cg}\n")).app();
            match want {
                Some(name) => assert_eq!(app.id, format!("snap:{name}"), "{cg}"),
                None => assert_ne!(app.source, AppSource::Snap, "{cg}"),
            }
        }
    }

    #[test]
    fn exe_needs_same_mount_namespace() {
        let p = FakeProc::new(11).exe("/usr/bin/sgcat");
        std::fs::create_dir_all(p.root.path().join("self/ns")).unwrap();
        std::fs::create_dir_all(p.dir().join("ns")).unwrap();
        std::os::unix::fs::symlink("mnt:[4026531841]", p.root.path().join("self/ns/mnt")).unwrap();
        std::os::unix::fs::symlink("mnt:[4026532999]", p.dir().join("ns/mnt")).unwrap();
        assert_eq!(p.app(), AppId::unknown());
        std::fs::remove_file(p.dir().join("ns/mnt")).unwrap();
        std::os::unix::fs::symlink("mnt:[4026531841]", p.dir().join("ns/mnt")).unwrap();
        assert_eq!(p.app().id, "exe:/usr/bin/sgcat");
    }

    #[test]
    fn groups_from_status() {
        let p = FakeProc::new(4)
            .status("Name:\tx\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 29 1000 \nNSpid:\t4\n");
        assert_eq!(groups_from_proc(p.root.path(), 4), vec![4, 24, 29, 1000]);
        let none = FakeProc::new(4).status("Name:\tx\nGroups:\t\n");
        assert!(groups_from_proc(none.root.path(), 4).is_empty());
    }

    #[test]
    fn identify_peer_on_socket_pair() {
        let (a, _b) = UnixStream::pair().unwrap();
        let id = identify_peer(a.as_fd()).unwrap();
        assert_eq!(id.pid, std::process::id() as i32);
        assert_eq!(id.uid, nix::unistd::getuid().as_raw());
        assert_eq!(id.gid, nix::unistd::getgid().as_raw());
        let exe = std::env::current_exe().unwrap();
        assert_eq!(id.app.id, format!("exe:{}", exe.display()));
        assert_eq!(id.app.source, AppSource::Exe);
        assert!(id.is_alive());
        let own: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        for g in &own {
            assert!(
                id.groups.contains(g),
                "group {g} missing from {:?}",
                id.groups
            );
        }
        let s = id.subject(3, false);
        assert_eq!(
            (s.client, s.uid, s.app_id.as_str()),
            (3, id.uid, id.app.id.as_str())
        );
    }

    #[test]
    fn identify_peer_rejects_non_socket() {
        let f = tempfile::tempfile().unwrap();
        assert!(matches!(
            identify_peer(f.as_fd()),
            Err(IdentityError::PeerCred(_))
        ));
    }

    #[test]
    fn dead_process_is_not_alive_and_gets_no_app() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let fd = pidfd_open(pid).unwrap();
        assert!(pidfd_alive(&fd));
        let ident = Identity {
            pid,
            uid: 0,
            gid: 0,
            groups: vec![],
            user: None,
            app: AppId::unknown(),
            pidfd: Some(Arc::new(fd)),
        };
        assert!(ident.is_alive());
        child.kill().unwrap();
        // A zombie already counts as dead.
        let t0 = std::time::Instant::now();
        while ident.is_alive() {
            assert!(t0.elapsed().as_secs() < 10, "pidfd never signalled exit");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert!(!ident.is_alive());

        // What /proc says about a dead pid is not believed: it may be someone else's now.
        let fake = FakeProc::new(pid)
            .exe("/usr/bin/impostor")
            .status("Groups:\t0 27\n");
        let dead_fd = ident.pidfd.as_deref().map(|fd| fd.try_clone().unwrap());
        let resolved = resolve(fake.root.path(), pid, 1000, 1000, dead_fd);
        assert_eq!(resolved.app, AppId::unknown());
        assert!(resolved.groups.is_empty());
        assert!(!resolved.is_alive());

        // Without any pidfd nothing is believed either.
        let nofd = resolve(fake.root.path(), pid, 1000, 1000, None);
        assert_eq!(nofd.app, AppId::unknown());
        assert!(!nofd.is_alive());
    }
}
