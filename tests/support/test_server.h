// An in-process Parley on an ephemeral port with a JWT secret, a temporary data directory and
// a temporary web root, for integration tests with real clients.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "app/app.h"
#include "tests/support/ws_client.h"

namespace parley::testing {

inline constexpr const char* kTestSecret = "parley-test-secret-0123456789abcdef";

// HS256 token for `sub` expiring `exp_in_s` from now, signed with `secret`.
std::string MintToken(const std::string& sub, long exp_in_s = 3600,
                      const std::string& secret = kTestSecret);

// A fresh empty directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class TestServer {
 public:
  explicit TestServer(const std::function<void(app::AppConfig&)>& tweak = {});
  ~TestServer();

  int port() const { return app_->port(); }
  std::string Url(const std::string& path) const;
  app::App& app() { return *app_; }
  const std::string& web_root() const { return web_.path(); }
  std::string Logs() const;

  Headers Auth(const std::string& user) const;
  // POST /api/sessions as `user`; returns the session id (empty on failure).
  std::string CreateSession(const std::string& user, const std::string& persona = "seoa");
  // Connects `user` to /ws/<endpoint>?session=<id> and waits for the handshake.
  std::shared_ptr<WsClient> Join(WsHub& hub, const std::string& endpoint, const std::string& id,
                                 const std::string& user);

 private:
  TempDir data_;
  TempDir web_;
  mutable std::mutex log_mu_;
  std::string logs_;
  std::unique_ptr<core::Logger> log_;
  std::unique_ptr<app::App> app_;
};

}  // namespace parley::testing
