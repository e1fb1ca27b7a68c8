//! soundgate-ctl: the library behind the soundgate command-line tools.
//!
//! - [`sgcat`]: the command line and the work of `sgcat` (play and record);
//! - [`audio`]: WAV/FLAC/raw PCM input and WAV/raw PCM output;
//! - [`exit`]: one error line and an exit code from the server's error kind, for every tool;
//! - [`sgctl`]: the command line and the work of `sgctl` (administration).
//!
//! **Architecture invariant:** this crate talks to the server only through
//! `soundgate_proto::client`; it never depends on the daemon.

#![forbid(unsafe_code)]

pub mod audio;
pub mod exit;
pub mod sgcat;
pub mod sgctl;

use soundgate_proto::client;
