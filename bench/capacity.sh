#!/usr/bin/env bash
# Capacity (#19): the largest number of full live conversations one server holds in real time.
#   bench/capacity.sh [--counts "8 16 24"] [--seconds 60] [--warmup 30] [--ramp 15]
#                     [--build build/default] [--p95-ms 800] [--server-arg ARG]...
# Each count N runs one spawned server and N full sessions from the repo's load client
# (ws_load --conversation --webm --landmark-fps 30): each user speaks librivox turns into a
# WebM/Opus microphone (a browser's MediaRecorder) with human turn-taking (waits for the persona's
# reply to play out, then a breath; the sessions start one by one over --ramp seconds, as people
# arrive), its face tracker sends 30 landmark frames a second, and the
# persona answers (offline dialogue, Flite, paced Opus playback). N holds when every measured
# turn was answered, none was failed as asr_overloaded, and voice-to-voice p95 (the user's last
# voiced sample sent -> the reply's first voice packet received) is within --p95-ms.
# Per count: build/capacity/<N>.json (the load client's figures, with the server's CPU per
# session by thread group from parley_thread_cpu_seconds, and the load client's own CPU).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$PARLEY_ROOT"

counts="8 16 24" seconds=60 warmup=30 ramp=15 build=build/default p95=800
server_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --counts) counts=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --ramp) ramp=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --p95-ms) p95=$2; shift 2 ;;
    --server-arg) server_args+=("--server-arg=$2"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "capacity: unknown option $1" >&2; exit 2 ;;
  esac
done
ws_load=$build/bench/ws_load
[ -x "$build/app/parley" ] && [ -x "$ws_load" ] || { echo "capacity: build $build first" >&2; exit 2; }
out=build/capacity
mkdir -p "$out"
largest=0
printf '%4s %8s %8s %9s %8s %10s %11s %11s  %s\n' N v2v_p50 v2v_p95 answered missing overloaded server_cores client_cores "cores/session by stage"
for n in $counts; do
  "$ws_load" --spawn "$build/app/parley" --conversation --webm --landmark-fps 30 -n "$n" \
    --duration "$seconds" --warmup "$warmup" --ramp "$ramp" "${server_args[@]}" >"$out/$n.json" 2>"$out/$n.log" || true
  row=$(python3 - "$out/$n.json" "$p95" <<'PY'
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception:
    print("FAIL - - - - - - - (no result)"); sys.exit()
v = r["voice_to_voice_ms"]
ok = r["turns_answered"] > 0 and r["turns_missing_reply"] == 0 and \
     r["asr_overloaded_errors"] == 0 and v["p95"] <= float(sys.argv[2])
stages = " ".join(f"{k}={x:.3f}" for k, x in sorted(r.get("server_cores_per_session_by_stage", {}).items(), key=lambda kv: -kv[1]))
print("OK" if ok else "FAIL", f'{v["p50"]:.0f}', f'{v["p95"]:.0f}', r["turns_answered"], r["turns_missing_reply"],
      r["asr_overloaded_errors"], f'{r["server_cpu_cores"]:.2f}', f'{r.get("load_client_cores", 0):.2f}', stages)
PY
)
  read -r verdict rest <<<"$row"
  printf '%4s %s  %s\n' "$n" "$rest" "$verdict"
  [ "$verdict" = OK ] && [ "$n" -gt "$largest" ] && largest=$n
done
echo "largest N holding real time (p95 <= ${p95} ms, every turn answered, none overloaded): $largest"
