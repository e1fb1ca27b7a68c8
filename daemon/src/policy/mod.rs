//! Access decisions: `check(subject, action, object) -> Allow | Deny(reason) | Ask`.
//!
//! Pure and synchronous: no I/O, no clock, no shared memory. The core builds a [`Subject`]
//! from a client's [`Identity`](crate::identity::Identity) and asks before every operation;
//! enumeration is filtered through the same call.
//!
//! # Order of evaluation
//!
//! 1. **The stream-ownership invariant.** [`Action::ControlStream`] and
//!    [`Action::ListStreams`] on a stream owned by another client are denied to a non-admin
//!    subject *before any rule is looked at*: no rule can let a client see or touch another
//!    client's stream. (Rules still apply to admins there, so a rule can restrict an admin.)
//! 2. **Rules**, in config order: the first rule whose app, uid, group, action and target
//!    all match decides.
//! 3. **Defaults** (DESIGN.md "Default policy"):
//!
//! | action | object | default |
//! |---|---|---|
//! | play | a sink, or one's own stream | allow |
//! | control-stream, list-streams | one's own stream | allow |
//! | control-stream, list-streams | another client's stream, a device, the server | admin only |
//! | record | a capture source (`monitor: false`) | ask |
//! | record | a monitor source, or a sink (= its monitor) | deny |
//! | passthrough | anything | deny |
//! | suspend, set-default, device-volume, manage-devices | anything | admin only |
//!
//! Any action on an object it makes no sense for is denied.

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
    /// Whether the client came in through the admin socket and passed its checks.
    pub admin: bool,
}

impl Subject {
    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
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
    /// Answer prompts, list and revoke grants (prompt agents, administrators).
    ManageConsent,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 10] = [
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
     passthrough, suspend, set-default, device-volume, manage-devices)"
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
}

impl Policy {
    /// A policy with these rules (first match wins) over the defaults.
    pub fn new(rules: Vec<Rule>) -> Policy {
        Policy { rules }
    }

    /// The rules, in the order they are tried.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Decides whether `subject` may do `action` to `object`.
    pub fn check(&self, subject: &Subject, action: Action, object: &Object<'_>) -> Decision {
        self.check_explained(subject, action, object).0
    }

    /// Like [`check`](Self::check), also returning the rule that decided (`None`: the
    /// ownership invariant or a default did), for the audit log.
    pub fn check_explained(
        &self,
        subject: &Subject,
        action: Action,
        object: &Object<'_>,
    ) -> (Decision, Option<&Rule>) {
        if let Some(denied) = foreign_stream(subject, action, object) {
            return (denied, None);
        }
        if let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.matches(subject, action, object))
        {
            let decision = match rule.decision {
                RuleDecision::Allow => Decision::Allow,
                RuleDecision::Ask => Decision::Ask,
                RuleDecision::Deny => Decision::Deny(format!(
                    "{} is denied by the rule at {}",
                    doing(action, object),
                    rule.origin
                )),
            };
            return (decision, Some(rule));
        }
        (default_decision(subject, action, object), None)
    }
}

/// The invariant no rule overrides: another client's stream is for admins only.
fn foreign_stream(subject: &Subject, action: Action, object: &Object<'_>) -> Option<Decision> {
    match (action, object) {
        (Action::ControlStream | Action::ListStreams, Object::Stream { owner, device })
            if *owner != subject.client && !subject.admin =>
        {
            Some(Decision::Deny(format!(
                "the stream on {device} belongs to another client"
            )))
        }
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
            | Action::ManageConsent,
            _,
        ) => admin_only(subject, action, object),
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
