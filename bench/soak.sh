#!/usr/bin/env bash
# Soak (#18): one server under a steady mix of live sessions for a long time, watched for growth.
#   bench/soak.sh [--minutes 30] [--full 24] [--speech 0] [--landmarks 0] [--webm 0]
#                 [--session-minutes 10] [--warmup S] [--sample-s 30] [--build build/default]
# Load (the repo's load client, bench/ws_load, against one spawned server):
#   --full N       full practice sessions, as the page holds them: the microphone as WebM/Opus
#                  (audio-only, as the page records while its face mesh runs), a face tracker's
#                  binary landmark frames at 30 fps, librivox turns spoken in real time and each
#                  reply's voice waited for (ws_load --conversation --webm --landmark-fps 30):
#                  GStreamer ingest, VAD, ASR, vision, dialogue, TTS, paced playback. Each person
#                  practises --session-minutes, then the session ends (its report is built and
#                  stored) and the next person takes the seat with a new one (0: one session
#                  per seat for the whole run), so memory is judged on leaks, not on the
#                  report data live sessions keep by design;
#   --speech N     spoken conversations over PCM (ws_load --conversation);
#   --landmarks N  MediaPipe-shaped JSON landmark streams at 30 fps (ws_load --faces);
#   --webm N       camera sessions streaming an Opus + VP8 WebM at real time (ws_load --media):
#                  the GStreamer ingest with video decode, VAD on its audio.
# Every --sample-s the server's resident memory, open descriptors, threads and loaded speech
# decoders (/health) go to build/soak/samples.csv. The warm-up is --warmup seconds (default: the
# first fifth of the run, at least 2 minutes); after it the bounds are: resident memory grows
# < 5 %, descriptors and threads do not grow (the last quarter's least is not past the first
# quarter's most), and the full sessions' voice-to-voice p50 in the last quarter of the measured
# time is within 50 % (and 300 ms) of the first quarter's. Exits 1 when one is broken. The speech decoder pool grows on demand (~90 MB a
# decoder, up to decoders_max): the summary says when it grew inside the measured window.
# Each load client's closing JSON is in build/soak/<kind>.json.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$PARLEY_ROOT"

minutes=30 full=24 session_minutes=10 speech=0 landmarks=0 webm=0 warmup="" sample_s=30 build=build/default
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --session-minutes) session_minutes=$2; shift 2 ;;
    --full) full=$2; shift 2 ;;
    --speech) speech=$2; shift 2 ;;
    --landmarks) landmarks=$2; shift 2 ;;
    --webm) webm=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --sample-s) sample_s=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "soak: unknown option $1" >&2; exit 2 ;;
  esac
done
parley=$build/app/parley
ws_load=$build/bench/ws_load
[ -x "$parley" ] && [ -x "$ws_load" ] || { echo "soak: build $build first" >&2; exit 2; }
out=build/soak
mkdir -p "$out"
seconds=$((minutes * 60))
[ -n "$warmup" ] || warmup=$((seconds / 5 > 120 ? seconds / 5 : 120))
[ "$warmup" -lt "$seconds" ] || { echo "soak: the run must be longer than its warm-up" >&2; exit 2; }

clip=$out/camera_${seconds}s.webm
if [ "$webm" -gt 0 ] && [ ! -s "$clip" ]; then
  ensure_apt_packages gstreamer1.0-tools  # gst-launch-1.0 records the clip
  len=$((seconds + 30))
  gst-launch-1.0 -q webmmux name=mux streamable=true ! filesink location="$clip" \
    videotestsrc pattern=ball num-buffers=$((len * 15)) \
    ! video/x-raw,width=320,height=240,framerate=15/1 \
    ! vp8enc deadline=1 cpu-used=8 keyframe-max-dist=15 target-bitrate=300000 ! mux. \
    audiotestsrc wave=pink-noise num-buffers=$((len * 50)) samplesperbuffer=960 \
    ! audio/x-raw,rate=48000,channels=1 ! opusenc bitrate=32000 ! mux.
fi

secret=soak-secret-0123456789abcdef0123
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d /tmp/parley-soak-XXXXXX)
"$parley" --port "$port" --bind 127.0.0.1 --jwt-secret-key "$secret" --data-dir "$data" \
  --max-connections-per-ip 512 --log-level warn 2>"$out/server.log" &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done

load() {  # kind, ws_load arguments...
  local kind=$1
  shift
  "$ws_load" --port "$port" --pid "$server" --secret "$secret" --warmup "$warmup" \
    --duration $((seconds - warmup + 2 * sample_s)) "$@" >"$out/$kind.json" 2>"$out/$kind.log" &
}
clients=()
[ "$full" -eq 0 ] || {
  # People arrive over the first half of the warm-up, not all in one instant.
  load full --conversation --webm --landmark-fps 30 --ramp $((warmup / 2)) -n "$full" \
    --session-minutes "$session_minutes"
  clients+=($!)
}
[ "$speech" -eq 0 ] || { load speech --conversation -n "$speech"; clients+=($!); }
[ "$landmarks" -eq 0 ] || { load landmarks --faces -n "$landmarks" --rate 30; clients+=($!); }
[ "$webm" -eq 0 ] || {
  load webm --media "$clip" --media-seconds $((seconds + 30)) -n "$webm"
  clients+=($!)
}

