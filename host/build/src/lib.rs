//! `anocast-build`: turning a plugin folder, whatever its language, into a
//! component for the `anocast:worker/worker` world.
//!
//! One implementation serves `anocast build` and `anocast new` (the host's
//! CLI), `cargo xtask plugins` and the tests' build script, so a plugin is
//! built the same way wherever it is built.
//!
//! - [`Lang`]: the languages, each told by a marker file in the folder
//!   (`Cargo.toml`, `app.py`, `app.js`, `plugin.c`);
//! - [`build`]: runs the language's tool chain ([`Tools`] says where the
//!   tools are) and writes the component aside before renaming it into
//!   place, so that a watching node never sees half a file;
//! - [`stateless`]: the declaration by which a plugin lets the host reuse
//!   warm instances, read from the folder's `anocast.toml`;
//! - [`scaffold`]: the files of a new plugin, per language.

use std::path::{Path, PathBuf};
use std::process::Command;

mod c;
pub use c::PACKAGES as C_PACKAGES;
pub mod scaffold;
pub mod stateless;

/// The contract every plugin implements, for folders that bring no `wit/`
/// of their own.
pub const WORKER_WIT: &str = include_str!("../../../wit/worker.wit");

/// The componentize-py release Python plugins are built with.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
/// The componentize-js release JavaScript plugins are built with (npm).
pub const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";

/// A language plugins can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lang {
    /// A cdylib crate using `anocast-sdk`, built by cargo for wasm32-wasip2.
    Rust,
    /// `app.py`, built with componentize-py.
    Python,
    /// `app.js`, built with componentize-js.
    JavaScript,
    /// `plugin.c`, built with wit-bindgen's C generator and clang.
    C,
}

impl Lang {
    /// Every language, in the order plugins are built.
    pub const ALL: [Lang; 4] = [Lang::Rust, Lang::Python, Lang::JavaScript, Lang::C];

    /// The short name used by `--lang` and in progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::JavaScript => "js",
            Lang::C => "c",
        }
    }

    /// The language named `name` (`rust`, `python`, `js`, `c`).
    pub fn parse(name: &str) -> Result<Lang, String> {
        match name {
            "rust" | "rs" => Ok(Lang::Rust),
            "python" | "py" => Ok(Lang::Python),
            "js" | "javascript" => Ok(Lang::JavaScript),
            "c" => Ok(Lang::C),
            other => Err(format!("unknown language {other:?}: expected rust, python, js or c")),
        }
    }

    /// The language's name in prose (`Rust`, `Python`, `JavaScript`, `C`).
    pub fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::JavaScript => "JavaScript",
            Lang::C => "C",
        }
    }

    /// The file that marks a folder as a plugin in this language.
    pub fn marker(self) -> &'static str {
        match self {
            Lang::Rust => "Cargo.toml",
            Lang::Python => "app.py",
            Lang::JavaScript => "app.js",
            Lang::C => "plugin.c",
        }
    }

    /// The language of the plugin in `dir`, by its marker file.
    pub fn detect(dir: &Path) -> Option<Lang> {
        Lang::ALL.into_iter().find(|lang| dir.join(lang.marker()).is_file())
    }
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a plugin could not be built: one line, naming the plugin and, when a
/// tool is missing, how to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError(pub String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

fn fail<T>(message: impl Into<String>) -> Result<T, BuildError> {
    Err(BuildError(message.into()))
}

/// Where the language tools are found.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// A folder the tools were installed into (`cargo xtask` uses
    /// `target/tools`): `componentize-py/` (a pip `--target` folder) and
    /// `componentize-js/node_modules`. Tools not found there are looked up
    /// on `PATH`.
    pub dir: Option<PathBuf>,
    /// Where cargo puts Rust plugins' build output (`--target-dir`);
    /// `None`: the plugin's own `target/`.
    pub cargo_target_dir: Option<PathBuf>,
}

