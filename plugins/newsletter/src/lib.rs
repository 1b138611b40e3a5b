//! `newsletter`: the form-submission example (with `profile`). On
//! `forms.submitted` it takes part only when the form asks for the
//! newsletter, and stages the subscription; it is applied only if the whole
//! submission succeeds. On `forms.lookup` it answers whether an e-mail
//! address is subscribed.

use anocast_sdk::{PluginInfo, Task, Worker, export, json, log, store};
use serde::{Deserialize, Serialize};

struct Newsletter;

#[derive(Deserialize)]
struct Form {
    email: String,
    #[serde(default)]
    newsletter: bool,
}

#[derive(Serialize)]
struct Subscription<'a> {
    email: &'a str,
    subscribed: bool,
}

fn key(email: &str) -> String {
    format!("subscriber:{email}")
}

impl Worker for Newsletter {
    fn describe() -> PluginInfo {
        PluginInfo::new("newsletter", env!("CARGO_PKG_VERSION"), &["forms.*"])
    }

    fn interested(task: Task) -> bool {
        match task.topic.as_str() {
            "forms.submitted" => task.json::<Form>().is_ok_and(|form| form.newsletter),
            "forms.lookup" => task.json::<Form>().is_ok(),
            _ => false,
        }
    }

    fn handle(task: Task) -> Result<Vec<u8>, String> {
        let form: Form = task.json()?;
        if task.topic == "forms.lookup" {
            let subscribed = store::get(&key(&form.email))?.is_some();
            return json(&Subscription { email: &form.email, subscribed });
        }
        store::set(&key(&form.email), b"1")?;
        json(&Subscription { email: &form.email, subscribed: true })
    }

    fn settle(request_id: String, committed: bool) {
        let what = if committed { "confirmed" } else { "dropped" };
        log::info(&format!("subscription of submission {request_id} {what}"));
    }
}

export!(Newsletter);
