//! Every key binding and every user-facing string of sgtop, in one place (as gitui does), so
//! that the help screen lists exactly what the code handles and wording is changed once.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// One key binding: what to press and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The key.
    pub code: KeyCode,
    /// Modifiers that must be held (shift is implied by upper-case characters and ignored).
    pub mods: KeyModifiers,
    /// How the help screen writes the key.
    pub label: &'static str,
    /// What it does.
    pub help: &'static str,
}

const fn key(code: KeyCode, label: &'static str, help: &'static str) -> Binding {
    Binding {
        code,
        mods: KeyModifiers::NONE,
        label,
        help,
    }
}

const fn ch(c: char, label: &'static str, help: &'static str) -> Binding {
    key(KeyCode::Char(c), label, help)
}

impl Binding {
    /// Whether `ev` presses this binding.
    pub fn matches(&self, ev: &KeyEvent) -> bool {
        if ev.code != self.code {
            return false;
        }
        // Shift is part of the character for Char codes; only compare control and alt.
        let relevant = KeyModifiers::CONTROL | KeyModifiers::ALT;
        ev.modifiers & relevant == self.mods & relevant
    }
}

/// Whether `ev` presses any of `bindings`.
pub fn any(bindings: &[Binding], ev: &KeyEvent) -> bool {
    bindings.iter().any(|b| b.matches(ev))
}

// Global keys.
pub const QUIT: Binding = ch('q', "q", "quit");
pub const FORCE_QUIT: Binding = Binding {
    code: KeyCode::Char('c'),
    mods: KeyModifiers::CONTROL,
    label: "Ctrl-C",
    help: "quit, even from a prompt (it stays pending)",
};
pub const HELP: Binding = ch('?', "?", "show or hide this help");
pub const NEXT_VIEW: Binding = key(KeyCode::Tab, "Tab", "next view");
pub const PREV_VIEW: Binding = key(KeyCode::BackTab, "Shift-Tab", "previous view");
pub const VIEW_STREAMS: Binding = ch('1', "1", "Streams view");
pub const VIEW_DEVICES: Binding = ch('2', "2", "Devices view");
pub const VIEW_CLIENTS: Binding = ch('3', "3", "Clients view");
pub const VIEW_PERMISSIONS: Binding = ch('4', "4", "Permissions view");
pub const REFRESH: Binding = ch('R', "R", "reload every list from the daemon now");

// Lists.
pub const UP: [Binding; 2] = [
    key(KeyCode::Up, "↑", "select the previous row"),
    ch('k', "k", "select the previous row"),
];
pub const DOWN: [Binding; 2] = [
    key(KeyCode::Down, "↓", "select the next row"),
    ch('j', "j", "select the next row"),
];
pub const TOP: Binding = key(KeyCode::Home, "Home", "select the first row");
pub const BOTTOM: Binding = key(KeyCode::End, "End", "select the last row");

// Streams and devices.
pub const VOLUME_UP: [Binding; 3] = [
    ch('+', "+", "volume up 5%"),
    ch('=', "=", "volume up 5%"),
    key(KeyCode::Right, "→", "volume up 5%"),
];
pub const VOLUME_DOWN: [Binding; 2] = [
    ch('-', "-", "volume down 5%"),
    key(KeyCode::Left, "←", "volume down 5%"),
];
pub const MUTE: Binding = ch('m', "m", "mute or unmute");
pub const MOVE: Binding = ch('M', "M", "move the stream to another device (picker)");
pub const KILL: [Binding; 2] = [
    ch(
        'x',
        "x",
        "kill the stream / disconnect the client (asks first)",
    ),
    key(
        KeyCode::Delete,
        "Del",
        "kill the stream / disconnect the client (asks first)",
    ),
];
pub const SET_DEFAULT: Binding = ch('*', "*", "make the device the default");
pub const SUSPEND: Binding = ch('S', "S", "suspend or resume the device (asks first)");

// Permissions.
pub const GRANT_ADD: Binding = ch('a', "a", "add a grant (form)");
pub const GRANT_EDIT: Binding = ch(
    'e',
    "e",
    "edit the grant's scope: target and decision (form)",
);
pub const GRANT_REVOKE: [Binding; 2] = [
    ch('r', "r", "revoke the grant (asks first)"),
    key(KeyCode::Delete, "Del", "revoke the grant (asks first)"),
];

