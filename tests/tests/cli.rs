//! The `anocast` command as a user runs it: exit statuses, stdout, and one
//! clear line on stderr for every error path.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use anocast_tests::{PluginDir, guests, spawn_serve};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_anocast-cli-under-test");

fn anocast(args: &[&str]) -> Output {
    Command::new(EXE).args(args).env_remove("ANOCAST_URL").output().expect("running anocast")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Asserts a failure with exit status 1 and exactly one stderr line starting
/// with `error: ` and containing `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout on error");
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn run_prints_the_joined_outcome_and_exits_by_status() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::WORD_COUNT, guests::SENTIMENT, guests::MISBEHAVE])?;
    let out = anocast(&["run", "--plugins", path(dir.path()), "text.analyze", "good news"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json = stdout_json(&out);
    assert_eq!(json["status"], "complete");
    assert_eq!(json["partials"][0]["worker"], "local/sentiment@0.1.0");
    assert_eq!(json["partials"][1]["payload"]["words"], 2);

    let out = anocast(&["run", "--plugins", path(dir.path()), "nobody.cares"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout_json(&out)["status"], "no_interest");

    let out = anocast(&["run", "--plugins", path(dir.path()), "misbehave.sleep", "5000", "--timeout", "300ms"]);
    assert_eq!(out.status.code(), Some(4));
    let json = stdout_json(&out);
    assert_eq!(json["status"], "timed_out");
    assert_eq!(json["missing"][0], "local/misbehave@0.1.0");
    Ok(())
}

#[test]
fn payloads_come_from_files_and_stdin() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::MISBEHAVE])?;
    let file = dir.write("payload.json", br#"{"from": "file"}"#)?;
    let at_file = format!("@{}", path(&file));
    let out = anocast(&["run", "--plugins", path(dir.path()), "misbehave.echo", &at_file]);
    assert_eq!(stdout_json(&out)["partials"][0]["payload"]["from"], "file");

    let mut child = Command::new(EXE)
        .args(["run", "--plugins", path(dir.path()), "misbehave.echo", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("stdin").write_all(b"from stdin")?;
    let out = child.wait_with_output()?;
    assert_eq!(stdout_json(&out)["partials"][0]["payload"], "from stdin");
    Ok(())
}

#[test]
fn bad_input_gets_one_clear_line_and_a_non_zero_exit() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::ECHO])?;
    let missing = dir.path().join("missing");
    assert_one_line_error(&anocast(&["run", "--plugins", path(&missing), "echo"]), "does not exist");
    let file = dir.write("not-a-folder", b"")?;
    assert_one_line_error(&anocast(&["run", "--plugins", path(&file), "echo"]), "is not a folder");
    assert_one_line_error(&anocast(&["run", "--plugins", path(dir.path()), "bad..topic"]), "invalid topic");
    assert_one_line_error(&anocast(&["run", "--plugins", path(dir.path()), "echo.*"]), "wildcards");
    assert_one_line_error(&anocast(&["dispatch", "bad topic"]), "invalid topic");
    assert_one_line_error(&anocast(&["dispatch", "echo", "@/definitely/not/here"]), "cannot read payload file");
    assert_one_line_error(&anocast(&["dispatch", "echo", "--url", "not a url"]), "invalid --url");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}");
    assert_one_line_error(&anocast(&["dispatch", "echo", "hi", "--url", &url]), "cannot reach the anocast node");
    assert_one_line_error(&anocast(&["plugins", "list", "--url", &url]), "cannot reach the anocast node");
    assert_one_line_error(&anocast(&["settle", "r-1", "commit", "--url", &url]), "cannot reach the anocast node");
    let config = dir.write("deep.toml", b"max_depth = 99\n")?;
    assert_one_line_error(&anocast(&["serve", "--config", path(&config)]), "max_depth must be 0-64");
    let config = dir.write("expiry.toml", b"stage_expiry = \"soon\"\n")?;
    assert_one_line_error(
        &anocast(&["serve", "--plugins", path(dir.path()), "--config", path(&config)]),
        "invalid stage_expiry",
    );

    // Usage errors are clap's: exit 2.
    for (args, why) in [
        (&["run", "--plugins", path(dir.path()), "echo", "--settle", "sometimes"][..], "unknown settle policy"),
        (&["settle", "r-1", "maybe"][..], "invalid value 'maybe'"),
        (&["serve", "--plugins", path(dir.path()), "--max-depth", "65"][..], "not in 0..=64"),
    ] {
        let out = anocast(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = anocast(&["run", "--plugins", path(dir.path()), "echo", "--timeout", "5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a duration"));
    Ok(())
}

#[test]
fn plugins_check_explains_what_is_wrong() -> anyhow::Result<()> {
    let out = anocast(&["plugins", "check", guests::WORD_COUNT]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("name:    word-count"), "{stdout}");
    assert!(stdout.contains("version: 0.1.0"));
    assert!(stdout.contains("topics:  text.analyze"));

    let dir = PluginDir::with(&[])?;
    let text = dir.write("text.wasm", b"hello, not wasm")?;
    assert_one_line_error(&anocast(&["plugins", "check", path(&text)]), "not a WebAssembly file");
    let module = dir.write("module.wasm", b"\0asm\x01\0\0\0")?;
    assert_one_line_error(&anocast(&["plugins", "check", path(&module)]), "a core WebAssembly module, not a component");
    assert_one_line_error(
        &anocast(&["plugins", "check", guests::WRONG_WORLD]),
        "does not implement the anocast:worker/worker world",
    );
    assert_one_line_error(&anocast(&["plugins", "check", guests::BAD_DESCRIBE]), "invalid topic pattern");
    assert_one_line_error(&anocast(&["plugins", "check", path(&dir.path().join("absent.wasm"))]), "cannot read");
    Ok(())
}

#[test]
fn dispatch_and_list_go_through_a_running_node() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::FRAUD_CHECK, guests::INVENTORY])?;
    dir.write("broken.wasm", b"garbage")?;
    let (_node, url) = spawn_serve(EXE, dir.path(), "cli", &[])?;

    let out = anocast(&["dispatch", "orders.created", r#"{"amount": 5000, "items": [{"sku": "x"}]}"#, "--url", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json = stdout_json(&out);
    assert_eq!(json["status"], "complete");
    let workers: Vec<&str> =
        json["partials"].as_array().expect("partials").iter().filter_map(|p| p["worker"].as_str()).collect();
    assert_eq!(workers, ["cli/fraud-check@0.1.0", "cli/inventory@0.1.0"]);

    let out = anocast(&["dispatch", "weather.today", "--url", &url, "--grace", "200ms"]);
    assert_eq!(out.status.code(), Some(3));

    let out = anocast(&["plugins", "list", "--url", &url]);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("node cli: 2 plugin(s)"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("fraud-check") && l.contains("orders.created")), "{table}");
    assert!(table.contains("broken.wasm: not a WebAssembly file"), "{table}");

    let out = anocast(&["plugins", "list", "--url", &url, "--json"]);
    let json = stdout_json(&out);
    assert_eq!(json["plugins"].as_array().map(Vec::len), Some(2));

    // A second node on the same address cannot start.
    let address = url.trim_start_matches("http://");
    let out = anocast(&["serve", "--plugins", path(dir.path()), "--http", address]);
    assert_one_line_error(&out, "cannot listen on");
    Ok(())
}

