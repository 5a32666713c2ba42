//! The CPU time this process's threads spent, by thread name, as the kernel's scheduler
//! counted it (Linux's `/proc/self/task/*/schedstat`, nanoseconds on a core). A bench
//! divides it by the jobs it ran to say which of the node's threads a job's cost fell
//! on: a figure that two cores shared with everything else blur far less than a rate.
//! Elsewhere (or without the scheduler's statistics) a snapshot is empty.

use std::collections::{BTreeMap, HashMap};

/// Each live thread's name and CPU time so far, by thread id.
pub struct Snapshot(HashMap<u32, (String, u64)>);

impl Snapshot {
    pub fn now() -> Snapshot {
        let mut threads = HashMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Snapshot(threads) };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
            let path = task.path();
            let (Ok(name), Ok(stat)) =
                (std::fs::read_to_string(path.join("comm")), std::fs::read_to_string(path.join("schedstat")))
            else {
                continue;
            };
            if let Some(on_cpu_ns) = stat.split_whitespace().next().and_then(|ns| ns.parse().ok()) {
                threads.insert(tid, (group_of(name.trim()), on_cpu_ns));
            }
        }
        Snapshot(threads)
    }

    /// The CPU time, in nanoseconds, each group of threads spent since `before` (a thread
    /// started meanwhile counts from zero; one that ended meanwhile is not counted).
    pub fn since(&self, before: &Snapshot) -> BTreeMap<String, u64> {
        let mut spent = BTreeMap::new();
        for (tid, (name, now)) in &self.0 {
            let then = before.0.get(tid).filter(|(was, _)| was == name).map_or(0, |(_, ns)| *ns);
            *spent.entry(name.clone()).or_default() += now.saturating_sub(then);
        }
        spent
    }
}

/// A thread's group: its name without a trailing `-number` (`sluice-compile-3`), as the
/// kernel keeps it (15 bytes: `sluice-compile-12` reads `sluice-compile-`).
fn group_of(name: &str) -> String {
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    base.strip_suffix('-').unwrap_or(name).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_threads_count_as_one_group() {
        assert_eq!(group_of("sluice-compile-3"), "sluice-compile");
        assert_eq!(group_of("sluice-writer"), "sluice-writer");
        assert_eq!(group_of("sluice-compile-"), "sluice-compile");
        assert_eq!(group_of("tokio-runtime-w"), "tokio-runtime-w");
        assert_eq!(group_of("x86"), "x86");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_busy_thread_is_charged_under_its_name() {
        let before = Snapshot::now();
        let charged = std::thread::Builder::new()
            .name("cpu-probe-1".into())
            .spawn(move || {
                // Spins until the kernel has charged it 5 ms (however long a loaded
                // machine takes to give it that); gives up after 10 s.
                let started = std::time::Instant::now();
                let mut x = 0u64;
                loop {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                    let spent = Snapshot::now().since(&before);
                    let probe = spent.get("cpu-probe").copied().unwrap_or(0);
                    if probe >= 5_000_000 || started.elapsed() > std::time::Duration::from_secs(10) {
                        return probe;
                    }
                }
            })
            .expect("a thread")
            .join()
            .expect("the probe");
        assert!(charged >= 5_000_000, "charged {charged} ns");
    }
}
