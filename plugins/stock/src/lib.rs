//! `stock`: the order-flow example's warehouse. On `stock.reserve` (a
//! sub-task `checkout` dispatches) it takes the items from the stock: each
//! level is read from the store (10 of anything to start with) and the new
//! level is staged, so it only goes down if the whole order commits. An
//! item short of stock fails the reservation.

use anocast_sdk::{PluginInfo, Task, Worker, export, json, log, store};
use serde::{Deserialize, Serialize};

/// Units of an item never seen before.
const INITIAL: u32 = 10;

struct Stock;

#[derive(Deserialize)]
struct Request {
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    sku: String,
    #[serde(default = "one")]
    qty: u32,
}

fn one() -> u32 {
    1
}

#[derive(Serialize)]
struct Reserved {
    sku: String,
    qty: u32,
    left: u32,
}

impl Worker for Stock {
    fn describe() -> PluginInfo {
        PluginInfo::new("stock", env!("CARGO_PKG_VERSION"), &["stock.reserve"])
    }

    fn interested(task: Task) -> bool {
        task.json::<Request>().is_ok()
    }

    fn handle(task: Task) -> Result<Vec<u8>, String> {
        let request: Request = task.json()?;
        let mut reserved = Vec::new();
        for item in request.items {
            let key = format!("stock:{}", item.sku);
            let level = match store::get(&key)? {
                Some(bytes) => String::from_utf8_lossy(&bytes).parse().map_err(|_| format!("bad level for {key}"))?,
                None => INITIAL,
            };
            let Some(left) = level.checked_sub(item.qty) else {
                return Err(format!("{}: {} wanted, {level} in stock", item.sku, item.qty));
            };
            store::set(&key, left.to_string().as_bytes())?;
            reserved.push(Reserved { sku: item.sku, qty: item.qty, left });
        }
        json(&reserved)
    }

    fn settle(request_id: String, committed: bool) {
        let what = if committed { "taken from the stock" } else { "released" };
        log::info(&format!("reservation for {request_id} {what}"));
    }
}

export!(Stock);
