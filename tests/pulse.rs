//! The PulseAudio-protocol socket (issue 11), driven by the real PulseAudio client tools
//! (`pactl`, `paplay`, `pacat`, `parec`; `aplay -D pulse`; `mpv --ao=pulse`) and by raw frames
//! for the hostile cases. Each test starts a private daemon.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{channel, dominant_frequency, read_wav, tone, wait_for, write_wav, Daemon, Victim};
use soundgate_proto::wire::{PromptAnswer, Reply, Request};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FILE_SINK: &str = r#"
[[sink]]
name = "out"
backend = "file"
path = "$DIR/mix.wav"
rate = 48000
channels = 2
format = "f32le"
quantum = 256
"#;

/// The tests that load the machine (many clients, timing) run one at a time, so that they
/// do not measure each other.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

fn pulse_socket(d: &Daemon) -> PathBuf {
    d.runtime.join("pulse").join("native")
}

/// A PulseAudio client tool pointed at this daemon's pulse socket, with a private HOME so
/// no user configuration or autospawn gets in the way.
fn tool(d: &Daemon, name: &str) -> Command {
    let mut c = Command::new(name);
    c.env(
        "PULSE_SERVER",
        format!("unix:{}", pulse_socket(d).display()),
    )
    .env("HOME", d.path("home"))
    .env("XDG_CONFIG_HOME", d.path("home/.config"))
    .env("XDG_RUNTIME_DIR", d.path("home/run"))
    .env_remove("PULSE_COOKIE")
    .stdin(Stdio::null());
    c
}

fn run(mut c: Command) -> Output {
    c.output()
        .expect("run a PulseAudio client tool (is pulseaudio-utils installed?)")
}

fn ok(mut c: Command) -> String {
    let dbg = format!("{c:?}");
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "{dbg} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pactl(d: &Daemon, args: &[&str]) -> Output {
    let mut c = tool(d, "pactl");
    c.args(args);
    run(c)
}

fn pactl_ok(d: &Daemon, args: &[&str]) -> String {
    let mut c = tool(d, "pactl");
    c.args(args);
    ok(c)
}

fn s16_bytes(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| {
            ((f64::from(*s) * 32768.0).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes()
        })
        .collect()
}

/// The mix's left channel, from the first non-silent sample on.
fn mix_left(d: &Daemon) -> Vec<f32> {
    let (spec, samples) = read_wav(&d.path("mix.wav"));
    assert_eq!(spec.sample_rate, 48_000);
    channel(&samples, 2, 0)
}

#[test]
fn pactl_info_and_every_list_succeed() {
    let d = Daemon::start(FILE_SINK);
    let sock = pulse_socket(&d);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o666, "the pulse socket is for everyone");
    let info = pactl_ok(&d, &["info"]);
    assert!(info.contains("Server Name: soundgate"), "{info}");
    assert!(info.contains("Default Sink: out"), "{info}");
    assert!(info.contains("Server Protocol Version: 35"), "{info}");
    let sinks = pactl_ok(&d, &["list", "sinks"]);
    assert!(sinks.contains("Name: out"), "{sinks}");
    assert!(sinks.contains("Monitor Source: out.monitor"), "{sinks}");
    for section in [
        "modules",
        "sinks",
        "sources",
        "sink-inputs",
        "source-outputs",
        "clients",
        "samples",
        "cards",
    ] {
        pactl_ok(&d, &["list", section]);
        pactl_ok(&d, &["list", "short", section]);
        let json = pactl_ok(&d, &["--format=json", "list", section]);
        serde_json::from_str::<serde_json::Value>(&json)
            .unwrap_or_else(|e| panic!("pactl --format=json list {section}: {e}: {json}"));
    }
    pactl_ok(&d, &["list"]);
    pactl_ok(&d, &["list", "short"]);
    let all = pactl_ok(&d, &["--format=json", "list"]);
    let v: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(v["sinks"][0]["name"], "out", "{all}");
    // Lookups by name and the defaults.
    let vol = pactl_ok(&d, &["get-sink-volume", "@DEFAULT_SINK@"]);
    assert!(vol.contains("100%"), "{vol}");
    let bad = pactl(&d, &["get-sink-volume", "nosuchsink"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("No such entity"),
        "{bad:?}"
    );
}

/// Spawns `c` (with output captured).
fn spawn(mut c: Command) -> std::process::Child {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn()
        .expect("spawn a client tool (are pulseaudio-utils, mpv, alsa-utils installed?)")
}

