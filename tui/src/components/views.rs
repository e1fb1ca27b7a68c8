//! The four views: Streams, Devices, Clients, Permissions.

use crate::components::dialogs::GrantForm;
use crate::components::{
    db_text, ellipsize, meter_line, percent, placeholder, scale_text, step_volume, Handled, Intent,
    Selection,
};
use crate::keys::{self, text};
use crate::state::{short_app, user_name, Avail, MeterState, State};
use crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, HighlightSpacing, Paragraph, Row, Table, Wrap};
use ratatui::Frame;
use soundgate_proto::wire::{
    ClientInfo, DeviceInfo, DeviceKind, DeviceState, Direction, GrantInfo, Request, StreamInfo,
};

/// A view: one tab of the body.
pub trait View {
    /// Draws the view into `area`.
    fn draw(&mut self, f: &mut Frame, area: Rect, st: &State);
    /// Offers a key; the view says whether it used it.
    fn on_key(&mut self, key: &KeyEvent, st: &State) -> Handled;
    /// A left click at (`x`, `y`): selects the row there. Returns whether it hit one.
    fn on_click(&mut self, x: u16, y: u16, st: &State) -> bool;
    /// The wheel at (`x`, `y`).
    fn on_scroll(&mut self, x: u16, y: u16, up: bool, st: &State) -> Handled;
}

const HIGHLIGHT: Style = Style::new().add_modifier(Modifier::REVERSED);

fn block(title: &str) -> Block<'_> {
    Block::new()
        .borders(Borders::ALL)
        .title(format!(" {title} "))
}

fn draw_placeholder(f: &mut Frame, area: Rect, title: &str, msg: &str) {
    f.render_widget(
        Paragraph::new(msg.to_string())
            .style(Style::new().fg(Color::DarkGray))
            .wrap(Wrap { trim: true })
            .block(block(title)),
        area,
    );
}

fn header_row(cells: Vec<String>) -> Row<'static> {
    Row::new(cells).style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED))
}

/// Width left for the meter column once the fixed columns are laid out.
fn meter_width(area: Rect, fixed: &[u16]) -> u16 {
    // Column gaps, the border and the selection mark.
    let used: u16 = fixed.iter().sum::<u16>() + fixed.len() as u16 + 4;
    area.width.saturating_sub(used).max(8)
}

/// Column widths (the meter's inserted at `meter_at`) that fit `area`: the meter gets what is
/// left, at least 8 cells; when even that does not fit, the widest columns give up a cell at a
/// time. A table must never be over-constrained: the layout solver then picks a different
/// answer from run to run.
fn fit_widths(area: Rect, fixed: &[u16], meter_at: usize) -> Vec<u16> {
    let mut w = fixed.to_vec();
    w.insert(meter_at, meter_width(area, fixed));
    let avail = area.width.saturating_sub(w.len() as u16 + 3);
    while w.iter().sum::<u16>() > avail {
        // The widest column, the leftmost on a tie.
        let Some((i, &max)) = w.iter().enumerate().rev().max_by_key(|(_, v)| **v) else {
            break;
        };
        if max <= 3 {
            break;
        }
        w[i] -= 1;
    }
    w
}

fn sorted_streams(st: &State) -> Vec<&StreamInfo> {
    let mut v: Vec<&StreamInfo> = st
        .streams
        .ready()
        .map(|l| l.iter().collect())
        .unwrap_or_default();
    v.sort_by_key(|s| s.id);
    v
}

/// Streams: every playback and record stream, with a live level meter.
#[derive(Debug, Default)]
pub struct StreamsView {
    pub sel: Selection,
}

impl StreamsView {
    fn selected<'a>(&self, st: &'a State) -> Option<&'a StreamInfo> {
        let list = sorted_streams(st);
        self.sel
            .index(list.len())
            .and_then(|i| list.get(i).copied())
    }

    fn volume(&self, s: &StreamInfo, up: bool) -> Handled {
        let volume = step_volume(s.volume, up);
        Intent::send(
            Request::SetVolume {
                stream: s.id,
                volume,
            },
            format!("volume of stream {} to {}", s.id, percent(volume)),
        )
    }
}

