//! Consent: grants, prompts and the audit trail, as the core uses them.
//!
//! Every check goes through [`Core::decide`] (audited) or [`Core::permitted`] (listings,
//! events, reads; not audited), and both through one call, [`Policy::decide`](crate::policy::Policy::decide): the policy's
//! invariants, config rules, then defaults give a decision; an invariant, a rule's allow or
//! deny, and a default allow are final. What is left — an `ask`, or a default deny on a
//! device (recording a monitor) — a grant can settle: the most specific of a once/session
//! grant of this client, then an always grant of this uid and app (looked up here, weighed
//! by the policy).
//! An `ask` nobody has settled becomes a prompt: [`Core::handle`] parks the request, every
//! prompt agent is told, and the connection's task waits (blocking no one) for the first
//! answer or the timeout before [`Core::resume`] finishes the request. Answers become grants
//! of their scope. Every decision is appended to the audit log.
//!
//! Lock order: the registry, then [`Consents`]; neither is held across an await, and neither
//! is held for file I/O: audit lines go to the writer thread (`audit.rs`), and a grant change
//! is made in memory, then written ([`GrantWriter`], temp file, fsync, rename, fsync of the
//! directory) with no lock held, before the reply that acknowledges it is sent.

use super::grants::{Deferred, GrantNew, GrantScope, GrantStore, GrantWriter};
use super::prompts::{Answer, Outcome as PromptOutcome, PromptBroker, PromptRequest};
use super::{err, Core, Outcome, MONITOR_SUFFIX};
use crate::core::audit::{
    self, AuditLog, AuditQueue, AuditRecord, AuditSubject, AuditWriter, Coalescer,
};
use crate::policy::{Action, By, Decision, GrantHit, Object, Role, Subject};
use soundgate_proto::wire::{
    ClientId, Direction, ErrorKind, Event, GrantInfo, PromptAnswer, PromptInfo, Reply, Request,
    WireError,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

/// What a prompt asks, kept until it is answered.
#[derive(Debug, Clone)]
struct Ask {
    client: ClientId,
    uid: u32,
    app_id: String,
    action: Action,
    target: String,
}

/// Grants, prompts and the audit log.
#[derive(Debug)]
pub(super) struct Consents {
    grants: GrantStore,
    /// The writer thread (none without a state directory) and the lines gathered for it.
    audit: Option<AuditWriter>,
    coalescer: Coalescer,
    broker: PromptBroker,
    /// Open prompts.
    asks: BTreeMap<u64, Ask>,
    /// Set by `decide` when a check of `client` ended in `ask`; taken by `handle`.
    pub(super) wanted: HashMap<ClientId, (Action, String)>,
    /// Audit lines for administrator subscribers (see `streams`).
    pub(super) decisions: super::streams::DecisionOutbox,
    /// Connections subscribed as prompt agents.
    agents: BTreeSet<ClientId>,
}

impl Consents {
    /// Gives prompts raised from now on `timeout` (a reload).
    pub(super) fn set_prompt_timeout(&self, timeout: Duration) {
        self.broker.set_timeout(timeout);
    }

    /// Grants from `state_dir` (none, kept in memory only, without one), the audit log there.
    pub(super) fn open(
        state_dir: Option<&Path>,
        timeout: Duration,
        rotation: &crate::config::AuditConfig,
    ) -> Result<Consents, String> {
        let (grants, audit) = match state_dir {
            Some(dir) => {
                let grants = GrantStore::open(dir).map_err(|e| e.to_string())?;
                let log = AuditLog::open(&dir.join("audit.log"), rotation.max_bytes, rotation.keep)
                    .map_err(|e| e.to_string())?;
                let writer = AuditWriter::start(log, audit::AUDIT_QUEUE)
                    .map_err(|e| format!("starting the audit writer: {e}"))?;
                (grants, Some(writer))
            }
            None => (GrantStore::in_memory(), None),
        };
        Ok(Consents {
            grants,
            audit,
            coalescer: Coalescer::default(),
            broker: PromptBroker::new(timeout),
            asks: BTreeMap::new(),
            wanted: HashMap::new(),
            agents: BTreeSet::new(),
            decisions: Default::default(),
        })
    }

    fn audit(&mut self, s: &Subject, pid: i32, note: Note<'_>) {
        if self.audit.is_none() {
            return;
        }
        let rec = AuditRecord {
            time: audit::rfc3339_now(),
            subject: AuditSubject {
                client: s.client,
                pid,
                uid: s.uid,
                app_id: &s.app_id,
            },
            action: note.action,
            object: note.object,
            decision: note.decision,
            reason: note.reason,
            by: note.by,
        };
        self.decisions.record(&rec);
        // Only an app's allowed decisions may be gathered (or, with a full queue, dropped);
        // denies, asks, prompts, answers, grants, revocations and administrators' acts are
        // always written.
        let coalesce = note.decision == "allow" && s.role() == Role::App;
        let lines = self.coalescer.push(&rec, coalesce, Instant::now());
        self.send_lines(lines);
    }

    fn send_lines(&self, lines: Vec<(Vec<u8>, bool)>) {
        let Some(queue) = self.audit.as_ref().and_then(AuditWriter::queue) else {
            return;
        };
        for (line, must) in lines {
            queue.send(line, must);
        }
    }

    /// Whether the housekeeping tick still has lines to hand out (gathered audit lines or
    /// decisions for subscribers).
    pub(super) fn tick_pending(&self) -> bool {
        !self.coalescer.is_empty() || !self.decisions.is_empty()
    }

    /// Writes the gathered lines whose window has ended (called every housekeeping tick).
    pub(super) fn audit_tick(&mut self) {
        let lines = self.coalescer.expire(Instant::now());
        self.send_lines(lines);
    }

    /// Hands every gathered line to the writer; the queue to [`AuditQueue::sync`] on (outside
    /// the lock) and the current file, if the server keeps a log.
    pub(super) fn audit_flush(&mut self) -> Option<(AuditQueue, std::path::PathBuf)> {
        let lines = self.coalescer.flush();
        self.send_lines(lines);
        let w = self.audit.as_ref()?;
        Some((w.queue()?.clone(), w.path().to_path_buf()))
    }
}

impl Drop for Consents {
    /// The gathered lines go out before the writer thread (dropped next) finishes.
    fn drop(&mut self) {
        let lines = self.coalescer.flush();
        self.send_lines(lines);
    }
}

/// What an audit line says beyond its subject.
struct Note<'a> {
    action: &'a str,
    object: &'a str,
    decision: &'a str,
    reason: Option<&'a str>,
    by: &'a str,
}

