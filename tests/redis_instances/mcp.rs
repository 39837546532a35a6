//! What the instance tests read from Redis.

use std::time::{Duration, Instant};

use crate::common::redis_server::{SHARED_URL, connection};
use serde_json::Value;

pub use crate::common::mcp::*;

/// Waits until the last entry of the stored stream `stream` holds a
/// JSON-RPC response (the request's result was stored).
pub async fn wait_for_stored_result(prefix: &str, stream: &str) {
    let mut connection = connection(SHARED_URL).await;
    let key = crate::common::redis_backend::key::stream(prefix, stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Entries are `<generation>-<sequence> <server> <retry> <message JSON>`.
        let last: Option<String> = redis::cmd("LINDEX")
            .arg(&key)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .unwrap();
        let done = last.is_some_and(|entry| {
            entry
                .splitn(4, ' ')
                .nth(3)
                .and_then(|m| serde_json::from_str::<Value>(m).ok())
                .is_some_and(|m| m.get("result").is_some() || m.get("error").is_some())
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the tool's result never reached {key}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
