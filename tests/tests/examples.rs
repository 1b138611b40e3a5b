//! The compensation and nesting examples of `plugins/`, end to end in
//! embedded mode: the form submission (`profile`, `newsletter`) and the
//! order flow (`checkout` dispatching `stock.reserve` to `stock`, next to
//! `fraud-check`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use anocast::Decision;
use anocast::{Host, Outcome, RuntimeConfig, Status, Topic};
use anocast_tests::{PluginDir, guests, options, payload_of, start_host, wait_until};
use serde_json::{Value, json};

async fn send(host: &Host, topic: &str, payload: Value) -> anyhow::Result<(Outcome, Value)> {
    let topic = Topic::parse(topic)?;
    let outcome = host.dispatcher().dispatch(topic, payload.to_string().into_bytes(), &options(500, 5000)).await?;
    let json: Value = serde_json::from_str(&outcome.to_json())?;
    Ok((outcome, json))
}

/// Waits until the node has settled `count` tasks' writes in all.
async fn settled(host: &Host, count: u64) -> anyhow::Result<()> {
    let stats = host.staging().stats();
    let settled = async || Ok(stats.committed.load(Ordering::Relaxed) + stats.aborted.load(Ordering::Relaxed) >= count);
    wait_until(&format!("{count} tasks' writes are settled"), Duration::from_secs(5), settled).await
}

#[tokio::test]
async fn a_form_submission_is_saved_only_if_every_worker_succeeds() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::PROFILE, guests::NEWSLETTER])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;

    let ann = json!({"email": "ann@example.com", "name": "Ann", "newsletter": true});
    let (outcome, json) = send(&host, "forms.submitted", ann).await?;
    assert_eq!((outcome.status, outcome.settle), (Status::Complete, Some(Decision::Commit)), "{json}");
    assert_eq!(outcome.partials.len(), 2);
    settled(&host, 2).await?;
    let (_, json) = send(&host, "forms.lookup", json!({"email": "ann@example.com"})).await?;
    assert_eq!(payload_of(&json, "profile")["name"], "Ann", "{json}");
    assert_eq!(payload_of(&json, "newsletter")["subscribed"], true, "{json}");

    // The profile refuses the e-mail: the newsletter's subscription, staged
    // meanwhile, is dropped with it.
    let bob = json!({"email": "bob-at-example", "name": "Bob", "newsletter": true});
    let (outcome, json) = send(&host, "forms.submitted", bob).await?;
    assert_eq!(outcome.settle, Some(Decision::Abort), "{json}");
    assert_eq!(payload_of(&json, "profile"), "\"bob-at-example\" is not an e-mail address");
    // (The profile staged nothing; the newsletter's write is aborted.)
    settled(&host, 3).await?;
    assert_eq!(host.staging().stats().aborted.load(Ordering::Relaxed), 1);
    let (_, json) = send(&host, "forms.lookup", json!({"email": "bob-at-example"})).await?;
    assert_eq!(payload_of(&json, "profile"), &Value::Null, "{json}");
    assert_eq!(payload_of(&json, "newsletter")["subscribed"], false, "{json}");
    let hooks = &host.staging().stats().hooks;
    let heard = async || Ok(hooks.load(Ordering::Relaxed) >= 3);
    wait_until("each worker that staged hears how it ended", Duration::from_secs(5), heard).await?;
    Ok(())
}

#[tokio::test]
async fn an_order_reserves_stock_through_a_sub_task_and_a_failure_reserves_nothing() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[guests::CHECKOUT, guests::STOCK, guests::FRAUD_CHECK, guests::INVENTORY])?;
    let host = start_host(&dir, RuntimeConfig::default()).await?;
    let order =
        |qty: u32, amount: u32| json!({"amount": amount, "country": "NL", "items": [{"sku": "lamp", "qty": qty}]});

    // A large order: fraud-check and checkout declare; checkout dispatches
    // stock.reserve, which stock answers; then both reply.
    let (outcome, json) = send(&host, "orders.placed", order(2, 1500)).await?;
    let workers: Vec<&str> = outcome.partials.iter().map(|p| p.worker.plugin.as_str()).collect();
    assert_eq!(workers, ["checkout", "fraud-check"], "{json}");
    assert_eq!(outcome.settle, Some(Decision::Commit), "{json}");
    assert_eq!(
        payload_of(&json, "checkout"),
        &json!({"placed": true, "stock": [[{"sku": "lamp", "qty": 2, "left": 8}]]})
    );
    settled(&host, 1).await?;
    let (_, json) = send(&host, "orders.placed", order(2, 80)).await?;
    assert_eq!(payload_of(&json, "checkout")["stock"][0][0]["left"], 6, "the first order's reservation was committed");
    settled(&host, 2).await?;

    // A lamp (staged) and too many sofas: stock fails, so checkout fails,
    // so the lamp's staged reservation is dropped too.
    let two = json!({"amount": 80, "items": [{"sku": "lamp", "qty": 1}, {"sku": "sofa", "qty": 40}]});
    let (outcome, json) = send(&host, "orders.placed", two).await?;
    assert_eq!(outcome.settle, Some(Decision::Abort), "{json}");
    assert_eq!(payload_of(&json, "checkout"), "stock not reserved (complete): sofa: 40 wanted, 10 in stock");
    settled(&host, 3).await?;
    assert_eq!(host.staging().stats().aborted.load(Ordering::Relaxed), 1);
    let (_, json) = send(&host, "orders.placed", order(1, 80)).await?;
    assert_eq!(payload_of(&json, "checkout")["stock"][0][0]["left"], 5, "the failed order took nothing");
    Ok(())
}
