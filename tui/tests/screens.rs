//! Every view and dialog drawn into ratatui's `TestBackend` from fixture state, compared with
//! the committed snapshots in `tests/snapshots/` (review changes with `cargo insta review`),
//! and the key handling that turns what is on screen into requests.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use sgtop::app::{App, Modal, Tab};
use sgtop::event::{AppEvent, Command, Data};
use sgtop::state::Connection;
use soundgate_proto::wire::{
    ClientInfo, DeviceInfo, DeviceKind, DeviceState, DeviceStats, Direction, Event, GrantInfo,
    Meter, PromptAnswer, PromptInfo, Request, ServerInfo, ServerStats, StreamInfo, StreamWakeups,
};
use soundgate_proto::{SampleFormat, StreamSpec};

const NOW_MS: u64 = 1_790_000_000_000;
const SPEC: StreamSpec = StreamSpec {
    format: SampleFormat::S16Le,
    rate: 48_000,
    channels: 2,
};

fn device(name: &str, kind: DeviceKind, default: bool) -> DeviceInfo {
    DeviceInfo {
        name: name.into(),
        kind,
        backend: if kind == DeviceKind::Capture {
            "alsa"
        } else {
            "null"
        }
        .into(),
        spec: StreamSpec {
            format: SampleFormat::F32Le,
            ..SPEC
        },
        quantum: 512,
        is_default: default,
        suspended: false,
        monitor_of: (kind == DeviceKind::Monitor).then(|| "speakers".into()),
        state: DeviceState::Running,
        clock: if kind == DeviceKind::Capture {
            "device"
        } else {
            "timer"
        }
        .into(),
        device: (kind == DeviceKind::Capture).then(|| "hw:0,0".into()),
        period_frames: 0,
        buffer_frames: 0,
        xruns: if kind == DeviceKind::Capture { 2 } else { 0 },
        suspends: 0,
        detail: None,
        volume: 1.0,
        muted: false,
    }
}

fn stream(id: u32, client: u32, name: &str, direction: Direction, device: &str) -> StreamInfo {
    StreamInfo {
        id,
        client,
        name: name.into(),
        direction,
        device: device.into(),
        spec: SPEC,
        volume: 0.8,
        muted: id == 3,
        corked: false,
        underruns: u64::from(id),
        frames: 0,
        peak: 0.0,
        capacity_frames: 4800,
        exclusive: false,
    }
}

fn client(id: u32, app: &str, source: &str, uid: u32, user: &str, label: &str) -> ClientInfo {
    ClientInfo {
        id,
        pid: 4000 + id as i32,
        uid,
        user: Some(user.into()),
        app_id: app.into(),
        app_source: source.into(),
        label: label.into(),
        admin: app.ends_with("sgtop"),
        streams: 1,
    }
}

fn prompt(id: u64, label: &str) -> PromptInfo {
    PromptInfo {
        id,
        client: 4,
        pid: 4004,
        uid: 1000,
        user: Some("alice".into()),
        app_id: "exe:/usr/bin/arecord".into(),
        app_source: "exe".into(),
        exe: Some("/usr/bin/arecord".into()),
        label: label.into(),
        action: "record".into(),
        target: "mic".into(),
        deadline_unix_ms: NOW_MS + 27_400,
    }
}

