//! A Redis Cluster of the test's own: three primaries (and, if asked, a
//! replica each) on free ports, made with `redis-cli --cluster create`;
//! its processes killed and its directory removed when dropped.
//!
//! It needs `redis-server` and `redis-cli` on the PATH (Debian's
//! `redis-server` package brings `redis-cli` with `redis-tools`), and
//! panics without them: the cluster tests never skip.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long a node may be unreachable before the others mark it failed
/// (and its replica takes over); short, so failover tests are quick.
const NODE_TIMEOUT_MS: u64 = 1_000;

pub struct RedisCluster {
    /// The ports of every node, the primaries first.
    pub ports: Vec<u16>,
    primaries: usize,
    children: Vec<Option<Child>>,
    dir: PathBuf,
}

/// A port free now (the OS hands out another next time).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `redis-cli` with `args`, its output; panics if it cannot run or fails.
fn redis_cli(args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli on the PATH (Debian: redis-tools, which redis-server depends on)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "redis-cli {args:?} failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

impl RedisCluster {
    /// Three primaries, no replica.
    pub fn start() -> Self {
        Self::start_with(0)
    }

    /// Three primaries with `replicas` replicas each.
    pub fn start_with(replicas: usize) -> Self {
        let primaries = 3;
        let count = primaries * (1 + replicas);
        let dir = std::env::temp_dir().join(format!(
            "redis-cluster-test-{}-{}",
            std::process::id(),
            crate::common::redis_server::unique_prefix("c").replace(':', "-")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < count {
            let port = free_port();
            // The cluster bus listens on port + 10000.
            if port < 55_000 && !ports.contains(&port) {
                ports.push(port);
            }
        }
        let mut cluster = Self {
            ports,
            primaries,
            children: Vec::new(),
            dir,
        };
        for node in 0..count {
            let child = cluster.spawn(node);
            cluster.children.push(Some(child));
        }
        for port in &cluster.ports {
            wait_until_listening(*port);
        }
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        let replicas = replicas.to_string();
        args.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        redis_cli(&args);
        cluster.wait_until_ok();
        cluster
    }

    /// Starts node `node` (its config file in the cluster's directory).
    fn spawn(&self, node: usize) -> Child {
        let port = self.ports[node].to_string();
        let config = self.dir.join(format!("nodes-{port}.conf"));
        Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(&config)
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on the PATH")
    }

    /// Waits until every running node says `cluster_state:ok` and knows
    /// every slot.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for (node, port) in self.ports.iter().enumerate() {
            if self.children[node].is_none() {
                continue;
            }
            loop {
                let info = redis_cli(&["-p", &port.to_string(), "cluster", "info"]);
                if info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {port} never reached cluster_state:ok: {info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The URL of every node.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// The URLs of the primaries the cluster was made with.
    pub fn primary_urls(&self) -> Vec<String> {
        self.urls()[..self.primaries].to_vec()
    }

    /// Kills node `node` at once (SIGKILL: as abrupt as a crash).
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis-cli -p <node's port> args...`, its output.
    pub fn cli(&self, node: usize, args: &[&str]) -> String {
        let port = self.ports[node].to_string();
        let mut all = vec!["-p", port.as_str()];
        all.extend_from_slice(args);
        redis_cli(&all)
    }

    /// The node id of node `node`.
    pub fn node_id(&self, node: usize) -> String {
        self.cli(node, &["cluster", "myid"]).trim().to_owned()
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u16 {
        let node = self.running_node();
        self.cli(node, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number")
    }

    /// The node that serves `slot` now, by `CLUSTER NODES` of a running
    /// node.
    pub fn owner(&self, slot: u16) -> usize {
        let node = self.running_node();
        let nodes = self.cli(node, &["cluster", "nodes"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                match (low.parse::<u16>(), high.parse::<u16>()) {
                    (Ok(low), Ok(high)) => (low..=high).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                let port: u16 = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|port| port.parse().ok())
                    .expect("ip:port@bus");
                return self
                    .ports
                    .iter()
                    .position(|p| *p == port)
                    .expect("a node of ours");
            }
        }
        panic!("no node serves slot {slot}: {nodes}");
    }

    /// A node that is running.
    fn running_node(&self) -> usize {
        self.children
            .iter()
            .position(Option::is_some)
            .expect("a running node")
    }

    /// The shared three-primary cluster of the running tests: started by
    /// the first that asks, stopped when the last one holding it is done.
    pub fn shared() -> Arc<Self> {
        static SHARED: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cluster) = shared.upgrade() {
            return cluster;
        }
        let cluster = Arc::new(Self::start());
        *shared = Arc::downgrade(&cluster);
        cluster
    }
}

fn wait_until_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not start on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in 0..self.children.len() {
            self.kill(node);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
