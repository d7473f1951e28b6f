//! When to try a delivery again, and after how long. Pure: the worker asks,
//! this answers, so the rules are testable without a clock or a network.

use std::time::{Duration, SystemTime};

use crate::config::DeliveryConfig;

/// Statuses that say "later": their `Retry-After` is honoured.
const RETRY_AFTER_STATUSES: [u16; 2] = [429, 503];

/// How one attempt went, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    Status {
        status: u16,
        retry_after: Option<Duration>,
        location: Option<String>,
    },
    Timeout,
    Connect(String),
    Other(String),
}

impl Failure {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// 429 or 503: the endpoint is overloaded, not broken.
    pub(crate) fn is_overload(&self) -> bool {
        self.status()
            .is_some_and(|s| RETRY_AFTER_STATUSES.contains(&s))
    }

    /// The endpoint looks down rather than unwilling: no connection, no
    /// answer, or a 5xx other than 503 (which is overload). What opens a
    /// circuit; a 4xx or a redirect does not.
    pub(crate) fn is_endpoint_down(&self) -> bool {
        match self {
            Failure::Status { status, .. } => (500..600).contains(status) && *status != 503,
            Failure::Timeout | Failure::Connect(_) | Failure::Other(_) => true,
        }
    }

    /// The `Retry-After` of an overloaded endpoint's answer.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status {
                retry_after: Some(wait),
                ..
            } if self.is_overload() => Some(*wait),
            _ => None,
        }
    }

    /// The metric label of a failed attempt.
    pub(crate) fn result_label(&self) -> &'static str {
        match self {
            Failure::Status { .. } => "http_error",
            Failure::Timeout => "timeout",
            Failure::Connect(_) | Failure::Other(_) => "connect_error",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status {
                status,
                location: Some(location),
                ..
            } => {
                write!(
                    f,
                    "HTTP {status} redirect to {location} (redirects are not followed)"
                )
            }
            Failure::Status { status, .. } => write!(f, "HTTP {status}"),
            Failure::Timeout => f.write_str("no response within the timeout"),
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Other(e) => write!(f, "request failed: {e}"),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    RetryAfter(Duration),
    /// The retry window (or `max_attempts`) ran out, or a status listed as
    /// final: dead-letter it.
    GiveUp,
}

/// How far a change's retrying has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tried {
    /// Attempts so far, this failed one included (1-based).
    pub(crate) attempts: u32,
    /// Since its first attempt.
    pub(crate) since_first: Duration,
}

/// Decides after a failed attempt. `jitter` is a number in [0, 1) that
/// spreads retries of many changes apart.
pub(crate) fn next(policy: &DeliveryConfig, failure: &Failure, tried: Tried, jitter: f64) -> Next {
    decide(policy, failure, tried, jitter, true)
}

/// [`next`] for an attempt the open circuit answered with another change's
/// failure: that status is never final for this change, which was not sent.
pub(crate) fn next_skipped(
    policy: &DeliveryConfig,
    failure: &Failure,
    tried: Tried,
    jitter: f64,
) -> Next {
    decide(policy, failure, tried, jitter, false)
}

fn decide(
    policy: &DeliveryConfig,
    failure: &Failure,
    tried: Tried,
    jitter: f64,
    may_be_final: bool,
) -> Next {
    use crate::config::OnExhausted;
    let is_final = may_be_final
        && failure
            .status()
            .is_some_and(|s| policy.no_retry_statuses.contains(&s));
    let exhausted = tried.since_first >= policy.retry_for
        || policy.max_attempts.is_some_and(|max| tried.attempts >= max);
    if is_final || exhausted {
        return match policy.on_exhausted {
            OnExhausted::DeadLetter => Next::GiveUp,
            // Blocking keeps trying a final status too: the receiver must see it.
            OnExhausted::Block => Next::RetryAfter(policy.max_backoff),
        };
    }
    let wait = match failure {
        Failure::Status {
            status,
            retry_after: Some(wait),
            ..
        } if RETRY_AFTER_STATUSES.contains(status) => (*wait).min(policy.max_backoff),
        _ => backoff(policy, tried.attempts, jitter),
    };
    // The last attempt falls at the end of the window, not after it.
    Next::RetryAfter(wait.min(policy.retry_for - tried.since_first))
}

