//! How the soundgate command-line tools report a failure: one line on stderr and an exit code
//! chosen from the server's error kind. Shared by `sgcat` and `sgctl`.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other error (no server, bad file, protocol error, …) |
//! | 2 | usage error (clap) |
//! | 3 | permission denied by the server's policy ([`ErrorKind::Denied`]) |
//! | 4 | no such device or stream ([`ErrorKind::NotFound`]) |

use crate::client::ClientError;
use soundgate_proto::wire::{ErrorKind, WireError};

/// The command worked.
pub const SUCCESS: u8 = 0;
/// Any failure without a more specific code.
pub const GENERIC: u8 = 1;
/// The command line was wrong (the code clap exits with).
pub const USAGE: u8 = 2;
/// The server's policy refused the request.
pub const DENIED: u8 = 3;
/// The server knows no such object, or none the client may see.
pub const NOT_FOUND: u8 = 4;

/// The exit code for a failure whose server error kind, if any, is `kind`.
pub fn code_for_kind(kind: Option<ErrorKind>) -> u8 {
    match kind {
        Some(ErrorKind::Denied) => DENIED,
        Some(ErrorKind::NotFound) => NOT_FOUND,
        _ => GENERIC,
    }
}

/// The server error kind found anywhere in `err`'s chain.
pub fn error_kind(err: &anyhow::Error) -> Option<ErrorKind> {
    err.chain().find_map(|e| {
        if let Some(c) = e.downcast_ref::<ClientError>() {
            c.kind()
        } else {
            e.downcast_ref::<WireError>().map(|w| w.kind)
        }
    })
}

/// The exit code for `err`.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    code_for_kind(error_kind(err))
}

/// `err` and its causes joined by `: `, leaving out a cause whose text an outer error already
/// includes (many errors print their source as part of their own message).
fn chain_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for e in err.chain() {
        let text = e.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The one line to print after `<tool>: `.
///
/// A server error is a complete sentence that names the object ("permission denied: recording
/// from default.monitor needs a grant"), so it is printed alone; any other error is printed with
/// its context chain (`opening input: cannot open x.wav: No such file or directory`).
pub fn error_line(err: &anyhow::Error) -> String {
    let server = err.chain().find(|e| {
        e.downcast_ref::<WireError>().is_some()
            || e.downcast_ref::<ClientError>()
                .is_some_and(|c| c.kind().is_some())
    });
    let line = match server {
        Some(e) => e.to_string(),
        None => chain_line(err),
    };
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn kinds_map_to_codes() {
        assert_eq!(code_for_kind(None), GENERIC);
        assert_eq!(code_for_kind(Some(ErrorKind::Denied)), DENIED);
        assert_eq!(code_for_kind(Some(ErrorKind::NotFound)), NOT_FOUND);
        for k in [
            ErrorKind::Quota,
            ErrorKind::Busy,
            ErrorKind::Protocol,
            ErrorKind::Invalid,
            ErrorKind::Internal,
        ] {
            assert_eq!(code_for_kind(Some(k)), GENERIC, "{k:?}");
        }
        assert_eq!(USAGE, 2);
        assert_eq!(SUCCESS, 0);
    }

    #[test]
    fn server_errors_are_found_under_context() {
        let wire = WireError::new(
            ErrorKind::Denied,
            "recording from default.monitor needs a grant",
        );
        let err = anyhow::Error::new(ClientError::Server(wire.clone()))
            .context("creating the record stream");
        assert_eq!(exit_code(&err), DENIED);
        assert_eq!(
            error_line(&err),
            "permission denied: recording from default.monitor needs a grant"
        );

        let err = anyhow::Error::new(WireError::new(ErrorKind::NotFound, "no sink named x"));
        assert_eq!(exit_code(&err), NOT_FOUND);
        assert_eq!(error_line(&err), "not found: no sink named x");
    }

    #[test]
    fn local_errors_are_generic_and_one_line() {
        let err = Err::<(), _>(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "No such file\nor directory",
        ))
        .context("opening x.wav")
        .unwrap_err();
        // An io NotFound is not the server's NotFound.
        assert_eq!(exit_code(&err), GENERIC);
        assert_eq!(error_line(&err), "opening x.wav: No such file or directory");

        // A cause that the outer message already prints is not repeated.
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open x: {source}")]
        struct Open {
            source: std::io::Error,
        }
        let err = anyhow::Error::new(Open {
            source: std::io::Error::other("gone"),
        })
        .context("opening the input");
        assert_eq!(error_line(&err), "opening the input: cannot open x: gone");
    }
}
