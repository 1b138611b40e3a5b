//! `checkout`: the order-flow example. On `orders.placed` (next to
//! `fraud-check`, which joins large orders) it asks the stock to reserve
//! the items by dispatching the sub-task `stock.reserve`, waits for its
//! outcome while its own task stays declared, and places the order only if
//! every item was reserved. A failed reservation fails the order, which
//! aborts every write staged for it (the stock's too).

use anocast_sdk::{PluginInfo, Task, Worker, dispatch, export, json};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

struct Checkout;

#[derive(Deserialize)]
struct Order {
    #[serde(default)]
    items: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct Placed<'a> {
    placed: bool,
    stock: Vec<&'a RawValue>,
}

impl Worker for Checkout {
    fn describe() -> PluginInfo {
        PluginInfo::new("checkout", env!("CARGO_PKG_VERSION"), &["orders.placed"])
    }

    fn interested(task: Task) -> bool {
        task.json::<Order>().is_ok_and(|order| !order.items.is_empty())
    }

    fn handle(task: Task) -> Result<Vec<u8>, String> {
        let order: Order = task.json()?;
        let request = json(&serde_json::json!({ "items": order.items }))?;
        let outcome = dispatch("stock.reserve", &request).map_err(|e| format!("could not ask the stock: {e}"))?;
        if !outcome.all_ok() {
            let why: Vec<String> = outcome.partials.iter().filter_map(|p| p.result.clone().err()).collect();
            return Err(format!("stock not reserved ({}): {}", outcome.status, why.join("; ")));
        }
        let stock = outcome
            .payloads()
            .map(|p| serde_json::from_slice::<&RawValue>(p).map_err(|e| format!("the stock answered {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        json(&Placed { placed: true, stock })
    }
}

export!(Checkout);