impl Tools {
    /// The folder componentize-py is installed into under [`Tools::dir`].
    pub fn componentize_py_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("componentize-py"))
    }

    /// The folder componentize-js is installed into under [`Tools::dir`].
    pub fn componentize_js_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("componentize-js"))
    }

    /// A command running componentize-py.
    fn componentize_py(&self) -> Result<Command, BuildError> {
        if let Some(dir) = self.componentize_py_dir().filter(|d| d.join("componentize_py").is_dir()) {
            let mut cmd = Command::new("python3");
            cmd.args([
                "-c",
                "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
            ])
            .env("PYTHONPATH", dir);
            return Ok(cmd);
        }
        if on_path("componentize-py") {
            return Ok(Command::new("componentize-py"));
        }
        fail(format!(
            "componentize-py is not installed: `python3 -m pip install {COMPONENTIZE_PY}` (in the anocast repository, `cargo xtask plugins` installs it into target/tools)"
        ))
    }

    /// A command running componentize-js.
    fn componentize_js(&self) -> Result<Command, BuildError> {
        let installed = self
            .componentize_js_dir()
            .map(|d| d.join("node_modules/@bytecodealliance/componentize-js/src/cli.js"))
            .filter(|cli| cli.is_file());
        if let Some(cli) = installed {
            if !on_path("node") {
                return fail(
                    "componentize-js needs Node.js (`node`), which is not on PATH (Debian: apt-get install nodejs)",
                );
            }
            let mut cmd = Command::new("node");
            cmd.arg(cli);
            return Ok(cmd);
        }
        if on_path("componentize-js") {
            return Ok(Command::new("componentize-js"));
        }
        fail(format!(
            "componentize-js is not installed: `npm install {COMPONENTIZE_JS}` (in the anocast repository, `cargo xtask plugins` installs it into target/tools)"
        ))
    }
}

/// Whether `program` is an executable file in a folder of `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The plugins under `dir`: each sub-folder whose language is known, sorted
/// by name.
pub fn plugin_folders(dir: &Path) -> std::io::Result<Vec<(String, Lang)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let (Some(lang), Some(name)) = (Lang::detect(&path), path.file_name()) {
            found.push((name.to_string_lossy().into_owned(), lang));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest modification time among the files under `dir` (skipping
/// build output and caches) and `also`.
pub fn newest_source(dir: &Path, also: &[&Path]) -> Option<std::time::SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if is_build_output(&path) {
                continue;
            }
            // file_type does not follow symbolic links: no loops.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, newest);
            } else if let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) {
                *newest = (*newest).max(Some(modified));
            }
        }
    }
    let mut newest = None;
    walk(dir, &mut newest);
    for path in also {
        if let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) {
            newest = newest.max(Some(modified));
        }
    }
    newest
}

/// Whether `path`, inside a plugin folder, is build output or a cache rather
/// than a source: `target/`, `node_modules/`, `__pycache__/`, the C
/// bindings `anocast build` generates (`bindings/`), dot-files, and
/// components (`*.wasm`, `*.partial`).
pub fn is_build_output(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    matches!(name, "target" | "node_modules" | "__pycache__" | c::BINDINGS_DIR)
        || name.starts_with('.')
        || name.ends_with(".wasm")
        || name.ends_with(".partial")
}

/// What to build: a plugin folder, into `out/<name>.wasm`.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    /// The plugin's folder.
    pub folder: &'a Path,
    /// The component's name (`<name>.wasm`); by default the folder's.
    pub name: String,
    /// The folder of the WIT contract, used when the plugin folder has no
    /// `wit/` of its own; `None`: the contract built into this crate.
    pub wit: Option<&'a Path>,
    /// Where the component goes.
    pub out: &'a Path,
}

impl<'a> Job<'a> {
    /// Builds `folder` into `out/<folder name>.wasm`.
    pub fn new(folder: &'a Path, out: &'a Path) -> Self {
        let name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into());
        Job { folder, name, wit: None, out }
    }

    /// The component's path.
    pub fn dest(&self) -> PathBuf {
        self.out.join(format!("{}.wasm", self.name))
    }

    /// Whether the component is newer than every source file and the
    /// contract (then there is nothing to build).
    pub fn up_to_date(&self) -> bool {
        let built = std::fs::metadata(self.dest()).and_then(|m| m.modified()).ok();
        let wit_file = self.wit.map(|w| w.join("worker.wit"));
        let also: Vec<&Path> = wit_file.iter().map(PathBuf::as_path).collect();
        match (built, newest_source(self.folder, &also)) {
            (Some(built), Some(source)) => built > source,
            _ => false,
        }
    }
}

