//! Checkpoints of the write-ahead log, on a thread of their own.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the log past 1,000
//! pages: that commit copies the log into the database file and syncs the file before
//! it returns. With one writer committing every tenant's work in groups, whichever
//! tenant's request rode in that group waited for every tenant's pages to be copied
//! (measured during a bulk import: a fifth of the writer's time was checkpoints). Here
//! the writer only notes the log's size after each commit (the WAL hook, which also
//! turns the automatic checkpoint off); past [`CHECKPOINT_PAGES`] it wakes this thread,
//! which runs a PASSIVE checkpoint on its own connection beside the next commits. A
//! PASSIVE checkpoint takes no lock a writer needs and copies only the pages no reader
//! still needs; what it leaves, the next one copies.

use std::cell::Cell;
use std::ffi::c_int;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::hooks::Wal;

thread_local! {
    /// Pages in the log after the last commit made on this thread (set by the WAL hook,
    /// which SQLite calls on the committing thread).
    static LOG_PAGES: Cell<c_int> = const { Cell::new(0) };
}

/// Log size, in pages, past which a checkpoint runs: SQLite's own default threshold.
const CHECKPOINT_PAGES: c_int = 1_000;

fn note_log_size(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    LOG_PAGES.with(|noted| noted.set(pages));
    Ok(())
}

/// The checkpoint thread of one store; stopping it (on drop) finishes a checkpoint
/// already asked for.
pub(crate) struct Checkpointer {
    wake: Option<mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Takes `writer`'s checkpoints over, on a new thread with its own connection to the
    /// database at `path`.
    pub(crate) fn start(path: &Path, writer: &Connection) -> rusqlite::Result<std::io::Result<Self>> {
        let connection = Connection::open(path)?;
        writer.wal_hook(Some(note_log_size));
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new().name("sluice-checkpoint".into()).spawn(move || {
            while woken.recv().is_ok() {
                // A checkpoint that fails (a disk error) leaves the log to the next one,
                // after the next commit; the commits themselves are durable in the log.
                let _ = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        });
        Ok(thread.map(|thread| Checkpointer { wake: Some(wake), thread: Some(thread) }))
    }

    /// Called on the writer's thread after it wrote: wakes the checkpoint thread if the
    /// log has grown past the threshold (never waits for it).
    pub(crate) fn after_write(&self) {
        let pages = LOG_PAGES.with(|noted| noted.replace(0));
        if pages >= CHECKPOINT_PAGES
            && let Some(wake) = &self.wake
        {
            // Full: a checkpoint is already asked for, and will copy these pages too.
            let _ = wake.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.wake.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_pages(path: &Path) -> u64 {
        std::fs::metadata(path).expect("the database file").len() / 4096
    }

    #[test]
    fn the_writer_leaves_the_log_to_the_checkpoint_thread_which_copies_it() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("log.db");
        let writer = Connection::open(&path).expect("a database");
        writer.pragma_update(None, "journal_mode", "WAL").expect("WAL mode");
        writer.execute_batch("CREATE TABLE filler (bytes BLOB)").expect("a table");
        let checkpointer = Checkpointer::start(&path, &writer).expect("a connection").expect("a thread");

        // Past SQLite's automatic threshold: the commit itself copies nothing.
        let tx = writer.unchecked_transaction().expect("a transaction");
        for _ in 0..1_500 {
            tx.execute("INSERT INTO filler VALUES (zeroblob(4000))", []).expect("a row");
        }
        tx.commit().expect("a commit");
        assert!(file_pages(&path) < 10, "the commit checkpointed: {} pages", file_pages(&path));

        // The writer's note wakes the thread; stopping it finishes that checkpoint.
        checkpointer.after_write();
        drop(checkpointer);
        assert!(file_pages(&path) >= 1_500, "not checkpointed: {} pages", file_pages(&path));
    }
}
