//! Checks shared by the builder and the manager's `with_*` methods, so both
//! refuse the same settings with the same message.

/// # Panics
///
/// Panics if `capacity` is 0.
pub(crate) fn replay_capacity(capacity: usize) {
    assert!(capacity > 0, "the replay capacity must be at least 1");
}

/// # Panics
///
/// Panics if `limit` is 0.
pub(crate) fn max_request_streams(limit: usize) {
    assert!(limit > 0, "at least one request stream per session");
}

/// # Panics
///
/// Panics if the configuration's `channel_capacity` is 0.
pub(crate) fn session_config(
    config: &rmcp::transport::streamable_http_server::session::local::SessionConfig,
) {
    assert!(
        config.channel_capacity > 0,
        "SessionConfig::channel_capacity must be at least 1"
    );
}
