//! `trap-describe`: a component of the right world whose `describe` traps;
//! the host must refuse to load it.

struct TrapDescribe;

impl anocast_sdk::Worker for TrapDescribe {
    fn describe() -> anocast_sdk::PluginInfo {
        panic!("no description today")
    }

    fn interested(_task: anocast_sdk::Task) -> bool {
        true
    }

    fn handle(_task: anocast_sdk::Task) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }
}

anocast_sdk::export!(TrapDescribe);
