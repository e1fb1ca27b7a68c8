//! `soundgated`: parse the command line, load the config, start the engines and serve.

use anyhow::{bail, Context, Result};
use clap::Parser;
use soundgated::cli::Args;
use soundgated::config::Config;
use soundgated::core::Core;
use soundgated::transport::{self, pulse, AdminAccess, Budget, BudgetLimits, Settings, Socket};

/// Resolves the admin group; a system without it has root as the only administrator.
fn admin_access(admin: &soundgated::config::AdminConfig) -> AdminAccess {
    let group = admin.group.as_str();
    let gid = match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        Ok(None) => {
            tracing::info!(
                "no group {group}: only root and the listed uids may use the admin socket"
            );
            None
        }
        Err(e) => {
            tracing::warn!("looking up group {group}: {e}; only root may use the admin socket");
            None
        }
    };
    AdminAccess {
        gid,
        group_name: group.to_string(),
        uids: admin.uids.clone(),
    }
}
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: every connection, stream and pidfd is an
/// fd, and the transport's budgets assume the whole table is the daemon's to use.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(soft, hard, "could not raise the open-file limit: {e}"),
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open-file limit"),
        Err(e) => tracing::warn!("reading the open-file limit: {e}"),
    }
}

fn main() {
    let args = Args::parse();
    let level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(args) {
        eprintln!("soundgated: {e:#}");
        std::process::exit(1);
    }
}

fn load_config(args: &Args) -> Result<Config> {
    let paths = args.paths();
    if paths.config.exists() || paths.config_explicit {
        let config = Config::load(&paths.config)?;
        tracing::info!(config = %paths.config.display(), sinks = config.sinks.len(), rules = config.rules.len(), "configuration loaded");
        Ok(config)
    } else {
        let config = Config::builtin_default();
        // What the defaults become (a sink and a source per sound card, else a null sink and
        // a null source) is logged when the devices open.
        tracing::info!(
            "no config file at {}; starting with built-in defaults",
            paths.config.display()
        );
        Ok(config)
    }
}

/// `SIGHUP`: reads the config again (the file, if it exists now) and puts it in force; a
/// config that does not load is refused with its `FILE:LINE: reason` and the old one stays.
async fn reload(core: &Arc<Core>, args: &Args) {
    soundgated::notify::reloading();
    let paths = args.paths();
    let core = Arc::clone(core);
    let done = tokio::task::spawn_blocking(move || {
        let config = if paths.config.exists() || paths.config_explicit {
            Config::load(&paths.config)?
        } else {
            Config::builtin_default()
        };
        if config.sinks.is_empty() {
            bail!("the configuration declares no sink");
        }
        let report = core.reload(&config);
        anyhow::Ok((config.source_path, report))
    })
    .await;
    match done {
        Ok(Ok((path, report))) => {
            let from = path.map_or_else(
                || "built-in defaults".to_string(),
                |p| p.display().to_string(),
            );
            tracing::info!(config = %from, "SIGHUP: configuration reloaded: {report}");
        }
        Ok(Err(e)) => {
            tracing::error!("SIGHUP: reload refused, the old configuration stays in force: {e:#}")
        }
        Err(e) => {
            tracing::error!("SIGHUP: reload failed, the old configuration stays in force: {e}")
        }
    }
    soundgated::notify::ready();
}

