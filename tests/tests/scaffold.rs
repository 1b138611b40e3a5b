//! `anocast new` and `anocast build` as a plugin author uses them: a new
//! plugin in each language builds as it is and answers a dispatch; bad
//! names, folders and missing tools get one clear line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_anocast-cli-under-test");

/// The checkout's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn anocast(args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        // The tools `cargo xtask test` installed, and the guests' target
        // folder, so that a Rust plugin's dependencies are compiled once.
        .env("ANOCAST_TOOLS", root().join("target").join("tools"))
        .env("CARGO_TARGET_DIR", root().join("target").join("guests"))
        .output()
        .expect("running anocast")
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Scaffolds `name` in `lang`, builds it, and dispatches `name.hello` to it.
fn new_build_and_run(lang: &str) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let name = format!("hello-{lang}");
    let sdk = root().join("guest-sdk");
    let mut args = vec!["new", &name, "--lang", lang, "--dir", path(work.path())];
    if lang == "rust" {
        args.extend(["--sdk", path(&sdk)]);
    }
    let said = ok(&anocast(&args));
    assert!(said.contains(&format!("{name}.hello")), "{said}");
    let folder = work.path().join(&name);
    let serve = work.path().join("serve");
    let said = ok(&anocast(&["build", path(&folder), "-o", path(&serve)]));
    assert!(said.contains(&format!("{name}.wasm")), "{said}");

    let out = anocast(&["run", "--plugins", path(&serve), &format!("{name}.hello"), "world"]);
    let json: Value = serde_json::from_str(&ok(&out))?;
    assert_eq!(json["status"], "complete", "{json}");
    assert_eq!(json["partials"][0]["worker"], format!("local/{name}@0.1.0"), "{json}");
    assert_eq!(json["partials"][0]["payload"], "hello, world", "{json}");
    Ok(())
}

#[test]
fn a_new_rust_plugin_builds_and_answers_as_it_is() -> anyhow::Result<()> {
    new_build_and_run("rust")
}

#[test]
fn a_new_python_plugin_builds_and_answers_as_it_is() -> anyhow::Result<()> {
    new_build_and_run("python")
}

#[test]
fn a_new_javascript_plugin_builds_and_answers_as_it_is() -> anyhow::Result<()> {
    new_build_and_run("js")
}

#[test]
fn a_new_c_plugin_builds_and_answers_as_it_is() -> anyhow::Result<()> {
    new_build_and_run("c")
}

/// Exit status 1 and one stderr line containing `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("building ")).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{stderr}");
}

#[test]
fn bad_names_languages_folders_and_missing_tools_get_one_line() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let dir = path(work.path());
    assert_one_line_error(&anocast(&["new", "Shout", "--lang", "python", "--dir", dir]), "invalid plugin name");
    let out = anocast(&["new", "shout", "--lang", "cobol", "--dir", dir]);
    assert_eq!(out.status.code(), Some(2), "bad usage");
    assert!(String::from_utf8_lossy(&out.stderr).contains("rust, python, js or c"));
    assert_one_line_error(&anocast(&["new", "shout", "--lang", "js", "--dir", "/no/such/dir"]), "is not a folder");
    ok(&anocast(&["new", "shout", "--lang", "js", "--dir", dir]));
    assert_one_line_error(&anocast(&["new", "shout", "--lang", "c", "--dir", dir]), "already exists");

    std::fs::create_dir(work.path().join("empty"))?;
    assert_one_line_error(&anocast(&["build", path(&work.path().join("empty"))]), "not a plugin folder");

    // No tools folder and nothing on PATH: the error names the tool and how
    // to install it.
    let out = Command::new(EXE)
        .args(["build", path(&work.path().join("shout"))])
        .env("PATH", "/nonexistent")
        .env_remove("ANOCAST_TOOLS")
        .output()?;
    assert_one_line_error(&out, "componentize-js is not installed: `npm install @bytecodealliance/componentize-js@");
    Ok(())
}
