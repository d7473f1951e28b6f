use super::positions::Discarded;
use super::*;
use crate::history::ServerIdentity;

fn checkpoint(webhooks: usize) -> Checkpoint {
    Checkpoint::new(&Positions::at(Lsn(10), webhooks))
}

#[test]
fn a_transaction_is_confirmed_only_after_its_commit_and_all_its_changes() {
    let cp = checkpoint(1);
    let tx = cp.begin(Lsn(90));
    assert_eq!(cp.track(tx), Targets::of(&[0]));
    cp.track(tx);
    cp.handled(0, tx);
    cp.commit(tx, Lsn(100));
    assert_eq!(cp.confirmed(), Lsn(10), "one change still outstanding");
    cp.handled(0, tx);
    assert_eq!(cp.confirmed(), Lsn(100));
}

#[test]
fn every_webhook_must_handle_a_change_before_it_is_confirmed() {
    let cp = checkpoint(2);
    let tx = cp.begin(Lsn(90));
    assert_eq!(cp.track(tx), Targets::of(&[0, 1]));
    cp.commit(tx, Lsn(100));
    cp.handled(1, tx);
    assert_eq!(cp.confirmed(), Lsn(10));
    cp.handled(0, tx);
    assert_eq!(cp.confirmed(), Lsn(100));
}

#[test]
fn a_finished_later_transaction_waits_for_an_earlier_one() {
    let cp = checkpoint(1);
    let first = cp.begin(Lsn(90));
    cp.track(first);
    cp.commit(first, Lsn(100));
    let second = cp.begin(Lsn(190));
    cp.track(second);
    cp.commit(second, Lsn(200));
    cp.handled(0, second);
    assert_eq!(cp.confirmed(), Lsn(10));
    cp.handled(0, first);
    assert_eq!(cp.confirmed(), Lsn(200));
}

#[test]
fn without_webhooks_the_stream_position_is_confirmed() {
    let cp = checkpoint(0);
    let tx = cp.begin(Lsn(40));
    assert_eq!(cp.track(tx), Targets::default());
    cp.commit(tx, Lsn(50));
    assert_eq!(cp.confirmed(), Lsn(50));
}

#[test]
fn keepalives_advance_the_position_only_when_nothing_is_in_flight() {
    let cp = checkpoint(1);
    let tx = cp.begin(Lsn(590));
    cp.idle_at(Lsn(500));
    assert_eq!(cp.confirmed(), Lsn(10), "open transaction");
    cp.track(tx);
    cp.commit(tx, Lsn(600));
    cp.idle_at(Lsn(700));
    assert_eq!(cp.confirmed(), Lsn(10), "undelivered change");
    cp.handled(0, tx);
    cp.idle_at(Lsn(700));
    assert_eq!(cp.confirmed(), Lsn(700));
    cp.idle_at(Lsn(650));
    assert_eq!(cp.confirmed(), Lsn(700), "never moves backwards");
}

#[test]
fn a_lagging_webhook_holds_the_position_while_the_others_go_on() {
    let cp = checkpoint(2);
    let first = cp.begin(Lsn(90));
    cp.track(first);
    cp.commit(first, Lsn(100));
    cp.handled(1, first);
    let second = cp.begin(Lsn(190));
    cp.track(second);
    // Webhook 0 took `first` but could not be given `second`.
    assert!(cp.set_lagging(0, second));
    assert!(
        !cp.set_lagging(1, second),
        "the last webhook keeping up waits instead"
    );
    cp.commit(second, Lsn(200));
    cp.handled(1, second);
    let third = cp.begin(Lsn(290));
    assert_eq!(
        cp.track(third),
        Targets::of(&[1]),
        "the lagging webhook gets nothing more"
    );
    cp.commit(third, Lsn(300));
    cp.handled(1, third);
    cp.idle_at(Lsn(400));
    assert_eq!(cp.confirmed(), Lsn(10), "held by the lagging webhook");
    cp.handled(0, first);
    cp.handled(0, second); // it never got this one: no effect
    assert_eq!(
        cp.positions(),
        Positions {
            webhooks: vec![Lsn(100), Lsn(400)],
            may_lag: vec![true, true],
            origin: None,
            reported: Lsn::ZERO,
            head: Lsn(400),
            outbox_handled: vec![Default::default(); 2],
        },
        "it still moves over what it was given"
    );
}

#[test]
fn a_webhook_that_lagged_without_progress_is_not_set_lagging_again() {
    let cp = checkpoint(2);
    let tx = cp.begin(Lsn(90));
    cp.track(tx);
    assert!(cp.set_lagging(0, tx));
    let next = Checkpoint::new(&cp.positions());
    let tx = next.begin(Lsn(90));
    next.track(tx);
    assert!(
        !next.set_lagging(0, tx),
        "it waits instead, and so gets through"
    );
    assert!(next.set_lagging(1, tx), "the other webhook still may");
}

