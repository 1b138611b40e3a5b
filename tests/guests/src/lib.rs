//! Shared code of the test guests: [`echo_worker!`] makes a worker that is
//! interested in every task and answers with the payload it was given.

/// Defines and exports an echo worker named `$name` on `$topics`; with
/// `stateless`, it declares itself stateless (and so runs in warm instances).
#[macro_export]
macro_rules! echo_worker {
    ($name:literal, [$($topic:literal),* $(,)?] $(, $stateless:ident)?) => {
        struct Echo;

        impl anocast_sdk::Worker for Echo {
            fn describe() -> anocast_sdk::PluginInfo {
                anocast_sdk::PluginInfo::new($name, "1.0.0", &[$($topic),*])
            }

            fn interested(_task: anocast_sdk::Task) -> bool {
                true
            }

            fn handle(task: anocast_sdk::Task) -> Result<Vec<u8>, String> {
                Ok(task.payload)
            }
        }

        anocast_sdk::export!(Echo $(, $stateless)?);
    };
}

/// Defines and exports a worker named `$name` at `$version` on `$topics`
/// that answers with its version, after sleeping for the number of
/// milliseconds in the payload (if any): the hot-reload tests tell versions
/// apart by it, and keep a task under way while they swap.
#[macro_export]
macro_rules! versioned_worker {
    ($name:literal, $version:literal, [$($topic:literal),* $(,)?]) => {
        struct Versioned;

        impl anocast_sdk::Worker for Versioned {
            fn describe() -> anocast_sdk::PluginInfo {
                anocast_sdk::PluginInfo::new($name, $version, &[$($topic),*])
            }

            fn interested(_task: anocast_sdk::Task) -> bool {
                true
            }

            fn handle(task: anocast_sdk::Task) -> Result<Vec<u8>, String> {
                if let Ok(ms) = task.text().trim().parse::<u64>() {
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                Ok($version.as_bytes().to_vec())
            }
        }

        anocast_sdk::export!(Versioned);
    };
}

/// Defines and exports a relay worker named `$name` on `$topic`, for the
/// nested-dispatch tests; see [`relay`].
#[macro_export]
macro_rules! relay_worker {
    ($name:literal, $topic:literal) => {
        struct Relay;

        impl anocast_sdk::Worker for Relay {
            fn describe() -> anocast_sdk::PluginInfo {
                anocast_sdk::PluginInfo::new($name, "1.0.0", &[$topic])
            }

            fn interested(_task: anocast_sdk::Task) -> bool {
                true
            }

            fn handle(task: anocast_sdk::Task) -> Result<Vec<u8>, String> {
                Ok($crate::relay($name, &task).into_bytes())
            }
        }

        anocast_sdk::export!(Relay);
    };
}

/// A relay's work. The payload is a comma-separated list of hops:
///
/// - none left: answer `NAME(depth D, ancestors A)`;
/// - `sleep=MS` first: sleep that long, then answer as above;
/// - a topic first: dispatch the rest of the list on it as a sub-task, and
///   answer `NAME[STATUS: PAYLOADS]` with the sub-task's outcome (its ok
///   payloads joined by `;`, its missing workers after `missing`), or
///   `NAME refused: ERROR` when the sub-dispatch was refused.
pub fn relay(name: &str, task: &anocast_sdk::Task) -> String {
    let text = task.text();
    let hops: Vec<&str> = text.split(',').map(str::trim).filter(|h| !h.is_empty()).collect();
    let leaf = || format!("{name}(depth {}, ancestors {})", task.depth, task.ancestry.len());
    match hops.split_first() {
        None => leaf(),
        Some((hop, _)) if hop.starts_with("sleep=") => {
            let ms = hop["sleep=".len()..].parse().unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            leaf()
        }
        Some((topic, rest)) => match anocast_sdk::dispatch(topic, rest.join(",").as_bytes()) {
            Ok(outcome) => {
                let payloads: Vec<String> =
                    outcome.payloads().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
                let mut text = format!("{name}[{}: {}", outcome.status, payloads.join(";"));
                if !outcome.missing.is_empty() {
                    text.push_str(&format!(" missing {}", outcome.missing.join(";")));
                }
                text.push(']');
                text
            }
            Err(err) => format!("{name} refused: {err}"),
        },
    }
}

/// Defines and exports a staging worker named `$name` on `stage.>`, for
/// the compensation tests; see [`stage`].
#[macro_export]
macro_rules! stager_worker {
    ($name:literal) => {
        struct Stager;

        impl anocast_sdk::Worker for Stager {
            fn describe() -> anocast_sdk::PluginInfo {
                anocast_sdk::PluginInfo::new($name, "1.0.0", &["stage.>"])
            }

            fn interested(_task: anocast_sdk::Task) -> bool {
                true
            }

            fn handle(task: anocast_sdk::Task) -> Result<Vec<u8>, String> {
                $crate::stage($name, &task)
            }

            fn settle(request_id: String, committed: bool) {
                anocast_sdk::log::info(&format!("settled {request_id}: committed {committed}"));
            }
        }

        anocast_sdk::export!(Stager);
    };
}

/// A stager's work. On `stage.read` it answers the committed value of the
/// key in the payload (`none` when there is none). Otherwise the payload
/// holds `;`-separated commands, each optionally prefixed with `NAME:` to
/// concern only the worker of that name: `KEY=VALUE` stages a write,
/// `-KEY` a removal, `sleep=MS` sleeps, and `fail` makes `handle` fail
/// (after staging). It answers with the number of writes it staged.
pub fn stage(name: &str, task: &anocast_sdk::Task) -> Result<Vec<u8>, String> {
    use anocast_sdk::store;
    let text = task.text();
    if task.topic == "stage.read" {
        let value = store::get(text.trim())?;
        return Ok(value.unwrap_or_else(|| b"none".to_vec()));
    }
    let mut staged = 0;
    let mut fail = false;
    for command in text.split(';').map(str::trim).filter(|c| !c.is_empty()) {
        let command = match command.split_once(':') {
            Some((target, rest)) if target == name => rest,
            Some(_) => continue,
            None => command,
        };
        if command == "fail" {
            fail = true;
        } else if let Some(ms) = command.strip_prefix("sleep=") {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
        } else if let Some(key) = command.strip_prefix('-') {
            store::delete(key)?;
            staged += 1;
        } else if let Some((key, value)) = command.split_once('=') {
            store::set(key, value.as_bytes())?;
            staged += 1;
        }
    }
    if fail {
        return Err(format!("{name} failed on purpose after staging {staged} writes"));
    }
    Ok(format!("{staged}").into_bytes())
}

/// A worker that counts, in a global, the tasks its instance served, and
/// answers that number on `NAME.count` (and on `NAME.slow`, after 200 ms);
/// on `NAME.trap` it panics. With
/// `stateless`, it declares itself stateless (and so sees warm instances).
#[macro_export]
macro_rules! counter_worker {
    ($name:literal $(, $stateless:ident)?) => {
        static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

        struct Counter;

        impl anocast_sdk::Worker for Counter {
            fn describe() -> anocast_sdk::PluginInfo {
                anocast_sdk::PluginInfo::new($name, "0.1.0", &[concat!($name, ".*")])
            }

            fn interested(_task: anocast_sdk::Task) -> bool {
                true
            }

            fn handle(task: anocast_sdk::Task) -> Result<Vec<u8>, String> {
                let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if task.topic.ends_with(".trap") {
                    panic!("trapping after {served} tasks");
                }
                if task.topic.ends_with(".slow") {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Ok(served.to_string().into_bytes())
            }
        }

        anocast_sdk::export!(Counter $(, $stateless)?);
    };
}
