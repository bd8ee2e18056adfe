//! Function clusters: Lambda's execution model over ordinary hosts. Each host is one function
//! instance that serves one request at a time, so a request *claims* an idle host for the
//! length of its attempt and releases it when the attempt ends. The most recently released
//! idle instance is preferred, so surplus instances stay idle and the control layer can reap
//! them (as Lambda reuses the warmest environment). Requests in flight plus requests waiting
//! are capped by the cluster's `concurrency`: one more is throttled (429). A request that finds
//! no idle instance under the cap waits in a FIFO queue, and the control layer is told
//! (`InstanceWanted`) so that it can start one; a released host, or a host that joins or turns
//! healthy, is handed straight to the oldest waiter.
//!
//! Claims, releases, hand-offs and the throttle check all take one mutex per cluster, so two
//! picks can never claim one host and the cap is exact. Clusters of one concurrency group (the
//! versions and aliases of a function: Lambda's reserved concurrency is the function's, not
//! each version's) count their requests in one shared `ConcurrencyGroup` instead, admitted by
//! compare-and-swap, so the cap holds across them. Ordinary clusters never touch any of
//! this: their hosts are picked by the lock-free balancer as before.

use super::{Host, HostSet};
use arc_swap::ArcSwap;
use std::collections::VecDeque;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The shared state of one function cluster, kept across snapshot applies (as its hosts are),
/// so requests in flight and waiting under the previous version count against the new one.
#[derive(Default)]
pub struct FunctionState {
    queue: Mutex<Queue>,
    /// Hosts claimed right now (changed under the lock; an atomic so stats read it freely).
    busy: AtomicU32,
}

#[derive(Default)]
struct Queue {
    /// Oldest first. A waiter that gave up leaves a closed sender, skipped and dropped later.
    waiters: VecDeque<oneshot::Sender<Arc<Host>>>,
    /// Counts releases: a host's `last_used` is the count at its latest release.
    releases: u64,
}

/// Requests admitted (in flight plus waiting) across the clusters of one concurrency group
/// (`FunctionSpec::concurrency_group`), kept across applies while the group exists.
#[derive(Default)]
pub struct ConcurrencyGroup {
    admitted: AtomicU32,
}

impl ConcurrencyGroup {
    /// Requests of the group in flight or waiting now.
    pub fn admitted(&self) -> u32 {
        self.admitted.load(Relaxed)
    }

    /// Admit one request if fewer than `limit` are admitted.
    fn admit(self: &Arc<Self>, limit: u32) -> Option<Admission> {
        self.admitted
            .fetch_update(AcqRel, Acquire, |n| (n < limit).then_some(n + 1))
            .ok()
            .map(|_| Admission(self.clone()))
    }
}

/// One admitted request of a group; it stops counting when dropped (with its claim or wait).
struct Admission(Arc<ConcurrencyGroup>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, AcqRel);
    }
}

/// A host held by one request; released (or handed to a waiter) when dropped.
pub struct Claim {
    host: Option<Arc<Host>>,
    state: Arc<FunctionState>,
    /// Dropped after the host is released (fields drop after `Drop::drop`).
    _admission: Option<Admission>,
}

/// What an attempt to claim an instance got.
pub enum Claimed {
    /// An idle host, by its index in the host set it was picked from.
    Host(Claim, usize),
    /// In flight plus waiting reached the concurrency limit.
    Throttled,
    /// No idle host: wait for one. `waiting`, `busy` and `hosts` are the counts just after
    /// queueing.
    Wait {
        waiter: Waiter,
        waiting: u32,
        busy: u32,
        hosts: u32,
    },
}

/// A request queued for an instance. Dropping it (timeout, client gone) gives back a host
/// handed to it in the meantime.
pub struct Waiter {
    rx: oneshot::Receiver<Arc<Host>>,
    state: Arc<FunctionState>,
    admission: Option<Admission>,
}

