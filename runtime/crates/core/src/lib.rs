//! Sluice's vocabulary, shared by the service, the engine and every store backend:
//! ids, lanes, statuses and quotas of jobs ([`jobs`]); records, their values, filters
//! and limits ([`records`], [`limits`]); what a run is registered as and what it cost
//! ([`run`]); and private files ([`files`]). No database and no WebAssembly here.

pub mod files;
pub mod jobs;
pub mod limits;
pub mod records;
pub mod run;

/// A new id for a record or a correlation: a UUID of version 7, which begins with the
/// time it was made, so that ids made one after the other sort together. Stores keep
/// these ids in b-tree indexes (records by id, jobs by correlation): a random (version
/// 4) id lands on a random page of a large index, so a batch of a thousand events
/// rewrote about a thousand pages of it, where ordered ids append to the last few.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    /// Ids made one after the other sort in that order as the stores compare them (as
    /// text), so that an index of them is appended to.
    #[test]
    fn new_ids_sort_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..10_000).map(|_| super::new_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
