use super::*;

#[test]
fn a_request_entered_before_the_drain_is_waited_for_and_counted_once() {
    let drain = Drain::new();
    let ticket = drain.enter(Kind::Request);
    assert!(!drain.is_draining());
    drain.start();
    assert_eq!(drain.in_flight(), 1);
    drop(ticket);
    assert_eq!(drain.in_flight(), 0);
    assert_eq!(drain.counts(), (1, 0, 0));
}

#[test]
fn a_request_refused_while_draining_is_not_counted() {
    let drain = Drain::new();
    drain.start();
    drain.enter(Kind::Request).refused();
    drain.enter(Kind::Stream).refused();
    assert_eq!(drain.in_flight(), 0);
    assert_eq!(drain.counts(), (0, 0, 0));
}

#[test]
fn a_request_that_ends_before_the_drain_is_not_counted() {
    let drain = Drain::new();
    drop(drain.enter(Kind::Request));
    drain.start();
    assert_eq!(drain.counts(), (0, 0, 0));
}

#[test]
fn a_cut_request_counts_as_cancelled_and_a_cut_stream_as_ended() {
    let drain = Drain::new();
    let mut request = drain.enter(Kind::Request);
    let mut stream = drain.enter(Kind::Stream);
    // Streams are not waited for.
    assert_eq!(drain.in_flight(), 1);
    drain.start();
    assert!(stream.ending());
    assert!(!request.ending());
    stream.cut();
    drop(stream);
    drain.cut_requests();
    assert!(request.ending());
    request.cut();
    drop(request);
    assert_eq!(drain.counts(), (0, 1, 1));
    assert_eq!(drain.in_flight(), 0);
}

#[tokio::test]
async fn the_end_signals_wake_their_waiters() {
    let drain = Drain::new();
    let stream = drain.enter(Kind::Stream);
    let request = drain.enter(Kind::Request);
    let waiting = tokio::spawn(async move {
        stream.ended().await;
        request.ended().await;
    });
    tokio::task::yield_now().await;
    drain.start();
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    drain.cut_requests();
    tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("woken")
        .unwrap();
}

#[test]
fn tickets_from_many_threads_sum_exactly() {
    let drain = Arc::new(Drain::new());
    let tickets: Vec<_> = (0..8)
        .map(|_| {
            let drain = drain.clone();
            std::thread::spawn(move || {
                (0..100)
                    .map(|_| drain.enter(Kind::Request))
                    .collect::<Vec<_>>()
            })
        })
        .flat_map(|thread| thread.join().unwrap())
        .collect();
    assert_eq!(drain.in_flight(), 800);
    drop(tickets);
    assert_eq!(drain.in_flight(), 0);
}
