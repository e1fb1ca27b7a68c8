//! Access decisions: `check(subject, action, object) -> Allow | Deny(reason) | Ask`.
//!
//! Pure and synchronous: no I/O, no clock, no shared memory. The core builds a [`Subject`]
//! from a client's [`Identity`](crate::identity::Identity) and asks before every operation;
//! enumeration is filtered through the same call.
//!
//! # Order of evaluation
//!
//! 1. **The other-clients invariant.** What reaches another client — [`Action::ControlStream`]
//!    and [`Action::ListStreams`] on a stream it owns or on the server (every client's streams),
//!    and [`Action::KillClient`], [`Action::ReadMeters`], [`Action::ListClients`],
//!    [`Action::ReadStats`], [`Action::ReadAudit`], [`Action::ReadStreamSettings`],
//!    [`Action::ManageStreamSettings`] on anything — is denied to a non-admin
//!    subject *before any rule or grant is looked at*: no rule and no grant can give a client
//!    sight or control of another client. (Rules still apply to admins there, so a rule can
//!    restrict an admin.) The config refuses, at load, the allow and ask rules this would
//!    silently overrule ([`Rule::refusal`]).
//! 2. **Who is an administrator.** [`Action::UseAdminSocket`] (checked on every accept of the
//!    admin socket, for a subject that is not an administrator yet) is decided by
//!    [`AdminAccess`] alone: root, the admin group, the listed uids. A deny rule can take it
//!    away; no rule can give it.
//! 3. **Rules**, in config order: the first rule whose app, uid, group, action and target
//!    all match decides.
//! 4. **Defaults** (DESIGN.md "Default policy"):
//!
//! | action | object | default |
//! |---|---|---|
//! | play | a sink, or one's own stream | allow |
//! | control-stream, list-streams | one's own stream | allow |
//! | control-stream, list-streams | another client's stream, a device, the server | admin only |
//! | kill-client, read-meters, list-clients, read-stats, read-audit | the server | admin only |
//! | read-stream-settings, manage-stream-settings | the server | admin only |
//! | record | a capture source (`monitor: false`) | ask |
//! | record | a monitor source, or a sink (= its monitor) | deny |
//! | passthrough | anything | deny |
//! | suspend, set-default, device-volume, manage-devices, manage-consent | anything | admin only |
//! | use-admin-socket | the server | [`AdminAccess`] |
//!
//! Any action on an object it makes no sense for is denied.
//!
//! 5. **Grants** ([`Policy::decide`]): a decision no rule made final — an `ask`, or a default
//!    deny on a device (recording a monitor) — can be settled by a grant the caller looks up.
//!    The invariants of steps 1 and 2 come first, so a grant can never reach them.
//!
//! This module is the only place that makes access decisions: nothing else constructs a
//! [`Decision`] (`tests/architecture.rs` checks it), and the core calls [`Policy::decide`] from
//! one place (`core/consent.rs`).

use std::fmt;
use std::str::FromStr;

/// Who is asking: built by the core from a client's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// The daemon's id for the client connection.
    pub client: u32,
    /// Effective uid of the peer.
    pub uid: u32,
    /// Primary gid of the peer.
    pub gid: u32,
    /// Supplementary groups of the peer.
    pub groups: Vec<u32>,
    /// The app id established by the daemon (`exe:/usr/bin/sgcat`, …), never a declared name.
    pub app_id: String,
    /// Whether the client came in through the admin socket and passed its checks. Private:
    /// only this module reads it (see [`Subject::new`]).
    admin: bool,
}

impl Subject {
    /// A subject; `admin` says it came in through the admin socket and passed
    /// [`Action::UseAdminSocket`].
    pub fn new(
        client: u32,
        (uid, gid, groups): (u32, u32, Vec<u32>),
        app_id: String,
        admin: bool,
    ) -> Subject {
        Subject {
            client,
            uid,
            gid,
            groups,
            app_id,
            admin,
        }
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// What the connection is, for listings (`sgctl clients`) and logs — never for a
    /// decision (ask [`Policy::check`]).
    pub fn role(&self) -> Role {
        if self.admin {
            Role::Administrator
        } else {
            Role::App
        }
    }
}

/// How a client connected, as shown to administrators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Through the native socket.
    App,
    /// Through the admin socket.
    Administrator,
}

/// Who may use the admin socket: root, members of `gid`, and the listed uids. Consulted by
/// the policy for [`Action::UseAdminSocket`] on every accept, whatever the socket file's
/// mode says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminAccess {
    /// The admin group, if it exists on this system.
    pub gid: Option<u32>,
    /// Its name, for messages.
    pub group_name: String,
    /// Further uids allowed.
    pub uids: Vec<u32>,
}

impl AdminAccess {
    fn permits(&self, s: &Subject) -> bool {
        s.uid == 0 || self.uids.contains(&s.uid) || self.gid.is_some_and(|g| s.in_group(g))
    }
}

