//! Command line of `soundgated` and the default paths it implies.

use clap::Parser;
use std::path::PathBuf;

/// System-mode config file.
pub const SYSTEM_CONFIG: &str = "/etc/soundgate/soundgate.toml";
/// System-mode state directory (grants, audit log).
pub const SYSTEM_STATE_DIR: &str = "/var/lib/soundgate";
/// System-mode runtime directory (sockets).
pub const SYSTEM_RUNTIME_DIR: &str = "/run/soundgate";

/// soundgated: the soundgate sound server.
///
/// One daemon for the machine. Every client connection is a security principal: the server
/// identifies it from the kernel (SO_PEERCRED, a pidfd, its Flatpak/Snap/systemd app id or
/// executable) and checks every request against its policy before acting.
#[derive(Debug, Clone, Parser)]
#[command(name = "soundgated", version, about, long_about)]
pub struct Args {
    /// Directory for the sockets (`native`, `admin`); default $RUNTIME_DIRECTORY (set by
    /// systemd), else /run/soundgate as root, else $XDG_RUNTIME_DIR/soundgate.
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,

    /// Directory for persistent state (grants, audit log); default $STATE_DIRECTORY (set by
    /// systemd), else /var/lib/soundgate as root, else the per-user data directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Configuration file; default soundgate.toml in $CONFIGURATION_DIRECTORY (set by
    /// systemd), else /etc/soundgate/soundgate.toml as root, else in the per-user config
    /// directory. A missing default file means built-in defaults (one null sink); a
    /// missing file named here is an error.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the configuration, print a summary and exit (status 0 if valid, 1 if not).
    #[arg(long)]
    pub check_config: bool,

    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The paths the daemon uses after defaults are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Socket directory.
    pub runtime_dir: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Config file, and whether the user named it (a named file must exist).
    pub config: PathBuf,
    /// True when `--config` was given.
    pub config_explicit: bool,
}

impl Args {
    /// Resolves defaults: the directories systemd hands a service (`RUNTIME_DIRECTORY`,
    /// `STATE_DIRECTORY`, `CONFIGURATION_DIRECTORY`), else system paths for root, per-user
    /// paths otherwise. Flags always win.
    pub fn paths(&self) -> Paths {
        self.paths_with(|name| std::env::var_os(name))
    }

    /// [`Args::paths`] with the environment read through `env`.
    pub fn paths_with(&self, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Paths {
        // systemd sets each variable to a colon-separated list of absolute paths, one per
        // directory the unit names; soundgate's unit names one.
        let from_systemd = |name: &str| {
            let value = env(name)?;
            let first = value.to_str()?.split(':').next()?.to_string();
            let path = PathBuf::from(first);
            path.is_absolute().then_some(path)
        };
        let runtime_systemd = from_systemd("RUNTIME_DIRECTORY");
        let state_systemd = from_systemd("STATE_DIRECTORY");
        let config_systemd = from_systemd("CONFIGURATION_DIRECTORY");
        let system = nix::unistd::geteuid().is_root();
        let user = directories::ProjectDirs::from("", "", "soundgate");
        let runtime_default = || {
            if system {
                return PathBuf::from(SYSTEM_RUNTIME_DIR);
            }
            std::env::var_os("XDG_RUNTIME_DIR")
                .map(|d| PathBuf::from(d).join("soundgate"))
                .unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("soundgate-{}", nix::unistd::getuid()))
                })
        };
        let state_default = || match (&user, system) {
            (Some(u), false) => u.data_dir().to_path_buf(),
            _ => PathBuf::from(SYSTEM_STATE_DIR),
        };
        let config_default = || match (&user, system) {
            (Some(u), false) => u.config_dir().join("soundgate.toml"),
            _ => PathBuf::from(SYSTEM_CONFIG),
        };
        Paths {
            runtime_dir: self
                .runtime_dir
                .clone()
                .or(runtime_systemd)
                .unwrap_or_else(runtime_default),
            state_dir: self
                .state_dir
                .clone()
                .or(state_systemd)
                .unwrap_or_else(state_default),
            config: self
                .config
                .clone()
                .or(config_systemd.map(|d| d.join("soundgate.toml")))
                .unwrap_or_else(config_default),
            config_explicit: self.config.is_some(),
        }
    }
}

/// The clap command, for the man page.
pub fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn explicit_paths_win() {
        let a = Args::parse_from([
            "soundgated",
            "--runtime-dir",
            "/tmp/r",
            "--state-dir",
            "/tmp/s",
            "--config",
            "/tmp/c.toml",
            "-vv",
        ]);
        let p = a.paths();
        assert_eq!(p.runtime_dir, PathBuf::from("/tmp/r"));
        assert_eq!(p.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(p.config, PathBuf::from("/tmp/c.toml"));
        assert!(p.config_explicit);
        assert_eq!(a.verbose, 2);
    }

    #[test]
    fn systemd_directories_are_used_unless_flags_say_otherwise() {
        let env = |name: &str| {
            let v = match name {
                "RUNTIME_DIRECTORY" => "/run/soundgate",
                "STATE_DIRECTORY" => "/var/lib/soundgate:/var/lib/other",
                "CONFIGURATION_DIRECTORY" => "/etc/soundgate",
                _ => return None,
            };
            Some(std::ffi::OsString::from(v))
        };
        let p = Args::parse_from(["soundgated"]).paths_with(env);
        assert_eq!(p.runtime_dir, PathBuf::from("/run/soundgate"));
        assert_eq!(p.state_dir, PathBuf::from("/var/lib/soundgate"));
        assert_eq!(p.config, PathBuf::from("/etc/soundgate/soundgate.toml"));
        // A missing file there means built-in defaults, as for the usual default path.
        assert!(!p.config_explicit);
        let p = Args::parse_from(["soundgated", "--runtime-dir", "/tmp/r"]).paths_with(env);
        assert_eq!(p.runtime_dir, PathBuf::from("/tmp/r"));
        // A relative value is not systemd's and is ignored.
        let p = Args::parse_from(["soundgated"])
            .paths_with(|n| (n == "STATE_DIRECTORY").then(|| "rel/dir".into()));
        assert_ne!(p.state_dir, PathBuf::from("rel/dir"));
    }

    #[test]
    fn root_gets_system_paths() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let p = Args::parse_from(["soundgated"]).paths();
        assert_eq!(p.runtime_dir, PathBuf::from(SYSTEM_RUNTIME_DIR));
        assert_eq!(p.config, PathBuf::from(SYSTEM_CONFIG));
        assert!(!p.config_explicit);
    }
}
