//! Shared code of the test guests: [`echo_worker!`] makes a worker that is
//! interested in every task and answers with the payload it was given.

/// Defines and exports an echo worker named `$name` on `$topics`.
#[macro_export]
macro_rules! echo_worker {
    ($name:literal, [$($topic:literal),* $(,)?]) => {
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

        anocast_sdk::export!(Echo);
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
