// The real server on an ephemeral port, driven by real HTTP (libcurl) and WebSocket
// (libwebsockets) clients.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "tests/support/test_server.h"

namespace parley::testing {
namespace {

using namespace std::chrono_literals;

Headers UpgradeHeaders(Headers extra = {}) {
  Headers h = {{"Connection", "Upgrade"},
               {"Upgrade", "websocket"},
               {"Sec-WebSocket-Version", "13"},
               {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}};
  for (auto& e : extra) h.push_back(std::move(e));
  return h;
}

std::string ErrorCode(const HttpResult& r) { return r.JsonBody()["error"]["code"].asString(); }

// Sends `request` as raw bytes on a fresh loopback connection and reads until the server closes
// (or 5 s pass): for requests no well-behaved client library would send.
std::string RawExchange(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "<no socket>";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      answer.append(buf, static_cast<size_t>(n));
      // An accepted upgrade stays open: its head is the answer.
      if (answer.rfind("HTTP/1.1 101", 0) == 0 && answer.find("\r\n\r\n") != std::string::npos)
        break;
    }
  }
  ::close(fd);
  return answer;
}

// The status code of a raw HTTP answer ("HTTP/1.0 426 ..." -> 426), 0 if there is none.
int StatusOf(const std::string& answer) {
  if (answer.size() < 12 || answer.rfind("HTTP/1.", 0) != 0) return 0;
  return std::atoi(answer.substr(9, 3).c_str());
}

std::string AuthorizationOf(const Headers& auth) {
  for (const auto& [name, value] : auth)
    if (name == "Authorization") return value;
  return {};
}

class ServerTest : public ::testing::Test {
 protected:
  WsHub hub_;
};

TEST_F(ServerTest, HealthReportsStatusAuthModeAndStore) {
  TestServer s;
  const auto r = Http("GET", s.Url("/health"));
  ASSERT_EQ(r.status, 200);
  const auto body = r.JsonBody();
  EXPECT_EQ(body["status"].asString(), "ok");
  EXPECT_EQ(body["auth"].asString(), "jwt");
  EXPECT_TRUE(body["dependencies"]["store"].isObject());
  EXPECT_EQ(r.Header("content-type"), "application/json");
}

TEST_F(ServerTest, PastItsCapacityTheServerRefusesNewSessionsWithRetryAfterAndIsNotReady) {
  TestServer s([](app::AppConfig& c) {
    c.sessions.capacity = 2;
    c.sessions.capacity_hold_s = 1;
  });
  const auto ready = Http("GET", s.Url("/health/ready"));
  EXPECT_EQ(ready.status, 200) << ready.body;
  EXPECT_TRUE(ready.JsonBody()["ready"].asBool());
  EXPECT_EQ(ready.JsonBody()["capacity"].asInt(), 2);

  // Two created sessions hold their places while their clients connect.
  const std::string a = s.CreateSession("alice");
  const std::string b = s.CreateSession("bob");
  const auto refused = Http("POST", s.Url("/api/sessions"), R"({"persona_id":"seoa"})",
                            s.Auth("carol"));
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_EQ(ErrorCode(refused), "at_capacity");
  EXPECT_FALSE(refused.Header("retry-after").empty());
  const auto full = Http("GET", s.Url("/health/ready"));
  EXPECT_EQ(full.status, 503);
  EXPECT_FALSE(full.JsonBody()["ready"].asBool());
  EXPECT_EQ(full.JsonBody()["reasons"][0].asString(), "at_capacity") << full.body;
  EXPECT_FALSE(full.Header("retry-after").empty());
  EXPECT_EQ(Http("GET", s.Url("/health")).JsonBody()["sessions"]["active"].asInt(), 2);

  // A live one keeps its place past the hold; the one that never connected gives its place up.
  auto live_a = hub_.Connect(s.port(), "/ws/practice?session=" + a, s.Auth("alice"));
  ASSERT_TRUE(live_a->WaitOpen());
  live_a->SendText(R"({"type":"hello","protocol":1})");
  ASSERT_TRUE(live_a->ReceiveType("welcome"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  const std::string c = s.CreateSession("carol");
  // Full again (a live, c held): b, connecting only now, is told to come back later, but
  // neither a's second connection nor c's are refused.
  const auto late =
      Http("GET", s.Url("/ws/practice?session=" + b), "", UpgradeHeaders(s.Auth("bob")));
  EXPECT_EQ(late.status, 503) << late.body;
  EXPECT_EQ(ErrorCode(late), "at_capacity");
  auto landmarks_a = hub_.Connect(s.port(), "/ws/landmarks?session=" + a, s.Auth("alice"));
  EXPECT_TRUE(landmarks_a->WaitOpen());
  auto live_c = hub_.Connect(s.port(), "/ws/practice?session=" + c, s.Auth("carol"));
  EXPECT_TRUE(live_c->WaitOpen());

  // A place frees when a conversation ends.
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + a + "/end"), "", s.Auth("alice")).status, 200);
  EXPECT_EQ(Http("GET", s.Url("/health/ready")).status, 200);
  auto live_b = hub_.Connect(s.port(), "/ws/practice?session=" + b, s.Auth("bob"));
  EXPECT_TRUE(live_b->WaitOpen());
  EXPECT_EQ(Http("GET", s.Url("/health")).JsonBody()["sessions"]["active"].asInt(), 2);
  const auto metrics = Http("GET", s.Url("/metrics")).body;
  EXPECT_NE(metrics.find("parley_sessions_refused_total{reason=\"capacity\"} 1"),
            std::string::npos)
      << metrics;
}

