//! Builds every sample plug-in (each folder of `sample-plugins/` but this one) for
//! `wasm32-wasip2` with the `plugin` profile, and writes a constant per plug-in holding
//! the path of its component. Tests check that every constant is used by a test.
//!
//! The guests are built by a nested cargo with its own target directory, so it never
//! waits on the lock of the build that runs this script.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let here = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let samples = here.parent().expect("artifacts lives in sample-plugins/");
    let root = samples.parent().expect("sample-plugins lives in the workspace root");
    let target_dir = root.join("target").join("sample-plugins");

    let mut names: Vec<String> = fs::read_dir(samples)
        .expect("sample-plugins/ is readable")
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("Cargo.toml").exists())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "artifacts")
        .collect();
    names.sort();

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(root)
        .args(["build", "--profile", "plugin", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir);
    for name in &names {
        build.args(["-p", name]);
    }
    // The outer build's settings (clippy as a wrapper, host flags) are not the guests'.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
    ] {
        build.env_remove(var);
    }
    let status = build.status().expect("cargo can be started");
    assert!(
        status.success(),
        "building the sample plug-ins failed; is the target installed? (rustup target add wasm32-wasip2)"
    );

    let out_dir = target_dir.join("wasm32-wasip2").join("plugin");
    let mut consts = String::new();
    let mut all = String::from(
        "/// Every sample plug-in: (crate name, component path).\npub const ALL: &[(&str, &str)] = &[\n",
    );
    for name in &names {
        let path = out_dir.join(format!("{}.wasm", name.replace('-', "_")));
        assert!(path.exists(), "{} was not built", path.display());
        let ident = name.replace('-', "_").to_uppercase();
        consts.push_str(&format!(
            "/// The `{name}` component.\npub const {ident}: &str = {:?};\n",
            path.display().to_string()
        ));
        all.push_str(&format!("    ({name:?}, {ident}),\n"));
    }
    all.push_str("];\n");
    fs::write(Path::new(&env::var("OUT_DIR").unwrap()).join("plugins.rs"), consts + &all).unwrap();

    for watched in ["sdk", "wit", "sample-plugins"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
}
