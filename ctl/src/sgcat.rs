//! `sgcat`: play an audio file into a soundgate sink, or record a source into a file.
//!
//! The command line is [`Args`] (also reachable as [`command`] for the man page and tests);
//! [`run`] does the work and returns an error that [`crate::exit`] turns into one line and an
//! exit code.

use crate::audio::{AudioReader, AudioWriter, RawMode};
use crate::client::{self, Client, PlaybackOptions, RecordOptions};
use anyhow::{Context, Result};
use clap::{ArgGroup, CommandFactory, Parser};
use soundgate_proto::wire::DeviceInfo;
use soundgate_proto::{SampleFormat, StreamSpec};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Default for `--latency-msec`.
pub const DEFAULT_LATENCY_MS: u32 = 100;
/// Highest linear volume a stream may have (400%).
pub const MAX_VOLUME: f32 = 4.0;
/// Raw format, rate and channels assumed for whichever of `--format/--rate/--channels` is
/// missing with `--raw`, and for recording from a source whose spec is not known.
pub const FALLBACK_SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::S16Le,
    rate: 48_000,
    channels: 2,
};
/// Longest a record read waits before the stop flag is looked at again.
const READ_TIMEOUT: Duration = Duration::from_millis(100);
/// The name sgcat declares to the server (a label only).
const CLIENT_NAME: &str = "sgcat";

/// Play audio to a soundgate sink, or record a soundgate source.
///
/// With --playback, sgcat plays FILE (or standard input when FILE is `-` or absent) into a sink.
/// WAV, FLAC, Ogg Vorbis, MP3, AAC (ADTS) and MP4/M4A (AAC or ALAC) are recognised by their
/// content, from a file or from standard input; raw PCM is read with --raw, or when standard
/// input is in none of these formats and --format, --rate or --channels is given. At the end of
/// the input sgcat waits until everything has been played, then exits.
///
/// With --record, sgcat records a source (a capture device, or a sink's monitor such as
/// `default.monitor`) into FILE as WAV, or as raw PCM to standard output when FILE is `-` or
/// absent. It stops after --duration seconds, on SIGINT or SIGTERM (the WAV header is then
/// completed), or when the server ends the stream.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sgcat",
    version,
    about = "Play audio to a soundgate sink, or record a soundgate source"
)]
#[command(group(ArgGroup::new("mode").required(true).args(["playback", "record", "completions"])))]
pub struct Args {
    /// Play FILE (or standard input) into a sink.
    #[arg(short = 'p', long)]
    pub playback: bool,

    /// Record a source into FILE (or raw PCM to standard output).
    #[arg(short = 'r', long)]
    pub record: bool,

    /// Audio file to play or to write; `-` or none means standard input or output.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Sink to play into, or source to record from (default: the server's default).
    #[arg(short = 'd', long, value_name = "NAME")]
    pub device: Option<String>,

    /// Server socket (default: $SOUNDGATE_SERVER, else /run/soundgate/native).
    #[arg(short = 's', long, value_name = "PATH")]
    pub server: Option<PathBuf>,

    /// Stream label shown to the server and its admins (default: the file name).
    #[arg(short = 'n', long, value_name = "LABEL")]
    pub name: Option<String>,

    /// Playback volume: linear 0.0 to 4.0, or a percentage such as `50%`.
    #[arg(long, value_name = "VOLUME", value_parser = parse_volume, conflicts_with = "record")]
    pub volume: Option<f32>,

    /// Buffering the stream asks for, in milliseconds.
    #[arg(long = "latency-msec", value_name = "MSEC", default_value_t = DEFAULT_LATENCY_MS,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub latency_msec: u32,

    /// Sample format of raw input, or to record: s16le, s32le or f32le.
    #[arg(short = 'f', long, value_name = "FORMAT")]
    pub format: Option<SampleFormat>,

    /// Sample rate in Hz of raw input, or to record.
    #[arg(long, value_name = "HZ", value_parser = clap::value_parser!(u32).range(8_000..=384_000))]
    pub rate: Option<u32>,

