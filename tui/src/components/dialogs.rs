//! Modal dialogs: confirmation, the device picker, the grant form and the help screen.

use crate::components::{centered, Handled, Intent};
use crate::keys::{self, text};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;
use soundgate_proto::wire::{GrantInfo, Request, StreamId};

fn frame(f: &mut Frame, area: Rect, title: &str) -> Rect {
    let block = Block::new()
        .borders(Borders::ALL)
        .title(format!(" {title} "))
        .border_style(Style::new().fg(Color::Yellow));
    f.render_widget(Clear, area);
    let inner = block.inner(area);
    f.render_widget(block, area);
    inner
}

/// "Are you sure?" before a destructive request.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirm {
    pub question: String,
    pub reqs: Vec<Request>,
    pub what: String,
}

impl Confirm {
    /// Draws it over `area`.
    pub fn draw(&self, f: &mut Frame, area: Rect) {
        let r = centered(area, 70, 7);
        let inner = frame(f, r, text::CONFIRM_TITLE);
        let lines = vec![
            Line::from(self.question.clone()),
            Line::default(),
            Line::from(vec![
                Span::styled("[y]", Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(" yes    "),
                Span::styled("[n]", Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(" no"),
            ]),
        ];
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), inner);
    }

    /// y sends, n/Esc cancels; every other key is swallowed (the dialog is modal).
    pub fn on_key(&self, key: &KeyEvent) -> Handled {
        if keys::YES.matches(key) {
            Handled::Intent(Intent::Send {
                reqs: self.reqs.clone(),
                what: self.what.clone(),
            })
        } else if keys::any(&keys::NO, key) {
            Handled::Intent(Intent::Close)
        } else {
            Handled::Consumed
        }
    }
}

/// Picks the device a stream moves to.
#[derive(Debug, Clone, PartialEq)]
pub struct Picker {
    pub stream: StreamId,
    pub title: String,
    pub devices: Vec<String>,
    pub current: String,
    pub index: usize,
}

impl Picker {
    /// A picker starting on the stream's current device.
    pub fn new(stream: StreamId, title: String, devices: Vec<String>, current: String) -> Picker {
        let index = devices.iter().position(|d| *d == current).unwrap_or(0);
        Picker {
            stream,
            title,
            devices,
            current,
            index,
        }
    }

    /// Draws it over `area`.
    pub fn draw(&self, f: &mut Frame, area: Rect) {
        let h = (self.devices.len() as u16).saturating_add(4).max(5);
        let r = centered(area, 50, h);
        let inner = frame(f, r, &self.title);
        let mut lines: Vec<Line> = if self.devices.is_empty() {
            vec![Line::from(text::EMPTY_DEVICES)]
        } else {
            self.devices
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let mark = if *d == self.current { " (current)" } else { "" };
                    let line = format!("{} {d}{mark}", if i == self.index { "▶" } else { " " });
                    if i == self.index {
                        Line::styled(line, Style::new().add_modifier(Modifier::REVERSED))
                    } else {
                        Line::from(line)
                    }
                })
                .collect()
        };
        lines.push(Line::styled(
            "↑↓ choose · Enter move · Esc cancel",
            Style::new().fg(Color::DarkGray),
        ));
        f.render_widget(Paragraph::new(lines), inner);
    }

    /// Arrows choose, Enter moves, Esc cancels.
    pub fn on_key(&mut self, key: &KeyEvent) -> Handled {
        if keys::any(&keys::UP, key) {
            self.index = self.index.saturating_sub(1);
        } else if keys::any(&keys::DOWN, key) {
            self.index = (self.index + 1).min(self.devices.len().saturating_sub(1));
        } else if keys::CONFIRM.matches(key) {
            return match self.devices.get(self.index) {
                Some(d) if *d != self.current => Intent::send(
                    Request::MoveStream {
                        stream: self.stream,
                        device: d.clone(),
                    },
                    format!("move stream {} to {d}", self.stream),
                ),
                _ => Handled::Intent(Intent::Close),
            };
        } else if keys::CANCEL.matches(key) {
            return Handled::Intent(Intent::Close);
        }
        Handled::Consumed
    }
}

/// Adds a grant, or edits one's scope (target and decision): the edit adds the new grant and
/// then revokes the old one, so there is no moment without either.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantForm {
    /// The grant being replaced, when editing.
    pub replaces: Option<u64>,
    /// uid, app id, action, target (empty: any).
    pub fields: [String; 4],
    pub allow: bool,
    pub focus: usize,
    pub error: Option<String>,
}

const FIELD_NAMES: [&str; 4] = ["User id", "App id", "Action", "Target (empty: any)"];

impl GrantForm {
    /// An empty form for a new grant.
    pub fn new_grant() -> GrantForm {
        GrantForm {
            replaces: None,
            fields: [String::new(), String::new(), "record".into(), String::new()],
            allow: true,
            focus: 0,
            error: None,
        }
    }

    /// A form editing `g`.
    pub fn edit(g: &GrantInfo) -> GrantForm {
        GrantForm {
            replaces: Some(g.id),
            fields: [
                g.uid.to_string(),
                g.app_id.clone(),
                g.action.clone(),
                g.target.clone().unwrap_or_default(),
            ],
            allow: g.allow,
            focus: 3,
            error: None,
        }
    }

