//! The example server's command line.

use std::net::SocketAddr;
use std::time::Duration;

use mcp_bounded_session::AtCapacity;

pub const USAGE: &str = "\
Usage: server [FLAGS]

  --bind ADDR                  address to listen on (default 127.0.0.1:8000)
  --max-sessions N             sessions kept in memory; at the cap a new session
                               evicts the least recently active idle one, never
                               one with a request in flight (default 1000)
  --rate-limit N/SECS|none     at most N new sessions in any SECS-second window,
                               all clients together (default none)
  --idle-timeout SECS          close a session after SECS seconds without
                               activity (default 300)
  --max-sessions-per-client N  sessions one client may hold; one more replaces
                               its own least recently active idle session;
                               0 = no quota (default 10)
  --rate-limit-per-client N/SECS|none
                               at most N new sessions per client in any
                               SECS-second window; none = no per-client limit
                               (default 20/60)
  --trusted-proxies CIDR,...   networks of the reverse proxies in front of
                               this server (e.g. 10.0.0.0/8,127.0.0.1/32); a
                               request from one of them is keyed by the first
                               address from the right of the forwarding
                               header that is not a trusted proxy (default
                               none: the connection's peer address)
  --forwarded-header x-forwarded-for|forwarded
                               the one header those proxies append to (needed
                               with --trusted-proxies; the other is never read)
  --at-capacity evict|refuse   when the cap is full: evict an idle session, or
                               refuse new sessions with 503 (default evict)
  --max-requests N|none        requests in flight on the whole server; one
                               more gets 503 (default 1024)
  --max-requests-per-client N|none
                               requests one client may have in flight; one
                               more gets 429 (default 32)
  --request-rate-per-client N/SECS|none
                               at most N requests per client in any
                               SECS-second window (default 600/60)
  --max-listen-streams N|none  subscriptions/listen streams open on the whole
                               server (default 10000)
  --max-listen-streams-per-client N|none
                               listen streams one client may hold; one more
                               ends its own oldest (default 4)
  --max-connections N|none     connections open on the whole server; one more
                               gets 503 and is closed (default 10000)
  --max-connections-per-client N|none
                               connections one client may hold open; one more
                               gets 503 and is closed (default 64: the request
                               quota, listen streams and a GET, with room)
  --drain-timeout SECS         on SIGTERM or SIGINT, how long requests in flight
                               may run before they are cancelled (default 25,
                               under Kubernetes' 30 s grace period); a second
                               signal stops at once
  --park-after SECS|none       park a session idle this long: its live copy
                               ends, its next request restores it (in memory,
                               or in Redis with --redis; default none)
  --max-parked N               sessions parked in memory at most, the least
                               recently parked dropped beyond (default 100000;
                               setting it parks evicted sessions too)
  --redis URL                  share sessions and replays with every instance
                               given the same URL and prefix (needs
                               --features redis; default: none, one instance)
  --redis-cluster URL,URL,...  the same through a Redis Cluster (or Valkey
                               cluster): the URLs of some of its nodes
  --redis-prefix PREFIX        key prefix in Redis (default mcp:)
  --request-lost-after SECS    after a crash, how soon a client resuming one of
                               this instance's unanswered requests on another
                               instance hears it was lost (default 10)

The request and listen limits apply to every POST, with or without a
session (protocol 2026-07-28 has none); the connection limits apply as
each connection is accepted, and a trusted proxy has no per-client
connection limit (it carries many clients). 0 or none turns a limit off.
A client is its IP address, an IPv6 address counting as its /64; a request
from a trusted proxy whose header names no client address gets 400.
Built with --features metrics, GET /metrics serves Prometheus text on the same
address.";

#[derive(Debug)]
pub struct Options {
    pub bind: SocketAddr,
    pub max_sessions: usize,
    pub rate_limit: Option<(usize, Duration)>,
    pub idle_timeout: Duration,
    pub max_sessions_per_client: Option<usize>,
    pub rate_limit_per_client: Option<(usize, Duration)>,
    /// The networks given with `--trusted-proxies`, as written (the
    /// builder validates them).
    pub trusted_proxies: Vec<String>,
    pub forwarded_header: Option<String>,
    pub at_capacity: AtCapacity,
    pub max_requests: Option<usize>,
    pub max_requests_per_client: Option<usize>,
    pub request_rate_per_client: Option<(usize, Duration)>,
    pub max_listen_streams: Option<usize>,
    pub max_listen_streams_per_client: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_client: Option<usize>,
    pub drain_timeout: Duration,
    /// `--park-after`, if given.
    pub park_after: Option<Duration>,
    /// `--max-parked`, if given.
    pub max_parked: Option<usize>,
    pub redis: Option<String>,
    /// The nodes of `--redis-cluster`.
    pub redis_cluster: Option<Vec<String>>,
    pub redis_prefix: String,
    pub request_lost_after: Option<Duration>,
}

pub fn parse_options(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
        max_sessions: 1000,
        rate_limit: None,
        idle_timeout: Duration::from_secs(300),
        max_sessions_per_client: Some(10),
        rate_limit_per_client: Some((20, Duration::from_secs(60))),
        trusted_proxies: Vec::new(),
        forwarded_header: None,
        at_capacity: AtCapacity::Evict,
        max_requests: Some(1024),
        max_requests_per_client: Some(32),
        request_rate_per_client: Some((600, Duration::from_secs(60))),
        max_listen_streams: Some(10_000),
        max_listen_streams_per_client: Some(4),
        max_connections: Some(10_000),
        max_connections_per_client: Some(64),
        drain_timeout: Duration::from_secs(25),
        redis: None,
        redis_cluster: None,
        redis_prefix: "mcp:".to_owned(),
        request_lost_after: None,
        park_after: None,
        max_parked: None,
    };
    let mut args = args;
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bind" => {
                options.bind = value
                    .parse()
                    .map_err(|e| format!("--bind {value}: {e} (expected e.g. 127.0.0.1:8000)"))?;
            }
            "--max-sessions" => {
                options.max_sessions =
                    value.parse().ok().filter(|&n| n >= 1).ok_or_else(|| {
                        format!("--max-sessions {value}: expected an integer >= 1")
                    })?;
            }
            "--rate-limit" => options.rate_limit = parse_rate(&flag, &value, "100/60")?,
            "--idle-timeout" => {
                let secs: u64 = value
                    .parse()
                    .ok()
                    .filter(|&s| s >= 1)
                    .ok_or_else(|| format!("--idle-timeout {value}: expected seconds >= 1"))?;
                options.idle_timeout = Duration::from_secs(secs);
            }
            "--max-sessions-per-client" => {
                options.max_sessions_per_client = parse_limit(&flag, &value)?;
            }
            "--max-requests" => options.max_requests = parse_limit(&flag, &value)?,
            "--max-requests-per-client" => {
                options.max_requests_per_client = parse_limit(&flag, &value)?;
            }
            "--request-rate-per-client" => {
                options.request_rate_per_client = parse_rate(&flag, &value, "600/60")?;
            }
            "--max-listen-streams" => options.max_listen_streams = parse_limit(&flag, &value)?,
            "--max-listen-streams-per-client" => {
                options.max_listen_streams_per_client = parse_limit(&flag, &value)?;
            }
            "--max-connections" => options.max_connections = parse_limit(&flag, &value)?,
            "--max-connections-per-client" => {
                options.max_connections_per_client = parse_limit(&flag, &value)?;
            }
            "--rate-limit-per-client" => {
                options.rate_limit_per_client = parse_rate(&flag, &value, "20/60")?;
            }
            "--trusted-proxies" => {
                options.trusted_proxies = value
                    .split(',')
                    .map(str::trim)
                    .filter(|network| !network.is_empty())
                    .map(str::to_owned)
                    .collect();
                if options.trusted_proxies.is_empty() {
                    return Err(format!(
                        "--trusted-proxies {value:?}: expected networks such as \
                         10.0.0.0/8,127.0.0.1/32"
                    ));
                }
            }
            "--forwarded-header" => {
                let header = value.to_ascii_lowercase();
                if header != "x-forwarded-for" && header != "forwarded" {
                    return Err(format!(
                        "--forwarded-header {value}: expected x-forwarded-for or forwarded"
                    ));
                }
                options.forwarded_header = Some(header);
            }
            "--at-capacity" => {
                options.at_capacity = match value.as_str() {
                    "evict" => AtCapacity::Evict,
                    "refuse" => AtCapacity::Refuse,
                    _ => {
                        return Err(format!("--at-capacity {value}: expected evict or refuse"));
                    }
                };
            }
            "--park-after" => {
                options.park_after = match value.as_str() {
                    "none" => None,
                    _ => Some(
                        value
                            .parse::<f64>()
                            .ok()
                            .filter(|secs| *secs > 0.0 && secs.is_finite())
                            .map(Duration::from_secs_f64)
                            .ok_or_else(|| {
                                format!("--park-after {value}: expected seconds > 0 or none")
                            })?,
                    ),
                };
            }
            "--max-parked" => {
                let max: usize = value
                    .parse()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| format!("--max-parked {value}: expected a number >= 1"))?;
                options.max_parked = Some(max);
            }
            "--drain-timeout" => {
                options.drain_timeout = value
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| format!("--drain-timeout {value}: expected seconds >= 0"))?;
            }
            "--redis" if cfg!(feature = "redis") => options.redis = Some(value),
            "--redis" => return Err("--redis needs the server built with --features redis".into()),
            "--redis-cluster" if cfg!(feature = "redis") => {
                let nodes: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|node| !node.is_empty())
                    .map(str::to_owned)
                    .collect();
                if nodes.is_empty() {
                    return Err(format!(
                        "--redis-cluster {value:?}: expected node URLs separated by commas"
                    ));
                }
                options.redis_cluster = Some(nodes);
            }
            "--redis-cluster" => {
                return Err("--redis-cluster needs the server built with --features redis".into());
            }
            "--redis-prefix" => options.redis_prefix = value,
            "--request-lost-after" => {
                let secs = value
                    .parse::<f64>()
                    .ok()
                    .filter(|secs| *secs >= 0.1 && secs.is_finite())
                    .ok_or_else(|| {
                        format!("--request-lost-after {value}: expected seconds >= 0.1")
                    })?;
                options.request_lost_after = Some(Duration::from_secs_f64(secs));
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if options.redis.is_some() && options.redis_cluster.is_some() {
        return Err("--redis and --redis-cluster: give one of them".into());
    }
    let redis = options.redis.is_some() || options.redis_cluster.is_some();
    if redis && options.max_parked.is_some() {
        return Err("--max-parked parks in memory; with Redis, sessions park in Redis".into());
    }
    if options
        .park_after
        .is_some_and(|after| after >= options.idle_timeout)
    {
        return Err("--park-after must be shorter than --idle-timeout".into());
    }
    match (
        &options.forwarded_header,
        options.trusted_proxies.is_empty(),
    ) {
        (None, false) => {
            return Err(
                "--trusted-proxies needs --forwarded-header x-forwarded-for or \
                        forwarded: the header your proxies append to"
                    .into(),
            );
        }
        (Some(_), true) => {
            return Err("--forwarded-header needs --trusted-proxies: the proxies' networks".into());
        }
        _ => {}
    }
    Ok(options)
}