    /// Channel count of raw input, or to record.
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=8))]
    pub channels: Option<u8>,

    /// Read raw PCM (s16le, 48000 Hz, 2 channels unless --format/--rate/--channels say otherwise).
    #[arg(long, conflicts_with = "record")]
    pub raw: bool,

    /// Stop recording after exactly this many seconds of audio.
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration, conflicts_with = "playback")]
    pub duration: Option<f64>,

    /// Log what sgcat does to standard error (twice for more).
    #[arg(short = 'v', long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print nothing but errors.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(
        long,
        value_name = "SHELL",
        exclusive = true,
        hide_possible_values = true
    )]
    pub completions: Option<clap_complete::Shell>,
}

/// The clap command, for the man page and tests.
pub fn command() -> clap::Command {
    Args::command()
}

/// Parses a volume: a linear factor (`0.5`) or a percentage (`50%`), within 0.0..=4.0.
pub fn parse_volume(s: &str) -> Result<f32, String> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f32>().map(|p| p / 100.0),
        None => s.parse::<f32>(),
    }
    .map_err(|_| format!("{s:?} is not a number or a percentage"))?;
    if !v.is_finite() || !(0.0..=MAX_VOLUME).contains(&v) {
        return Err(format!("volume {s} is outside 0.0..=4.0 (0%..=400%)"));
    }
    Ok(v)
}

/// Parses a positive, finite number of seconds.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let d: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !d.is_finite() || d <= 0.0 || d > 1e9 {
        return Err(format!("duration {s} must be a positive number of seconds"));
    }
    Ok(d)
}

impl Args {
    /// The file argument, `None` for standard input or output.
    fn path(&self) -> Option<&Path> {
        self.file.as_deref().filter(|p| *p != Path::new("-"))
    }

    /// The spec the flags give, missing fields taken from `base`.
    fn spec_over(&self, base: StreamSpec) -> StreamSpec {
        StreamSpec {
            format: self.format.unwrap_or(base.format),
            rate: self.rate.unwrap_or(base.rate),
            channels: self.channels.unwrap_or(base.channels),
        }
    }

    fn any_spec_flag(&self) -> bool {
        self.format.is_some() || self.rate.is_some() || self.channels.is_some()
    }

    /// How to treat input in no known container.
    fn raw_mode(&self) -> RawMode {
        let spec = self.spec_over(FALLBACK_SPEC);
        if self.raw {
            RawMode::Always(spec)
        } else if self.any_spec_flag() {
            RawMode::Fallback(spec)
        } else {
            RawMode::Never
        }
    }

    /// The stream label.
    fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        self.path()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| CLIENT_NAME.to_string())
    }

    fn tracing_level(&self) -> tracing::Level {
        match (self.quiet, self.verbose) {
            (true, _) => tracing::Level::ERROR,
            (false, 0) => tracing::Level::WARN,
            (false, 1) => tracing::Level::DEBUG,
            (false, _) => tracing::Level::TRACE,
        }
    }
}

/// The crates symphonia logs from (through the `log` bridge).
const SYMPHONIA_CRATES: &[&str] = &[
    "symphonia",
    "symphonia_core",
    "symphonia_metadata",
    "symphonia_utils_xiph",
    "symphonia_format_riff",
    "symphonia_format_ogg",
    "symphonia_format_isomp4",
    "symphonia_bundle_flac",
    "symphonia_bundle_mp3",
    "symphonia_codec_pcm",
    "symphonia_codec_vorbis",
    "symphonia_codec_aac",
    "symphonia_codec_alac",
];

