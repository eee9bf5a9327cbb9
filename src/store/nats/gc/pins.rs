//! Pins of one master from one node, written together. Every bind pins
//! its master by compare-and-set on the `m.` entry (see the parent
//! module), so binds of the **same content** serialize on that key: with
//! k at once, k − 1 lose each round and try again (measured: 36 concurrent
//! uploads of one 16 px image over 3 nodes, p99 0.39–0.45 s and max
//! 0.72–0.78 s against 0.08 s for distinct images; under load a loser
//! past `PIN_WAIT` answers 503). An adoption wave of one upstream default
//! is exactly that.
//!
//! So a node writes the pins of one master one batch at a time: the first
//! pin asked leads (a task, so a cancelled request does not strand the
//! others), later ones queue; each round takes every queued pin of the
//! same manifest and writes one entry listing all their keys (each with
//! its own basis, the later one when a key repeats; the longest lease).
//! That is the entry the same pins written one after another would leave,
//! so the parent module's argument holds pin by pin: each binder's keys
//! are listed before it writes its record, and each gets the generation
//! the write pinned. Conflicts remain only between nodes.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

use crate::model::{ContentHash, IdentityHash};
use crate::store::nats::NatsStore;
use crate::store::{Manifest, StoreError};

/// One pin waiting for its batch: what it lists, and where its answer (the
/// generation pinned) goes.
pub(in crate::store::nats) struct Waiting {
    manifest: Manifest,
    keys: Vec<(IdentityHash, u64)>,
    hold: u64,
    answer: oneshot::Sender<Result<u64, StoreError>>,
}

/// Masters with a leader writing their pins → the pins queued behind it.
pub(in crate::store::nats) type Pins = std::sync::Mutex<HashMap<ContentHash, VecDeque<Waiting>>>;

/// Takes the next batch of a queue: the pins of the first one's manifest.
fn next_batch(queue: &mut VecDeque<Waiting>) -> Vec<Waiting> {
    let Some(first) = queue.front().map(|w| w.manifest.clone()) else {
        return Vec::new();
    };
    let (same, rest): (Vec<_>, Vec<_>) = queue.drain(..).partition(|w| w.manifest == first);
    queue.extend(rest);
    same
}

/// Removes a master's queue if its leader ends before emptying it (a
/// panic): its queued pins then get an error instead of waiting for ever,
/// and the next pin leads.
struct Leading<'a> {
    pins: &'a Pins,
    hash: ContentHash,
    done: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
            pins.remove(&self.hash);
        }
    }
}

impl NatsStore {
    /// Pin `manifest` listing `keys`, with lease `hold`, in this node's
    /// next batch for that master; the generation pinned.
    pub(super) async fn pin_batched(
        &self,
        manifest: &Manifest,
        keys: &[(IdentityHash, u64)],
        hold: u64,
    ) -> Result<u64, StoreError> {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            manifest: manifest.clone(),
            keys: keys.to_vec(),
            hold,
            answer,
        };
        let lead = {
            let mut pins = self.pins();
            match pins.get_mut(&manifest.hash) {
                Some(queue) => {
                    queue.push_back(waiting);
                    false
                }
                None => {
                    pins.insert(manifest.hash, VecDeque::from([waiting]));
                    true
                }
            }
        };
        if lead {
            tokio::spawn(self.clone().lead_pins(manifest.hash));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(StoreError::Index("a pin batch ended unanswered".into())))
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, HashMap<ContentHash, VecDeque<Waiting>>> {
        self.inner.pins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write `hash`'s queued pins, a batch at a time, until none is left.
    async fn lead_pins(self, hash: ContentHash) {
        let mut leading = Leading {
            pins: &self.inner.pins,
            hash,
            done: false,
        };
        loop {
            let batch = {
                let mut pins = self.pins();
                let batch = pins.get_mut(&hash).map(next_batch).unwrap_or_default();
                if batch.is_empty() {
                    // Under the lock pins queue by: one asked from here on
                    // leads a new batch, none is left behind.
                    pins.remove(&hash);
                    leading.done = true;
                    return;
                }
                batch
            };
            let first = &batch[0];
            let keys: Vec<(IdentityHash, u64)> =
                batch.iter().flat_map(|w| w.keys.iter().copied()).collect();
            let hold = batch.iter().map(|w| w.hold).max().unwrap_or(0);
            let pinned = self.pin_write(&first.manifest, &keys, hold).await;
            for w in batch {
                let _ = w.answer.send(pinned.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::nats::gc::tests::manifest;

    fn waiting(m: Manifest, key: u8) -> Waiting {
        Waiting {
            manifest: m,
            keys: vec![(IdentityHash::Md5([key; 16]), u64::from(key))],
            hold: 0,
            answer: oneshot::channel().0,
        }
    }

    #[test]
    fn a_batch_is_the_queued_pins_of_the_first_ones_manifest_in_order() {
        let a = manifest();
        let b = Manifest {
            salted: true,
            ..manifest()
        };
        let mut q = VecDeque::from([
            waiting(a.clone(), 1),
            waiting(b.clone(), 2),
            waiting(a.clone(), 3),
            waiting(b.clone(), 4),
        ]);
        let keys = |v: &[Waiting]| v.iter().map(|w| w.keys[0].1).collect::<Vec<_>>();
        let first = next_batch(&mut q);
        assert_eq!(keys(&first), vec![1, 3]);
        assert!(first.iter().all(|w| w.manifest == a));
        let second = next_batch(&mut q);
        assert_eq!(keys(&second), vec![2, 4]);
        assert!(q.is_empty() && next_batch(&mut q).is_empty());
    }
}
