//! The one closed enum that drives the UI ([`AppEvent`]) and the commands the UI sends to the
//! daemon thread ([`Command`]). Every trigger of work in sgtop is listed here.

use soundgate_proto::wire::{
    ClientInfo, DeviceInfo, Event, GrantInfo, PromptInfo, Request, ServerInfo, ServerStats,
    StreamInfo,
};

/// A list the daemon may refuse (a request not built yet, or not allowed): the error text.
pub type Fetched<T> = Result<T, String>;

/// Everything that can happen to the UI.
#[derive(Debug, Clone)]
pub enum AppEvent {
    /// The terminal: a key, the mouse, a resize.
    Input(crossterm::event::Event),
    /// The daemon thread (re)connected.
    Connected(ServerInfo),
    /// The connection failed or was lost; the daemon thread retries.
    Disconnected(String),
    /// A fresh copy of one list.
    Data(Data),
    /// An event the daemon pushed.
    Server(Event),
    /// A command finished: what it was, and its error if it failed.
    Done { what: String, result: Fetched<()> },
}

/// Fresh copies of the daemon's lists.
#[derive(Debug, Clone)]
pub enum Data {
    Streams(Fetched<Vec<StreamInfo>>),
    Sinks(Fetched<Vec<DeviceInfo>>),
    Sources(Fetched<Vec<DeviceInfo>>),
    Clients(Fetched<Vec<ClientInfo>>),
    Grants(Fetched<Vec<GrantInfo>>),
    Audit(Fetched<Vec<String>>),
    Stats(Fetched<ServerStats>),
    /// The pending prompts (from `SubscribePrompts`), or why this connection gets none.
    Prompts(Fetched<Vec<PromptInfo>>),
    /// Whether the daemon sends level meters (`SubscribeMeters`).
    Meters(Fetched<()>),
}

/// What the UI asks of the daemon thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Send `reqs` in order, stopping at the first failure; `what` describes them for the
    /// status line.
    Send { reqs: Vec<Request>, what: String },
    /// Reload every list now.
    Refresh,
    /// Whether the Permissions view is on screen. Grants and the audit tail are polled only
    /// then: the daemon audits every `ListGrants`, so polling it blindly would flood the log.
    PermissionsVisible(bool),
    /// End the thread.
    Quit,
}
