//! Every key with the TTL, and gone after it.

use std::time::Duration;

use crate::common::redis_backend::key;
use crate::common::redis_server::unique_prefix;
use crate::helpers::{message, replay, session_state, store, stores};

crate::redis_test! {
    /// Every key gets the TTL; unused keys vanish after it; a replay only
    /// reads (it works on a replica, and refreshes nothing).
    #[tokio::test]
    async fn every_key_has_the_ttl_and_unused_keys_expire(backend) {
        let prefix = unique_prefix("ttl");
        let ttl = Duration::from_millis(500);
        let stores = stores(backend, &prefix, Some(ttl)).await;
        assert_eq!(stores.ttl(), ttl);
        let sessions = stores.session_store();
        let events = stores.event_store();
        let id = crate::helpers::session_id(0x771);
        let id = id.as_str();
        sessions.store(id, &session_state()).await.unwrap();
        let first = store(&events, &format!("{id}:common"), &message(1)).await;
        store(&events, "stateless-stream", &message(1)).await;

        let written = backend.stored_keys(&prefix).await;
        let mut expected = vec![
            key::session(&prefix, id),
            key::stream(&prefix, "stateless-stream"),
            key::stream(&prefix, &format!("{id}:common")),
            key::index(&prefix, id),
        ];
        expected.sort();
        assert_eq!(written, expected);
        for key in &written {
            let left = backend.pttl(key).await;
            assert!(left > 0 && left <= 500, "PTTL of {key}: {left}");
        }

        // A replay 300 ms later only reads: nothing gets its TTL back (without
        // a manager no upkeep keeps anything alive).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(replay(&events, &first).await.unwrap().is_empty());
        for key in &written {
            let left = backend.pttl(key).await;
            assert!(left <= 200, "PTTL of {key} after a replay: {left}");
        }

        // Half a second after their last write, every key is gone.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!backend.exists(&key::session(&prefix, id)).await);
        assert_eq!(backend.stored_keys(&prefix).await, Vec::<String>::new());
        drop(stores);
        backend.clean(&prefix).await;
    }
}
