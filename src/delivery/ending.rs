//! How a session's deliveries end when it winds down for a reload: quickly,
//! and without losing or repeating anything. A request in flight finishes
//! (cutting it off could make the receiver see it twice); a change waiting
//! for its next attempt stops waiting and is left unhandled, so the next
//! session sends it again. A webhook being removed or disabled is *retired*
//! instead: what it still holds goes to dead letters, with the reason, so
//! nothing vanishes silently.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

/// Whether a session is winding down, and which webhooks it retires.
#[derive(Debug, Clone, Default)]
pub(crate) enum Ending {
    #[default]
    Running,
    /// Winding down for a reload. Webhook name → why it is retired.
    Reload {
        retire: Arc<HashMap<String, String>>,
    },
}

/// What a delivery of webhook `name` does now.
pub(super) enum Verdict {
    /// Go on.
    Continue,
    /// Leave the change unhandled: the next session sends it again.
    Abandon,
    /// Dead-letter the change with this reason.
    Retire(String),
}

impl Ending {
    pub(super) fn verdict(&self, name: &str) -> Verdict {
        match self {
            Ending::Running => Verdict::Continue,
            Ending::Reload { retire } => match retire.get(name) {
                Some(reason) => Verdict::Retire(reason.clone()),
                None => Verdict::Abandon,
            },
        }
    }
}

/// Resolves once the session winds down; never if it cannot any more (the
/// sender is gone). Subscribes when first polled, so only waits pay for it.
pub(super) async fn winding_down(ending: &watch::Receiver<Ending>) {
    let mut ending = ending.clone();
    if ending
        .wait_for(|e| !matches!(e, Ending::Running))
        .await
        .is_err()
    {
        std::future::pending::<()>().await;
    }
}
