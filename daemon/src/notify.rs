//! The systemd readiness protocol (`sd_notify(3)`), in a few lines of std.
//!
//! With `Type=notify` systemd passes the path of a datagram socket in `NOTIFY_SOCKET` (a
//! filesystem path, or `@name` for the abstract namespace) and waits for `READY=1` before it
//! considers the service started. [`ready`] is called once both sockets listen and are served;
//! [`stopping`] when shutdown begins. Without `NOTIFY_SOCKET` both do nothing, so the daemon
//! behaves the same outside systemd.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Why a notification could not be sent (logged by the callers; never fatal).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor `@name`.
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor @name")]
    BadAddress(String),
    /// The socket could not be created or the datagram not sent.
    #[error("sending to NOTIFY_SOCKET {0}: {1}")]
    Send(String, std::io::Error),
}

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the socket named by `NOTIFY_SOCKET`.
/// Returns `Ok(false)` when the variable is not set (not started by systemd).
pub fn notify(state: &str) -> Result<bool, NotifyError> {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let addr = addr.to_string_lossy().into_owned();
    send_to(&addr, state)?;
    Ok(true)
}

fn send_to(addr: &str, state: &str) -> Result<(), NotifyError> {
    let sock = UnixDatagram::unbound().map_err(|e| NotifyError::Send(addr.to_string(), e))?;
    let sent = if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| NotifyError::Send(addr.to_string(), e))?;
        sock.send_to_addr(state.as_bytes(), &sa)
    } else if addr.starts_with('/') {
        sock.send_to(state.as_bytes(), Path::new(addr))
    } else {
        return Err(NotifyError::BadAddress(addr.to_string()));
    };
    sent.map(|_| ())
        .map_err(|e| NotifyError::Send(addr.to_string(), e))
}

/// Tells systemd the daemon is ready: both sockets listen and their accept loops run.
pub fn ready() {
    let state = format!("READY=1\nSTATUS=serving\nMAINPID={}", std::process::id());
    match notify(&state) {
        Ok(true) => tracing::debug!("told systemd we are ready"),
        Ok(false) => {}
        Err(e) => tracing::warn!("{e}"),
    }
}

/// Tells systemd that a reload has begun (`READY=1` follows once it is done), with the
/// monotonic time `Type=notify-reload` wants.
pub fn reloading() {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1000
        })
        .unwrap_or(0);
    if let Err(e) = notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}")) {
        tracing::warn!("{e}");
    }
}

/// Tells systemd that shutdown has begun.
pub fn stopping() {
    if let Err(e) = notify("STOPPING=1") {
        tracing::warn!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("sg-notify-test-{}", std::process::id());
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&sa).unwrap();
        send_to(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_relative_address_is_refused_and_a_dead_socket_is_an_error() {
        assert!(matches!(
            send_to("relative", "READY=1"),
            Err(NotifyError::BadAddress(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nobody-listens");
        assert!(matches!(
            send_to(missing.to_str().unwrap(), "READY=1"),
            Err(NotifyError::Send(..))
        ));
    }
}
