//! Files only their owner reads: Sluice's data directory (the store, with every org's
//! records, webhook secrets and secure configurations; the operator token; compiled
//! artifacts) is `0700` and its files `0600`, whatever the process's umask.

use std::io;
use std::path::Path;

/// Creates a folder readable by its owner only (or narrows an existing one to that).
pub fn private_dir(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    Ok(())
}

/// Makes `path` a file readable by its owner only: created empty if missing, narrowed if
/// it exists. (SQLite gives its `-wal` and `-shm` files the database file's mode.)
pub fn private_file(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(())
}