/// The future a parked request waits on.
pub type Wait = Pin<Box<dyn Future<Output = PromptOutcome> + Send>>;

/// What [`Core::handle`] returns.
#[derive(Debug)]
pub enum Handled {
    /// The request is done: send this reply.
    Done(Outcome),
    /// The request waits for consent: tell the client, await [`Parked::split`]'s future, then
    /// call [`Core::resume`].
    Ask(Parked),
}

/// A request waiting for a prompt's answer.
pub struct Parked {
    wait: Wait,
    request: ParkedRequest,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked")
            .field("prompt", &self.request.prompt)
            .finish_non_exhaustive()
    }
}

/// The request itself, kept while its prompt is open.
#[derive(Debug)]
pub struct ParkedRequest {
    prompt: u64,
    req: Request,
    fds: Vec<OwnedFd>,
}

impl Parked {
    /// The prompt's id.
    pub fn prompt(&self) -> u64 {
        self.request.prompt
    }

    /// The future to await, and the request to hand back to [`Core::resume`].
    pub fn split(self) -> (Wait, ParkedRequest) {
        (self.wait, self.request)
    }
}

fn wire_answer(a: PromptAnswer) -> Answer {
    match a {
        PromptAnswer::AllowOnce => Answer::AllowOnce,
        PromptAnswer::AllowSession => Answer::AllowSession,
        PromptAnswer::AllowAlways => Answer::AllowAlways,
        PromptAnswer::DenyOnce => Answer::DenyOnce,
        PromptAnswer::DenyAlways => Answer::DenyAlways,
    }
}

