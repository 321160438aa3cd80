// A flaky mobile network's storm against a real in-process server (tests/storm_test.cc and
// bench/storm_bench.cc): sessions whose WebSocket connections are opened and dropped without a
// close frame, some after `start` with voiced sound, so that their disconnect graces expire
// together; a prober times /health and a listing throughout; then every report is fetched.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/support/test_server.h"

namespace parley::testing {

struct StormOptions {
  int sessions = 40;
  int connections_per_session = 10;  // each opened and dropped; a third after `start`
  double voiced_s = 1.5;             // sound sent after `start`: the recogniser must finish it
  std::chrono::seconds report_timeout{120};
};

struct StormResult {
  size_t reports_stored = 0;                // answered 200 with end_reason disconnect_grace
  std::vector<std::string> errors;          // anything else: a refused join, a 404, a wrong reason
  int failed_probes = 0;                    // probes not answered 200
  std::vector<int64_t> health_ms, list_ms;  // every probe's latency
  double all_reported_s = 0;                // last drop -> every report stored
  int listed_ended = 0;                     // sessions the listing shows ended at the end
};

StormResult RunStorm(TestServer& server, const StormOptions& options);

// `seconds` of a voiced buzz as S16LE 16 kHz PCM: speech to the VAD, work for the recogniser.
std::string VoicedPcm(double seconds);

// The p-quantile (0..1) of `values` (nearest rank); 0 when empty.
int64_t Percentile(std::vector<int64_t> values, double p);

}  // namespace parley::testing
