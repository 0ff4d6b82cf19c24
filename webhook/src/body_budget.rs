//! How much of AdmissionReview bodies the webhook holds at once, shared fairly between clients.
//!
//! Each request reserves its `Content-Length` (or the largest body, when it declares none) before
//! reading it, so bodies in flight never hold more than the budget. A FIFO semaphore made a
//! review of a few KiB wait behind slow clients' reservations of 4 MiB each until their body
//! deadline (measured: 4.5 s reviews under 1,000 trickled bodies). Here, when the budget is full,
//! a client that holds much less than the one holding most makes room by ending that client's
//! oldest read (it gets 503 and may try again), as the connection caps do
//! ([`pod_identity_runtime::serve`]): the API server, one client with small bodies, is never shut
//! out by clients with many. "Much less" is at least twice the request behind, so clients of
//! about equal share never take turns evicting each other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// The shared budget.
#[derive(Debug)]
pub struct BodyBudget {
    total: usize,
    state: Mutex<State>,
    /// Woken whenever bytes are released.
    freed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes reserved, evicted reservations included until they are dropped.
    held: usize,
    /// Bytes of reservations told to end and not yet dropped (room on its way).
    leaving: usize,
    next_id: u64,
    by_client: HashMap<IpAddr, Vec<Held>>,
}

#[derive(Debug)]
struct Held {
    id: u64,
    bytes: usize,
    evict: Arc<Notify>,
    leaving: bool,
}

/// Room for one body; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    client: IpAddr,
    id: u64,
    evict: Arc<Notify>,
}

impl Reservation {
    /// Resolves when a poorer client needs the room: stop reading and answer 503.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        {
            let mut state = self.budget.lock();
            let client = self.client;
            if let Some(list) = state.by_client.get_mut(&client)
                && let Some(at) = list.iter().position(|h| h.id == self.id)
            {
                let gone = list.remove(at);
                if list.is_empty() {
                    state.by_client.remove(&client);
                }
                state.held -= gone.bytes;
                if gone.leaving {
                    state.leaving -= gone.bytes;
                }
            }
        }
        self.budget.freed.notify_waiters();
    }
}

impl BodyBudget {
    pub fn new(total: usize) -> Arc<Self> {
        Arc::new(Self {
            total: total.max(1),
            state: Mutex::new(State::default()),
            freed: Notify::new(),
        })
    }

    /// Bytes reserved now (for tests and metrics).
    pub fn held(&self) -> usize {
        self.lock().held
    }

    /// Reserve `bytes` (at most the whole budget) for a body from `client`, waiting for room;
    /// the caller bounds the wait with its deadline.
    pub async fn reserve(self: &Arc<Self>, client: IpAddr, bytes: usize) -> Reservation {
        let client = client.to_canonical();
        let bytes = bytes.clamp(1, self.total);
        loop {
            // Registered before looking, so a release between the look and the wait is not lost.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(reservation) = self.try_reserve(client, bytes) {
                return reservation;
            }
            freed.await;
        }
    }

    fn try_reserve(self: &Arc<Self>, client: IpAddr, bytes: usize) -> Option<Reservation> {
        let mut state = self.lock();
        if state.held + bytes <= self.total {
            let id = state.next_id;
            state.next_id += 1;
            state.held += bytes;
            let evict = Arc::new(Notify::new());
            state.by_client.entry(client).or_default().push(Held {
                id,
                bytes,
                evict: evict.clone(),
                leaving: false,
            });
            return Some(Reservation {
                budget: self.clone(),
                client,
                id,
                evict,
            });
        }
        // Room already on its way from reads told to end: wait for it.
        if state.held - state.leaving + bytes <= self.total {
            return None;
        }
        let staying =
            |list: &[Held]| -> usize { list.iter().filter(|h| !h.leaving).map(|h| h.bytes).sum() };
        let own = state.by_client.get(&client).map_or(0, |l| staying(l));
        let richest = state
            .by_client
            .iter()
            .filter(|(ip, _)| **ip != client)
            .map(|(ip, list)| (*ip, staying(list)))
            .max_by_key(|&(_, held)| held)
            .filter(|&(_, held)| held >= own + 2 * bytes)?;
        let list = state.by_client.get_mut(&richest.0)?;
        let oldest = list.iter_mut().find(|h| !h.leaving)?;
        oldest.leaving = true;
        let freed = oldest.bytes;
        // A stored permit: the read ends even if it has not started waiting yet.
        oldest.evict.notify_one();
        state.leaving += freed;
        tracing::debug!(
            client.addr = %richest.0,
            bytes = freed,
            for_client = %client,
            "admission body budget full: ending the oldest read of the client holding most"
        );
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    const MIB: usize = 1024 * 1024;

    #[tokio::test]
    async fn reservations_fit_the_budget_and_give_their_room_back() {
        let budget = BodyBudget::new(8 * MIB);
        let a = budget.reserve(ip(2), 4 * MIB).await;
        let b = budget.reserve(ip(3), 4 * MIB).await;
        assert_eq!(budget.held(), 8 * MIB);
        // Equal shares: a third client of the same size waits, evicting no one.
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), budget.reserve(ip(4), 4 * MIB)).await;
        assert!(
            waiting.is_err(),
            "no room and no one richer by twice the ask"
        );
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(1), budget.reserve(ip(4), 4 * MIB))
            .await
            .expect("room given back");
        drop((b, c));
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_small_body_ends_the_oldest_read_of_the_client_holding_most() {
        let budget = BodyBudget::new(8 * MIB);
        let old = budget.reserve(ip(2), 4 * MIB).await;
        let new = budget.reserve(ip(2), 4 * MIB).await;
        let small = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(ip(9), 16 * 1024).await })
        };
        // The oldest read of the flooding client is told to end...
        tokio::time::timeout(Duration::from_secs(1), old.evicted())
            .await
            .expect("the oldest read is ended");
        let not_newest = tokio::time::timeout(Duration::from_millis(20), new.evicted()).await;
        assert!(not_newest.is_err(), "one read makes room, not two");
        // ...and once it has given its room back, the small body gets in.
        drop(old);
        let small = tokio::time::timeout(Duration::from_secs(1), small)
            .await
            .expect("the small body is served")
            .unwrap();
        assert_eq!(budget.held(), 4 * MIB + 16 * 1024);
        drop((small, new));
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_body_larger_than_the_budget_asks_for_all_of_it() {
        let budget = BodyBudget::new(MIB);
        let all = budget.reserve(ip(2), 10 * MIB).await;
        assert_eq!(budget.held(), MIB);
        drop(all);
        assert_eq!(budget.held(), 0);
    }
}
