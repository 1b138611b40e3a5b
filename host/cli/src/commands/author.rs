//! The plugin author's commands: `anocast new` (scaffold a plugin folder in
//! any supported language) and `anocast build` (build a plugin folder into a
//! component), both by way of the `anocast-build` crate.

use std::path::{Path, PathBuf};

use anocast_build::scaffold::{self, Sdk};
use anocast_build::{Job, Lang, Tools};
use anyhow::{Context, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name: lowercase letters, digits, '-' and '_', starting
    /// with a letter. It names the folder, the plugin and its topic
    /// (`NAME.hello`).
    name: String,
    /// The language: rust, python, js or c.
    #[arg(long, short, value_name = "LANG", value_parser = Lang::parse)]
    lang: Lang,
    /// The folder to create the plugin folder in [default: the current one].
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Rust only: the `guest-sdk` folder of an anocast checkout to depend
    /// on. By default, one found in DIR or a folder above it; else the
    /// project's git repository.
    #[arg(long, value_name = "PATH")]
    sdk: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The plugin folder (holding Cargo.toml, app.py, app.js or plugin.c).
    #[arg(default_value = ".")]
    folder: PathBuf,
    /// Where to write `<name>.wasm` [default: the plugin folder].
    #[arg(long, short, value_name = "DIR")]
    out: Option<PathBuf>,
    /// A folder the language tools were installed into (as by `cargo xtask
    /// plugins`: `target/tools`); tools not found there are looked up on PATH.
    #[arg(long, value_name = "DIR", env = "ANOCAST_TOOLS")]
    tools: Option<PathBuf>,
}

/// `anocast new`.
pub fn new(args: NewArgs) -> anyhow::Result<()> {
    scaffold::valid_name(&args.name).map_err(anyhow::Error::msg)?;
    if !args.dir.is_dir() {
        bail!("{} is not a folder", args.dir.display());
    }
    let folder = args.dir.join(&args.name);
    if folder.exists() {
        bail!("{} already exists; pick another name or remove it", folder.display());
    }
    let sdk = match (&args.sdk, args.lang) {
        (Some(path), _) => {
            if !path.join("Cargo.toml").is_file() {
                bail!(
                    "--sdk {}: no Cargo.toml there (expected the guest-sdk folder of an anocast checkout)",
                    path.display()
                );
            }
            Sdk::Path(std::path::absolute(path)?)
        }
        (None, Lang::Rust) => find_sdk(&args.dir)?,
        (None, _) => Sdk::Git(REPOSITORY.into()),
    };
    let files = scaffold::files(&args.name, args.lang, &sdk);
    for (path, text) in &files {
        let path = folder.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "created {} ({} plugin, {} files): it answers the topic {}.hello",
        folder.display(),
        args.lang,
        files.len(),
        args.name
    );
    println!("build it with: anocast build {} -o {}", folder.display(), folder.display());
    if let (Sdk::Git(url), Lang::Rust) = (&sdk, args.lang) {
        println!("(anocast-sdk comes from {url}; pass --sdk PATH to use a checkout's guest-sdk)");
    }
    Ok(())
}

/// The project's repository, for plugins made outside a checkout.
const REPOSITORY: &str = "https://github.com/anocast/anocast";

/// A `guest-sdk` in `dir` or above it, relative to the new plugin folder
/// (`dir/NAME`); else the git repository.
fn find_sdk(dir: &Path) -> anyhow::Result<Sdk> {
    let dir = std::fs::canonicalize(dir)?;
    for (up, ancestor) in dir.ancestors().enumerate() {
        if ancestor.join("guest-sdk").join("Cargo.toml").is_file() {
            // From dir/NAME: one `..` for NAME, one per level climbed.
            let mut relative = PathBuf::new();
            for _ in 0..=up {
                relative.push("..");
            }
            return Ok(Sdk::Path(relative.join("guest-sdk")));
        }
    }
    Ok(Sdk::Git(REPOSITORY.into()))
}

/// `anocast build`.
pub fn build(args: BuildArgs) -> anyhow::Result<()> {
    let folder = std::fs::canonicalize(&args.folder)
        .with_context(|| format!("cannot open the plugin folder {}", args.folder.display()))?;
    let out = args.out.clone().unwrap_or_else(|| folder.clone());
    let lang = Lang::detect(&folder).with_context(|| {
        format!("{} is not a plugin folder (no Cargo.toml, app.py, app.js or plugin.c in it)", folder.display())
    })?;
    let tools = Tools { dir: args.tools, cargo_target_dir: None };
    let job = Job::new(&folder, &out);
    eprintln!("building {} ({lang}) ...", folder.display());
    let started = std::time::Instant::now();
    let dest = anocast_build::build(&job, &tools)?;
    let size = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
    println!("{} ({} KiB, {:.1}s)", dest.display(), size / 1024, started.elapsed().as_secs_f64());
    Ok(())
}
