use super::*;

const PAUSE_CAP: Duration = Duration::from_secs(300);

fn rules(max_in_flight: usize) -> Rules {
    Rules::new(max_in_flight, PAUSE_CAP)
}

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
    assert_eq!(rules.decide(change, Instant::now), Decision::Send);
    rules.in_flight += 1;
    let round = rules.round;
    rules.record(change, round, outcome, Instant::now);
}

#[test]
fn five_changes_finding_the_endpoint_down_open_the_circuit_and_only_the_oldest_probes() {
    let mut rules = rules(64);
    rules.pending.extend(1..=5);
    let down = status(500);
    for change in 1..5 {
        attempt(&mut rules, change, Err(&down));
        assert_eq!(rules.state(), State::Failing);
    }
    attempt(&mut rules, 5, Err(&down));
    assert_eq!(rules.state(), State::Open);
    assert_eq!(rules.decide(1, Instant::now), Decision::Send);
    for younger in 2..=5 {
        assert_eq!(
            rules.decide(younger, Instant::now),
            Decision::Skip(down.clone()),
            "a younger change counts its attempt as failed without sending"
        );
    }
}

#[test]
fn one_change_failing_again_and_again_does_not_open_the_circuit() {
    let mut rules = rules(64);
    rules.pending.extend([1, 2]);
    for _ in 0..20 {
        attempt(&mut rules, 1, Err(&status(500)));
    }
    assert_eq!(rules.state(), State::Failing);
    assert_eq!(rules.decide(2, Instant::now), Decision::Send);
}

#[test]
fn rejections_and_overload_do_not_open_the_circuit() {
    let mut rules = rules(64);
    rules.pending.extend(1..=10);
    for change in 1..=5 {
        attempt(&mut rules, change, Err(&status(400)));
    }
    for change in 6..=10 {
        attempt(&mut rules, change, Err(&status(503)));
    }
    assert_ne!(rules.state(), State::Open);
}

#[test]
fn the_oldest_change_waits_for_requests_sent_before_the_circuit_opened() {
    let mut rules = rules(64);
    rules.pending.extend([1, 2]);
    rules.in_flight = 2 + CIRCUIT_AFTER;
    for change in 10..10 + CIRCUIT_AFTER as u64 {
        rules.record(change, 0, Err(&Failure::Timeout), Instant::now);
    }
    assert_eq!(rules.state(), State::Open);
    assert_eq!(rules.decide(1, Instant::now), Decision::Wait(None));
    rules.record(20, 0, Err(&Failure::Timeout), Instant::now);
    rules.record(21, 0, Err(&Failure::Timeout), Instant::now);
    assert_eq!(rules.decide(1, Instant::now), Decision::Send);
}

#[test]
fn a_successful_probe_closes_the_circuit_and_concurrency_grows_back_from_one() {
    let mut rules = rules(4);
    rules.pending.extend(1..=5);
    for change in 1..=5 {
        attempt(&mut rules, change, Err(&status(502)));
    }
    assert_eq!(rules.effective_limit(), 1, "one at a time while open");
    attempt(&mut rules, 1, Ok(()));
    assert_eq!(rules.state(), State::Healthy);
    assert_eq!(rules.limit, 1, "closing starts again from 1");
    attempt(&mut rules, 2, Ok(()));
    assert_eq!(rules.limit, 2, "a run of 1 success makes 2");
    attempt(&mut rules, 2, Ok(()));
    assert_eq!(rules.limit, 2, "a run of 2 successes is needed for 3");
    attempt(&mut rules, 2, Ok(()));
    assert_eq!(rules.limit, 3);
    for _ in 0..20 {
        attempt(&mut rules, 2, Ok(()));
    }
    assert_eq!(rules.limit, 4, "never above max_in_flight");
}

#[test]
fn an_overloaded_answer_halves_concurrency_and_its_retry_after_pauses_every_change() {
    let mut rules = rules(64);
    attempt(&mut rules, 1, Err(&overloaded(Duration::from_secs(30))));
    assert_eq!(rules.limit, 32);
    let now = Instant::now();
    assert!(matches!(rules.decide(7, || now), Decision::Wait(Some(_))));
    let later = now + Duration::from_secs(31);
    assert_eq!(rules.decide(7, || later), Decision::Send);
}

#[test]
fn a_burst_of_overload_answers_from_one_round_halves_concurrency_once() {
    let mut rules = rules(64);
    rules.in_flight = 10;
    let round = rules.round;
    for change in 1..=10 {
        rules.record(change, round, Err(&status(503)), Instant::now);
    }
    assert_eq!(
        rules.limit, 32,
        "requests admitted before the first halving"
    );
    attempt(&mut rules, 11, Err(&status(503)));
    assert_eq!(rules.limit, 16, "a request of the next round halves again");
}

#[test]
fn concurrency_halves_down_to_one_and_a_plain_503_does_not_pause() {
    let mut rules = rules(8);
    for expected in [4, 2, 1, 1] {
        attempt(&mut rules, 1, Err(&status(503)));
        assert_eq!(rules.limit, expected);
    }
    assert_eq!(rules.paused_until, None, "no Retry-After, no pause");
    rules.in_flight = 1;
    assert_eq!(
        rules.decide(2, Instant::now),
        Decision::Wait(None),
        "at the limit, a change waits for one in flight"
    );
}

#[test]
fn a_retry_after_is_capped_and_a_shorter_one_does_not_shorten_the_pause() {
    let mut rules = rules(8);
    let now = Instant::now();
    attempt(
        &mut rules,
        1,
        Err(&overloaded(Duration::from_secs(u64::MAX))),
    );
    let capped = rules.paused_until.expect("paused");
    assert!(capped <= now + PAUSE_CAP + Duration::from_secs(1));
    // A request sent before the pause gets a shorter Retry-After.
    rules.in_flight += 1;
    rules.record(2, 0, Err(&overloaded(Duration::from_secs(1))), || now);
    assert_eq!(rules.paused_until, Some(capped));
}

#[test]
fn a_failure_then_a_success_is_failing_then_healthy() {
    let mut rules = rules(2);
    attempt(&mut rules, 1, Err(&Failure::Timeout));
    assert_eq!(rules.state(), State::Failing);
    attempt(&mut rules, 1, Ok(()));
    assert_eq!(rules.state(), State::Healthy);
    assert_eq!(rules.limit, 2, "a timeout is not overload");
}