TEST_F(ServerTest, ListsPersonasAndFetchesOne) {
  TestServer s;
  auto r = Http("GET", s.Url("/api/personas"));
  ASSERT_EQ(r.status, 200);
  const auto list = r.JsonBody()["personas"];
  ASSERT_GE(list.size(), 2u);
  for (const auto& p : list) {
    EXPECT_TRUE(p["name"].isString());
    EXPECT_TRUE(p["mbti"].isString());
    EXPECT_TRUE(p["tts"]["voice"].isString());
  }
  r = Http("GET", s.Url("/api/personas/" + list[0]["id"].asString()));
  ASSERT_EQ(r.status, 200);
  EXPECT_GE(r.JsonBody()["speaking_style"]["levels"].size(), 2u);
  r = Http("GET", s.Url("/api/personas/nobody"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(ErrorCode(r), "persona_not_found");
}

TEST_F(ServerTest, FullPracticeSessionCreateConnectHelloMessagesEnd) {
  TestServer s;
  std::atomic<int> hooks{0};
  s.app().sessions().AddEndHook([&](session::Session&) { ++hooks; });
  const std::string id = s.CreateSession("alice");
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(Http("GET", s.Url("/api/sessions/" + id), "", s.Auth("alice")).JsonBody()["state"],
            "created");

  auto ws = s.Join(hub_, "practice", id, "alice");
  ASSERT_EQ(ws->state(), WsClient::State::kOpen) << ws->failure();
  ws->SendText(R"({"type":"hello","protocol":1})");
  auto welcome = ws->ReceiveType("welcome");
  ASSERT_TRUE(welcome);
  EXPECT_EQ((*welcome)["session_id"].asString(), id);
  EXPECT_EQ((*welcome)["protocol"].asInt(), 1);
  EXPECT_EQ(Http("GET", s.Url("/api/sessions/" + id), "", s.Auth("alice")).JsonBody()["state"],
            "live");

  ws->SendText(R"({"type":"ping","id":7})");
  auto pong = ws->ReceiveType("pong");
  ASSERT_TRUE(pong);
  EXPECT_EQ((*pong)["id"].asInt(), 7);
  EXPECT_TRUE((*pong)["t"].isIntegral());

  ws->SendBinary(std::string("\x01\x1a\x45\xdf\xa3", 5));  // webm before start
  auto err = ws->ReceiveType("error");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["error"]["code"].asString(), "not_started");

  ws->SendText(R"({"type":"start","media":"pcm","sample_rate":16000})");
  auto started = ws->ReceiveType("started");
  ASSERT_TRUE(started);
  EXPECT_EQ((*started)["sample_rate"].asInt(), 16000);

  // One second of PCM, in two messages that split a sample.
  std::string pcm(32000, '\0');
  ws->SendBinary("\x02" + pcm.substr(0, 10001));
  ws->SendBinary("\x02" + pcm.substr(10001));
  ws->SendBinary(std::string("\x01\x1a", 2));  // WebM while PCM was started
  err = ws->ReceiveType("error");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["error"]["code"].asString(), "wrong_media");

  ws->SendText(R"({"type":"stop"})");
  EXPECT_TRUE(ws->ReceiveType("stopped"));

  const auto end = Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice"));
  ASSERT_EQ(end.status, 200);
  EXPECT_EQ(end.JsonBody()["state"].asString(), "ended");
  EXPECT_EQ(end.JsonBody()["end_reason"].asString(), "ended_by_client");
  const auto report = Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice"));
  EXPECT_NEAR(report.JsonBody()["metrics"]["media"]["audio_seconds"].asDouble(), 1.0, 0.02)
      << report.body;
  auto ended = ws->ReceiveType("session_ended");
  ASSERT_TRUE(ended);
  EXPECT_EQ(ws->WaitClosed(), 1000);
  EXPECT_EQ(hooks.load(), 1);
  // Ending again is harmless and runs no hook twice.
  EXPECT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  EXPECT_EQ(hooks.load(), 1);
  // An ended session cannot be joined again.
  const auto again =
      Http("GET", s.Url("/ws/practice?session=" + id), "", UpgradeHeaders(s.Auth("alice")));
  EXPECT_EQ(again.status, 410);
}

TEST_F(ServerTest, AnotherUsersSessionIsNotFoundNeverForbidden) {
  TestServer s;
  const std::string id = s.CreateSession("alice");
  for (const auto& [method, path] :
       std::vector<std::pair<std::string, std::string>>{{"GET", "/api/sessions/" + id},
                                                        {"POST", "/api/sessions/" + id + "/end"},
                                                        {"DELETE", "/api/sessions/" + id}}) {
    const auto r = Http(method, s.Url(path), "", s.Auth("mallory"));
    EXPECT_EQ(r.status, 404) << method << " " << path;
    EXPECT_EQ(ErrorCode(r), "session_not_found") << method << " " << path << ": " << r.body;
  }
  const auto up =
      Http("GET", s.Url("/ws/practice?session=" + id), "", UpgradeHeaders(s.Auth("mallory")));
  EXPECT_EQ(up.status, 404);
  EXPECT_EQ(ErrorCode(up), "session_not_found");
  auto ws = hub_.Connect(s.port(), "/ws/practice?session=" + id, s.Auth("mallory"));
  EXPECT_FALSE(ws->WaitOpen());
  // The owner still has it, untouched.
  EXPECT_EQ(Http("GET", s.Url("/api/sessions/" + id), "", s.Auth("alice")).status, 200);
  const auto list = Http("GET", s.Url("/api/sessions"), "", s.Auth("mallory")).JsonBody();
  EXPECT_EQ(list["total"].asInt(), 0);
}

TEST_F(ServerTest, UnknownSessionUpgradeIsRefusedWith404) {
  TestServer s;
  const auto r = Http("GET", s.Url("/ws/practice?session=does-not-exist"), "",
                      UpgradeHeaders(s.Auth("alice")));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(ErrorCode(r), "session_not_found");
  const auto missing = Http("GET", s.Url("/ws/practice"), "", UpgradeHeaders(s.Auth("alice")));
  EXPECT_EQ(missing.status, 400);
  EXPECT_EQ(ErrorCode(missing), "missing_session");
  const auto wrong = Http("GET", s.Url("/ws/nothing?session=x"), "", UpgradeHeaders(s.Auth("a")));
  EXPECT_EQ(wrong.status, 404);
}