/// Builds the plugin of `job` with its language's tool chain; returns the
/// component's path.
pub fn build(job: &Job<'_>, tools: &Tools) -> Result<PathBuf, BuildError> {
    let folder = job.folder;
    let shown = folder.display();
    let Some(lang) = Lang::detect(folder) else {
        return fail(format!("{shown}: not a plugin folder (no Cargo.toml, app.py, app.js or plugin.c in it)"));
    };
    // A typo in the settings fails before the (slow) tools run.
    let stateless = stateless::declared(folder)?;
    std::fs::create_dir_all(job.out).map_err(|e| BuildError(format!("creating {}: {e}", job.out.display())))?;
    let dest = job.dest();
    // A name of its own, next to the destination, removed unless the build
    // succeeds: concurrent builds never share it, and a node watching `out`
    // ignores it (it is not a `.wasm` file).
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{}.", job.name))
        .suffix(".wasm.partial")
        .tempfile_in(job.out)
        .map_err(|e| BuildError(format!("creating a file in {}: {e}", job.out.display())))?
        .into_temp_path();
    let wit = WitDir::for_job(job)?;
    match lang {
        Lang::Rust => build_rust(folder, tools, &partial)?,
        Lang::Python => {
            let mut cmd = tools.componentize_py()?;
            cmd.arg("-d").arg(wit.path()).args(["-w", "worker", "componentize", "-p"]).arg(folder);
            cmd.arg("app").arg("-o").arg(&partial);
            run(cmd, &format!("componentize-py failed on {shown}"))?;
        }
        Lang::JavaScript => {
            let mut cmd = tools.componentize_js()?;
            cmd.arg("--wit").arg(wit.path()).args(["--world-name", "worker"]);
            // Without these, the component would import wasi:http, which
            // anocast does not offer.
            cmd.args(["--disable", "http", "fetch-event", "-o"]).arg(&partial).arg(folder.join("app.js"));
            run(cmd, &format!("componentize-js failed on {shown}"))?;
        }
        Lang::C => c::build(folder, wit.path(), &partial)?,
    }
    if stateless {
        stateless::mark_file(&partial).map_err(|e| BuildError(format!("{shown}: {e}")))?;
    }
    // Readable as any built file is (the temporary file was owner-only).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| BuildError(format!("{shown}: {e}")))?;
    }
    partial.persist(&dest).map_err(|e| BuildError(format!("moving {} into place: {e}", dest.display())))?;
    Ok(dest)
}

/// A Rust plugin: `cargo build --release --target wasm32-wasip2`, then the
/// cdylib is copied out.
fn build_rust(folder: &Path, tools: &Tools, partial: &Path) -> Result<(), BuildError> {
    let shown = folder.display();
    let manifest = folder.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(|e| BuildError(format!("{shown}: {e}")))?;
    let artifact = library_name(&text).map_err(|why| BuildError(format!("{}: {why}", manifest.display())))?;
    let target_dir = tools
        .cargo_target_dir
        .clone()
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| folder.join("target"));
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--quiet", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    run(
        cmd,
        &format!("cargo failed on {shown} (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"),
    )?;
    let built = target_dir.join("wasm32-wasip2/release").join(format!("{artifact}.wasm"));
    std::fs::copy(&built, partial).map_err(|e| BuildError(format!("copying {}: {e}", built.display())))?;
    Ok(())
}

/// The name cargo gives a crate's library artifact, from its manifest:
/// `[lib] name` when set, otherwise `[package] name` with `-` made `_`.
fn library_name(manifest: &str) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        package: Option<Named>,
        lib: Option<Named>,
    }
    #[derive(serde::Deserialize)]
    struct Named {
        name: Option<String>,
    }
    let manifest: Manifest =
        toml::from_str(manifest).map_err(|e| format!("not a valid Cargo.toml: {}", e.message()))?;
    let name = manifest.lib.and_then(|lib| lib.name).or_else(|| manifest.package.and_then(|p| p.name));
    let name = name.ok_or("no [package] name (a workspace's root manifest is not a plugin)")?;
    Ok(name.replace('-', "_"))
}