/// Everything the policy can be asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Play to a sink.
    Play,
    /// Record from a source (capture device or monitor).
    Record,
    /// Change a stream: volume, mute, cork, drain, delete, move.
    ControlStream,
    /// See a stream in listings and events.
    ListStreams,
    /// Open a passthrough or exclusive stream.
    Passthrough,
    /// Suspend or resume a device.
    Suspend,
    /// Change the default sink or source.
    SetDefault,
    /// Change a device's own volume.
    DeviceVolume,
    /// Create or remove devices.
    ManageDevices,
    /// Answer prompts, list, add and revoke grants (prompt agents, administrators).
    ManageConsent,
    /// Disconnect another client (`sgctl kill`).
    KillClient,
    /// Level meters of every stream and device.
    ReadMeters,
    /// The connected clients, and their connect/disconnect events.
    ListClients,
    /// Engine and per-client statistics, and xrun events.
    ReadStats,
    /// The audit log's tail, and decision events.
    ReadAudit,
    /// Be an administrator: use the admin socket.
    UseAdminSocket,
    /// The remembered stream settings of every app (`sgctl restore list`).
    ReadStreamSettings,
    /// Forget remembered stream settings (`sgctl restore forget`).
    ManageStreamSettings,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 18] = [
        Action::Play,
        Action::Record,
        Action::ControlStream,
        Action::ListStreams,
        Action::Passthrough,
        Action::Suspend,
        Action::SetDefault,
        Action::DeviceVolume,
        Action::ManageDevices,
        Action::ManageConsent,
        Action::KillClient,
        Action::ReadMeters,
        Action::ListClients,
        Action::ReadStats,
        Action::ReadAudit,
        Action::UseAdminSocket,
        Action::ReadStreamSettings,
        Action::ManageStreamSettings,
    ];

    /// The kebab-case name used in the config file and in audit logs.
    pub const fn name(self) -> &'static str {
        match self {
            Action::Play => "play",
            Action::Record => "record",
            Action::ControlStream => "control-stream",
            Action::ListStreams => "list-streams",
            Action::Passthrough => "passthrough",
            Action::Suspend => "suspend",
            Action::SetDefault => "set-default",
            Action::DeviceVolume => "device-volume",
            Action::ManageDevices => "manage-devices",
            Action::ManageConsent => "manage-consent",
            Action::KillClient => "kill-client",
            Action::ReadMeters => "read-meters",
            Action::ListClients => "list-clients",
            Action::ReadStats => "read-stats",
            Action::ReadAudit => "read-audit",
            Action::UseAdminSocket => "use-admin-socket",
            Action::ReadStreamSettings => "read-stream-settings",
            Action::ManageStreamSettings => "manage-stream-settings",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for an action name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown action {0:?} (expected one of play, record, control-stream, list-streams, \
     passthrough, suspend, set-default, device-volume, manage-devices, manage-consent, \
     kill-client, read-meters, list-clients, read-stats, read-audit, use-admin-socket, \
     read-stream-settings, manage-stream-settings)"
)]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;
    /// Accepts the kebab-case names, and `_` for `-`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.replace('_', "-");
        Action::ALL
            .into_iter()
            .find(|a| a.name() == wanted)
            .ok_or_else(|| UnknownAction(s.to_string()))
    }
}

/// What an action is done to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object<'a> {
    /// A playback device.
    Sink {
        /// Device name.
        name: &'a str,
    },
    /// A capture device or the monitor of a sink (`NAME.monitor`).
    Source {
        /// Device name.
        name: &'a str,
        /// Whether it carries what others play.
        monitor: bool,
    },
    /// A playback or record stream.
    Stream {
        /// The client id that created it.
        owner: u32,
        /// The device it is connected to.
        device: &'a str,
    },
    /// The server as a whole (creating devices, global settings).
    Server,
}

impl Object<'_> {
    /// The device name rules match `target` against (`None` for the server).
    pub fn target(&self) -> Option<&str> {
        match self {
            Object::Sink { name } | Object::Source { name, .. } => Some(name),
            Object::Stream { device, .. } => Some(device),
            Object::Server => None,
        }
    }
}

impl fmt::Display for Object<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Sink { name } => write!(f, "sink {name}"),
            Object::Source {
                name,
                monitor: true,
            } => write!(f, "monitor {name}"),
            Object::Source {
                name,
                monitor: false,
            } => write!(f, "source {name}"),
            Object::Stream { device, .. } => write!(f, "a stream on {device}"),
            Object::Server => f.write_str("the server"),
        }
    }
}

/// The answer to a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, with a short sentence for the client and the audit log.
    Deny(String),
    /// Park the request and ask a prompt agent.
    Ask,
}

/// What a config rule decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleDecision {
    /// Allow.
    Allow,
    /// Deny.
    Deny,
    /// Ask a prompt agent.
    Ask,
}

impl RuleDecision {
    /// The config name (`allow`, `deny`, `ask`).
    pub const fn name(self) -> &'static str {
        match self {
            RuleDecision::Allow => "allow",
            RuleDecision::Deny => "deny",
            RuleDecision::Ask => "ask",
        }
    }
}

