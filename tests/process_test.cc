// The `parley` binary as an operator runs it: exit codes, --help, logs, SIGTERM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "tests/support/child.h"
#include "tests/support/test_server.h"

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