#[test]
fn paplay_pacat_aplay_and_mpv_play_at_once_each_at_its_pitch_and_level() {
    let _serial = heavy();
    let mut d = Daemon::start(FILE_SINK);
    std::fs::create_dir_all(d.path("home")).unwrap();
    // paplay: a 44.1 kHz stereo s16 WAV of 440 Hz at 0.3 (resampled by the transport).
    let wav = d.path("paplay.wav");
    write_wav(
        &wav,
        44_100,
        2,
        &common::sine(440.0, 44_100, 3 * 44_100, 0.3, 2),
        false,
    );
    // pacat: raw 48 kHz mono s16le of 1000 Hz at 0.15 (up-mixed to both sides).
    let raw = d.path("pacat.raw");
    let pcm = s16_bytes(&common::sine(1000.0, 48_000, 3 * 48_000, 0.15, 1));
    std::fs::write(&raw, pcm).unwrap();
    // aplay through alsa-plugins' pulse PCM: 48 kHz stereo, 660 Hz at 0.2.
    let awav = d.path("aplay.wav");
    write_wav(
        &awav,
        48_000,
        2,
        &common::sine(660.0, 48_000, 3 * 48_000, 0.2, 2),
        false,
    );
    // mpv: 32 kHz mono, 250 Hz at 0.2.
    let mwav = d.path("mpv.wav");
    write_wav(
        &mwav,
        32_000,
        1,
        &common::sine(250.0, 32_000, 3 * 32_000, 0.2, 1),
        false,
    );

    let started = Instant::now();
    let mut paplay = tool(&d, "paplay");
    paplay.arg(&wav);
    let mut pacat = tool(&d, "pacat");
    pacat
        .args([
            "--playback",
            "--rate=48000",
            "--channels=1",
            "--format=s16le",
        ])
        .arg(&raw);
    let mut aplay = tool(&d, "aplay");
    aplay.args(["-q", "-D", "pulse"]).arg(&awav);
    let mut mpv = tool(&d, "mpv");
    mpv.args(["--no-config", "--really-quiet", "--no-video", "--ao=pulse"])
        .arg(&mwav);
    let children = [spawn(paplay), spawn(pacat), spawn(aplay), spawn(mpv)];
    for (name, child) in ["paplay", "pacat", "aplay", "mpv"].iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{name}: {out:?}\n{}", d.log());
    }
    let took = started.elapsed();
    // The files hold 3 s: the tools return only once it has been played (drain).
    assert!(
        took >= Duration::from_millis(2900),
        "returned after {took:?}"
    );
    d.stop();
    let left = mix_left(&d);
    let start = common::onset(&left, 0.01).expect("the mix holds sound");
    // A second in the middle, where all four play whatever their start-up times.
    let mid = &left[start + 60_000..start + 108_000];
    for (name, freq, level, lo, hi) in [
        ("paplay", 440.0, 0.3, 380.0, 500.0),
        ("pacat", 1000.0, 0.15, 900.0, 1100.0),
        ("aplay", 660.0, 0.2, 600.0, 720.0),
        ("mpv", 250.0, 0.2, 200.0, 300.0),
    ] {
        let f = dominant_frequency(mid, 48_000, lo, hi);
        assert!(
            (f - freq).abs() < 1.0,
            "{name}'s tone at {f} Hz, not {freq}"
        );
        let (amp, _) = tone(mid, freq, 48_000);
        assert!(
            (amp - level).abs() < 0.1 * level,
            "{name}'s level {amp}, not {level}"
        );
    }
    // Every sample made it: about 3 s of sound in all (plus the tools' start-up skew).
    let end = left.iter().rposition(|v| v.abs() > 0.01).unwrap();
    let secs = (end - start) as f64 / 48_000.0;
    assert!((2.95..4.5).contains(&secs), "{secs} s of sound");
}

#[test]
fn disabled_means_no_pulse_socket() {
    let d = Daemon::start(&format!("[pulse]\nenabled = false\n{FILE_SINK}"));
    assert!(d.socket().exists());
    assert!(!pulse_socket(&d).exists(), "no pulse socket when disabled");
}

const TWO_SINKS: &str = r#"
[[sink]]
name = "out"
backend = "null"
default = true

[[sink]]
name = "other"
backend = "null"
"#;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `pactl ARGS` fails with "Access denied".
fn denied(d: &Daemon, args: &[&str]) {
    let o = pactl(d, args);
    assert!(!o.status.success(), "pactl {args:?} succeeded");
    assert!(
        stderr(&o).contains("Access denied"),
        "pactl {args:?}: {}",
        stderr(&o)
    );
}

/// Every stream on the server, as the admin socket sees it.
fn all_streams(d: &Daemon) -> Vec<soundgate_proto::wire::StreamInfo> {
    match d
        .admin("check")
        .request(Request::ListStreams, &[])
        .unwrap()
        .0
    {
        Reply::Streams(v) => v,
        r => panic!("{r:?}"),
    }
}

#[test]
fn admin_commands_and_other_clients_streams_are_refused_and_nothing_changes() {
    let d = Daemon::start(TWO_SINKS);
    std::fs::create_dir_all(d.path("home")).unwrap();
    // Another client plays: pacat from a pipe that stays open.
    let mut pacat = tool(&d, "pacat");
    pacat.args([
        "--playback",
        "--rate=48000",
        "--channels=2",
        "--format=s16le",
    ]);
    pacat
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut victim = pacat.spawn().unwrap();
    let mut feed = victim.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = s16_bytes(&common::sine(440.0, 48_000, 4_800, 0.1, 2));
        while feed.write_all(&chunk).is_ok() {}
    });
    assert!(
        wait_for(Duration::from_secs(10), || !all_streams(&d).is_empty()),
        "pacat's stream never appeared"
    );
    let theirs = all_streams(&d).pop().unwrap();
    let id = theirs.id.to_string();
    // Invisible to another pulse client …
    let list = pactl_ok(&d, &["list", "short", "sink-inputs"]);
    assert!(
        list.trim().is_empty(),
        "another client's stream is listed: {list}"
    );
    let json = pactl_ok(&d, &["--format=json", "list", "sink-inputs"]);
    assert_eq!(json.trim(), "[]", "{json}");
    // … and out of its reach.
    denied(&d, &["set-sink-input-mute", &id, "1"]);
    // pactl reads the stream's info before setting a volume: it is not there to read.
    let o = pactl(&d, &["set-sink-input-volume", &id, "10%"]);
    assert!(
        !o.status.success() && stderr(&o).contains("No such entity"),
        "{o:?}"
    );
    // pactl 16 has no kill-sink-input: KILL_SINK_INPUT (49) and KILL_CLIENT (48) raw.
    let mut raw = RawClient::connect(&d);
    let mut body = Vec::new();
    tag_u32(&mut body, theirs.id);
    assert_eq!(
        error_code(&raw.call(49, &body)),
        1,
        "KILL_SINK_INPUT: Access denied"
    );
    let mut body = Vec::new();
    tag_u32(&mut body, theirs.client);
    assert_eq!(
        error_code(&raw.call(48, &body)),
        1,
        "KILL_CLIENT: Access denied"
    );
    denied(&d, &["move-sink-input", &id, "other"]);
    // The admin-only ones.
    denied(&d, &["suspend-sink", "out", "1"]);
    denied(&d, &["load-module", "module-native-protocol-tcp"]);
    denied(&d, &["set-default-sink", "other"]);
    denied(&d, &["set-sink-volume", "out", "50%"]);
    denied(&d, &["set-sink-mute", "out", "1"]);
    // Nothing changed, as the admin socket sees it.
    let now = all_streams(&d)
        .into_iter()
        .find(|s| s.id == theirs.id)
        .expect("the stream was not killed");
    assert!(!now.muted && (now.volume - 1.0).abs() < 1e-6, "{now:?}");
    assert_eq!(now.device, "out");
    let admin = d.admin("check");
    let Reply::ServerInfo(info) = admin.request(Request::ServerInfo, &[]).unwrap().0 else {
        panic!()
    };
    assert_eq!(info.default_sink.as_deref(), Some("out"));
    let Reply::Sinks(sinks) = admin.request(Request::ListSinks, &[]).unwrap().0 else {
        panic!()
    };
    let out = sinks.iter().find(|s| s.name == "out").unwrap();
    assert!(
        !out.suspended && !out.muted && (out.volume - 1.0).abs() < 1e-6,
        "{out:?}"
    );
    // The connection that was refused keeps working: one pactl runs all of these in a row.
    let info = pactl_ok(&d, &["info"]);
    assert!(info.contains("soundgate"));
    let _ = victim.kill();
    let _ = victim.wait();
    drop(writer);
}

