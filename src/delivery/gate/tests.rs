use super::*;

const NOW: fn() -> Instant = Instant::now;

fn status(status: u16) -> Failure {
    Failure::Status {
        status,
        retry_after: None,
        location: None,
    }
}

fn overloaded(wait: Duration) -> Failure {
    Failure::Status {
        status: 429,
        retry_after: Some(wait),
        location: None,
    }
}

/// Sends one attempt for `change` and records `outcome`.
fn attempt(rules: &mut Rules, change: u64, outcome: Result<(), &Failure>) {
    assert_eq!(rules.decide(change, NOW()), Decision::Send);
    rules.in_flight += 1;
    rules.record(outcome, NOW());
}

#[test]
fn the_circuit_opens_after_five_failures_in_a_row_and_only_the_oldest_change_probes() {
    let mut rules = Rules::new(64);
    rules.pending.extend([1, 2, 3]);
    let down = status(500);
    for _ in 0..CIRCUIT_AFTER - 1 {
        attempt(&mut rules, 2, Err(&down));
        assert_eq!(rules.state(), State::Failing);
    }
    attempt(&mut rules, 3, Err(&down));
    assert_eq!(rules.state(), State::Open);
    assert_eq!(rules.decide(1, NOW()), Decision::Send);
    for younger in [2, 3] {
        assert_eq!(
            rules.decide(younger, NOW()),
            Decision::Skip(down.clone()),
            "a younger change counts its attempt as failed without sending"
        );
    }
}

#[test]
fn the_oldest_change_waits_for_requests_sent_before_the_circuit_opened() {
    let mut rules = Rules::new(64);
    rules.pending.extend([1, 2]);
    rules.in_flight = 2;
    for _ in 0..CIRCUIT_AFTER {
        rules.in_flight += 1;
        rules.record(Err(&status(502)), NOW());
    }
    assert_eq!(rules.decide(1, NOW()), Decision::Wait(None));
    rules.record(Err(&status(502)), NOW());
    rules.record(Err(&status(502)), NOW());
    assert_eq!(rules.decide(1, NOW()), Decision::Send);
}

#[test]
fn a_successful_probe_closes_the_circuit_and_concurrency_grows_back_from_one() {
    let mut rules = Rules::new(4);
    rules.pending.insert(1);
    for _ in 0..CIRCUIT_AFTER {
        attempt(&mut rules, 1, Err(&status(500)));
    }
    attempt(&mut rules, 1, Ok(()));
    assert_eq!(rules.state(), State::Healthy);
    // Closing starts from 1; that success was a full run of 1, so 2 now.
    assert_eq!(rules.limit, 2);
    attempt(&mut rules, 1, Ok(()));
    assert_eq!(rules.limit, 2, "a run of 2 successes is needed for 3");
    attempt(&mut rules, 1, Ok(()));
    assert_eq!(rules.limit, 3);
    for _ in 0..20 {
        attempt(&mut rules, 1, Ok(()));
    }
    assert_eq!(rules.limit, 4, "never above max_in_flight");
}

#[test]
fn an_overloaded_answer_halves_concurrency_and_its_retry_after_pauses_every_change() {
    let mut rules = Rules::new(64);
    attempt(&mut rules, 1, Err(&overloaded(Duration::from_secs(30))));
    assert_eq!(rules.limit, 32);
    let paused = rules.paused_for(NOW()).expect("paused");
    assert!(paused > Duration::from_secs(29), "{paused:?}");
    assert!(matches!(rules.decide(7, NOW()), Decision::Wait(Some(_))));
    let later = NOW() + Duration::from_secs(31);
    assert_eq!(rules.decide(7, later), Decision::Send);
}

#[test]
fn concurrency_halves_down_to_one_and_a_plain_503_does_not_pause() {
    let mut rules = Rules::new(8);
    for expected in [4, 2, 1, 1] {
        attempt(&mut rules, 1, Err(&status(503)));
        assert_eq!(rules.limit, expected);
    }
    assert_eq!(rules.paused_until, None, "no Retry-After, no pause");
    rules.failures_in_a_row = 0;
    rules.open = false;
    rules.in_flight = 1;
    assert_eq!(
        rules.decide(2, NOW()),
        Decision::Wait(None),
        "at the limit, a change waits for one in flight"
    );
}

#[test]
fn a_failure_then_a_success_is_failing_then_healthy() {
    let mut rules = Rules::new(2);
    attempt(&mut rules, 1, Err(&Failure::Timeout));
    assert_eq!(rules.state(), State::Failing);
    attempt(&mut rules, 1, Ok(()));
    assert_eq!(rules.state(), State::Healthy);
    assert_eq!(rules.limit, 2, "a timeout is not overload");
}
