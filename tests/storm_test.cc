// A flaky mobile network's storm through the real server (tests/support/storm.h): 40 sessions x
// 10 WebSocket connections dropped without a close frame, a third after `start` with 0.5 s of
// voiced sound, then every session's disconnect grace expiring at once. Health checks and REST
// calls keep their usual latency throughout (ending sessions has its own threads; /health waits
// behind no queue), and every session ends with its report stored.
#include "tests/support/storm.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <thread>

namespace parley {
namespace {

using testing::Percentile;
using testing::TestServer;

TEST(Storm, DroppedConnectionsEndingTogetherNeverDarkenHttpAndEverySessionIsReported) {
  TestServer s([](app::AppConfig& c) {
    c.sessions.disconnect_grace_s = 1;
    c.workers.threads = 2;  // few general workers: ending must not need them
  });
  testing::StormOptions options;
  options.voiced_s = 0.5;  // ~65 s of speech to recognise in all: minutes under ASan
  options.report_timeout = std::chrono::seconds(240);
  const auto r = testing::RunStorm(s, options);
  std::printf(
      "%zu reports stored %.1f s after the last drop; /health p99 %lld max %lld ms; "
      "listing p99 %lld max %lld ms (%zu probes)\n",
      r.reports_stored, r.all_reported_s, static_cast<long long>(Percentile(r.health_ms, 0.99)),
      static_cast<long long>(Percentile(r.health_ms, 1.0)),
      static_cast<long long>(Percentile(r.list_ms, 0.99)),
      static_cast<long long>(Percentile(r.list_ms, 1.0)), r.health_ms.size());
  for (const auto& e : r.errors) ADD_FAILURE() << e;
  EXPECT_EQ(r.reports_stored, static_cast<size_t>(options.sessions));
  EXPECT_EQ(r.listed_ended, options.sessions);
  EXPECT_EQ(r.failed_probes, 0);
  EXPECT_GT(r.health_ms.size(), 10u);
  // Their usual latency is a few ms; a second is the bound of "never dark" (ASan included).
  EXPECT_LT(Percentile(r.health_ms, 1.0), 1000);
  EXPECT_LT(Percentile(r.list_ms, 1.0), 2000);
}

// A report asked for in the moment between a session's end and its report's store write is
// "not ready, retry", and POST .../end racing an end already under way answers only once the
// report is stored.
TEST(Storm, AnEndAlreadyUnderWayIsWaitedForNotAnsweredWithAMissingReport) {
  TestServer s([](app::AppConfig& c) { c.sessions.disconnect_grace_s = 1; });
  testing::WsHub hub;
  const std::string id = s.CreateSession("alice");
  {
    auto ws = s.Join(hub, "practice", id, "alice");
    ws->SendText(R"({"type":"start","media":"pcm","sample_rate":16000})");
    ASSERT_TRUE(ws->ReceiveType("started"));
    ws->SendBinary("\x02" + testing::VoicedPcm(1.5));  // the end waits for the recogniser
    ws->Drop();
  }
  // Poll until the grace expires; the first answers after that may be 409, never 404.
  bool saw_ended = false;
  for (int i = 0; i < 400; ++i) {
    const auto view = testing::Http("GET", s.Url("/api/sessions/" + id), "", s.Auth("alice"));
    if (view.JsonBody()["state"] == "ended") {
      saw_ended = true;
      // Racing the end under way: answered after it, with the report in place.
      const auto end =
          testing::Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice"));
      EXPECT_EQ(end.status, 200);
      EXPECT_EQ(end.JsonBody()["end_reason"], "disconnect_grace");
      const auto report =
          testing::Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice"));
      EXPECT_EQ(report.status, 200) << report.body;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(saw_ended);
}

}  // namespace
}  // namespace parley
