//! The files of a new plugin (`anocast new NAME --lang LANG`): a worker
//! that subscribes to `NAME.hello` and answers `hello, <payload>`, with an
//! error partial when the payload is not text (not UTF-8; in C, holding a
//! NUL byte). It builds and answers as written, in every language.

use std::path::{Path, PathBuf};

use crate::Lang;

/// Where a Rust plugin gets `anocast-sdk` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sdk {
    /// A checkout's `guest-sdk` folder, as a path relative to the plugin
    /// folder (or absolute).
    Path(PathBuf),
    /// The project's git repository.
    Git(String),
}

/// Whether `name` can name a plugin: 1-64 of lowercase ASCII letters,
/// digits, `-` and `_`, starting with a letter (the host's rule for
/// plugin names, plus a letter first so that it is a valid crate name).
pub fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid plugin name {:?}: use 1-64 lowercase letters, digits, '-' and '_', starting with a letter",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// The files (path inside the plugin folder, contents) of a new plugin.
pub fn files(name: &str, lang: Lang, sdk: &Sdk) -> Vec<(PathBuf, String)> {
    let fill = |template: &str| template.replace("{{name}}", name).replace("{{crate}}", &name.replace('-', "_"));
    let mut files: Vec<(PathBuf, String)> = match lang {
        Lang::Rust => {
            let sdk = match sdk {
                Sdk::Path(path) => format!("path = {:?}", path.display().to_string()),
                Sdk::Git(url) => format!("git = {url:?}"),
            };
            vec![
                ("Cargo.toml".into(), fill(RUST_MANIFEST).replace("{{sdk}}", &sdk)),
                (Path::new("src").join("lib.rs"), fill(RUST_LIB)),
                (".gitignore".into(), "target/\n".into()),
            ]
        }
        Lang::Python => vec![("app.py".into(), fill(PYTHON_APP)), (".gitignore".into(), "__pycache__/\n".into())],
        Lang::JavaScript => vec![("app.js".into(), fill(JS_APP))],
        Lang::C => vec![("plugin.c".into(), fill(C_PLUGIN)), (".gitignore".into(), "bindings/\n".into())],
    };
    files.push((
        "README.md".into(),
        fill(README).replace("{{lang}}", lang.title()).replace("{{source}}", lang.marker()),
    ));
    if lang != Lang::Rust {
        files.push((crate::stateless::SETTINGS_FILE.into(), SETTINGS.into()));
    }
    files
}

const README: &str = "\
# {{name}}

An anocast worker plugin in {{lang}}. It subscribes to `{{name}}.hello` and
answers `hello, <payload>`; a payload it cannot read as text gets an error
partial.
The code is in `{{source}}`.

Build it into `{{name}}.wasm` and try it:

```sh
anocast build . -o .
anocast plugins check {{name}}.wasm
mkdir -p ../serve && cp {{name}}.wasm ../serve/
anocast run --plugins ../serve {{name}}.hello world
```

While developing, `anocast serve --plugins ../serve` reloads the plugin each
time a new `{{name}}.wasm` is copied in. See docs/writing-plugins.md in the
anocast repository for the contract, the tools and the limits.
";

const SETTINGS: &str = "\
# Build settings read by `anocast build`.
#
# stateless = true declares that the plugin keeps nothing from one task for
# the next: the host may then serve many tasks with one warm instance
# instead of a fresh one each (much faster for Python and JavaScript).
# Leave it false if the plugin keeps any per-task data in globals.
stateless = false
";

const RUST_MANIFEST: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
anocast-sdk = { {{sdk}} }

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true

# A plugin builds on its own, also when its folder sits inside another
# Cargo workspace.
[workspace]
"#;

const RUST_LIB: &str = r#"//! `{{name}}`: an anocast worker plugin.

use anocast_sdk::{PluginInfo, Task, Worker, export, log};

struct Plugin;

impl Worker for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new("{{name}}", env!("CARGO_PKG_VERSION"), &["{{name}}.hello"])
    }

    fn interested(task: Task) -> bool {
        !task.payload.is_empty()
    }

    fn handle(task: Task) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(&task.payload).map_err(|_| "the payload is not UTF-8".to_string())?;
        log::info(&format!("greeting {} bytes", text.len()));
        Ok(format!("hello, {text}").into_bytes())
    }
}

// `export!(Plugin, stateless)` would let the host reuse warm instances.
export!(Plugin);
"#;

