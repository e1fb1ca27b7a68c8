//! Writes the seed corpus of every target under `fuzz/corpus/` (small, checked in):
//! `cargo fuzz run --sanitizer none seeds -- -runs=0` (a "target" that writes them in its init
//! and fuzzes nothing, so that it builds like the targets and reuses their build). Re-run when
//! the wire types change; stale seeds are harmless (the fuzzer mutates from them) but reach
//! less deep.
#![no_main]

use pulseaudio::protocol as pa;
use soundgate_fuzz::encode_script;
use soundgate_proto::format::{SampleFormat, StreamSpec};
use soundgate_proto::wire::*;
use std::path::Path;

const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::S16Le,
    rate: 48_000,
    channels: 2,
};

fn requests() -> Vec<Request> {
    let s = |x: &str| x.to_string();
    vec![
        Request::Hello {
            version: PROTOCOL_VERSION,
            name: s("seed"),
        },
        Request::ServerInfo,
        Request::ListSinks,
        Request::ListSources,
        Request::ListStreams,
        Request::CreatePlayback {
            name: s("music"),
            sink: None,
            spec: SPEC,
            capacity_frames: 4800,
            volume: 1.0,
            muted: false,
            corked: false,
            exclusive: false,
        },
        Request::CreateRecord {
            name: s("rec"),
            source: Some(s("default.monitor")),
            spec: SPEC,
            capacity_frames: 9600,
        },
        Request::SetVolume {
            stream: 1,
            volume: 0.5,
        },
        Request::SetMute {
            stream: 1,
            muted: true,
        },
        Request::Cork {
            stream: 1,
            corked: true,
        },
        Request::Drain { stream: 1 },
        Request::StreamInfo { stream: 1 },
        Request::DeleteStream { stream: 1 },
        Request::SetDefaultSink { sink: s("default") },
        Request::MoveStream {
            stream: 1,
            device: s("default"),
        },
        Request::Subscribe,
        Request::UploadSample {
            name: s("bell"),
            spec: SPEC,
            frames: 480,
        },
        Request::PlaySample {
            name: s("bell"),
            device: None,
            volume: 1.0,
        },
        Request::RemoveSample { name: s("bell") },
        Request::ListSamples,
        Request::SuspendDevice {
            device: s("default"),
            suspend: true,
        },
        Request::SetDeviceVolume {
            device: s("default"),
            volume: 0.5,
        },
        Request::SetDeviceMute {
            device: s("default"),
            muted: true,
        },
        Request::SetDefaultSource {
            source: s("default.monitor"),
        },
        Request::CreateDevice {
            device: NewDevice {
                name: s("extra"),
                kind: DeviceKind::Sink,
                backend: s("null"),
                path: None,
                pcm: None,
                spec: SPEC,
                quantum: 256,
            },
        },
        Request::RemoveDevice { name: s("extra") },
        Request::ListClients,
        Request::KillClient { client: 2 },
        Request::SubscribeMeters { hz: 10 },
        Request::AuditTail { lines: 10 },
        Request::Stats,
        Request::AddGrant {
            uid: 1000,
            app_id: s("exe:/usr/bin/rec"),
            action: s("record"),
            target: Some(s("default.monitor")),
            allow: true,
        },
        Request::SubscribePrompts,
        Request::AnswerPrompt {
            prompt: 1,
            answer: PromptAnswer::AllowAlways,
        },
        Request::ListPrompts,
        Request::ListGrants,
        Request::RevokeGrant { grant: 1 },
        Request::ListStreamSettings,
        Request::ForgetStreamSettings {
            app_id: s("exe:/usr/bin/mpv"),
            uid: Some(1000),
            device: Some(s("default")),
        },
    ]
}

fn device(name: &str, kind: DeviceKind) -> DeviceInfo {
    DeviceInfo {
        name: name.to_string(),
        kind,
        backend: "null".into(),
        spec: SPEC,
        quantum: 16,
        is_default: true,
        suspended: false,
        monitor_of: None,
        state: DeviceState::Running,
        clock: "timer".into(),
        device: None,
        period_frames: 0,
        buffer_frames: 0,
        xruns: 0,
        suspends: 0,
        detail: None,
        volume: 1.0,
        muted: false,
    }
}

fn stream(id: u32) -> StreamInfo {
    StreamInfo {
        id,
        client: 1,
        name: "fuzz".into(),
        direction: Direction::Playback,
        device: "default".into(),
        spec: SPEC,
        volume: 1.0,
        muted: false,
        corked: false,
        underruns: 0,
        frames: 0,
        peak: 0.0,
        capacity_frames: 4800,
        exclusive: false,
    }
}