fn describe_outcome(o: &PromptOutcome) -> String {
    match o {
        PromptOutcome::Answered { answer, by } => format!("answered {answer} by {by}"),
        PromptOutcome::TimedOut => "timed out".to_string(),
        PromptOutcome::Cancelled => "cancelled".to_string(),
    }
}

impl Core {
    pub(super) fn consents(&self) -> MutexGuard<'_, Consents> {
        self.consent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The decision for `subject` doing `action` to `object`: policy, then grants (see the
    /// module doc), audited. An `ask` is remembered for [`Core::handle`] to raise a prompt when
    /// an agent can answer one.
    pub(super) fn decide(
        &self,
        subject: &Subject,
        pid: i32,
        action: Action,
        object: &Object<'_>,
    ) -> (Decision, String) {
        let mut c = self.consents();
        let live = self.live();
        let (decision, by) = live.policy.decide(subject, action, object, |device| {
            grant_hit(&c.grants, subject, action, device)
        });
        if let By::Grant { id, once: true } = by {
            c.grants.consume_once(id);
        }
        let by = by_text(by);
        let device = match object {
            Object::Sink { name } | Object::Source { name, .. } => Some(*name),
            Object::Stream { .. } | Object::Server => None,
        };
        let object_text = object.to_string();
        let (word, reason) = match &decision {
            Decision::Allow => ("allow", None),
            Decision::Deny(r) => ("deny", Some(r.as_str())),
            Decision::Ask => ("ask", None),
        };
        c.audit(
            subject,
            pid,
            Note {
                action: action.name(),
                object: &object_text,
                decision: word,
                reason,
                by: &by,
            },
        );
        if decision == Decision::Ask {
            if let Some(target) = device {
                c.wanted
                    .insert(subject.client, (action, target.to_string()));
            }
        }
        (decision, by)
    }

    /// What [`decide`](Self::decide) would say, grants included, without an audit line, without
    /// using up a once grant and without ever prompting: for listings, events and read-only
    /// control-plane requests, so they follow the very decision path requests do.
    pub(super) fn permitted(
        &self,
        subject: &Subject,
        action: Action,
        object: &Object<'_>,
    ) -> Decision {
        let c = self.consents();
        self.live()
            .policy
            .decide(subject, action, object, |device| {
                grant_hit(&c.grants, subject, action, device)
            })
            .0
    }

    /// Whether a peer may use the admin socket ([`Action::UseAdminSocket`], audited); the
    /// reason it may not. Called by the transport on every accept of the admin socket.
    pub fn admit_admin(&self, identity: &crate::identity::Identity) -> Result<(), String> {
        let subject = identity.subject(0, false);
        match self
            .decide(
                &subject,
                identity.pid,
                Action::UseAdminSocket,
                &Object::Server,
            )
            .0
        {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(reason),
            Decision::Ask => Err("the admin socket cannot be granted by a prompt".to_string()),
        }
    }

    /// Writes a change's grants file (never under a lock; see [`GrantWriter`]).
    fn write_grants(
        &self,
        writer: Option<&GrantWriter>,
        change: &Deferred,
    ) -> Result<(), super::grants::GrantError> {
        match (writer, &change.snapshot) {
            (Some(w), Some(snap)) => w.write(snap),
            _ => Ok(()),
        }
    }

    /// Whether any prompt agent is connected.
    pub(super) fn has_agents(&self) -> bool {
        !self.consents().agents.is_empty()
    }

    /// Handles one request from `client`. Fds sent with it are consumed (closed on return).
    pub fn handle(&self, client: ClientId, req: Request, fds: Vec<OwnedFd>) -> Handled {
        // Kept in case the request has to wait for consent and run again.
        let again = (
            req.clone(),
            fds.iter()
                .filter_map(|f| f.try_clone().ok())
                .collect::<Vec<_>>(),
        );
        let out = self.dispatch(client, req, fds);
        // Whatever the request did (a stream, a sample play, audit lines), the housekeeping
        // tick looks at it; it stops again once there is nothing to watch.
        self.housekeeping_kick();
        let wanted = self.consents().wanted.remove(&client);
        let Some((action, target)) = wanted else {
            return Handled::Done(out);
        };
        if out.result.is_ok() || !self.has_agents() {
            return Handled::Done(out);
        }
        let mut reg = self.reg();
        let Some(c) = reg.clients.get(&client) else {
            return Handled::Done(out);
        };
        let label = match &again.0 {
            Request::CreateRecord { name, .. } | Request::CreatePlayback { name, .. }
                if !name.is_empty() =>
            {
                name.clone()
            }
            _ => c.label.clone(),
        };
        let id = &c.identity;
        let exe = id.app.id.strip_prefix("exe:").map(str::to_string);
        let request = PromptRequest {
            client,
            pid: id.pid,
            uid: id.uid,
            user: id.user.clone(),
            app_id: id.app.id.clone(),
            app_source: id.app.source.name().to_string(),
            exe,
            label,
            action,
            target: target.clone(),
        };
        let (subject, pid) = (c.subject.clone(), id.pid);
        let mut cs = self.consents();
        let (prompt, wait) = cs.broker.ask(request);
        cs.asks.insert(
            prompt,
            Ask {
                client,
                uid: subject.uid,
                app_id: subject.app_id.clone(),
                action,
                target: target.clone(),
            },
        );
        let info = cs.broker.pending().into_iter().find(|p| p.id == prompt);
        let agents: Vec<ClientId> = cs.agents.iter().copied().collect();
        let by = format!("prompt {prompt}");
        cs.audit(
            &subject,
            pid,
            Note {
                action: action.name(),
                object: &target,
                decision: "prompt",
                reason: None,
                by: &by,
            },
        );
        drop(cs);
        if let Some(info) = info {
            let ev = Event::Prompt(to_wire(&info));
            for a in agents {
                Self::send_event(&mut reg, a, ev.clone());
            }
        }
        if let Some(suppressed) = reg.may_log(client) {
            tracing::info!(client, prompt, action = action.name(), %target, suppressed, "waiting for consent");
        }
        Handled::Ask(Parked {
            wait: Box::pin(wait),
            request: ParkedRequest {
                prompt,
                req: again.0,
                fds: again.1,
            },
        })
    }

    /// Finishes a parked request once its prompt has ended.
    pub fn resume(
        &self,
        client: ClientId,
        parked: ParkedRequest,
        outcome: PromptOutcome,
    ) -> Outcome {
        self.housekeeping_kick();
        let ask = self.consents().asks.remove(&parked.prompt);
        if !matches!(outcome, PromptOutcome::Answered { .. }) {
            // Answers were announced by `answer_prompt`; timeouts are announced here.
            self.announce_resolved(parked.prompt, &outcome);
        }
        let what = ask.map_or_else(
            || "this request".to_string(),
            |a| format!("{} {}", a.action.name(), a.target),
        );
        match outcome {
            PromptOutcome::Answered { answer, .. } if answer.allows() => {
                // The answer's grant is in place: the request now passes.
                let out = self.dispatch(client, parked.req, parked.fds);
                self.consents().wanted.remove(&client);
                out
            }
            PromptOutcome::Answered { answer, by } => Err(err(
                ErrorKind::Denied,
                format!("{what} was refused ({answer} by {by})"),
            ))
            .into(),
            PromptOutcome::TimedOut => {
                let secs = self.consents().broker.timeout().as_secs();
                Err(err(
                    ErrorKind::Denied,
                    format!("{what}: no answer to the permission prompt within {secs} s"),
                ))
                .into()
            }
            PromptOutcome::Cancelled => Err(err(
                ErrorKind::Denied,
                format!("{what}: the permission prompt was cancelled"),
            ))
            .into(),
        }
    }

    fn announce_resolved(&self, prompt: u64, outcome: &PromptOutcome) {
        let mut reg = self.reg();
        let agents: Vec<ClientId> = self.consents().agents.iter().copied().collect();
        let ev = Event::PromptResolved {
            prompt,
            outcome: describe_outcome(outcome),
        };
        for a in agents {
            Self::send_event(&mut reg, a, ev.clone());
        }
    }

    /// Forgets a client's session grants, prompts and agent subscription.
    pub(super) fn forget_consents(&self, client: ClientId) {
        let mut c = self.consents();
        c.grants.end_session(client);
        c.broker.cancel_client(client);
        c.agents.remove(&client);
        c.wanted.remove(&client);
    }

    /// Control-plane requests: prompts and grants. Administrators only.
    pub(super) fn control(&self, client: ClientId, req: Request) -> Result<Reply, WireError> {
        if matches!(req, Request::ListPrompts | Request::ListGrants) {
            // Reads are checked without an audit line, so a console polling them does not
            // flood the audit log; acts are audited.
            self.may_read(client, Action::ManageConsent)?;
        } else {
            let mut reg = self.reg();
            self.authorize(&mut reg, client, Action::ManageConsent, &Object::Server)?;
        }
        match req {
            Request::SubscribePrompts => {
                let mut c = self.consents();
                c.agents.insert(client);
                Ok(Reply::Prompts(
                    c.broker.pending().iter().map(to_wire).collect(),
                ))
            }
            Request::ListPrompts => Ok(Reply::Prompts(
                self.consents()
                    .broker
                    .pending()
                    .iter()
                    .map(to_wire)
                    .collect(),
            )),
            Request::ListGrants => Ok(Reply::Grants(
                self.consents()
                    .grants
                    .list()
                    .iter()
                    .map(grant_info)
                    .collect(),
            )),
            Request::AnswerPrompt { prompt, answer } => {
                self.answer_prompt(client, prompt, wire_answer(answer))
            }
            Request::RevokeGrant { grant } => self.revoke_grant(client, grant),
            other => Err(err(
                ErrorKind::Invalid,
                format!("{other:?} is not a control-plane request"),
            )),
        }
    }

    fn answer_prompt(
        &self,
        agent: ClientId,
        prompt: u64,
        answer: Answer,
    ) -> Result<Reply, WireError> {
        let (by, subject, pid) = {
            let reg = self.reg();
            let c = reg
                .clients
                .get(&agent)
                .ok_or_else(|| err(ErrorKind::Protocol, "unknown client"))?;
            (
                format!("agent pid {} uid {}", c.identity.pid, c.identity.uid),
                c.subject.clone(),
                c.identity.pid,
            )
        };
        let not_found = || err(ErrorKind::NotFound, format!("no pending prompt {prompt}"));
        let (ask, change, writer) = {
            let mut c = self.consents();
            let ask = c.asks.get(&prompt).cloned().ok_or_else(not_found)?;
            if !c.broker.pending().iter().any(|p| p.id == prompt) {
                return Err(not_found());
            }
            // The grant goes in first: the parked request runs again as soon as the broker
            // wakes it.
            let change = if answer == Answer::DenyOnce {
                None
            } else {
                let new = GrantNew {
                    uid: ask.uid,
                    app_id: ask.app_id.clone(),
                    action: ask.action,
                    target: Some(ask.target.clone()),
                    allow: answer.allows(),
                    scope: answer.scope(),
                    client: Some(ask.client),
                    by: by.clone(),
                };
                let change = c
                    .grants
                    .add_deferred(new)
                    .map_err(|e| err(ErrorKind::Internal, format!("recording the answer: {e}")))?;
                Some(change)
            };
            (ask, change, c.grants.writer())
        };
        // On disk before anyone is told (the agent's reply, the parked request), and outside
        // the consent lock.
        let grant = change.as_ref().map(|ch| ch.grant.id);
        if let Some(ch) = change.as_ref() {
            if let Err(e) = self.write_grants(writer.as_ref(), ch) {
                if let Some(ch) = change {
                    self.consents().grants.undo_add(ch);
                }
                return Err(err(
                    ErrorKind::Internal,
                    format!("recording the answer: {e}"),
                ));
            }
        }
        let mut c = self.consents();
        if c.broker.answer(prompt, answer, &by).is_err() {
            // It timed out or was cancelled meanwhile: the answer came too late.
            if let Some(id) = grant {
                let undo = c.grants.revoke_deferred(id).ok().flatten();
                let writer = c.grants.writer();
                drop(c);
                if let Some(undo) = undo {
                    if let Err(e) = self.write_grants(writer.as_ref(), &undo) {
                        tracing::error!("taking back a late answer's grant {id}: {e}");
                    }
                }
            }
            return Err(not_found());
        }
        let decision = format!("answer:{answer}");
        c.audit(
            &subject,
            pid,
            Note {
                action: ask.action.name(),
                object: &ask.target,
                decision: &decision,
                reason: None,
                by: &by,
            },
        );
        drop(c);
        tracing::info!(prompt, %answer, %by, "prompt answered");
        self.announce_resolved(prompt, &PromptOutcome::Answered { answer, by });
        Ok(Reply::Ok)
    }

    fn revoke_grant(&self, admin: ClientId, grant: u64) -> Result<Reply, WireError> {
        let (by_subject, by_pid) = match self.reg().clients.get(&admin) {
            Some(c) => (c.subject.clone(), c.identity.pid),
            None => return Err(err(ErrorKind::Protocol, "unknown client")),
        };
        let failed = |e: &dyn std::fmt::Display| {
            err(ErrorKind::Internal, format!("revoking grant {grant}: {e}"))
        };
        let (change, writer) = {
            let mut c = self.consents();
            let change = c
                .grants
                .revoke_deferred(grant)
                .map_err(|e| failed(&e))?
                .ok_or_else(|| err(ErrorKind::NotFound, format!("no grant {grant}")))?;
            (change, c.grants.writer())
        };
        // Durable before the reply, written with neither lock held.
        if let Err(e) = self.write_grants(writer.as_ref(), &change) {
            self.consents().grants.undo_revoke(change);
            return Err(failed(&e));
        }
        let mut reg = self.reg();
        let revoked = {
            let mut c = self.consents();
            let g = change.grant;
            let target = g.target.clone().unwrap_or_else(|| "*".into());
            let by = format!("grant {grant}");
            c.audit(
                &by_subject,
                by_pid,
                Note {
                    action: g.action.name(),
                    object: &target,
                    decision: "revoke",
                    reason: None,
                    by: &by,
                },
            );
            g
        };
        // Capture streams that grant may have authorised stop at once if they are no longer
        // allowed.
        let candidates: Vec<(ClientId, u32)> = reg
            .streams
            .iter()
            .filter(|(_, s)| s.direction == Direction::Record)
            .filter(|(_, s)| revoked.target.as_deref().is_none_or(|t| t == s.device))
            .filter_map(|(id, s)| {
                let c = reg.clients.get(&s.owner)?;
                (c.subject.uid == revoked.uid && c.subject.app_id == revoked.app_id)
                    .then_some((s.owner, *id))
            })
            .collect();
        for (owner, id) in candidates {
            let Some(s) = reg.streams.get(&id) else {
                continue;
            };
            let device = s.device.clone();
            let monitor = device.ends_with(MONITOR_SUFFIX);
            let Some(c) = reg.clients.get(&owner) else {
                continue;
            };
            let (subject, pid) = (c.subject.clone(), c.identity.pid);
            let (decision, _) = self.decide(
                &subject,
                pid,
                Action::Record,
                &Object::Source {
                    name: &device,
                    monitor,
                },
            );
            self.consents().wanted.remove(&owner);
            if decision != Decision::Allow {
                if let Some(s) = reg.streams.remove(&id) {
                    self.detach(&mut reg, &s, id);
                    self.stream_removed(&mut reg, id, &s);
                }
                let error = err(
                    ErrorKind::Denied,
                    format!("permission revoked: recording from {device} is no longer allowed"),
                );
                tracing::info!(
                    stream = id,
                    client = owner,
                    "record stream ended: grant {grant} revoked"
                );
                Self::send_event(&mut reg, owner, Event::StreamEnded { stream: id, error });
            }
        }
        Ok(Reply::Ok)
    }
}

impl Core {
    /// Adds an always grant on an administrator's behalf (`sgctl grant`), audited.
    pub(super) fn add_grant(
        &self,
        admin: ClientId,
        g: (u32, String, Action, Option<String>, bool),
    ) -> Result<GrantInfo, WireError> {
        let (uid, app_id, action, target, allow) = g;
        let (subject, pid) = {
            let reg = self.reg();
            let c = reg
                .clients
                .get(&admin)
                .ok_or_else(|| err(ErrorKind::Protocol, "unknown client"))?;
            (c.subject.clone(), c.identity.pid)
        };
        let by = format!("admin pid {pid} uid {}", subject.uid);
        let mut c = self.consents();
        let change = c
            .grants
            .add_deferred(GrantNew {
                uid,
                app_id,
                action,
                target,
                allow,
                scope: GrantScope::Always,
                client: None,
                by: by.clone(),
            })
            .map_err(|e| match e {
                super::grants::GrantError::Invalid(m) => err(ErrorKind::Invalid, m),
                e => err(ErrorKind::Internal, format!("recording the grant: {e}")),
            })?;
        let writer = c.grants.writer();
        drop(c);
        // Durable before the reply, written without the consent lock.
        if let Err(e) = self.write_grants(writer.as_ref(), &change) {
            self.consents().grants.undo_add(change);
            return Err(err(
                ErrorKind::Internal,
                format!("recording the grant: {e}"),
            ));
        }
        let grant = change.grant;
        let mut c = self.consents();
        let object = grant.target.clone().unwrap_or_else(|| "*".into());
        let decision = if allow { "grant:allow" } else { "grant:deny" };
        let note_by = format!("{by}, grant {}", grant.id);
        c.audit(
            &subject,
            pid,
            Note {
                action: action.name(),
                object: &object,
                decision,
                reason: None,
                by: &note_by,
            },
        );
        Ok(grant_info(&grant))
    }