#[test]
fn own_stream_volume_mute_and_listing_work() {
    let d = Daemon::start(TWO_SINKS);
    std::fs::create_dir_all(d.path("home")).unwrap();
    // A stream made over the raw protocol is that connection's own: it may control it.
    let mut c = RawClient::connect(&d);
    let ch = c.create_playback(48_000, 2);
    let streams = all_streams(&d);
    assert_eq!(streams.len(), 1);
    let index = streams[0].id;
    // SET_SINK_INPUT_MUTE (69) on its own stream: allowed.
    let mut body = Vec::new();
    tag_u32(&mut body, index);
    tag_bool(&mut body, true);
    let reply = c.call(69, &body);
    assert_eq!(
        reply_command(&reply),
        2,
        "mute of its own stream: {reply:?}"
    );
    assert!(all_streams(&d)[0].muted);
    // GET_SINK_INPUT_INFO_LIST (30) shows it.
    let reply = c.call(30, &[]);
    assert_eq!(reply_command(&reply), 2);
    assert!(reply.len() > 20, "own stream listed");
    // MOVE_SINK_INPUT (67) of its own stream to another sink it may use: done, and the
    // client is told (PLAYBACK_STREAM_MOVED, 78).
    let mut body = Vec::new();
    tag_u32(&mut body, index);
    tag_u32(&mut body, u32::MAX);
    tag_string(&mut body, Some("other"));
    assert_eq!(
        reply_command(&c.call(67, &body)),
        2,
        "move of its own stream"
    );
    assert!(
        wait_for(Duration::from_secs(5), || all_streams(&d)[0].device
            == "other"),
        "the stream did not move"
    );
    assert_eq!(reply_command(&c.call(20, &[])), 2);
    let moved = c
        .unsolicited
        .iter()
        .any(|p| reply_command(p) == 78 && u32::from_be_bytes([p[11], p[12], p[13], p[14]]) == ch);
    assert!(moved, "no PLAYBACK_STREAM_MOVED: {:?}", c.unsolicited);
}

/// A record stream from a capture source asks the user; allow → audio arrives, deny →
/// Access denied; a monitor is refused unless granted.
#[test]
fn parec_asks_for_consent_and_monitors_are_denied() {
    let d = Daemon::start(
        "[prompts]\ntimeout_secs = 20\n\n[[sink]]\nname = \"out\"\nbackend = \"null\"\n\n[[source]]\nname = \"mic\"\nbackend = \"null\"\n",
    );
    std::fs::create_dir_all(d.path("home")).unwrap();
    // No agent, a monitor: denied at once, no audio.
    let mut parec = tool(&d, "parec");
    parec.args(["-d", "out.monitor", "--raw"]);
    let o = run_for(parec, Duration::from_secs(5));
    assert!(o.stdout.is_empty(), "audio delivered from a monitor");
    assert!(stderr(&o).contains("Access denied"), "{}", stderr(&o));
    // With an agent: the prompt, then deny.
    let agent = d.admin("agent");
    agent.request(Request::SubscribePrompts, &[]).unwrap();
    let mut parec = tool(&d, "parec");
    parec.args(["-d", "mic", "--raw"]);
    let child = spawn(parec);
    let prompt = next_prompt(&agent);
    assert_eq!(
        (prompt.action.as_str(), prompt.target.as_str()),
        ("record", "mic")
    );
    answer(&agent, prompt.id, PromptAnswer::DenyOnce);
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Access denied"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    // Allow: audio arrives.
    let mut parec = tool(&d, "parec");
    parec.args([
        "-d",
        "mic",
        "--raw",
        "--rate=48000",
        "--channels=1",
        "--format=s16le",
    ]);
    parec.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = parec.spawn().unwrap();
    let prompt = next_prompt(&agent);
    answer(&agent, prompt.id, PromptAnswer::AllowSession);
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 48_000];
    out.read_exact(&mut buf)
        .expect("half a second of audio arrives");
    // Revoking the grant ends the source-output: parec is told its stream was killed.
    let Reply::Grants(grants) = agent.request(Request::ListGrants, &[]).unwrap().0 else {
        panic!()
    };
    let grant = grants
        .iter()
        .find(|g| g.action == "record")
        .expect("the grant");
    agent
        .request(Request::RevokeGrant { grant: grant.id }, &[])
        .unwrap();
    let ended = wait_for(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    assert!(ended, "parec kept recording after the grant was revoked");
    assert!(!o.status.success());
    assert!(all_streams(&d).is_empty(), "the record stream is gone");
    // The monitor is still denied with an agent (no rule asks for it).
    let mut parec = tool(&d, "parec");
    parec.args(["-d", "out.monitor", "--raw"]);
    let o = run_for(parec, Duration::from_secs(5));
    assert!(o.stdout.is_empty(), "audio delivered from a monitor");
    assert!(stderr(&o).contains("Access denied"), "{}", stderr(&o));
}