impl View for StreamsView {
    fn draw(&mut self, f: &mut Frame, area: Rect, st: &State) {
        let list = sorted_streams(st);
        let title = text::TABS[0];
        if let Some(msg) = placeholder(&st.streams, list.is_empty(), text::EMPTY_STREAMS) {
            self.sel.area = area;
            return draw_placeholder(f, area, title, &msg);
        }
        self.sel.clamp(list.len());
        let fixed = [4, 14, 14, 8, 7, 4, 12, 15, 5, 4, 9, 5, 6];
        let fitted = fit_widths(area, &fixed, 12);
        let mw = fitted[12];
        let rows: Vec<Row> = list
            .iter()
            .map(|s| {
                let client = st.client(s.client);
                let (app, user, pid) = match client {
                    Some(c) => (
                        short_app(&c.app_id),
                        user_name(c.user.as_deref(), c.uid),
                        c.pid.to_string(),
                    ),
                    None => (format!("client {}", s.client), "?".into(), "?".into()),
                };
                let meter = st.stream_meters.get(&s.id).copied().unwrap_or_default();
                let state = match (s.direction, s.corked) {
                    (_, true) => "paused",
                    (Direction::Playback, false) => "playing",
                    (Direction::Record, false) => "recording",
                };
                let dir = match s.direction {
                    Direction::Playback => "play",
                    Direction::Record => "rec",
                };
                let dir_style = match s.direction {
                    Direction::Record => Style::new().fg(Color::Red),
                    Direction::Playback => Style::new(),
                };
                Row::new(vec![
                    Cell::from(s.id.to_string()),
                    Cell::from(ellipsize(&s.name, 14)),
                    Cell::from(ellipsize(&app, 14)),
                    Cell::from(ellipsize(&user, 8)),
                    Cell::from(pid),
                    Cell::from(dir).style(dir_style),
                    Cell::from(ellipsize(&s.device, 12)),
                    Cell::from(s.spec.to_string()),
                    Cell::from(percent(s.volume)),
                    Cell::from(if s.muted { "mute" } else { "" }),
                    Cell::from(state),
                    Cell::from(s.underruns.to_string()),
                    Cell::from(meter_line(&meter, usize::from(mw))),
                    Cell::from(db_text(meter.level)),
                ])
            })
            .collect();
        let widths: Vec<Constraint> = fitted.iter().map(|w| Constraint::Length(*w)).collect();
        let header = header_row(
            [
                "ID", "Name", "App", "User", "PID", "Dir", "Device", "Format", "Vol", "Mute",
                "State", "Undr",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([scale_text(usize::from(mw)), "  dBFS".to_string()])
            .collect(),
        );
        let table = Table::new(rows, widths)
            .header(header)
            .block(block(title))
            .row_highlight_style(HIGHLIGHT)
            .highlight_symbol("▶ ")
            .highlight_spacing(HighlightSpacing::Always);
        self.sel.area = area;
        f.render_stateful_widget(table, area, &mut self.sel.table);
    }

    fn on_key(&mut self, key: &KeyEvent, st: &State) -> Handled {
        let len = sorted_streams(st).len();
        if self.sel.on_key(key, len) {
            return Handled::Consumed;
        }
        let Some(s) = self.selected(st) else {
            return Handled::Ignored;
        };
        if keys::any(&keys::VOLUME_UP, key) {
            self.volume(s, true)
        } else if keys::any(&keys::VOLUME_DOWN, key) {
            self.volume(s, false)
        } else if keys::MUTE.matches(key) {
            Intent::send(
                Request::SetMute {
                    stream: s.id,
                    muted: !s.muted,
                },
                format!(
                    "{} stream {}",
                    if s.muted { "unmute" } else { "mute" },
                    s.id
                ),
            )
        } else if keys::MOVE.matches(key) {
            let devices: Vec<String> = match s.direction {
                Direction::Playback => st
                    .sinks
                    .ready()
                    .map(|l| l.iter().map(|d| d.name.clone()).collect()),
                Direction::Record => st
                    .sources
                    .ready()
                    .map(|l| l.iter().map(|d| d.name.clone()).collect()),
            }
            .unwrap_or_default();
            Handled::Intent(Intent::PickDevice {
                stream: s.id,
                title: format!("{} {} “{}”", text::MOVE_TITLE, s.id, s.name),
                devices,
                current: s.device.clone(),
            })
        } else if keys::any(&keys::KILL, key) {
            let who = st
                .client(s.client)
                .map(|c| short_app(&c.app_id))
                .unwrap_or_else(|| format!("client {}", s.client));
            Handled::Intent(Intent::Confirm {
                question: format!("Kill stream {} “{}” of {who}?", s.id, s.name),
                reqs: vec![Request::DeleteStream { stream: s.id }],
                what: format!("kill stream {}", s.id),
            })
        } else {
            Handled::Ignored
        }
    }

    fn on_click(&mut self, x: u16, y: u16, st: &State) -> bool {
        let len = sorted_streams(st).len();
        match self.sel.row_at(x, y, len) {
            Some(row) => {
                self.sel.table.select(Some(row));
                true
            }
            None => false,
        }
    }

    fn on_scroll(&mut self, x: u16, y: u16, up: bool, st: &State) -> Handled {
        if !self.on_click(x, y, st) {
            return Handled::Ignored;
        }
        match self.selected(st) {
            Some(s) => self.volume(s, up),
            None => Handled::Ignored,
        }
    }
}

/// Devices: sinks, capture sources and monitors.
#[derive(Debug, Default)]
pub struct DevicesView {
    pub sel: Selection,
}

impl DevicesView {
    fn selected<'a>(&self, st: &'a State) -> Option<&'a DeviceInfo> {
        let list = st.devices();
        self.sel
            .index(list.len())
            .and_then(|i| list.get(i).copied())
    }

    fn volume(d: &DeviceInfo, up: bool) -> Handled {
        let volume = step_volume(d.volume, up);
        Intent::send(
            Request::SetDeviceVolume {
                device: d.name.clone(),
                volume,
            },
            format!("volume of {} to {}", d.name, percent(volume)),
        )
    }
}

