//! Installing the tools plugins in other languages than Rust are built with,
//! once, into `target/tools` (nothing outside the checkout, except the C
//! tool chain's Debian packages):
//! - Python: componentize-py, with pip `--target`;
//! - JavaScript: componentize-js, with npm `--prefix`;
//! - C: Debian's clang, lld, wasi-libc and wasm32 compiler runtime, with
//!   apt-get where missing.
//!
//! Each works offline once installed. A missing installer (python3 and pip,
//! node and npm) is one error line naming what to install.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use anocast_build::{COMPONENTIZE_JS, COMPONENTIZE_PY, Lang, Tools};
use anyhow::bail;

use crate::{have, relative, root, run, step};

/// The folder the tools go into.
pub fn dir() -> PathBuf {
    root().join("target").join("tools")
}

/// Installs what building plugins in `languages` needs, where missing.
pub fn ensure(languages: &BTreeSet<Lang>) -> anyhow::Result<Tools> {
    let tools = Tools { dir: Some(dir()), cargo_target_dir: Some(crate::guest_target_dir()) };
    for lang in languages {
        match lang {
            Lang::Rust => {}
            Lang::Python => componentize_py(&tools)?,
            Lang::JavaScript => componentize_js(&tools)?,
            Lang::C => c_tool_chain()?,
        }
    }
    Ok(tools)
}

fn componentize_py(tools: &Tools) -> anyhow::Result<()> {
    let Some(dir) = tools.componentize_py_dir() else { return Ok(()) };
    let marker = dir.join(format!(".installed-{COMPONENTIZE_PY}"));
    if marker.is_file() {
        return Ok(());
    }
    let pip_works = Command::new("python3").args(["-m", "pip", "--version"]).output().is_ok_and(|o| o.status.success());
    if !pip_works {
        bail!(
            "Python plugins are built with {COMPONENTIZE_PY}, which needs python3 and pip to install \
             (Debian: apt-get install python3 python3-pip)"
        );
    }
    step(&format!("installing {COMPONENTIZE_PY} into {} (pip, once)", relative(&dir)));
    let pip = |extra: &[&str]| {
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            "--target",
        ])
        .arg(&dir)
        .arg(COMPONENTIZE_PY)
        .args(extra);
        cmd
    };
    if !pip(&[]).status().is_ok_and(|s| s.success()) {
        // Debian marks its Python as externally managed (PEP 668); the
        // files go to target/tools only, so overriding that is safe.
        run(&mut pip(&["--break-system-packages"]), "pip install componentize-py")?;
    }
    std::fs::write(&marker, b"")?;
    Ok(())
}

fn componentize_js(tools: &Tools) -> anyhow::Result<()> {
    let Some(dir) = tools.componentize_js_dir() else { return Ok(()) };
    let marker = dir.join(format!(".installed-{}", COMPONENTIZE_JS.replace('/', "+")));
    if marker.is_file() {
        return Ok(());
    }
    if !have("node") || !have("npm") {
        bail!(
            "JavaScript plugins are built with {COMPONENTIZE_JS}, which needs Node.js and npm to install \
             (Debian: apt-get install nodejs npm)"
        );
    }
    step(&format!("installing {COMPONENTIZE_JS} into {} (npm, once)", relative(&dir)));
    std::fs::create_dir_all(&dir)?;
    run(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(&dir)
            .arg(COMPONENTIZE_JS),
        "npm install componentize-js",
    )?;
    std::fs::write(&marker, b"")?;
    Ok(())
}

/// Debian's C tool chain for wasm32-wasi: the packages not yet installed.
fn c_tool_chain() -> anyhow::Result<()> {
    let missing: Vec<&str> = anocast_build::C_PACKAGES.into_iter().filter(|package| !installed(package)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    crate::apt_install(&missing)
}

/// Whether the Debian package is installed (without dpkg: whether clang is
/// on PATH, the best guess left).
fn installed(package: &str) -> bool {
    match Command::new("dpkg-query").args(["-W", "-f=${Status}", package]).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).ends_with("install ok installed"),
        Err(_) => have("clang"),
    }
}