impl FromStr for RuleDecision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(RuleDecision::Allow),
            "deny" => Ok(RuleDecision::Deny),
            "ask" => Ok(RuleDecision::Ask),
            _ => Err(format!(
                "unknown decision {s:?} (expected allow, deny or ask)"
            )),
        }
    }
}

/// One `[[rule]]` of the config. `None` fields match anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// App id, exact or with one trailing `*` (`flatpak:org.gnome.*`, `*`).
    pub app: Option<String>,
    /// Effective uid.
    pub uid: Option<u32>,
    /// A gid the subject has, as primary or supplementary group.
    pub gid: Option<u32>,
    /// The action this rule is about.
    pub action: Action,
    /// Device name, exact or with one trailing `*`. A rule with a target never matches
    /// [`Object::Server`].
    pub target: Option<String>,
    /// What it decides.
    pub decision: RuleDecision,
    /// Where it was written (`file:line`), for messages and the audit log.
    pub origin: String,
}

impl Rule {
    /// Whether this rule applies to `subject` doing `action` to `object`.
    pub fn matches(&self, subject: &Subject, action: Action, object: &Object<'_>) -> bool {
        self.action == action
            && any_or(self.app.as_deref(), |p| glob_match(p, &subject.app_id))
            && any_or(self.uid, |u| u == subject.uid)
            && any_or(self.gid, |g| subject.in_group(g))
            && match (&self.target, object.target()) {
                (None, _) => true,
                (Some(p), Some(t)) => glob_match(p, t),
                (Some(_), None) => false,
            }
    }

    /// Why this rule cannot be loaded, if it is one the invariants would silently overrule:
    /// an `allow` or `ask` on an action that reaches other clients (for a non-admin it could
    /// only ever mean "control of another client", which nothing grants), or on
    /// `use-admin-socket` (who is an administrator is `[admin]`'s to say). Deny rules are
    /// always accepted: they restrict administrators too.
    pub fn refusal(&self) -> Option<String> {
        if self.decision == RuleDecision::Deny {
            return None;
        }
        let what = self.decision.name();
        match self.action {
            Action::UseAdminSocket => Some(format!(
                "rule: an {what} rule cannot make anyone an administrator; list them in \
                 [admin] (group, uids) instead"
            )),
            a if a.reaches_other_clients() => Some(format!(
                "rule: {a} reaches other clients and is for administrators only; an {what} \
                 rule for it cannot be given (a deny rule can restrict administrators)"
            )),
            a @ (Action::ControlStream | Action::ListStreams) if self.target.is_none() => {
                Some(format!(
                    "rule: an {what} rule for {a} without a target would apply to every \
                     client's streams on the server, which only administrators may reach; \
                     give a target (it then applies to the subject's own streams)"
                ))
            }
            _ => None,
        }
    }
}

impl Action {
    /// Actions whose every object is other clients' business (see the module doc, step 1).
    pub const fn reaches_other_clients(self) -> bool {
        matches!(
            self,
            Action::KillClient
                | Action::ReadMeters
                | Action::ListClients
                | Action::ReadStats
                | Action::ReadAudit
                | Action::ReadStreamSettings
                | Action::ManageStreamSettings
        )
    }
}

/// `None` matches anything; `Some(v)` must pass `f`.
fn any_or<T>(field: Option<T>, f: impl FnOnce(T) -> bool) -> bool {
    match field {
        None => true,
        Some(v) => f(v),
    }
}

/// Exact match, or prefix match for a pattern with a single trailing `*`.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// The rules from the config, then the built-in defaults.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    admin: AdminAccess,
}

/// What decided a [`Decision`], for the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By<'a> {
    /// A built-in invariant or default.
    Default,
    /// A config rule.
    Rule(&'a Rule),
    /// A grant, by id (`once`: a once grant, to be used up).
    Grant { id: u64, once: bool },
}

/// A grant the caller found for a device: what [`Policy::decide`] asks its lookup for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantHit {
    /// The grant's id.
    pub id: u64,
    /// Whether it allows (else it denies).
    pub allow: bool,
    /// Whether it is a once grant.
    pub once: bool,
}

impl Policy {
    /// A policy with these rules (first match wins) over the defaults, root as the only
    /// administrator.
    pub fn new(rules: Vec<Rule>) -> Policy {
        Policy {
            rules,
            admin: AdminAccess::default(),
        }
    }

    /// Who may use the admin socket.
    pub fn with_admin_access(mut self, admin: AdminAccess) -> Policy {
        self.admin = admin;
        self
    }

    /// Who may use the admin socket.
    pub fn admin_access(&self) -> &AdminAccess {
        &self.admin
    }

    /// The rules, in the order they are tried.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Decides whether `subject` may do `action` to `object` (rules and defaults, no grants).
    pub fn check(&self, subject: &Subject, action: Action, object: &Object<'_>) -> Decision {
        self.check_explained(subject, action, object).0
    }

    /// Like [`check`](Self::check), also returning the rule that decided (`None`: an
    /// invariant or a default did), for the audit log.
    pub fn check_explained(
        &self,
        subject: &Subject,
        action: Action,
        object: &Object<'_>,
    ) -> (Decision, Option<&Rule>) {
        let (decision, source) = self.explain(subject, action, object);
        match source {
            Source::Rule(r) => (decision, Some(r)),
            Source::Invariant | Source::Default => (decision, None),
        }
    }

