//! Redis for the tests: the shared server on 127.0.0.1:6379 under a key
//! prefix of the test's own, or a private `redis-server` on a free port
//! for tests that stop it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shared Redis every machine of this project runs.
pub const SHARED_URL: &str = "redis://127.0.0.1:6379/";

/// A fresh key prefix: tests running at once never share a key.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test:{test}:{}:{nanos}:", std::process::id())
}

/// A plain connection for looking at what the stores wrote.
pub async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("a Redis server answers (run `redis-server` on 127.0.0.1:6379)")
}

/// Every key under `prefix`.
pub async fn keys(url: &str, prefix: &str) -> Vec<String> {
    let mut connection = connection(url).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    keys.sort();
    keys
}

/// Removes every key under `prefix` (at the end of a test).
pub async fn clean(url: &str, prefix: &str) {
    let keys = keys(url, prefix).await;
    if !keys.is_empty() {
        let mut connection = connection(url).await;
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

/// [`clean`] without a runtime, best effort (from a `Drop`, so that a
/// failed test leaves no keys either): errors are ignored.
pub fn clean_blocking(url: &str, prefix: &str) {
    if let Ok(client) = redis::Client::open(url)
        && let Ok(mut connection) = client.get_connection()
    {
        let found: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut connection)
            .unwrap_or_default();
        if !found.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(found).query(&mut connection);
        }
    }
}

/// A `redis-server` of the test's own, on a free port; stopped (killed)
/// when dropped or by [`PrivateRedis::stop`].
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
    /// Extra arguments, given on every start.
    args: Vec<String>,
    /// Where `SAVE` writes its snapshot and a restart reads it, if the
    /// test takes snapshots; removed when dropped.
    dir: Option<std::path::PathBuf>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Started with `args` as well (every time).
    pub fn start_with(args: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self {
            port,
            child: None,
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            dir: None,
        };
        redis.restart();
        redis
    }

    /// One that keeps a snapshot (written only by `SAVE`) in a directory
    /// of its own, reloaded on each restart; allows `DEBUG` (Redis 7 needs
    /// it enabled).
    pub fn start_with_snapshots() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "redis-test-{}-{}",
            std::process::id(),
            unique_prefix("dir").replace(':', "-")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let dir_arg = dir.to_str().unwrap().to_owned();
        let mut redis = Self::start_with(&["--dir", &dir_arg, "--enable-debug-command", "yes"]);
        redis.dir = Some(dir);
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it (again, on the same port) and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on the PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it at once (SIGKILL: as abrupt as a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
