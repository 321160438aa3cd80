// The `parley` binary as an operator runs it: exit codes, --help, logs, SIGTERM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/core.h"
#include "tests/support/child.h"
#include "tests/support/face_generator.h"
#include "tests/support/test_server.h"
#include "vision/vision.h"

namespace parley::testing {
namespace {

using namespace std::chrono_literals;

TEST(Process, HelpExitsZeroAndDocumentsOptions) {
  Child c({"--help"});
  EXPECT_EQ(c.Wait(10s), 0);
  EXPECT_NE(c.output().find("--port"), std::string::npos);
  EXPECT_NE(c.output().find("JWT_SECRET_KEY"), std::string::npos);
}

TEST(Process, InvalidConfigurationExitsTwoWithAClearMessage) {
  Child c({"--port", "-3"});
  EXPECT_EQ(c.Wait(10s), 2);
  EXPECT_NE(c.output().find("port must be 0..65535"), std::string::npos) << c.output();
  Child env_bad({}, {"PORT=not-a-port"});
  EXPECT_EQ(env_bad.Wait(10s), 2);
}

TEST(Process, DevelopmentModeIsAnnouncedLoudly) {
  TempDir data;
  Child c({"--port", "0", "--bind", "127.0.0.1", "--data-dir", data.path()}, {"JWT_SECRET_KEY="});
  ASSERT_TRUE(c.WaitFor("DEVELOPMENT MODE")) << c.output();
  ASSERT_GT(c.Port(), 0);
  c.Signal(SIGINT);
  EXPECT_EQ(c.Wait(15s), 0) << c.output();
}

TEST(Process, SigtermWithLiveSessionsEndsThemAndExitsZero) {
  TempDir data;
  const std::string secret = std::string("JWT_SECRET_KEY=") + kTestSecret;
  Child c({"--port", "0", "--bind", "127.0.0.1", "--data-dir", data.path()}, {secret});
  const int port = c.Port();
  ASSERT_GT(port, 0) << c.output();
  const Headers auth = {{"Authorization", "Bearer " + MintToken("alice")}};
  WsHub hub;
  std::vector<std::shared_ptr<WsClient>> clients;
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    const auto r = Http("POST", "http://127.0.0.1:" + std::to_string(port) + "/api/sessions",
                        R"({"persona_id":"daniel"})", auth);
    ASSERT_EQ(r.status, 201);
    ids.push_back(r.JsonBody()["session_id"].asString());
    clients.push_back(hub.Connect(port, "/ws/practice?session=" + ids.back(), auth));
  }
  for (auto& cl : clients) {
    ASSERT_TRUE(cl->WaitOpen()) << cl->failure();
    // The welcome proves the server attached the connection to its session.
    cl->SendText(R"({"type":"hello","protocol":1})");
    ASSERT_TRUE(cl->ReceiveType("welcome"));
  }
  c.Signal(SIGTERM);
  const auto code = c.Wait(20s);
  ASSERT_TRUE(code.has_value()) << "parley did not exit after SIGTERM\n" << c.output();
  EXPECT_EQ(*code, 0) << c.output();
  for (auto& cl : clients) {
    EXPECT_TRUE(cl->ReceiveType("session_ended"));
    EXPECT_TRUE(cl->WaitClosed());
  }
  for (const auto& id : ids) {
    EXPECT_NE(c.output().find(R"("reason":"shutdown","session_id":")" + id), std::string::npos)
        << id << "\n"
        << c.output();
  }
  EXPECT_NE(c.output().find("shutdown complete"), std::string::npos);
}

// "2026-12-04T07:12:03.123Z" as Unix milliseconds (0 when it is not such a date).
int64_t UnixMillisOf(const std::string& rfc3339) {
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(rfc3339.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
    return 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&tm)) * 1000 + ms;
}

// A session's checkpoint file, or null while there is none.
Json::Value ReadCheckpoint(const std::string& data_dir, const std::string& id) {
  std::ifstream in(data_dir + "/checkpoints/" + id + ".json");
  if (!in) return Json::Value();
  std::stringstream text;
  text << in.rdbuf();
  return core::ParseJson(text.str()).value_or(Json::Value());
}

// What the test sent each session before the crash is in its checkpoint.
bool HoldsWhatWasSent(const Json::Value& checkpoint) {
  const Json::Value& r = checkpoint["report"];
  return r["metrics"]["media"]["audio_seconds"].asDouble() >= 1.9 &&
         r["metrics"]["vision"]["frames"].asUInt64() >= 20 && r["transcript"].size() >= 2;
}

TEST(Process, KillDashNineDuringLiveSessionsLosesAtMostTheCheckpointInterval) {
  TempDir data;
  const std::string secret = std::string("JWT_SECRET_KEY=") + kTestSecret;
  const std::vector<std::string> args = {"--port",
                                         "0",
                                         "--bind",
                                         "127.0.0.1",
                                         "--data-dir",
                                         data.path(),
                                         "--checkpoint-interval",
                                         "2",
                                         "--disconnect-grace",
                                         "1"};
  auto server = std::make_unique<Child>(args, std::vector<std::string>{secret});
  const int port = server->Port();
  ASSERT_GT(port, 0) << server->output();
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  const Headers auth = {{"Authorization", "Bearer " + MintToken("alice")}};

  GeneratorConfig face;
  face.duration_s = 6;  // past the 3 s calibration: the analyser has measured
  face.fps = 10;
  const Synthetic frames = GenerateSession(face);
  const std::string silence(2 * 16000 * 2, '\0');  // 2 s of 16 kHz PCM
  constexpr int kSessions = 21;                    // the last ends normally before the crash
  WsHub hub;
  std::vector<std::shared_ptr<WsClient>> clients;
  std::vector<std::string> ids;
  for (int i = 0; i < kSessions; ++i) {
    const auto r = Http("POST", base + "/api/sessions", R"({"persona_id":"daniel"})", auth);
    ASSERT_EQ(r.status, 201) << r.body;
    ids.push_back(r.JsonBody()["session_id"].asString());
    clients.push_back(hub.Connect(port, "/ws/practice?session=" + ids.back(), auth));
  }
  for (auto& cl : clients) {
    ASSERT_TRUE(cl->WaitOpen()) << cl->failure();
    cl->SendText(R"({"type":"hello","protocol":1})");
    ASSERT_TRUE(cl->ReceiveType("welcome"));
    cl->SendText(R"({"type":"start","media":"pcm","sample_rate":16000,"playback":"pcm"})");
    ASSERT_TRUE(cl->ReceiveType("started"));
  }
  for (size_t f = 0; f < frames.frames.size(); ++f) {
    for (auto& cl : clients) {
      if (f == 0) {
        for (size_t off = 0; off < silence.size(); off += 3200)
          cl->SendBinary("\x02" + silence.substr(off, 3200));
      }
      cl->SendBinary("\x03" + vision::EncodeBinaryFrame(frames.frames[f]));
    }
    std::this_thread::sleep_for(20ms);
  }
  for (auto& cl : clients) cl->SendText(R"({"type":"say","text":"I went hiking with my sister."})");
  for (auto& cl : clients) ASSERT_TRUE(cl->ReceiveType("reply", 30s)) << server->output();

  // One session ends the ordinary way (its connection goes): its report, not a checkpoint, is
  // what a restart shows.
  clients.back()->Close();
  const std::string ended_id = ids.back();
  for (int i = 0;
       i < 100 &&
       Http("GET", base + "/api/sessions/" + ended_id + "/report", {}, auth).status != 200;
       ++i)
    std::this_thread::sleep_for(100ms);

  // Every live session's checkpoint holds what was sent (the turn included) before the kill.
  bool all = false;
  for (int i = 0; i < 300 && !all; ++i) {
    all = true;
    for (int k = 0; k + 1 < kSessions; ++k)
      all = all && HoldsWhatWasSent(ReadCheckpoint(data.path(), ids[k]));
    if (!all) std::this_thread::sleep_for(100ms);
  }
  if (!all) {
    const Json::Value c = ReadCheckpoint(data.path(), ids[0]);
    FAIL() << "checkpoints never caught up; the first: media "
           << core::ToJson(c["report"]["metrics"]["media"]) << ", vision "
           << core::ToJson(c["report"]["metrics"]["vision"]) << ", transcript "
           << core::ToJson(c["report"]["transcript"]) << "\n"
           << server->output();
  }
  EXPECT_TRUE(ReadCheckpoint(data.path(), ended_id).isNull())
      << "an ended session's checkpoint stayed";
  std::this_thread::sleep_for(2500ms);  // the sessions go on: another checkpoint is written
  const int64_t killed_ms = core::UnixMillis(std::chrono::system_clock::now());
  server->Signal(SIGKILL);
  ASSERT_TRUE(server->Wait(10s).has_value());
  clients.clear();
  server.reset();

  Child restarted(args, {secret});
  ASSERT_GT(restarted.Port(), 0) << restarted.output();
  EXPECT_NE(restarted.output().find("reports of sessions a crash left were built from their "
                                    "checkpoints"),
            std::string::npos)
      << restarted.output();
  const std::string again = "http://127.0.0.1:" + std::to_string(restarted.Port());
  for (int k = 0; k + 1 < kSessions; ++k) {
    const auto r = Http("GET", again + "/api/sessions/" + ids[k] + "/report", {}, auth);
    ASSERT_EQ(r.status, 200) << ids[k] << " " << r.body;
    const Json::Value report = r.JsonBody();
    EXPECT_EQ(report["end_reason"].asString(), "server_crash");
    EXPECT_GE(report["metrics"]["media"]["audio_seconds"].asDouble(), 1.9);
    EXPECT_GE(report["metrics"]["vision"]["frames"].asUInt64(), 20u);
    ASSERT_GE(report["transcript"].size(), 2u);
    bool turn_kept = false;  // the user's turn, after the persona's greeting
    for (const auto& turn : report["transcript"])
      turn_kept = turn_kept || (turn["role"].asString() == "user" &&
                                turn["text"].asString() == "I went hiking with my sister.");
    EXPECT_TRUE(turn_kept) << core::ToJson(report["transcript"]);
    EXPECT_TRUE(report["checkpoint"]["gap"].isString());
    const auto session = Http("GET", again + "/api/sessions/" + ids[k], {}, auth).JsonBody();
    EXPECT_EQ(session["state"].asString(), "ended") << core::ToJson(session);
    EXPECT_EQ(session["end_reason"].asString(), "server_crash") << core::ToJson(session);
    // Lost: at most the interval (2 s) and the time to build and write a checkpoint.
    const int64_t ended_ms = UnixMillisOf(report["ended_at"].asString());
    EXPECT_GE(ended_ms, killed_ms - 3500) << "the last checkpoint is older than the interval";
    EXPECT_LE(ended_ms, killed_ms);
  }
  const auto normal = Http("GET", again + "/api/sessions/" + ended_id + "/report", {}, auth);
  ASSERT_EQ(normal.status, 200);
  EXPECT_NE(normal.JsonBody()["end_reason"].asString(), "server_crash");
  EXPECT_TRUE(std::filesystem::is_empty(data.path() + "/checkpoints"));
}

TEST(Process, PortInUseFailsToStartWithExitCodeOne) {
  TempDir data;
  Child first({"--port", "0", "--bind", "127.0.0.1", "--data-dir", data.path()});
  const int port = first.Port();
  ASSERT_GT(port, 0);
  Child second({"--port", std::to_string(port), "--bind", "127.0.0.1", "--data-dir", data.path()},
               {"LSAN_OPTIONS=suppressions=" PARLEY_SOURCE_DIR "/tests/lsan-lws-failed-bind.supp"});
  EXPECT_EQ(second.Wait(10s), 1) << second.output();
  EXPECT_NE(second.output().find("could not start the HTTP/WebSocket server"), std::string::npos);
}

}  // namespace
}  // namespace parley::testing