/// A count, `0` or `none` for no limit.
fn parse_limit(flag: &str, value: &str) -> Result<Option<usize>, String> {
    if value == "none" {
        return Ok(None);
    }
    let n: usize = value
        .parse()
        .map_err(|_| format!("{flag} {value}: expected an integer >= 0 (0 or none: no limit)"))?;
    Ok((n > 0).then_some(n))
}

/// `N/SECS` with both at least 1, or `none` (or `0`) for no limit.
fn parse_rate(flag: &str, value: &str, example: &str) -> Result<Option<(usize, Duration)>, String> {
    if value == "none" || value == "0" {
        return Ok(None);
    }
    let parsed = value.split_once('/').and_then(|(n, secs)| {
        let n: usize = n.parse().ok().filter(|&n| n >= 1)?;
        let secs: u64 = secs.parse().ok().filter(|&s| s >= 1)?;
        Some((n, Duration::from_secs(secs)))
    });
    parsed.map(Some).ok_or_else(|| {
        format!(
            "{flag} {value}: expected N/SECS with N >= 1 and SECS >= 1 (e.g. {example}), or none"
        )
    })
}

fn show_rate(rate: Option<(usize, Duration)>) -> String {
    rate.map_or("none".to_owned(), |(n, window)| {
        format!("{n} per {}s", window.as_secs())
    })
}