const PYTHON_APP: &str = r#""""`{{name}}`: an anocast worker plugin in Python (componentize-py)."""

import wit_world
from wit_world.imports import host, types
from componentize_py_types import Err


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(name="{{name}}", version="0.1.0", topics=["{{name}}.hello"])

    def interested(self, task: types.Task) -> bool:
        return len(task.payload) > 0

    def handle(self, task: types.Task) -> bytes:
        try:
            text = task.payload.decode("utf-8")
        except UnicodeDecodeError:
            raise Err("the payload is not UTF-8")
        host.log(host.Level.INFO, f"greeting {len(text)} characters")
        return f"hello, {text}".encode()

    def settle(self, request_id: str, committed: bool) -> None:
        pass
"#;

const JS_APP: &str = r#"// `{{name}}`: an anocast worker plugin in JavaScript (componentize-js).

import { log } from 'anocast:worker/host@0.2.0';

const decoder = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

export function describe() {
  return { name: '{{name}}', version: '0.1.0', topics: ['{{name}}.hello'] };
}

export function interested(task) {
  return task.payload.length > 0;
}

export function handle(task) {
  let text;
  try {
    text = decoder.decode(task.payload);
  } catch {
    throw 'the payload is not UTF-8'; // an error partial
  }
  log('info', `greeting ${text.length} characters`);
  return encoder.encode(`hello, ${text}`);
}

export function settle(requestId, committed) {}
"#;

const C_PLUGIN: &str = r#"// `{{name}}`: an anocast worker plugin in C (wit-bindgen's C generator,
// clang for wasm32-wasi). `anocast build` generates `worker.h` (and
// `worker.c`) into `bindings/`, where your editor finds the declarations.
//
// Ownership: the arguments of an export (task, request_id) are ours to free
// before returning; what an export returns must come from malloc (the
// generated code frees it); the arguments of an import are only borrowed.

#include <stdlib.h>
#include <string.h>

#include "worker.h"

void exports_worker_describe(worker_plugin_info_t *ret) {
    worker_string_dup(&ret->name, "{{name}}");
    worker_string_dup(&ret->version, "0.1.0");
    ret->topics.len = 1;
    ret->topics.ptr = malloc(sizeof(worker_string_t));
    worker_string_dup(&ret->topics.ptr[0], "{{name}}.hello");
}

bool exports_worker_interested(worker_task_t *task) {
    bool wanted = task->payload.len > 0;
    worker_task_free(task);
    return wanted;
}

bool exports_worker_handle(worker_task_t *task, worker_list_u8_t *ret, worker_string_t *err) {
    const uint8_t *text = task->payload.ptr;
    size_t len = task->payload.len;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == 0) {
            worker_task_free(task);
            worker_string_dup(err, "the payload holds a NUL byte");
            return false;
        }
    }
    worker_string_t message;
    worker_string_set(&message, "greeting a payload"); // borrowed by the import
    anocast_worker_host_log(ANOCAST_WORKER_HOST_LEVEL_INFO, &message);
    static const char prefix[] = "hello, ";
    size_t n = sizeof(prefix) - 1;
    ret->len = n + len;
    ret->ptr = malloc(ret->len);
    memcpy(ret->ptr, prefix, n);
    memcpy(ret->ptr + n, text, len);
    worker_task_free(task);
    return true;
}

void exports_worker_settle(worker_string_t *request_id, bool committed) {
    (void)committed;
    worker_string_free(request_id);
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_hosts_rule() {
        assert!(valid_name("shout").is_ok());
        assert!(valid_name("big_orders-2").is_ok());
        for bad in ["", "Shout", "2fast", "a.b", "a b", &"x".repeat(65)] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_language_gets_its_marker_file_and_the_name_everywhere() {
        for lang in Lang::ALL {
            let files = files("shout", lang, &Sdk::Git("https://example.invalid/anocast".into()));
            assert!(files.iter().any(|(p, _)| p == Path::new(lang.marker())), "{lang}");
            for (path, text) in &files {
                assert!(!text.contains("{{"), "{lang}: {} keeps a placeholder", path.display());
            }
            let source = files.iter().find(|(p, _)| p == Path::new(lang.marker())).map(|(_, t)| t.as_str());
            if lang != Lang::Rust {
                assert!(source.is_some_and(|s| s.contains("shout.hello")), "{lang}");
            }
        }
    }
}