/// With a rule that lets the monitor be asked for, what parec records is what plays.
#[test]
fn parec_of_a_granted_monitor_records_the_mix() {
    let d = Daemon::start(
        "[prompts]\ntimeout_secs = 20\n\n[[sink]]\nname = \"out\"\nbackend = \"null\"\nrate = 48000\nchannels = 2\n\n[[rule]]\naction = \"record\"\ntarget = \"out.monitor\"\ndecision = \"ask\"\n",
    );
    std::fs::create_dir_all(d.path("home")).unwrap();
    let agent = d.admin("agent");
    agent.request(Request::SubscribePrompts, &[]).unwrap();
    let mut parec = tool(&d, "parec");
    parec.args([
        "-d",
        "out.monitor",
        "--raw",
        "--rate=44100",
        "--channels=1",
        "--format=s16be",
    ]);
    parec.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = parec.spawn().unwrap();
    let prompt = next_prompt(&agent);
    answer(&agent, prompt.id, PromptAnswer::AllowOnce);
    let raw = d.path("t.raw");
    std::fs::write(
        &raw,
        s16_bytes(&common::sine(800.0, 48_000, 96_000, 0.25, 2)),
    )
    .unwrap();
    let mut pacat = tool(&d, "pacat");
    pacat
        .args([
            "--playback",
            "--rate=48000",
            "--channels=2",
            "--format=s16le",
        ])
        .arg(&raw);
    let player = spawn(pacat);
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 2 * 44_100 * 2];
    out.read_exact(&mut buf)
        .expect("two seconds of audio arrive");
    let _ = child.kill();
    let _ = child.wait();
    assert!(player.wait_with_output().unwrap().status.success());
    let x: Vec<f32> = buf
        .chunks_exact(2)
        .map(|c| f32::from(i16::from_be_bytes([c[0], c[1]])) / 32768.0)
        .collect();
    let start = common::onset(&x, 0.05).expect("the tone was recorded");
    let seg = &x[start + 4_410..(start + 48_510).min(x.len())];
    let f = dominant_frequency(seg, 44_100, 600.0, 1000.0);
    assert!((f - 800.0).abs() < 1.0, "recorded {f} Hz");
    let (amp, _) = tone(seg, 800.0, 44_100);
    assert!((amp - 0.25).abs() < 0.03, "recorded level {amp}");
}

fn run_for(mut c: Command, limit: Duration) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

fn next_prompt(agent: &soundgate_proto::client::Client) -> soundgate_proto::wire::PromptInfo {
    let mut got = None;
    let ok = wait_for(Duration::from_secs(15), || {
        for ev in agent.take_events().unwrap() {
            if let soundgate_proto::wire::Event::Prompt(p) = ev {
                got.get_or_insert(p);
            }
        }
        got.is_some()
    });
    assert!(ok, "no prompt reached the agent");
    got.unwrap()
}

fn answer(agent: &soundgate_proto::client::Client, prompt: u64, answer: PromptAnswer) {
    let (reply, _) = agent
        .request(Request::AnswerPrompt { prompt, answer }, &[])
        .unwrap();
    assert_eq!(reply, Reply::Ok);
}

// ---- a raw protocol client, for what the tools never send -------------------------------

fn tag_u32(b: &mut Vec<u8>, v: u32) {
    b.push(b'L');
    b.extend(v.to_be_bytes());
}

fn tag_bool(b: &mut Vec<u8>, v: bool) {
    b.push(if v { b'1' } else { b'0' });
}

fn tag_string(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            b.push(b't');
            b.extend(s.as_bytes());
            b.push(0);
        }
        None => b.push(b'N'),
    }
}

fn frame(channel: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend((payload.len() as u32).to_be_bytes());
    f.extend(channel.to_be_bytes());
    f.extend([0u8; 8]);
    f.extend(flags.to_be_bytes());
    f.extend(payload);
    f
}

/// The command number of a reply packet (2 = REPLY, 0 = ERROR).
fn reply_command(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[1], p[2], p[3], p[4]])
}

/// The error code of an ERROR packet.
fn error_code(p: &[u8]) -> u32 {
    assert_eq!(reply_command(p), 0, "not an error: {p:?}");
    u32::from_be_bytes([p[11], p[12], p[13], p[14]])
}

struct RawClient {
    s: UnixStream,
    tag: u32,
    /// Unsolicited control packets seen while waiting for replies.
    unsolicited: Vec<Vec<u8>>,
}