TEST_F(ServerTest, AHandshakeWithAnUnsupportedVersionOrABadKeyIsAnswered) {
  TestServer s;
  const std::string id = s.CreateSession("alice");
  const std::string token = AuthorizationOf(s.Auth("alice"));
  auto handshake = [&](const std::string& version_line, const std::string& key_line) {
    return RawExchange(s.port(), "GET /ws/practice?session=" + id +
                                     " HTTP/1.1\r\nHost: localhost\r\nAuthorization: " + token +
                                     "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
                                     version_line + key_line + "\r\n");
  };
  const std::string good_key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
  for (const std::string version : {"Sec-WebSocket-Version: 8\r\n", ""}) {
    const std::string r = handshake(version, good_key);
    EXPECT_EQ(StatusOf(r), 426) << version << r;
    EXPECT_NE(r.find("sec-websocket-version: 13"), std::string::npos) << r;
    EXPECT_NE(r.find("unsupported_websocket_version"), std::string::npos) << r;
  }
  const std::string v13 = "Sec-WebSocket-Version: 13\r\n";
  for (const std::string& key :
       {std::string(), std::string("Sec-WebSocket-Key: short\r\n"),
        std::string("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n"),  // bits in the padding
        std::string("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub2!jZQ==\r\n")}) {
    const std::string r = handshake(v13, key);
    EXPECT_EQ(StatusOf(r), 400) << key << r;
    EXPECT_NE(r.find("bad_websocket_key"), std::string::npos) << key << r;
  }
  // The session was not touched: a proper handshake still opens it.
  EXPECT_EQ(StatusOf(handshake(v13, good_key)), 101);
}

