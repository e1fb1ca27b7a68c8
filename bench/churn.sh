#!/usr/bin/env bash
# The long client-churn soak of issue 14, item 3:
#
#   bench/churn.sh [CLIENTS] [CONCURRENCY]     default 10000 clients, 32 alive at once
#
# Starts a release soundgated in a temp dir (null sinks `speakers` and `aux`; a rule lets the
# driver record speakers.monitor and one that asks for aux.monitor), then runs `sg-churn`
# (bench/churn) with every scenario: clients killed before the Hello, mid-handshake, after it,
# mid-write, while recording, parked on a prompt (with the driver's own prompt agent answering
# at random), after uploading a sample, while subscribed, the hostile requests of
# tests/hostile.rs, and pacat/paplay on the pulse socket when installed. The driver prints
# clients/s, kills by scenario and phase, fds/ring mappings/RSS before, peak and after, and
# exits 0 only when everything is back at the baseline (`SOUNDGATE_SEED` replays a run).
# tests/churn.rs is the short form CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${1:-10000}
CONCURRENCY=${2:-32}
cargo build --release -q -p soundgated -p soundgate-bench
BIN=$PWD/target/release
TMP=$(mktemp -d /tmp/sg-churn-XXXXXX)
DPID=
cleanup() {
  [ -n "$DPID" ] && kill "$DPID" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

CHURN_ID=exe:$(realpath "$BIN/sg-churn")
cat >"$TMP/soundgate.toml" <<CONF
[prompts]
timeout_secs = 5

[[sink]]
name = "speakers"
backend = "null"
format = "s16le"
rate = 48000
channels = 2

[[sink]]
name = "aux"
backend = "null"

[[rule]]
app = "$CHURN_ID"
action = "record"
target = "speakers.monitor"
decision = "allow"

[[rule]]
app = "$CHURN_ID"
action = "record"
target = "aux.monitor"
decision = "ask"
CONF
"$BIN/soundgated" --runtime-dir "$TMP/run" --state-dir "$TMP/state" --config "$TMP/soundgate.toml" \
  2>"$TMP/daemon.log" &
DPID=$!
for _ in $(seq 1 500); do [ -S "$TMP/run/admin" ] && break; sleep 0.02; done
sleep 0.5

echo "bench/churn.sh: $CLIENTS clients, $CONCURRENCY at once, soundgated release build, $(nproc) cores"
SEED_ARG=()
[ -n "${SOUNDGATE_SEED:-}" ] && SEED_ARG=(--seed "$SOUNDGATE_SEED")
STATUS=0
"$BIN/sg-churn" --server "$TMP/run/native" --admin "$TMP/run/admin" --pulse "$TMP/run/pulse/native" \
  --clients "$CLIENTS" --concurrency "$CONCURRENCY" --hostile --agent "${SEED_ARG[@]}" || STATUS=$?
kill -0 "$DPID" 2>/dev/null || { echo "the daemon died:"; tail -20 "$TMP/daemon.log"; STATUS=1; }
exit $STATUS
