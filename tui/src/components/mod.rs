//! The UI components. Each draws itself from [`State`] and says whether it consumed a key
//! ([`Handled`]); what a key asks of the daemon comes back as an [`Intent`] that the app turns
//! into commands or dialogs.

pub mod dialogs;
pub mod header;
pub mod prompt;
pub mod views;

use crate::keys;
use crate::state::{scale_fraction, to_db, MeterState, State};
use crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::TableState;
use soundgate_proto::wire::{Request, StreamId};

/// What a component did with a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Not its key: offer it to the next component.
    Ignored,
    /// Used up, nothing more to do.
    Consumed,
    /// Used up, and the app should do this.
    Intent(Intent),
}

/// Something a component asks the app to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// Send these requests now.
    Send { reqs: Vec<Request>, what: String },
    /// Ask "yes or no" first, then send.
    Confirm {
        question: String,
        reqs: Vec<Request>,
        what: String,
    },
    /// Let the user pick a device for a stream.
    PickDevice {
        stream: StreamId,
        title: String,
        devices: Vec<String>,
        current: String,
    },
    /// Open the grant form.
    GrantForm(dialogs::GrantForm),
    /// Close the dialog.
    Close,
}

impl Intent {
    /// A single request.
    pub fn send(req: Request, what: impl Into<String>) -> Handled {
        Handled::Intent(Intent::Send {
            reqs: vec![req],
            what: what.into(),
        })
    }
}

/// Row selection of a table, kept across redraws, with what mouse hit-testing needs.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    pub table: TableState,
    /// Where the table was last drawn (border included).
    pub area: Rect,
}

impl Selection {
    /// The selected row, clamped to `len`.
    pub fn index(&self, len: usize) -> Option<usize> {
        if len == 0 {
            return None;
        }
        Some(self.table.selected().unwrap_or(0).min(len - 1))
    }

    /// Fixes the selection after the list changed length.
    pub fn clamp(&mut self, len: usize) {
        let i = self.index(len);
        self.table.select(i);
    }

    /// Moves the selection by a navigation key.
    pub fn on_key(&mut self, key: &KeyEvent, len: usize) -> bool {
        let Some(i) = self.index(len) else {
            return keys::any(&keys::UP, key)
                || keys::any(&keys::DOWN, key)
                || keys::TOP.matches(key)
                || keys::BOTTOM.matches(key);
        };
        let next = if keys::any(&keys::UP, key) {
            i.saturating_sub(1)
        } else if keys::any(&keys::DOWN, key) {
            (i + 1).min(len - 1)
        } else if keys::TOP.matches(key) {
            0
        } else if keys::BOTTOM.matches(key) {
            len - 1
        } else {
            return false;
        };
        self.table.select(Some(next));
        true
    }

    /// The row under screen cell (`x`, `y`), if any: the table has a border and a header row.
    pub fn row_at(&self, x: u16, y: u16, len: usize) -> Option<usize> {
        let a = self.area;
        let first = a.y.saturating_add(2);
        let last = a.y.saturating_add(a.height).saturating_sub(1);
        if x < a.x || x >= a.x.saturating_add(a.width) || y < first || y >= last {
            return None;
        }
        let row = usize::from(y - first) + self.table.offset();
        (row < len).then_some(row)
    }
}

/// A volume one step up or down (5%), kept within 0%..=150%.
pub fn step_volume(volume: f32, up: bool) -> f32 {
    let steps = (volume * 20.0).round() + if up { 1.0 } else { -1.0 };
    (steps / 20.0).clamp(0.0, 1.5)
}

/// A linear volume as a percentage.
pub fn percent(volume: f32) -> String {
    format!("{:.0}%", volume * 100.0)
}

/// A peak as dB text, right-aligned in 6 cells.
pub fn db_text(peak: f32) -> String {
    let db = to_db(peak);
    if db.is_finite() {
        format!("{db:>6.1}")
    } else {
        format!("{:>6}", "-inf")
    }
}