/// An app connected to a daemon with two sinks' worth of devices, three streams (one
/// recording), four clients, two grants and an audit tail.
fn fixture() -> App {
    let mut app = App::new("/run/soundgate/admin");
    app.tick(NOW_MS);
    app.handle(AppEvent::Connected(ServerInfo {
        name: "soundgated".into(),
        version: "0.1.0".into(),
        protocol: 1,
        default_sink: Some("speakers".into()),
        default_source: Some("mic".into()),
        notice: None,
    }));
    let data = [
        Data::Meters(Ok(())),
        Data::Prompts(Ok(vec![])),
        Data::Sinks(Ok(vec![device("speakers", DeviceKind::Sink, true)])),
        Data::Sources(Ok(vec![
            device("mic", DeviceKind::Capture, true),
            device("speakers.monitor", DeviceKind::Monitor, false),
        ])),
        Data::Streams(Ok(vec![
            stream(1, 2, "Music", Direction::Playback, "speakers"),
            stream(2, 3, "Voice call", Direction::Record, "mic"),
            stream(3, 3, "Ringtone", Direction::Playback, "speakers"),
        ])),
        Data::Clients(Ok(vec![
            client(1, "exe:/usr/bin/sgtop", "exe", 0, "root", "sgtop"),
            client(2, "flatpak:org.example.Player", "flatpak", 1000, "alice", "Player"),
            client(3, "systemd:app-gnome-calls-1234.scope", "systemd", 1000, "alice", "Calls"),
            client(4, "exe:/usr/bin/arecord", "exe", 1000, "alice", "Totally Legit Recorder"),
        ])),
        Data::Grants(Ok(vec![
            GrantInfo {
                id: 1,
                uid: 1000,
                app_id: "systemd:app-gnome-calls-1234.scope".into(),
                action: "record".into(),
                target: Some("mic".into()),
                allow: true,
                scope: "always".into(),
                client: None,
                by: "agent pid 4001".into(),
            },
            GrantInfo {
                id: 2,
                uid: 1000,
                app_id: "exe:/usr/bin/arecord".into(),
                action: "record".into(),
                target: None,
                allow: false,
                scope: "session".into(),
                client: Some(4),
                by: "agent pid 4001".into(),
            },
        ])),
        Data::Audit(Ok(vec![
            r#"{"time":"2026-11-26T10:00:01.000Z","subject":{"client":3,"pid":4003,"uid":1000,"app_id":"systemd:app-gnome-calls-1234.scope"},"action":"record","object":"source mic","decision":"allow","reason":null,"by":"grant 1"}"#.into(),
            r#"{"time":"2026-11-26T10:00:02.000Z","subject":{"client":4,"pid":4004,"uid":1000,"app_id":"exe:/usr/bin/arecord"},"action":"record","object":"source speakers.monitor","decision":"deny","reason":"recording a monitor is not allowed","by":"default"}"#.into(),
            "not json: kept as it is".into(),
        ])),
        Data::Stats(Ok(ServerStats {
            uptime_secs: 3600,
            clients: 4,
            streams: 3,
            rss_bytes: 12 * 1024 * 1024,
            devices: vec![DeviceStats {
                name: "speakers".into(),
                cycles: 100_000,
                late_cycles: 1,
                xruns: 2,
                cycle_mean_us: 41.0,
                cycle_p99_us: 120.0,
                cycle_max_us: 300.0,
                load: 0.012,
                streams: 3,
                engine_streams: 3,
                engine_held: 3,
                wakeups: 9000,
            }],
            client_cost: vec![(2, 0.004), (3, 0.011)],
            stream_wakeups: vec![
                StreamWakeups {
                    stream: 1,
                    device: "speakers".into(),
                    wakeups: 600,
                    per_sec: 10.0,
                },
                StreamWakeups {
                    stream: 2,
                    device: "speakers".into(),
                    wakeups: 150,
                    per_sec: 2.5,
                },
            ],
            convert: vec![],
        })),
    ];
    for d in data {
        app.handle(AppEvent::Data(d));
    }
    let meter = |stream: Option<u32>, device: &str, peak: f32| Meter {
        stream,
        device: device.into(),
        peak,
        rms: peak / 2.0,
    };
    // A loud peak, then a quieter one: the hold mark stays at the loud one.
    app.handle(AppEvent::Server(Event::Meters(vec![meter(
        Some(1),
        "speakers",
        0.9,
    )])));
    app.handle(AppEvent::Server(Event::Meters(vec![
        meter(Some(1), "speakers", 0.25),
        meter(Some(2), "mic", 0.05),
        meter(Some(3), "speakers", 0.0),
        meter(None, "speakers", 0.25),
        meter(None, "mic", 0.05),
        meter(None, "speakers.monitor", 0.25),
    ])));
    app
}

/// The screen as text, one line per row, trailing blanks cut.
fn screen(app: &mut App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| app.draw(f)).unwrap();
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..h {
        let mut line = String::new();
        for x in 0..w {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn key(app: &mut App, code: KeyCode) {
    app.handle(AppEvent::Input(TermEvent::Key(KeyEvent::new(
        code,
        KeyModifiers::NONE,
    ))));
}

fn sends(app: &mut App) -> Vec<Request> {
    app.take_commands()
        .into_iter()
        .flat_map(|c| match c {
            Command::Send { reqs, .. } => reqs,
            _ => vec![],
        })
        .collect()
}

#[test]
fn streams_view() {
    insta::assert_snapshot!(screen(&mut fixture(), 150, 16));
}

#[test]
fn devices_view() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('2'));
    insta::assert_snapshot!(screen(&mut app, 150, 14));
}

