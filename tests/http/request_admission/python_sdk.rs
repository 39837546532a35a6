//! A real client: the official Python SDK (`mcp` 1.x) through the layer
//! with request limits on. It ends its session with a `DELETE` and logs
//! "Session termination failed" unless that is answered 200 or 204 (rmcp
//! says 202; the layer answers 200).
//!
//! Skipped, with a note on stderr, where `python3` or its `mcp` package is
//! missing; install it with `pip install "mcp==1.*"`.

use std::process::Stdio;
use std::time::Duration;

use mcp_bounded_session::BoundedSessionManagerBuilder;

use super::{TIMEOUT, wait_in_flight};
use crate::common::{TestServer, eventually};

const SCRIPT: &str = r#"
import asyncio, logging, sys
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

async def main(url):
    async with streamablehttp_client(url) as (read, write, session_id):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("echo", {"text": "from python"})
            print("RESULT", result.content[0].text)
            print("SESSION", session_id())

asyncio.run(main(sys.argv[1]))
"#;

fn python_sdk_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import mcp.client.streamable_http"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_ends_its_session_without_a_warning() {
    if !python_sdk_available() {
        eprintln!("skipped: python3 with the `mcp` package (pip install \"mcp==1.*\") not found");
        return;
    }
    let (server, _probe) = TestServer::start_admission(
        BoundedSessionManagerBuilder::new(10)
            .max_requests_in_flight(10)
            .max_requests_in_flight_per_client(4)
            .build(),
    )
    .await;
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(&server.url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Python client finished in time")
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("RESULT from python"), "{stdout}\n{stderr}");
    assert!(
        !stderr.contains("Session termination failed"),
        "the SDK did not accept the DELETE's answer: {stderr}"
    );
    // The DELETE ended the session; nothing is held.
    assert!(eventually(TIMEOUT, || server.manager.session_count() == 0).await);
    wait_in_flight(&server.manager, 0).await;
}