impl View for DevicesView {
    fn draw(&mut self, f: &mut Frame, area: Rect, st: &State) {
        let list = st.devices();
        let title = text::TABS[1];
        self.sel.area = area;
        if let Some(e) = st.devices_unavailable() {
            return draw_placeholder(f, area, title, &format!("{}: {e}", text::NOT_AVAILABLE));
        }
        if let Some(msg) = placeholder(&st.sinks, list.is_empty(), text::EMPTY_DEVICES) {
            return draw_placeholder(f, area, title, &msg);
        }
        self.sel.clamp(list.len());
        let fixed = [3, 16, 7, 11, 6, 15, 6, 7, 6, 5, 4, 6];
        let fitted = fit_widths(area, &fixed, 11);
        let mw = fitted[11];
        let meters = st.meters.ready().is_some();
        let rows: Vec<Row> = list
            .iter()
            .map(|d| {
                let kind = match d.kind {
                    DeviceKind::Sink => "sink",
                    DeviceKind::Capture => "capture",
                    DeviceKind::Monitor => "monitor",
                };
                let (state, style) = match (d.state, d.suspended) {
                    (DeviceState::Unavailable, _) => ("unavailable", Style::new().fg(Color::Red)),
                    (DeviceState::Running, true) => ("suspended", Style::new().fg(Color::Yellow)),
                    (DeviceState::Running, false) => ("running", Style::new()),
                    (DeviceState::Idle, true) => ("suspended", Style::new().fg(Color::Yellow)),
                    (DeviceState::Idle, false) => ("idle", Style::new().fg(Color::DarkGray)),
                };
                let meter_cell = if meters {
                    let m: MeterState = st.device_meters.get(&d.name).copied().unwrap_or_default();
                    (
                        Cell::from(meter_line(&m, usize::from(mw))),
                        Cell::from(db_text(m.level)),
                    )
                } else {
                    (Cell::from("n/a"), Cell::from(""))
                };
                Row::new(vec![
                    Cell::from(if d.is_default { " * " } else { "" }),
                    Cell::from(ellipsize(&d.name, 16)),
                    Cell::from(kind),
                    Cell::from(state).style(style),
                    Cell::from(ellipsize(&d.backend, 6)),
                    Cell::from(d.spec.to_string()),
                    Cell::from(ellipsize(&d.clock, 6)),
                    Cell::from(d.quantum.to_string()),
                    Cell::from(d.xruns.to_string()),
                    Cell::from(percent(d.volume)),
                    Cell::from(if d.muted { "mute" } else { "" }),
                    meter_cell.0,
                    meter_cell.1,
                ])
            })
            .collect();
        let widths: Vec<Constraint> = fitted.iter().map(|w| Constraint::Length(*w)).collect();
        let scale = if meters {
            scale_text(usize::from(mw))
        } else {
            format!("level ({})", text::NOT_AVAILABLE)
        };
        let header = header_row(
            [
                "Def", "Name", "Kind", "State", "Backnd", "Format", "Clock", "Quantum", "Xruns",
                "Vol", "Mute",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([scale, "  dBFS".to_string()])
            .collect(),
        );
        let [table_area, detail_area] =
            Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
        let table = Table::new(rows, widths)
            .header(header)
            .block(block(title))
            .row_highlight_style(HIGHLIGHT)
            .highlight_symbol("▶ ")
            .highlight_spacing(HighlightSpacing::Always);
        self.sel.area = table_area;
        f.render_stateful_widget(table, table_area, &mut self.sel.table);
        if let Some(d) = self.selected(st) {
            let mut parts = Vec::new();
            if let Some(dev) = &d.device {
                parts.push(format!("opened {dev}"));
            }
            if let Some(m) = &d.monitor_of {
                parts.push(format!("monitor of {m}"));
            }
            parts.push(format!(
                "period {} / buffer {} frames",
                d.period_frames, d.buffer_frames
            ));
            parts.push(format!("suspends {}", d.suspends));
            if let Some(detail) = &d.detail {
                parts.push(detail.clone());
            }
            let line = format!(" {}: {}", d.name, parts.join(" · "));
            f.render_widget(
                Paragraph::new(ellipsize(&line, usize::from(area.width)))
                    .style(Style::new().fg(Color::DarkGray)),
                detail_area,
            );
        }
    }

    fn on_key(&mut self, key: &KeyEvent, st: &State) -> Handled {
        let len = st.devices().len();
        if self.sel.on_key(key, len) {
            return Handled::Consumed;
        }
        let Some(d) = self.selected(st) else {
            return Handled::Ignored;
        };
        if keys::any(&keys::VOLUME_UP, key) {
            Self::volume(d, true)
        } else if keys::any(&keys::VOLUME_DOWN, key) {
            Self::volume(d, false)
        } else if keys::MUTE.matches(key) {
            Intent::send(
                Request::SetDeviceMute {
                    device: d.name.clone(),
                    muted: !d.muted,
                },
                format!("{} {}", if d.muted { "unmute" } else { "mute" }, d.name),
            )
        } else if keys::SET_DEFAULT.matches(key) {
            let req = match d.kind {
                DeviceKind::Sink => Request::SetDefaultSink {
                    sink: d.name.clone(),
                },
                DeviceKind::Capture | DeviceKind::Monitor => Request::SetDefaultSource {
                    source: d.name.clone(),
                },
            };
            Intent::send(req, format!("make {} the default", d.name))
        } else if keys::SUSPEND.matches(key) {
            let req = Request::SuspendDevice {
                device: d.name.clone(),
                suspend: !d.suspended,
            };
            if d.suspended {
                Intent::send(req, format!("resume {}", d.name))
            } else {
                Handled::Intent(Intent::Confirm {
                    question: format!(
                        "Suspend {}? Its streams fall silent until it is resumed.",
                        d.name
                    ),
                    reqs: vec![req],
                    what: format!("suspend {}", d.name),
                })
            }
        } else {
            Handled::Ignored
        }
    }

    fn on_click(&mut self, x: u16, y: u16, st: &State) -> bool {
        match self.sel.row_at(x, y, st.devices().len()) {
            Some(row) => {
                self.sel.table.select(Some(row));
                true
            }
            None => false,
        }
    }

    fn on_scroll(&mut self, x: u16, y: u16, up: bool, st: &State) -> Handled {
        if !self.on_click(x, y, st) {
            return Handled::Ignored;
        }
        match self.selected(st) {
            Some(d) => Self::volume(d, up),
            None => Handled::Ignored,
        }
    }
}

fn provenance(source: &str) -> &'static str {
    match source {
        "flatpak" => "sandbox metadata",
        "snap" => "confinement cgroup",
        "systemd" => "app unit in cgroup",
        "exe" => "/proc/PID/exe",
        _ => "not identified",
    }
}

