//! sgtop: the soundgate control center. See `sgtop --help` and sgtop(1).

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use sgtop::app::App;
use sgtop::cli::Args;
use sgtop::event::{AppEvent, Command};
use sgtop::worker::{self, WorkerConfig};
use std::io::Stdout;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the clock ticks while nothing moves (prompt countdowns tick per second).
const IDLE_TICK: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_log(&args)?;
    tracing::info!(admin = %args.admin.display(), "sgtop starting");

    let (ev_tx, ev_rx) = mpsc::channel::<AppEvent>();
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>();
    let daemon = worker::spawn(
        WorkerConfig {
            admin: args.admin.clone(),
            meter_hz: args.fps,
        },
        ev_tx.clone(),
        cmd_rx,
    )
    .context("starting the daemon thread")?;
    spawn_input(ev_tx).context("starting the input thread")?;

    install_panic_hook();
    let mut terminal = setup_terminal().context("setting up the terminal")?;
    let result = run(&mut terminal, &args, &ev_rx, &cmd_tx);
    restore_terminal();
    let _ = cmd_tx.send(Command::Quit);
    // The daemon thread may sit in a blocking request; do not wait for it longer than needed.
    drop(daemon);
    tracing::info!("sgtop done");
    result
}

fn init_log(args: &Args) -> anyhow::Result<()> {
    let Some(path) = &args.log else {
        return Ok(());
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the log file {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init()
        .map_err(|e| anyhow::anyhow!("initialising the log: {e}"))?;
    Ok(())
}

/// Reads the terminal on its own thread (crossterm's `read` blocks).
fn spawn_input(tx: mpsc::Sender<AppEvent>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sgtop-input".into())
        .spawn(move || loop {
            match crossterm::event::read() {
                Ok(ev) => {
                    if tx.send(AppEvent::Input(ev)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the terminal");
                    return;
                }
            }
        })
        .map(drop)
}

fn setup_terminal() -> anyhow::Result<Terminal<CrosstermBackend<Stdout>>> {
    enable_raw_mode().context("raw mode")?;
    let mut out = std::io::stdout();
    crossterm::execute!(out, EnterAlternateScreen, EnableMouseCapture)
        .context("alternate screen")?;
    let mut t = Terminal::new(CrosstermBackend::new(out)).context("terminal")?;
    t.clear().context("clearing the screen")?;
    Ok(t)
}

/// Leaves raw mode and the alternate screen; safe to call twice.
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        LeaveAlternateScreen,
        DisableMouseCapture,
        crossterm::cursor::Show
    );
}

/// Restores the terminal before the panic message is printed, so it is readable.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        tracing::error!(%info, "panic");
        previous(info);
    }));
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The event loop: wait for an event or the next tick, fold it in, redraw only when
/// something changed, and at most `fps` times a second.
fn run(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    args: &Args,
    events: &mpsc::Receiver<AppEvent>,
    commands: &mpsc::Sender<Command>,
) -> anyhow::Result<()> {
    let frame = Duration::from_secs(1) / args.fps.max(1);
    let mut app = App::new(&args.admin.to_string_lossy());
    app.tick(now_ms());
    terminal.draw(|f| app.draw(f)).context("drawing")?;
    let mut last_draw = Instant::now();
    let mut last_tick = Instant::now();
    let mut dirty = false;
    loop {
        let tick_every = if app.animating() { frame } else { IDLE_TICK };
        let mut wait = tick_every.saturating_sub(last_tick.elapsed());
        if dirty {
            wait = wait.min(frame.saturating_sub(last_draw.elapsed()));
        }
        match events.recv_timeout(wait) {
            Ok(ev) => {
                dirty |= app.handle(ev);
                // Fold in everything already queued before drawing once.
                while let Ok(ev) = events.try_recv() {
                    dirty |= app.handle(ev);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the daemon thread ended"),
        }
        if last_tick.elapsed() >= tick_every {
            dirty |= app.tick(now_ms());
            last_tick = Instant::now();
        }
        for cmd in app.take_commands() {
            commands
                .send(cmd)
                .map_err(|_| anyhow::anyhow!("the daemon thread ended"))?;
        }
        if app.should_quit() {
            return Ok(());
        }
        if dirty && last_draw.elapsed() >= frame {
            app.tick(now_ms());
            terminal.draw(|f| app.draw(f)).context("drawing")?;
            last_draw = Instant::now();
            dirty = false;
        }
    }
}