/// Sends log lines to stderr at the level `-v`/`-q` choose (`RUST_LOG` overrides).
pub fn init_logging(args: &Args) {
    // Our own crates at the chosen level; decoders and others only at warn unless -vv.
    let ours = args.tracing_level().as_str().to_ascii_lowercase();
    let others = if args.verbose >= 2 {
        "debug"
    } else if args.quiet {
        "error"
    } else {
        "warn"
    };
    let mut directives =
        format!("{others},sgcat={ours},soundgate_ctl={ours},soundgate_proto={ours}");
    // symphonia's own log lines (`probe reach EOF`, ...) are noise for a user: a file sgcat
    // cannot read gets one error line from sgcat. -vv shows them.
    if args.verbose < 2 {
        for c in SYMPHONIA_CRATES {
            directives.push_str(&format!(",{c}=off"));
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives));
    // A second initialisation (in tests) is harmless, so its error is ignored.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

/// Runs sgcat as `args` say.
pub fn run(args: &Args) -> Result<()> {
    if let Some(shell) = args.completions {
        let mut cmd = command();
        clap_complete::generate(shell, &mut cmd, "sgcat", &mut io::stdout());
        return Ok(());
    }
    if args.record {
        record(args)
    } else {
        playback(args)
    }
}

fn connect(args: &Args) -> Result<Client> {
    let path = client::server_path(args.server.as_deref());
    tracing::debug!("connecting to {}", path.display());
    // The library's error already names the socket.
    let client = Client::connect(&path, CLIENT_NAME)?;
    if !args.quiet {
        // A request that needs consent waits for a prompt agent's answer: say so, once.
        client.on_permission_pending(|prompt| {
            eprintln!("sgcat: waiting for permission… (prompt {prompt})");
        });
    }
    Ok(client)
}

fn playback(args: &Args) -> Result<()> {
    let raw = args.raw_mode();
    let mut reader = match args.path() {
        Some(path) => AudioReader::open_path(path, raw),
        None => AudioReader::open_stream(Box::new(io::stdin()), raw),
    }
    .context("opening the input")?;
    let spec = reader.spec();
    if !reader.is_raw() && args.any_spec_flag() {
        tracing::warn!("the input is {spec}; --format/--rate/--channels apply to raw input only");
    }
    tracing::debug!("input: {spec}");

    let client = connect(args)?;
    // Created corked and started once `latency_msec / 2` of audio is queued, so the device
    // does not run dry while the first chunks are being decoded (pacat's prebuffering).
    let mut stream = client
        .playback(PlaybackOptions {
            name: args.label(),
            device: args.device.clone(),
            spec,
            latency_ms: args.latency_msec,
            volume: args.volume.unwrap_or(1.0),
            muted: false,
            corked: true,
            exclusive: false,
        })
        .context("creating the playback stream")?;
    tracing::debug!("playback stream {}", stream.id());

    let frame = spec.frame_bytes();
    let prefill = spec.frames_for_ms((args.latency_msec / 2).max(1));
    let mut corked = true;
    let mut buf = Vec::new();
    let mut frames = 0u64;
    loop {
        buf.clear();
        let n = reader.read(&mut buf).context("reading the input")?;
        if n == 0 {
            break;
        }
        let mut data = &buf[..n];
        while !data.is_empty() {
            // While corked, write no more than the prefill: a full ring would block for ever.
            let take = if corked {
                data.len().min((prefill - frames) as usize * frame)
            } else {
                data.len()
            };
            let (now, rest) = data.split_at(take);
            stream.write(now).context("playing")?;
            frames += (now.len() / frame) as u64;
            data = rest;
            if corked && frames >= prefill {
                stream.cork(false).context("starting the stream")?;
                corked = false;
            }
        }
    }
    if corked {
        stream.cork(false).context("starting the stream")?;
    }
    if let Ok(info) = stream.info() {
        tracing::trace!(
            "before drain: {} underruns, {} frames consumed",
            info.underruns,
            info.frames
        );
    }
    stream.drain().context("draining the stream")?;
    match stream.info() {
        Ok(info) if info.underruns > 0 => {
            tracing::info!("{} underruns while playing {frames} frames", info.underruns);
        }
        Ok(_) => tracing::debug!("played {frames} frames"),
        Err(e) => tracing::debug!("no stream counters: {e}"),
    }
    stream.close().context("closing the stream")?;
    Ok(())
}

/// The spec of `device` (or the default source) as the server lists it, if it lists it.
fn source_spec(client: &Client, device: Option<&str>) -> Result<Option<StreamSpec>> {
    let name = match device {
        Some(d) => d.to_string(),
        None => match client
            .server_info()
            .context("asking for the server's defaults")?
            .default_source
        {
            Some(d) => d,
            None => return Ok(None),
        },
    };
    let sources: Vec<DeviceInfo> = client.sources().context("listing sources")?;
    Ok(sources.into_iter().find(|s| s.name == name).map(|s| s.spec))
}

/// Registers SIGINT and SIGTERM to raise the returned flag instead of killing the process.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .context("installing a signal handler")?;
    }
    Ok(flag)
}

