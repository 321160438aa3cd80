#!/usr/bin/env bash
# Media ingest figures: N sessions streaming WebM at real time through the real server, and
# the CPU of Parley's ingest against gst-launch-1.0 decoding the same stream the same way.
#   bench/media_bench.sh [build-dir] ["audio counts"] ["video counts"]
# (CAMERA_COUNTS for the camera-like clip). Server-side landmarks are off unless
# PARLEY_SERVER_LANDMARKS=true is set: this measures ingest.
set -euo pipefail
build=${1:-build/default}
audio_counts=${2:-"1 8 32 64"}
video_counts=${3:-"1 4 8 12"}
seconds=${SECONDS_MEASURED:-40}
dir="$build/bench-media"
export PARLEY_SERVER_LANDMARKS=${PARLEY_SERVER_LANDMARKS:-false}
mkdir -p "$dir"
len=$((seconds + 10))

audio="$dir/audio_opus32k_${len}s.webm"
video="$dir/opus_vp8_640x480_15fps_${len}s.webm"
camera="$dir/camera_vp8_640x480_15fps_${len}s.webm"
if [ ! -s "$audio" ]; then
  gst-launch-1.0 -q audiotestsrc wave=pink-noise num-buffers=$((len * 50)) samplesperbuffer=960 \
    ! audio/x-raw,rate=48000,channels=1 ! opusenc bitrate=32000 ! webmmux streamable=true \
    ! filesink location="$audio"
fi
if [ ! -s "$video" ]; then
  gst-launch-1.0 -q webmmux name=mux streamable=true ! filesink location="$video" \
    videotestsrc pattern=ball num-buffers=$((len * 15)) \
    ! video/x-raw,width=640,height=480,framerate=15/1 \
    ! vp8enc deadline=1 keyframe-max-dist=15 target-bitrate=800000 ! mux. \
    audiotestsrc wave=pink-noise num-buffers=$((len * 50)) samplesperbuffer=960 \
    ! audio/x-raw,rate=48000,channels=1 ! opusenc bitrate=32000 ! mux.
fi

# Camera-like video: a real face photo (python3-skimage's astronaut) swaying a few pixels with
# sensor noise (sigma 4), VP8 at 1.5 Mb/s with a keyframe every second, as the page records.
if [ ! -s "$camera" ]; then
  /usr/bin/python3 - "$len" <<'PY' | gst-launch-1.0 -q webmmux name=mux streamable=true \
      ! filesink location="$camera" \
    fdsrc ! rawvideoparse width=640 height=480 format=bgr framerate=15/1 ! videoconvert \
    ! vp8enc deadline=1 cpu-used=4 target-bitrate=1500000 keyframe-max-dist=15 ! mux. \
    audiotestsrc wave=pink-noise num-buffers=$((len * 50)) samplesperbuffer=960 \
    ! audio/x-raw,rate=48000,channels=1 ! opusenc bitrate=32000 ! mux.
import math, sys
import cv2, numpy as np
seconds = int(sys.argv[1])
photo = cv2.resize(cv2.imread("/usr/lib/python3/dist-packages/skimage/data/astronaut.png"), (640, 480))
rng = np.random.default_rng(1)
out = sys.stdout.buffer
for k in range(seconds * 15):
    m = np.float32([[1, 0, 8 * math.sin(k * 0.05)], [0, 1, 4 * math.cos(k * 0.07)]])
    frame = cv2.warpAffine(photo, m, (640, 480), borderMode=cv2.BORDER_REPLICATE)
    noisy = np.clip(frame.astype(np.int16) + rng.normal(0, 4, frame.shape).astype(np.int16), 0, 255)
    out.write(noisy.astype(np.uint8).tobytes())
PY
fi

# The same decoding Parley does (demux, Opus -> 16 kHz mono S16, VP8 -> BGR within 640x480),
# as fast as possible, with GStreamer's own launcher: user+system CPU seconds.
reference() {
  local file=$1 video_branch=$2
  local v=""
  if [ "$video_branch" = yes ]; then
    v="d. ! queue ! vp8dec ! videoconvert ! videoscale ! video/x-raw,format=BGR ! fakesink sync=false"
  fi
  /usr/bin/time -f "%U %S" gst-launch-1.0 -q filesrc location="$file" ! matroskademux name=d \
    d. ! queue ! opusdec ! audioconvert ! audioresample \
    ! audio/x-raw,format=S16LE,rate=16000,channels=1 ! fakesink sync=false $v 2>&1 >/dev/null \
    | tail -1 | awk '{print $1 + $2}'
}

camera_counts=${CAMERA_COUNTS:-"8 16 24"}
for kind in audio video camera; do
  file=$audio; branch=no
  [ "$kind" = video ] && file=$video && branch=yes
  [ "$kind" = camera ] && file=$camera && branch=yes
  ref=$(reference "$file" "$branch")
  echo "{\"media\":\"$kind\",\"gst_launch_cpu_s_for_${len}s\":$ref,\"gst_launch_cpu_percent_realtime\":$(echo "$ref * 100 / $len" | bc -l | cut -c1-6)}"
  counts=$audio_counts
  [ "$kind" = video ] && counts=$video_counts
  [ "$kind" = camera ] && counts=$camera_counts
  for n in $counts; do
    "$build/bench/ws_load" --spawn "$build/app/parley" -n "$n" --media "$file" \
      --media-seconds "$len" --duration "$seconds" --warmup 3 --hubs 1
  done
done
