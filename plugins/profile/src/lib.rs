//! `profile`: the form-submission example (with `newsletter`). On
//! `forms.submitted` it stages the submitted profile under its e-mail
//! address, and fails a form whose e-mail is not an address, which aborts
//! the whole submission: nothing any worker staged for it is applied. The
//! commit that follows a submission where every worker succeeded is the
//! follow-up message saying the submission succeeded. On `forms.lookup` it
//! answers the saved profile of an e-mail address.

use anocast_sdk::{PluginInfo, Task, Worker, export, json, log, store};
use serde::{Deserialize, Serialize};

struct Profile;

/// A submitted form.
#[derive(Deserialize, Serialize)]
struct Form {
    email: String,
    name: String,
    #[serde(default)]
    newsletter: bool,
}

/// A lookup: whose profile.
#[derive(Deserialize)]
struct Lookup {
    email: String,
}

fn key(email: &str) -> String {
    format!("profile:{email}")
}

impl Worker for Profile {
    fn describe() -> PluginInfo {
        PluginInfo::new("profile", env!("CARGO_PKG_VERSION"), &["forms.*"])
    }

    fn interested(task: Task) -> bool {
        match task.topic.as_str() {
            "forms.submitted" => task.json::<Form>().is_ok(),
            "forms.lookup" => task.json::<Lookup>().is_ok(),
            _ => false,
        }
    }

    fn handle(task: Task) -> Result<Vec<u8>, String> {
        if task.topic == "forms.lookup" {
            let lookup: Lookup = task.json()?;
            return Ok(store::get(&key(&lookup.email))?.unwrap_or_else(|| b"null".to_vec()));
        }
        let form: Form = task.json()?;
        let valid = form.email.split_once('@').is_some_and(|(user, host)| !user.is_empty() && host.contains('.'));
        if !valid {
            return Err(format!("{:?} is not an e-mail address", form.email));
        }
        store::set(&key(&form.email), &json(&form)?)?;
        Ok(format!("profile of {} staged", form.email).into_bytes())
    }

    fn settle(request_id: String, committed: bool) {
        match committed {
            true => log::info(&format!("FormSubmissionSucceed ({request_id}): profile saved")),
            false => log::info(&format!("submission {request_id} failed: profile dropped")),
        }
    }
}

export!(Profile);
