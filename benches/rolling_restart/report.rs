//! The report the bench prints.

use super::*;

pub(crate) fn show_counts(counts: &Counts) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(label, count)| format!("{label}: {count}"))
        .collect();
    parts.join(", ")
}

pub(crate) fn show_failures(failures: &[&Failure], signal_at: Instant) -> String {
    let mut lines: Vec<String> = failures
        .iter()
        .map(|f| {
            format!(
                "{} on {} from {} (sent {}, seen {})",
                f.label,
                f.on,
                f.client,
                since(signal_at, f.sent),
                since(signal_at, f.seen)
            )
        })
        .collect();
    const SHOWN: usize = 12;
    if lines.len() > SHOWN {
        let more = lines.len() - SHOWN;
        lines.truncate(SHOWN);
        lines.push(format!("and {more} more"));
    }
    lines.join("; ")
}

pub(crate) fn print_report(report: &Report, secs: u64) {
    let at = report.signal_at;
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |what: &str, figure: String| rows.push((what.to_owned(), figure));

    row(
        "A's exit",
        match &report.exit {
            Some((status, after)) => format!(
                "{status}, {:.2} s after the {}",
                after.as_secs_f64(),
                report.signal
            ),
            None => format!(
                "still running {} s after the {}: killed",
                report.exit_waited.as_secs(),
                report.signal
            ),
        },
    );
    let sum = |f: fn(&Active) -> u64| report.actives.iter().map(f).sum::<u64>();
    let (on_a, on_b) = (sum(|s| s.made_on_a), sum(|s| s.made_on_b));
    let mut failures: Vec<&Failure> = report.actives.iter().flat_map(|s| &s.failed).collect();
    failures.sort_by_key(|f| f.sent);
    row(
        "echo calls made / failed / refused and retried",
        format!(
            "{} / {} / {} (made on A: {on_a}, on B: {on_b}; answered: {})",
            on_a + on_b,
            failures.len(),
            sum(|s| s.refused_and_retried),
            sum(|s| s.answered)
        ),
    );
    if !failures.is_empty() {
        row("failed calls", show_failures(&failures, at));
    }
    row(
        "echo calls in flight on A when the balancer turned: answered",
        format!(
            "{} of {}",
            sum(|s| s.across_signal_answered),
            sum(|s| s.across_signal)
        ),
    );
    row("re-initializations", sum(|s| s.reinitialized).to_string());
    let mut initialize_failures: Vec<&Failure> = report
        .actives
        .iter()
        .flat_map(|s| &s.initialize_failed)
        .collect();
    initialize_failures.sort_by_key(|f| f.sent);
    if !initialize_failures.is_empty() {
        row(
            "failed initializations",
            show_failures(&initialize_failures, at),
        );
    }
    let kept = report
        .actives
        .iter()
        .filter(|s| s.original_served_by_b && s.reinitialized == 0)
        .count();
    row(
        "sessions kept on B without a new initialize",
        format!("{kept} of {CLIENTS}"),
    );

    let long = &report.long;
    let received: u64 = long.steps.values().sum();
    let distinct = long.steps.len() as u64;
    row(
        "long call: progress events received",
        format!(
            "{received} ({distinct} distinct steps of {LONG_CALL_STEPS}, {} duplicates{})",
            received - distinct,
            match long.steps.keys().next_back() {
                Some(last) => format!("; last step {last}"),
                None => String::new(),
            }
        ),
    );
    row(
        "long call: answer received",
        match &long.answer {
            Some(answer) => format!(
                "{}, {} after the signal ({:.2} s after the call started), on {}, {}",
                match &answer.error {
                    None => "yes".to_owned(),
                    Some(error) => format!("yes, an error ({error})"),
                },
                since(at, answer.at),
                long.started
                    .map_or(0.0, |started| (answer.at - started).as_secs_f64()),
                answer.on,
                answer.via
            ),
            None => "no".to_owned(),
        },
    );
    if let Some((when, why)) = &long.post_ended {
        row(
            "long call: its POST stream",
            format!("{why} without the answer at {}", since(at, *when)),
        );
    }
    row(
        "long call: resumes attempted",
        match long.resumes {
            0 => "0".to_owned(),
            n => format!("{n} (answers: {})", show_counts(&long.resume_answers)),
        },
    );
    row(
        "A's drain summary",
        report
            .drain_summary
            .clone()
            .map_or("not printed".to_owned(), |line| format!("`{line}`")),
    );
    row(
        "A's sessions closed (its log)",
        show_counts(&report.a_closed),
    );

    println!();
    println!(
        "{} to A 1 s into the long call; {secs} s of clients after it",
        report.signal
    );
    println!();
    println!("| | |");
    println!("|---|---|");
    for (what, figure) in rows {
        println!("| {what} | {figure} |");
    }
}
