//! `legacy`: an echo worker built against the 0.1.0 contract
//! (`wit/v0.1.0`, no nested dispatch), which the host must go on loading and
//! running next to 0.2.0 plugins.

mod bindings {
    #![allow(clippy::too_many_arguments)]
    anocast_sdk::wit_bindgen::generate!({
        path: "../../wit/v0.1.0",
        world: "anocast:worker/worker",
        runtime_path: "anocast_sdk::wit_bindgen::rt",
    });
}

use bindings::anocast::worker::host::{Level, log};
use bindings::anocast::worker::types::{PluginInfo, Task};

struct Legacy;

impl bindings::Guest for Legacy {
    fn describe() -> PluginInfo {
        PluginInfo { name: "legacy".into(), version: "0.1.0".into(), topics: vec!["echo.>".into()] }
    }

    fn interested(_task: Task) -> bool {
        true
    }

    fn handle(task: Task) -> Result<Vec<u8>, String> {
        log(Level::Info, "a 0.1.0 plugin at work");
        let mut reply = b"legacy:".to_vec();
        reply.extend_from_slice(&task.payload);
        Ok(reply)
    }
}

bindings::export!(Legacy with_types_in bindings);