echo "t_s,rss_kib,fds,threads,decoders" >"$out/samples.csv"
start=$(date +%s)
while :; do
  now=$(($(date +%s) - start))
  [ -d "/proc/$server" ] || { echo "soak: the server died (see $out/server.log)" >&2; exit 1; }
  for c in "${clients[@]}"; do
    if [ ! -d "/proc/$c" ] && [ "$now" -lt "$warmup" ]; then
      echo "soak: a load client stopped early (see $out/*.log)" >&2
      tail -3 "$out"/*.log >&2
      exit 1
    fi
  done
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$server/status")
  threads=$(awk '/^Threads/ {print $2}' "/proc/$server/status")
  fds=$(ls "/proc/$server/fd" | wc -l)
  decoders=$(curl -s -m 2 "http://127.0.0.1:$port/health" | grep -o '"decoders_loaded":[0-9]*' |
    grep -o '[0-9]*$' || echo -1)
  echo "$now,$rss,$fds,$threads,${decoders:--1}" >>"$out/samples.csv"
  [ "$now" -lt "$seconds" ] || break
  sleep "$sample_s"
done
for c in "${clients[@]}"; do wait "$c" || echo "soak: a load client failed (see $out/*.log)" >&2; done

status=0
python3 - "$out/samples.csv" "$warmup" <<'PY' || status=$?
import csv, sys
rows = [{k: int(v) for k, v in r.items()} for r in csv.DictReader(open(sys.argv[1]))]
warm = int(sys.argv[2])
after = [r for r in rows if r["t_s"] >= warm]
if len(after) < 2:
    sys.exit("soak: too few samples after the warm-up")
first, last = after[0], after[-1]
peak = max(r["rss_kib"] for r in after)
growth = (last["rss_kib"] - first["rss_kib"]) / first["rss_kib"] * 100
# Descriptors and threads come and go (a checkpoint file being written, a session's pipeline
# starting while the one it replaces stops); a leak raises the floor past all of that. So the
# least of the last quarter's samples is compared with the most of the first quarter's.
quarter = max(1, len(after) // 4)
def floor(key, rows): return min(r[key] for r in rows)
def ceiling(key, rows): return max(r[key] for r in rows)
print(f"after the {warm} s warm-up, over {last['t_s'] - first['t_s']} s:")
print(f"  resident memory {first['rss_kib'] // 1024} -> {last['rss_kib'] // 1024} MiB "
      f"({growth:+.1f} %, peak {peak // 1024} MiB)")
for key, name in (("fds", "descriptors"), ("threads", "threads")):
    print(f"  {name} {floor(key, after[:quarter])}..{ceiling(key, after[:quarter])} -> "
          f"{floor(key, after[-quarter:])}..{ceiling(key, after[-quarter:])} "
          f"(first and last quarter; max {max(r[key] for r in after)})")
if first["decoders"] >= 0 and last["decoders"] >= 0:
    grew = last["decoders"] - first["decoders"]
    print(f"  speech decoders loaded {first['decoders']} -> {last['decoders']}" +
          (f" (the pool grew by {grew} on demand inside the window)" if grew > 0 else ""))
broken = []
if growth >= 5: broken.append("resident memory grew 5 % or more")
if floor("fds", after[-quarter:]) > ceiling("fds", after[:quarter]):
    broken.append("descriptors grew")
if floor("threads", after[-quarter:]) > ceiling("threads", after[:quarter]):
    broken.append("threads grew")
for b in broken: print("soak: " + b, file=sys.stderr)
sys.exit(1 if broken else 0)
PY
if [ "$full" -gt 0 ] && [ -s "$out/full.json" ]; then
  python3 - "$out/full.json" <<'PY' || status=1
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
q = r["voice_to_voice_ms_by_quarter"]
print("  full sessions' voice-to-voice by quarter (turns, p50, p95 ms): " +
      ", ".join(f"({s['turns']}, {s['p50']:.0f}, {s['p95']:.0f})" for s in q))
print(f"  {r['turns_answered']} turns answered, {r['turns_missing_reply']} missing a reply, "
      f"{r['asr_overloaded_errors']} asr_overloaded, {r.get('sessions_ended', 0)} sessions ended "
      f"and replaced ({r.get('session_end_failures', 0)} failed to end)")
if r.get("session_end_failures", 0):
    sys.exit("soak: a session could not be ended")
early = sum(r.get("closed_early_by_code", {}).values()) + r.get("connect_failures", 0)
if early:
    sys.exit(f"soak: {early} sessions did not last the run (connect failures "
             f"{r.get('connect_failures', 0)}, closed early by code {r.get('closed_early_by_code')})")
first, last = q[0]["p50"], q[-1]["p50"]
if q[0]["turns"] == 0 or q[-1]["turns"] == 0:
    sys.exit("soak: a quarter of the run answered no turn")
if last > max(first * 1.5, first + 300):
    sys.exit(f"soak: voice-to-voice climbed ({first:.0f} -> {last:.0f} ms p50)")
PY
fi
for kind in full speech landmarks webm; do
  if [ -s "$out/$kind.json" ]; then echo "$kind: $(tail -1 "$out/$kind.json")"; fi
done
exit $status