    /// Draws it over `area`.
    pub fn draw(&self, f: &mut Frame, area: Rect) {
        let title = match self.replaces {
            Some(id) => format!("{} {id} (saved as an always grant)", text::FORM_EDIT_TITLE),
            None => format!("{} (saved as an always grant)", text::FORM_ADD_TITLE),
        };
        let r = centered(area, 80, 11);
        let inner = frame(f, r, &title);
        let mut lines: Vec<Line> = FIELD_NAMES
            .iter()
            .zip(&self.fields)
            .enumerate()
            .map(|(i, (name, value))| {
                let cursor = if i == self.focus { "▏" } else { "" };
                let style = if i == self.focus {
                    Style::new().add_modifier(Modifier::REVERSED)
                } else {
                    Style::new()
                };
                Line::from(vec![
                    Span::raw(format!("{name:<20} ")),
                    Span::styled(format!("{value}{cursor}"), style),
                ])
            })
            .collect();
        let decision = if self.allow { "allow" } else { "deny" };
        let style = if self.focus == 4 {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        lines.push(Line::from(vec![
            Span::raw(format!("{:<20} ", "Decision")),
            Span::styled(decision, style),
        ]));
        lines.push(Line::default());
        if let Some(e) = &self.error {
            lines.push(Line::styled(e.clone(), Style::new().fg(Color::Red)));
        }
        lines.push(Line::styled(
            text::FORM_HINT,
            Style::new().fg(Color::DarkGray),
        ));
        f.render_widget(Paragraph::new(lines), inner);
    }

    /// The requests the form stands for, or why it is incomplete.
    pub fn requests(&self) -> Result<Vec<Request>, String> {
        let uid: u32 = self.fields[0]
            .trim()
            .parse()
            .map_err(|_| format!("user id {:?} is not a number", self.fields[0]))?;
        let app_id = self.fields[1].trim().to_string();
        if app_id.is_empty() {
            return Err("the app id is empty (e.g. exe:/usr/bin/arecord)".into());
        }
        let action = self.fields[2].trim().to_string();
        if action.is_empty() {
            return Err("the action is empty (e.g. record)".into());
        }
        let target = Some(self.fields[3].trim().to_string()).filter(|t| !t.is_empty());
        let mut reqs = vec![Request::AddGrant {
            uid,
            app_id,
            action,
            target,
            allow: self.allow,
        }];
        if let Some(old) = self.replaces {
            reqs.push(Request::RevokeGrant { grant: old });
        }
        Ok(reqs)
    }

    /// Typing edits the focused field; Tab moves; Space toggles the decision; Enter saves.
    pub fn on_key(&mut self, key: &KeyEvent) -> Handled {
        if keys::CANCEL.matches(key) {
            return Handled::Intent(Intent::Close);
        }
        if keys::NEXT_FIELD.matches(key) || key.code == KeyCode::Down {
            self.focus = (self.focus + 1) % 5;
        } else if key.code == KeyCode::BackTab || key.code == KeyCode::Up {
            self.focus = (self.focus + 4) % 5;
        } else if keys::CONFIRM.matches(key) {
            return match self.requests() {
                Ok(reqs) => Handled::Intent(Intent::Send {
                    what: match self.replaces {
                        Some(id) => format!("edit grant {id}"),
                        None => "add grant".into(),
                    },
                    reqs,
                }),
                Err(e) => {
                    self.error = Some(e);
                    Handled::Consumed
                }
            };
        } else if self.focus == 4 {
            if keys::TOGGLE.matches(key) || matches!(key.code, KeyCode::Left | KeyCode::Right) {
                self.allow = !self.allow;
            }
        } else if let Some(field) = self.fields.get_mut(self.focus) {
            match key.code {
                KeyCode::Char(c) => field.push(c),
                KeyCode::Backspace => {
                    field.pop();
                }
                _ => {}
            }
        }
        Handled::Consumed
    }
}

/// The help screen: every key, from [`keys::HELP_SECTIONS`].
pub fn draw_help(f: &mut Frame, area: Rect) {
    let mut lines: Vec<Line> = Vec::new();
    for (section, bindings) in keys::HELP_SECTIONS {
        lines.push(Line::styled(
            section.to_string(),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        for b in bindings.iter() {
            lines.push(Line::from(format!("  {:<10} {}", b.label, b.help)));
        }
    }
    lines.push(Line::styled(
        "Mouse",
        Style::new().add_modifier(Modifier::BOLD),
    ));
    for (what, does) in keys::MOUSE_HELP {
        lines.push(Line::from(format!("  {what:<10} {does}")));
    }
    // Two columns when the screen is wide enough.
    let rows = area.height.saturating_sub(4);
    let half = lines.len().div_ceil(2);
    let two = area.width >= 150 && usize::from(rows) >= half;
    let h = if two { half } else { lines.len() } as u16 + 2;
    let w = if two { 146 } else { 80 };
    let r = centered(area, w, h);
    let inner = frame(f, r, &format!("{} — ? or Esc closes", text::HELP_TITLE));
    if two {
        let right = lines.split_off(half);
        let [a, b] = ratatui::layout::Layout::horizontal([
            ratatui::layout::Constraint::Percentage(50),
            ratatui::layout::Constraint::Percentage(50),
        ])
        .areas(inner);
        f.render_widget(Paragraph::new(lines), a);
        f.render_widget(Paragraph::new(right), b);
    } else {
        f.render_widget(Paragraph::new(lines), inner);
    }
}
