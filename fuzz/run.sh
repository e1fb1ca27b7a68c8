#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20) and reports executions and crashes per
# target. Used by CI (short) and by run-long.sh (long). Needs cargo-fuzz; no nightly: the
# targets are built with `--sanitizer none`, which stable rustc supports.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# New inputs go to a scratch corpus (not the checked-in seeds under fuzz/corpus/); a crash
# leaves its input in fuzz/artifacts/TARGET/ and makes the script exit non-zero.
set -uo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
shift || true
if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < fuzz/targets; fi
scratch="${FUZZ_SCRATCH:-$(mktemp -d -t sg-fuzz-XXXXXX)}"
mkdir -p "$scratch"

cargo fuzz build --sanitizer none || exit 1
status=0
total=0
printf '%-18s %14s %8s %s\n' target executions crashes note > "$scratch/summary"
for t in "${targets[@]}"; do
  mkdir -p "$scratch/corpus/$t" "fuzz/artifacts/$t"
  before=$(ls "fuzz/artifacts/$t" | wc -l)
  # -rss_limit_mb: the targets map rings, never more than a few MiB; -timeout: a hang is a bug.
  cargo fuzz run --sanitizer none "$t" "$scratch/corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    > "$scratch/$t.log" 2>&1
  rc=$?
  after=$(ls "fuzz/artifacts/$t" | wc -l)
  execs=$(grep -ho 'stat::number_of_executed_units: *[0-9]*' "$scratch/$t.log" \
    | awk '{s += $2} END {print s + 0}')
  crashes=$((after - before))
  note=""
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    status=1
    note="FAILED (exit $rc): see $scratch/$t.log and fuzz/artifacts/$t/"
    tail -n 40 "$scratch/$t.log"
  fi
  total=$((total + execs))
  printf '%-18s %14s %8s %s\n' "$t" "$execs" "$crashes" "$note" >> "$scratch/summary"
done
printf '%-18s %14s\n' total "$total" >> "$scratch/summary"
cat "$scratch/summary"
exit "$status"