    fn explain(
        &self,
        subject: &Subject,
        action: Action,
        object: &Object<'_>,
    ) -> (Decision, Source<'_>) {
        if let Some(denied) = other_clients(subject, action, object) {
            return (denied, Source::Invariant);
        }
        let rule = self
            .rules
            .iter()
            .find(|r| r.matches(subject, action, object));
        if action == Action::UseAdminSocket {
            return self.admin_socket(subject, rule);
        }
        if let Some(rule) = rule {
            let decision = match rule.decision {
                RuleDecision::Allow => Decision::Allow,
                RuleDecision::Ask => Decision::Ask,
                RuleDecision::Deny => Decision::Deny(format!(
                    "{} is denied by the rule at {}",
                    doing(action, object),
                    rule.origin
                )),
            };
            return (decision, Source::Rule(rule));
        }
        (default_decision(subject, action, object), Source::Default)
    }

    /// The whole decision: [`check_explained`](Self::check_explained), then, if no rule and no
    /// invariant made it final and it is an `ask` or a default deny on a device, the grant
    /// `grant` finds for that device (see the module doc, step 5).
    pub fn decide(
        &self,
        subject: &Subject,
        action: Action,
        object: &Object<'_>,
        grant: impl FnOnce(&str) -> Option<GrantHit>,
    ) -> (Decision, By<'_>) {
        let (decision, source) = self.explain(subject, action, object);
        let by = match source {
            Source::Rule(r) => By::Rule(r),
            Source::Invariant | Source::Default => By::Default,
        };
        let device = match object {
            Object::Sink { name } | Object::Source { name, .. } => *name,
            Object::Stream { .. } | Object::Server => return (decision, by),
        };
        let open = match (&decision, source) {
            (_, Source::Invariant)
            | (Decision::Allow, _)
            | (Decision::Deny(_), Source::Rule(_)) => false,
            (Decision::Deny(_), Source::Default) | (Decision::Ask, _) => true,
        };
        if !open {
            return (decision, by);
        }
        match grant(device) {
            Some(g) => {
                let decision = if g.allow {
                    Decision::Allow
                } else {
                    Decision::Deny(format!(
                        "{} on {object} was refused for this app by grant {}",
                        action.name(),
                        g.id
                    ))
                };
                (
                    decision,
                    By::Grant {
                        id: g.id,
                        once: g.once,
                    },
                )
            }
            None => (decision, by),
        }
    }

    fn admin_socket<'r>(
        &self,
        subject: &Subject,
        rule: Option<&'r Rule>,
    ) -> (Decision, Source<'r>) {
        if let Some(r) = rule.filter(|r| r.decision == RuleDecision::Deny) {
            let why = format!("the admin socket is denied by the rule at {}", r.origin);
            return (Decision::Deny(why), Source::Rule(r));
        }
        if self.admin.permits(subject) {
            (Decision::Allow, Source::Invariant)
        } else {
            let why = format!(
                "the admin socket is for root and members of group {}",
                self.admin.group_name
            );
            (Decision::Deny(why), Source::Invariant)
        }
    }
}

/// Where a decision came from (inside [`Policy`]).
#[derive(Clone, Copy, Debug)]
enum Source<'a> {
    /// An invariant: final, no grant settles it.
    Invariant,
    Rule(&'a Rule),
    Default,
}

/// The invariant no rule or grant overrides: other clients are for admins only.
fn other_clients(subject: &Subject, action: Action, object: &Object<'_>) -> Option<Decision> {
    if subject.admin {
        return None;
    }
    match (action, object) {
        (Action::ControlStream | Action::ListStreams, Object::Stream { owner, device })
            if *owner != subject.client =>
        {
            Some(Decision::Deny(format!(
                "the stream on {device} belongs to another client"
            )))
        }
        (Action::ControlStream | Action::ListStreams, Object::Server) => Some(Decision::Deny(
            format!("{} is for administrators", doing(action, object)),
        )),
        (a, _) if a.reaches_other_clients() => Some(Decision::Deny(format!(
            "{} is for administrators",
            doing(action, object)
        ))),
        _ => None,
    }
}

fn admin_only(subject: &Subject, action: Action, object: &Object<'_>) -> Decision {
    if subject.admin {
        Decision::Allow
    } else {
        Decision::Deny(format!("{} is for administrators", doing(action, object)))
    }
}