#[test]
fn clients_view() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('3'));
    insta::assert_snapshot!(screen(&mut app, 150, 14));
}

#[test]
fn permissions_view() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('4'));
    insta::assert_snapshot!(screen(&mut app, 150, 20));
}

#[test]
fn prompt_popup_with_a_queue() {
    let mut app = fixture();
    app.handle(AppEvent::Server(Event::Prompt(prompt(
        7,
        "Totally Legit Recorder",
    ))));
    app.handle(AppEvent::Server(Event::Prompt(prompt(8, "second"))));
    insta::assert_snapshot!(screen(&mut app, 120, 28));
}

#[test]
fn help_screen() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!(screen(&mut app, 150, 50));
}

#[test]
fn disconnected_and_not_available() {
    let mut app = App::new("/run/soundgate/admin");
    app.tick(NOW_MS);
    app.handle(AppEvent::Disconnected(
        "cannot connect to soundgate at /run/soundgate/admin: connect: ENOENT".into(),
    ));
    app.handle(AppEvent::Data(Data::Streams(Err(
        "permission denied: admin only".into(),
    ))));
    app.handle(AppEvent::Data(Data::Stats(Err(
        "internal error: not built yet".into(),
    ))));
    insta::assert_snapshot!(screen(&mut app, 100, 8));
}

#[test]
fn prompt_keys_answer_and_resolved_elsewhere_closes() {
    let mut app = fixture();
    app.handle(AppEvent::Server(Event::Prompt(prompt(7, "a"))));
    app.handle(AppEvent::Server(Event::Prompt(prompt(8, "b"))));
    app.handle(AppEvent::Server(Event::Prompt(prompt(9, "c"))));
    // View keys do nothing while the popup is up: '2' does not switch, 'q' does not quit.
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('q'));
    assert_eq!(app.tab, Tab::Streams);
    assert!(!app.should_quit());
    assert!(sends(&mut app).is_empty());
    key(&mut app, KeyCode::Char('o'));
    assert_eq!(
        sends(&mut app),
        vec![Request::AnswerPrompt {
            prompt: 7,
            answer: PromptAnswer::AllowOnce
        }]
    );
    // Arrows and Enter: two down from "Allow once" is "Always allow".
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        sends(&mut app),
        vec![Request::AnswerPrompt {
            prompt: 8,
            answer: PromptAnswer::AllowAlways
        }]
    );
    // Answered elsewhere: the popup closes, and keys reach the views again.
    app.handle(AppEvent::Server(Event::PromptResolved {
        prompt: 9,
        outcome: "deny-once by agent pid 1".into(),
    }));
    assert!(app.state.prompts.is_empty());
    assert!(!screen(&mut app, 150, 30).contains("Permission request"));
    key(&mut app, KeyCode::Char('D'));
    assert!(sends(&mut app).is_empty());
    key(&mut app, KeyCode::Char('2'));
    assert_eq!(app.tab, Tab::Devices);
}

#[test]
fn every_deny_key() {
    for (code, answer) in [
        (KeyCode::Char('s'), PromptAnswer::AllowSession),
        (KeyCode::Char('a'), PromptAnswer::AllowAlways),
        (KeyCode::Char('d'), PromptAnswer::DenyOnce),
        (KeyCode::Char('D'), PromptAnswer::DenyAlways),
    ] {
        let mut app = fixture();
        app.handle(AppEvent::Server(Event::Prompt(prompt(5, "x"))));
        key(&mut app, code);
        assert_eq!(
            sends(&mut app),
            vec![Request::AnswerPrompt { prompt: 5, answer }]
        );
    }
}

