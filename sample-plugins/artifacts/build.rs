//! Builds every sample plug-in and writes a constant per plug-in holding the path of its
//! component. Tests check that every constant is used by a test.
//!
//! - Rust: each folder of `sample-plugins/` with a `Cargo.toml` (but this one), for
//!   `wasm32-wasip2` with the `plugin` profile, by a nested cargo with its own target
//!   directory, so it never waits on the lock of the build that runs this script.
//! - Python: each `sample-plugins/python/NAME/app.py`, by the Python SDK's build command
//!   (componentize-py) from `target/toolchains/python`; constant `PY_NAME`.
//! - JavaScript: each `sample-plugins/js/NAME/NAME.js`, by the JavaScript SDK's build
//!   command (componentize-js); constant `JS_NAME`.
//!
//! `scripts/setup` installs the Python and JavaScript toolchains.

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
    // The language runtimes build meanwhile, each a process of its own.
    let others = language_samples(root, &target_dir);
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
    for (ident, name, path, mut child) in others {
        let status = child.wait().expect("the build command runs");
        assert!(
            status.success(),
            "building {} failed (run scripts/setup for the toolchains)",
            path.display()
        );
        consts.push_str(&format!(
            "/// The `{name}` component.\npub const {ident}: &str = {:?};\n",
            path.display().to_string()
        ));
        all.push_str(&format!("    ({:?}, {ident}),\n", ident.to_lowercase()));
    }
    all.push_str("];\n");
    fs::write(Path::new(&env::var("OUT_DIR").unwrap()).join("plugins.rs"), consts + &all).unwrap();

    // Folders, not the npm packages under them (thousands of files to stat). A new Rust
    // sample is a new workspace member: it changes Cargo.lock.
    let mut watched =
        vec![root.join("wit"), root.join("sdk/src"), root.join("sdk/Cargo.toml"), root.join("Cargo.lock")];
    watched.extend(
        ["sdk/python/sluice_sdk", "sdk/js/src", "sdk/js/bin", "sample-plugins/python"].map(|p| root.join(p)),
    );
    watched.extend(names.iter().map(|name| samples.join(name)));
    watched.extend(folders(&samples.join("js")).into_iter().map(|(_, dir)| dir));
    for path in watched {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The folders in `dir` (none if it does not exist) but `node_modules`: (name, path).
fn folders(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_dir() && entry.file_name() != "node_modules")
        .map(|entry| (entry.file_name().to_string_lossy().into_owned(), entry.path()))
        .collect();
    found.sort();
    found
}

/// Starts the build of every Python and JavaScript sample: (constant, name, component,
/// the running build).
fn language_samples(root: &Path, target_dir: &Path) -> Vec<(String, String, PathBuf, std::process::Child)> {
    let samples = root.join("sample-plugins");
    let python = root.join("target/toolchains/python/bin");
    let mut started = Vec::new();
    for (language, prefix) in [("python", "PY"), ("js", "JS")] {
        let out = target_dir.join(language);
        fs::create_dir_all(&out).expect("the samples' target folder can be made");
        for (name, dir) in folders(&samples.join(language)) {
            let component = out.join(format!("{name}.wasm"));
            let mut command = match language {
                "python" => {
                    let mut c = Command::new(python.join("sluice-py"));
                    c.arg("build").arg(dir.join("app.py"));
                    c
                }
                _ => {
                    let mut c = Command::new("node");
                    c.arg(root.join("sdk/js/bin/sluice-js.js"))
                        .arg("build")
                        .arg(dir.join(format!("{name}.js")));
                    c
                }
            };
            command.arg("-o").arg(&component).current_dir(root).stdout(std::process::Stdio::null());
            let child = command.spawn().unwrap_or_else(|e| {
                panic!(
                    "cannot start the {language} build of {name} ({e}); run scripts/setup for the toolchains"
                )
            });
            let ident = format!("{prefix}_{}", name.replace('-', "_").to_uppercase());
            started.push((ident, format!("{language}/{name}"), component, child));
        }
    }
    started
}