fn default_decision(subject: &Subject, action: Action, object: &Object<'_>) -> Decision {
    match (action, object) {
        (Action::Play, Object::Sink { .. }) => Decision::Allow,
        (Action::Play, Object::Stream { owner, .. }) if *owner == subject.client => Decision::Allow,
        (Action::ControlStream | Action::ListStreams, Object::Stream { owner, .. })
            if *owner == subject.client =>
        {
            Decision::Allow
        }
        (Action::ControlStream | Action::ListStreams, _) => admin_only(subject, action, object),
        (Action::Record, Object::Source { monitor: false, .. }) => Decision::Ask,
        (
            Action::Record,
            Object::Source {
                monitor: true,
                name,
            },
        ) => Decision::Deny(format!("recording from {name} needs a grant")),
        (Action::Record, Object::Sink { name }) => {
            Decision::Deny(format!("recording from {name}.monitor needs a grant"))
        }
        (Action::Passthrough, _) => {
            Decision::Deny(format!("{} needs a grant", doing(action, object)))
        }
        (
            Action::Suspend
            | Action::SetDefault
            | Action::DeviceVolume
            | Action::ManageDevices
            | Action::ManageConsent
            | Action::KillClient
            | Action::ReadMeters
            | Action::ListClients
            | Action::ReadStats
            | Action::ReadAudit
            | Action::ReadStreamSettings
            | Action::ManageStreamSettings,
            _,
        ) => admin_only(subject, action, object),
        // Decided by `Policy::admin_socket`; never reached.
        (Action::UseAdminSocket, _) => {
            Decision::Deny("the admin socket is for administrators".to_string())
        }
        (Action::Play | Action::Record, _) => {
            Decision::Deny(format!("{} is not possible", doing(action, object)))
        }
    }
}

