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
