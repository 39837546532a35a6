//! Delivery across hand-overs, in both retention modes (the in-memory ring
//! and an event store): a response that another one replaces hands out
//! nothing more, so each event reaches the client once; a successor gets
//! exactly what its predecessor did not hand out; a server-side close ends
//! whatever response carries the stream by then.

use super::*;
use crate::store::MemoryEventStore;

/// The same settings twice: events kept in the stream's ring, then in an
/// event store.
fn both_modes(config: impl Fn(&mut SessionSettings)) -> [Arc<SessionSettings>; 2] {
    [
        settings(&config),
        settings(|s| {
            config(s);
            s.event_store = Some(crate::store::Appender::any(Arc::new(
                MemoryEventStore::default(),
            )));
        }),
    ]
}

fn labels(events: &[(String, String)]) -> Vec<&str> {
    events.iter().map(|(_, what)| what.as_str()).collect()
}

fn mode(settings: &SessionSettings) -> &'static str {
    match settings.event_store {
        Some(_) => "event store",
        None => "ring",
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_response_and_the_shadow_replacing_it_never_hand_out_one_event_twice() {
    for settings in both_modes(|s| s.session.channel_capacity = 1) {
        let mode = mode(&settings);
        let mut session = session(settings).await;
        let mut slow = session.handle.standalone().await.unwrap();
        let mut shadow = session.handle.standalone().await.unwrap();
        session.handler.send(log_line(1)).await.unwrap();
        // Over capacity: waits out the stall limit, then the shadow takes
        // over with what the slow response had not handed out.
        session.handler.send(log_line(2)).await.unwrap();
        let taken_over = [
            next(&mut shadow).await.unwrap(),
            next(&mut shadow).await.unwrap(),
        ];
        assert_eq!(labels(&taken_over), ["log 1", "log 2"], "{mode}");
        // The slow client reads on: its response was replaced.
        assert_eq!(
            labels(&drain(&mut slow).await),
            Vec::<&str>::new(),
            "{mode}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_get_after_a_stall_replays_exactly_what_the_stalled_response_did_not_hand_out() {
    for settings in both_modes(|s| s.session.channel_capacity = 1) {
        let mode = mode(&settings);
        let mut session = session(settings).await;
        let mut slow = session.handle.standalone().await.unwrap();
        session.handler.send(log_line(1)).await.unwrap();
        // Disconnected at the stall limit, with nothing to hand over to.
        session.handler.send(log_line(2)).await.unwrap();
        // The slow client reads one event, then reconnects without an id.
        assert_eq!(next(&mut slow).await.unwrap().1, "log 1", "{mode}");
        let mut again = session.handle.standalone().await.unwrap();
        assert_eq!(next(&mut again).await.unwrap().1, "log 2", "{mode}");
        assert_eq!(
            labels(&drain(&mut slow).await),
            Vec::<&str>::new(),
            "{mode}"
        );
        session.handler.send(log_line(3)).await.unwrap();
        assert_eq!(next(&mut again).await.unwrap().1, "log 3", "{mode}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_resume_ends_the_response_it_replaces() {
    let mut session = session(settings(|_| {})).await;
    let mut first = session.request(call(1, Some("tok"))).await;
    session.handler.send(progress("tok", 1)).await.unwrap();
    session.handler.send(progress("tok", 2)).await.unwrap();
    // The client saw the first progress and resumes after it while the
    // first response still has the second queued.
    let seen = loop {
        let (id, what) = next(&mut first).await.unwrap();
        if what == "progress 1" {
            break id;
        }
    };
    let mut resumed = session
        .handle
        .resume(EventId::parse(&seen).unwrap())
        .await
        .unwrap();
    assert_eq!(next(&mut resumed).await.unwrap().1, "progress 2");
    assert_eq!(labels(&drain(&mut first).await), Vec::<&str>::new());
    session.handler.send(answer(1)).await.unwrap();
    assert_eq!(labels(&drain(&mut resumed).await), ["answer 1"]);
}

#[tokio::test(start_paused = true)]
async fn a_server_side_close_ends_the_shadow_that_took_over_while_it_waited() {
    for settings in both_modes(|s| s.session.channel_capacity = 1) {
        let mode = mode(&settings);
        let mut session = session(settings).await;
        let mut slow = session.handle.standalone().await.unwrap();
        let mut shadow = session.handle.standalone().await.unwrap();
        session.handler.send(log_line(1)).await.unwrap();
        // The close's `retry` event is over capacity: it waits out the
        // stall limit, and the shadow takes over meanwhile.
        session
            .handle
            .close_standalone_sse_stream(Some(Duration::from_secs(1)))
            .await
            .unwrap();
        session.handler.send(log_line(2)).await.unwrap();
        assert_eq!(
            labels(&drain(&mut shadow).await),
            ["log 1", "priming"],
            "{mode}: the shadow ends with the close's retry event"
        );
        assert_eq!(
            labels(&drain(&mut slow).await),
            Vec::<&str>::new(),
            "{mode}"
        );
        // What followed the close waits for the next GET.
        let mut next_get = session.handle.standalone().await.unwrap();
        assert_eq!(next(&mut next_get).await.unwrap().1, "log 2", "{mode}");
    }
}

#[tokio::test(start_paused = true)]
async fn events_routed_while_no_get_is_connected_reach_the_first_get() {
    for settings in both_modes(|_| {}) {
        let mode = mode(&settings);
        let mut session = session(settings).await;
        session.handler.send(log_line(1)).await.unwrap();
        let mut get = session.handle.standalone().await.unwrap();
        session.handler.send(log_line(2)).await.unwrap();
        let events = [next(&mut get).await.unwrap(), next(&mut get).await.unwrap()];
        assert_eq!(labels(&events), ["log 1", "log 2"], "{mode}");
        // A shadow that takes over from a client that left gets what the
        // left one did not read.
        let mut shadow = session.handle.standalone().await.unwrap();
        session.handler.send(log_line(3)).await.unwrap();
        drop(get);
        assert_eq!(next(&mut shadow).await.unwrap().1, "log 3", "{mode}");
    }
}