impl RawClient {
    fn connect(d: &Daemon) -> RawClient {
        let s = UnixStream::connect(pulse_socket(d)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = RawClient {
            s,
            tag: 0,
            unsolicited: Vec::new(),
        };
        let mut auth = Vec::new();
        tag_u32(&mut auth, 35);
        auth.push(b'x');
        auth.extend(256u32.to_be_bytes());
        auth.extend([0u8; 256]);
        assert_eq!(reply_command(&c.call(8, &auth)), 2, "AUTH");
        let mut props = Vec::new();
        props.push(b'P');
        tag_string(&mut props, Some("application.name"));
        tag_u32(&mut props, 5);
        props.push(b'x');
        props.extend(5u32.to_be_bytes());
        props.extend(b"raw!\0");
        tag_string(&mut props, None);
        assert_eq!(reply_command(&c.call(9, &props)), 2, "SET_CLIENT_NAME");
        c
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    /// Sends a command and returns the next control packet's payload (skipping memblocks
    /// and unsolicited commands).
    fn call(&mut self, command: u32, body: &[u8]) -> Vec<u8> {
        let tag = self.tag;
        self.tag += 1;
        let mut p = Vec::new();
        tag_u32(&mut p, command);
        tag_u32(&mut p, tag);
        p.extend(body);
        self.send(&frame(u32::MAX, 0, &p)).unwrap();
        loop {
            let (channel, payload) = self.read_frame().expect("a reply");
            if channel == u32::MAX {
                let t = u32::from_be_bytes([payload[6], payload[7], payload[8], payload[9]]);
                if t == tag {
                    return payload;
                }
                if t == u32::MAX {
                    self.unsolicited.push(payload);
                }
            }
        }
    }

    fn read_frame(&mut self) -> std::io::Result<(u32, Vec<u8>)> {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h)?;
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let channel = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let mut p = vec![0u8; len];
        self.s.read_exact(&mut p)?;
        Ok((channel, p))
    }

    /// The body of CREATE_PLAYBACK_STREAM at v35 with a given spec and channel map.
    fn playback_body(rate: u32, channels: u8, map_len: u8) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend([b'a', 3, channels]);
        b.extend(rate.to_be_bytes());
        b.extend([b'm', map_len]);
        b.extend((0..map_len).map(|i| (i % 2) + 1));
        tag_u32(&mut b, u32::MAX); // sink index
        tag_string(&mut b, None); // sink name
        for _ in 0..1 {
            tag_u32(&mut b, u32::MAX); // maxlength
        }
        tag_bool(&mut b, false); // corked
        for _ in 0..4 {
            tag_u32(&mut b, u32::MAX); // tlength prebuf minreq sync_id(any)
        }
        b.extend([b'v', channels]);
        for _ in 0..channels {
            b.extend(0x10000u32.to_be_bytes());
        }
        for _ in 0..9 {
            tag_bool(&mut b, false); // no_remap … adjust_latency
        }
        b.push(b'P');
        tag_string(&mut b, None); // empty proplist
        for _ in 0..7 {
            tag_bool(&mut b, false); // v14…v18 flags
        }
        b.extend([b'B', 0]); // no formats
        b
    }

    fn create_playback(&mut self, rate: u32, channels: u8) -> u32 {
        let reply = self.call(3, &Self::playback_body(rate, channels, channels));
        assert_eq!(
            reply_command(&reply),
            2,
            "CREATE_PLAYBACK_STREAM: {reply:?}"
        );
        u32::from_be_bytes([reply[11], reply[12], reply[13], reply[14]])
    }
}

/// Whether the daemon closed `c` (EOF or reset) within a few seconds.
fn closed(c: &mut RawClient) -> bool {
    c.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    loop {
        match c.read_frame() {
            Ok(_) => continue,
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                )
            }
        }
    }
}

#[test]
fn hostile_pulse_input_gets_an_error_or_ends_that_connection_only() {
    let _serial = heavy();
    let mut d = Daemon::start(FILE_SINK);
    std::fs::create_dir_all(d.path("home")).unwrap();
    let victim = Victim::start(&d);
    // A pulse victim too, playing on its own connection throughout.
    let mut pv = RawClient::connect(&d);
    let pv_channel = pv.create_playback(48_000, 2);

    // An unknown command: NOTSUPPORTED, and the connection goes on.
    let mut c = RawClient::connect(&d);
    assert_eq!(error_code(&c.call(250, &[])), 19);
    assert_eq!(
        reply_command(&c.call(20, &[])),
        2,
        "GET_SERVER_INFO after it"
    );
    // A tagstruct that lies about its types (a string where a sample spec belongs).
    let mut body = Vec::new();
    tag_string(&mut body, Some("not a sample spec"));
    assert_eq!(error_code(&c.call(3, &body)), 7, "PA_ERR_PROTOCOL");
    // A 64-channel map, a rate of 0 and of 10 MHz: refused.
    let reply = c.call(3, &RawClient::playback_body(48_000, 64, 64));
    assert_eq!(reply_command(&reply), 0, "64 channels: {reply:?}");
    for rate in [0, 10_000_000] {
        let reply = c.call(3, &RawClient::playback_body(rate, 2, 2));
        assert_eq!(error_code(&reply), 3, "rate {rate}: PA_ERR_INVALID");
    }
    // A memblock for a channel it does not own (the pulse victim's channel number exists
    // only on the victim's connection): dropped; the connection goes on.
    c.send(&frame(pv_channel, 0, &[0x55; 4096])).unwrap();
    c.send(&frame(pv_channel + 17, 0, &[0x55; 4096])).unwrap();
    assert_eq!(reply_command(&c.call(20, &[])), 2);
    // A frame with SHM flags: the connection ends.
    c.send(&frame(pv_channel, 0x8000_0000, &[0; 64])).unwrap();
    assert!(closed(&mut c), "SHM frame did not end the connection");
    // A length of 4 GiB: the connection ends before anything is allocated.
    let mut c = RawClient::connect(&d);
    let mut header = frame(u32::MAX, 0, &[]);
    header[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
    c.send(&header).unwrap();
    assert!(closed(&mut c), "4 GiB frame did not end the connection");
    // A garbage frame: an error reply or the end of that connection.
    let mut c = RawClient::connect(&d);
    c.send(&frame(u32::MAX, 0, &[0xde, 0xad, 0xbe, 0xef, 0x01, 0x02]))
        .unwrap();
    assert!(closed(&mut c), "garbage did not end the connection");
    // A control packet with flags, and raw garbage before AUTH.
    let mut c = RawClient::connect(&d);
    c.send(&frame(u32::MAX, 1, &[b'L', 0, 0, 0, 20, b'L', 0, 0, 0, 1]))
        .unwrap();
    assert!(closed(&mut c));
    let mut s = UnixStream::connect(pulse_socket(&d)).unwrap();
    s.write_all(&[0xff; 4096]).unwrap();
    // A wrong-length cookie.
    let mut s2 = UnixStream::connect(pulse_socket(&d)).unwrap();
    let mut auth = Vec::new();
    tag_u32(&mut auth, 8);
    tag_u32(&mut auth, 0);
    tag_u32(&mut auth, 35);
    auth.push(b'x');
    auth.extend(3u32.to_be_bytes());
    auth.extend([1, 2, 3]);
    s2.write_all(&frame(u32::MAX, 0, &auth)).unwrap();
    // A timeval with 2^32-1 microseconds (overflows the codec in debug builds).
    let mut c = RawClient::connect(&d);
    let mut body = Vec::new();
    tag_u32(&mut body, pv_channel);
    body.push(b'T');
    body.extend(0u32.to_be_bytes());
    body.extend(u32::MAX.to_be_bytes());
    let reply = c.call(14, &body);
    assert_eq!(reply_command(&reply), 0, "bad timeval: an error reply");
    assert_eq!(
        reply_command(&c.call(20, &[])),
        2,
        "and the connection goes on"
    );

    // The pulse victim still works, the native victim played without an underrun, the
    // daemon is up and serves a fresh client.
    assert_eq!(reply_command(&pv.call(20, &[])), 2);
    victim.check();
    assert!(d.alive(), "the daemon died:\n{}", d.log());
    assert!(pactl_ok(&d, &["info"]).contains("soundgate"));
}

fn dev_zero() -> Stdio {
    Stdio::from(std::fs::File::open("/dev/zero").unwrap())
}

fn stats(d: &Daemon) -> soundgate_proto::wire::ServerStats {
    match d.admin("stats").request(Request::Stats, &[]).unwrap().0 {
        Reply::Stats(s) => s,
        r => panic!("{r:?}"),
    }
}

/// CPU seconds (user + system) and RSS in KiB of a process.
fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, rss)
}

