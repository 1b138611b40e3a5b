//! `cargo xtask`: the project's own commands.
//!
//! - `cargo xtask demo`: build the example plugins, run the embedded host on
//!   sample tasks, print the joined outcomes;
//! - `cargo xtask dev [ARGS...]`: build the plugins, serve them with the
//!   HTTP API in the foreground (extra arguments go to `anocast serve`), and
//!   rebuild each plugin whose sources change: the node swaps it in;
//! - `cargo xtask plugins`: build every plugin in `plugins/` into
//!   `target/plugins/*.wasm`;
//! - `cargo xtask test`: install what the tests need, run the format and lint
//!   gates, run every test;
//! - `cargo xtask bench`: run the benchmarks (release build);
//! - `cargo xtask fuzz [SECONDS]`: fuzz the wire decoders (see [`fuzz`]).
//!
//! Each installs the `wasm32-wasip2` target first when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anocast_build::{Job, Lang, Tools};
use anyhow::{Context, bail};

mod dev;
mod fuzz;
mod tools;

/// How long `cargo xtask test` runs each fuzz target.
const TEST_FUZZ_SECONDS: u64 = 15;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  demo      build the example plugins, dispatch sample tasks in-process, print the outcomes
  dev       serve the plugins over HTTP, rebuilding each one as its sources change (extra arguments go to `anocast serve`)
  plugins   build every plugin in plugins/ into target/plugins/*.wasm
  test      install test prerequisites, check formatting and lints, run all tests
  bench     run the benchmarks (release build) and print ratios to their floors
  fuzz [S]  fuzz the wire decoders for S seconds per target (default 60)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(),
        Some("dev") => dev(&args[1..]),
        Some("plugins") => plugins().map(|_| ()),
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => match args.get(1).map(|s| s.parse::<u64>()) {
            None => fuzz::fuzz(60),
            Some(Ok(seconds)) if seconds > 0 => fuzz::fuzz(seconds),
            Some(_) => Err(anyhow::anyhow!("fuzz takes a number of seconds (> 0), not {:?}\n\n{USAGE}", args[1])),
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}\n\n{USAGE}")),
        None => Err(anyhow::anyhow!("no command given\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask/ has a parent").to_owned()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn step(what: &str) {
    eprintln!("\n==> {what}");
}

/// Runs `cmd`, failing with its description when it fails.
fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn have(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

/// Installs the wasm32-wasip2 target with rustup when it is missing.
fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "wasm32-wasip2") => Ok(()),
        Ok(_) => {
            step("installing the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
            run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]), "rustup target add wasm32-wasip2")
        }
        Err(_) => {
            eprintln!("note: rustup not found; assuming the wasm32-wasip2 target is installed");
            Ok(())
        }
    }
}

/// Installs Debian packages for the programs that are missing (root or sudo
/// needed). `redis-server` and `nats-server` serve the distributed-mode tests.
fn ensure_packages(programs: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> =
        programs.iter().filter(|(program, _)| !have(program)).map(|(_, package)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

/// Installs Debian `packages` with apt-get (as root, else with sudo).
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    step(&format!("installing {} (apt-get)", packages.join(", ")));
    let sudo = if have("id") && Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0")) {
        vec![]
    } else {
        vec!["sudo"]
    };
    let apt = |args: &[&str]| {
        let mut cmd = Command::new(sudo.first().copied().unwrap_or("apt-get"));
        if !sudo.is_empty() {
            cmd.arg("apt-get");
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    run(&mut apt(&["update", "-q"]), "apt-get update")?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(packages);
    run(&mut install, "apt-get install")
}

/// The plugins of `plugins/`, whatever their language, sorted by name.
fn all_plugins() -> anyhow::Result<Vec<(String, Lang)>> {
    anocast_build::plugin_folders(&root().join("plugins")).context("reading plugins/")
}

/// The names of the plugins in `lang`.
fn plugins_in(lang: Lang) -> anyhow::Result<Vec<String>> {
    Ok(all_plugins()?.into_iter().filter(|(_, l)| *l == lang).map(|(name, _)| name).collect())
}

/// The Rust plugins of `plugins/`.
fn rust_plugins() -> anyhow::Result<Vec<String>> {
    plugins_in(Lang::Rust)
}

/// Whether the Rust plugin `name` is a member of the `plugins/` workspace
/// (built all at once); others (`anocast new` makes standalone crates) are
/// built on their own.
fn workspace_member(name: &str) -> bool {
    std::fs::read_to_string(root().join("plugins/Cargo.toml"))
        .is_ok_and(|manifest| manifest.contains(&format!("\"{name}\"")))
}

/// Where guests are compiled: shared by the plugins, the test guests, the
/// tests' build script and clippy, so each is compiled once.
fn guest_target_dir() -> PathBuf {
    root().join("target").join("guests")
}

/// Runs `cargo SUBCOMMAND --release --target wasm32-wasip2` on a guest
/// workspace, with `extra` cargo arguments and `tool` arguments after `--`.
fn cargo_wasm(subcommand: &[&str], manifest: &str, extra: &[&str], tool: &[&str]) -> anyhow::Result<()> {
    let mut cmd = cargo();
    cmd.args(subcommand)
        .args(["--release", "--target", "wasm32-wasip2", "--manifest-path", manifest, "--target-dir"])
        .arg(guest_target_dir())
        .args(extra);
    if !tool.is_empty() {
        cmd.arg("--").args(tool);
    }
    run(&mut cmd, &format!("cargo {} ({manifest})", subcommand.join(" ")))
}

/// Builds the plugins, whatever their language, into `target/plugins`
/// (installing the tools their languages need first); returns that folder.
fn plugins() -> anyhow::Result<PathBuf> {
    ensure_wasm_target()?;
    let all = all_plugins()?;
    let languages: std::collections::BTreeSet<Lang> = all.iter().map(|(_, lang)| *lang).collect();
    let tools = tools::ensure(&languages)?;
    let counts: Vec<String> = Lang::ALL
        .iter()
        .map(|lang| (lang, all.iter().filter(|(_, l)| l == lang).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(lang, n)| format!("{n} in {}", lang.title()))
        .collect();
    step(&format!("building {} plugin(s): {}", all.len(), counts.join(", ")));
    if all.iter().any(|(name, lang)| *lang == Lang::Rust && workspace_member(name)) {
        cargo_wasm(&["build"], "plugins/Cargo.toml", &[], &[])?;
    }
    for (i, (name, lang)) in all.iter().enumerate() {
        eprint!("[{}/{}] {name} ({lang}) ", i + 1, all.len());
        let started = std::time::Instant::now();
        let dest = build_plugin(name, *lang, &tools).inspect_err(|_| eprintln!("failed"))?;
        let size = std::fs::metadata(&dest)?.len();
        eprintln!("-> {} ({} KiB, {:.1}s)", relative(&dest), size / 1024, started.elapsed().as_secs_f64());
    }
    Ok(root().join("target").join("plugins"))
}

/// Builds the plugin `name` into `target/plugins`, written aside and renamed
/// into place so that a node watching the folder never sees half a file;
/// returns its path there. Rust plugins of the workspace are taken from its
/// last build.
fn build_plugin(name: &str, lang: Lang, tools: &Tools) -> anyhow::Result<PathBuf> {
    let root = root();
    let out = root.join("target").join("plugins");
    if lang == Lang::Rust && workspace_member(name) {
        std::fs::create_dir_all(&out)?;
        let built = guest_target_dir().join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")));
        let dest = out.join(format!("{name}.wasm"));
        let partial = out.join(format!(".{name}.wasm.partial"));
        std::fs::copy(&built, &partial).with_context(|| format!("copying {}", built.display()))?;
        std::fs::rename(&partial, &dest)?;
        return Ok(dest);
    }
    let folder = root.join("plugins").join(name);
    let wit = root.join("wit");
    let job = Job { wit: Some(&wit), ..Job::new(&folder, &out) };
    Ok(anocast_build::build(&job, tools)?)
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// Builds the `anocast` binary (dev profile, shared with the tests); returns its path.
fn anocast_binary() -> anyhow::Result<PathBuf> {
    step("building anocast");
    run(cargo().args(["build", "-p", "anocast-cli", "--bin", "anocast"]), "building anocast")?;
    Ok(root().join("target").join("debug").join(format!("anocast{}", std::env::consts::EXE_SUFFIX)))
}

fn demo() -> anyhow::Result<()> {
    let plugins = plugins()?;
    let anocast = anocast_binary()?;
    let samples: &[(&str, &str, &str)] = &[
        (
            "fan-out: five plugins in four languages analyse one text (word-count and sentiment: Rust; keywords: \
             Python; reading-time: JavaScript; byte-stats: C). The first run compiles the Python and JavaScript \
             components (seconds); later runs load them from the compiled-code cache",
            "text.analyze",
            "What a great day: the new release is fast and I love it",
        ),
        (
            "payload-dependent interest: a small order (fraud-check stays out)",
            "orders.created",
            r#"{"amount": 120, "country": "NL", "items": [{"sku": "book", "qty": 2}]}"#,
        ),
        (
            "payload-dependent interest: a large order (fraud-check joins)",
            "orders.created",
            r#"{"amount": 4200, "items": [{"sku": "laptop"}]}"#,
        ),
        ("a failing worker: an order with no items", "orders.created", r#"{"amount": 10, "items": []}"#),
        ("nobody is interested: answered as soon as every plugin declined", "weather.today", "sunny?"),
    ];
    for (title, topic, payload) in samples {
        step(&format!("{title}\n    anocast run --plugins {} {topic} '{payload}'", relative(&plugins)));
        let status = Command::new(&anocast)
            .args(["run", "--plugins"])
            .arg(&plugins)
            .args([topic, payload])
            .status()
            .context("running anocast")?;
        // 0: complete; 3: no_interest, which the last sample expects.
        if !matches!(status.code(), Some(0 | 3)) {
            bail!("anocast run {topic} failed ({status})");
        }
    }
    demo_on_a_node(&anocast, &plugins)?;
    eprintln!("\ndemo done. Next: `cargo xtask dev` serves these plugins at http://127.0.0.1:7700, then");
    eprintln!("  target/debug/anocast dispatch text.analyze 'I love this'");
    Ok(())
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The nesting and compensation examples: their effects outlive a
/// dispatch, so one node serves the plugins and the CLI dispatches through
/// its HTTP API. The node's log shows the plugins' `settle` hooks.
fn demo_on_a_node(anocast: &Path, plugins: &Path) -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}");
    step(&format!("a node for the examples that keep state: anocast serve --plugins {} (on {url})", relative(plugins)));
    let node = Command::new(anocast)
        .args(["serve", "--no-watch", "--node-id", "demo", "--http", &format!("127.0.0.1:{port}"), "--plugins"])
        .arg(plugins)
        .arg("--data-dir")
        .arg(root().join("target").join("demo-data"))
        .env("ANOCAST_LOG", "warn,anocast::guest=info")
        .spawn()
        .context("starting anocast serve")?;
    let _node = Killed(node);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let up = Command::new(anocast).args(["plugins", "list", "--url", &url]).output()?;
        if up.status.success() {
            break;
        }
        if std::time::Instant::now() > until {
            bail!("the demo node did not come up: {}", String::from_utf8_lossy(&up.stderr).trim());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let samples: &[(&str, &str, &str)] = &[
        (
            "compensation: a form submission; every worker succeeds, so what they staged is committed",
            "forms.submitted",
            r#"{"email": "ann@example.com", "name": "Ann", "newsletter": true}"#,
        ),
        ("...and is there afterwards", "forms.lookup", r#"{"email": "ann@example.com"}"#),
        (
            "compensation: the profile refuses the e-mail, so the newsletter's staged subscription is dropped",
            "forms.submitted",
            r#"{"email": "bob-at-example", "name": "Bob", "newsletter": true}"#,
        ),
        ("...and nothing of Bob is kept", "forms.lookup", r#"{"email": "bob-at-example"}"#),
        (
            "nesting: checkout dispatches the sub-task stock.reserve (stock answers) while fraud-check reviews",
            "orders.placed",
            r#"{"amount": 1500, "country": "NL", "items": [{"sku": "lamp", "qty": 2}]}"#,
        ),
        (
            "nesting + compensation: not enough sofas, so the order fails and the lamp stays in stock",
            "orders.placed",
            r#"{"amount": 90, "items": [{"sku": "lamp", "qty": 1}, {"sku": "sofa", "qty": 40}]}"#,
        ),
        (
            "...the next lamp comes from the 8 left by the first order",
            "orders.placed",
            r#"{"amount": 45, "items": [{"sku": "lamp", "qty": 1}]}"#,
        ),
    ];
    for (title, topic, payload) in samples {
        step(&format!("{title}\n    anocast dispatch --url {url} {topic} '{payload}'"));
        let status = Command::new(anocast)
            .args(["dispatch", "--url", &url, topic, payload])
            .status()
            .context("running anocast dispatch")?;
        if !status.success() {
            bail!("anocast dispatch {topic} failed ({status})");
        }
        // Let the node's log of the settle hooks come before the next step.
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

fn dev(args: &[String]) -> anyhow::Result<()> {
    let plugins = plugins()?;
    let languages = all_plugins()?.into_iter().map(|(_, lang)| lang).collect();
    let tools = tools::ensure(&languages)?;
    let anocast = anocast_binary()?;
    step(&format!("serving {} and rebuilding plugins as their sources change (Ctrl-C stops)", relative(&plugins)));
    let node = Command::new(anocast)
        .arg("serve")
        .arg("--plugins")
        .arg(&plugins)
        .args(args)
        .spawn()
        .context("starting anocast serve")?;
    dev::rebuild_on_change(node, tools)
}

fn test() -> anyhow::Result<()> {
    ensure_wasm_target()?;
    ensure_packages(&[("redis-server", "redis-server"), ("nats-server", "nats-server"), ("openssl", "openssl")])?;
    // The tests' build script builds the plugins and test guests in every
    // language with these.
    tools::ensure(&Lang::ALL.into_iter().collect())?;
    let guest_workspaces = ["plugins/Cargo.toml", "tests/guests/Cargo.toml"];

    step("cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--check"]), "cargo fmt (workspace)")?;
    for manifest in guest_workspaces.iter().chain(&["host/wire/fuzz/Cargo.toml"]) {
        run(
            cargo().args(["fmt", "--all", "--check", "--manifest-path", manifest]),
            &format!("cargo fmt ({manifest})"),
        )?;
    }

    step("cargo clippy -D warnings");
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]), "cargo clippy (workspace)")?;
    for manifest in guest_workspaces {
        cargo_wasm(&["clippy"], manifest, &["--all-targets"], &["-D", "warnings"])?;
    }
    run(
        cargo()
            .args(["clippy", "--manifest-path", "host/wire/fuzz/Cargo.toml", "--target-dir", "target/fuzz-clippy"])
            .args(["--", "-D", "warnings"]),
        "cargo clippy (host/wire/fuzz)",
    )?;

    step("cargo test --workspace");
    run(cargo().args(["test", "--workspace"]), "cargo test")?;
    fuzz::fuzz(TEST_FUZZ_SECONDS)?;
    eprintln!("\nall checks and tests passed");
    Ok(())
}

fn bench(args: &[String]) -> anyhow::Result<()> {
    plugins()?;
    ensure_packages(&[("redis-server", "redis-server"), ("nats-server", "nats-server"), ("openssl", "openssl")])?;
    for bench in ["embedded", "distributed", "http", "reload", "nested", "languages"] {
        step(&format!("benchmark: {bench} (release build; the first one takes several minutes)"));
        run(
            cargo().args(["bench", "-p", "anocast-tests", "--bench", bench, "--"]).args(args),
            &format!("cargo bench {bench}"),
        )?;
    }
    Ok(())
}
