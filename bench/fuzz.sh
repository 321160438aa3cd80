#!/usr/bin/env bash
# The long fuzzing run: every parser target for ten million executions (the goal of issue #18),
# the ingest target (a GStreamer pipeline per input, ~200 inputs/s) for a bounded time instead.
# Prints each target's executions; the working corpora grow in build/fuzz/corpus/.
#   bench/fuzz.sh                 all of it (about an hour on 2 cores)
#   RUNS=1000000 bench/fuzz.sh    shorter
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${RUNS:-10000000}
ingest_seconds=${INGEST_SECONDS:-900}
scripts/fuzz --runs "$runs" client_message landmarks http jwt llm_stream transcription sound
scripts/fuzz --seconds "$ingest_seconds" ingest
