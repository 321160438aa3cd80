#include "speech/speech.h"

namespace parley::speech {

std::vector<std::string> HearingConfig::Validate() const {
  std::vector<std::string> problems;
  auto check = [&](const std::string& area, const std::string& why) {
    if (!why.empty()) problems.push_back(area + ": " + why);
  };
  check("end of turn", endpoint.Validate());
  if (enabled) check("speech recognition", asr.Validate());
  if (queue < 1 || queue > 100000) problems.push_back("--asr-queue must be 1..100000");
  if (threads < 1 || threads > 64) problems.push_back("--asr-threads must be 1..64");
  if (max_lag_ms < 100 || max_lag_ms > 600'000)
    problems.push_back("--asr-max-lag-ms must be 100..600000");
  if (shed_partials_lag_ms < 0 || shed_partials_lag_ms > max_lag_ms)
    problems.push_back("--asr-shed-partials-ms must be 0..--asr-max-lag-ms");
  if (partial_interval_ms < 50 || partial_interval_ms > 10000)
    problems.push_back("--partial-interval-ms must be 50..10000");
  if (remote_concurrency < 1 || remote_concurrency > 64)
    problems.push_back("--asr-remote-concurrency must be 1..64");
  check("remote speech recognition", remote.Validate());
  return problems;
}

}  // namespace parley::speech
