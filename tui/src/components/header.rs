//! The header: connection, the privacy indicator (who records from which device now) and the
//! engine figures.

use crate::components::ellipsize;
use crate::keys::text;
use crate::state::{Avail, Connection, State};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// Lines the header takes.
pub const HEIGHT: u16 = 3;

/// Draws the header into `area`.
pub fn draw(f: &mut Frame, area: Rect, st: &State) {
    let width = usize::from(area.width);
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let conn = match &st.connection {
        Connection::Connecting => Span::styled(
            format!("◌ {} {}", text::CONNECTING, st.admin),
            Style::new().fg(Color::Yellow),
        ),
        Connection::Up(info) => Span::styled(
            format!(
                "● {} {} {} @ {}",
                text::CONNECTED,
                info.name,
                info.version,
                st.admin
            ),
            Style::new().fg(Color::Green),
        ),
        Connection::Down(why) => Span::styled(
            ellipsize(
                &format!("✖ {} ({why})", text::DISCONNECTED),
                width.saturating_sub(8),
            ),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    };
    let mut first = vec![Span::styled(format!("{} ", text::APP), bold), conn];
    if let Connection::Up(info) = &st.connection {
        if let Some(n) = &info.notice {
            first.push(Span::styled(
                format!("  ⚠ {n}"),
                Style::new().fg(Color::Yellow),
            ));
        }
    }
    if !st.prompts.is_empty() {
        first.push(Span::styled(
            format!("  ⚑ {} pending", st.prompts.len()),
            Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
        ));
    }

    let recorders = st.recorders();
    let privacy = if recorders.is_empty() {
        match &st.streams {
            Avail::Ready(_) => Line::from(Span::styled(
                format!("○ {}", text::NOBODY_RECORDING),
                Style::new().fg(Color::DarkGray),
            )),
            _ => Line::from(Span::styled(
                format!("? recording: {}", text::NOT_AVAILABLE),
                Style::new().fg(Color::DarkGray),
            )),
        }
    } else {
        let who: Vec<String> = recorders
            .iter()
            .map(|(app, user, dev)| format!("{app} ({user}) ← {dev}"))
            .collect();
        Line::from(vec![
            Span::styled(
                format!("● {} ", text::RECORDING),
                Style::new()
                    .fg(Color::White)
                    .bg(Color::Red)
                    .add_modifier(Modifier::BOLD),
            ),
            Span::styled(
                format!(" {}", ellipsize(&who.join(" · "), width.saturating_sub(8))),
                Style::new().fg(Color::Red),
            ),
        ])
    };

    let engine = match &st.stats {
        Avail::Ready(s) => {
            let mean = s
                .devices
                .iter()
                .map(|d| d.cycle_mean_us)
                .fold(0.0, f64::max);
            let p99 = s.devices.iter().map(|d| d.cycle_p99_us).fold(0.0, f64::max);
            let max = s.devices.iter().map(|d| d.cycle_max_us).fold(0.0, f64::max);
            let load = s.devices.iter().map(|d| d.load).fold(0.0, f64::max);
            let xruns: u64 = s.devices.iter().map(|d| d.xruns).sum();
            let late: u64 = s.devices.iter().map(|d| d.late_cycles).sum();
            // Client wake-ups: all streams together, and the busiest stream's.
            let wake: f64 = s.stream_wakeups.iter().map(|w| w.per_sec).sum();
            let wake_max = s
                .stream_wakeups
                .iter()
                .map(|w| w.per_sec)
                .fold(0.0, f64::max);
            format!(
                "engine  cycle {mean:.0} µs mean · {p99:.0} µs p99 · {max:.0} µs max · wake-ups {wake:.0}/s (max {wake_max:.0}/s a stream) · load {:.0}% · xruns {xruns} · late {late} · clients {} · streams {} · rss {} MiB",
                load * 100.0,
                s.clients,
                s.streams,
                s.rss_bytes / (1024 * 1024)
            )
        }
        Avail::Loading => format!("engine  {}", text::LOADING),
        Avail::Unavailable(e) => {
            let xruns: u64 = st.devices().iter().map(|d| d.xruns).sum();
            format!(
                "engine  stats {}: {e} · device xruns {xruns}",
                text::NOT_AVAILABLE
            )
        }
    };
    let lines = vec![
        Line::from(first),
        privacy,
        Line::from(Span::styled(
            ellipsize(&engine, width),
            Style::new().fg(Color::Cyan),
        )),
    ];
    f.render_widget(Paragraph::new(lines), area);
}
