//! `fraud-check`: reviews `orders.created` and `orders.placed` only when
//! the amount is above 1,000: payload-dependent interest. Smaller orders get
//! no partial from it.

use anocast_sdk::{PluginInfo, Task, Worker, export, json};
use serde::{Deserialize, Serialize};

const THRESHOLD: f64 = 1000.0;

struct FraudCheck;

#[derive(Deserialize)]
struct Order {
    amount: f64,
    #[serde(default)]
    country: String,
}

#[derive(Serialize)]
struct Review {
    risk: &'static str,
    reasons: Vec<String>,
}

impl Worker for FraudCheck {
    fn describe() -> PluginInfo {
        PluginInfo::new("fraud-check", env!("CARGO_PKG_VERSION"), &["orders.created", "orders.placed"])
    }

    fn interested(task: Task) -> bool {
        task.json::<Order>().is_ok_and(|order| order.amount > THRESHOLD)
    }

    fn handle(task: Task) -> Result<Vec<u8>, String> {
        let order: Order = task.json()?;
        let mut reasons = vec![format!("amount {} is above {THRESHOLD}", order.amount)];
        if order.amount > 10.0 * THRESHOLD {
            reasons.push("amount is ten times the threshold".to_owned());
        }
        if order.country.is_empty() {
            reasons.push("no country given".to_owned());
        }
        let risk = if reasons.len() > 1 { "high" } else { "review" };
        json(&Review { risk, reasons })
    }
}

export!(FraudCheck);
