//! Builds every guest from source for `wasm32-wasip2`: the example plugins
//! (`plugins/`) and the test-only guests (`tests/guests/`), and writes a
//! constant with the path of each component into `$OUT_DIR/guests.rs`.
//!
//! Guests are built in release mode into `target/guests`, which outlives
//! `OUT_DIR`, so that changes to the host don't rebuild them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("tests/ has a parent").to_owned();
    let target_dir = root.join("target").join("guests");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    for watched in [
        "wit",
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "plugins/Cargo.toml",
        "tests/guests/src",
        "tests/guests/examples",
        "tests/guests/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let plugins_dir = root.join("plugins");
    let plugins = plugin_folders(&plugins_dir, "Cargo.toml");
    for plugin in &plugins {
        println!("cargo:rerun-if-changed={}", plugins_dir.join(plugin).join("src").display());
        println!("cargo:rerun-if-changed={}", plugins_dir.join(plugin).join("Cargo.toml").display());
    }

    build(&plugins_dir.join("Cargo.toml"), &target_dir, &[]);
    build(&manifest_dir.join("guests").join("Cargo.toml"), &target_dir, &["--examples"]);

    let release = target_dir.join("wasm32-wasip2").join("release");
    let mut consts = String::new();
    for plugin in &plugins {
        let path = release.join(format!("{}.wasm", plugin.replace('-', "_")));
        consts.push_str(&constant(plugin, &path));
    }
    for plugin in plugin_folders(&plugins_dir, "app.py") {
        println!("cargo:rerun-if-changed={}", plugins_dir.join(&plugin).display());
        let path = build_python(&root, &plugin, &target_dir.join("python"));
        consts.push_str(&constant(&plugin, &path));
    }
    for example in examples(&manifest_dir.join("guests").join("examples")) {
        let path = release.join("examples").join(format!("{}.wasm", example.replace('-', "_")));
        consts.push_str(&constant(&example, &path));
    }
    std::fs::write(out_dir.join("guests.rs"), consts).expect("writing guests.rs");
}

/// Folders of `plugins/` that hold a file named `marker` (`Cargo.toml`:
/// a Rust plugin, `app.py`: a Python one), sorted.
fn plugin_folders(dir: &Path, marker: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("reading plugins/")
        .filter_map(Result::ok)
        .filter(|e| e.path().join(marker).is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Builds the Python plugin `name` with componentize-py (installed into
/// `target/tools` by `cargo xtask plugins`), unless the component is newer
/// than its sources and the WIT contract.
fn build_python(root: &Path, name: &str, out: &Path) -> PathBuf {
    let tool = root.join("target").join("tools").join("componentize-py");
    assert!(
        tool.join("componentize_py").is_dir(),
        "plugins/{name} is a Python plugin, built with componentize-py: run `cargo xtask plugins` (or `cargo xtask test`), which installs it into {}",
        tool.display()
    );
    std::fs::create_dir_all(out).expect("creating the Python plugins' folder");
    let dest = out.join(format!("{name}.wasm"));
    let partial = out.join(format!(".{name}.wasm.partial"));
    let source = root.join("plugins").join(name);
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let newest_source = std::fs::read_dir(&source)
        .expect("reading a Python plugin's folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .chain([root.join("wit").join("worker.wit")])
        .filter_map(|p| modified(&p))
        .max();
    if modified(&dest).is_some_and(|built| newest_source.is_some_and(|source| built > source)) {
        return dest;
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
        ])
        .env("PYTHONPATH", &tool)
        .arg("-d")
        .arg(root.join("wit"))
        .args(["-w", "worker", "componentize", "-p"])
        .arg(&source)
        .arg("app")
        .arg("-o")
        .arg(&partial)
        .output()
        .unwrap_or_else(|e| panic!("running componentize-py for plugins/{name}: {e}"));
    assert!(
        output.status.success(),
        "componentize-py failed on plugins/{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, &dest).expect("moving the built Python plugin into place");
    dest
}

/// The test guests: one example file each.
fn examples(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("reading tests/guests/examples")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".rs").map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn constant(name: &str, path: &Path) -> String {
    assert!(path.is_file(), "guest {name} was not built at {}", path.display());
    format!(
        "/// Path of the `{name}` component.\npub const {}: &str = {:?};\n",
        name.to_uppercase().replace('-', "_"),
        path.display().to_string()
    )
}

fn build(manifest: &Path, target_dir: &Path, extra: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .args(extra);
    // What the outer build set for the host must not leak into the guests'.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("running cargo for {}: {e}", manifest.display()));
    assert!(
        status.success(),
        "building the guests of {} failed; is the wasm32-wasip2 target installed? (`rustup target add wasm32-wasip2`, or run `cargo xtask test`)",
        manifest.display()
    );
}
