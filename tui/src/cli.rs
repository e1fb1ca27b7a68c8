//! Command-line options (also the source of the man page's OPTIONS).

use clap::{CommandFactory, Parser};
use std::path::PathBuf;

/// Where the system daemon's admin socket is.
pub const DEFAULT_ADMIN: &str = "/run/soundgate/admin";
/// Environment variable naming the admin socket.
pub const ADMIN_ENV: &str = "SOUNDGATE_ADMIN";

/// sgtop — the soundgate control center.
///
/// A terminal UI on the daemon's admin socket: streams with live level meters, devices,
/// clients with the identity the daemon derived, grants and the audit log, and a popup for
/// every request that waits for the user's consent.
#[derive(Debug, Parser)]
#[command(name = "sgtop", version, about, long_about)]
pub struct Args {
    /// The daemon's admin socket.
    #[arg(long, value_name = "PATH", env = ADMIN_ENV, default_value = DEFAULT_ADMIN)]
    pub admin: PathBuf,

    /// Write a log to FILE (the terminal belongs to the UI; without this nothing is logged).
    /// `RUST_LOG` sets the level (default `info`).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Highest meter and redraw rate, frames per second.
    #[arg(long, value_name = "FPS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=60))]
    pub fps: u32,
}

/// The clap command, for the man page.
pub fn command() -> clap::Command {
    Args::command()
}