#[test]
fn stream_actions_and_confirmation() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('+'));
    key(&mut app, KeyCode::Char('m'));
    assert_eq!(
        sends(&mut app),
        vec![
            Request::SetVolume {
                stream: 1,
                volume: 0.85
            },
            Request::SetMute {
                stream: 1,
                muted: true
            }
        ]
    );
    // Kill asks first; "n" cancels, "y" sends.
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('x'));
    assert!(matches!(app.modal, Some(Modal::Confirm(_))));
    insta::assert_snapshot!("confirm_kill", screen(&mut app, 100, 12));
    key(&mut app, KeyCode::Char('n'));
    assert!(app.modal.is_none());
    assert!(sends(&mut app).is_empty());
    key(&mut app, KeyCode::Char('x'));
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(sends(&mut app), vec![Request::DeleteStream { stream: 2 }]);
    // Move: a picker of sources for a record stream.
    key(&mut app, KeyCode::Char('M'));
    insta::assert_snapshot!("move_picker", screen(&mut app, 100, 12));
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        sends(&mut app),
        vec![Request::MoveStream {
            stream: 2,
            device: "speakers.monitor".into()
        }]
    );
}

#[test]
fn device_actions() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('*'));
    key(&mut app, KeyCode::Char('-'));
    assert_eq!(
        sends(&mut app),
        vec![
            Request::SetDefaultSource {
                source: "mic".into()
            },
            Request::SetDeviceVolume {
                device: "mic".into(),
                volume: 0.95
            }
        ]
    );
    key(&mut app, KeyCode::Char('S'));
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(
        sends(&mut app),
        vec![Request::SuspendDevice {
            device: "mic".into(),
            suspend: true
        }]
    );
}

#[test]
fn grant_edit_adds_then_revokes() {
    let mut app = fixture();
    key(&mut app, KeyCode::Char('4'));
    key(&mut app, KeyCode::Char('e'));
    // Target field is focused: change "mic" to "mic2", then flip the decision.
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Char(' '));
    insta::assert_snapshot!("grant_form", screen(&mut app, 100, 16));
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        sends(&mut app),
        vec![
            Request::AddGrant {
                uid: 1000,
                app_id: "systemd:app-gnome-calls-1234.scope".into(),
                action: "record".into(),
                target: Some("mic2".into()),
                allow: false
            },
            Request::RevokeGrant { grant: 1 }
        ]
    );
    // Revoke asks first.
    key(&mut app, KeyCode::Char('r'));
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(sends(&mut app), vec![Request::RevokeGrant { grant: 1 }]);
}

#[test]
fn mouse_selects_and_scroll_changes_volume() {
    let mut app = fixture();
    let _ = screen(&mut app, 150, 16); // lay out, so hit-testing knows where rows are
    let mouse = |kind, row| {
        AppEvent::Input(TermEvent::Mouse(MouseEvent {
            kind,
            column: 10,
            row,
            modifiers: KeyModifiers::NONE,
        }))
    };
    // Rows: header 3, tabs 1, border 1, column titles 1, then streams 1, 2, 3 at rows 6..=8.
    app.handle(mouse(MouseEventKind::ScrollDown, 8));
    assert_eq!(
        sends(&mut app),
        vec![Request::SetVolume {
            stream: 3,
            volume: 0.75
        }]
    );
    app.handle(mouse(MouseEventKind::Down(MouseButton::Left), 7));
    key(&mut app, KeyCode::Char('m'));
    assert_eq!(
        sends(&mut app),
        vec![Request::SetMute {
            stream: 2,
            muted: true
        }]
    );
    // A click on the third tab title switches to Clients.
    app.handle(mouse(MouseEventKind::Down(MouseButton::Left), 3));
    assert_eq!(app.tab, Tab::Streams, "column 10 is on the first tab");
    app.handle(AppEvent::Input(TermEvent::Mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: 25,
        row: 3,
        modifiers: KeyModifiers::NONE,
    })));
    assert_eq!(app.tab, Tab::Clients);
}

#[test]
fn disconnect_drops_stale_prompts_and_reconnect_shows_up() {
    let mut app = fixture();
    app.handle(AppEvent::Server(Event::Prompt(prompt(7, "a"))));
    app.handle(AppEvent::Disconnected("connection reset".into()));
    assert!(app.state.prompts.is_empty());
    assert!(screen(&mut app, 150, 16).contains("disconnected, retrying (connection reset)"));
    app.handle(AppEvent::Connected(ServerInfo {
        name: "soundgated".into(),
        version: "0.1.0".into(),
        protocol: 1,
        default_sink: None,
        default_source: None,
        notice: None,
    }));
    assert!(matches!(app.state.connection, Connection::Up(_)));
}
