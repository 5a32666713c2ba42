//! The compiled-artifact cache: plug-ins are compiled once and their native code kept on
//! disk, keyed by the component's SHA-256 and the engine's compatibility hash, so a
//! restart (or a second upload of the same bytes) does not recompile.
//!
//! Only artifacts this cache wrote are ever loaded: each file starts with an HMAC-SHA256
//! of the rest under the cache's own key (32 random bytes in `key`, readable by its
//! owner only), checked before the bytes reach wasmtime's (unsafe) deserializer, so a
//! file someone else put there — even one with a matching plain checksum — is never
//! loaded. The folder is opened once as a cap-std `Dir`: every file is named inside it,
//! and no name can reach outside it. Files are written to a temporary name and renamed,
//! so a crash never leaves half a file; the folder is `0700` and its files `0600`.

use std::hash::{Hash, Hasher};
use std::io::{self, Write as _};
use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const KEY_FILE: &str = "key";
const TAG_BYTES: usize = 32;

pub(crate) struct ArtifactCache {
    dir: Option<Dir>,
    key: [u8; 32],
    engine_tag: String,
}

/// The hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    cap_std::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// The cache's key: read from `key`, or made and stored now.
fn key_of(dir: &Dir) -> io::Result<[u8; 32]> {
    if let Ok(bytes) = dir.read(KEY_FILE)
        && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(key);
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| io::Error::other(format!("no random source: {e}")))?;
    dir.open_with(KEY_FILE, &private_file())?.write_all(&key)?;
    // Artifacts signed with a key that is gone can never be loaded again.
    for entry in dir.entries()? {
        let name = entry?.file_name();
        if name.to_string_lossy().ends_with(".cwasm") {
            let _ = dir.remove_file(&name);
        }
    }
    Ok(key)
}

impl ArtifactCache {
    /// A cache in `dir` (created if missing), or no cache at all.
    pub fn new(dir: Option<&Path>, engine: &wasmtime::Engine) -> io::Result<Self> {
        // Two engines may share artifacts only if wasmtime says their settings agree.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_tag = format!("{:016x}", hasher.finish());
        let Some(path) = dir else { return Ok(ArtifactCache { dir: None, key: [0; 32], engine_tag }) };
        sluice_core::files::private_dir(path)?;
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        let key = key_of(&dir)?;
        Ok(ArtifactCache { dir: Some(dir), key, engine_tag })
    }

    /// The file name of a component's artifact: made of hex digits only.
    fn name(&self, content_hash: &str) -> Option<String> {
        content_hash
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then(|| format!("{content_hash}-{}.cwasm", self.engine_tag))
    }

    fn tag(&self, artifact: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(artifact);
        mac
    }

    /// The cached artifact for a component, if present and made by this cache.
    pub fn get(&self, content_hash: &str) -> Option<Vec<u8>> {
        let (dir, name) = (self.dir.as_ref()?, self.name(content_hash)?);
        let mut bytes = dir.read(&name).ok()?;
        let authentic = bytes.len() >= TAG_BYTES
            && self.tag(&bytes[TAG_BYTES..]).verify_slice(&bytes[..TAG_BYTES]).is_ok();
        if !authentic {
            tracing::warn!(artifact = %name, "discarding a compiled artifact this cache did not make");
            let _ = dir.remove_file(&name);
            return None;
        }
        bytes.drain(..TAG_BYTES);
        Some(bytes)
    }

    /// Stores an artifact; a cache that cannot be written is reported, not fatal.
    pub fn put(&self, content_hash: &str, artifact: &[u8]) -> io::Result<()> {
        let (Some(dir), Some(name)) = (self.dir.as_ref(), self.name(content_hash)) else { return Ok(()) };
        let temporary = format!("{name}.tmp{}", std::process::id());
        let mut file = dir.open_with(&temporary, &private_file())?;
        file.write_all(&self.tag(artifact).finalize().into_bytes())?;
        file.write_all(artifact)?;
        file.sync_all()?;
        drop(file);
        dir.rename(&temporary, dir, &name)
    }
}
