//! The clients: ten calling `echo`, one long `count` call that resumes like a real client.

use super::*;

/// A call or an `initialize` that failed.
pub(crate) struct Failure {
    pub(crate) client: Ipv4Addr,
    pub(crate) label: String,
    pub(crate) on: Instance,
    pub(crate) sent: Instant,
    pub(crate) seen: Instant,
}

#[derive(Default)]
pub(crate) struct Active {
    pub(crate) made_on_a: u64,
    pub(crate) made_on_b: u64,
    pub(crate) answered: u64,
    pub(crate) failed: Vec<Failure>,
    pub(crate) initialize_failed: Vec<Failure>,
    pub(crate) refused_and_retried: u64,
    pub(crate) reinitialized: u64,
    /// Calls sent to A before the balancer turned to B (just before the
    /// signal) and answered, or not, after it turned.
    pub(crate) across_signal: u64,
    pub(crate) across_signal_answered: u64,
    /// The session made on A answered a call on B.
    pub(crate) original_served_by_b: bool,
}

/// One client calling `echo` every 100 ms in `session` from `first`, until
/// cancelled.
pub(crate) async fn active(
    mcp: &Mcp,
    source: Ipv4Addr,
    mut session: String,
    first: Instant,
    stats: &mut Active,
) {
    let mut original = true;
    let mut id = 0;
    let mut ticks = tokio::time::interval_at(first, CALL_PERIOD);
    // A slow answer delays the next call instead of bunching calls up.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        id += 1;
        // The call, and its retries after a 503 with Retry-After.
        loop {
            let sent = Instant::now();
            let (on, call) = mcp.echo(&session, id).await;
            match on {
                Instance::A => stats.made_on_a += 1,
                Instance::B => stats.made_on_b += 1,
            }
            // The balancer turns to B at the signal.
            let across = on == Instance::A && mcp.balancer.to_b.load(Ordering::SeqCst);
            stats.across_signal += u64::from(across);
            stats.across_signal_answered += u64::from(across && matches!(call, Call::Answered));
            let failure = |label: String| Failure {
                client: source,
                label,
                on,
                sent,
                seen: Instant::now(),
            };
            match call {
                Call::Answered => {
                    stats.answered += 1;
                    stats.original_served_by_b |= original && on == Instance::B;
                }
                Call::Refused(after) => {
                    stats.refused_and_retried += 1;
                    tokio::time::sleep(after).await;
                    continue;
                }
                Call::Failed(label) => stats.failed.push(failure(label)),
                Call::SessionGone => {
                    stats.reinitialized += 1;
                    original = false;
                    session = loop {
                        let sent = Instant::now();
                        let (on, _) = mcp.balancer.target();
                        match mcp.open_session().await {
                            Ok(session) => break session,
                            Err(label) => {
                                stats.initialize_failed.push(Failure {
                                    client: source,
                                    label,
                                    on,
                                    sent,
                                    seen: Instant::now(),
                                });
                                tokio::time::sleep(CALL_PERIOD).await;
                            }
                        }
                    };
                }
            }
            break;
        }
    }
}

pub(crate) struct Answer {
    pub(crate) at: Instant,
    pub(crate) on: Instance,
    /// Its POST stream, or which resume.
    pub(crate) via: String,
    /// `None` for a result; else the error's `data.reason`, or its
    /// message.
    pub(crate) error: Option<String>,
}

#[derive(Default)]
pub(crate) struct LongCall {
    pub(crate) started: Option<Instant>,
    /// How many times each progress step arrived.
    pub(crate) steps: BTreeMap<u64, u64>,
    pub(crate) last_event_id: Option<String>,
    /// When and why its POST stream ended without the answer.
    pub(crate) post_ended: Option<(Instant, String)>,
    pub(crate) answer: Option<Answer>,
    pub(crate) resumes: u64,
    pub(crate) resume_answers: Counts,
}

