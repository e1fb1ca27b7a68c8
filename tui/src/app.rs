//! The application: state, views and dialogs, and the one place that turns an [`AppEvent`]
//! into state changes and [`Command`]s for the daemon thread. It draws nothing unless asked,
//! and tells the caller whether a redraw is due.

use crate::components::dialogs::{self, Confirm, GrantForm, Picker};
use crate::components::prompt::PromptPopup;
use crate::components::views::{ClientsView, DevicesView, PermissionsView, StreamsView, View};
use crate::components::{header, Handled, Intent};
use crate::event::{AppEvent, Command};
use crate::keys::{self, text};
use crate::state::{Connection, State, Status};
use crossterm::event::{Event as TermEvent, KeyEvent, KeyEventKind, MouseButton, MouseEventKind};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs};
use ratatui::Frame;
use soundgate_proto::wire::Request;

/// The views, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Streams,
    Devices,
    Clients,
    Permissions,
}

impl Tab {
    /// All tabs in order.
    pub const ALL: [Tab; 4] = [Tab::Streams, Tab::Devices, Tab::Clients, Tab::Permissions];

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
}

/// A dialog over the views.
#[derive(Debug, Clone, PartialEq)]
pub enum Modal {
    Help,
    Confirm(Confirm),
    Picker(Picker),
    Grant(GrantForm),
}

/// sgtop's UI.
#[derive(Debug)]
pub struct App {
    pub state: State,
    pub tab: Tab,
    pub modal: Option<Modal>,
    streams: StreamsView,
    devices: DevicesView,
    clients: ClientsView,
    permissions: PermissionsView,
    prompt: PromptPopup,
    outbox: Vec<Command>,
    quit: bool,
    /// Where each tab title was drawn, for clicks.
    tab_spans: Vec<(u16, u16, Tab)>,
    tabs_row: u16,
}

impl App {
    /// A UI for the admin socket `admin`.
    pub fn new(admin: &str) -> App {
        App {
            state: State::new(admin),
            tab: Tab::Streams,
            modal: None,
            streams: StreamsView::default(),
            devices: DevicesView::default(),
            clients: ClientsView::default(),
            permissions: PermissionsView::default(),
            prompt: PromptPopup::default(),
            outbox: Vec::new(),
            quit: false,
            tab_spans: Vec::new(),
            tabs_row: 0,
        }
    }

