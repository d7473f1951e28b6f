//! A webhook's last success and last failure, for `leadhook webhooks list`
//! (through the status table): what an operator asks first about a partner
//! endpoint. Recorded on every attempt; a mutex, held for a few stores.

use std::sync::Mutex;
use std::time::SystemTime;

use super::retry::Failure;

#[derive(Debug, Default)]
pub(crate) struct Activity(Mutex<Last>);

/// The last of each, as shown.
#[derive(Debug, Default, Clone)]
pub(crate) struct Last {
    pub(crate) success: Option<SystemTime>,
    /// When, and the failure in short (status, or what went wrong).
    pub(crate) failure: Option<(SystemTime, String)>,
}

impl Activity {
    pub(crate) fn record(&self, outcome: Result<(), &Failure>) {
        let Ok(mut last) = self.0.lock() else { return };
        match outcome {
            Ok(()) => last.success = Some(SystemTime::now()),
            Err(failure) => last.failure = Some((SystemTime::now(), short(failure))),
        }
    }

    pub(crate) fn last(&self) -> Last {
        self.0.lock().map(|last| last.clone()).unwrap_or_default()
    }
}

/// At most 200 characters: a status line, not a body.
fn short(failure: &Failure) -> String {
    let text = failure.to_string();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}
