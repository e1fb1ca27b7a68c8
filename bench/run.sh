#!/usr/bin/env bash
# soundgate vs PulseAudio, side by side on this machine (issue 12, item 6).
#
#   bench/run.sh           full run: N = 0 1 8 32 64 256 streams, 10 s windows
#   bench/run.sh --short   seconds: N = 0 1 8, 2 s windows (CI runs this so it cannot rot)
#
# Then the pulse flood of issue 11: 60 (short: 8) `pacat --latency-msec=5000 --rate=384000`
# against soundgate's pulse socket and against PulseAudio, one server at a time, sampling the
# server's CPU every 0.5 s (mean and peak over the window) and its peak RSS. soundgate refuses
# the streams beyond its per-uid conversion budget, so the table also counts how many of the
# pacats were still playing at the end of the window.
#
# Each server runs privately on a null sink: soundgated in a temp runtime dir, PulseAudio
# with its own XDG_RUNTIME_DIR/HOME (`-n --daemonize=no --exit-idle-time=-1`, only
# module-native-protocol-unix and module-null-sink; never the system's). Clients play
# 48 kHz stereo s16 noise with 20 ms buffers (sgcat / pacat). For every N the two servers are
# measured alternately: server CPU (utime+stime from /proc over the window), RSS, and (full
# mode, when strace exists) server syscalls per stream per second over a few seconds.
# Start-up to socket and idle RSS are measured once per server, idle CPU over 60 s (short:
# 2 s) with both servers idle at once.
#
# The latency table (issue 12, item 5): 32 (short: 4) clients with small buffers play for 30 s
# (short: 2 s) and their underruns are summed: soundgate at sink quanta 128, 256 and 512 with
# 5–30 ms client buffers (one private daemon per quantum), PulseAudio with 10–30 ms buffers.
#
# Writes BENCHMARKS.md (or $BENCH_OUT). Figures are reported, never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."

SHORT=0
[ "${1:-}" = "--short" ] && SHORT=1
if [ $SHORT = 1 ]; then
  COUNTS=(0 1 8); WINDOW=2; STRACE_SECS=0; OUT=${BENCH_OUT:-target/BENCHMARKS.short.md}
  FLOOD=8; FLOOD_WINDOW=2; IDLE_WINDOW=2
  LAT_STREAMS=4; LAT_SECS=2; SG_LAT=("256:10"); PA_LAT=(20)
else
  COUNTS=(0 1 8 32 64 256); WINDOW=10; STRACE_SECS=4; OUT=${BENCH_OUT:-BENCHMARKS.md}
  FLOOD=60; FLOOD_WINDOW=10; IDLE_WINDOW=60
  # The latency table (item 5): quantum:buffer-ms pairs for soundgate, buffers for PulseAudio.
  LAT_STREAMS=32; LAT_SECS=30
  SG_LAT=("128:5" "128:10" "128:20" "256:10" "256:20" "512:20" "512:30"); PA_LAT=(10 20 30)
fi

if ! command -v pulseaudio >/dev/null || ! command -v pacat >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pulseaudio pulseaudio-utils >/dev/null
  fi
fi
if ! command -v jq >/dev/null && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null
fi
if [ $STRACE_SECS -gt 0 ] && ! command -v strace >/dev/null && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null || true
fi
HAVE_PULSE=1; command -v pulseaudio >/dev/null && command -v pacat >/dev/null || HAVE_PULSE=0
HAVE_STRACE=0; [ $STRACE_SECS -gt 0 ] && command -v strace >/dev/null && HAVE_STRACE=1