/// How long a clean shutdown waits for connections to deliver their last events.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn run(args: Args) -> Result<()> {
    let paths = args.paths();
    let config = load_config(&args)?;
    if args.check_config {
        println!(
            "{}: ok ({} sinks, {} rules)",
            paths.config.display(),
            config.sinks.len(),
            config.rules.len()
        );
        return Ok(());
    }
    std::fs::create_dir_all(&paths.runtime_dir)
        .with_context(|| format!("creating runtime directory {}", paths.runtime_dir.display()))?;
    std::fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("creating state directory {}", paths.state_dir.display()))?;
    if config.sinks.is_empty() {
        bail!("the configuration declares no sink");
    }
    raise_fd_limit();
    if let Ok(v) = std::env::var(transport::TEST_IDENTITY_DELAY) {
        tracing::warn!(
            "{}={v} is set: identity lookups are slowed on purpose (test suite only)",
            transport::TEST_IDENTITY_DELAY
        );
    }
    let mut core = Core::new(&config).context("starting sinks")?;
    let timeout = std::time::Duration::from_secs(config.prompts.timeout_secs);
    core.open_state(&paths.state_dir, timeout)
        .with_context(|| format!("opening the state in {}", paths.state_dir.display()))?;
    let access = admin_access(&config.admin);
    core.set_admin_access(access.clone());
    let core = Arc::new(core);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sg-io")
        .build()
        .context("starting the I/O runtime")?;
    let native = paths.runtime_dir.join("native");
    let admin = paths.runtime_dir.join("admin");
    let result = rt.block_on(async {
        let listener = transport::bind(&native, 0o666)?;
        let admin_listener = transport::bind(&admin, 0o660)?;
        if let Some(gid) = access.gid {
            nix::unistd::chown(&admin, None, Some(nix::unistd::Gid::from_raw(gid)))
                .with_context(|| format!("giving {} to group {}", admin.display(), config.admin.group))?;
        }
        transport::spawn_housekeeping(&core).context("watching sinks")?;
        tracing::info!(socket = %native.display(), admin = %admin.display(), "soundgated ready");
        // One budget for every listener; apps and the admin socket draw on separate counts.
        let budget = Budget::new(BudgetLimits::apps(&config.limits), BudgetLimits::admin());
        let connections = budget.clone();
        let settings = Settings::from_limits(&config.limits);
        let pulse = if config.pulse.enabled {
            let listener = pulse::bind(&paths.runtime_dir)?;
            let shared = pulse::Pulse::new(Arc::clone(&core), config.pulse.convert_samples_per_sec, config.limits.max_latency_ms);
            tracing::info!(socket = %pulse::socket_path(&paths.runtime_dir).display(), "PulseAudio-protocol socket ready");
            Some(tokio::spawn(pulse::serve(shared, listener, budget.clone(), settings.clone())))
        } else {
            None
        };
        let serve = tokio::spawn(transport::serve(
            Arc::clone(&core),
            listener,
            Socket::Native,
            budget.clone(),
            settings.clone(),
        ));
        let serve_admin = tokio::spawn(transport::serve(
            Arc::clone(&core),
            admin_listener,
            Socket::Admin(access),
            budget,
            settings,
        ));
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        soundgated::notify::ready();
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break }
                r = tokio::signal::ctrl_c() => { r.context("waiting for SIGINT")?; tracing::info!("SIGINT: shutting down"); break }
                _ = hup.recv() => reload(&core, &args).await,
            }
        }
        soundgated::notify::stopping();
        // No new connection from here on; then every stream ends with an event and every
        // connection delivers its last events and hangs up, within a grace period.
        serve.abort();
        serve_admin.abort();
        if let Some(p) = pulse {
            p.abort();
        }
        let (clients, streams) = core.end_all();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while connections.fds_total() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let open = connections.fds_total();
        if open > 0 {
            tracing::warn!(open, "connections still open after the grace period; closing them");
        }
        tracing::info!(clients, streams, "every client was told the server is shutting down");
        anyhow::Ok(())
    });
    let _ = std::fs::remove_file(&native);
    let _ = std::fs::remove_file(&admin);
    if config.pulse.enabled {
        let _ = std::fs::remove_file(pulse::socket_path(&paths.runtime_dir));
    }
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match Arc::try_unwrap(core) {
        Ok(core) => core.shutdown(),
        Err(_) => tracing::warn!("connections still hold the core; sinks stop with the process"),
    }
    if result.is_ok() {
        tracing::info!("soundgated stopped");
    }
    result
}