TEST_F(ServerTest, RequestsLwsCannotHoldAreAnsweredNotDropped) {
  TestServer s;
  const std::string token = AuthorizationOf(s.Auth("alice"));
  auto get = [&](const std::string& target, const std::string& extra = "") {
    return RawExchange(s.port(), "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" +
                                     "Authorization: " + token + "\r\n" + extra + "\r\n");
  };
  std::string params;
  for (int i = 0; i < 1000; ++i) params += (i ? "&p" : "p") + std::to_string(i) + "=1";
  std::string lines;
  for (int i = 0; i < 100; ++i) lines += "X-Line-" + std::to_string(i) + ": v\r\n";
  const struct {
    std::string what, answer;
    int status;
    std::string code;
  } cases[] = {
      {"an 8 KiB session id", get("/api/sessions/" + std::string(8200, 'a')), 414, "uri_too_long"},
      {"1,000 query parameters", get("/api/sessions?" + params), 414, "uri_too_long"},
      {"a 64 KiB header", get("/health", "X-Big: " + std::string(64 * 1024, 'a') + "\r\n"), 431,
       "headers_too_large"},
      {"a 64 KiB bearer token",
       RawExchange(s.port(), "GET /api/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                 std::string(64 * 1024, 'a') + "\r\n\r\n"),
       431, "headers_too_large"},
      {"100 header lines", get("/health", lines), 431, "headers_too_large"},
      {"a NUL byte in the path", get(std::string("/api/ses\0sions", 14)), 400, "bad_request"},
      {"an encoded NUL", get("/api/ses%00sions"), 400, "bad_request"},
      {"not HTTP at all", RawExchange(s.port(), "HELLO\r\n\r\n"), 400, "bad_request"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(StatusOf(c.answer), c.status) << c.what << ": " << c.answer.substr(0, 200);
    const size_t body = c.answer.find("\r\n\r\n");
    ASSERT_NE(body, std::string::npos) << c.what;
    std::string error;
    const auto json = core::ParseJson(c.answer.substr(body + 4), &error);
    ASSERT_TRUE(json.has_value()) << c.what << ": " << error;
    EXPECT_EQ((*json)["error"]["code"].asString(), c.code) << c.what;
  }
  // Sound requests on the same port are untouched, with their bodies.
  EXPECT_EQ(StatusOf(get("/api/sessions?" + params.substr(0, 40))), 200);
  EXPECT_FALSE(s.CreateSession("alice").empty());
  EXPECT_EQ(Http("GET", s.Url("/health")).status, 200);
}

TEST_F(ServerTest, AnErrorEchoingInvalidUtf8IsStillValidJson) {
  TestServer s;
  const auto r = Http("POST", s.Url("/api/sessions"),
                      std::string("{\"persona_id\":\"\xff\xfe\x80") + "abc\"}", s.Auth("alice"));
  EXPECT_EQ(r.status, 422);
  EXPECT_EQ(ErrorCode(r), "unknown_persona") << r.body;
  EXPECT_NE(r.body.find("\xEF\xBF\xBD"), std::string::npos) << "U+FFFD stands in for the bad bytes";
  EXPECT_EQ(core::ReplaceInvalidUtf8(r.body), r.body) << "the body is valid UTF-8";
}

TEST_F(ServerTest, TokensAreRequiredAndCheckedForHttpAndUpgrade) {
  TestServer s;
  auto r = Http("GET", s.Url("/api/sessions"));
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(ErrorCode(r), "unauthorized");
  r = Http("GET", s.Url("/api/sessions"), "",
           {{"Authorization", "Bearer " + MintToken("alice", -3600)}});
  EXPECT_EQ(r.status, 401);
  EXPECT_NE(r.JsonBody()["error"]["message"].asString().find("expired"), std::string::npos);
  r = Http("GET", s.Url("/api/sessions"), "", {{"Authorization", "Basic YTpi"}});
  EXPECT_EQ(r.status, 401);

  const std::string id = s.CreateSession("alice");
  r = Http("GET", s.Url("/ws/practice?session=" + id), "", UpgradeHeaders());
  EXPECT_EQ(r.status, 401);
  // ?token= works for WebSocket clients that cannot set headers (browsers).
  auto ws = hub_.Connect(s.port(), "/ws/practice?session=" + id + "&token=" + MintToken("alice"));
  EXPECT_TRUE(ws->WaitOpen()) << ws->failure();
}

// Every authenticated endpoint and both WebSocket paths, asked without a token and with each
// kind of bad one: all are 401 `unauthorized`. Asked with another user's good token, what names
// the owner's session is the documented 404 `session_not_found` and what lists gives only the
// asker's: nothing of the owner's is read, ended or deleted.
TEST_F(ServerTest, EveryEndpointRefusesEveryBadTokenAndNoUserReachesAnothersSessions) {
  TestServer s;
  const std::string live = s.CreateSession("alice");
  const std::string ended = s.CreateSession("alice");
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + ended + "/end"), "", s.Auth("alice"), 60s).status,
            200);
  const auto report = Http("GET", s.Url("/api/sessions/" + ended + "/report"), "", s.Auth("alice"));
  ASSERT_EQ(report.status, 200) << report.body;
  const std::string report_before = report.body;

  const std::string good = MintToken("alice");
  const auto segment = [](const std::string& token, int n) {
    size_t begin = 0;
    for (int i = 0; i < n; ++i) begin = token.find('.', begin) + 1;
    return token.substr(begin, token.find('.', begin) - begin);
  };
  const std::string header_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";  // {"alg":"none",...}
  const std::vector<std::pair<std::string, std::string>> bad_tokens = {
      {"none", ""},
      {"expired", MintToken("alice", -3600)},
      {"wrong signature", MintToken("alice", 3600, "another-secret-0123456789abcdef")},
      {"alg none", header_none + "." + segment(good, 1) + "."},
      {"signature stripped", segment(good, 0) + "." + segment(good, 1) + "."},
      {"payload swapped", segment(MintToken("mallory"), 0) + "." + segment(good, 1) + "." +
                              segment(MintToken("mallory"), 2)},
      {"not a JWT", "garbage"},
  };
  struct Endpoint {
    std::string method, path, body;
    bool names_alices = true;  // false: a collection or an action of the asker's own
  };
  const std::vector<Endpoint> endpoints = {
      {"POST", "/api/sessions", R"({"persona_id":"seoa"})", false},
      {"GET", "/api/sessions", "", false},
      {"GET", "/api/sessions?limit=5&offset=0", "", false},
      {"GET", "/api/sessions/" + live, ""},
      {"GET", "/api/sessions/" + ended, ""},
      {"POST", "/api/sessions/" + live + "/end", ""},
      {"GET", "/api/sessions/" + ended + "/report", ""},
      {"GET", "/api/sessions/" + ended + "/report?download=1", ""},
      {"GET", "/api/sessions/" + ended + "/report.csv", ""},
      {"GET", "/api/sessions/" + ended + "/turns.csv", ""},
      {"GET", "/api/sessions/" + ended + "/report.html", ""},
      {"DELETE", "/api/sessions/" + ended, ""},
      {"DELETE", "/api/sessions/" + live, ""},
      {"GET", "/api/progress", "", false},
      {"POST", "/api/tts", R"({"text":"hi"})", false},
      {"POST", "/api/analyze?persona_id=seoa", "RIFF", false},
  };
  int tried = 0;
  for (const auto& [kind, token] : bad_tokens) {
    const Headers auth = token.empty() ? Headers{} : Headers{{"Authorization", "Bearer " + token}};
    for (const auto& e : endpoints) {
      const auto r = Http(e.method, s.Url(e.path), e.body, auth);
      EXPECT_EQ(r.status, 401) << kind << ": " << e.method << " " << e.path << " " << r.body;
      EXPECT_EQ(ErrorCode(r), "unauthorized") << kind << ": " << e.method << " " << e.path;
      ++tried;
    }
    for (const std::string endpoint : {"practice", "landmarks"}) {
      const std::string path = "/ws/" + endpoint + "?session=" + live;
      const auto header = Http("GET", s.Url(path), "", UpgradeHeaders(auth));
      EXPECT_EQ(header.status, 401) << kind << ": " << path;
      EXPECT_EQ(ErrorCode(header), "unauthorized") << kind << ": " << path;
      const auto query = Http("GET", s.Url(path + "&token=" + token), "", UpgradeHeaders());
      EXPECT_EQ(query.status, 401) << kind << ": " << path << "&token=";
      tried += 2;
    }
  }
  // Another user's good token.
  const Headers mallory = s.Auth("mallory");
  for (const auto& e : endpoints) {
    const auto r = Http(e.method, s.Url(e.path), e.body, mallory);
    EXPECT_EQ(r.body.find(live), std::string::npos) << e.method << " " << e.path << " " << r.body;
    EXPECT_EQ(r.body.find(ended), std::string::npos) << e.method << " " << e.path << " " << r.body;
    if (e.names_alices) {
      EXPECT_EQ(r.status, 404) << e.method << " " << e.path;
      EXPECT_EQ(ErrorCode(r), "session_not_found") << e.method << " " << e.path << " " << r.body;
    } else {
      EXPECT_NE(r.status, 401) << e.method << " " << e.path;
      EXPECT_LT(r.status, 500) << e.method << " " << e.path << " " << r.body;
    }
    ++tried;
  }
  for (const std::string endpoint : {"practice", "landmarks"}) {
    const std::string path = "/ws/" + endpoint + "?session=" + live;
    EXPECT_EQ(Http("GET", s.Url(path), "", UpgradeHeaders(mallory)).status, 404) << path;
    EXPECT_EQ(
        Http("GET", s.Url(path + "&token=" + MintToken("mallory")), "", UpgradeHeaders()).status,
        404)
        << path;
    auto ws = hub_.Connect(s.port(), path, mallory);
    EXPECT_FALSE(ws->WaitOpen()) << path;
    tried += 3;
  }
  std::cout << tried << " requests with a bad token or another user's\n";
  // Alice's sessions are as they were: the live one live, the ended one's report unchanged.
  const auto still = Http("GET", s.Url("/api/sessions/" + live), "", s.Auth("alice"));
  ASSERT_EQ(still.status, 200);
  EXPECT_EQ(still.JsonBody()["state"].asString(), "created") << still.body;
  EXPECT_EQ(Http("GET", s.Url("/api/sessions/" + ended + "/report"), "", s.Auth("alice")).body,
            report_before);
  const auto mine = Http("GET", s.Url("/api/sessions"), "", s.Auth("alice")).JsonBody();
  EXPECT_EQ(mine["total"].asInt(), 2) << core::ToJson(mine);
  // And the owner's token still works on every path.
  auto ws = s.Join(hub_, "practice", live, "alice");
  EXPECT_EQ(ws->state(), WsClient::State::kOpen);
}

