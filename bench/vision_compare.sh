#!/usr/bin/env bash
# Side by side in one run: the same synthetic-face landmark stream (N clients at 30 fps, JSON
# frames of 478 points) to the seed stack's Python endpoint (bench/python_seed) and to Parley;
# reports each server's frames per CPU-second and the ratio.
#   bench/vision_compare.sh [build-dir] [clients] [seconds]
set -euo pipefail
build=${1:-build/default}
n=${2:-20}
seconds=${3:-30}
root="$(cd "$(dirname "$0")/.." && pwd)"
port=$((20000 + RANDOM % 20000))

/usr/bin/python3 "$root/bench/python_seed/landmark_server.py" --port "$port" \
  --model "$root/vision/data/canonical_face_model.txt" &
py=$!
trap 'kill $py 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done
python_json=$("$build/bench/ws_load" --port "$port" --pid "$py" --no-sessions --faces -n "$n" \
  --rate 30 --duration "$seconds" --warmup 3 | tail -1)
kill "$py"; wait "$py" 2>/dev/null || true
parley_json=$("$build/bench/ws_load" --spawn "$build/app/parley" --faces -n "$n" --rate 30 \
  --duration "$seconds" --warmup 3 | tail -1)
echo "python_seed: $python_json"
echo "parley:      $parley_json"
/usr/bin/python3 - "$python_json" "$parley_json" <<'PY'
import json, sys
p, q = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"clients": p["connections"],
                  "python_frames_per_cpu_s": round(p["frames_per_cpu_s"], 1),
                  "python_scores_p99_ms": round(p["scores_p99_ms"], 1),
                  "parley_frames_per_cpu_s": round(q["frames_per_cpu_s"], 1),
                  "parley_scores_p99_ms": round(q["scores_p99_ms"], 1),
                  "ratio": round(q["frames_per_cpu_s"] / p["frames_per_cpu_s"], 1)}))
PY