const NULL_SINK: &str =
    "[[sink]]\nname = \"out\"\nbackend = \"null\"\nrate = 48000\nchannels = 2\nquantum = 256\n";

/// `pacat --latency-msec=20` plays 30 s with no underrun, by its own report and the
/// daemon's counter, while 32 other pulse clients play.
#[test]
fn pacat_at_20_ms_plays_30_s_without_underrun_among_32_others() {
    let _serial = heavy();
    let d = Daemon::start(NULL_SINK);
    std::fs::create_dir_all(d.path("home")).unwrap();
    let mut others = Vec::new();
    for _ in 0..32 {
        let mut c = tool(&d, "pacat");
        c.args([
            "--playback",
            "--rate=48000",
            "--channels=2",
            "--format=s16le",
        ]);
        c.stdin(dev_zero())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        others.push(c.spawn().unwrap());
    }
    assert!(
        wait_for(Duration::from_secs(20), || all_streams(&d).len() >= 32),
        "the 32 streams did not all start"
    );
    let raw = d.path("30s.raw");
    std::fs::write(
        &raw,
        s16_bytes(&common::sine(440.0, 48_000, 30 * 48_000, 0.1, 2)),
    )
    .unwrap();
    let mut probe = tool(&d, "pacat");
    probe
        .args([
            "-v",
            "--playback",
            "--latency-msec=20",
            "--stream-name=probe20",
            "--rate=48000",
            "--channels=2",
            "--format=s16le",
        ])
        .arg(&raw);
    let probe = spawn(probe);
    let mut daemon_underruns = 0;
    let mut seen = false;
    let pid = probe.id();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        for st in all_streams(&d).iter().filter(|s| s.name == "probe20") {
            seen = true;
            daemon_underruns = daemon_underruns.max(st.underruns);
        }
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(Some(_)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z ").then_some(()))
        {
            break;
        }
    }
    let out = probe.wait_with_output().unwrap();
    for mut c in others {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(out.status.success(), "{out:?}");
    assert!(seen, "the probe stream was never listed");
    let report = stderr(&out);
    let underruns = report.matches("Stream underrun").count();
    assert!(
        report.contains("Stream started"),
        "{}",
        &report[..report.len().min(2000)]
    );
    assert_eq!(underruns, 0, "pacat reported {underruns} underruns");
    // Its latency reports (GET_PLAYBACK_LATENCY, from the engine's frame counter) are real:
    // some tens of milliseconds, never zero or seconds.
    let lat: Vec<u64> = report
        .split("Latency: ")
        .skip(1)
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .collect();
    assert!(lat.len() > 100, "pacat printed {} latencies", lat.len());
    let mean = lat.iter().sum::<u64>() / lat.len() as u64;
    assert!((5_000..200_000).contains(&mean), "mean latency {mean} us");
    assert_eq!(daemon_underruns, 0, "the daemon counted underruns");
}

/// The flood: 60 `pacat --latency-msec=5000 --rate=384000`. Streams beyond the per-uid
/// conversion budget are refused; the daemon stays up, a victim plays without an underrun
/// and the engine has no late cycle. CPU and RSS are printed (not asserted).
#[test]
fn flood_of_384_khz_pacats_is_bounded_by_the_conversion_budget() {
    let _serial = heavy();
    let mut d = Daemon::start(NULL_SINK);
    std::fs::create_dir_all(d.path("home")).unwrap();
    let victim = Victim::start(&d);
    let (cpu0, _) = cpu_and_rss(d.pid());
    let t0 = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..60 {
        let mut c = tool(&d, "pacat");
        c.args([
            "--playback",
            "--latency-msec=5000",
            "--rate=384000",
            "--channels=2",
            "--format=s16le",
        ]);
        c.stdin(dev_zero())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        flood.push(c.spawn().unwrap());
    }
    // Let the flood settle: every pacat either plays or gave up.
    std::thread::sleep(Duration::from_secs(4));
    let (cpu1, rss) = cpu_and_rss(d.pid());
    let playing = all_streams(&d).len() - 1; // less the victim
                                             // The accepted ones are each listed with their cost (864 000 samples/s a stream, see
                                             // below), all within the one uid's budget.
    let during = stats(&d).convert;
    let converting: u64 = during.iter().map(|c| c.samples_per_sec).sum();
    assert!(
        (playing == 0 || !during.is_empty())
            && converting <= 7_680_000
            && during
                .iter()
                .all(|c| c.budget == 7_680_000 && c.samples_per_sec % 864_000 == 0),
        "{during:?}"
    );
    let mut refused = 0;
    let mut reasons = String::new();
    for mut c in flood {
        if let Ok(Some(_)) = c.try_wait() {
            refused += 1;
            let mut e = String::new();
            let _ = c.stderr.take().unwrap().read_to_string(&mut e);
            reasons = e;
        } else {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    eprintln!(
        "flood: {playing} streams played, {refused} refused; daemon CPU {:.0}% of one core, \
         RSS {} KiB",
        100.0 * (cpu1 - cpu0) / t0.elapsed().as_secs_f64(),
        rss
    );
    // 384 kHz stereo in, 48 kHz stereo out: 864 000 samples/s a stream; the default budget
    // (7 680 000) holds eight.
    assert!(playing <= 8, "{playing} flood streams accepted");
    assert!(refused >= 52, "only {refused} refused");
    assert!(reasons.contains("Too large"), "{reasons}");
    assert!(
        d.log().contains("over the budget"),
        "the daemon logs why: {}",
        d.log()
    );
    victim.check();
    assert!(d.alive());
    let s = stats(&d);
    let late: u64 = s.devices.iter().map(|x| x.late_cycles).sum();
    assert_eq!(late, 0, "late engine cycles: {:?}", s.devices);
}

/// `sgctl stats` shows what each pulse client's conversion costs: a 44.1 kHz stereo pacat
/// into a 48 kHz stereo sink converts 44 100 × 2 + 48 000 × 2 samples/s, charged to its own
/// core client and to its uid's budget; the entry goes when the stream does.
#[test]
fn sgctl_stats_shows_each_pulse_clients_conversion_cost() {
    let _serial = heavy();
    let config = format!("{NULL_SINK}\n[pulse]\nconvert_samples_per_sec = 5000000\n");
    let d = Daemon::start(&config);
    std::fs::create_dir_all(d.path("home")).unwrap();
    let sgctl = |args: &[&str]| {
        let out = Command::new(common::bin("sgctl"))
            .arg("--admin")
            .arg(d.admin_socket())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "sgctl {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let convert = || -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&sgctl(&["--json", "stats"])).unwrap();
        v["convert"].as_array().cloned().unwrap_or_default()
    };
    assert!(convert().is_empty(), "no pulse stream, no conversion");

    let mut c = tool(&d, "pacat");
    c.args([
        "--playback",
        "--rate=44100",
        "--channels=2",
        "--format=s16le",
    ]);
    c.stdin(dev_zero())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut pacat = spawn(c);
    assert!(
        wait_for(Duration::from_secs(20), || all_streams(&d).len() == 1),
        "pacat's stream did not appear:\n{}",
        d.log()
    );
    let owner = all_streams(&d)[0].client;
    let rows = convert();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0]["client"], owner,
        "charged to the stream's own client"
    );
    assert_eq!(rows[0]["uid"], own_uid(), "{rows:?}");
    assert_eq!(rows[0]["samples_per_sec"], 44_100 * 2 + 48_000 * 2);
    assert_eq!(rows[0]["budget"], 5_000_000);
    let text = sgctl(&["stats"]);
    let line = text
        .lines()
        .find(|l| l.contains("184200"))
        .unwrap_or_else(|| panic!("no conversion row in:\n{text}"));
    assert!(line.contains("5000000"), "{line}");
    assert!(text.contains("CONVERT/S"), "{text}");

    let _ = pacat.kill();
    let _ = pacat.wait();
    assert!(
        wait_for(Duration::from_secs(10), || convert().is_empty()),
        "the cost outlived its stream: {:?}",
        convert()
    );
}

/// This test process's uid (what the pacats it starts run as), read from /proc.
fn own_uid() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// SUBSCRIBE delivers events about the connection's own objects only, and the sample cache
/// (upload, list, play, remove) works within one connection's own namespace.
#[test]
fn subscribe_events_and_the_sample_cache() {
    let d = Daemon::start(FILE_SINK);
    std::fs::create_dir_all(d.path("home")).unwrap();
    let mut c = RawClient::connect(&d);
    let mut mask = Vec::new();
    tag_u32(&mut mask, 0x02ff);
    assert_eq!(reply_command(&c.call(35, &mask)), 2, "SUBSCRIBE");
    // Another client's stream: no event reaches us.
    let raw = d.path("t.raw");
    std::fs::write(
        &raw,
        s16_bytes(&common::sine(440.0, 48_000, 24_000, 0.1, 2)),
    )
    .unwrap();
    let mut pacat = tool(&d, "pacat");
    pacat
        .args([
            "--playback",
            "--rate=48000",
            "--channels=2",
            "--format=s16le",
        ])
        .arg(&raw);
    assert!(run(pacat).status.success());
    assert_eq!(reply_command(&c.call(20, &[])), 2);
    let sink_input_events = |c: &RawClient| {
        c.unsolicited
            .iter()
            .filter(|p| reply_command(p) == 66)
            .filter(|p| (u32::from_be_bytes([p[11], p[12], p[13], p[14]]) & 0x0f) == 2)
            .count()
    };
    assert_eq!(sink_input_events(&c), 0, "saw another client's stream");
    // Its own stream: a "new sink-input" event.
    c.create_playback(48_000, 2);
    assert_eq!(reply_command(&c.call(20, &[])), 2);
    assert!(
        sink_input_events(&c) >= 1,
        "no event for its own stream: {:?}",
        c.unsolicited
    );

    // Upload a 0.1 s s16le stereo sample.
    let pcm = s16_bytes(&common::sine(880.0, 44_100, 4_410, 0.3, 2));
    let mut body = Vec::new();
    tag_string(&mut body, Some("bell"));
    body.extend([b'a', 3, 2]);
    body.extend(44_100u32.to_be_bytes());
    body.extend([b'm', 2, 1, 2]);
    tag_u32(&mut body, pcm.len() as u32);
    body.push(b'P');
    tag_string(&mut body, None);
    let reply = c.call(15, &body);
    assert_eq!(reply_command(&reply), 2, "CREATE_UPLOAD_STREAM: {reply:?}");
    let channel = u32::from_be_bytes([reply[11], reply[12], reply[13], reply[14]]);
    c.send(&frame(channel, 0, &pcm)).unwrap();
    let mut body = Vec::new();
    tag_u32(&mut body, channel);
    assert_eq!(reply_command(&c.call(17, &body)), 2, "FINISH_UPLOAD_STREAM");
    // Listed (GET_SAMPLE_INFO_LIST), played (PLAY_SAMPLE), removed (REMOVE_SAMPLE).
    let list = c.call(34, &[]);
    assert_eq!(reply_command(&list), 2);
    assert!(list.windows(4).any(|w| w == b"bell"), "sample not listed");
    let mut body = Vec::new();
    tag_u32(&mut body, u32::MAX);
    tag_string(&mut body, None);
    tag_u32(&mut body, 0x10000);
    tag_string(&mut body, Some("bell"));
    body.push(b'P');
    tag_string(&mut body, None);
    assert_eq!(reply_command(&c.call(18, &body)), 2, "PLAY_SAMPLE");
    let mut body = Vec::new();
    tag_string(&mut body, Some("bell"));
    assert_eq!(reply_command(&c.call(19, &body)), 2, "REMOVE_SAMPLE");
    let list = c.call(34, &[]);
    assert!(
        !list.windows(4).any(|w| w == b"bell"),
        "sample still listed"
    );
    // Another connection never sees it, and cannot play it.
    let o = pactl(&d, &["play-sample", "bell"]);
    assert!(!o.status.success());
}

/// Cork stops consumption and uncork resumes it; DRAIN is acknowledged only once the engine
/// has consumed every frame sent; latency offsets follow the engine.
#[test]
fn cork_stops_consuming_and_drain_waits_for_the_last_frame() {
    let d = Daemon::start(NULL_SINK);
    let mut c = RawClient::connect(&d);
    let ch = c.create_playback(48_000, 2);
    // 0.6 s of audio.
    let pcm = s16_bytes(&common::sine(440.0, 48_000, 28_800, 0.1, 2));
    for chunk in pcm.chunks(4_800) {
        c.send(&frame(ch, 0, chunk)).unwrap();
    }
    // Less than prebuf (about tlength, 1 s): nothing plays until TRIGGER.
    let frames = |d: &Daemon| all_streams(d).first().map_or(0, |s| s.frames);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(frames(&d), 0, "played while prebuffering");
    let mut body = Vec::new();
    tag_u32(&mut body, ch);
    assert_eq!(reply_command(&c.call(43, &body)), 2, "TRIGGER");
    assert!(
        wait_for(Duration::from_secs(5), || frames(&d) > 2_000),
        "the stream never started"
    );
    let mut body = Vec::new();
    tag_u32(&mut body, ch);
    tag_bool(&mut body, true);
    assert_eq!(reply_command(&c.call(41, &body)), 2, "CORK");
    std::thread::sleep(Duration::from_millis(100));
    let corked_at = frames(&d);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(frames(&d), corked_at, "a corked stream kept consuming");
    let mut body = Vec::new();
    tag_u32(&mut body, ch);
    tag_bool(&mut body, false);
    assert_eq!(reply_command(&c.call(41, &body)), 2, "UNCORK");
    let mut body = Vec::new();
    tag_u32(&mut body, ch);
    let asked = Instant::now();
    assert_eq!(reply_command(&c.call(12, &body)), 2, "DRAIN");
    let waited = asked.elapsed();
    // What was left when uncorked takes its time to play, and all of it was consumed.
    let left_ms = (28_800 - corked_at) * 1000 / 48_000;
    assert!(
        waited.as_millis() as u64 + 60 >= left_ms,
        "drain acked after {waited:?}, {left_ms} ms of audio were left"
    );
    assert!(
        frames(&d) >= 28_800,
        "drain acked with {} of 28800 frames played",
        frames(&d)
    );
    // GET_PLAYBACK_LATENCY: write offset = bytes sent, read offset = bytes played.
    let mut body = Vec::new();
    tag_u32(&mut body, ch);
    body.push(b'T');
    body.extend(1u32.to_be_bytes());
    body.extend(0u32.to_be_bytes());
    let r = c.call(14, &body);
    assert_eq!(reply_command(&r), 2, "GET_PLAYBACK_LATENCY");
    // usec, usec, bool, timeval, timeval, then the s64 write and read offsets.
    let off = 10 + 9 + 9 + 1 + 9 + 9;
    let write = i64::from_be_bytes(r[off + 1..off + 9].try_into().unwrap());
    let read = i64::from_be_bytes(r[off + 10..off + 18].try_into().unwrap());
    assert_eq!(write, pcm.len() as i64);
    assert_eq!(read, pcm.len() as i64, "everything played");
}