/// Clients: every connection with the identity the daemon derived.
#[derive(Debug, Default)]
pub struct ClientsView {
    pub sel: Selection,
}

fn sorted_clients(st: &State) -> Vec<&ClientInfo> {
    let mut v: Vec<&ClientInfo> = st
        .clients
        .ready()
        .map(|l| l.iter().collect())
        .unwrap_or_default();
    v.sort_by_key(|c| c.id);
    v
}

impl View for ClientsView {
    fn draw(&mut self, f: &mut Frame, area: Rect, st: &State) {
        let list = sorted_clients(st);
        let title = text::TABS[2];
        self.sel.area = area;
        if let Some(msg) = placeholder(&st.clients, list.is_empty(), text::EMPTY_CLIENTS) {
            return draw_placeholder(f, area, title, &msg);
        }
        self.sel.clamp(list.len());
        let cost = |id| match &st.stats {
            Avail::Ready(s) => s
                .client_cost
                .iter()
                .find(|(c, _)| *c == id)
                .map(|(_, share)| format!("{:.1}%", share * 100.0))
                .unwrap_or_else(|| "0.0%".into()),
            _ => "n/a".into(),
        };
        let rows: Vec<Row> = list
            .iter()
            .map(|c| {
                Row::new(vec![
                    Cell::from(c.id.to_string()),
                    Cell::from(ellipsize(&c.app_id, 34)),
                    Cell::from(format!("{} · {}", c.app_source, provenance(&c.app_source))),
                    Cell::from(format!(
                        "{} ({})",
                        user_name(c.user.as_deref(), c.uid),
                        c.uid
                    )),
                    Cell::from(c.pid.to_string()),
                    Cell::from(Line::from(vec![
                        Span::raw(ellipsize(&format!("“{}”", c.label), 22)),
                        Span::styled(" unverified", Style::new().fg(Color::DarkGray)),
                    ])),
                    Cell::from(if c.admin { "admin" } else { "" }),
                    Cell::from(c.streams.to_string()),
                    Cell::from(cost(c.id)),
                ])
            })
            .collect();
        let widths = [
            Constraint::Length(4),
            Constraint::Min(20),
            Constraint::Length(33),
            Constraint::Length(14),
            Constraint::Length(7),
            Constraint::Length(33),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Length(6),
        ];
        let header = header_row(
            [
                "ID",
                "App id",
                "Derived from",
                "User (uid)",
                "PID",
                "Declared name",
                "Sock",
                "Streams",
                "Cost",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        );
        let table = Table::new(rows, widths)
            .header(header)
            .block(block(title))
            .row_highlight_style(HIGHLIGHT)
            .highlight_symbol("▶ ")
            .highlight_spacing(HighlightSpacing::Always);
        f.render_stateful_widget(table, area, &mut self.sel.table);
    }

    fn on_key(&mut self, key: &KeyEvent, st: &State) -> Handled {
        let list = sorted_clients(st);
        if self.sel.on_key(key, list.len()) {
            return Handled::Consumed;
        }
        let Some(c) = self.sel.index(list.len()).and_then(|i| list.get(i)) else {
            return Handled::Ignored;
        };
        if keys::any(&keys::KILL, key) {
            Handled::Intent(Intent::Confirm {
                question: format!(
                    "Disconnect client {} ({}, pid {})? Its streams end.",
                    c.id,
                    short_app(&c.app_id),
                    c.pid
                ),
                reqs: vec![Request::KillClient { client: c.id }],
                what: format!("disconnect client {}", c.id),
            })
        } else {
            Handled::Ignored
        }
    }

    fn on_click(&mut self, x: u16, y: u16, st: &State) -> bool {
        match self.sel.row_at(x, y, sorted_clients(st).len()) {
            Some(row) => {
                self.sel.table.select(Some(row));
                true
            }
            None => false,
        }
    }

    fn on_scroll(&mut self, _x: u16, _y: u16, up: bool, st: &State) -> Handled {
        let key = if up { keys::UP[0] } else { keys::DOWN[0] };
        let ev = KeyEvent::new(key.code, key.mods);
        self.sel.on_key(&ev, sorted_clients(st).len());
        Handled::Consumed
    }
}

/// Permissions: the grants in force, and the audit log below.
#[derive(Debug, Default)]
pub struct PermissionsView {
    pub sel: Selection,
}

fn grants(st: &State) -> Vec<&GrantInfo> {
    let mut v: Vec<&GrantInfo> = st
        .grants
        .ready()
        .map(|l| l.iter().collect())
        .unwrap_or_default();
    v.sort_by_key(|g| g.id);
    v
}

/// One audit log line (JSON) as a table row; lines that do not parse are shown raw.
pub fn audit_line(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let time = s("time");
    let time = time.get(11..19).unwrap_or(&time).to_string();
    let subject = v.get("subject");
    let sub = |k: &str| {
        subject
            .and_then(|x| x.get(k))
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .unwrap_or_default()
    };
    let mut out = format!(
        "{time}  {:<18} {:<8} {:<22} {} pid {} uid {}  by {}",
        s("decision"),
        s("action"),
        s("object"),
        short_app(&sub("app_id")),
        sub("pid"),
        sub("uid"),
        s("by")
    );
    let reason = s("reason");
    if !reason.is_empty() {
        out.push_str(&format!(" — {reason}"));
    }
    out
}

impl View for PermissionsView {
    fn draw(&mut self, f: &mut Frame, area: Rect, st: &State) {
        let list = grants(st);
        let audit_h = (area.height / 2).max(4);
        let [top, bottom] =
            Layout::vertical([Constraint::Min(4), Constraint::Length(audit_h)]).areas(area);
        self.sel.area = top;
        if let Some(msg) = placeholder(&st.grants, list.is_empty(), text::EMPTY_GRANTS) {
            draw_placeholder(f, top, text::GRANTS_TITLE, &msg);
        } else {
            self.sel.clamp(list.len());
            let rows: Vec<Row> = list
                .iter()
                .map(|g| {
                    let (decision, style) = if g.allow {
                        ("allow", Style::new().fg(Color::Green))
                    } else {
                        ("deny", Style::new().fg(Color::Red))
                    };
                    let user = st
                        .clients
                        .ready()
                        .and_then(|cs| cs.iter().find(|c| c.uid == g.uid))
                        .and_then(|c| c.user.clone())
                        .map(|u| format!("{u} ({})", g.uid))
                        .unwrap_or_else(|| format!("uid {}", g.uid));
                    Row::new(vec![
                        Cell::from(g.id.to_string()),
                        Cell::from(user),
                        Cell::from(ellipsize(&g.app_id, 40)),
                        Cell::from(g.action.clone()),
                        Cell::from(g.target.clone().unwrap_or_else(|| "any".into())),
                        Cell::from(decision).style(style),
                        Cell::from(g.scope.clone()),
                        Cell::from(g.client.map(|c| c.to_string()).unwrap_or_default()),
                        Cell::from(ellipsize(&g.by, 24)),
                    ])
                })
                .collect();
            let widths = [
                Constraint::Length(4),
                Constraint::Length(14),
                Constraint::Min(20),
                Constraint::Length(10),
                Constraint::Length(16),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(24),
            ];
            let header = header_row(
                [
                    "ID", "User", "App", "Action", "Target", "Decision", "Scope", "Client", "By",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            );
            let table = Table::new(rows, widths)
                .header(header)
                .block(block(text::GRANTS_TITLE))
                .row_highlight_style(HIGHLIGHT)
                .highlight_symbol("▶ ")
                .highlight_spacing(HighlightSpacing::Always);
            f.render_stateful_widget(table, top, &mut self.sel.table);
        }
        let lines: Vec<String> = st
            .audit
            .ready()
            .map(|l| l.iter().map(|x| audit_line(x)).collect())
            .unwrap_or_default();
        match placeholder(&st.audit, lines.is_empty(), text::EMPTY_AUDIT) {
            Some(msg) => draw_placeholder(f, bottom, text::AUDIT_TITLE, &msg),
            None => {
                let visible = usize::from(bottom.height.saturating_sub(2));
                let start = lines.len().saturating_sub(visible);
                let text: Vec<Line> = lines[start..]
                    .iter()
                    .map(|l| Line::from(l.clone()))
                    .collect();
                f.render_widget(Paragraph::new(text).block(block(text::AUDIT_TITLE)), bottom);
            }
        }
    }

    fn on_key(&mut self, key: &KeyEvent, st: &State) -> Handled {
        let list = grants(st);
        if self.sel.on_key(key, list.len()) {
            return Handled::Consumed;
        }
        if keys::GRANT_ADD.matches(key) {
            return Handled::Intent(Intent::GrantForm(GrantForm::new_grant()));
        }
        let Some(g) = self.sel.index(list.len()).and_then(|i| list.get(i)) else {
            return Handled::Ignored;
        };
        if keys::GRANT_EDIT.matches(key) {
            Handled::Intent(Intent::GrantForm(GrantForm::edit(g)))
        } else if keys::any(&keys::GRANT_REVOKE, key) {
            Handled::Intent(Intent::Confirm {
                question: format!(
                    "Revoke grant {} ({} {} {} for {})? Capture streams it authorised end at once.",
                    g.id,
                    if g.allow { "allow" } else { "deny" },
                    g.action,
                    g.target.as_deref().unwrap_or("any device"),
                    short_app(&g.app_id)
                ),
                reqs: vec![Request::RevokeGrant { grant: g.id }],
                what: format!("revoke grant {}", g.id),
            })
        } else {
            Handled::Ignored
        }
    }

    fn on_click(&mut self, x: u16, y: u16, st: &State) -> bool {
        match self.sel.row_at(x, y, grants(st).len()) {
            Some(row) => {
                self.sel.table.select(Some(row));
                true
            }
            None => false,
        }
    }

    fn on_scroll(&mut self, _x: u16, _y: u16, up: bool, st: &State) -> Handled {
        let key = if up { keys::UP[0] } else { keys::DOWN[0] };
        let ev = KeyEvent::new(key.code, key.mods);
        self.sel.on_key(&ev, grants(st).len());
        Handled::Consumed
    }
}
