//! The prompt broker: parks requests the policy answered with `Ask`, tells every connected
//! prompt agent, and hands back the first answer.
//!
//! - [`PromptBroker::ask`] registers a prompt, broadcasts [`PromptEvent::Raised`] and returns a
//!   future for its [`Outcome`]. The future must be awaited (or spawned): it also carries the
//!   timeout. Dropping it cancels the prompt.
//! - Exactly one of answer / timeout / cancel resolves a prompt: the pending entry is removed
//!   under the broker's lock, and that one party sends the outcome to the asker and broadcasts
//!   [`PromptEvent::Resolved`]. Everyone else gets [`PromptError::NotFound`] (or, for the
//!   timeout, learns the outcome that won).
//! - Agents [`subscribe`](PromptBroker::subscribe): they get the prompts pending now plus a
//!   broadcast receiver for what happens after, with no gap and no duplicate between the two.
//!   A slow agent lags (its receiver reports `Lagged`; it can resync with
//!   [`pending`](PromptBroker::pending)); it never blocks the broker or other agents.
//!
//! Locking: one `std::sync::Mutex`, held for short sections, never across an await.

use super::grants::GrantScope;
use crate::policy::Action;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, oneshot};

/// Events buffered per agent before a slow one starts to lag.
pub const EVENT_BUFFER: usize = 256;

/// What an agent answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    /// Allow this one request.
    AllowOnce,
    /// Allow until the client disconnects.
    AllowSession,
    /// Allow this app of this user from now on (persisted).
    AllowAlways,
    /// Deny this one request.
    DenyOnce,
    /// Deny this app of this user from now on (persisted).
    DenyAlways,
}

impl Answer {
    /// Every answer, in declaration order.
    pub const ALL: [Answer; 5] = [
        Answer::AllowOnce,
        Answer::AllowSession,
        Answer::AllowAlways,
        Answer::DenyOnce,
        Answer::DenyAlways,
    ];

    /// Whether it lets the request go ahead.
    pub const fn allows(self) -> bool {
        matches!(
            self,
            Answer::AllowOnce | Answer::AllowSession | Answer::AllowAlways
        )
    }

    /// How long the answer holds (a grant of this scope records it).
    pub const fn scope(self) -> GrantScope {
        match self {
            Answer::AllowOnce | Answer::DenyOnce => GrantScope::Once,
            Answer::AllowSession => GrantScope::Session,
            Answer::AllowAlways | Answer::DenyAlways => GrantScope::Always,
        }
    }

    /// The kebab-case name (`allow-once`, …), as in the audit log's `answer:allow-once`.
    pub const fn name(self) -> &'static str {
        match self {
            Answer::AllowOnce => "allow-once",
            Answer::AllowSession => "allow-session",
            Answer::AllowAlways => "allow-always",
            Answer::DenyOnce => "deny-once",
            Answer::DenyAlways => "deny-always",
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for an answer name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown answer {0:?} (expected allow-once, allow-session, allow-always, deny-once or \
     deny-always)"
)]
pub struct UnknownAnswer(pub String);

impl FromStr for Answer {
    type Err = UnknownAnswer;
    /// Accepts the kebab-case names, and `_` for `-`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.replace('_', "-");
        Answer::ALL
            .into_iter()
            .find(|a| a.name() == wanted)
            .ok_or_else(|| UnknownAnswer(s.to_string()))
    }
}

/// What an agent is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptInfo {
    /// The broker's id for the prompt (what an answer names).
    pub id: u64,
    /// The asking client connection.
    pub client: u32,
    /// Its pid.
    pub pid: i32,
    /// Its uid.
    pub uid: u32,
    /// The user name for `uid`, if known.
    pub user: Option<String>,
    /// The daemon-established app id.
    pub app_id: String,
    /// How the app was identified (`flatpak`, `exe`, …).
    pub app_source: String,
    /// The executable, if known.
    pub exe: Option<String>,
    /// The name the client declared: unverified, show it as such.
    pub label: String,
    /// What it wants to do.
    pub action: Action,
    /// To which device.
    pub target: String,
    /// When it was asked, unix ms.
    pub created_unix_ms: u64,
    /// When it times out (and is denied), unix ms.
    pub deadline_unix_ms: u64,
}

