#include "tests/support/storm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <numbers>
#include <thread>

#include "tests/support/ws_client.h"

namespace parley::testing {
using namespace std::chrono_literals;

// A voiced buzz (120 Hz and its harmonics, syllable-rate loudness): the VAD hears speech, so
// every started connection leaves an utterance for the recogniser to finish, as real ones do.
std::string VoicedPcm(double seconds) {
  std::string bytes;
  const int samples = static_cast<int>(seconds * 16'000);
  for (int i = 0; i < samples; ++i) {
    const double t = i / 16'000.0;
    double v = 0;
    for (int h = 1; h <= 8; ++h) v += std::sin(2 * std::numbers::pi * 120 * h * t) / h;
    v *= 0.55 + 0.45 * std::sin(2 * std::numbers::pi * 4 * t);
    const auto sample = static_cast<int16_t>(std::clamp(v * 3000, -32000.0, 32000.0));
    bytes.push_back(static_cast<char>(sample & 0xff));
    bytes.push_back(static_cast<char>((sample >> 8) & 0xff));
  }
  return bytes;
}

int64_t Percentile(std::vector<int64_t> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto rank = static_cast<size_t>(p * static_cast<double>(values.size()));
  return values[std::min(values.size() - 1, rank)];
}

StormResult RunStorm(TestServer& s, const StormOptions& options) {
  StormResult result;
  std::vector<std::string> ids;
  for (int i = 0; i < options.sessions; ++i) ids.push_back(s.CreateSession("alice"));

  // The prober: a health check and a listing every 50 ms.
  std::atomic<bool> probing{true};
  std::mutex mu;
  std::thread prober([&] {
    const auto timed = [&](const std::string& path, std::vector<int64_t>& latencies) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto r = Http("GET", s.Url(path), "", s.Auth("alice"), 30s);
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - t0)
                          .count();
      const std::lock_guard lock(mu);
      if (r.status != 200) ++result.failed_probes;
      latencies.push_back(ms);
    };
    while (probing) {
      timed("/health", result.health_ms);
      timed("/api/sessions?limit=5", result.list_ms);
      std::this_thread::sleep_for(50ms);
    }
  });

  WsHub hub;
  const std::string pcm = VoicedPcm(options.voiced_s);
  for (int c = 0; c < options.connections_per_session; ++c) {
    std::vector<std::shared_ptr<WsClient>> open;
    for (int i = 0; i < options.sessions; ++i) {
      const std::string& id = ids[static_cast<size_t>(i)];
      auto ws = s.Join(hub, "practice", id, "alice");
      if (ws->state() != WsClient::State::kOpen) {
        const std::lock_guard lock(mu);
        result.errors.push_back(id + ": connection " + std::to_string(c) + " refused");
        continue;
      }
      if ((i + c) % 3 == 0) {
        ws->SendText(R"({"type":"start","media":"pcm","sample_rate":16000})");
        ws->ReceiveType("started", 5s);
        ws->SendBinary("\x02" + pcm);
      }
      open.push_back(std::move(ws));
    }
    for (auto& ws : open) ws->Drop();  // no close frame
  }

  // The graces expire; every session ends and its report is stored. A report asked for while
  // its session is still ending is 409 report_not_ready (retry), never 404.
  const auto dropped_at = std::chrono::steady_clock::now();
  std::vector<bool> done(ids.size(), false);
  while (result.reports_stored + result.errors.size() < ids.size() &&
         std::chrono::steady_clock::now() - dropped_at < options.report_timeout) {
    std::this_thread::sleep_for(100ms);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (done[i]) continue;
      const auto r = Http("GET", s.Url("/api/sessions/" + ids[i] + "/report"), "", s.Auth("alice"));
      if (r.status == 409 && r.JsonBody()["error"]["code"] == "report_not_ready") continue;
      done[i] = true;
      const std::lock_guard lock(mu);
      if (r.status == 200 && r.JsonBody()["end_reason"] == "disconnect_grace")
        ++result.reports_stored;
      else
        result.errors.push_back(ids[i] + ": report " + std::to_string(r.status) + " " + r.body);
    }
  }
  result.all_reported_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - dropped_at).count();
  std::this_thread::sleep_for(1s);  // probes after the last end
  probing = false;
  prober.join();
  const Json::Value list =
      Http("GET", s.Url("/api/sessions?limit=100"), "", s.Auth("alice")).JsonBody();
  for (const auto& doc : list["sessions"]) result.listed_ended += doc["state"] == "ended";
  return result;
}

}  // namespace parley::testing