/// "suspending sink speakers", "recording from mic", … for messages.
fn doing(action: Action, object: &Object<'_>) -> String {
    match (action, object) {
        (Action::Play, o) => format!("playing to {o}"),
        (Action::Record, Object::Sink { name }) => format!("recording from {name}.monitor"),
        (Action::Record, Object::Source { name, .. }) => format!("recording from {name}"),
        (Action::Record, o) => format!("recording from {o}"),
        (Action::ControlStream, Object::Stream { device, .. }) => {
            format!("controlling a stream on {device}")
        }
        (Action::ControlStream, o) => format!("controlling the streams of {o}"),
        (Action::ListStreams, Object::Stream { device, .. }) => {
            format!("seeing a stream on {device}")
        }
        (Action::ListStreams, o) => format!("listing the streams of {o}"),
        (Action::Passthrough, o) => format!("passthrough to {o}"),
        (Action::Suspend, Object::Server) => "suspending devices".to_string(),
        (Action::Suspend, o) => format!("suspending {o}"),
        (Action::SetDefault, Object::Server) => "setting the default device".to_string(),
        (Action::SetDefault, o) => format!("making {o} the default"),
        (Action::DeviceVolume, Object::Server) => "setting device volumes".to_string(),
        (Action::DeviceVolume, o) => format!("setting the volume of {o}"),
        (Action::ManageDevices, Object::Server) => "creating or removing devices".to_string(),
        (Action::ManageDevices, o) => format!("creating or removing {o}"),
        (Action::ManageConsent, _) => "answering prompts and managing grants".to_string(),
        (Action::KillClient, _) => "disconnecting clients".to_string(),
        (Action::ReadMeters, _) => "reading every stream's meters".to_string(),
        (Action::ListClients, _) => "listing the clients".to_string(),
        (Action::ReadStats, _) => "reading the server's statistics".to_string(),
        (Action::ReadAudit, _) => "reading the audit log".to_string(),
        (Action::UseAdminSocket, _) => "using the admin socket".to_string(),
        (Action::ReadStreamSettings, _) => "reading the remembered stream settings".to_string(),
        (Action::ManageStreamSettings, _) => "forgetting remembered stream settings".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    const ME: u32 = 1;
    const OTHER: u32 = 2;

    fn user() -> Subject {
        Subject {
            client: ME,
            uid: 1000,
            gid: 1000,
            groups: vec![29, 1000],
            app_id: "exe:/usr/bin/sgcat".to_string(),
            admin: false,
        }
    }

    fn admin() -> Subject {
        Subject {
            admin: true,
            ..user()
        }
    }

    const SINK: Object<'static> = Object::Sink { name: "speakers" };
    const MIC: Object<'static> = Object::Source {
        name: "mic",
        monitor: false,
    };
    const MONITOR: Object<'static> = Object::Source {
        name: "default.monitor",
        monitor: true,
    };
    const MINE: Object<'static> = Object::Stream {
        owner: ME,
        device: "speakers",
    };
    const THEIRS: Object<'static> = Object::Stream {
        owner: OTHER,
        device: "speakers",
    };
    const SERVER: Object<'static> = Object::Server;

    fn allow() -> Decision {
        Decision::Allow
    }
    fn deny(reason: &str) -> Decision {
        Decision::Deny(reason.to_string())
    }

    #[test]
    fn defaults() {
        let p = Policy::default();
        let table: Vec<(Subject, Action, Object<'_>, Decision)> = vec![
            (user(), Play, SINK, allow()),
            (user(), Play, MINE, allow()),
            (
                user(),
                Play,
                MIC,
                deny("playing to source mic is not possible"),
            ),
            (user(), ControlStream, MINE, allow()),
            (user(), ListStreams, MINE, allow()),
            (
                user(),
                ControlStream,
                THEIRS,
                deny("the stream on speakers belongs to another client"),
            ),
            (
                user(),
                ListStreams,
                THEIRS,
                deny("the stream on speakers belongs to another client"),
            ),
            (admin(), ControlStream, THEIRS, allow()),
            (admin(), ListStreams, THEIRS, allow()),
            (
                user(),
                ListStreams,
                SERVER,
                deny("listing the streams of the server is for administrators"),
            ),
            (admin(), ListStreams, SERVER, allow()),
            (user(), Record, MIC, Decision::Ask),
            (admin(), Record, MIC, Decision::Ask),
            (
                user(),
                Record,
                MONITOR,
                deny("recording from default.monitor needs a grant"),
            ),
            (
                admin(),
                Record,
                MONITOR,
                deny("recording from default.monitor needs a grant"),
            ),
            (
                user(),
                Record,
                SINK,
                deny("recording from speakers.monitor needs a grant"),
            ),
            (
                user(),
                Record,
                SERVER,
                deny("recording from the server is not possible"),
            ),
            (
                user(),
                Passthrough,
                SINK,
                deny("passthrough to sink speakers needs a grant"),
            ),
            (
                admin(),
                Passthrough,
                SINK,
                deny("passthrough to sink speakers needs a grant"),
            ),
            (
                user(),
                Suspend,
                SINK,
                deny("suspending sink speakers is for administrators"),
            ),
            (
                user(),
                Suspend,
                SERVER,
                deny("suspending devices is for administrators"),
            ),
            (admin(), Suspend, SINK, allow()),
            (
                user(),
                SetDefault,
                SINK,
                deny("making sink speakers the default is for administrators"),
            ),
            (admin(), SetDefault, SINK, allow()),
            (
                user(),
                DeviceVolume,
                SINK,
                deny("setting the volume of sink speakers is for administrators"),
            ),
            (admin(), DeviceVolume, MIC, allow()),
            (
                user(),
                ManageDevices,
                SERVER,
                deny("creating or removing devices is for administrators"),
            ),
            (admin(), ManageDevices, SERVER, allow()),
        ];
        for (i, (s, a, o, want)) in table.into_iter().enumerate() {
            assert_eq!(
                p.check(&s, a, &o),
                want,
                "row {i}: {a} {o:?} admin={}",
                s.admin
            );
        }
    }

    fn rule(action: Action, decision: RuleDecision) -> Rule {
        Rule {
            app: None,
            uid: None,
            gid: None,
            action,
            target: None,
            decision,
            origin: "test.toml:1".to_string(),
        }
    }

    #[test]
    fn rule_matching() {
        let s = user();
        let base = rule(Record, RuleDecision::Allow);
        let table: Vec<(Rule, Object<'_>, bool)> = vec![
            (base.clone(), MONITOR, true),
            (
                Rule {
                    action: Play,
                    ..base.clone()
                },
                MONITOR,
                false,
            ),
            (
                Rule {
                    app: Some("exe:/usr/bin/sgcat".into()),
                    ..base.clone()
                },
                MIC,
                true,
            ),
            (
                Rule {
                    app: Some("exe:/usr/bin/sgca".into()),
                    ..base.clone()
                },
                MIC,
                false,
            ),
            (
                Rule {
                    app: Some("exe:/usr/bin/*".into()),
                    ..base.clone()
                },
                MIC,
                true,
            ),
            (
                Rule {
                    app: Some("exe:/usr/local/*".into()),
                    ..base.clone()
                },
                MIC,
                false,
            ),
            (
                Rule {
                    app: Some("*".into()),
                    ..base.clone()
                },
                MIC,
                true,
            ),
            (
                Rule {
                    uid: Some(1000),
                    ..base.clone()
                },
                MIC,
                true,
            ),
            (
                Rule {
                    uid: Some(0),
                    ..base.clone()
                },
                MIC,
                false,
            ),
            (
                Rule {
                    gid: Some(1000),
                    ..base.clone()
                },
                MIC,
                true,
            ),
            (
                Rule {
                    gid: Some(29),
                    ..base.clone()
                },
                MIC,
                true,
            ),
            (
                Rule {
                    gid: Some(0),
                    ..base.clone()
                },
                MIC,
                false,
            ),
            (
                Rule {
                    target: Some("mic".into()),
                    ..base.clone()
                },
                MIC,
                true,
            ),
            (
                Rule {
                    target: Some("mi".into()),
                    ..base.clone()
                },
                MIC,
                false,
            ),
            (
                Rule {
                    target: Some("*.monitor".into()),
                    ..base.clone()
                },
                MONITOR,
                false,
            ),
            (
                Rule {
                    target: Some("default*".into()),
                    ..base.clone()
                },
                MONITOR,
                true,
            ),
            (
                Rule {
                    target: Some("*".into()),
                    ..base.clone()
                },
                SERVER,
                false,
            ),
            (
                Rule {
                    app: Some("exe:/usr/bin/sgcat".into()),
                    uid: Some(1000),
                    gid: Some(29),
                    target: Some("mic".into()),
                    ..base.clone()
                },
                MIC,
                true,
            ),
            (
                Rule {
                    app: Some("exe:/usr/bin/sgcat".into()),
                    uid: Some(1001),
                    ..base.clone()
                },
                MIC,
                false,
            ),
        ];
        for (i, (r, o, want)) in table.into_iter().enumerate() {
            assert_eq!(r.matches(&s, Record, &o), want, "row {i}: {r:?} on {o:?}");
        }
    }

    #[test]
    fn rules_before_defaults_first_match_wins() {
        let grant = Rule {
            app: Some("exe:/usr/bin/sgcat".into()),
            target: Some("default.monitor".into()),
            ..rule(Record, RuleDecision::Allow)
        };
        let deny_all_monitors = Rule {
            target: Some("default.monitor".into()),
            origin: "soundgate.toml:9".into(),
            ..rule(Record, RuleDecision::Deny)
        };
        let p = Policy::new(vec![grant.clone(), deny_all_monitors.clone()]);
        assert_eq!(p.check(&user(), Record, &MONITOR), Decision::Allow);
        assert_eq!(p.check_explained(&user(), Record, &MONITOR).1, Some(&grant));
        let other_app = Subject {
            app_id: "flatpak:org.evil.Spy".into(),
            ..user()
        };
        assert_eq!(
            p.check(&other_app, Record, &MONITOR),
            deny("recording from default.monitor is denied by the rule at soundgate.toml:9")
        );
        // Order matters: the deny first shadows the grant.
        let p = Policy::new(vec![deny_all_monitors, grant]);
        assert!(matches!(
            p.check(&user(), Record, &MONITOR),
            Decision::Deny(_)
        ));
        // A rule can make the microphone silent-allow, or deny playing, or ask for suspend.
        let p = Policy::new(vec![
            Rule {
                uid: Some(1000),
                ..rule(Record, RuleDecision::Allow)
            },
            Rule {
                target: Some("hdmi*".into()),
                ..rule(Play, RuleDecision::Deny)
            },
            rule(Suspend, RuleDecision::Ask),
        ]);
        assert_eq!(p.check(&user(), Record, &MIC), Decision::Allow);
        assert_eq!(
            p.check(&user(), Play, &Object::Sink { name: "hdmi-1" }),
            deny("playing to sink hdmi-1 is denied by the rule at test.toml:1")
        );
        assert_eq!(p.check(&user(), Play, &SINK), Decision::Allow);
        assert_eq!(p.check(&user(), Suspend, &SINK), Decision::Ask);
        assert_eq!(
            p.check_explained(&user(), Suspend, &MIC)
                .1
                .map(|r| r.action),
            Some(Suspend)
        );
        // An admin is subject to rules too.
        let p = Policy::new(vec![Rule {
            uid: Some(1000),
            ..rule(DeviceVolume, RuleDecision::Deny)
        }]);
        assert!(matches!(
            p.check(&admin(), DeviceVolume, &SINK),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn no_rule_opens_another_clients_stream() {
        let p = Policy::new(vec![
            rule(ControlStream, RuleDecision::Allow),
            rule(ListStreams, RuleDecision::Ask),
        ]);
        let denied = deny("the stream on speakers belongs to another client");
        assert_eq!(p.check(&user(), ControlStream, &THEIRS), denied);
        assert_eq!(p.check(&user(), ListStreams, &THEIRS), denied);
        assert_eq!(p.check_explained(&user(), ControlStream, &THEIRS).1, None);
        // Own streams follow the rules; admins too.
        assert_eq!(p.check(&user(), ListStreams, &MINE), Decision::Ask);
        assert_eq!(p.check(&admin(), ListStreams, &THEIRS), Decision::Ask);
        // Rules can still take an admin's access away.
        let p = Policy::new(vec![rule(ControlStream, RuleDecision::Deny)]);
        assert!(matches!(
            p.check(&admin(), ControlStream, &THEIRS),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn no_rule_reaches_other_clients_for_a_non_admin() {
        let rules: Vec<Rule> = Action::ALL
            .into_iter()
            .map(|a| rule(a, RuleDecision::Allow))
            .collect();
        let p = Policy::new(rules);
        for a in Action::ALL
            .into_iter()
            .filter(|a| a.reaches_other_clients())
        {
            for o in [SERVER, SINK, THEIRS] {
                assert!(
                    matches!(p.check(&user(), a, &o), Decision::Deny(_)),
                    "{a} on {o:?}"
                );
                // Nor through a grant.
                let (d, _) = p.decide(&user(), a, &o, |_| {
                    Some(GrantHit {
                        id: 1,
                        allow: true,
                        once: false,
                    })
                });
                assert!(matches!(d, Decision::Deny(_)), "{a} on {o:?} by grant");
            }
            // Administrators: the rule applies.
            assert_eq!(p.check(&admin(), a, &SERVER), Decision::Allow, "{a}");
        }
        for a in [ControlStream, ListStreams] {
            assert!(matches!(p.check(&user(), a, &SERVER), Decision::Deny(_)));
            assert!(matches!(p.check(&user(), a, &THEIRS), Decision::Deny(_)));
            assert_eq!(p.check(&user(), a, &MINE), Decision::Allow);
        }
        assert_eq!(
            p.check(&user(), KillClient, &SERVER),
            deny("disconnecting clients is for administrators")
        );
        // A deny rule restricts administrators.
        let p = Policy::new(vec![rule(KillClient, RuleDecision::Deny)]);
        assert!(matches!(
            p.check(&admin(), KillClient, &SERVER),
            Decision::Deny(_)
        ));
        // Defaults: administrators only.
        let p = Policy::default();
        for a in [
            KillClient,
            ReadMeters,
            ListClients,
            ReadStats,
            ReadAudit,
            ReadStreamSettings,
            ManageStreamSettings,
        ] {
            assert_eq!(p.check(&admin(), a, &SERVER), Decision::Allow, "{a}");
            assert!(matches!(p.check(&user(), a, &SERVER), Decision::Deny(_)));
        }
    }

    #[test]
    fn the_admin_socket_is_for_admin_access_only() {
        let access = AdminAccess {
            gid: Some(29),
            group_name: "audio-admins".into(),
            uids: vec![4242],
        };
        let p = Policy::new(vec![rule(UseAdminSocket, RuleDecision::Allow)])
            .with_admin_access(access.clone());
        let nobody = Subject {
            uid: 65534,
            gid: 65534,
            groups: vec![],
            ..user()
        };
        assert_eq!(
            p.check(&nobody, UseAdminSocket, &SERVER),
            deny("the admin socket is for root and members of group audio-admins")
        );
        let root = Subject {
            uid: 0,
            gid: 0,
            groups: vec![],
            ..user()
        };
        let listed = Subject {
            uid: 4242,
            ..nobody.clone()
        };
        let member = user(); // groups contain 29
        for s in [&root, &listed, &member] {
            assert_eq!(p.check(s, UseAdminSocket, &SERVER), Decision::Allow);
        }
        let p = Policy::new(vec![Rule {
            uid: Some(0),
            ..rule(UseAdminSocket, RuleDecision::Deny)
        }])
        .with_admin_access(access);
        assert!(matches!(
            p.check(&root, UseAdminSocket, &SERVER),
            Decision::Deny(_)
        ));
        assert_eq!(p.check(&listed, UseAdminSocket, &SERVER), Decision::Allow);
    }

    #[test]
    fn grants_settle_only_open_decisions_on_devices() {
        let hit = |allow| {
            move |_: &str| {
                Some(GrantHit {
                    id: 7,
                    allow,
                    once: true,
                })
            }
        };
        let p = Policy::default();
        let (d, by) = p.decide(&user(), Record, &MONITOR, hit(true));
        assert_eq!(d, Decision::Allow);
        assert_eq!(by, By::Grant { id: 7, once: true });
        let (d, _) = p.decide(&user(), Record, &MIC, hit(false));
        assert!(matches!(d, Decision::Deny(r) if r.contains("by grant 7")));
        // A default allow is final; so is a rule's deny.
        let (d, by) = p.decide(&user(), Play, &SINK, hit(false));
        assert_eq!((d, by), (Decision::Allow, By::Default));
        let p = Policy::new(vec![rule(Record, RuleDecision::Deny)]);
        let (d, by) = p.decide(&user(), Record, &MONITOR, hit(true));
        assert!(matches!(d, Decision::Deny(_)));
        assert!(matches!(by, By::Rule(_)));
    }

    #[test]
    fn rules_the_invariants_would_overrule_are_refused() {
        for a in Action::ALL {
            for d in [RuleDecision::Allow, RuleDecision::Ask, RuleDecision::Deny] {
                let r = rule(a, d);
                let refused = r.refusal().is_some();
                let want = d != RuleDecision::Deny
                    && (a.reaches_other_clients()
                        || matches!(a, ControlStream | ListStreams | UseAdminSocket));
                assert_eq!(refused, want, "{a} {}", d.name());
            }
        }
        let targeted = Rule {
            target: Some("speakers".into()),
            ..rule(ControlStream, RuleDecision::Allow)
        };
        assert_eq!(targeted.refusal(), None);
        let kill = Rule {
            target: Some("speakers".into()),
            ..rule(KillClient, RuleDecision::Allow)
        };
        assert!(kill.refusal().is_some());
    }

    #[test]
    fn action_names_round_trip() {
        for a in Action::ALL {
            assert_eq!(a.name().parse::<Action>(), Ok(a));
            assert_eq!(a.to_string(), a.name());
        }
        assert_eq!("control_stream".parse::<Action>(), Ok(ControlStream));
        assert!("recrod"
            .parse::<Action>()
            .unwrap_err()
            .to_string()
            .contains("unknown action \"recrod\""));
        assert_eq!("ask".parse::<RuleDecision>(), Ok(RuleDecision::Ask));
        assert!("maybe".parse::<RuleDecision>().is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*", "a"));
        assert!(glob_match("abc", "abc"));
        assert!(!glob_match("abc", "abcd"));
        assert!(!glob_match("a*c", "abc"));
    }
}