/// The WIT folder a build reads: the plugin's own `wit/`, the one the job
/// names, or the built-in contract written to a temporary folder (removed
/// when the build ends).
enum WitDir {
    Given(PathBuf),
    Temporary(tempfile::TempDir),
}

impl WitDir {
    fn for_job(job: &Job<'_>) -> Result<Self, BuildError> {
        let own = job.folder.join("wit");
        if own.join("worker.wit").is_file() {
            return Ok(WitDir::Given(own));
        }
        if let Some(wit) = job.wit {
            return Ok(WitDir::Given(wit.to_owned()));
        }
        let dir = tempfile::Builder::new()
            .prefix("anocast-wit-")
            .tempdir()
            .and_then(|dir| std::fs::write(dir.path().join("worker.wit"), WORKER_WIT).map(|()| dir))
            .map_err(|e| BuildError(format!("writing the WIT contract to a temporary folder: {e}")))?;
        Ok(WitDir::Temporary(dir))
    }

    fn path(&self) -> &Path {
        match self {
            WitDir::Given(p) => p,
            WitDir::Temporary(dir) => dir.path(),
        }
    }
}

/// Runs `cmd`; on failure, `what` and the last lines the tool printed.
fn run(mut cmd: Command, what: &str) -> Result<(), BuildError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let output = cmd.output().map_err(|e| BuildError(format!("{what}: cannot run {program}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.stderr);
    let text = if text.trim().is_empty() { String::from_utf8_lossy(&output.stdout) } else { text };
    // Stack traces of the tools' own code say nothing about the plugin.
    let tail: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("at ") && !l.starts_with("Node.js v"))
        .collect();
    let tail = tail[tail.len().saturating_sub(6)..].join(" | ");
    fail(format!("{what}: {tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_round_trip_through_their_names() {
        for lang in Lang::ALL {
            assert_eq!(Lang::parse(lang.name()), Ok(lang));
        }
        assert!(Lang::parse("cobol").expect_err("no such language").contains("rust, python, js or c"));
    }

    #[test]
    fn a_folder_is_told_by_its_marker_file() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("anocast-build-detect-{}", std::process::id()));
        for lang in Lang::ALL {
            let folder = dir.join(lang.name());
            std::fs::create_dir_all(&folder)?;
            std::fs::write(folder.join(lang.marker()), "")?;
        }
        std::fs::create_dir_all(dir.join("notes"))?;
        let found = plugin_folders(&dir)?;
        std::fs::remove_dir_all(&dir)?;
        let expected: Vec<(String, Lang)> = vec![
            ("c".into(), Lang::C),
            ("js".into(), Lang::JavaScript),
            ("python".into(), Lang::Python),
            ("rust".into(), Lang::Rust),
        ];
        assert_eq!(found, expected);
        Ok(())
    }

    #[test]
    fn the_wasm_file_is_named_as_cargo_names_the_library() {
        let plain =
            "[package]\nname = \"shout-loud\" # a comment\nversion = \"0.1.0\"\n\n[dependencies]\nname = \"1\"\n";
        assert_eq!(library_name(plain).as_deref(), Ok("shout_loud"));
        let renamed = "[package]\nversion.workspace = true\nname = \"shout\"\n[lib]\ncrate-type = [\"cdylib\"]\nname = \"loud\"\n";
        assert_eq!(library_name(renamed).as_deref(), Ok("loud"));
        let inline = "package = { name = \"in-line\", version = \"1.0.0\" }\n";
        assert_eq!(library_name(inline).as_deref(), Ok("in_line"));
        let workspace = "[workspace]\nmembers = [\"a\"]\n";
        assert!(library_name(workspace).expect_err("no package").contains("no [package] name"));
        let broken = "[package\nname = \"x\"";
        assert!(library_name(broken).expect_err("not toml").starts_with("not a valid Cargo.toml"));
    }

    #[test]
    fn a_folder_in_no_known_language_is_refused_in_one_line() {
        let dir = std::env::temp_dir();
        let out = dir.join("anocast-build-none");
        let err = build(&Job::new(&dir.join("no-such-plugin"), &out), &Tools::default()).expect_err("nothing to build");
        assert!(err.0.contains("not a plugin folder"), "{err}");
        assert!(!err.0.contains('\n'));
    }
}
