//! The prompt popup: a modal over any view while a request waits for consent.

use crate::components::{centered, ellipsize, Handled, Intent};
use crate::keys::{self, text};
use crate::state::{user_name, State};
use crossterm::event::KeyEvent;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph};
use ratatui::Frame;
use soundgate_proto::wire::{PromptAnswer, PromptInfo, Request};

/// The answers in the order they are listed.
pub const ANSWERS: [PromptAnswer; 5] = [
    PromptAnswer::AllowOnce,
    PromptAnswer::AllowSession,
    PromptAnswer::AllowAlways,
    PromptAnswer::DenyOnce,
    PromptAnswer::DenyAlways,
];

fn provenance(source: &str) -> &'static str {
    match source {
        "flatpak" => "from the Flatpak sandbox metadata",
        "snap" => "from the Snap confinement cgroup",
        "systemd" => "from the systemd app unit in its cgroup",
        "exe" => "from the executable path the kernel reports",
        _ => "the process could not be identified",
    }
}

/// The popup's own state: which choice is highlighted, for which prompt.
#[derive(Debug, Default, Clone)]
pub struct PromptPopup {
    pub choice: usize,
    shown: Option<u64>,
}

impl PromptPopup {
    fn sync(&mut self, st: &State) {
        let top = st.prompts.first().map(|p| p.id);
        if top != self.shown {
            self.shown = top;
            self.choice = 0;
        }
    }

    /// Draws the first pending prompt, if any, over `area`.
    pub fn draw(&mut self, f: &mut Frame, area: Rect, st: &State) {
        self.sync(st);
        let Some(p) = st.prompts.first() else {
            return;
        };
        let w = area.width.saturating_sub(4).min(110);
        let r = centered(area, w, 20);
        let count = if st.prompts.len() > 1 {
            format!(" {} — 1 of {} ", text::PROMPT_TITLE, st.prompts.len())
        } else {
            format!(" {} ", text::PROMPT_TITLE)
        };
        let block = Block::new()
            .borders(Borders::ALL)
            .border_type(BorderType::Double)
            .border_style(Style::new().fg(Color::Magenta))
            .title(count);
        f.render_widget(Clear, r);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let vw = usize::from(inner.width).saturating_sub(14);
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let field = |name: &str, value: String| {
            Line::from(vec![
                Span::styled(format!(" {name:<12}"), Style::new().fg(Color::DarkGray)),
                Span::raw(ellipsize(&value, vw)),
            ])
        };
        let mut lines = vec![
            Line::from(Span::styled(
                format!(
                    " {} wants to {} {} {}",
                    ellipsize(&p.app_id, vw.saturating_sub(30)),
                    p.action,
                    if p.action == "record" { "from" } else { "on" },
                    p.target
                ),
                bold,
            )),
            Line::default(),
            field("App", p.app_id.clone()),
            field(
                "Identified",
                format!("{} — {}", p.app_source, provenance(&p.app_source)),
            ),
            field(
                "User",
                format!("{} (uid {})", user_name(p.user.as_deref(), p.uid), p.uid),
            ),
            field("PID", p.pid.to_string()),
            field(
                "Executable",
                p.exe.clone().unwrap_or_else(|| "unknown".into()),
            ),
            Line::from(vec![
                Span::styled(
                    format!(" {:<12}", "Declared"),
                    Style::new().fg(Color::DarkGray),
                ),
                Span::raw(ellipsize(&format!("“{}”", p.label), vw.saturating_sub(20))),
                Span::styled(
                    format!(" {}", text::UNVERIFIED),
                    Style::new().fg(Color::Yellow),
                ),
            ]),
            field("Device", p.target.clone()),
            field("Action", p.action.clone()),
            Line::default(),
        ];
        for (i, (label, key)) in text::PROMPT_CHOICES
            .iter()
            .zip(text::PROMPT_KEYS)
            .enumerate()
        {
            let selected = i == self.choice;
            let line = format!(" {} [{key}] {label}", if selected { "▶" } else { " " });
            let style = match (selected, i < 3) {
                (true, _) => Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD),
                (false, true) => Style::new().fg(Color::Green),
                (false, false) => Style::new().fg(Color::Red),
            };
            lines.push(Line::styled(line, style));
        }
        lines.push(Line::default());
        lines.push(Line::styled(
            countdown(p, st.now_ms),
            Style::new().fg(Color::Yellow),
        ));
        f.render_widget(Paragraph::new(lines), inner);
    }

    /// o/s/a/d/D answer at once, arrows choose, Enter answers the highlighted choice. Every
    /// other key is swallowed: the popup is modal.
    pub fn on_key(&mut self, key: &KeyEvent, st: &State) -> Handled {
        self.sync(st);
        let Some(p) = st.prompts.first() else {
            return Handled::Ignored;
        };
        let direct = [
            keys::ALLOW_ONCE,
            keys::ALLOW_SESSION,
            keys::ALLOW_ALWAYS,
            keys::DENY_ONCE,
            keys::DENY_ALWAYS,
        ]
        .iter()
        .position(|b| b.matches(key));
        let pick = if let Some(i) = direct {
            i
        } else if keys::CONFIRM.matches(key) {
            self.choice
        } else {
            if keys::any(&keys::CHOICE_PREV, key) {
                self.choice = self.choice.saturating_sub(1);
            } else if keys::any(&keys::CHOICE_NEXT, key) {
                self.choice = (self.choice + 1).min(ANSWERS.len() - 1);
            }
            return Handled::Consumed;
        };
        let answer = ANSWERS[pick];
        Intent::send(
            Request::AnswerPrompt {
                prompt: p.id,
                answer,
            },
            format!(
                "{} for {} ({} {})",
                text::PROMPT_CHOICES[pick],
                p.app_id,
                p.action,
                p.target
            ),
        )
    }
}

/// "Denied automatically in N s".
pub fn countdown(p: &PromptInfo, now_ms: u64) -> String {
    let left = p.deadline_unix_ms.saturating_sub(now_ms);
    if left == 0 {
        " Time is up: the daemon denies it".to_string()
    } else {
        format!(
            " Denied automatically in {} s   ·   ↑↓ choose, Enter answers",
            left.div_ceil(1000)
        )
    }
}
