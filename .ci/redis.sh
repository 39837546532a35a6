#!/usr/bin/env bash
# Makes sure the Redis tests can run: `redis-server` and `redis-cli` on the
# PATH (the fault tests start private servers, the cluster tests a
# three-primary Redis Cluster of their own) and a Redis answering on
# 127.0.0.1:6379 (the shared one). Installs the Debian packages and starts
# a server, without persistence, only when missing.
set -euo pipefail

answers() {
  # A PING over bash's /dev/tcp: no client needed.
  timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6379 && printf "PING\r\n" >&3 && head -c 5 <&3' \
    2>/dev/null | grep -q PONG
}

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  # redis-server depends on redis-tools, which brings redis-cli.
  echo "redis: installing redis-server and redis-tools (Debian packages)"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq redis-server redis-tools >/dev/null
fi
# The cluster tests start their own Redis Cluster with both; they fail,
# never skip, without them.
for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "redis: $tool is not on the PATH" >&2; exit 1; }
done

if answers; then
  echo "redis: a server answers on 127.0.0.1:6379"
  exit 0
fi
mkdir -p target
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
  --dir "$PWD/target" --logfile "$PWD/target/redis-ci.log"
for _ in $(seq 100); do
  if answers; then
    echo "redis: started a server on 127.0.0.1:6379"
    exit 0
  fi
  sleep 0.1
done
echo "redis: no server answers on 127.0.0.1:6379 (see target/redis-ci.log)" >&2
exit 1
