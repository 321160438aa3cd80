// A flaky mobile network's storm through the real server (tests/support/storm.h): 40 sessions x
// 10 WebSocket connections dropped without a close frame, a third after `start` with 0.5 s of
// voiced sound, then every session's disconnect grace expiring at once. Health checks and REST
// calls keep their usual latency throughout (ending sessions has its own threads; /health waits
// behind no queue), and every session ends with its report stored.
#include "tests/support/storm.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

namespace parley {
namespace {

using testing::Percentile;
using testing::TestServer;

// A loopback TCP connection to `port` (-1 on failure).
int ConnectTcp(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

// One probe of a normal client: /health over a new connection and a ping over its WebSocket
// (ms, -1 when either went unanswered).
int64_t Probe(TestServer& s, testing::WsClient& ws, int n) {
  const auto t0 = std::chrono::steady_clock::now();
  if (testing::Http("GET", s.Url("/health")).status != 200) return -1;
  ws.SendText(R"({"type":"ping","id":"probe-)" + std::to_string(n) + "\"}");
  const auto pong = ws.ReceiveType("pong", std::chrono::milliseconds(5000));
  if (!pong || (*pong)["id"].asString() != "probe-" + std::to_string(n)) return -1;
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               t0)
      .count();
}

// 200 slowloris connections (a request head dribbled a byte at a time) and 200 WebSocket clients
// that send pings and never read the pongs, all at once: a normal client's /health and its
// WebSocket ping keep their usual latency, and once the hostile clients are gone the server
// holds none of their connections.
TEST(Storm, SlowlorisAndNeverReadingClientsLeaveANormalClientItsUsualLatency) {
  TestServer s([](app::AppConfig& c) {
    c.server.max_connections_per_ip = 1000;  // all from 127.0.0.1, like the normal client
    c.server.send_queue_max_bytes = 64 << 10;
  });
  testing::WsHub hub;
  auto normal = s.Join(hub, "practice", s.CreateSession("alice"), "alice");
  ASSERT_EQ(normal->state(), testing::WsClient::State::kOpen);
  std::vector<int64_t> before, during;
  for (int i = 0; i < 20; ++i) before.push_back(Probe(s, *normal, i));

  std::vector<int> loris;
  for (int i = 0; i < 200; ++i) {
    const int fd = ConnectTcp(s.port());
    ASSERT_GE(fd, 0);
    const std::string start = "GET /api/sessions HTTP/1.1\r\nHost: loris\r\n";
    ASSERT_EQ(send(fd, start.data(), start.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(start.size()));
    loris.push_back(fd);
  }
  std::atomic<bool> attacking{true};
  std::thread dribbler([&] {
    while (attacking) {  // one more header byte each, every 200 ms: never a complete head
      for (const int fd : loris) send(fd, "X", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  testing::WsHub deaf_hub;  // its own client thread: the normal client's is not shared
  std::vector<std::shared_ptr<testing::WsClient>> deaf;
  const std::string big_id(2000, 'z');
  for (int i = 0; i < 200; ++i) {
    auto ws = s.Join(deaf_hub, "landmarks", s.CreateSession("mallory"), "mallory");
    ASSERT_EQ(ws->state(), testing::WsClient::State::kOpen) << i;
    ws->PauseReading(true);
    deaf.push_back(std::move(ws));
  }
  std::thread pinger([&] {
    // 10 pings a second each (2,000 messages/s in all, each answered with a 2 KB pong nobody
    // reads): well inside every per-connection limit, so only the send queues bound them.
    for (int round = 0; attacking && round < 100; ++round) {
      for (auto& ws : deaf) ws->SendText(R"({"type":"ping","id":")" + big_id + "\"}");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::this_thread::sleep_for(std::chrono::seconds(1));
  for (int i = 0; i < 30; ++i) {
    during.push_back(Probe(s, *normal, 100 + i));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  attacking = false;
  pinger.join();
  dribbler.join();
  const double closed_slow =
      s.app().metrics().Read("parley_ws_slow_consumer_closes_total", {}).value_or(0);
  std::printf(
      "normal client before: p50 %lld max %lld ms; beside 200 slowloris + 200 deaf clients: "
      "p50 %lld max %lld ms; %.0f deaf clients closed as slow consumers\n",
      static_cast<long long>(Percentile(before, 0.5)),
      static_cast<long long>(Percentile(before, 1.0)),
      static_cast<long long>(Percentile(during, 0.5)),
      static_cast<long long>(Percentile(during, 1.0)), closed_slow);
  for (const int64_t ms : during) EXPECT_GE(ms, 0) << "a probe went unanswered";
  EXPECT_LE(Percentile(during, 0.5), Percentile(before, 0.5) + 50);
  EXPECT_LT(Percentile(during, 1.0), 1000);

  for (const int fd : loris) close(fd);
  for (auto& ws : deaf) ws->Drop();  // gone without a close frame, as they never read one
  deaf.clear();
  EXPECT_TRUE([&] {
    for (int i = 0; i < 100; ++i) {
      if (s.app().metrics().Read("parley_connections", {{"kind", "websocket"}}).value_or(-1) <= 1)
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }()) << "WebSocket connections left: "
       << s.app().metrics().Read("parley_connections", {{"kind", "websocket"}}).value_or(-1);
  EXPECT_GE(Probe(s, *normal, 1000), 0);
}

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
  // Nothing of the 400 connections stays behind: no live session, pipeline or waiting turn.
  core::Metrics& m = s.app().metrics();
  EXPECT_EQ(m.Read("parley_sessions", {{"state", "live"}}).value_or(-1), 0);
  EXPECT_EQ(m.Read("parley_connections", {{"kind", "websocket"}}).value_or(-1), 0);
  for (const char* kind : {"ingest", "playback"}) {
    bool gone = false;  // GStreamer finalizes a stopped pipeline on its own thread
    for (int i = 0; i < 100 && !gone; ++i) {
      gone = m.Read("parley_media_pipelines", {{"kind", kind}}).value_or(0) == 0;
      if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_TRUE(gone) << kind << " pipelines left: "
                      << m.Read("parley_media_pipelines", {{"kind", kind}}).value_or(-1);
  }
  EXPECT_EQ(m.Read("parley_asr_waiting", {}).value_or(0), 0);
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