fn info() -> ServerInfo {
    ServerInfo {
        name: "soundgate".into(),
        version: "0.1.0".into(),
        protocol: PROTOCOL_VERSION,
        default_sink: Some("default".into()),
        default_source: Some("default.monitor".into()),
        notice: None,
    }
}

fn reply(id: u32, r: Reply) -> Vec<u8> {
    encode(&ServerMsg::Reply { id, result: Ok(r) }).expect("encode")
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(d.join(name), bytes).expect("write seed");
}

fn write_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (i, req) in requests().into_iter().enumerate() {
        let bytes = encode(&ClientMsg {
            id: i as u32 + 1,
            req: req.clone(),
        })
        .expect("encode");
        write(&dir, "wire_client_msg", &format!("req-{i:02}"), &bytes);
        // core_request: [fd count][fd kinds][message]; playback gets its ring, an
        // upload its sample memfd, the rest nothing (and one variant a stray fd).
        let fds: &[u8] = match req {
            Request::CreatePlayback { .. } => &[1, 0],
            Request::UploadSample { .. } => &[1, 0],
            Request::ServerInfo => &[1, 2],
            _ => &[0],
        };
        write(
            &dir,
            "core_request",
            &format!("req-{i:02}"),
            &[fds, &bytes].concat(),
        );
    }

    let err = WireError::new(ErrorKind::Denied, "recording needs a grant");
    let server_msgs = [
        ServerMsg::Reply {
            id: 1,
            result: Ok(Reply::Hello {
                version: PROTOCOL_VERSION,
                server: "soundgate".into(),
                client: 1,
            }),
        },
        ServerMsg::Reply {
            id: 2,
            result: Err(err.clone()),
        },
        ServerMsg::Reply {
            id: 3,
            result: Ok(Reply::Sinks(vec![device("default", DeviceKind::Sink)])),
        },
        ServerMsg::Reply {
            id: 4,
            result: Ok(Reply::Streams(vec![stream(1)])),
        },
        ServerMsg::Reply {
            id: 5,
            result: Ok(Reply::Stats(ServerStats {
                uptime_secs: 1,
                clients: 1,
                streams: 0,
                rss_bytes: 1 << 20,
                devices: vec![],
                client_cost: vec![(1, 0.01)],
                stream_wakeups: vec![],
                convert: vec![],
            })),
        },
        ServerMsg::Reply {
            id: 6,
            result: Ok(Reply::StreamSettings(vec![StreamSetting {
                uid: 1000,
                app_id: "exe:/usr/bin/mpv".into(),
                device: "default".into(),
                volume: 0.3,
                muted: false,
            }])),
        },
        ServerMsg::Event(Event::StreamEnded {
            stream: 1,
            error: err,
        }),
        ServerMsg::Event(Event::PermissionPending {
            request: 3,
            prompt: 1,
        }),
        ServerMsg::Event(Event::Meters(vec![Meter {
            stream: Some(1),
            device: "default".into(),
            peak: 0.5,
            rms: 0.25,
        }])),
    ];
    for (i, m) in server_msgs.iter().enumerate() {
        write(
            &dir,
            "wire_server_msg",
            &format!("msg-{i:02}"),
            &encode(m).expect("encode"),
        );
    }

    // client_replies: an honest server's answers to the target's call sequence, in order.
    let hello = reply(
        1,
        Reply::Hello {
            version: PROTOCOL_VERSION,
            server: "soundgate".into(),
            client: 1,
        },
    );
    let sinks = |id| reply(id, Reply::Sinks(vec![device("default", DeviceKind::Sink)]));
    let sources = |id| {
        reply(
            id,
            Reply::Sources(vec![device("default.monitor", DeviceKind::Monitor)]),
        )
    };
    let created = |id, capacity_frames| {
        reply(
            id,
            Reply::StreamCreated {
                stream: 1,
                spec: SPEC,
                capacity_frames,
                quantum: 16,
            },
        )
    };
    let none: Vec<u8> = vec![];
    let mut honest = vec![
        (none.clone(), hello),
        (none.clone(), reply(2, Reply::ServerInfo(info()))),
        (none.clone(), sinks(3)),
        (none.clone(), sources(4)),
        (none.clone(), reply(5, Reply::Streams(vec![stream(1)]))),
        (none.clone(), reply(6, Reply::Stream(stream(1)))),
        (none.clone(), reply(7, Reply::ServerInfo(info()))),
        (none.clone(), sinks(8)),
        (none.clone(), created(9, 4800)),
        (none.clone(), reply(10, Reply::Ok)),
        (none.clone(), reply(11, Reply::Stream(stream(1)))),
        (none.clone(), reply(12, Reply::Ok)),
        (none.clone(), reply(13, Reply::ServerInfo(info()))),
        (none.clone(), sources(14)),
    ];
    let tail = |fds: Vec<u8>| {
        vec![
            (fds, created(15, 4800)),
            (none.clone(), reply(16, Reply::Ok)),
        ]
    };
    let mut good = honest.clone();
    good.extend(tail(vec![0, 1]));
    write(&dir, "client_replies", "honest", &encode_script(&good));
    // A forged record ring: a valid header claiming 4800 frames, written up to frame 4000, on
    // a memfd of one page (the SIGBUS regression: the data past the page is not there).
    let mut short = honest.clone();
    let forged = [
        [5u8].as_slice(),
        &4096u16.to_le_bytes(),
        &4000u16.to_le_bytes(),
        &[1],
    ]
    .concat();
    short.extend(tail(forged));
    write(
        &dir,
        "client_replies",
        "short-memfd",
        &encode_script(&short),
    );
    // An unsealed ring memfd (the server could shrink it under the mapping later).
    honest.extend(tail(vec![3, 1]));
    write(
        &dir,
        "client_replies",
        "unsealed-memfd",
        &encode_script(&honest),
    );

    // ring_index: positions near zero, near wrap-around and at u64::MAX.
    let seeds: [[u64; 5]; 4] = [
        [10, 4, 8, 6, 4],
        [u64::MAX, u64::MAX - 8, 8, u64::MAX - 3, 8],
        [5, 9, 1, 0, 1],
        [1 << 40, (1 << 40) - 4800, 4800, 4799, 4800],
    ];
    for (i, s) in seeds.iter().enumerate() {
        let bytes: Vec<u8> = s.iter().flat_map(|v| v.to_le_bytes()).collect();
        write(&dir, "ring_index", &format!("pos-{i}"), &bytes);
    }

    // pulse_frames: [version byte][frames], real frames from the crate's encoder — the
    // handshake a libpulse client sends, then a playback stream.
    for (name, frames) in pulse_seeds() {
        let mut bytes = vec![(pa::MAX_VERSION - 8) as u8];
        bytes.extend(frames);
        write(&dir, "pulse_frames", name, &bytes);
    }

    // config_toml: the repository's fixtures, valid and invalid.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/configs");
    for kind in ["valid", "invalid"] {
        let Ok(entries) = std::fs::read_dir(fixtures.join(kind)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = format!("{kind}-{}", e.file_name().to_string_lossy());
            let text = std::fs::read(e.path()).expect("read fixture");
            write(&dir, "config_toml", &name, &text);
        }
    }
}

