//! Paths of the sample plug-in components, built by this crate's build script.
//!
//! ```
//! let echo = std::fs::read(sluice_sample_plugins::ECHO).unwrap();
//! assert!(echo.starts_with(b"\0asm"));
//! ```

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