/// Exponential, doubling from `initial_backoff` and capped at `max_backoff`,
/// with "equal jitter": half the delay fixed, half random.
fn backoff(policy: &DeliveryConfig, attempt: u32, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(30);
    let full = policy
        .initial_backoff
        .saturating_mul(1 << doublings)
        .min(policy.max_backoff);
    full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnExhausted;

    fn policy() -> DeliveryConfig {
        DeliveryConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_attempts: Some(5),
            no_retry_statuses: vec![400, 410],
            ..DeliveryConfig::default()
        }
    }

    /// `attempts` made, a second apart.
    fn tried(attempts: u32) -> Tried {
        Tried {
            attempts,
            since_first: Duration::from_secs(u64::from(attempts)),
        }
    }

    fn status(status: u16) -> Failure {
        Failure::Status {
            status,
            retry_after: None,
            location: None,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let p = policy();
        assert_eq!(
            next(&p, &Failure::Timeout, tried(1), 0.0),
            Next::RetryAfter(Duration::from_millis(500))
        );
        assert_eq!(
            next(&p, &Failure::Timeout, tried(1), 0.999_999),
            Next::RetryAfter(Duration::from_nanos(999_999_500))
        );
        assert_eq!(
            next(&p, &status(500), tried(3), 0.5),
            Next::RetryAfter(Duration::from_secs(3))
        );
        let capped = DeliveryConfig {
            max_attempts: None,
            ..p
        };
        assert_eq!(
            next(&capped, &status(502), tried(40), 1.0),
            Next::RetryAfter(Duration::from_secs(60))
        );
    }

    #[test]
    fn every_non_2xx_is_retried_unless_listed_as_final() {
        let p = policy();
        for retried in [
            status(408),
            status(429),
            status(500),
            status(404),
            status(301),
            Failure::Connect("refused".into()),
        ] {
            assert!(
                matches!(next(&p, &retried, tried(1), 0.0), Next::RetryAfter(_)),
                "{retried:?}"
            );
        }
        assert_eq!(next(&p, &status(410), tried(1), 0.0), Next::GiveUp);
    }

    #[test]
    fn attempts_run_out_after_max_attempts() {
        let p = policy();
        assert!(matches!(
            next(&p, &status(500), tried(4), 0.0),
            Next::RetryAfter(_)
        ));
        assert_eq!(next(&p, &status(500), tried(5), 0.0), Next::GiveUp);
    }

    #[test]
    fn a_change_is_retried_until_its_window_has_passed_since_the_first_attempt() {
        let p = DeliveryConfig {
            retry_for: Duration::from_secs(3600),
            max_attempts: None,
            ..policy()
        };
        let at = |attempts, secs| Tried {
            attempts,
            since_first: Duration::from_secs(secs),
        };
        assert_eq!(
            next(&p, &status(500), at(30, 3540), 1.0),
            Next::RetryAfter(Duration::from_secs(60))
        );
        assert_eq!(
            next(&p, &status(500), at(31, 3590), 1.0),
            Next::RetryAfter(Duration::from_secs(10)),
            "the last attempt falls at the end of the window"
        );
        assert_eq!(next(&p, &status(500), at(32, 3600), 0.0), Next::GiveUp);
    }

    #[test]
    fn the_default_schedule_retries_for_a_day_every_five_minutes_at_most() {
        let p = DeliveryConfig::default();
        let (mut since_first, mut attempts) = (Duration::ZERO, 0);
        while let Next::RetryAfter(wait) = next(
            &p,
            &Failure::Timeout,
            Tried {
                attempts: attempts + 1,
                since_first,
            },
            1.0,
        ) {
            assert!(wait <= Duration::from_secs(300), "{wait:?}");
            attempts += 1;
            since_first += wait;
        }
        assert_eq!(since_first, Duration::from_secs(24 * 3600));
        // 1 s doubling to 256 s (9 attempts), then every 300 s.
        assert_eq!(attempts, 9 + (86_400 - 511) / 300 + 1);
    }

    #[test]
    fn block_mode_retries_forever_at_max_backoff() {
        let p = DeliveryConfig {
            on_exhausted: OnExhausted::Block,
            ..policy()
        };
        assert_eq!(
            next(&p, &status(500), tried(5), 0.0),
            Next::RetryAfter(Duration::from_secs(60))
        );
        assert_eq!(
            next(&p, &status(410), tried(1), 0.0),
            Next::RetryAfter(Duration::from_secs(60))
        );
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_and_capped() {
        let p = policy();
        let later = |status, secs| Failure::Status {
            status,
            retry_after: Some(Duration::from_secs(secs)),
            location: None,
        };
        assert_eq!(
            next(&p, &later(429, 7), tried(1), 0.0),
            Next::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            next(&p, &later(503, 3600), tried(1), 0.0),
            Next::RetryAfter(Duration::from_secs(60))
        );
        assert_eq!(
            next(&p, &later(500, 7), tried(1), 0.0),
            Next::RetryAfter(Duration::from_millis(500)),
            "only on 429/503"
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "past dates mean now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