#[derive(PartialEq, Eq)]
pub(crate) enum Ending {
    Answered,
    Ended,
    Broke,
}

/// Reads a stream of the long call's until it ends or brings the answer.
pub(crate) async fn read_events(
    response: reqwest::Response,
    on: Instance,
    via: &str,
    stats: &mut LongCall,
) -> Ending {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let (id, data) = sse_fields(&event);
            // A priming event's id counts too: a client resumes after the
            // last id it saw.
            if let Some(id) = id {
                stats.last_event_id = Some(id);
            }
            let Some(message) = data.and_then(|data| serde_json::from_str::<Value>(&data).ok())
            else {
                continue;
            };
            if message["method"] == "notifications/progress" {
                if let Some(step) = message["params"]["progress"].as_f64() {
                    *stats.steps.entry(step as u64).or_default() += 1;
                }
            } else if message["id"] == LONG_CALL_ID {
                stats.answer = Some(Answer {
                    at: Instant::now(),
                    on,
                    via: via.to_owned(),
                    error: (!message["result"].is_object()).then(|| {
                        let error = &message["error"];
                        error["data"]["reason"]
                            .as_str()
                            .or(error["message"].as_str())
                            .unwrap_or("malformed")
                            .to_owned()
                    }),
                });
                return Ending::Answered;
            }
        }
        match body.next().await {
            Some(Ok(chunk)) => buffer.push_str(&String::from_utf8_lossy(&chunk).replace('\r', "")),
            Some(Err(_)) => return Ending::Broke,
            None => return Ending::Ended,
        }
    }
}

/// The long call, then its resumes if its stream ends without the answer;
/// until the answer, 30 s of resuming, or the end of the run.
pub(crate) async fn long_call(
    mcp: &Mcp,
    session: &str,
    started: tokio::sync::oneshot::Sender<Instant>,
    stats: &mut LongCall,
) {
    let body = json!({
        "jsonrpc": "2.0", "id": LONG_CALL_ID, "method": "tools/call",
        "params": {
            "name": "count",
            "arguments": { "steps": LONG_CALL_STEPS, "delay_ms": LONG_CALL_DELAY_MS },
            "_meta": { "progressToken": "rolling_restart" }
        }
    });
    let (on, url) = mcp.balancer.target();
    let now = Instant::now();
    stats.started = Some(now);
    let _ = started.send(now);
    let why = match mcp.post(url, Some(session), &body).send().await {
        Ok(response) if response.status() == StatusCode::OK => {
            match read_events(response, on, "its POST stream", stats).await {
                Ending::Answered => return,
                Ending::Ended => "ended".to_owned(),
                Ending::Broke => "broke".to_owned(),
            }
        }
        Ok(response) => format!("answered {}", response.status().as_u16()),
        Err(error) => transport_label(&error),
    };
    stats.post_ended = Some((Instant::now(), why));
    if stats.last_event_id.is_none() {
        // Nothing to resume after (no event arrived).
        return;
    }
    let give_up = Instant::now() + RESUME_FOR;
    while Instant::now() + RESUME_EVERY < give_up {
        tokio::time::sleep(RESUME_EVERY).await;
        let last_id = stats.last_event_id.clone().unwrap_or_default();
        let (on, url) = mcp.balancer.target();
        stats.resumes += 1;
        let resume = stats.resumes;
        let response = mcp
            .http
            .get(url)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .header("mcp-session-id", session)
            .header("last-event-id", last_id)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                bump(&mut stats.resume_answers, transport_label(&error));
                continue;
            }
        };
        bump(
            &mut stats.resume_answers,
            response.status().as_u16().to_string(),
        );
        if response.status() != StatusCode::OK {
            continue;
        }
        let via = format!("resume {resume}");
        let read = read_events(response, on, &via, stats);
        if matches!(
            tokio::time::timeout_at(give_up, read).await,
            Ok(Ending::Answered)
        ) {
            return;
        }
    }
}
