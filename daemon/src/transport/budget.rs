//! Connection budgets: how many connections may be waiting for their handshake, how many file
//! descriptors the daemon holds on one uid's behalf, how many identity lookups run at once,
//! and which waiting connections are shed when a budget (or the process's fd table) is full.
//!
//! One [`Budget`] is shared by every listener. Each accepted connection is [`Budget::admit`]ted
//! under a [`Class`] and holds the [`Ticket`] it gets for as long as its socket is open:
//!
//! - The ticket charges one fd to `(class, uid)` until dropped; [`Ticket::charge_fds`] charges
//!   the fds of a request while it is handled (the transport also charges the peer's pidfd). A uid at its fd budget gets no new connection.
//! - Until [`Ticket::handshake_done`] the connection is *pending*. Over the per-uid pending
//!   cap the uid's own oldest pending connection is shed; over the class's global cap, the
//!   oldest pending connection of the uid with the most of them. A shed connection learns it
//!   through [`Ticket::shed`] and hangs up. [`Budget::shed_oldest`] sheds for the accept loop
//!   when the fd table is full (`EMFILE`), apps first.
//! - [`Ticket::lookup`] waits for an identity-lookup slot (per uid and global): a peer whose
//!   lookups hang holds its own slots, and the caller's deadline ends the wait.
//!
//! Classes never share counts: the admin socket's budget ([`Class::Admin`]) is its own, so no
//! number of app connections, of any uid, reaches it. Every app socket (native, and any other
//! protocol's) admits under [`Class::App`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Which budget a connection draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Application sockets.
    App,
    /// The admin socket.
    Admin,
}

impl Class {
    fn index(self) -> usize {
        match self {
            Class::App => 0,
            Class::Admin => 1,
        }
    }
}

/// The caps of one [`Class`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Connections that have not finished their handshake, all uids together.
    pub pending_total: usize,
    /// Connections of one uid that have not finished their handshake.
    pub pending_per_uid: usize,
    /// Descriptors held for one uid: its connection sockets, their pidfds, and the fds of
    /// requests being handled.
    pub fds_per_uid: usize,
    /// Identity lookups running at once for one uid.
    pub lookups_per_uid: usize,
    /// Identity lookups running at once in the class.
    pub lookups_total: usize,
}

impl BudgetLimits {
    /// The application budget from the config's `[limits]`.
    pub fn apps(limits: &crate::config::Limits) -> BudgetLimits {
        BudgetLimits {
            pending_total: limits.pending_connections,
            pending_per_uid: limits.pending_connections_per_uid,
            fds_per_uid: limits.fds_per_uid,
            lookups_per_uid: 16,
            lookups_total: 64,
        }
    }

    /// The admin socket's budget (fixed: its users are administrators).
    pub fn admin() -> BudgetLimits {
        BudgetLimits {
            pending_total: 32,
            pending_per_uid: 16,
            fds_per_uid: 256,
            lookups_per_uid: 8,
            lookups_total: 16,
        }
    }
}

/// Why a connection or a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The uid holds its whole fd budget.
    #[error("uid {uid} already holds {held} file descriptors in the daemon (limit {limit})")]
    Fds { uid: u32, held: usize, limit: usize },
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    pending: usize,
    fds: usize,
    lookups: usize,
}

#[derive(Debug)]
struct PendingEntry {
    class: Class,
    uid: u32,
    shed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    /// Pending connections, oldest first.
    pending: BTreeMap<u64, PendingEntry>,
    per_uid: HashMap<(Class, u32), Counts>,
    pending_total: [usize; 2],
    lookups_total: [usize; 2],
}

impl State {
    fn counts(&mut self, class: Class, uid: u32) -> &mut Counts {
        self.per_uid.entry((class, uid)).or_default()
    }

    /// Drops the entry of `(class, uid)` once it counts nothing.
    fn tidy(&mut self, class: Class, uid: u32) {
        if let Some(c) = self.per_uid.get(&(class, uid)) {
            if c.pending == 0 && c.fds == 0 && c.lookups == 0 {
                self.per_uid.remove(&(class, uid));
            }
        }
    }

    /// Takes `seq` out of the pending set (if it is still there) and signals it if `shed`.
    fn unpend(&mut self, seq: u64, shed: bool) -> bool {
        let Some(e) = self.pending.remove(&seq) else {
            return false;
        };
        self.pending_total[e.class.index()] -= 1;
        let c = self.counts(e.class, e.uid);
        c.pending = c.pending.saturating_sub(1);
        if shed {
            e.shed.notify_one();
        }
        true
    }