/// What [`PromptBroker::ask`] takes: a [`PromptInfo`] without the id and times.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRequest {
    /// The asking client connection.
    pub client: u32,
    /// Its pid.
    pub pid: i32,
    /// Its uid.
    pub uid: u32,
    /// The user name for `uid`, if known.
    pub user: Option<String>,
    /// The daemon-established app id.
    pub app_id: String,
    /// How the app was identified.
    pub app_source: String,
    /// The executable, if known.
    pub exe: Option<String>,
    /// The declared name (unverified).
    pub label: String,
    /// What it wants to do.
    pub action: Action,
    /// To which device.
    pub target: String,
}

/// What agents are told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PromptEvent {
    /// A new prompt.
    Raised(PromptInfo),
    /// A prompt is over (answered by someone, timed out, or its client went away).
    Resolved {
        /// The prompt.
        id: u64,
        /// How it ended.
        outcome: Outcome,
    },
}

/// How a prompt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// An agent answered.
    Answered {
        /// The answer.
        answer: Answer,
        /// Who answered (`agent pid 123 uid 0`).
        by: String,
    },
    /// Nobody answered in time.
    TimedOut,
    /// The asking client went away (or the request was dropped).
    Cancelled,
}

/// Failures answering a prompt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// No such prompt pending: unknown id, or already answered, timed out or cancelled.
    #[error("no pending prompt {0} (it may have been answered, timed out or cancelled)")]
    NotFound(u64),
}

struct Pending {
    info: PromptInfo,
    tx: oneshot::Sender<Outcome>,
}

struct State {
    next_id: u64,
    /// By id, so listings are in the order the prompts were raised.
    pending: BTreeMap<u64, Pending>,
}

struct Inner {
    /// Milliseconds; a reload may change it (prompts already raised keep theirs).
    timeout_ms: std::sync::atomic::AtomicU64,
    state: Mutex<State>,
    events: broadcast::Sender<PromptEvent>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (every section is a few map operations).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends prompt `id` with `outcome` if it is still pending: tells the asker and every agent.
    /// Returns whether it was this call that ended it.
    fn resolve(&self, id: u64, outcome: Outcome) -> bool {
        let mut state = self.lock();
        let Some(p) = state.pending.remove(&id) else {
            return false;
        };
        tracing::info!(
            id,
            client = p.info.client,
            app = %p.info.app_id,
            action = p.info.action.name(),
            target = %p.info.target,
            ?outcome,
            "prompt resolved"
        );
        // The asker may be gone (its future dropped): then nobody needs the outcome.
        let _ = p.tx.send(outcome.clone());
        // No agent connected is not an error.
        let _ = self.events.send(PromptEvent::Resolved { id, outcome });
        true
    }
}

/// Cancels its prompt when the `ask` future is dropped unfinished (no-op once resolved).
struct CancelOnDrop {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.inner.resolve(self.id, Outcome::Cancelled);
    }
}

/// The broker: a cheap, cloneable handle.
#[derive(Clone)]
pub struct PromptBroker {
    inner: Arc<Inner>,
}

