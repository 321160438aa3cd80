#include "tests/support/test_server.h"

#include <jwt.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace parley::testing {

std::string MintToken(const std::string& sub, long exp_in_s, const std::string& secret) {
  jwt_t* jwt = nullptr;
  if (jwt_new(&jwt) != 0) return {};
  const long now = static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count());
  if (!sub.empty()) jwt_add_grant(jwt, "sub", sub.c_str());
  jwt_add_grant_int(jwt, "iat", now);
  jwt_add_grant_int(jwt, "exp", now + exp_in_s);
  jwt_set_alg(jwt, JWT_ALG_HS256, reinterpret_cast<const unsigned char*>(secret.data()),
              static_cast<int>(secret.size()));
  char* text = jwt_encode_str(jwt);
  std::string token = text != nullptr ? text : "";
  free(text);  // libjwt 1.10 allocates with malloc
  jwt_free(jwt);
  return token;
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "parley-test-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

TestServer::TestServer(const std::function<void(app::AppConfig&)>& tweak) {
  std::ofstream(web_.path() + "/index.html") << "<!doctype html><title>parley test</title>";
  app::AppConfig c;
  c.server.bind_address = "127.0.0.1";
  c.server.port = 0;
  c.auth.jwt_secret_key = kTestSecret;
  c.data_dir = data_.path();
  c.web_root = web_.path();
  c.personas_dir = PARLEY_SOURCE_DIR "/personas";
  c.workers.threads = 4;
  // Tests of many sessions at once are not tests of admission (those set their own).
  c.sessions.capacity = 100'000;
  if (tweak) tweak(c);
  const auto problems = c.Validate();
  if (!problems.empty()) throw std::runtime_error("bad test config: " + problems.front());
  log_ = std::make_unique<core::Logger>(core::LogLevel::kDebug, [this](std::string_view line) {
    const std::lock_guard lock(log_mu_);
    logs_.append(line);
  });
  app_ = std::make_unique<app::App>(c, *log_);
  if (!app_->Start()) throw std::runtime_error("test server did not start: " + Logs());
}

TestServer::~TestServer() {
  app_->Shutdown();
  app_.reset();
}

std::string TestServer::Url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port()) + path;
}

std::string TestServer::Logs() const {
  const std::lock_guard lock(log_mu_);
  return logs_;
}

Headers TestServer::Auth(const std::string& user) const {
  return {{"Authorization", "Bearer " + MintToken(user)}};
}

std::string TestServer::CreateSession(const std::string& user, const std::string& persona) {
  const auto r =
      Http("POST", Url("/api/sessions"), "{\"persona_id\":\"" + persona + "\"}", Auth(user));
  if (r.status != 201) return {};
  return r.JsonBody()["session_id"].asString();
}

std::shared_ptr<WsClient> TestServer::Join(WsHub& hub, const std::string& endpoint,
                                           const std::string& id, const std::string& user) {
  auto c = hub.Connect(port(), "/ws/" + endpoint + "?session=" + id, Auth(user));
  c->WaitOpen();
  return c;
}

}  // namespace parley::testing