fn record(args: &Args) -> Result<()> {
    let stop = stop_flag()?;
    let client = connect(args)?;
    let spec = if args.format.is_some() && args.rate.is_some() && args.channels.is_some() {
        args.spec_over(FALLBACK_SPEC)
    } else {
        // A source the server does not list (one the client may not use, say) still goes to
        // the server, whose refusal is the message the user should see.
        let base = source_spec(&client, args.device.as_deref())?.unwrap_or(FALLBACK_SPEC);
        args.spec_over(base)
    };
    let limit = args
        .duration
        .map(|d| (d * f64::from(spec.rate)).round() as u64);
    tracing::debug!(
        "recording {spec}, {}",
        limit.map_or("until stopped".into(), |f| format!("{f} frames"))
    );

    let mut stream = client
        .record(RecordOptions {
            name: args.label(),
            device: args.device.clone(),
            spec,
            latency_ms: args.latency_msec,
        })
        .context("creating the record stream")?;
    let spec = stream.spec();
    tracing::debug!("record stream {}", stream.id());

    let mut writer = match args.path() {
        Some(path) => AudioWriter::wav(path, spec)?,
        None => AudioWriter::raw(Box::new(io::BufWriter::new(io::stdout())), spec),
    };
    let frame = spec.frame_bytes();
    let mut buf = Vec::new();
    let outcome = loop {
        if stop.load(Ordering::Relaxed) {
            tracing::debug!("stopped by a signal");
            break Ok(());
        }
        if limit.is_some_and(|l| writer.frames() >= l) {
            break Ok(());
        }
        buf.clear();
        match stream.read(&mut buf, Some(READ_TIMEOUT)) {
            Ok(0) => continue,
            Ok(n) => {
                let mut take = n - n % frame;
                if let Some(l) = limit {
                    let left = (l - writer.frames()) as usize * frame;
                    take = take.min(left);
                }
                match writer.write(&buf[..take]) {
                    Ok(()) => {}
                    Err(crate::audio::AudioError::Write(e))
                        if e.kind() == io::ErrorKind::BrokenPipe =>
                    {
                        tracing::debug!("the reader of standard output went away");
                        break Ok(());
                    }
                    Err(e) => break Err(anyhow::Error::new(e)),
                }
            }
            Err(e) => break Err(anyhow::Error::new(e).context("recording")),
        }
    };
    tracing::debug!("recorded {} frames", writer.frames());
    // Finalise the file whatever happened, so what was recorded stays readable.
    let finished = match writer.finish() {
        Err(crate::audio::AudioError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    };
    outcome?;
    finished?;
    stream.close().context("closing the stream")?;
    let _ = io::stderr().flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("sgcat").chain(args.iter().copied()))
    }

    #[test]
    fn command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn volumes() {
        assert_eq!(parse_volume("0.5"), Ok(0.5));
        assert_eq!(parse_volume("50%"), Ok(0.5));
        assert_eq!(parse_volume("400%"), Ok(4.0));
        assert_eq!(parse_volume("0"), Ok(0.0));
        assert_eq!(parse_volume(" 150 %"), Ok(1.5));
        for bad in ["4.01", "401%", "-0.1", "loud", "%", "NaN", "inf", ""] {
            assert!(parse_volume(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1.5"), Ok(1.5));
        for bad in ["0", "-1", "x", "inf"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn playback_flags() {
        let a = parse(&[
            "-p",
            "song.flac",
            "--volume",
            "50%",
            "-d",
            "speakers",
            "--latency-msec",
            "40",
        ])
        .unwrap();
        assert!(a.playback && !a.record);
        assert_eq!(a.path(), Some(Path::new("song.flac")));
        assert_eq!(a.volume, Some(0.5));
        assert_eq!(a.device.as_deref(), Some("speakers"));
        assert_eq!(a.latency_msec, 40);
        assert_eq!(a.label(), "song.flac");
        assert_eq!(a.raw_mode(), RawMode::Never);

        let a = parse(&["--playback"]).unwrap();
        assert_eq!(a.path(), None);
        assert_eq!(a.latency_msec, DEFAULT_LATENCY_MS);
        assert_eq!(a.label(), "sgcat");
        let a = parse(&["-p", "-", "--name", "beep"]).unwrap();
        assert_eq!(a.path(), None);
        assert_eq!(a.label(), "beep");
    }

    #[test]
    fn raw_modes() {
        let a = parse(&["-p", "--raw"]).unwrap();
        assert_eq!(a.raw_mode(), RawMode::Always(FALLBACK_SPEC));
        let a = parse(&["-p", "--rate", "44100", "--format", "f32le"]).unwrap();
        let spec = StreamSpec {
            format: SampleFormat::F32Le,
            rate: 44_100,
            channels: 2,
        };
        assert_eq!(a.raw_mode(), RawMode::Fallback(spec));
        assert!(parse(&["-p", "--format", "u8"]).is_err());
        assert!(parse(&["-p", "--channels", "9"]).is_err());
        assert!(parse(&["-p", "--rate", "100"]).is_err());
    }

    #[test]
    fn record_flags() {
        let a = parse(&[
            "-r",
            "out.wav",
            "-d",
            "default.monitor",
            "--duration",
            "0.25",
            "-c",
            "1",
        ])
        .unwrap();
        assert!(a.record);
        assert_eq!(a.duration, Some(0.25));
        assert_eq!(a.spec_over(FALLBACK_SPEC).channels, 1);
        assert_eq!(a.device.as_deref(), Some("default.monitor"));
    }

    #[test]
    fn usage_errors() {
        use clap::error::ErrorKind as K;
        assert_eq!(
            parse(&["-p", "-r"]).unwrap_err().kind(),
            K::ArgumentConflict
        );
        assert_eq!(parse(&[]).unwrap_err().kind(), K::MissingRequiredArgument);
        assert_eq!(
            parse(&["-r", "--volume", "1"]).unwrap_err().kind(),
            K::ArgumentConflict
        );
        assert_eq!(
            parse(&["-r", "--raw"]).unwrap_err().kind(),
            K::ArgumentConflict
        );
        assert_eq!(
            parse(&["-p", "--duration", "1"]).unwrap_err().kind(),
            K::ArgumentConflict
        );
        assert_eq!(
            parse(&["-p", "-v", "-q"]).unwrap_err().kind(),
            K::ArgumentConflict
        );
        assert_eq!(
            parse(&["-p", "--volume", "5"]).unwrap_err().kind(),
            K::ValueValidation
        );
        assert_eq!(
            parse(&["-p", "--latency-msec", "0"]).unwrap_err().kind(),
            K::ValueValidation
        );
        // clap exits with 2 on all of these.
        assert_eq!(
            parse(&["-p", "-r"]).unwrap_err().exit_code(),
            i32::from(crate::exit::USAGE)
        );
    }

    #[test]
    fn verbosity() {
        assert_eq!(
            parse(&["-p"]).unwrap().tracing_level(),
            tracing::Level::WARN
        );
        assert_eq!(
            parse(&["-p", "-v"]).unwrap().tracing_level(),
            tracing::Level::DEBUG
        );
        assert_eq!(
            parse(&["-p", "-vv"]).unwrap().tracing_level(),
            tracing::Level::TRACE
        );
        assert_eq!(
            parse(&["-p", "-q"]).unwrap().tracing_level(),
            tracing::Level::ERROR
        );
    }
}
