#!/usr/bin/env bash
# The long fuzz run: every target for SECONDS each (default 3600), then a table of executions
# and crashes per target (and the total). Runs at low priority.
#
#   fuzz/run-long.sh [SECONDS] [TARGET...]     e.g. fuzz/run-long.sh 7200
set -uo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
secs="${1:-3600}"
shift || true
exec nice -n 19 bash fuzz/run.sh "$secs" "$@"
