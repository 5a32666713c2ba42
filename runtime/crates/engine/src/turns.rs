//! Turns per tenant: a fair (first come, first served) async semaphore for each key,
//! made at its first use, so one tenant's many callers queue behind each other while
//! every other tenant has turns of its own. Used for record calls, compilations and
//! request commits.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Turns<K> {
    each: usize,
    by_key: Mutex<HashMap<K, Arc<Semaphore>>>,
}

impl<K: Hash + Eq + Clone> Turns<K> {
    /// `each` turns for every key.
    pub fn new(each: usize) -> Self {
        Turns { each, by_key: Mutex::default() }
    }

    /// `key`'s turns.
    pub fn of(&self, key: &K) -> Arc<Semaphore> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up first: `entry` would clone the key (an org's name) at every call.
        if let Some(turns) = by_key.get(key) {
            return turns.clone();
        }
        by_key.entry(key.clone()).or_insert_with(|| Arc::new(Semaphore::new(self.each))).clone()
    }

    /// Waits for one of `key`'s turns; `None` only if the turns were closed.
    pub async fn take(&self, key: &K) -> Option<OwnedSemaphorePermit> {
        self.of(key).acquire_owned().await.ok()
    }
}
