//! Resumes, shadows taking over, and ids from an earlier life.

use super::*;

#[tokio::test]
async fn a_resumed_request_stream_gets_exactly_what_followed() {
    let mut session = session(settings(|_| {})).await;
    let mut stream = session.request(call(1, Some("tok"))).await;
    session.handler.send(progress("tok", 1)).await.unwrap();
    assert_eq!(next(&mut stream).await.unwrap().0, "0/0");
    assert_eq!(next(&mut stream).await.unwrap().0, "1/0");
    // The connection drops; more progress and the answer arrive meanwhile.
    drop(stream);
    session.handler.send(progress("tok", 2)).await.unwrap();
    session.handler.send(progress("tok", 3)).await.unwrap();
    let resume = |index| EventId {
        index,
        stream: Some(0),
    };
    let mut resumed = session.handle.resume(resume(1)).await.unwrap();
    assert_eq!(
        next(&mut resumed).await,
        Some(("2/0".into(), "progress 2".into()))
    );
    assert_eq!(next(&mut resumed).await.unwrap().0, "3/0");
    assert_pending(&mut resumed).await;
    session.handler.send(answer(1)).await.unwrap();
    assert_eq!(next(&mut resumed).await.unwrap().1, "answer 1");
    assert_eq!(next(&mut resumed).await, None, "answered: the stream ends");

    // Completed, it can still be resumed (and ends after the replay).
    let mut late = session.handle.resume(resume(2)).await.unwrap();
    assert_eq!(ids(&drain(&mut late).await), ["3/0", "4/0"]);
    let mut nothing_missed = session.handle.resume(resume(4)).await.unwrap();
    assert_eq!(next(&mut nothing_missed).await, None);
    assert!(matches!(
        session.handle.resume(resume(5)).await,
        Err(BoundedSessionError::Replay(ReplayError::Ahead {
            last_seen: 5,
            newest: 4
        }))
    ));
    assert!(matches!(
        session
            .handle
            .resume(EventId {
                index: 0,
                stream: Some(9)
            })
            .await,
        Err(BoundedSessionError::Replay(ReplayError::UnknownStream(9)))
    ));
}

#[tokio::test]
async fn a_resume_after_overwritten_events_replays_what_is_kept_with_the_gap_visible() {
    let mut session = session(settings(|s| s.replay_capacity = 2)).await;
    let stream = session.request(call(1, Some("tok"))).await;
    drop(stream);
    for n in 1..=5 {
        session.handler.send(progress("tok", n)).await.unwrap();
    }
    let resume = |index| EventId {
        index,
        stream: Some(0),
    };
    // 3 and earlier are gone: the client gets 4 and 5, and the jump from
    // its 2 to 4 in the ids shows what it lost (a refusal would only
    // make it retry the same id forever).
    let mut resumed = session.handle.resume(resume(2)).await.unwrap();
    assert_eq!(
        next(&mut resumed).await,
        Some(("4/0".into(), "progress 4".into()))
    );
    assert_eq!(next(&mut resumed).await.unwrap().0, "5/0");
    let mut exact = session.handle.resume(resume(3)).await.unwrap();
    assert_eq!(next(&mut exact).await.unwrap().0, "4/0");
    assert_eq!(next(&mut exact).await.unwrap().0, "5/0");
    // The answer still arrives live, and ends the stream.
    session.handler.send(answer(1)).await.unwrap();
    assert_eq!(next(&mut exact).await.unwrap().1, "answer 1");
    assert_eq!(next(&mut exact).await, None);
}