#[test]
fn the_outbox_never_sets_a_webhook_lagging() {
    let cp = Checkpoint::for_outbox(2);
    let tx = cp.begin(Lsn(1));
    assert!(!cp.set_lagging(0, tx));
}

#[test]
fn a_new_session_skips_what_each_webhook_already_handled() {
    let positions = Positions {
        webhooks: vec![Lsn(10), Lsn(300)],
        may_lag: vec![true, true],
        origin: None,
        reported: Lsn::ZERO,
        head: Lsn(300),
        outbox_handled: vec![Default::default(); 2],
    };
    assert_eq!(positions.resume(), Lsn(10));
    let cp = Checkpoint::new(&positions);
    let old = cp.begin(Lsn(190));
    assert_eq!(
        cp.track(old),
        Targets::of(&[0]),
        "webhook 1 handled it before"
    );
    cp.commit(old, Lsn(200));
    cp.handled(0, old);
    let new = cp.begin(Lsn(390));
    assert_eq!(cp.track(new), Targets::of(&[0, 1]));
}

#[test]
fn a_session_that_ended_before_streaming_keeps_a_webhook_from_lagging_again() {
    let cp = checkpoint(2);
    let tx = cp.begin(Lsn(90));
    cp.track(tx);
    assert!(cp.set_lagging(0, tx));
    let held_back = cp.positions();
    assert_eq!(held_back.may_lag, [false, true]);
    // The next session fails during setup: it streams nothing.
    let failed = Checkpoint::new(&held_back).positions();
    assert_eq!(
        failed.may_lag,
        [false, true],
        "a failed setup resets nothing"
    );
}

#[test]
fn a_webhook_held_back_from_lagging_may_lag_again_once_it_got_through() {
    let cp = checkpoint(2);
    let tx = cp.begin(Lsn(90));
    cp.track(tx);
    assert!(cp.set_lagging(0, tx));
    let next = Checkpoint::new(&cp.positions());
    let tx = next.begin(Lsn(90));
    next.track(tx);
    next.commit(tx, Lsn(100));
    next.handled(0, tx);
    next.handled(1, tx);
    assert_eq!(next.positions().may_lag, [true, true]);
}

fn server(system_id: u64, timeline: u32, wal: u64) -> ServerIdentity {
    ServerIdentity {
        system_id,
        timeline,
        wal_position: Lsn(wal),
    }
}

fn slot(confirmed: u64) -> SlotStart {
    SlotStart {
        confirmed: Lsn(confirmed),
        created: false,
    }
}

/// Positions of a session on system 7, timeline 1, that confirmed up to
/// 500 while webhook 1 had handled up to 800.
fn streamed_on_system_7() -> Positions {
    let (first, _) = Positions::at(Lsn::ZERO, 2).start_on(&server(7, 1, 100), slot(100));
    let cp = Checkpoint::new(&first);
    cp.reported(Lsn(500));
    let mut positions = cp.positions();
    positions.webhooks = vec![Lsn(500), Lsn(800)];
    positions
}

#[test]
fn positions_on_the_same_history_let_each_webhook_skip_what_it_handled() {
    let (next, discarded) = streamed_on_system_7().start_on(&server(7, 1, 900), slot(500));
    assert_eq!(discarded, None);
    assert_eq!(next.webhooks, [Lsn(500), Lsn(800)]);
}

#[test]
fn nobody_is_placed_before_the_slot() {
    let (next, discarded) = streamed_on_system_7().start_on(&server(7, 1, 2000), slot(600));
    assert_eq!(discarded, None, "another instance moved the slot on");
    assert_eq!(next.webhooks, [Lsn(600), Lsn(800)]);
    assert_eq!(Checkpoint::new(&next).confirmed(), Lsn(600));
}

#[test]
fn positions_from_another_history_are_discarded_and_say_why() {
    let positions = streamed_on_system_7();
    let cases = [
        (server(8, 1, 900), slot(500), "another database system"),
        (server(7, 2, 900), slot(500), "timeline 2"),
        (server(7, 1, 300), slot(200), "restored backup"),
    ];
    for (server, slot, why) in cases {
        let (next, discarded) = positions.start_on(&server, slot);
        let discarded = discarded.expect("discarded");
        assert!(discarded.is_other_history());
        assert!(discarded.to_string().contains(why), "{discarded}");
        assert_eq!(next.webhooks, [slot.confirmed; 2], "{why}");
    }
}

