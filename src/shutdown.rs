//! The stop request (SIGTERM/SIGINT), as one named thing.
//!
//! A session is not cancelled when the process is asked to stop: each loop
//! selects on [`Shutdown::requested`] beside its work, so a stop while
//! streaming can still let deliveries finish and confirm them. After
//! tokio-rs/mini-redis's `shutdown.rs`.

use tokio::sync::watch;

/// Requests the shutdown every [`Shutdown`] of its pair listens for.
pub(crate) struct Trigger(watch::Sender<bool>);

impl Trigger {
    pub(crate) fn request(&self) {
        let _ = self.0.send(true);
    }
}

/// Listens for the stop request; clones listen for the same one.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown not yet requested, and what requests it.
    pub(crate) fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger(tx), Shutdown(rx))
    }

    /// Completes once a stop is requested, at once if it already was, or
    /// when the trigger is gone (nothing could request it any more).
    /// Cancel-safe: it can sit in a `select!` beside work, loop after loop.
    pub(crate) async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_request_reaches_every_clone_even_one_made_after_it() {
        let (trigger, mut shutdown) = Shutdown::new();
        let mut early = shutdown.clone();
        let waiting = tokio::spawn(async move { early.requested().await });
        let not_yet = tokio::time::timeout(Duration::from_millis(20), shutdown.requested()).await;
        assert!(not_yet.is_err(), "no stop was requested yet");
        trigger.request();
        waiting.await.unwrap();
        shutdown.requested().await;
        shutdown.clone().requested().await;
    }
}