fn show_limit(limit: Option<usize>) -> String {
    limit.map_or("none".to_owned(), |n| n.to_string())
}

fn show_at_capacity(at_capacity: AtCapacity) -> &'static str {
    match at_capacity {
        AtCapacity::Refuse => "refuse",
        // `AtCapacity` is non-exhaustive; the parser makes only these two.
        _ => "evict",
    }
}

/// One line, starting with "max sessions ": `benches/flood.rs` reads it as
/// the server's configuration.
pub fn settings_line(options: &Options) -> String {
    format!(
        "max sessions {} (at capacity: {}), idle timeout {}s, rate limit {}; per client: \
         max sessions {}, rate limit {}, trusted proxies {}; requests: max in flight {}, \
         per client {}, rate per client {}; listen streams: max {}, per client {}; \
         connections: max {}, per client {}; drain timeout {}s",
        options.max_sessions,
        show_at_capacity(options.at_capacity),
        options.idle_timeout.as_secs(),
        show_rate(options.rate_limit),
        show_limit(options.max_sessions_per_client),
        show_rate(options.rate_limit_per_client),
        match &options.forwarded_header {
            Some(header) => format!("{} ({header})", options.trusted_proxies.join(",")),
            None => "none".to_owned(),
        },
        show_limit(options.max_requests),
        show_limit(options.max_requests_per_client),
        show_rate(options.request_rate_per_client),
        show_limit(options.max_listen_streams),
        show_limit(options.max_listen_streams_per_client),
        show_limit(options.max_connections),
        show_limit(options.max_connections_per_client),
        options.drain_timeout.as_secs(),
    ) + &match (&options.redis, &options.redis_cluster) {
        (Some(_), _) => format!("; redis on (prefix {})", options.redis_prefix),
        (_, Some(nodes)) => format!(
            "; redis cluster on ({} nodes given, prefix {})",
            nodes.len(),
            options.redis_prefix
        ),
        (None, None) => String::new(),
    } + &match (options.max_parked, options.park_after) {
        (None, None) => String::new(),
        (max, after) => format!(
            "; parking: max parked {}, park after {}",
            max.map_or_else(|| "default".to_owned(), |max| max.to_string()),
            after.map_or_else(
                || "none".to_owned(),
                |after| format!("{}s", after.as_secs_f64())
            ),
        ),
    }
}
