//! `cargo xtask fuzz`: the cargo-fuzz targets of `host/wire/fuzz` (the
//! reply envelope decoder and the interest-list entry parser).
//!
//! Runs on the stable toolchain with `--sanitizer none` (the decoders are
//! safe Rust; what the fuzzer looks for is a panic or a broken round
//! trip), installs cargo-fuzz when it is missing, and seeds each target's
//! corpus with the test vectors of `docs/protocol.md`, so that the fuzzer
//! starts from valid messages. Corpora live in `target/fuzz/corpus`.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::{cargo, root, run, step};

/// The fuzz targets, and the kind of `docs/protocol.md` vector each one's
/// corpus is seeded with.
const TARGETS: [(&str, Seed); 2] =
    [("envelope", Seed::Hex("reply-")), ("declaration", Seed::Text("declaration-entry"))];

enum Seed {
    /// Hex vectors whose name starts with this.
    Hex(&'static str),
    /// The text vector of this name.
    Text(&'static str),
}

/// Builds every target and runs each for `seconds`.
pub fn fuzz(seconds: u64) -> anyhow::Result<()> {
    if !installed("fuzz") {
        step("installing cargo-fuzz (cargo install cargo-fuzz --locked; about two minutes)");
        run(cargo().args(["install", "cargo-fuzz", "--locked"]), "cargo install cargo-fuzz")?;
    }
    let fuzz_dir = root().join("host/wire/fuzz");
    let target_dir = root().join("target/fuzz");
    let doc = std::fs::read_to_string(root().join("docs/protocol.md")).context("reading docs/protocol.md")?;
    step("cargo fuzz build (host/wire/fuzz, stable toolchain, no sanitizer)");
    run(
        cargo().current_dir(&fuzz_dir).args(["fuzz", "build", "--sanitizer", "none", "--target-dir"]).arg(&target_dir),
        "cargo fuzz build",
    )?;
    for (target, seed) in TARGETS {
        let corpus = target_dir.join("corpus").join(target);
        let seeds = seed_corpus(&doc, &seed, &corpus)?;
        step(&format!("cargo fuzz run {target} for {seconds} s (corpus seeded with {seeds} vector(s))"));
        run(
            cargo()
                .current_dir(&fuzz_dir)
                .args(["fuzz", "run", "--sanitizer", "none", "--target-dir"])
                .arg(&target_dir)
                .arg(target)
                .arg(&corpus)
                .args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=1"]),
            &format!("cargo fuzz run {target}"),
        )?;
    }
    Ok(())
}

/// Writes the matching vectors of `doc` into `corpus`; returns how many.
fn seed_corpus(doc: &str, seed: &Seed, corpus: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut count = 0;
    for (info, body) in fenced_blocks(doc) {
        let Some(name) = info.split_whitespace().find_map(|w| w.strip_prefix("vector=")) else { continue };
        let bytes = match seed {
            Seed::Hex(prefix) if info.starts_with("hex") && name.starts_with(prefix) => hex_block(&body)?,
            Seed::Text(wanted) if info.starts_with("text") && name == *wanted => body.trim().as_bytes().to_vec(),
            _ => continue,
        };
        std::fs::write(corpus.join(format!("vector-{name}")), bytes)?;
        count += 1;
    }
    anyhow::ensure!(count > 0, "docs/protocol.md has no vector to seed the fuzz corpus in {}", corpus.display());
    Ok(count)
}

/// The fenced code blocks of a Markdown text: (info string, body).
fn fenced_blocks(doc: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in doc.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The bytes of an annotated hex block (`#` starts a comment).
fn hex_block(body: &str) -> anyhow::Result<Vec<u8>> {
    let digits: String = body
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    anyhow::ensure!(digits.len().is_multiple_of(2), "odd number of hex digits in a vector of docs/protocol.md");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).context("bad hex in a vector of docs/protocol.md"))
        .collect()
}

/// Whether `cargo <name>` is installed.
fn installed(name: &str) -> bool {
    Command::new("cargo").args([name, "--version"]).output().is_ok_and(|o| o.status.success())
}