#[test]
fn a_slot_created_anew_or_behind_the_confirmed_position_resets_every_webhook() {
    let positions = streamed_on_system_7();
    let created = SlotStart {
        confirmed: Lsn(950),
        created: true,
    };
    let (next, discarded) = positions.start_on(&server(7, 1, 950), created);
    assert_eq!(discarded, Some(Discarded::SlotCreated));
    assert_eq!(next.webhooks, [Lsn(950); 2]);
    let (next, discarded) = positions.start_on(&server(7, 1, 900), slot(400));
    assert!(!discarded.expect("discarded").is_other_history());
    assert_eq!(
        next.webhooks,
        [Lsn(400); 2],
        "webhook 1 is sent 400..800 again"
    );
}

#[test]
fn a_change_can_target_any_number_of_webhooks() {
    let cp = checkpoint(1000);
    let tx = cp.begin(Lsn(90));
    let targets = cp.track(tx);
    assert!((0..1000).all(|i| targets.contains(i)));
    assert!(!targets.contains(1000));
    for i in 0..1000 {
        cp.handled(i, tx);
    }
    cp.commit(tx, Lsn(100));
    assert_eq!(cp.confirmed(), Lsn(100));
}

#[test]
fn a_target_set_holds_exactly_what_was_put_in_on_both_sides_of_64() {
    let targets = Targets::of(&[0, 63, 64, 127, 999]);
    let members: Vec<usize> = (0..1100).filter(|i| targets.contains(*i)).collect();
    assert_eq!(members, [0, 63, 64, 127, 999]);
    assert!(!targets.is_empty());
    assert!(Targets::default().is_empty());
    assert!(
        Targets::of(&[200]).contains(200),
        "a set may start above 64"
    );
}

#[test]
fn the_wal_a_webhook_alone_holds_back_runs_from_its_oldest_open_transaction() {
    let cp = checkpoint(2);
    // A keepalive moved both past where the transaction's records start.
    cp.idle_at(Lsn(60));
    let tx = cp.begin_at(Lsn(20), Lsn(990));
    cp.track(tx);
    cp.commit(tx, Lsn(1000));
    assert_eq!(cp.held_back_alone(0), 0, "both still need it");
    cp.handled(1, tx);
    assert_eq!(cp.held_back_alone(0), 980);
    assert_eq!(cp.held_back_alone(1), 0);
    assert_eq!(cp.retained_wal_limit(500), 500);
    cp.set_safe_wal(Some(600));
    assert_eq!(
        cp.retained_wal_limit(500),
        300,
        "never over half the safe WAL"
    );
}

#[test]
fn a_lone_webhook_holds_back_what_the_stream_has_read_past_its_work() {
    let cp = checkpoint(1);
    let tx = cp.begin_at(Lsn(20), Lsn(490));
    cp.track(tx);
    cp.commit(tx, Lsn(500));
    assert_eq!(cp.held_back_alone(0), 490, "from its position at 10");
    assert_eq!(
        Checkpoint::for_outbox(1).held_back_alone(0),
        0,
        "outbox positions are not WAL"
    );
}

#[test]
fn a_reload_keeps_each_webhooks_place_and_starts_a_new_one_at_the_head() {
    let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let positions = Positions {
        webhooks: vec![Lsn(10), Lsn(300)],
        may_lag: vec![true, false],
        origin: None,
        reported: Lsn::ZERO,
        head: Lsn(500),
        outbox_handled: vec![[7].into(), [9].into()],
    };
    let (next, cut_over) = positions.remap(&names(&["a", "b"]), &names(&["b", "new"]));
    assert_eq!(cut_over, Lsn(500));
    assert_eq!(next.webhooks, vec![Lsn(300), Lsn(500)]);
    assert_eq!(next.may_lag, vec![false, true]);
    assert_eq!(next.outbox_handled, vec![[9].into(), Default::default()]);
    assert_eq!(
        next.resume(),
        Lsn(300),
        "the removed webhook holds nothing back"
    );
}

#[test]
fn a_webhook_has_handled_an_outbox_row_once_its_change_is_done_even_if_others_are_not() {
    let cp = Checkpoint::for_outbox(2);
    let tx = cp.begin(Lsn(1));
    cp.track(tx);
    cp.commit(tx, Lsn(1));
    cp.handled(0, tx);
    assert!(cp.has_handled(0, Lsn(1)));
    assert!(
        !cp.has_handled(1, Lsn(1)),
        "the other webhook still holds it"
    );
    assert!(!cp.has_handled(0, Lsn(2)), "a row not read");
}