PROFILE=${BENCH_PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p soundgated -p soundgate-ctl
else
  cargo build -q -p soundgated -p soundgate-ctl
fi
BIN=target/$PROFILE
TICK=$(getconf CLK_TCK)
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_socket() { for _ in $(seq 1 500); do [ -S "$1" ] && return 0; sleep 0.01; done; return 1; }

SG_PID=; PA_PID=; SG_START_MS=; PA_START_MS=; SG_IDLE_RSS=; PA_IDLE_RSS=
# A soundgated config in dir $1: one null sink `null`, 48 kHz stereo s16, quantum $2 if given.
sg_config() {
  mkdir -p "$1/run" "$1/state"
  {
    printf '[engine]\nrealtime_priority = "off"\n[[sink]]\nname = "null"\nbackend = "null"\n'
    printf 'format = "s16le"\nrate = 48000\nchannels = 2\n'
    if [ -n "${2:-}" ]; then printf 'quantum = %s\n' "$2"; fi
  } >"$1/soundgate.toml"
}
start_sg() {
  sg_config "$TMP/sg"
  local t0; t0=$(now_ms)
  XDG_CONFIG_HOME="$TMP/sg/xdg" "$BIN/soundgated" --runtime-dir "$TMP/sg/run" \
    --state-dir "$TMP/sg/state" --config "$TMP/sg/soundgate.toml" 2>"$TMP/sg/log" &
  SG_PID=$!; PIDS+=("$SG_PID")
  wait_socket "$TMP/sg/run/native" || { cat "$TMP/sg/log"; exit 1; }
  SG_START_MS=$(( $(now_ms) - t0 ))
}
start_pa() {
  mkdir -p "$TMP/pa/rt" "$TMP/pa/home"
  chmod 700 "$TMP/pa/rt"
  local t0; t0=$(now_ms)
  HOME="$TMP/pa/home" XDG_RUNTIME_DIR="$TMP/pa/rt" XDG_CONFIG_HOME="$TMP/pa/home" \
    pulseaudio -n --daemonize=no --exit-idle-time=-1 --use-pid-file=no --system=no \
    --disable-shm=no --realtime=no --high-priority=no --log-target=stderr \
    -L module-native-protocol-unix \
    -L "module-null-sink sink_name=null rate=48000 channels=2 format=s16le" \
    2>"$TMP/pa/log" &
  PA_PID=$!; PIDS+=("$PA_PID")
  wait_socket "$TMP/pa/rt/pulse/native" || { cat "$TMP/pa/log"; exit 1; }
  PA_START_MS=$(( $(now_ms) - t0 ))
}

CLIENTS=()
start_clients() { # server n
  local i
  for i in $(seq 1 "$2"); do
    if [ "$1" = sg ]; then
      "$BIN/sgcat" -p --server "$TMP/sg/run/native" -d null --raw -f s16le --rate 48000 \
        --channels 2 --latency-msec 20 -n "bench$i" </dev/urandom >/dev/null 2>&1 &
    else
      HOME="$TMP/pa/home" XDG_RUNTIME_DIR="$TMP/pa/rt" pacat -p --raw --format=s16le \
        --rate=48000 --channels=2 --latency-msec=20 -d null </dev/urandom >/dev/null 2>&1 &
    fi
    CLIENTS+=($!)
  done
}
stop_clients() {
  for p in "${CLIENTS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${CLIENTS[@]}"; do wait "$p" 2>/dev/null || true; done
  CLIENTS=()
}

declare -A CPU RSS SYS
measure() { # server pid n
  local key="$1:$3" t0 t1
  start_clients "$1" "$3"
  sleep 1 # settle
  t0=$(ticks "$2"); sleep "$WINDOW"; t1=$(ticks "$2")
  CPU[$key]=$(awk -v d=$((t1 - t0)) -v w="$WINDOW" -v t="$TICK" 'BEGIN {printf "%.2f", 100 * d / t / w}')
  RSS[$key]=$(rss_kib "$2")
  if [ $HAVE_STRACE = 1 ] && [ "$3" -gt 0 ]; then
    timeout -s INT "$STRACE_SECS" strace -c -f -q -p "$2" -o "$TMP/strace.$key" 2>/dev/null || true
    local calls
    calls=$(awk '$NF == "total" {print $4}' "$TMP/strace.$key" 2>/dev/null | tail -1)
    SYS[$key]=$(awk -v c="${calls:-0}" -v n="$3" -v s="$STRACE_SECS" 'BEGIN {printf "%.1f", c / n / s}')
  fi
  stop_clients
}

start_sg
[ $HAVE_PULSE = 1 ] && start_pa
# Past soundgate's default idle_suspend_secs (5), so N = 0 is the idle state users get.
sleep 6
SG_IDLE_RSS=$(rss_kib "$SG_PID")
[ $HAVE_PULSE = 1 ] && PA_IDLE_RSS=$(rss_kib "$PA_PID")
for n in "${COUNTS[@]}"; do
  measure sg "$SG_PID" "$n"
  [ $HAVE_PULSE = 1 ] && measure pa "$PA_PID" "$n"
done

# Idle: both servers with nothing to play, CPU over $IDLE_WINDOW s (at the same time: idle
# servers do not compete).
IDLE_SG=; IDLE_PA=
sleep 6 # past idle_suspend_secs again: the last clients' streams are reaped, the sink idles
a0=$(ticks "$SG_PID"); [ $HAVE_PULSE = 1 ] && b0=$(ticks "$PA_PID")
sleep "$IDLE_WINDOW"
IDLE_SG=$(awk -v d=$(( $(ticks "$SG_PID") - a0 )) -v w="$IDLE_WINDOW" -v t="$TICK" 'BEGIN {printf "%.2f", 100 * d / t / w}')
[ $HAVE_PULSE = 1 ] && IDLE_PA=$(awk -v d=$(( $(ticks "$PA_PID") - b0 )) -v w="$IDLE_WINDOW" -v t="$TICK" 'BEGIN {printf "%.2f", 100 * d / t / w}')

# The latency table: $LAT_STREAMS clients with small buffers for $LAT_SECS s, underruns
# counted. soundgate: one daemon per quantum (its sink's period), the streams' underruns from
# `sgctl --json ls streams` just before the clients stop. PulseAudio: `pacat -v` prints
# "Stream underrun." for each.
declare -A LAT_UNDER
start_sg_q() { # quantum: a daemon in $TMP/sgq$1
  local d="$TMP/sgq$1"
  sg_config "$d" "$1"
  XDG_CONFIG_HOME="$d/xdg" "$BIN/soundgated" --runtime-dir "$d/run" --state-dir "$d/state" \
    --config "$d/soundgate.toml" 2>"$d/log" &
  PIDS+=($!)
  wait_socket "$d/run/admin" || { cat "$d/log"; exit 1; }
}
for pair in "${SG_LAT[@]}"; do
  q=${pair%%:*}; ms=${pair##*:}; d="$TMP/sgq$q"
  [ -S "$d/run/admin" ] || start_sg_q "$q"
  for i in $(seq 1 "$LAT_STREAMS"); do
    "$BIN/sgcat" -p --server "$d/run/native" -d null --raw -f s16le --rate 48000 \
      --channels 2 --latency-msec "$ms" -n "lat$i" </dev/urandom >/dev/null 2>&1 &
    CLIENTS+=($!)
  done
  sleep 1 # settle: every stream created and filled
  u0=$("$BIN/sgctl" --admin "$d/run/admin" --json ls streams | jq '[.streams[].underruns] | add // 0')
  sleep "$LAT_SECS"
  u1=$("$BIN/sgctl" --admin "$d/run/admin" --json ls streams | jq '[.streams[].underruns] | add // 0')
  LAT_UNDER[sg:$pair]=$((u1 - u0))
  stop_clients
done
if [ $HAVE_PULSE = 1 ]; then
  for ms in "${PA_LAT[@]}"; do
    for i in $(seq 1 "$LAT_STREAMS"); do
      HOME="$TMP/pa/home" XDG_RUNTIME_DIR="$TMP/pa/rt" pacat -v -p --raw --format=s16le \
        --rate=48000 --channels=2 --latency-msec="$ms" -d null </dev/urandom \
        >/dev/null 2>"$TMP/pa/lat.$ms.$i" &
      CLIENTS+=($!)
    done
    sleep 1
    u0=$(cat "$TMP"/pa/lat."$ms".* | grep -c 'Stream underrun' || true)
    sleep "$LAT_SECS"
    u1=$(cat "$TMP"/pa/lat."$ms".* | grep -c 'Stream underrun' || true)
    LAT_UNDER[pa:$ms]=$((u1 - u0))
    stop_clients
  done
fi

# The pulse flood: $FLOOD 384 kHz pacats with 5 s buffers, against one server at a time.
declare -A FCPU FPEAK FRSS FPLAYING
flood() { # server pid
  local i p t0 t1 tp tn peak=0 rss=0 r sock
  [ "$1" = sg ] && sock="$TMP/sg/run/pulse/native" || sock="$TMP/pa/rt/pulse/native"
  mkdir -p "$TMP/flood-home"
  for i in $(seq 1 "$FLOOD"); do
    HOME="$TMP/flood-home" XDG_RUNTIME_DIR="$TMP/flood-home" PULSE_SERVER="unix:$sock" \
      pacat -p --raw --format=s16le --rate=384000 --channels=2 --latency-msec=5000 \
      </dev/urandom >/dev/null 2>&1 &
    CLIENTS+=($!)
  done
  sleep 1 # settle: each pacat plays or was refused
  t0=$(ticks "$2"); tp=$t0
  for i in $(seq 1 $((FLOOD_WINDOW * 2))); do
    sleep 0.5
    tn=$(ticks "$2")
    peak=$(awk -v d=$((tn - tp)) -v t="$TICK" -v p="$peak" 'BEGIN {c = 100 * d / t / 0.5; print (c > p ? c : p)}')
    r=$(rss_kib "$2"); [ "$r" -gt "$rss" ] && rss=$r
    tp=$tn
  done
  t1=$tp
  FCPU[$1]=$(awk -v d=$((t1 - t0)) -v w="$FLOOD_WINDOW" -v t="$TICK" 'BEGIN {printf "%.1f", 100 * d / t / w}')
  FPEAK[$1]=$(awk -v p="$peak" 'BEGIN {printf "%.0f", p}')
  FRSS[$1]=$(awk -v k="$rss" 'BEGIN {printf "%.1f", k/1024}')
  FPLAYING[$1]=0
  for p in "${CLIENTS[@]}"; do
    kill -0 "$p" 2>/dev/null && FPLAYING[$1]=$((FPLAYING[$1] + 1))
  done
  stop_clients
}
if command -v pacat >/dev/null; then
  flood sg "$SG_PID"
  [ $HAVE_PULSE = 1 ] && flood pa "$PA_PID"
fi

# The hand-written part of an existing $OUT (from "## Notes on this run" to the end: the notes,
# the churn and soak figures) is kept below the regenerated tables.
KEEP=$( [ -f "$OUT" ] && sed -n '/^## Notes on this run/,$p' "$OUT" || true)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "—" }'; }
{
  echo "# Benchmarks: soundgate vs PulseAudio"
  echo
  echo "Generated by \`bench/run.sh$([ $SHORT = 1 ] && echo ' --short')\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo
  echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
  echo "- soundgated $PROFILE build; PulseAudio $( [ $HAVE_PULSE = 1 ] && pulseaudio --version | awk '{print $2}' || echo 'not installed')"
  echo "- clients: 48 kHz stereo s16 noise, 20 ms buffers (sgcat / pacat), null sinks, no real-time scheduling"
  echo "- server CPU: utime+stime of the server process over ${WINDOW} s, % of one core; servers measured alternately per N"
  echo
  echo "| streams | soundgate CPU % | PulseAudio CPU % | ratio sg/pa | soundgate RSS MiB | PulseAudio RSS MiB | sg syscalls/stream/s | pa syscalls/stream/s |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
  for n in "${COUNTS[@]}"; do
    sc=${CPU[sg:$n]}; pc=${CPU[pa:$n]:-—}
    printf '| %s | %s | %s | %s | %.1f | %s | %s | %s |\n' "$n" "$sc" "$pc" "$(ratio "$sc" "${CPU[pa:$n]:-0}")" \
      "$(awk -v k="${RSS[sg:$n]}" 'BEGIN {print k/1024}')" \
      "$( [ -n "${RSS[pa:$n]:-}" ] && awk -v k="${RSS[pa:$n]}" 'BEGIN {printf "%.1f", k/1024}' || echo —)" \
      "${SYS[sg:$n]:-—}" "${SYS[pa:$n]:-—}"
  done
  echo
  echo "| | soundgate | PulseAudio |"
  echo "|---|---:|---:|"
  echo "| start-up to socket | ${SG_START_MS} ms | ${PA_START_MS:-—} ms |"
  echo "| server CPU idle, over ${IDLE_WINDOW} s | ${IDLE_SG} % | ${IDLE_PA:-—} % |"
  echo "| RSS idle | $(awk -v k="$SG_IDLE_RSS" 'BEGIN {printf "%.1f", k/1024}') MiB | $( [ -n "$PA_IDLE_RSS" ] && awk -v k="$PA_IDLE_RSS" 'BEGIN {printf "%.1f", k/1024}' || echo —) MiB |"
  echo
  echo "Latency: $LAT_STREAMS clients (48 kHz stereo s16 noise) for $LAT_SECS s each, underruns summed over all of them; soundgate's sink period (quantum) and the clients' buffer (\`--latency-msec\`) vary, PulseAudio's null sink has no fixed period:"
  echo
  echo "| server | quantum (frames) | client buffer | underruns in ${LAT_SECS} s |"
  echo "|---|---:|---:|---:|"
  for pair in "${SG_LAT[@]}"; do
    echo "| soundgate | ${pair%%:*} | ${pair##*:} ms | ${LAT_UNDER[sg:$pair]} |"
  done
  if [ $HAVE_PULSE = 1 ]; then
    for ms in "${PA_LAT[@]}"; do echo "| PulseAudio | — | $ms ms | ${LAT_UNDER[pa:$ms]} |"; done
  fi
  echo
  if [ -n "${FCPU[sg]:-}" ]; then
    echo "Pulse flood: $FLOOD \`pacat --latency-msec=5000 --rate=384000\` (stereo s16) at once over the PulseAudio protocol, server CPU sampled every 0.5 s over ${FLOOD_WINDOW} s (% of one core):"
    echo
    echo "| flood | soundgate | PulseAudio |"
    echo "|---|---:|---:|"
    echo "| pacats still playing | ${FPLAYING[sg]} of $FLOOD | ${FPLAYING[pa]:-—} of $FLOOD |"
    echo "| server CPU mean % | ${FCPU[sg]} | ${FCPU[pa]:-—} |"
    echo "| server CPU peak % | ${FPEAK[sg]} | ${FPEAK[pa]:-—} |"
    echo "| server RSS peak MiB | ${FRSS[sg]} | ${FRSS[pa]:-—} |"
    echo
    echo "soundgate converts pulse streams on its own side within a per-uid budget (\`[pulse] convert_samples_per_sec\`), so the pacats beyond it are refused (\`Too large\`) and the count above is what it admitted."
    echo
  fi
  echo "soundgate idles its sink after \`[engine] idle_suspend_secs\` (5 s) without a stream, so the N = 0 row is measured with its clock stopped."
  echo "Machine load from other processes during the run is not controlled; figures are from one run."
  if [ -n "$KEEP" ]; then echo; echo "$KEEP"; fi
} >"$OUT"
cat "$OUT"