#[test]
fn serve_applies_changes_to_its_plugins_folder_as_they_happen() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[])?;
    let data = tempfile::tempdir()?;
    let (_node, url) = spawn_serve(EXE, dir.path(), "live", &["--data-dir", path(data.path())])?;
    let list = || stdout_json(&anocast(&["plugins", "list", "--url", &url, "--json"]));
    let wait_for = |what: &str, done: &dyn Fn(&Value) -> bool| -> anyhow::Result<Value> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let json = list();
            if done(&json) {
                return Ok(json);
            }
            anyhow::ensure!(std::time::Instant::now() < until, "{what} never happened: {json}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let version = |json: &Value| json["plugins"][0]["version"].as_str().map(str::to_owned);

    // Dropped in: served without a restart.
    std::fs::copy(guests::SWAP_V1, dir.path().join("swap.wasm"))?;
    wait_for("loading swap 1.0.0", &|json| version(json).as_deref() == Some("1.0.0"))?;
    let out = anocast(&["dispatch", "swap", "--url", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout_json(&out)["partials"][0]["worker"], "live/swap@1.0.0");

    // A broken replacement: reported, and the old version keeps serving.
    std::fs::write(dir.path().join("swap.wasm"), b"not wasm at all")?;
    let json = wait_for("reporting the broken file", &|json| json["errors"].as_array().is_some_and(|e| !e.is_empty()))?;
    assert_eq!(version(&json).as_deref(), Some("1.0.0"));
    let table = String::from_utf8_lossy(&anocast(&["plugins", "list", "--url", &url]).stdout).into_owned();
    assert!(table.contains("its previous version keeps serving"), "{table}");

    // Fixed: the new version serves; the compiled code went to the data folder.
    std::fs::copy(guests::SWAP_V2, dir.path().join("swap.wasm"))?;
    let json = wait_for("loading swap 2.0.0", &|json| version(json).as_deref() == Some("2.0.0"))?;
    assert_eq!(json["errors"], serde_json::json!([]));
    assert_eq!(json["cache"]["misses"], 2, "{json}");
    assert_eq!(std::fs::read_dir(data.path().join("cache"))?.count(), 2);

    // A quiet folder is not rescanned: reading the files (as each rescan
    // does) is no change.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let settled = list()["rescans"].as_u64();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(list()["rescans"].as_u64(), settled);

    // Removed: unloaded.
    std::fs::remove_file(dir.path().join("swap.wasm"))?;
    wait_for("unloading swap", &|json| json["plugins"].as_array().is_some_and(Vec::is_empty))?;
    Ok(())
}

#[test]
fn help_explains_the_commands() {
    let out = anocast(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["serve", "dispatch", "run", "plugins", "Exit status", "no_interest", "ANOCAST_LOG"] {
        assert!(help.contains(needle), "--help lacks {needle}: {help}");
    }
    let out = anocast(&["dispatch", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["@FILE", "--timeout", "--grace", "--url", "ANOCAST_URL"] {
        assert!(help.contains(needle), "dispatch --help lacks {needle}: {help}");
    }
}