impl fmt::Debug for PromptBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // try_lock: formatting must never deadlock, even from inside the broker.
        let pending = self.inner.state.try_lock().map(|s| s.pending.len()).ok();
        f.debug_struct("PromptBroker")
            .field("timeout", &self.timeout())
            .field("pending", &pending)
            .field("agents", &self.inner.events.receiver_count())
            .finish()
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl PromptBroker {
    /// A broker whose prompts time out (deny) after `timeout`.
    pub fn new(timeout: Duration) -> PromptBroker {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        PromptBroker {
            inner: Arc::new(Inner {
                timeout_ms: std::sync::atomic::AtomicU64::new(duration_ms(timeout)),
                state: Mutex::new(State {
                    next_id: 1,
                    pending: BTreeMap::new(),
                }),
                events,
            }),
        }
    }

    /// The timeout prompts get.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(
            self.inner
                .timeout_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Gives prompts raised from now on `timeout` (a reload of `[prompts] timeout_secs`).
    pub fn set_timeout(&self, timeout: Duration) {
        self.inner
            .timeout_ms
            .store(duration_ms(timeout), std::sync::atomic::Ordering::Relaxed);
    }

    /// Parks a request: raises a prompt to every agent and returns its id and a future for the
    /// outcome (first answer wins; [`Outcome::TimedOut`] after the timeout;
    /// [`Outcome::Cancelled`] on [`cancel_client`](Self::cancel_client) or if the future is
    /// dropped). The timeout runs from this call, but fires only while the future is polled.
    pub fn ask(&self, req: PromptRequest) -> (u64, impl Future<Output = Outcome> + Send + 'static) {
        let (tx, rx) = oneshot::channel();
        let timeout = self.timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let created_unix_ms = unix_ms();
        let timeout_ms = duration_ms(timeout);
        let id = {
            let mut state = self.inner.lock();
            let id = state.next_id;
            state.next_id += 1;
            let info = PromptInfo {
                id,
                client: req.client,
                pid: req.pid,
                uid: req.uid,
                user: req.user,
                app_id: req.app_id,
                app_source: req.app_source,
                exe: req.exe,
                label: req.label,
                action: req.action,
                target: req.target,
                created_unix_ms,
                deadline_unix_ms: created_unix_ms.saturating_add(timeout_ms),
            };
            tracing::info!(
                id,
                client = info.client,
                app = %info.app_id,
                action = info.action.name(),
                target = %info.target,
                agents = self.inner.events.receiver_count(),
                "prompt raised"
            );
            // Sent under the lock, so `subscribe` sees each prompt exactly once.
            let _ = self.inner.events.send(PromptEvent::Raised(info.clone()));
            state.pending.insert(id, Pending { info, tx });
            id
        };
        let guard = CancelOnDrop {
            inner: Arc::clone(&self.inner),
            id,
        };
        let fut = async move {
            let mut rx = rx;
            tokio::select! {
                r = &mut rx => r.unwrap_or(Outcome::Cancelled),
                () = tokio::time::sleep_until(deadline) => {
                    if guard.inner.resolve(guard.id, Outcome::TimedOut) {
                        Outcome::TimedOut
                    } else {
                        // Someone else got there first: their outcome is in the channel.
                        rx.await.unwrap_or(Outcome::Cancelled)
                    }
                }
            }
            // `guard` drops here: a no-op, the prompt is resolved.
        };
        (id, fut)
    }

    /// Answers prompt `id`. [`PromptError::NotFound`] if it is unknown or already over (the
    /// second answer loses).
    pub fn answer(&self, id: u64, answer: Answer, by: &str) -> Result<(), PromptError> {
        let outcome = Outcome::Answered {
            answer,
            by: by.to_string(),
        };
        if self.inner.resolve(id, outcome) {
            Ok(())
        } else {
            Err(PromptError::NotFound(id))
        }
    }

    /// Connects an agent: the prompts pending now, and a receiver for every event after them.
    /// Dropping the receiver disconnects the agent.
    pub fn subscribe(&self) -> (Vec<PromptInfo>, broadcast::Receiver<PromptEvent>) {
        let state = self.inner.lock();
        let pending = state.pending.values().map(|p| p.info.clone()).collect();
        (pending, self.inner.events.subscribe())
    }

    /// The prompts pending now, oldest first.
    pub fn pending(&self) -> Vec<PromptInfo> {
        let state = self.inner.lock();
        state.pending.values().map(|p| p.info.clone()).collect()
    }

    /// How many agents are connected (receivers alive).
    pub fn agents(&self) -> usize {
        self.inner.events.receiver_count()
    }

    /// Cancels every pending prompt of `client` (it disconnected).
    pub fn cancel_client(&self, client: u32) {
        let ids: Vec<u64> = {
            let state = self.inner.lock();
            state
                .pending
                .values()
                .filter(|p| p.info.client == client)
                .map(|p| p.info.id)
                .collect()
        };
        for id in ids {
            self.inner.resolve(id, Outcome::Cancelled);
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};

    fn req(client: u32) -> PromptRequest {
        PromptRequest {
            client,
            pid: 100 + client as i32,
            uid: 1000,
            user: Some("alice".into()),
            app_id: "exe:/usr/bin/sgcat".into(),
            app_source: "exe".into(),
            exe: Some("/usr/bin/sgcat".into()),
            label: "Totally Not A Spy".into(),
            action: Action::Record,
            target: "mic".into(),
        }
    }

    fn raised(ev: PromptEvent) -> PromptInfo {
        match ev {
            PromptEvent::Raised(info) => info,
            other => panic!("expected Raised, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn first_answer_wins_and_everyone_hears() {
        let broker = PromptBroker::new(Duration::from_secs(30));
        let (p1, mut a1) = broker.subscribe();
        let (p2, mut a2) = broker.subscribe();
        assert!(p1.is_empty() && p2.is_empty());
        assert_eq!(broker.agents(), 2);

        let (id, fut) = broker.ask(req(7));
        let asker = tokio::spawn(fut);
        let i1 = raised(a1.recv().await.unwrap());
        let i2 = raised(a2.recv().await.unwrap());
        assert_eq!(i1, i2);
        assert_eq!(i1.id, id);
        assert_eq!(i1.client, 7);
        assert_eq!(i1.label, "Totally Not A Spy");
        assert_eq!(i1.deadline_unix_ms - i1.created_unix_ms, 30_000);
        assert_eq!(broker.pending(), vec![i1.clone()]);

        broker
            .answer(id, Answer::AllowSession, "agent pid 1 uid 0")
            .unwrap();
        assert_eq!(
            broker.answer(id, Answer::DenyAlways, "agent pid 2 uid 0"),
            Err(PromptError::NotFound(id))
        );
        assert_eq!(
            broker.answer(999, Answer::AllowOnce, "x"),
            Err(PromptError::NotFound(999))
        );
        let want = Outcome::Answered {
            answer: Answer::AllowSession,
            by: "agent pid 1 uid 0".into(),
        };
        assert_eq!(asker.await.unwrap(), want);
        let resolved = PromptEvent::Resolved {
            id,
            outcome: want.clone(),
        };
        assert_eq!(a1.recv().await.unwrap(), resolved);
        assert_eq!(a2.recv().await.unwrap(), resolved);
        assert!(matches!(a1.try_recv(), Err(TryRecvError::Empty)));
        assert!(broker.pending().is_empty());
    }

    #[tokio::test]
    async fn timeout() {
        tokio::time::pause();
        let broker = PromptBroker::new(Duration::from_secs(60));
        let (_, mut agent) = broker.subscribe();
        let (id, fut) = broker.ask(req(1));
        let start = tokio::time::Instant::now();
        assert_eq!(fut.await, Outcome::TimedOut);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
            "{waited:?}"
        );
        assert_eq!(raised(agent.recv().await.unwrap()).id, id);
        assert_eq!(
            agent.recv().await.unwrap(),
            PromptEvent::Resolved {
                id,
                outcome: Outcome::TimedOut
            }
        );
        assert!(matches!(agent.try_recv(), Err(TryRecvError::Empty)));
        assert!(broker.pending().is_empty());
        assert_eq!(
            broker.answer(id, Answer::AllowOnce, "late"),
            Err(PromptError::NotFound(id))
        );
    }

    #[tokio::test]
    async fn answer_just_before_the_deadline_wins() {
        tokio::time::pause();
        let broker = PromptBroker::new(Duration::from_secs(10));
        let (id, fut) = broker.ask(req(1));
        let asker = tokio::spawn(fut);
        tokio::time::sleep(Duration::from_millis(9_999)).await;
        broker.answer(id, Answer::DenyOnce, "agent").unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            asker.await.unwrap(),
            Outcome::Answered {
                answer: Answer::DenyOnce,
                by: "agent".into()
            }
        );
    }

    #[tokio::test]
    async fn cancel_client_and_dropped_future() {
        let broker = PromptBroker::new(Duration::from_secs(30));
        let (_, mut agent) = broker.subscribe();
        let (a, fa) = broker.ask(req(1));
        let (b, fb) = broker.ask(PromptRequest {
            target: "line-in".into(),
            ..req(1)
        });
        let (c, fc) = broker.ask(req(2));
        broker.cancel_client(1);
        assert_eq!(fa.await, Outcome::Cancelled);
        assert_eq!(fb.await, Outcome::Cancelled);
        let left = broker.pending();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, c);
        // The asker gives up (its request was dropped): the prompt goes away too.
        drop(fc);
        assert!(broker.pending().is_empty());
        let mut events = Vec::new();
        while let Ok(ev) = agent.try_recv() {
            events.push(ev);
        }
        let resolved: Vec<(u64, Outcome)> = events
            .into_iter()
            .filter_map(|e| match e {
                PromptEvent::Resolved { id, outcome } => Some((id, outcome)),
                PromptEvent::Raised(_) => None,
            })
            .collect();
        assert_eq!(
            resolved,
            vec![
                (a, Outcome::Cancelled),
                (b, Outcome::Cancelled),
                (c, Outcome::Cancelled)
            ]
        );
        assert_eq!(
            broker.answer(a, Answer::AllowOnce, "agent"),
            Err(PromptError::NotFound(a))
        );
    }

    #[tokio::test]
    async fn late_subscriber_sees_pending() {
        let broker = PromptBroker::new(Duration::from_secs(30));
        let (id1, f1) = broker.ask(req(1));
        let (id2, f2) = broker.ask(req(2));
        broker
            .answer(id1, Answer::AllowOnce, "early agent")
            .unwrap();
        let (pending, mut agent) = broker.subscribe();
        assert_eq!(pending.iter().map(|p| p.id).collect::<Vec<_>>(), vec![id2]);
        assert!(matches!(agent.try_recv(), Err(TryRecvError::Empty)));
        broker
            .answer(id2, Answer::DenyAlways, "late agent")
            .unwrap();
        assert!(matches!(
            agent.recv().await.unwrap(),
            PromptEvent::Resolved { id, .. } if id == id2
        ));
        assert!(matches!(f1.await, Outcome::Answered { .. }));
        assert!(matches!(f2.await, Outcome::Answered { .. }));
    }

    #[tokio::test]
    async fn dropped_or_slow_agents_block_nobody() {
        let broker = PromptBroker::new(Duration::from_secs(30));
        let (_, gone) = broker.subscribe();
        let (_, mut slow) = broker.subscribe();
        let (_, mut live) = broker.subscribe();
        assert_eq!(broker.agents(), 3);
        drop(gone);
        assert_eq!(broker.agents(), 2);
        // Far more events than the buffer while `slow` reads nothing.
        let n = EVENT_BUFFER * 2;
        for i in 0..n {
            let (id, fut) = broker.ask(req(i as u32));
            broker.answer(id, Answer::AllowOnce, "live").unwrap();
            assert!(matches!(fut.await, Outcome::Answered { .. }));
            assert_eq!(raised(live.recv().await.unwrap()).id, id);
            assert!(matches!(
                live.recv().await.unwrap(),
                PromptEvent::Resolved { .. }
            ));
        }
        assert!(matches!(slow.recv().await, Err(RecvError::Lagged(_))));
        drop(slow);
        drop(live);
        assert_eq!(broker.agents(), 0);
        // With no agent at all, asking still works (and times out or is answered).
        let (id, fut) = broker.ask(req(1));
        broker.answer(id, Answer::AllowOnce, "api").unwrap();
        assert!(matches!(fut.await, Outcome::Answered { .. }));
    }

    /// Answers racing each other and the timeout on a multi-threaded runtime: every prompt is
    /// resolved exactly once, and the asker gets what the agents were told.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn races_resolve_exactly_once() {
        let broker = PromptBroker::new(Duration::from_millis(2));
        let (_, mut agent) = broker.subscribe();
        let rounds = 100;
        let mut askers = Vec::new();
        for i in 0..rounds {
            let (id, fut) = broker.ask(req(i));
            askers.push((id, tokio::spawn(fut)));
            let mut answerers = Vec::new();
            for k in 0..3 {
                let b = broker.clone();
                answerers.push(tokio::spawn(async move {
                    if (id + k) % 3 == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    b.answer(id, Answer::AllowOnce, &format!("agent {k}"))
                        .is_ok()
                }));
            }
            let mut wins = 0;
            for a in answerers {
                wins += usize::from(a.await.unwrap());
            }
            assert!(wins <= 1, "prompt {id}: {wins} answers won");
        }
        let mut resolved = BTreeMap::new();
        for (id, asker) in askers {
            let outcome = asker.await.unwrap();
            resolved.insert(id, outcome);
        }
        let mut told = BTreeMap::new();
        loop {
            match agent.try_recv() {
                Ok(PromptEvent::Resolved { id, outcome }) => {
                    assert!(told.insert(id, outcome).is_none(), "{id} resolved twice");
                }
                Ok(PromptEvent::Raised(_)) => {}
                Err(TryRecvError::Empty) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(told, resolved);
        assert!(broker.pending().is_empty());
    }

    #[test]
    fn answers() {
        for a in Answer::ALL {
            assert_eq!(a.name().parse::<Answer>(), Ok(a));
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.name()));
        }
        assert!(Answer::AllowSession.allows());
        assert!(!Answer::DenyOnce.allows());
        assert_eq!(Answer::AllowSession.scope(), GrantScope::Session);
        assert_eq!(Answer::DenyAlways.scope(), GrantScope::Always);
        assert_eq!(Answer::DenyOnce.scope(), GrantScope::Once);
        assert!("allow_once".parse::<Answer>().is_ok());
        assert!("maybe".parse::<Answer>().is_err());
    }
}