TEST_F(ServerTest, OversizedFrameClosesWith1009) {
  TestServer s([](app::AppConfig& c) { c.server.max_message_bytes = 64 * 1024; });
  const std::string id = s.CreateSession("alice");
  auto ws = s.Join(hub_, "practice", id, "alice");
  ASSERT_EQ(ws->state(), WsClient::State::kOpen);
  ws->SendBinary(std::string(64 * 1024 + 10, '\x01'));
  EXPECT_EQ(ws->WaitClosed(), 1009);
  EXPECT_GE(s.app().metrics().Read("parley_ws_rejected_total", {{"reason", "too_big"}}).value_or(0),
            1.0);
  // The server is fine and the session can be rejoined.
  auto again = s.Join(hub_, "practice", id, "alice");
  EXPECT_EQ(again->state(), WsClient::State::kOpen);
}

TEST_F(ServerTest, MalformedJsonGetsAnErrorEventAndTheConnectionStaysUsable) {
  TestServer s;
  auto ws = s.Join(hub_, "practice", s.CreateSession("alice"), "alice");
  ASSERT_EQ(ws->state(), WsClient::State::kOpen);
  ws->SendText("{\"type\": \"hello\", ");
  auto err = ws->ReceiveType("error");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["error"]["code"].asString(), "bad_json");
  ws->SendText("[1,2,3]");
  err = ws->ReceiveType("error");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["error"]["code"].asString(), "bad_message");
  ws->SendText(R"({"type":"dance"})");
  err = ws->ReceiveType("error");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["error"]["code"].asString(), "unknown_type");
  ws->SendText(R"({"type":"start","media":"pcm","sample_rate":"fast"})");
  err = ws->ReceiveType("error");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["error"]["code"].asString(), "bad_start");
  ws->SendBinary(std::string("\x7f", 1));
  err = ws->ReceiveType("error");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["error"]["code"].asString(), "unknown_kind");
  ws->SendText(R"({"type":"ping","id":"still-here"})");
  auto pong = ws->ReceiveType("pong");
  ASSERT_TRUE(pong);
  EXPECT_EQ((*pong)["id"].asString(), "still-here");
  EXPECT_EQ(ws->state(), WsClient::State::kOpen);
}

TEST_F(ServerTest, UnsupportedProtocolVersionIsRefusedAndClosed) {
  TestServer s;
  auto ws = s.Join(hub_, "practice", s.CreateSession("alice"), "alice");
  ws->SendText(R"({"type":"hello","protocol":99})");
  auto err = ws->ReceiveType("error");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["error"]["code"].asString(), "unsupported_protocol");
  EXPECT_EQ(ws->WaitClosed(), 1002);
}

TEST_F(ServerTest, LandmarkEndpointNeedsNoStartAndRefusesPracticeControls) {
  TestServer s;
  auto ws = s.Join(hub_, "landmarks", s.CreateSession("alice"), "alice");
  ASSERT_EQ(ws->state(), WsClient::State::kOpen);
  // A frame with no face is valid at once: the next answer is the pong, not an error.
  ws->SendText(R"({"t":1.0,"width":640,"height":480,"landmarks":[]})");
  ws->SendText(R"({"type":"ping"})");
  auto next = ws->ReceiveJson();
  ASSERT_TRUE(next);
  EXPECT_EQ((*next)["type"], "pong") << core::ToJson(*next);
  // Both frame forms reach the session's vision stage: the JSON one is analysed, the
  // truncated binary one refused.
  const auto frames = [&](const char* outcome) {
    return s.app()
        .metrics()
        .Read("parley_landmark_frames_total", {{"outcome", outcome}})
        .value_or(0);
  };
  const double analysed = frames("analysed"), rejected = frames("rejected");
  ws->SendText(R"({"t":2.0,"width":640,"height":480,"landmarks":[]})");
  ws->SendBinary(std::string("\x03PLM1", 5));
  ws->SendText(R"({"type":"ping"})");
  ASSERT_TRUE(ws->ReceiveType("pong"));
  EXPECT_EQ(frames("analysed"), analysed + 1);
  EXPECT_EQ(frames("rejected"), rejected + 1);
  ws->SendText(R"({"type":"start","media":"webm"})");
  auto err = ws->ReceiveType("error");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["error"]["code"].asString(), "unknown_type");
}

TEST_F(ServerTest, RateLimitDropsExcessMessagesWithAnErrorButAllows120PerSecond) {
  TestServer s([](app::AppConfig& c) {
    c.server.max_messages_per_s = 150;
    // A burst of a second's worth: a busy test machine may deliver paced messages in clumps.
    c.server.message_burst = 150;
  });
  auto ws = s.Join(hub_, "practice", s.CreateSession("alice"), "alice");
  ASSERT_EQ(ws->state(), WsClient::State::kOpen);
  // 120 messages/s for 1.5 s passes without a single drop.
  for (int i = 0; i < 180; ++i) {
    ws->SendText(R"({"type":"ping"})");
    std::this_thread::sleep_for(std::chrono::microseconds(1'000'000 / 120));
  }
  int pongs = 0;
  while (auto m = ws->ReceiveJson(1000ms)) {
    ASSERT_NE((*m)["type"].asString(), "error") << core::ToJson(*m);
    if ((*m)["type"].asString() == "pong" && ++pongs == 180) break;
  }
  EXPECT_EQ(pongs, 180);
  // A burst far beyond the bucket is cut, and the client is told.
  for (int i = 0; i < 400; ++i) ws->SendText(R"({"type":"ping"})");
  auto err = ws->ReceiveType("error", 3000ms);
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["error"]["code"].asString(), "rate_limited");
  EXPECT_GT(
      s.app().metrics().Read("parley_ws_rejected_total", {{"reason", "rate_limited"}}).value_or(0),
      100.0);
}