#[tokio::test(start_paused = true)]
async fn completed_streams_expire_after_their_ttl() {
    let ttl = Duration::from_secs(60);
    let mut session = session(settings(|s| s.session.completed_cache_ttl = ttl)).await;
    let _stream = session.request(call(1, None)).await;
    session.handler.send(answer(1)).await.unwrap();
    let resume = EventId {
        index: 0,
        stream: Some(0),
    };
    tokio::time::advance(ttl - Duration::from_secs(1)).await;
    assert!(session.handle.resume(resume).await.is_ok(), "still kept");
    tokio::time::advance(Duration::from_secs(2)).await;
    // Expiry runs as the session handles its next event.
    let _ = session.handle.standalone().await.unwrap();
    assert!(matches!(
        session.handle.resume(resume).await,
        Err(BoundedSessionError::Replay(ReplayError::UnknownStream(0)))
    ));
}

#[tokio::test]
async fn a_second_get_is_a_shadow_that_takes_over_when_the_first_dies() {
    let mut session = session(settings(|_| {})).await;
    // Sent before any GET: kept for the first one.
    session.handler.send(log_line(1)).await.unwrap();
    let mut primary = session.handle.standalone().await.unwrap();
    assert_eq!(next(&mut primary).await, Some(("1".into(), "log 1".into())));
    let mut shadow = session.handle.standalone().await.unwrap();
    session.handler.send(log_line(2)).await.unwrap();
    assert_eq!(next(&mut primary).await.unwrap().0, "2");
    assert_pending(&mut shadow).await;
    // The primary dies: the shadow takes over, from what the primary
    // did not hand out.
    drop(primary);
    session.handler.send(log_line(3)).await.unwrap();
    session.handler.send(log_line(4)).await.unwrap();
    assert_eq!(next(&mut shadow).await.unwrap().0, "3");
    assert_eq!(next(&mut shadow).await.unwrap().0, "4");
    // No stream left: kept for the next GET, which replays just that.
    drop(shadow);
    session.handler.send(log_line(5)).await.unwrap();
    let mut next_get = session.handle.standalone().await.unwrap();
    assert_eq!(next(&mut next_get).await.unwrap().0, "5");
    assert_pending(&mut next_get).await;
    // A reconnect with Last-Event-ID while that one lives waits in
    // reserve, and takes over from its own Last-Event-ID.
    let mut resumed = session
        .handle
        .resume(EventId {
            index: 3,
            stream: None,
        })
        .await
        .unwrap();
    assert_pending(&mut resumed).await;
    drop(next_get);
    session.handler.send(log_line(6)).await.unwrap();
    for expected in ["4", "5", "6"] {
        assert_eq!(next(&mut resumed).await.unwrap().0, expected);
    }
    // Closing from the server side ends the stream and its shadows.
    let mut another_shadow = session.handle.standalone().await.unwrap();
    session
        .handle
        .close_standalone_sse_stream(Some(Duration::from_millis(10)))
        .await
        .unwrap();
    let (id, what) = next(&mut resumed).await.unwrap();
    assert_eq!((id.as_str(), what.as_str()), ("7", "priming"));
    assert_eq!(next(&mut resumed).await, None);
    assert_eq!(next(&mut another_shadow).await, None);
}

#[tokio::test]
async fn a_shadow_with_the_largest_id_takes_over_without_overflow() {
    let mut session = session(settings(|_| {})).await;
    let primary = session.handle.standalone().await.unwrap();
    let mut shadow = session
        .handle
        .resume(EventId {
            index: u64::MAX,
            stream: None,
        })
        .await
        .unwrap();
    drop(primary);
    session.handler.send(log_line(1)).await.unwrap();
    assert_eq!(next(&mut shadow).await.unwrap().0, "1");
}

