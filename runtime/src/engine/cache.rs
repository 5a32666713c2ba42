//! The compiled-artifact cache: plug-ins are compiled once and their native code kept on
//! disk, keyed by the component's SHA-256 and the engine's compatibility hash, so a
//! restart (or a second upload of the same bytes) does not recompile.
//!
//! Only artifacts this cache wrote are ever loaded: each file starts with the SHA-256 of
//! the rest, checked before the bytes reach wasmtime's (unsafe) deserializer, and files
//! are written to a temporary name and renamed, so a crash never leaves half a file.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub(crate) struct ArtifactCache {
    dir: Option<PathBuf>,
    engine_tag: String,
}

/// The hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ArtifactCache {
    /// A cache in `dir` (created if missing), or no cache at all.
    pub fn new(dir: Option<&Path>, engine: &wasmtime::Engine) -> io::Result<Self> {
        if let Some(dir) = dir {
            fs::create_dir_all(dir)?;
        }
        // Two engines may share artifacts only if wasmtime says their settings agree.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ArtifactCache { dir: dir.map(Path::to_path_buf), engine_tag: format!("{:016x}", hasher.finish()) })
    }

    fn path(&self, content_hash: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(format!("{content_hash}-{}.cwasm", self.engine_tag)))
    }

    /// The cached artifact for a component, if present and intact.
    pub fn get(&self, content_hash: &str) -> Option<Vec<u8>> {
        let path = self.path(content_hash)?;
        let mut bytes = fs::read(&path).ok()?;
        if bytes.len() < 32 || Sha256::digest(&bytes[32..]).as_slice() != &bytes[..32] {
            tracing::warn!(path = %path.display(), "discarding a corrupt compiled artifact");
            let _ = fs::remove_file(&path);
            return None;
        }
        bytes.drain(..32);
        Some(bytes)
    }

    /// Stores an artifact; a cache that cannot be written is reported, not fatal.
    pub fn put(&self, content_hash: &str, artifact: &[u8]) -> io::Result<()> {
        let Some(path) = self.path(content_hash) else { return Ok(()) };
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        let mut contents = Sha256::digest(artifact).to_vec();
        contents.extend_from_slice(artifact);
        fs::write(&temporary, contents)?;
        fs::rename(&temporary, &path)
    }
}