    /// Appends an administrator's act (`kill`) to the audit log.
    pub(super) fn audit_admin_act(&self, admin: ClientId, action: &str, object: &str) {
        let (subject, pid) = {
            let reg = self.reg();
            let Some(c) = reg.clients.get(&admin) else {
                return;
            };
            (c.subject.clone(), c.identity.pid)
        };
        let by = format!("admin pid {pid} uid {}", subject.uid);
        self.consents().audit(
            &subject,
            pid,
            Note {
                action,
                object,
                decision: "done",
                reason: None,
                by: &by,
            },
        );
    }
}

/// The grant `grants` holds for `subject` doing `action` to `device`, as the policy takes it.
fn grant_hit(
    grants: &GrantStore,
    subject: &Subject,
    action: Action,
    device: &str,
) -> Option<GrantHit> {
    grants.lookup(subject, action, device).map(|g| GrantHit {
        id: g.id,
        allow: g.allow,
        once: g.scope == GrantScope::Once,
    })
}

/// What decided, as the audit log says it.
fn by_text(by: By<'_>) -> String {
    match by {
        By::Default => "default".to_string(),
        By::Rule(r) => format!("rule {}", r.origin),
        By::Grant { id, .. } => format!("grant {id}"),
    }
}

fn to_wire(p: &super::prompts::PromptInfo) -> PromptInfo {
    PromptInfo {
        id: p.id,
        client: p.client,
        pid: p.pid,
        uid: p.uid,
        user: p.user.clone(),
        app_id: p.app_id.clone(),
        app_source: p.app_source.clone(),
        exe: p.exe.clone(),
        label: p.label.clone(),
        action: p.action.name().to_string(),
        target: p.target.clone(),
        deadline_unix_ms: p.deadline_unix_ms,
    }
}

fn grant_info(g: &super::grants::Grant) -> GrantInfo {
    GrantInfo {
        id: g.id,
        uid: g.uid,
        app_id: g.app_id.clone(),
        action: g.action.name().to_string(),
        target: g.target.clone(),
        allow: g.allow,
        scope: g.scope.name().to_string(),
        client: g.client,
        by: g.by.clone(),
    }
}