/// One frame per command, encoded as libpulse would at the newest protocol version.
fn pulse_frame(tag: u32, cmd: &pa::Command) -> Vec<u8> {
    let mut out = Vec::new();
    pa::write_command_message(&mut out, tag, cmd, pa::MAX_VERSION).expect("encode pulse");
    out
}

fn pulse_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let auth = pulse_frame(
        0,
        &pa::Command::Auth(pa::AuthParams {
            version: pa::MAX_VERSION,
            supports_shm: false,
            supports_memfd: false,
            cookie: vec![0x5a; 256],
        }),
    );
    let mut props = pa::Props::new();
    props.set(pa::Prop::ApplicationName, c"paplay");
    props.set(pa::Prop::ApplicationProcessBinary, c"paplay");
    let name = pulse_frame(1, &pa::Command::SetClientName(props.clone()));
    let spec = pa::SampleSpec {
        format: pa::SampleFormat::S16Le,
        channels: 2,
        sample_rate: 44100,
    };
    let play = pulse_frame(
        2,
        &pa::Command::CreatePlaybackStream(pa::PlaybackStreamParams {
            sample_spec: spec,
            channel_map: pa::ChannelMap::new([
                pa::ChannelPosition::FrontLeft,
                pa::ChannelPosition::FrontRight,
            ]),
            sink_name: Some(c"@DEFAULT_SINK@".into()),
            buffer_attr: pa::stream::BufferAttr {
                max_length: u32::MAX,
                target_length: 44100,
                pre_buffering: u32::MAX,
                minimum_request_length: u32::MAX,
                fragment_size: u32::MAX,
            },
            props,
            ..Default::default()
        }),
    );
    let info = pulse_frame(3, &pa::Command::GetServerInfo);
    // A memblock for channel 0: descriptor (length, channel, offset hi/lo, flags) + PCM.
    let mut memblock = Vec::new();
    for w in [64u32, 0, 0, 0, 0] {
        memblock.extend(w.to_be_bytes());
    }
    memblock.extend([0u8; 64]);
    let handshake = [auth.clone(), name.clone()].concat();
    vec![
        ("auth", auth),
        ("set-client-name", name),
        ("create-playback-stream", play.clone()),
        ("server-info", info.clone()),
        ("session", [handshake, play, info, memblock].concat()),
    ]
}

libfuzzer_sys::fuzz_target!(init: { write_seeds() }, |_data: &[u8]| {});
