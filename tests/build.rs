//! Builds every guest from source: the example plugins (`plugins/`) and the
//! test-only guests (`tests/guests/`; those in other languages than Rust in
//! `tests/guests/lang/`), and writes a constant with the path of each
//! component into `$OUT_DIR/guests.rs`. Rust guests are compiled for
//! `wasm32-wasip2`; the others with their languages' tools (`anocast-build`).
//!
//! Guests are built in release mode into `target/guests`, which outlives
//! `OUT_DIR`, so that changes to the host don't rebuild them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anocast_build::{Job, Lang, Tools};

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
        "tests/guests/lang",
        "tests/guests/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let plugins_dir = root.join("plugins");
    let all = anocast_build::plugin_folders(&plugins_dir).expect("reading plugins/");
    // Rust plugins of the `plugins/` workspace are built all at once; any
    // other plugin (a standalone crate too) on its own, below.
    let workspace = std::fs::read_to_string(plugins_dir.join("Cargo.toml")).expect("reading plugins/Cargo.toml");
    let member = |name: &str, lang: Lang| lang == Lang::Rust && workspace.contains(&format!("\"{name}\""));
    let rust: Vec<&String> = all.iter().filter(|(name, lang)| member(name, *lang)).map(|(name, _)| name).collect();
    for plugin in &rust {
        println!("cargo:rerun-if-changed={}", plugins_dir.join(plugin).join("src").display());
        println!("cargo:rerun-if-changed={}", plugins_dir.join(plugin).join("Cargo.toml").display());
    }

    build(&plugins_dir.join("Cargo.toml"), &target_dir, &[]);
    build(&manifest_dir.join("guests").join("Cargo.toml"), &target_dir, &["--examples"]);

    let release = target_dir.join("wasm32-wasip2").join("release");
    let mut consts = String::new();
    for plugin in &rust {
        let path = release.join(format!("{}.wasm", plugin.replace('-', "_")));
        consts.push_str(&constant(plugin, &path));
    }
    // Plugins and test guests in other languages (and standalone Rust
    // crates), built as `cargo xtask plugins` builds them, with the tools it
    // installs.
    let tools = Tools { dir: Some(root.join("target").join("tools")), cargo_target_dir: Some(target_dir.clone()) };
    let lang_guests = manifest_dir.join("guests").join("lang");
    let others = all
        .iter()
        .filter(|(name, lang)| !member(name, *lang))
        .map(|(name, lang)| (plugins_dir.join(name), *lang))
        .chain(
            anocast_build::plugin_folders(&lang_guests)
                .expect("reading tests/guests/lang")
                .into_iter()
                .map(|(name, lang)| (lang_guests.join(name), lang)),
        );
    for (folder, lang) in others {
        println!("cargo:rerun-if-changed={}", folder.display());
        let wit = root.join("wit");
        let out = target_dir.join(lang.name());
        let job = Job { wit: Some(&wit), ..Job::new(&folder, &out) };
        if !job.up_to_date()
            && let Err(err) = anocast_build::build(&job, &tools)
        {
            panic!("{err}\n(`cargo xtask test` and `cargo xtask plugins` install the tools each language needs)");
        }
        consts.push_str(&constant(&job.name, &job.dest()));
    }
    for example in examples(&manifest_dir.join("guests").join("examples")) {
        let path = release.join("examples").join(format!("{}.wasm", example.replace('-', "_")));
        consts.push_str(&constant(&example, &path));
    }
    std::fs::write(out_dir.join("guests.rs"), consts).expect("writing guests.rs");
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