TEST_F(ServerTest, SlowConsumerIsClosedWith1008InsteadOfBufferingWithoutBound) {
  TestServer s([](app::AppConfig& c) {
    c.server.send_queue_max_bytes = 64 * 1024;
    c.server.max_messages_per_s = 10000;
    c.server.message_burst = 10000;
  });
  auto ws = s.Join(hub_, "practice", s.CreateSession("alice"), "alice");
  ASSERT_EQ(ws->state(), WsClient::State::kOpen);
  ws->PauseReading(true);
  std::this_thread::sleep_for(100ms);
  // Each pong echoes a 256 KB id: far more than the socket buffers and the 64 KiB queue hold.
  const std::string big_id(256 * 1024, 'x');
  for (int i = 0; i < 60; ++i) ws->SendText(R"({"type":"ping","id":")" + big_id + "\"}");
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline &&
         s.app().metrics().Read("parley_ws_slow_consumer_closes_total").value_or(0) < 1)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(s.app().metrics().Read("parley_ws_slow_consumer_closes_total").value_or(0), 1.0);
  ws->PauseReading(false);
  // The close frame (1008) only gets through when the client's socket has room for it; a
  // client this far behind usually just sees the TCP connection end (1006).
  const auto code = ws->WaitClosed(10s);
  ASSERT_TRUE(code.has_value()) << "the slow client was never disconnected";
  EXPECT_TRUE(*code == 1008 || *code == 1006) << *code;
  // Nobody else noticed.
  EXPECT_EQ(Http("GET", s.Url("/health")).status, 200);
}

TEST_F(ServerTest, IdleConnectionIsClosedWith1001) {
  TestServer s([](app::AppConfig& c) { c.server.idle_timeout_s = 1; });
  auto ws = s.Join(hub_, "practice", s.CreateSession("alice"), "alice");
  ASSERT_EQ(ws->state(), WsClient::State::kOpen);
  EXPECT_EQ(ws->WaitClosed(4000ms), 1001);
  EXPECT_EQ(ws->close_reason(), "idle timeout");
}

TEST_F(ServerTest, TwoHundredConnectionsAtOnceAllGetAnswers) {
  TestServer s([](app::AppConfig& c) { c.server.max_connections_per_ip = 256; });
  const std::string id = s.CreateSession("alice");
  std::vector<std::shared_ptr<WsClient>> clients;
  for (int i = 0; i < 200; ++i)
    clients.push_back(hub_.Connect(s.port(), "/ws/landmarks?session=" + id, s.Auth("alice")));
  for (auto& c : clients) ASSERT_TRUE(c->WaitOpen(10000ms)) << c->failure();
  for (size_t i = 0; i < clients.size(); ++i)
    clients[i]->SendText(R"({"type":"ping","id":)" + std::to_string(i) + "}");
  for (size_t i = 0; i < clients.size(); ++i) {
    auto pong = clients[i]->ReceiveType("pong", 10000ms);
    ASSERT_TRUE(pong) << "client " << i;
    EXPECT_EQ((*pong)["id"].asUInt64(), i);
  }
  EXPECT_EQ(Http("GET", s.Url("/api/sessions/" + id), "", s.Auth("alice"))
                .JsonBody()["connections"]
                .asInt(),
            200);
  for (auto& c : clients) c->Close();
  for (auto& c : clients) EXPECT_TRUE(c->WaitClosed());
}

TEST_F(ServerTest, PerAddressConnectionLimitAnswers429) {
  TestServer s([](app::AppConfig& c) { c.server.max_connections_per_ip = 2; });
  const std::string id = s.CreateSession("alice");
  auto a = s.Join(hub_, "practice", id, "alice");
  auto b = s.Join(hub_, "landmarks", id, "alice");
  ASSERT_EQ(a->state(), WsClient::State::kOpen);
  ASSERT_EQ(b->state(), WsClient::State::kOpen);
  const auto r =
      Http("GET", s.Url("/ws/practice?session=" + id), "", UpgradeHeaders(s.Auth("alice")));
  EXPECT_EQ(r.status, 429);
  b->Close();
  ASSERT_TRUE(b->WaitClosed());
  // The slot is given back when a connection closes.
  auto c = s.Join(hub_, "practice", id, "alice");
  EXPECT_EQ(c->state(), WsClient::State::kOpen) << c->failure();
}

TEST_F(ServerTest, OriginAllowlistGuardsUpgradesAndCors) {
  TestServer s([](app::AppConfig& c) { c.server.allowed_origins = {"https://app.example"}; });
  const std::string id = s.CreateSession("alice");
  auto r = Http("GET", s.Url("/ws/practice?session=" + id), "",
                UpgradeHeaders({{"Origin", "https://evil.example"},
                                {"Authorization", "Bearer " + MintToken("alice")}}));
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(ErrorCode(r), "origin_not_allowed");
  Headers with_origin = s.Auth("alice");
  with_origin.emplace_back("Origin", "https://app.example");
  auto ok = hub_.Connect(s.port(), "/ws/practice?session=" + id, with_origin);
  EXPECT_TRUE(ok->WaitOpen()) << ok->failure();
  r = Http("GET", s.Url("/api/personas"), "", {{"Origin", "https://app.example"}});
  EXPECT_EQ(r.Header("access-control-allow-origin"), "https://app.example");
  r = Http("GET", s.Url("/api/personas"), "", {{"Origin", "https://evil.example"}});
  EXPECT_EQ(r.Header("access-control-allow-origin"), "");
  r = Http("OPTIONS", s.Url("/api/sessions"), "",
           {{"Origin", "https://app.example"}, {"Access-Control-Request-Method", "POST"}});
  EXPECT_EQ(r.status, 204);
  EXPECT_NE(r.Header("access-control-allow-methods").find("POST"), std::string::npos);
}

TEST_F(ServerTest, HttpErrorsAreJsonWithTheRightStatus) {
  TestServer s;
  auto r = Http("GET", s.Url("/ws/practice"));
  EXPECT_EQ(r.status, 426);
  EXPECT_EQ(ErrorCode(r), "upgrade_required");
  r = Http("PUT", s.Url("/api/sessions"), "{}", s.Auth("alice"));
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.Header("allow"), "GET, POST");
  r = Http("GET", s.Url("/api/nothing"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(ErrorCode(r), "not_found");
  r = Http("POST", s.Url("/api/sessions"), "{not json", s.Auth("alice"));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorCode(r), "invalid_json");
  r = Http("POST", s.Url("/api/sessions"), R"({"persona_id":"nobody"})", s.Auth("alice"));
  EXPECT_EQ(r.status, 422);
  EXPECT_EQ(ErrorCode(r), "unknown_persona");
  r = Http("POST", s.Url("/api/sessions"), "{}", s.Auth("alice"));
  EXPECT_EQ(r.status, 422);
  r = Http("GET", s.Url("/api/sessions?limit=0"), "", s.Auth("alice"));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorCode(r), "invalid_query");
}

