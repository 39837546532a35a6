//! The Redis stores against a real Redis: the event store's ids, replays,
//! trimming and TTLs through rmcp's traits; the session store's DELETE; and,
//! through in-process servers, isolation between sessions, a Redis outage,
//! a DELETE the pub/sub missed or that Redis lost the session for, and
//! writes Redis lost or stored after reporting a failure.
//!
//! Every test uses a key prefix of its own on the shared Redis
//! (`common::redis_server::SHARED_URL`), except those that stop, restart,
//! snapshot, stall or fill a Redis: they start a private `redis-server`.

#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod deletes;
mod faults;
mod held;
mod helpers;
mod ids;
mod isolation;
mod local_end;
mod lost_writes;
mod outage;
mod requests;
mod trim;
mod ttl;