impl FunctionState {
    pub fn busy(&self) -> u32 {
        self.busy.load(Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim an idle host of `set` (one that `skip` does not name, if there is one), or queue
    /// the request, or throttle it. Nobody jumps the queue: while requests wait, a newcomer
    /// waits behind them. With a `group`, `concurrency` caps the group's requests instead of
    /// this cluster's.
    pub fn claim(
        self: &Arc<Self>,
        hosts: &ArcSwap<HostSet>,
        concurrency: u32,
        group: Option<&Arc<ConcurrencyGroup>>,
        skip: impl Fn(usize) -> bool,
    ) -> Claimed {
        let mut q = self.lock();
        // NOTE: the set is read under the lock: a host set change stores the new set and then
        // takes the lock to offer its hosts, so a request either sees the new hosts here or is
        // queued before the offer runs. Never queued with an idle host it could not see.
        let set = hosts.load();
        q.waiters.retain(|w| !w.is_closed());
        let waiting = q.waiters.len() as u64;
        let busy = self.busy.load(Relaxed);
        let admission = match group {
            Some(g) => match g.admit(concurrency) {
                Some(a) => Some(a),
                None => return Claimed::Throttled,
            },
            None if u64::from(busy) + waiting >= u64::from(concurrency) => {
                return Claimed::Throttled
            }
            None => None,
        };
        if q.waiters.is_empty() {
            if let Some(i) =
                most_recent_idle(&set, &skip).or_else(|| most_recent_idle(&set, |_| false))
            {
                let host = set.hosts[i].clone();
                self.take(&host);
                return Claimed::Host(self.claim_of(host, admission), i);
            }
        }
        let (tx, rx) = oneshot::channel();
        q.waiters.push_back(tx);
        let waiting = q.waiters.len() as u32;
        Claimed::Wait {
            waiter: Waiter {
                rx,
                state: self.clone(),
                admission,
            },
            waiting,
            busy,
            hosts: set.hosts.len() as u32,
        }
    }

    /// Hand idle hosts of `set` to waiting requests, oldest first: after the host set changed
    /// or a host turned healthy.
    pub fn offer(self: &Arc<Self>, set: &HostSet) {
        let mut q = self.lock();
        while !q.waiters.is_empty() {
            let Some(i) = most_recent_idle(set, |_| false) else {
                break;
            };
            let host = set.hosts[i].clone();
            self.take(&host);
            if let Err(host) = Self::hand_over(&mut q, host) {
                self.put_back(&host);
            }
        }
    }

    fn claim_of(self: &Arc<Self>, host: Arc<Host>, admission: Option<Admission>) -> Claim {
        Claim {
            host: Some(host),
            state: self.clone(),
            _admission: admission,
        }
    }

    /// Mark `host` claimed (under the lock).
    fn take(&self, host: &Host) {
        host.claimed.store(true, Relaxed);
        self.busy.fetch_add(1, Relaxed);
    }

    /// Mark `host` idle again (under the lock).
    fn put_back(&self, host: &Host) {
        host.claimed.store(false, Relaxed);
        self.busy.fetch_sub(1, Relaxed);
    }

    /// Give a claimed host to the oldest live waiter; the host comes back if none is left.
    fn hand_over(q: &mut Queue, mut host: Arc<Host>) -> Result<(), Arc<Host>> {
        while let Some(tx) = q.waiters.pop_front() {
            match tx.send(host) {
                Ok(()) => return Ok(()),
                Err(back) => host = back,
            }
        }
        Err(host)
    }

    fn release(&self, host: Arc<Host>) {
        let mut q = self.lock();
        q.releases += 1;
        host.last_used.store(q.releases, Relaxed);
        // A host that left the set or turned unhealthy is not handed on; it stays claimed by
        // nobody, idle.
        let host = if host.healthy() && !host.retired.load(Relaxed) {
            match Self::hand_over(&mut q, host) {
                Ok(()) => return,
                Err(h) => h,
            }
        } else {
            host
        };
        self.put_back(&host);
    }
}

/// The healthy, weighted, unclaimed host of `set` released most recently (never used counts
/// as oldest), among those `skip` does not name.
fn most_recent_idle(set: &HostSet, skip: impl Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, m) in set.hosts.iter().enumerate() {
        let h = &m.host;
        if m.weight == 0
            || skip(i)
            || h.claimed.load(Relaxed)
            || !h.healthy()
            || h.retired.load(Relaxed)
        {
            continue;
        }
        let used = h.last_used.load(Relaxed);
        if best.is_none_or(|(_, b)| used > b) {
            best = Some((i, used));
        }
    }
    best.map(|(i, _)| i)
}

impl Claim {
    pub fn host(&self) -> &Arc<Host> {
        self.host
            .as_ref()
            .expect("a claim holds its host until dropped")
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(h) = self.host.take() {
            self.state.release(h);
        }
    }
}

impl Waiter {
    /// Wait up to `timeout` for a host; None when none came.
    pub async fn wait(mut self, timeout: std::time::Duration) -> Option<Claim> {
        let got = match tokio::time::timeout(timeout, &mut self.rx).await {
            Ok(Ok(host)) => Some(host),
            // Timed out, or the queue was dropped: a host sent at the last moment still counts.
            _ => {
                self.rx.close();
                self.rx.try_recv().ok()
            }
        };
        let admission = self.admission.take();
        got.map(|h| self.state.claim_of(h, admission))
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // After `close` no host can be sent; one sent before is released, not lost.
        self.rx.close();
        if let Ok(host) = self.rx.try_recv() {
            self.state.release(host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LbPolicy, UpstreamAddress, UpstreamProtocol};
    use std::time::Duration;

    fn host(i: usize) -> Arc<Host> {
        let addr = UpstreamAddress::Unix(format!("/tmp/fn-{i}.sock").into());
        Arc::new(Host::new(
            addr,
            UpstreamProtocol::Http1,
            Duration::from_secs(60),
        ))
    }

    fn set_of(hosts: &[Arc<Host>]) -> ArcSwap<HostSet> {
        ArcSwap::from_pointee(HostSet::new(
            hosts.to_vec(),
            vec![1; hosts.len()],
            LbPolicy::LeastRequest,
            1.0,
        ))
    }

    fn claimed(c: Claimed) -> (Claim, usize) {
        match c {
            Claimed::Host(c, i) => (c, i),
            Claimed::Throttled => panic!("throttled"),
            Claimed::Wait { .. } => panic!("waits"),
        }
    }

    fn waits(c: Claimed) -> (Waiter, u32, u32) {
        match c {
            Claimed::Wait {
                waiter,
                waiting,
                busy,
                ..
            } => (waiter, waiting, busy),
            Claimed::Host(_, i) => panic!("claimed host {i}"),
            Claimed::Throttled => panic!("throttled"),
        }
    }

    #[test]
    fn a_host_serves_one_request_and_the_most_recently_released_is_preferred() {
        let state = Arc::new(FunctionState::default());
        let hosts: Vec<_> = (0..3).map(host).collect();
        let set = set_of(&hosts);
        let (a, ia) = claimed(state.claim(&set, 10, None, |_| false));
        let (b, ib) = claimed(state.claim(&set, 10, None, |_| false));
        let (c, ic) = claimed(state.claim(&set, 10, None, |_| false));
        let mut got = vec![ia, ib, ic];
        got.sort();
        assert_eq!(got, [0, 1, 2], "three claims, three different hosts");
        assert_eq!(state.busy(), 3);
        assert!(hosts.iter().all(|h| h.claimed.load(Relaxed)));
        // Released in the order c, a, b: b is the warmest, then a.
        drop(c);
        drop(a);
        drop(b);
        assert_eq!(state.busy(), 0);
        let (first, i1) = claimed(state.claim(&set, 10, None, |_| false));
        assert_eq!(i1, ib);
        let (_second, i2) = claimed(state.claim(&set, 10, None, |_| false));
        assert_eq!(i2, ia);
        drop(first);
        let (_third, i3) = claimed(state.claim(&set, 10, None, |_| false));
        assert_eq!(i3, ib, "released again, the warmest again");
    }

    #[test]
    fn a_retry_avoids_the_hosts_it_tried_while_another_is_idle() {
        let state = Arc::new(FunctionState::default());
        let hosts: Vec<_> = (0..2).map(host).collect();
        let set = set_of(&hosts);
        let (c, i) = claimed(state.claim(&set, 10, None, |_| false));
        drop(c);
        let (c, j) = claimed(state.claim(&set, 10, None, |k| k == i));
        assert_ne!(i, j);
        drop(c);
        // Every host tried: one of them rather than a wait.
        let (_c, _) = claimed(state.claim(&set, 10, None, |_| true));
    }

    #[test]
    fn throttles_at_the_concurrency_limit_counting_waiters() {
        let state = Arc::new(FunctionState::default());
        let hosts: Vec<_> = (0..3).map(host).collect();
        let set = set_of(&hosts);
        let (_a, _) = claimed(state.claim(&set, 2, None, |_| false));
        let (_b, _) = claimed(state.claim(&set, 2, None, |_| false));
        // A host is idle, but two requests are in flight: the cap says no.
        assert!(matches!(
            state.claim(&set, 2, None, |_| false),
            Claimed::Throttled
        ));

        let one = [host(9)];
        let small = set_of(&one);
        let state = Arc::new(FunctionState::default());
        let (_held, _) = claimed(state.claim(&small, 2, None, |_| false));
        let (waiter, waiting, busy) = waits(state.claim(&small, 2, None, |_| false));
        assert_eq!((waiting, busy), (1, 1));
        assert!(matches!(
            state.claim(&small, 2, None, |_| false),
            Claimed::Throttled
        ));
        // A waiter that gave up no longer counts.
        drop(waiter);
        let (_w, waiting, _) = waits(state.claim(&small, 2, None, |_| false));
        assert_eq!(waiting, 1);
        // Concurrency 0 throttles everything (Lambda).
        let state = Arc::new(FunctionState::default());
        assert!(matches!(
            state.claim(&set, 0, None, |_| false),
            Claimed::Throttled
        ));
    }

    #[tokio::test]
    async fn clusters_of_one_group_share_its_limit() {
        // Two versions of one function (two clusters) with reserved concurrency 3.
        let group = Arc::new(ConcurrencyGroup::default());
        let (v1, v2) = (
            Arc::new(FunctionState::default()),
            Arc::new(FunctionState::default()),
        );
        let (h1, h2) = ([host(0), host(1)], [host(2)]);
        let (s1, s2) = (set_of(&h1), set_of(&h2));
        let (a, _) = claimed(v1.claim(&s1, 3, Some(&group), |_| false));
        let (b, _) = claimed(v2.claim(&s2, 3, Some(&group), |_| false));
        let (w, waiting, _) = waits(v2.claim(&s2, 3, Some(&group), |_| false));
        assert_eq!((waiting, group.admitted()), (1, 3));
        // v1 has an idle host and its own cluster has one request, but the function has 3.
        assert!(matches!(
            v1.claim(&s1, 3, Some(&group), |_| false),
            Claimed::Throttled
        ));
        // b ends and its host goes to the waiter, which runs on its own admission: 2 left.
        drop(b);
        let c = w.wait(Duration::from_secs(30)).await.expect("handed over");
        assert_eq!(group.admitted(), 2);
        drop(c);
        assert_eq!(group.admitted(), 1);
        // A waiter that gives up (timeout) stops counting.
        let (held, _) = claimed(v2.claim(&s2, 3, Some(&group), |_| false));
        let (w, _, _) = waits(v2.claim(&s2, 3, Some(&group), |_| false));
        assert_eq!(group.admitted(), 3);
        assert!(w.wait(Duration::from_millis(1)).await.is_none());
        assert_eq!(group.admitted(), 2);
        drop((a, held));
        assert_eq!(group.admitted(), 0);
        // Without a group, each cluster counts only its own requests.
        let (_x, _) = claimed(v1.claim(&s1, 1, None, |_| false));
        let (_y, _) = claimed(v2.claim(&s2, 1, None, |_| false));
    }

    #[test]
    fn unhealthy_and_zero_weight_hosts_are_not_claimed() {
        let state = Arc::new(FunctionState::default());
        let hosts: Vec<_> = (0..2).map(host).collect();
        hosts[0].ejected.store(true, Relaxed);
        let set = ArcSwap::from_pointee(HostSet::new(
            hosts.clone(),
            vec![1, 1],
            LbPolicy::LeastRequest,
            1.0,
        ));
        let (_c, i) = claimed(state.claim(&set, 10, None, |_| false));
        assert_eq!(i, 1);
        let (_w, _, _) = waits(state.claim(&set, 10, None, |_| false));
        let zero = ArcSwap::from_pointee(HostSet::new(
            vec![host(5)],
            vec![0],
            LbPolicy::LeastRequest,
            1.0,
        ));
        let state = Arc::new(FunctionState::default());
        let (_w, _, _) = waits(state.claim(&zero, 10, None, |_| false));
    }

    #[tokio::test]
    async fn a_released_host_goes_to_the_oldest_waiter_and_newcomers_queue_behind() {
        let state = Arc::new(FunctionState::default());
        let hosts = [host(0)];
        let set = set_of(&hosts);
        let (held, _) = claimed(state.claim(&set, 10, None, |_| false));
        let (first, _, _) = waits(state.claim(&set, 10, None, |_| false));
        let (second, waiting, busy) = waits(state.claim(&set, 10, None, |_| false));
        assert_eq!((waiting, busy), (2, 1));
        drop(held);
        // Handed over, never idle in between: still one busy host.
        assert_eq!(state.busy(), 1);
        assert!(hosts[0].claimed.load(Relaxed));
        let got = first
            .wait(Duration::from_secs(30))
            .await
            .expect("handed over");
        assert!(Arc::ptr_eq(got.host(), &hosts[0]));
        // The second waiter is still first in line: a newcomer queues behind it.
        let (third, waiting, _) = waits(state.claim(&set, 10, None, |_| false));
        assert_eq!(waiting, 2);
        drop(got);
        let got = second
            .wait(Duration::from_secs(30))
            .await
            .expect("handed over");
        drop(got);
        let got = third
            .wait(Duration::from_secs(30))
            .await
            .expect("handed over");
        drop(got);
        assert_eq!(state.busy(), 0);
        assert!(!hosts[0].claimed.load(Relaxed));
    }

    #[tokio::test]
    async fn a_new_host_is_offered_to_waiters_and_a_wait_can_time_out() {
        let state = Arc::new(FunctionState::default());
        let empty = set_of(&[]);
        let (w1, waiting, busy) = waits(state.claim(&empty, 10, None, |_| false));
        assert_eq!((waiting, busy, empty.load().hosts.len()), (1, 0, 0));
        let (w2, _, _) = waits(state.claim(&empty, 10, None, |_| false));
        let hosts = [host(0)];
        let grown = set_of(&hosts);
        state.offer(&grown.load());
        let got = w1.wait(Duration::from_secs(30)).await.expect("offered");
        assert!(Arc::ptr_eq(got.host(), &hosts[0]));
        // One host, held: the second waiter gives up.
        assert!(w2.wait(Duration::from_millis(1)).await.is_none());
        drop(got);
        assert_eq!(state.busy(), 0);
    }

    #[test]
    fn a_host_handed_to_a_waiter_that_left_is_released_not_lost() {
        let state = Arc::new(FunctionState::default());
        let hosts = [host(0)];
        let set = set_of(&hosts);
        let (held, _) = claimed(state.claim(&set, 10, None, |_| false));
        let (waiter, _, _) = waits(state.claim(&set, 10, None, |_| false));
        drop(held); // handed to the waiter, which never looks
        assert_eq!(state.busy(), 1);
        drop(waiter);
        assert_eq!(state.busy(), 0);
        assert!(!hosts[0].claimed.load(Relaxed));
        let (_again, _) = claimed(state.claim(&set, 10, None, |_| false));
    }

    #[test]
    fn an_unhealthy_or_retired_host_is_not_handed_on() {
        for retire in [false, true] {
            let state = Arc::new(FunctionState::default());
            let hosts = [host(0)];
            let set = set_of(&hosts);
            let (held, _) = claimed(state.claim(&set, 10, None, |_| false));
            let (waiter, _, _) = waits(state.claim(&set, 10, None, |_| false));
            if retire {
                hosts[0].retired.store(true, Relaxed);
            } else {
                hosts[0].failed_active_hc.store(true, Relaxed);
            }
            drop(held);
            assert_eq!(state.busy(), 0);
            assert!(!hosts[0].claimed.load(Relaxed));
            drop(waiter);
        }
    }

    /// Many threads claim and release one host as fast as they can: never two at once.
    #[test]
    fn concurrent_claims_never_share_a_host() {
        let state = Arc::new(FunctionState::default());
        let hosts = [host(0), host(1)];
        let set = Arc::new(set_of(&hosts));
        let holders: Arc<[AtomicU32; 2]> = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let served = Arc::new(AtomicU32::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                let (state, set, holders, served) =
                    (state.clone(), set.clone(), holders.clone(), served.clone());
                s.spawn(move || {
                    for _ in 0..2000 {
                        if let Claimed::Host(c, i) = state.claim(&set, 100, None, |_| false) {
                            let now = holders[i].fetch_add(1, Relaxed) + 1;
                            assert_eq!(now, 1, "host {i} held twice");
                            std::hint::spin_loop();
                            holders[i].fetch_sub(1, Relaxed);
                            served.fetch_add(1, Relaxed);
                            drop(c);
                        }
                    }
                });
            }
        });
        assert!(served.load(Relaxed) > 0);
        assert_eq!(state.busy(), 0);
    }
}