    fn oldest_of(&self, class: Class, uid: u32) -> Option<u64> {
        self.pending
            .iter()
            .find(|(_, e)| e.class == class && e.uid == uid)
            .map(|(s, _)| *s)
    }

    /// The oldest pending connection of the uid with the most pending connections in `class`.
    fn heaviest_oldest(&self, class: Class) -> Option<u64> {
        let uid = self
            .per_uid
            .iter()
            .filter(|((c, _), n)| *c == class && n.pending > 0)
            .max_by_key(|(_, n)| n.pending)
            .map(|((_, uid), _)| *uid)?;
        self.oldest_of(class, uid)
    }
}

#[derive(Debug)]
struct Shared {
    limits: [BudgetLimits; 2],
    state: Mutex<State>,
    /// Signalled whenever an identity-lookup slot frees.
    lookup_freed: Notify,
}

/// The budgets of all listeners (cheap to clone; clones share the counts).
#[derive(Debug, Clone)]
pub struct Budget {
    shared: Arc<Shared>,
}

impl Budget {
    /// Budgets with these caps for apps and for the admin socket.
    pub fn new(apps: BudgetLimits, admin: BudgetLimits) -> Budget {
        Budget {
            shared: Arc::new(Shared {
                limits: [apps, admin],
                state: Mutex::new(State::default()),
                lookup_freed: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// Admits a just-accepted connection of `uid`, shedding older pending connections if a
    /// pending cap is reached; refused only when the uid holds its whole fd budget. Returns
    /// the ticket and how many connections were shed to make room.
    pub fn admit(&self, class: Class, uid: u32) -> Result<(Ticket, usize), Refused> {
        let limits = &self.shared.limits[class.index()];
        let mut s = self.state();
        let held = s.counts(class, uid).fds;
        if held >= limits.fds_per_uid {
            s.tidy(class, uid);
            return Err(Refused::Fds {
                uid,
                held,
                limit: limits.fds_per_uid,
            });
        }
        let mut shed = 0;
        while s.counts(class, uid).pending >= limits.pending_per_uid.max(1) {
            let Some(seq) = s.oldest_of(class, uid) else {
                break;
            };
            s.unpend(seq, true);
            shed += 1;
        }
        while s.pending_total[class.index()] >= limits.pending_total.max(1) {
            let Some(seq) = s.heaviest_oldest(class) else {
                break;
            };
            s.unpend(seq, true);
            shed += 1;
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        let notify = Arc::new(Notify::new());
        s.pending.insert(
            seq,
            PendingEntry {
                class,
                uid,
                shed: Arc::clone(&notify),
            },
        );
        s.pending_total[class.index()] += 1;
        let c = s.counts(class, uid);
        c.pending += 1;
        c.fds += 1;
        Ok((
            Ticket {
                shared: Arc::clone(&self.shared),
                class,
                uid,
                seq: Some(seq),
                shed: notify,
            },
            shed,
        ))
    }

    /// Sheds up to `n` pending connections, oldest first, app connections before admin ones
    /// (for the accept loop when the fd table is full). Returns how many were shed.
    pub fn shed_oldest(&self, n: usize) -> usize {
        let mut s = self.state();
        let mut done = 0;
        for class in [Class::App, Class::Admin] {
            while done < n {
                let Some(seq) = s
                    .pending
                    .iter()
                    .find(|(_, e)| e.class == class)
                    .map(|(seq, _)| *seq)
                else {
                    break;
                };
                s.unpend(seq, true);
                done += 1;
            }
        }
        done
    }

    /// Pending connections of `class` now.
    pub fn pending(&self, class: Class) -> usize {
        self.state().pending_total[class.index()]
    }

    /// Descriptors charged now, all classes and uids together: 0 once every connection has
    /// ended (for a clean shutdown to wait on).
    pub fn fds_total(&self) -> usize {
        self.state().per_uid.values().map(|c| c.fds).sum()
    }

    /// Descriptors charged to `uid` in `class` now.
    pub fn fds(&self, class: Class, uid: u32) -> usize {
        self.state().per_uid.get(&(class, uid)).map_or(0, |c| c.fds)
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // The counts stay consistent between statements; a panic elsewhere must not stop accepts.
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// One connection's hold on the budget; dropping it (when the socket closes) gives back its fd
/// and, if still pending, its pending slot.
#[derive(Debug)]
pub struct Ticket {
    shared: Arc<Shared>,
    class: Class,
    uid: u32,
    seq: Option<u64>,
    shed: Arc<Notify>,
}

impl Ticket {
    /// The uid it is charged to.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Resolves when the budget sheds this connection (only while it is pending); never
    /// resolves after [`Ticket::handshake_done`].
    pub async fn shed(&self) {
        if self.seq.is_none() {
            return std::future::pending().await;
        }
        self.shed.notified().await;
    }

    /// The handshake is over: the connection no longer counts as pending and cannot be shed.
    pub fn handshake_done(&mut self) {
        if let Some(seq) = self.seq.take() {
            lock(&self.shared).unpend(seq, false);
        }
    }

    /// Charges `n` more fds (those of a request being handled) to the uid until the returned
    /// charge is dropped; refused if that would pass the uid's fd budget.
    pub fn charge_fds(&self, n: usize) -> Result<FdCharge, Refused> {
        let limit = self.shared.limits[self.class.index()].fds_per_uid;
        let mut s = lock(&self.shared);
        let c = s.counts(self.class, self.uid);
        if c.fds + n > limit {
            return Err(Refused::Fds {
                uid: self.uid,
                held: c.fds,
                limit,
            });
        }
        c.fds += n;
        Ok(FdCharge {
            shared: Arc::clone(&self.shared),
            class: self.class,
            uid: self.uid,
            n,
        })
    }

    /// Waits for an identity-lookup slot for this uid. The permit is meant to move into the
    /// thread doing the lookup, so a lookup that hangs keeps its slot until it really ends.
    pub async fn lookup(&self) -> LookupPermit {
        let limits = &self.shared.limits[self.class.index()];
        loop {
            let freed = self.shared.lookup_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut s = lock(&self.shared);
                let i = self.class.index();
                let total = s.lookups_total[i];
                let c = s.counts(self.class, self.uid);
                if c.lookups < limits.lookups_per_uid.max(1) && total < limits.lookups_total.max(1)
                {
                    c.lookups += 1;
                    s.lookups_total[i] += 1;
                    return LookupPermit {
                        shared: Arc::clone(&self.shared),
                        class: self.class,
                        uid: self.uid,
                    };
                }
            }
            freed.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        if let Some(seq) = self.seq.take() {
            s.unpend(seq, false);
        }
        let c = s.counts(self.class, self.uid);
        c.fds = c.fds.saturating_sub(1);
        s.tidy(self.class, self.uid);
    }
}

/// Fds of one request charged to its uid (see [`Ticket::charge_fds`]).
#[derive(Debug)]
pub struct FdCharge {
    shared: Arc<Shared>,
    class: Class,
    uid: u32,
    n: usize,
}

impl Drop for FdCharge {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        let c = s.counts(self.class, self.uid);
        c.fds = c.fds.saturating_sub(self.n);
        s.tidy(self.class, self.uid);
    }
}

/// A running identity lookup's slot (see [`Ticket::lookup`]).
#[derive(Debug)]
pub struct LookupPermit {
    shared: Arc<Shared>,
    class: Class,
    uid: u32,
}

impl Drop for LookupPermit {
    fn drop(&mut self) {
        {
            let mut s = lock(&self.shared);
            let i = self.class.index();
            s.lookups_total[i] = s.lookups_total[i].saturating_sub(1);
            let c = s.counts(self.class, self.uid);
            c.lookups = c.lookups.saturating_sub(1);
            s.tidy(self.class, self.uid);
        }
        self.shared.lookup_freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(pending_total: usize, pending_per_uid: usize, fds_per_uid: usize) -> BudgetLimits {
        BudgetLimits {
            pending_total,
            pending_per_uid,
            fds_per_uid,
            lookups_per_uid: 2,
            lookups_total: 3,
        }
    }

    /// Whether `t` has been told it is shed.
    async fn is_shed(t: &Ticket) -> bool {
        tokio::time::timeout(Duration::from_millis(1), t.shed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn over_the_per_uid_cap_the_uid_loses_its_oldest() {
        let b = Budget::new(limits(100, 3, 100), BudgetLimits::admin());
        let mut mine: Vec<Ticket> = (0..3).map(|_| b.admit(Class::App, 7).unwrap().0).collect();
        let (other, _) = b.admit(Class::App, 8).unwrap();
        let (newest, shed) = b.admit(Class::App, 7).unwrap();
        assert_eq!(shed, 1);
        assert!(is_shed(&mine[0]).await);
        assert!(!is_shed(&mine[1]).await);
        assert!(!is_shed(&other).await);
        assert!(!is_shed(&newest).await);
        assert_eq!(b.pending(Class::App), 4);
        // A shed ticket dropping later does not count twice.
        mine.remove(0);
        assert_eq!(b.pending(Class::App), 4);
        assert_eq!(b.fds(Class::App, 7), 3);
    }

    #[tokio::test]
    async fn over_the_global_cap_the_heaviest_uid_is_shed() {
        let b = Budget::new(limits(4, 10, 100), BudgetLimits::admin());
        let flood: Vec<Ticket> = (0..3).map(|_| b.admit(Class::App, 1).unwrap().0).collect();
        let (quiet, _) = b.admit(Class::App, 2).unwrap();
        let (fresh, shed) = b.admit(Class::App, 3).unwrap();
        assert_eq!(shed, 1);
        assert!(is_shed(&flood[0]).await);
        assert!(!is_shed(&quiet).await);
        assert!(!is_shed(&fresh).await);
        assert_eq!(b.pending(Class::App), 4);
    }

    #[tokio::test]
    async fn handshaken_connections_are_never_shed_but_keep_their_fd() {
        let b = Budget::new(limits(2, 2, 100), BudgetLimits::admin());
        let (mut done, _) = b.admit(Class::App, 1).unwrap();
        done.handshake_done();
        let _p: Vec<Ticket> = (0..4).map(|_| b.admit(Class::App, 1).unwrap().0).collect();
        assert!(!is_shed(&done).await);
        assert_eq!(b.pending(Class::App), 2);
        assert_eq!(b.fds(Class::App, 1), 5);
        assert_eq!(b.shed_oldest(10), 2);
        assert_eq!(b.pending(Class::App), 0);
    }

    #[tokio::test]
    async fn the_fd_budget_refuses_connections_and_requests() {
        let b = Budget::new(limits(100, 100, 3), BudgetLimits::admin());
        let (mut a, _) = b.admit(Class::App, 5).unwrap();
        a.handshake_done();
        let charge = a.charge_fds(2).unwrap();
        assert!(matches!(b.admit(Class::App, 5), Err(Refused::Fds { .. })));
        assert!(a.charge_fds(1).is_err());
        // Another uid and the admin class are untouched.
        assert!(b.admit(Class::App, 6).is_ok());
        assert!(b.admit(Class::Admin, 5).is_ok());
        drop(charge);
        assert!(b.admit(Class::App, 5).is_ok());
        drop(a);
        assert_eq!(b.fds(Class::App, 5), 0);
    }

    #[tokio::test]
    async fn apps_never_touch_the_admin_budget() {
        let b = Budget::new(limits(2, 2, 4), limits(2, 2, 4));
        let (admin, _) = b.admit(Class::Admin, 0).unwrap();
        let _apps: Vec<Ticket> = (0..50)
            .filter_map(|i| b.admit(Class::App, i % 3).ok().map(|t| t.0))
            .collect();
        assert!(!is_shed(&admin).await);
        assert_eq!(b.pending(Class::Admin), 1);
        // The accept loop sheds apps first.
        assert_eq!(b.shed_oldest(2), 2);
        assert!(!is_shed(&admin).await);
    }

    #[tokio::test]
    async fn lookup_slots_are_capped_and_wait() {
        let b = Budget::new(limits(100, 100, 100), BudgetLimits::admin());
        let (t, _) = b.admit(Class::App, 1).unwrap();
        let (u, _) = b.admit(Class::App, 2).unwrap();
        let p1 = t.lookup().await;
        let _p2 = t.lookup().await;
        // uid 1 is at its 2; uid 2 gets the last global slot.
        assert!(tokio::time::timeout(Duration::from_millis(20), t.lookup())
            .await
            .is_err());
        let _p3 = u.lookup().await;
        assert!(tokio::time::timeout(Duration::from_millis(20), u.lookup())
            .await
            .is_err());
        // A finished lookup lets a waiter in.
        let waiter = tokio::spawn(async move { t.lookup().await });
        drop(p1);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