fn meter_color(fraction: f32) -> Color {
    // -6 dB and up red, -18 dB and up yellow (on the -60..0 scale).
    if fraction >= 0.9 {
        Color::Red
    } else if fraction >= 0.7 {
        Color::Yellow
    } else {
        Color::Green
    }
}

/// A level bar `width` cells wide on the dB scale: filled to the level, `│` at the held peak.
pub fn meter_line(m: &MeterState, width: usize) -> Line<'static> {
    if width == 0 {
        return Line::default();
    }
    let filled = (scale_fraction(m.level) * width as f32).round() as usize;
    let hold = (m.hold > 0.0).then(|| {
        let pos = (scale_fraction(m.hold) * width as f32).round() as usize;
        pos.saturating_sub(1).min(width - 1)
    });
    let mut spans = Vec::with_capacity(width);
    for i in 0..width {
        let at = (i + 1) as f32 / width as f32;
        if i < filled {
            spans.push(Span::styled("█", Style::new().fg(meter_color(at))));
        } else if Some(i) == hold {
            spans.push(Span::styled("│", Style::new().fg(meter_color(at))));
        } else {
            spans.push(Span::styled("·", Style::new().fg(Color::DarkGray)));
        }
    }
    Line::from(spans)
}

/// The dB scale above a meter column, `width` cells wide.
pub fn scale_text(width: usize) -> String {
    let mut cells = vec![' '; width];
    let marks: &[(f32, &str)] = &[
        (-60.0, "-60"),
        (-40.0, "-40"),
        (-20.0, "-20"),
        (-10.0, "-10"),
        (0.0, "0dB"),
    ];
    for &(db, label) in marks {
        let frac = (db - crate::state::METER_FLOOR_DB) / -crate::state::METER_FLOOR_DB;
        let end = ((frac * width as f32).round() as usize).min(width);
        let start = if db == crate::state::METER_FLOOR_DB {
            0
        } else {
            end.saturating_sub(label.len())
        };
        let fits = start + label.len() <= width
            && cells[start..start + label.len()].iter().all(|c| *c == ' ')
            && (start == 0 || cells[start - 1] == ' ');
        if fits {
            for (c, l) in cells[start..].iter_mut().zip(label.chars()) {
                *c = l;
            }
        }
    }
    cells.into_iter().collect()
}

/// A rectangle of at most `w`×`h` centred in `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [r] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(r);
    r
}

/// Cuts `s` to `max` characters, marking the cut with `…`.
pub fn ellipsize(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// What a view shows instead of its list when it is not there.
pub fn placeholder<T>(
    avail: &crate::state::Avail<T>,
    empty: bool,
    empty_text: &str,
) -> Option<String> {
    use crate::keys::text;
    match avail {
        crate::state::Avail::Loading => Some(text::LOADING.to_string()),
        crate::state::Avail::Unavailable(e) => Some(format!("{}: {e}", text::NOT_AVAILABLE)),
        crate::state::Avail::Ready(_) if empty => Some(empty_text.to_string()),
        crate::state::Avail::Ready(_) => None,
    }
}

/// Whether the meters of devices exist at all.
pub fn device_meters_known(st: &State) -> bool {
    st.meters.ready().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_steps_and_limits() {
        assert_eq!(step_volume(1.0, true), 1.05);
        assert_eq!(step_volume(0.02, false), 0.0);
        assert_eq!(step_volume(1.5, true), 1.5);
        assert_eq!(percent(0.55), "55%");
    }

    #[test]
    fn meter_bar_fills_on_the_db_scale() {
        let mut m = MeterState::default();
        m.update(0.5, 0); // held at -6 dB: nine tenths of the scale
        m.update(0.1, 100); // -20 dB: two thirds of the scale
        let text: String = meter_line(&m, 12)
            .spans
            .iter()
            .map(|s| s.content.as_ref())
            .collect();
        assert_eq!(text, "████████··│·");
        assert_eq!(scale_text(24), "-60  -40     -20 -10 0dB");
    }

    #[test]
    fn ellipsis() {
        assert_eq!(ellipsize("abcdef", 4), "abc…");
        assert_eq!(ellipsize("abc", 4), "abc");
    }
}