TEST_F(ServerTest, RequestBodyOverTheLimitIs413) {
  TestServer s([](app::AppConfig& c) { c.server.max_http_body_bytes = 4096; });
  const auto r = Http("POST", s.Url("/api/sessions"), std::string(5000, ' '), s.Auth("alice"));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(ErrorCode(r), "payload_too_large");
  // The server keeps answering.
  EXPECT_EQ(Http("GET", s.Url("/health")).status, 200);
}

// A client still sending a body refused for its size reads the 413, not a reset connection:
// the server reads the rest of the declared body (thrown away) before it answers and closes.
// The body arrives in pieces, later than the headers, as over a slow uplink.
TEST_F(ServerTest, AClientStillSendingAnOversizedBodyReadsThe413) {
  TestServer s([](app::AppConfig& c) { c.server.max_http_body_bytes = 4096; });
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(s.port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    std::string token;
    for (const auto& [name, value] : s.Auth("alice"))
      if (name == "Authorization") token = value;
    const size_t size = 256 * 1024;
    std::string head = "POST /api/sessions HTTP/1.1\r\nHost: localhost\r\nAuthorization: " + token +
                       "\r\nContent-Type: application/json\r\n";
    head += "Content-Length: " + std::to_string(size) + "\r\n\r\n";
    ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(head.size()));
    const std::string piece(32 * 1024, ' ');
    bool sent_all = true;
    for (size_t sent = 0; sent < size && sent_all; sent += piece.size()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      sent_all = ::send(fd, piece.data(), piece.size(), MSG_NOSIGNAL) ==
                 static_cast<ssize_t>(piece.size());
    }
    EXPECT_TRUE(sent_all) << "the server stopped reading before the body was sent";
    std::string answer;
    char buf[4096];
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
      answer.append(buf, static_cast<size_t>(n));
    ::close(fd);
    EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer;
    EXPECT_NE(answer.find("payload_too_large"), std::string::npos) << answer;
  }
  EXPECT_EQ(Http("GET", s.Url("/health")).status, 200);
}

TEST_F(ServerTest, StaticFilesHaveMimeTypesAndNoWayOut) {
  TestServer s;
  std::ofstream(s.web_root() + "/app.js") << "let x = 1;";
  auto r = Http("GET", s.Url("/app.js"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("content-type"), "text/javascript; charset=utf-8");
  EXPECT_EQ(r.body, "let x = 1;");
  r = Http("GET", s.Url("/"));
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("parley test"), std::string::npos);
  for (const char* p : {"/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                        "/..%2f..%2fetc%2fpasswd", "/nope.html"}) {
    r = Http("GET", s.Url(p));
    EXPECT_NE(r.status, 200) << p;
    EXPECT_EQ(r.body.find("root:"), std::string::npos) << p;
  }
  r = Http("POST", s.Url("/app.js"), "x");
  EXPECT_EQ(r.status, 405);
}

TEST_F(ServerTest, ListsOwnSessionsNewestFirstWithPaging) {
  TestServer s;
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(s.CreateSession("alice"));
    std::this_thread::sleep_for(2ms);
  }
  s.CreateSession("bob");
  auto page = Http("GET", s.Url("/api/sessions?limit=2"), "", s.Auth("alice")).JsonBody();
  EXPECT_EQ(page["total"].asInt(), 5);
  ASSERT_EQ(page["sessions"].size(), 2u);
  EXPECT_EQ(page["sessions"][0]["session_id"].asString(), ids[4]);
  EXPECT_EQ(page["sessions"][1]["session_id"].asString(), ids[3]);
  EXPECT_EQ(page["next_offset"].asInt(), 2);
  page = Http("GET", s.Url("/api/sessions?limit=2&offset=4"), "", s.Auth("alice")).JsonBody();
  ASSERT_EQ(page["sessions"].size(), 1u);
  EXPECT_EQ(page["sessions"][0]["session_id"].asString(), ids[0]);
  EXPECT_TRUE(page["next_offset"].isNull());
}

TEST_F(ServerTest, DeleteEndsAndRemovesTheSession) {
  TestServer s;
  std::atomic<int> hooks{0};
  s.app().sessions().AddEndHook([&](session::Session&) { ++hooks; });
  const std::string id = s.CreateSession("alice");
  auto ws = s.Join(hub_, "practice", id, "alice");
  ASSERT_EQ(ws->state(), WsClient::State::kOpen);
  auto r = Http("DELETE", s.Url("/api/sessions/" + id), "", s.Auth("alice"));
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(ws->WaitClosed(), 1000);
  EXPECT_EQ(hooks.load(), 1);
  EXPECT_EQ(Http("GET", s.Url("/api/sessions/" + id), "", s.Auth("alice")).status, 404);
  EXPECT_EQ(Http("DELETE", s.Url("/api/sessions/" + id), "", s.Auth("alice")).status, 404);
}