    /// Whether the user asked to quit.
    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// Commands for the daemon thread since the last call.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.outbox)
    }

    /// Folds one event in; returns whether a redraw is due.
    pub fn handle(&mut self, ev: AppEvent) -> bool {
        match ev {
            AppEvent::Input(TermEvent::Key(k)) if k.kind != KeyEventKind::Release => {
                self.on_key(&k);
                true
            }
            AppEvent::Input(TermEvent::Mouse(m)) => match m.kind {
                MouseEventKind::Down(MouseButton::Left) => self.on_click(m.column, m.row),
                MouseEventKind::ScrollUp => self.on_scroll(m.column, m.row, true),
                MouseEventKind::ScrollDown => self.on_scroll(m.column, m.row, false),
                _ => false,
            },
            AppEvent::Input(TermEvent::Resize(..)) => true,
            AppEvent::Input(_) => false,
            AppEvent::Connected(info) => {
                self.state.connection = Connection::Up(info);
                true
            }
            AppEvent::Disconnected(why) => {
                let was = std::mem::replace(&mut self.state.connection, Connection::Down(why));
                // Prompts belong to the lost connection: the daemon denies them without us.
                self.state.prompts.clear();
                was != self.state.connection
            }
            AppEvent::Data(d) => self.state.apply_data(d),
            AppEvent::Server(e) => self.state.apply_event(e),
            AppEvent::Done { what, result } => {
                self.state.status = Some(match result {
                    Ok(()) => Status {
                        text: format!("{what}: done"),
                        error: false,
                    },
                    Err(e) => Status {
                        text: format!("{what}: {e}"),
                        error: true,
                    },
                });
                true
            }
        }
    }

    /// Advances the clock; returns whether a redraw is due.
    pub fn tick(&mut self, now_ms: u64) -> bool {
        self.state.tick(now_ms)
    }

    /// Whether something moves on screen by itself (meters, a countdown), so ticks matter.
    pub fn animating(&self) -> bool {
        self.state.animating()
    }

    /// The current view and the state, borrowed apart.
    fn view(&mut self) -> (&mut dyn View, &State) {
        let view: &mut dyn View = match self.tab {
            Tab::Streams => &mut self.streams,
            Tab::Devices => &mut self.devices,
            Tab::Clients => &mut self.clients,
            Tab::Permissions => &mut self.permissions,
        };
        (view, &self.state)
    }

    fn on_key(&mut self, key: &KeyEvent) {
        if keys::FORCE_QUIT.matches(key) {
            self.quit = true;
            return;
        }
        // Components in z-order; the first that consumes the key wins.
        let handled = if !self.state.prompts.is_empty() {
            self.prompt.on_key(key, &self.state)
        } else {
            Handled::Ignored
        };
        let handled = match handled {
            Handled::Ignored => self.modal_key(key),
            h => h,
        };
        let handled = match handled {
            Handled::Ignored => {
                let (view, st) = self.view();
                view.on_key(key, st)
            }
            h => h,
        };
        match handled {
            Handled::Intent(i) => self.intent(i),
            Handled::Consumed => {}
            Handled::Ignored => self.global_key(key),
        }
    }

    fn modal_key(&mut self, key: &KeyEvent) -> Handled {
        match &mut self.modal {
            None => Handled::Ignored,
            Some(Modal::Help) => {
                if keys::HELP.matches(key) || keys::CANCEL.matches(key) || keys::QUIT.matches(key) {
                    Handled::Intent(Intent::Close)
                } else {
                    Handled::Consumed
                }
            }
            Some(Modal::Confirm(c)) => c.on_key(key),
            Some(Modal::Picker(p)) => p.on_key(key),
            Some(Modal::Grant(g)) => g.on_key(key),
        }
    }

    /// Switches the view, telling the daemon thread when Permissions comes or goes.
    pub fn set_tab(&mut self, tab: Tab) {
        let was = self.tab == Tab::Permissions;
        self.tab = tab;
        let is = tab == Tab::Permissions;
        if was != is {
            self.outbox.push(Command::PermissionsVisible(is));
        }
    }

    fn global_key(&mut self, key: &KeyEvent) {
        let next = |t: Tab, d: usize| Tab::ALL[(t.index() + d) % Tab::ALL.len()];
        if keys::QUIT.matches(key) {
            self.quit = true;
        } else if keys::HELP.matches(key) {
            self.modal = Some(Modal::Help);
        } else if keys::NEXT_VIEW.matches(key) {
            self.set_tab(next(self.tab, 1));
        } else if keys::PREV_VIEW.matches(key) {
            self.set_tab(next(self.tab, Tab::ALL.len() - 1));
        } else if keys::VIEW_STREAMS.matches(key) {
            self.set_tab(Tab::Streams);
        } else if keys::VIEW_DEVICES.matches(key) {
            self.set_tab(Tab::Devices);
        } else if keys::VIEW_CLIENTS.matches(key) {
            self.set_tab(Tab::Clients);
        } else if keys::VIEW_PERMISSIONS.matches(key) {
            self.set_tab(Tab::Permissions);
        } else if keys::REFRESH.matches(key) {
            self.outbox.push(Command::Refresh);
        }
    }

    fn intent(&mut self, i: Intent) {
        match i {
            Intent::Send { reqs, what } => {
                // An answered prompt leaves the queue now; the next one shows at once.
                for r in &reqs {
                    if let Request::AnswerPrompt { prompt, .. } = r {
                        self.state.prompts.retain(|p| p.id != *prompt);
                    }
                }
                self.modal = None;
                self.state.status = Some(Status {
                    text: format!("{what}…"),
                    error: false,
                });
                self.outbox.push(Command::Send { reqs, what });
            }
            Intent::Confirm {
                question,
                reqs,
                what,
            } => {
                self.modal = Some(Modal::Confirm(Confirm {
                    question,
                    reqs,
                    what,
                }))
            }
            Intent::PickDevice {
                stream,
                title,
                devices,
                current,
            } => self.modal = Some(Modal::Picker(Picker::new(stream, title, devices, current))),
            Intent::GrantForm(g) => self.modal = Some(Modal::Grant(g)),
            Intent::Close => self.modal = None,
        }
    }

    fn blocked(&self) -> bool {
        !self.state.prompts.is_empty() || self.modal.is_some()
    }

    fn on_click(&mut self, x: u16, y: u16) -> bool {
        if self.blocked() {
            return false;
        }
        if y == self.tabs_row {
            if let Some((_, _, t)) = self.tab_spans.iter().find(|(a, b, _)| x >= *a && x < *b) {
                let t = *t;
                self.set_tab(t);
                return true;
            }
            return false;
        }
        let (view, st) = self.view();
        view.on_click(x, y, st)
    }

    fn on_scroll(&mut self, x: u16, y: u16, up: bool) -> bool {
        if self.blocked() {
            return false;
        }
        let (view, st) = self.view();
        match view.on_scroll(x, y, up, st) {
            Handled::Intent(i) => {
                self.intent(i);
                true
            }
            Handled::Consumed => true,
            Handled::Ignored => false,
        }
    }

    /// Draws everything.
    pub fn draw(&mut self, f: &mut Frame) {
        let area = f.area();
        let [head, tabs, body, foot] = Layout::vertical([
            Constraint::Length(header::HEIGHT),
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .areas(area);
        header::draw(f, head, &self.state);
        self.draw_tabs(f, tabs);
        let (view, st) = self.view();
        view.draw(f, body, st);
        self.draw_footer(f, foot);
        match &self.modal {
            Some(Modal::Help) => dialogs::draw_help(f, area),
            Some(Modal::Confirm(c)) => c.draw(f, area),
            Some(Modal::Picker(p)) => p.draw(f, area),
            Some(Modal::Grant(g)) => g.draw(f, area),
            None => {}
        }
        self.prompt.draw(f, area, &self.state);
    }

    fn draw_tabs(&mut self, f: &mut Frame, area: Rect) {
        let titles: Vec<String> = text::TABS
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{} {t}", i + 1))
            .collect();
        // Tabs draws " title " separated by "│": record where each lands for clicks.
        self.tabs_row = area.y;
        self.tab_spans.clear();
        let mut x = area.x;
        for (t, title) in Tab::ALL.iter().zip(&titles) {
            let w = title.chars().count() as u16 + 2;
            self.tab_spans.push((x, x + w, *t));
            x += w + 1;
        }
        let widget = Tabs::new(titles)
            .select(self.tab.index())
            .style(Style::new().fg(Color::Gray))
            .highlight_style(
                Style::new()
                    .fg(Color::Black)
                    .bg(Color::Cyan)
                    .add_modifier(Modifier::BOLD),
            );
        f.render_widget(widget, area);
    }

    fn draw_footer(&self, f: &mut Frame, area: Rect) {
        let hints = match self.tab {
            Tab::Streams => "+/- volume  m mute  M move  x kill",
            Tab::Devices => "+/- volume  m mute  * default  S suspend",
            Tab::Clients => "x disconnect",
            Tab::Permissions => "a add  e edit  r revoke",
        };
        let mut spans = vec![Span::styled(
            format!("{}  {hints}", text::HELP_HINT),
            Style::new().fg(Color::DarkGray),
        )];
        if let Some(s) = &self.state.status {
            let style = if s.error {
                Style::new().fg(Color::Red)
            } else {
                Style::new().fg(Color::Green)
            };
            spans.push(Span::raw("  │ "));
            spans.push(Span::styled(s.text.clone(), style));
        }
        f.render_widget(Paragraph::new(Line::from(spans)), area);
    }
}