// Prompt popup.
pub const ALLOW_ONCE: Binding = ch('o', "o", "allow once (this request only)");
pub const ALLOW_SESSION: Binding = ch('s', "s", "allow until the client disconnects");
pub const ALLOW_ALWAYS: Binding = ch('a', "a", "always allow this app of this user");
pub const DENY_ONCE: Binding = ch('d', "d", "deny this request");
pub const DENY_ALWAYS: Binding = ch('D', "D", "always deny this app of this user");
pub const CHOICE_PREV: [Binding; 2] = [
    key(KeyCode::Up, "↑", "previous choice"),
    key(KeyCode::Left, "←", "previous choice"),
];
pub const CHOICE_NEXT: [Binding; 2] = [
    key(KeyCode::Down, "↓", "next choice"),
    key(KeyCode::Right, "→", "next choice"),
];
pub const CONFIRM: Binding = key(KeyCode::Enter, "Enter", "answer / pick / submit");

// Dialogs.
pub const YES: Binding = ch('y', "y", "yes, do it");
pub const NO: [Binding; 2] = [
    ch('n', "n", "no, cancel"),
    key(KeyCode::Esc, "Esc", "cancel / close"),
];
pub const CANCEL: Binding = key(KeyCode::Esc, "Esc", "cancel / close");
pub const NEXT_FIELD: Binding = key(KeyCode::Tab, "Tab", "next form field");
pub const TOGGLE: Binding = ch(' ', "Space", "toggle allow/deny in the form");

/// The help screen: sections of bindings, including the mouse.
pub const HELP_SECTIONS: &[(&str, &[Binding])] = &[
    (
        "Everywhere",
        &[
            QUIT,
            FORCE_QUIT,
            HELP,
            NEXT_VIEW,
            PREV_VIEW,
            VIEW_STREAMS,
            VIEW_DEVICES,
            VIEW_CLIENTS,
            VIEW_PERMISSIONS,
            REFRESH,
            UP[0],
            UP[1],
            DOWN[0],
            DOWN[1],
            TOP,
            BOTTOM,
        ],
    ),
    (
        "Streams and Devices",
        &[
            VOLUME_UP[0],
            VOLUME_UP[1],
            VOLUME_UP[2],
            VOLUME_DOWN[0],
            VOLUME_DOWN[1],
            MUTE,
            MOVE,
            KILL[0],
            KILL[1],
            SET_DEFAULT,
            SUSPEND,
        ],
    ),
    (
        "Permissions",
        &[GRANT_ADD, GRANT_EDIT, GRANT_REVOKE[0], GRANT_REVOKE[1]],
    ),
    (
        "Prompt popup",
        &[
            ALLOW_ONCE,
            ALLOW_SESSION,
            ALLOW_ALWAYS,
            DENY_ONCE,
            DENY_ALWAYS,
            CHOICE_PREV[0],
            CHOICE_NEXT[0],
            CONFIRM,
        ],
    ),
    (
        "Dialogs and forms",
        &[YES, NO[0], CANCEL, NEXT_FIELD, TOGGLE],
    ),
];

/// Mouse actions, for the help screen.
pub const MOUSE_HELP: &[(&str, &str)] = &[
    ("click", "select a row or a view tab"),
    (
        "wheel",
        "volume of the row under the pointer (lists: scroll)",
    ),
];

/// User-facing strings.
pub mod text {
    pub const APP: &str = "sgtop";
    pub const TABS: [&str; 4] = ["Streams", "Devices", "Clients", "Permissions"];
    pub const CONNECTING: &str = "connecting…";
    pub const CONNECTED: &str = "connected";
    pub const DISCONNECTED: &str = "disconnected, retrying";
    pub const NOT_AVAILABLE: &str = "not available";
    pub const LOADING: &str = "loading…";
    pub const NOBODY_RECORDING: &str = "nobody is recording";
    pub const RECORDING: &str = "REC";
    pub const UNVERIFIED: &str = "(unverified label)";
    pub const PROMPT_TITLE: &str = "Permission request";
    pub const PROMPT_CHOICES: [&str; 5] = [
        "Allow once",
        "Allow for session",
        "Always allow",
        "Deny",
        "Always deny",
    ];
    pub const PROMPT_KEYS: [&str; 5] = ["o", "s", "a", "d", "D"];
    pub const HELP_TITLE: &str = "Keys";
    pub const HELP_HINT: &str = "? help  q quit  Tab/1-4 views";
    pub const EMPTY_STREAMS: &str = "no streams";
    pub const EMPTY_DEVICES: &str = "no devices";
    pub const EMPTY_CLIENTS: &str = "no clients";
    pub const EMPTY_GRANTS: &str = "no grants";
    pub const EMPTY_AUDIT: &str = "the audit log is empty";
    pub const AUDIT_TITLE: &str = "Audit log (newest last)";
    pub const GRANTS_TITLE: &str = "Grants";
    pub const MOVE_TITLE: &str = "Move stream to";
    pub const CONFIRM_TITLE: &str = "Confirm";
    pub const FORM_ADD_TITLE: &str = "Add grant";
    pub const FORM_EDIT_TITLE: &str = "Edit grant scope";
    pub const FORM_HINT: &str = "Tab next field · Space allow/deny · Enter save · Esc cancel";
}