TEST_F(ServerTest, SessionEndsAfterTheDisconnectGracePeriod) {
  TestServer s([](app::AppConfig& c) { c.sessions.disconnect_grace_s = 1; });
  std::atomic<int> hooks{0};
  s.app().sessions().AddEndHook([&](session::Session&) { ++hooks; });
  const std::string id = s.CreateSession("alice");
  {
    auto ws = s.Join(hub_, "practice", id, "alice");
    ASSERT_EQ(ws->state(), WsClient::State::kOpen);
    ws->Close();
    ASSERT_TRUE(ws->WaitClosed());
  }
  // Reconnecting within the grace keeps it alive.
  auto back = s.Join(hub_, "practice", id, "alice");
  ASSERT_EQ(back->state(), WsClient::State::kOpen);
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(Http("GET", s.Url("/api/sessions/" + id), "", s.Auth("alice")).JsonBody()["state"],
            "live");
  back->Close();
  ASSERT_TRUE(back->WaitClosed());
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  Json::Value state;
  while (std::chrono::steady_clock::now() < deadline) {
    state = Http("GET", s.Url("/api/sessions/" + id), "", s.Auth("alice")).JsonBody();
    if (state["state"] == "ended") break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(state["state"].asString(), "ended");
  EXPECT_EQ(state["end_reason"].asString(), "disconnect_grace");
  EXPECT_EQ(hooks.load(), 1);
}

TEST_F(ServerTest, ReconnectingClientStartsItsMediaAgainAfterADroppedSocket) {
  TestServer s([](app::AppConfig& c) { c.sessions.disconnect_grace_s = 10; });
  const std::string id = s.CreateSession("alice");
  const std::string pcm_start = R"({"type":"start","media":"pcm","sample_rate":16000})";
  {
    auto first = s.Join(hub_, "practice", id, "alice");
    ASSERT_EQ(first->state(), WsClient::State::kOpen);
    first->SendText(pcm_start);
    ASSERT_TRUE(first->ReceiveType("started"));
    first->SendBinary(std::string("\x02") + std::string(3200, '\0'));
    first->Drop();  // a phone losing its network: no stop, no close frame
    ASSERT_TRUE(first->WaitClosed());
  }
  // The stream of the dropped socket is over; the new socket's start begins a fresh one.
  auto second = s.Join(hub_, "practice", id, "alice");
  ASSERT_EQ(second->state(), WsClient::State::kOpen);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  std::optional<Json::Value> answer;
  while (std::chrono::steady_clock::now() < deadline) {
    second->SendText(pcm_start);
    answer = second->ReceiveJson(
        2s, [](const Json::Value& m) { return m["type"] != "started" && m["type"] != "error"; });
    // The server may not have seen the drop yet: then the start is refused, and retried.
    if (answer && (*answer)["type"] == "started") break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(answer);
  EXPECT_EQ((*answer)["type"], "started") << answer->toStyledString();
  // A second practice socket joining a running stream does not stop it when it leaves.
  auto watcher = s.Join(hub_, "practice", id, "alice");
  ASSERT_EQ(watcher->state(), WsClient::State::kOpen);
  watcher->Close();
  ASSERT_TRUE(watcher->WaitClosed());
  second->SendText(pcm_start);
  auto again = second->ReceiveType("error");
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)["error"]["code"], "bad_start") << "the stream is still running";
}

TEST_F(ServerTest, MetricsCountMessagesBytesErrorsAndRequests) {
  TestServer s;
  auto ws = s.Join(hub_, "practice", s.CreateSession("alice"), "alice");
  for (int i = 0; i < 3; ++i) ws->SendText(R"({"type":"ping"})");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(ws->ReceiveType("pong"));
  ws->SendText("nope");
  ASSERT_TRUE(ws->ReceiveType("error"));
  const auto text = Http("GET", s.Url("/metrics")).body;
  EXPECT_NE(text.find(R"(parley_ws_messages_total{endpoint="practice",direction="in"} 4)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(parley_ws_bytes_total{endpoint="practice",direction="in"})"),
            std::string::npos);
  EXPECT_NE(text.find(R"(parley_errors_total{code="bad_json"} 1)"), std::string::npos);
  EXPECT_NE(text.find(R"(parley_http_requests_total{route="/api/sessions",status="201"} 1)"),
            std::string::npos);
  EXPECT_NE(text.find(R"(parley_sessions{state="live"} 1)"), std::string::npos);
  EXPECT_NE(text.find(R"(parley_connections{kind="websocket"} 1)"), std::string::npos);
}

TEST_F(ServerTest, ShutdownEndsLiveSessionsAndClosesSocketsWithGoingAway) {
  auto s = std::make_unique<TestServer>();
  std::atomic<int> hooks{0};
  s->app().sessions().AddEndHook([&](session::Session&) { ++hooks; });
  std::vector<std::shared_ptr<WsClient>> clients;
  for (int i = 0; i < 5; ++i)
    clients.push_back(s->Join(hub_, "practice", s->CreateSession("u"), "u"));
  for (auto& c : clients) {
    ASSERT_EQ(c->state(), WsClient::State::kOpen);
    c->SendText(R"({"type":"hello","protocol":1})");
    ASSERT_TRUE(c->ReceiveType("welcome"));
  }
  s->app().Shutdown();
  EXPECT_EQ(hooks.load(), 5);
  for (auto& c : clients) {
    auto ended = c->ReceiveType("session_ended");
    ASSERT_TRUE(ended);
    EXPECT_EQ((*ended)["reason"].asString(), "shutdown");
    const auto code = c->WaitClosed();
    ASSERT_TRUE(code);
    EXPECT_TRUE(*code == 1000 || *code == 1001) << *code;
  }
}

}  // namespace
}  // namespace parley::testing

namespace parley::testing {
namespace {

TEST(ServerUtf8, TextThatIsNotUtf8ClosesWith1007AndValidTextPasses) {
  TestServer s;
  WsHub hub;
  auto ok = s.Join(hub, "practice", s.CreateSession("alice"), "alice");
  // Multi-byte UTF-8 is fine (a persona name, an emoji in an id).
  ok->SendText("{\"type\":\"ping\",\"id\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\"}");
  auto pong = ok->ReceiveType("pong");
  ASSERT_TRUE(pong);
  EXPECT_EQ((*pong)["id"].asString(), "caf\xc3\xa9 \xf0\x9f\x98\x80");
  auto bad = s.Join(hub, "practice", s.CreateSession("bob"), "bob");
  bad->SendText("{\"type\":\"ping\",\"id\":\"\xc3\x28\"}");  // invalid continuation byte
  EXPECT_EQ(bad->WaitClosed(), 1007);
  // The other connection is untouched.
  ok->SendText(R"({"type":"ping"})");
  EXPECT_TRUE(ok->ReceiveType("pong"));
}

}  // namespace
}  // namespace parley::testing
