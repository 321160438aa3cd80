// A flaky mobile network's storm through the real server: many WebSocket connections dropped
// without a close frame, a third of them after `start` with a little PCM, then every session's
// disconnect grace expiring at once. Health checks and REST calls must keep their usual latency
// throughout (ending sessions has its own threads; /health waits behind no queue), and every
// session ends with its report stored.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "tests/support/test_server.h"

namespace parley {
namespace {

using namespace std::chrono_literals;
using testing::Http;
using testing::TestServer;
using testing::WsClient;
using testing::WsHub;

constexpr int kSessions = 40;
constexpr int kConnectionsPerSession = 10;

TEST(Storm, DroppedConnectionsEndingTogetherNeverDarkenHttpAndEverySessionIsReported) {
  TestServer s([](app::AppConfig& c) {
    c.sessions.disconnect_grace_s = 1;
    c.workers.threads = 2;  // few general workers: ending must not need them
  });
  std::vector<std::string> ids;
  for (int i = 0; i < kSessions; ++i) ids.push_back(s.CreateSession("alice"));

  // The prober: a health check and a listing every 50 ms, their worst latency kept.
  std::atomic<bool> probing{true};
  std::atomic<int64_t> worst_health_ms{0}, worst_list_ms{0};
  std::atomic<int> failed_probes{0}, probes{0};
  std::thread prober([&] {
    const auto timed = [&](const std::string& path, std::atomic<int64_t>& worst) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto r = Http("GET", s.Url(path), "", s.Auth("alice"), 30s);
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - t0)
                          .count();
      if (r.status != 200) ++failed_probes;
      if (ms > worst.load()) worst = ms;
    };
    while (probing) {
      timed("/health", worst_health_ms);
      timed("/api/sessions?limit=5", worst_list_ms);
      ++probes;
      std::this_thread::sleep_for(50ms);
    }
  });

  WsHub hub;
  const std::string pcm(3200, '\x01');  // 100 ms at 16 kHz
  for (int c = 0; c < kConnectionsPerSession; ++c) {
    std::vector<std::shared_ptr<WsClient>> open;
    for (int i = 0; i < kSessions; ++i) {
      auto ws = s.Join(hub, "practice", ids[static_cast<size_t>(i)], "alice");
      ASSERT_EQ(ws->state(), WsClient::State::kOpen);
      if ((i + c) % 3 == 0) {
        ws->SendText(R"({"type":"start","media":"pcm","sample_rate":16000})");
        ws->ReceiveType("started", 5s);
        ws->SendBinary("\x02" + pcm);
      }
      open.push_back(std::move(ws));
    }
    for (auto& ws : open) ws->Drop();  // no close frame
  }
  // The graces expire; every session ends and its report is stored.
  const auto dropped_at = std::chrono::steady_clock::now();
  int ended = 0;
  for (int wait = 0; wait < 600 && ended < kSessions; ++wait) {
    std::this_thread::sleep_for(100ms);
    const Json::Value list =
        Http("GET", s.Url("/api/sessions?limit=100"), "", s.Auth("alice"), 30s).JsonBody();
    ended = 0;
    for (const auto& doc : list["sessions"]) ended += doc["state"] == "ended";
  }
  const double end_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - dropped_at).count();
  std::this_thread::sleep_for(1s);  // probes after the last end
  probing = false;
  prober.join();
  EXPECT_EQ(ended, kSessions);
  for (const auto& id : ids) {
    const auto r = Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice"));
    EXPECT_EQ(r.status, 200) << id;
    EXPECT_EQ(r.JsonBody()["end_reason"], "disconnect_grace") << id;
  }
  std::printf("%d sessions ended %.1f s after the last drop (grace 1 s); ", ended, end_s);
  std::printf("probes %d, worst /health %lld ms, worst listing %lld ms\n", probes.load(),
              static_cast<long long>(worst_health_ms.load()),
              static_cast<long long>(worst_list_ms.load()));
  EXPECT_EQ(failed_probes.load(), 0);
  EXPECT_GT(probes.load(), 10);
  // Their usual latency is a few ms; a second is the bound of "never dark" (ASan included).
  EXPECT_LT(worst_health_ms.load(), 1000);
  EXPECT_LT(worst_list_ms.load(), 2000);
}

}  // namespace
}  // namespace parley
