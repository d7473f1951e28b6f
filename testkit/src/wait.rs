//! The one timeout and the one way to wait for something to become true.

use std::time::{Duration, Instant};

/// How long a test waits for what it expects before it fails. Generous: the
/// suite shares 2 cores with up to a dozen PostgreSQL servers.
pub const WAIT: Duration = Duration::from_secs(60);

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(20);

/// Checks `check` until it holds; after [`WAIT`] panics with `what` and
/// whatever `explain` says (a sidecar's log, say).
pub async fn eventually<F: AsyncFnMut() -> bool>(
    what: &str,
    explain: impl Fn() -> String,
    check: F,
) {
    eventually_within(WAIT, what, explain, check).await;
}

/// [`eventually`] with a timeout of its own, for waits that are part of what
/// a test asserts (e.g. "within 10 s").
pub async fn eventually_within<F: AsyncFnMut() -> bool>(
    timeout: Duration,
    what: &str,
    explain: impl Fn() -> String,
    mut check: F,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} (waited {timeout:?}); {}",
            explain()
        );
        tokio::time::sleep(POLL).await;
    }
}
