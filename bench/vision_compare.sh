#!/usr/bin/env bash
# Side by side: the same synthetic-face landmark stream (N clients at 30 fps) to the seed
# stack's Python endpoint (bench/python_seed, JSON frames) and to Parley (the same JSON frames,
# and the compact binary frame), in interleaved rounds so the machine's drift hits each server
# alike; reports each server's frames per CPU-second per round, the medians and the ratios.
#   bench/vision_compare.sh [build-dir] [clients] [seconds] [rounds]
set -euo pipefail
build=${1:-build/default}
n=${2:-20}
seconds=${3:-30}
rounds=${4:-3}
root="$(cd "$(dirname "$0")/.." && pwd)"
results=$(mktemp)
py=""
trap 'rm -f "$results"; [[ -n "$py" ]] && kill "$py" 2>/dev/null || true' EXIT

python_round() {
  local port=$((20000 + RANDOM % 20000))
  /usr/bin/python3 "$root/bench/python_seed/landmark_server.py" --port "$port" \
    --model "$root/vision/data/canonical_face_model.txt" &
  py=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
  done
  "$build/bench/ws_load" --port "$port" --pid "$py" --no-sessions --faces -n "$n" --rate 30 \
    --duration "$seconds" --warmup 3 | tail -1
  kill "$py"; wait "$py" 2>/dev/null || true
  py=""
}

for r in $(seq "$rounds"); do
  echo "python_json $(python_round)" | tee -a "$results"
  echo "parley_json $("$build/bench/ws_load" --spawn "$build/app/parley" --faces -n "$n" \
    --rate 30 --duration "$seconds" --warmup 3 | tail -1)" | tee -a "$results"
  echo "parley_binary $("$build/bench/ws_load" --spawn "$build/app/parley" --faces --binary \
    -n "$n" --rate 30 --duration "$seconds" --warmup 3 | tail -1)" | tee -a "$results"
done
/usr/bin/python3 - "$results" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, _, js = line.partition(" ")
    runs.setdefault(name, []).append(json.loads(js))
med = lambda name, key: statistics.median(r[key] for r in runs[name])
py = med("python_json", "frames_per_cpu_s")
out = {"clients": runs["python_json"][0]["connections"], "rounds": len(runs["python_json"])}
for name in ("python_json", "parley_json", "parley_binary"):
    out[name + "_frames_per_cpu_s"] = [round(r["frames_per_cpu_s"]) for r in runs[name]]
    out[name + "_scores_p99_ms_median"] = round(med(name, "scores_p99_ms"), 1)
out["ratio_json_median"] = round(med("parley_json", "frames_per_cpu_s") / py, 1)
out["ratio_binary_median"] = round(med("parley_binary", "frames_per_cpu_s") / py, 1)
# Per round too: each Parley run against the Python run just before it.
out["ratio_json_per_round"] = [round(q["frames_per_cpu_s"] / p["frames_per_cpu_s"], 1)
                               for p, q in zip(runs["python_json"], runs["parley_json"])]
out["ratio_binary_per_round"] = [round(q["frames_per_cpu_s"] / p["frames_per_cpu_s"], 1)
                                 for p, q in zip(runs["python_json"], runs["parley_binary"])]
print(json.dumps(out))
PY
