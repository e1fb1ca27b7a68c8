#!/usr/bin/env python3
"""Which of a soak victim's underruns the VM's own stalls do not explain (bench/soak.sh).

    bench/soak_stalls.py TIMELINE STALLS BUFFER_MS

TIMELINE is soak.sh's timeline.tsv (a row every 10 s: UTC time, then the victim's underrun
count); STALLS its stalls.tsv (epoch time a 5 ms sleeper woke, and how many ms late). A late
wake at t by l ms means the sleeper was kept off the CPU over [t - l, t]. A playback client
refills at half its ring, so it underruns when it is kept from running for about half its
buffer within one buffer's time: a window of BUFFER_MS in which the sleeper was off the CPU
for BUFFER_MS / 2 or more in all (one long stall or a cluster of shorter ones). Every 10 s
sample in which the underruns rose must hold such a window (±2 s); the underruns of the
others are printed (0 when the VM explains them all), then the number of such windows.
"""
import datetime
import sys


def main() -> None:
    timeline, stalls, buffer_ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
    window, need = buffer_ms / 1000.0, buffer_ms / 2000.0
    spans = []
    for line in open(stalls):
        parts = line.split()
        if len(parts) >= 2:
            t, late = float(parts[0]), float(parts[1]) / 1000.0
            spans.append((t - late, t))
    spans.sort()
    # Starts of windows of `window` s in which the sleeper was off the CPU for `need` s.
    starved = []
    for i, (start, _) in enumerate(spans):
        off = 0.0
        for s, e in spans[i:]:
            if s >= start + window:
                break
            off += min(e, start + window) - s
        if off >= need:
            starved.append(start)
    day = datetime.datetime.now(datetime.timezone.utc).date()
    prev_t = prev_u = None
    unexplained = 0
    for row in list(open(timeline))[1:]:
        cols = row.rstrip("\n").split("\t")
        try:
            hms = datetime.datetime.strptime(cols[0], "%H:%M:%S").time()
            t = datetime.datetime.combine(day, hms, datetime.timezone.utc).timestamp()
            u = int(cols[1])
        except (ValueError, IndexError):
            continue
        if prev_u is not None and u > prev_u:
            lo = (prev_t if prev_t <= t else prev_t - 86400) - 2
            if not any(lo <= s <= t + 2 for s in starved):
                unexplained += u - prev_u
        prev_t, prev_u = t, u
    print(unexplained, len(starved))


if __name__ == "__main__":
    main()