#[tokio::test]
async fn a_shadow_takes_over_as_soon_as_the_standalone_client_is_gone() {
    let mut session = session(settings(|_| {})).await;
    let primary = session.handle.standalone().await.unwrap();
    let mut shadow = session.handle.standalone().await.unwrap();
    // An elicitation request, say, that the primary never hands out.
    session.handler.send(log_line(1)).await.unwrap();
    drop(primary);
    // No further notification is needed for the shadow to get it.
    assert_eq!(next(&mut shadow).await.unwrap().0, "1");

    // Likewise for a reconnect with Last-Event-ID that raced a dead
    // connection the server still thought alive.
    let mut primary = shadow;
    let mut reconnected = session
        .handle
        .resume(EventId {
            index: 1,
            stream: None,
        })
        .await
        .unwrap();
    session.handler.send(log_line(2)).await.unwrap();
    assert_eq!(next(&mut primary).await.unwrap().0, "2");
    drop(primary);
    assert_eq!(next(&mut reconnected).await.unwrap().0, "2");
}

#[tokio::test]
async fn a_promoted_shadow_with_an_id_ahead_leaves_nothing_unreplayed() {
    let mut session = session(settings(|_| {})).await;
    let mut primary = session.handle.standalone().await.unwrap();
    session.handler.send(log_line(1)).await.unwrap();
    assert_eq!(next(&mut primary).await.unwrap().0, "1");
    let shadow = session
        .handle
        .resume(EventId {
            index: 57,
            stream: None,
        })
        .await
        .unwrap();
    drop(primary);
    session.handler.send(log_line(2)).await.unwrap();
    drop(shadow);
    session.handler.send(log_line(3)).await.unwrap();
    // The shadow's id named nothing this stream sent, so it was owed
    // everything kept; it handed out none of it, and 2 and 3 went to no
    // response at all: the next GET gets all three.
    let mut get = session.handle.standalone().await.unwrap();
    for expected in ["1", "2", "3"] {
        assert_eq!(next(&mut get).await.unwrap().0, expected);
    }
}

#[tokio::test]
async fn ids_from_before_a_restore_name_nothing_of_the_new_life() {
    let mut session = session_from(settings(|_| {}), Origin::Restored).await;
    // Sent by the restored session before the client's GET came back.
    session.handler.send(log_line(1)).await.unwrap();
    let mut resumed = session
        .handle
        .resume(EventId {
            index: 57,
            stream: None,
        })
        .await
        .unwrap();
    let (first_id, what) = next(&mut resumed).await.unwrap();
    assert_eq!(what, "log 1", "the kept event of the new life is replayed");
    let first: u64 = first_id.parse().unwrap();
    assert!(first >= 1 << 40, "numbered far from a first life's ids");
    // A request stream of the earlier life is unknown, not confused
    // with the new life's first request.
    let _stream = session.request(call(1, None)).await;
    assert!(matches!(
        session
            .handle
            .resume(EventId {
                index: 0,
                stream: Some(0),
            })
            .await,
        Err(BoundedSessionError::Replay(ReplayError::UnknownStream(0)))
    ));
}

#[tokio::test]
async fn a_standalone_id_from_before_a_restore_resumes_live() {
    let mut session = session(settings(|_| {})).await;
    // The fresh session never sent event 57; its client had it from the
    // session's previous life.
    let mut resumed = session
        .handle
        .resume(EventId {
            index: 57,
            stream: None,
        })
        .await
        .unwrap();
    session.handler.send(log_line(1)).await.unwrap();
    assert_eq!(next(&mut resumed).await.unwrap().0, "1");
}

/// Each life of a restored session draws its own place to number from: two
/// lives that each sent thousands of events a millisecond never share an id
/// (a start taken from the clock gave overlapping ranges, so a resume in
/// the second life silently skipped events the first life had numbered).
#[test]
fn each_restored_life_numbers_from_its_own_random_place() {
    const LIVES: usize = 1_000;
    const EVENTS_PER_LIFE: u64 = 1_000_000;
    let mut starts: Vec<u64> = (0..LIVES)
        .map(|_| super::super::first_index_after_restore())
        .collect();
    assert!(
        starts
            .iter()
            .all(|&start| (1 << 40..1 << 62).contains(&start))
    );
    starts.sort_unstable();
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] > EVENTS_PER_LIFE,
            "two lives' ranges overlap: {pair:?}"
        );
    }
}
