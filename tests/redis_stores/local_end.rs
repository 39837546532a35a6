//! A copy that ends on its instance without a DELETE (evicted, idle)
//! leaves the stored session alone: the client is restored on its next
//! request.

use std::time::Duration;

use crate::common::TestServer;
use crate::common::redis_backend::key;
use crate::common::redis_server::unique_prefix;
use crate::helpers::stores;
use mcp_bounded_session::BoundedSessionManager;
use reqwest::StatusCode;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use std::net::Ipv4Addr;

/// One instance with `builder`'s manager on `stores`.
async fn instance_with(
    stores: &mcp_bounded_session::RedisStores,
    builder: mcp_bounded_session::BoundedSessionManagerBuilder,
) -> TestServer {
    let mut config = StreamableHttpServerConfig::default();
    config.session_store = Some(stores.session_store());
    TestServer::start_with(builder.redis(stores).build(), config).await
}

crate::redis_test! {
    #[tokio::test]
    async fn an_evicted_copy_leaves_the_stored_session_and_comes_back(backend) {
        let prefix = unique_prefix("evicted");
        let stores = stores(backend, &prefix, None).await;
        // A cap of one: the second session evicts the first.
        let server = instance_with(&stores, BoundedSessionManager::builder(1)).await;
        let first_client = server.client_from(Ipv4Addr::new(127, 0, 0, 2));
        let second_client = server.client_from(Ipv4Addr::new(127, 0, 0, 3));
        let first = first_client.initialize().await.unwrap();
        let second = second_client.initialize().await.unwrap();
        assert!(
            server.manager.session(&first.clone().into()).is_none(),
            "the cap of one evicted the first session"
        );
        assert!(backend.exists(&key::session(&prefix, &first)).await);

        // Its next request restores it (evicting the second in turn).
        assert!(first_client.works(&first).await, "restored from Redis");
        assert!(server.manager.session(&first.clone().into()).is_some());
        assert!(backend.exists(&key::session(&prefix, &second)).await);
        assert_eq!(server.manager.session_count(), 1);
        backend.clean(&prefix).await;
    }
}

crate::redis_test! {
    #[tokio::test]
    async fn an_idle_expired_copy_leaves_the_stored_session_and_comes_back(backend) {
        let prefix = unique_prefix("idle");
        // The keys outlive the local idle timeout.
        let stores = crate::helpers::stores(backend, &prefix, Some(Duration::from_secs(30))).await;
        let server = instance_with(
            &stores,
            BoundedSessionManager::builder(8).idle_timeout(Duration::from_millis(300)),
        )
        .await;
        let client = server.client();
        let session = client.initialize().await.unwrap();
        let id = session.clone().into();
        assert!(
            crate::common::eventually(Duration::from_secs(5), || server
                .manager
                .session(&id)
                .is_none())
            .await,
            "the idle timeout ends the local copy"
        );
        assert!(backend.exists(&key::session(&prefix, &session)).await);
        assert_eq!(client.status_of(&session).await, StatusCode::OK, "restored");
        backend.clean(&prefix).await;
    }
}
