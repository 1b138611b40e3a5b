//! `inventory`: reserves the items of every `orders.created` task and
//! refuses orders with no items (an error partial).

use anocast_sdk::{PluginInfo, Task, Worker, export, json};
use serde::{Deserialize, Serialize};

struct Inventory;

#[derive(Deserialize)]
struct Order {
    #[serde(default)]
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
struct Reservation {
    reserved: Vec<String>,
    units: u32,
}

impl Worker for Inventory {
    fn describe() -> PluginInfo {
        PluginInfo::new("inventory", env!("CARGO_PKG_VERSION"), &["orders.*"])
    }

    fn interested(task: Task) -> bool {
        task.topic == "orders.created"
    }

    fn handle(task: Task) -> Result<Vec<u8>, String> {
        let order: Order = task.json()?;
        if order.items.is_empty() {
            return Err("order has no items to reserve".to_owned());
        }
        let units = order.items.iter().map(|i| i.qty).sum();
        json(&Reservation { reserved: order.items.into_iter().map(|i| i.sku).collect(), units })
    }
}

export!(Inventory);
