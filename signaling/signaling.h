// Parley signaling: one libwebsockets server on one port for HTTP and WebSocket.
//
// The server owns every `struct lws *`; the rest of Parley sees requests, connection ids and
// messages. All network I/O happens on the server's single service thread. The Handler's
// callbacks run on that thread and must return quickly; HTTP requests are instead handed to
// the WorkerPool, so a handler may block there (store reads, file reads). Anything may call
// Send()/Close()/Respond-style methods from any thread: they queue work for the service
// thread and wake it with lws_cancel_service().
#pragma once

#include <json/value.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/core.h"

namespace parley::signaling {

// RFC 6455 section 7.4.1 close codes Parley uses.
enum CloseCode : uint16_t {
  kCloseNormal = 1000,
  kCloseGoingAway = 1001,  // server shutdown, idle timeout
  kCloseProtocolError = 1002,
  kCloseUnsupportedData = 1003,
  kCloseInvalidPayload = 1007,   // text frame that is not UTF-8
  kClosePolicyViolation = 1008,  // slow consumer, session ended elsewhere
  kCloseMessageTooBig = 1009,
  kCloseInternalError = 1011,
  kCloseTryAgainLater = 1013,
};

struct ServerConfig {
  std::string bind_address = "0.0.0.0";
  int port = 8080;                       // 0 picks a free port; Server::port() tells which
  size_t max_message_bytes = 1 << 20;    // WebSocket message; larger closes with 1009
  size_t max_http_body_bytes = 1 << 20;  // larger is answered 413
  // POST bodies to these paths (exact) may be up to max_upload_bytes instead (recordings).
  std::vector<std::string> upload_paths;
  size_t max_upload_bytes = 64 << 20;
  double max_messages_per_s = 200;        // per WebSocket connection (token bucket rate)
  double message_burst = 400;             // token bucket depth
  int idle_timeout_s = 120;               // no message from the client for this long: close 1001
  int ping_interval_s = 20;               // no traffic for this long: the server sends a ping
  int pong_timeout_s = 10;                // ...and hangs up when nothing answers within this
  int max_connections_per_ip = 64;        // WebSocket connections from one address
  int max_connections = 4096;             // WebSocket connections in all
  size_t send_queue_max_bytes = 4 << 20;  // per connection; see docs/protocol.md
  // Origins allowed to open WebSockets and make CORS requests. Same-origin requests and
  // clients that send no Origin (non-browser programs) are always allowed; "*" allows any.
  std::vector<std::string> allowed_origins;
  std::string Validate() const;
  void AddFlags(core::FlagSet& flags);  // --bind, --port, limits...
};

struct AuthConfig {
  // HS256 secret. Empty: development mode, every request is the single local user.
  std::string jwt_secret_key;
  std::string dev_user_id = "local";
  int clock_leeway_s = 30;  // tolerated clock skew for exp/nbf
  std::string Validate() const;
  void AddFlags(core::FlagSet& flags);  // --jwt-secret-key
};

struct Identity {
  bool authenticated = false;
  std::string user_id;  // valid when authenticated
  std::string error;    // why authentication failed (empty when no credentials were sent)
};

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // decoded, without the query string
  std::map<std::string, std::string> query;
  std::map<std::string, std::string> headers;  // lower-case names; the ones Parley reads
  std::string body;
  std::string peer_ip;
  Identity identity;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;

  static HttpResponse Json(int status, const Json::Value& body);
  // {"error":{"code":code,"message":message}}
  static HttpResponse Error(int status, std::string_view code, std::string_view message);
};

using ConnectionId = uint64_t;

struct UpgradeRequest {
  std::string path;  // "/ws/practice"
  std::map<std::string, std::string> query;
  std::string origin;
  std::string peer_ip;
  Identity identity;
};

struct UpgradeDecision {
  bool accept = false;
  HttpResponse rejection;  // sent instead of 101 when !accept
  std::string tag;         // handler's own label for the connection (e.g. the session id)
  static UpgradeDecision Accept(std::string tag) { return {true, {}, std::move(tag)}; }
  static UpgradeDecision Reject(HttpResponse r) { return {false, std::move(r), {}}; }
};

struct OutMessage {
  bool binary = false;
  std::string data;
  // May be discarded when the client reads too slowly (live scores); others may not.
  bool droppable = false;
};

// Implemented by the application. Upgrade/Open/Message/Closed run on the service thread and
// must not block; HandleHttp runs on a worker thread.
class Handler {
 public:
  // Delivers a response; callable once, from any thread, at any time (the connection may be
  // gone by then: the response is dropped).
  using Responder = std::function<void(HttpResponse)>;
  virtual ~Handler() = default;
  virtual HttpResponse HandleHttp(const HttpRequest& request) = 0;
  // Runs on the service thread before a bodiless request is queued for a worker: answers that
  // take microseconds and must not wait behind any queue (a health check). nullopt: queue it.
  virtual std::optional<HttpResponse> HandleHttpNow(const HttpRequest&) { return std::nullopt; }
  // Runs on a worker like HandleHttp; a handler whose work takes long (an uploaded recording's
  // analysis) may hand `respond` to its own executor and return, freeing the worker. The
  // server lifts lws's own request timeout once a request is dispatched (an end may wait longer
  // than its 20 s), so every handler must bound its own time and answer in the end.
  virtual void HandleHttpAsync(HttpRequest request, Responder respond) {
    respond(HandleHttp(request));
  }
  virtual UpgradeDecision OnUpgrade(const UpgradeRequest& request) = 0;
  virtual void OnOpen(ConnectionId id, const UpgradeRequest& request, const std::string& tag) = 0;
  virtual void OnMessage(ConnectionId id, bool binary, std::string_view data) = 0;
  virtual void OnClosed(ConnectionId id, uint16_t close_code) = 0;
};

class Server {
 public:
  // Validates and verifies nothing; call the configs' Validate() first.
  Server(const ServerConfig& config, const AuthConfig& auth, Handler& handler,
         core::WorkerPool& pool, core::Logger& log, core::Metrics& metrics);
  ~Server();  // Stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts the service thread. False (and logs why) when the port cannot be bound.
  bool Start();
  int port() const;

  // Thread-safe; messages to a connection that is gone are dropped.
  void Send(ConnectionId id, OutMessage message);
  void SendJson(ConnectionId id, const Json::Value& message, bool droppable = false);
  void Close(ConnectionId id, uint16_t code, std::string reason);
  // Refuse new HTTP requests and upgrades with 503 from now on (shutdown has begun).
  void BeginDrain();
  // Close every WebSocket with `code`, wait up to `flush` for the close frames to leave.
  void CloseAll(uint16_t code, std::string reason, std::chrono::milliseconds flush);
  // Stops the service thread and destroys the lws context. Idempotent.
  void Stop();

  size_t websocket_count() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Verifies a JWT (HS256): signature, exp (required), nbf, and a non-empty sub.
Identity VerifyBearerToken(const AuthConfig& auth, std::string_view token);

// Static files from a web root: MIME types, index.html for directories, no listings, and no
// way out of the root (dot segments, encoded separators, symlinks pointing outside).
class StaticFiles {
 public:
  explicit StaticFiles(std::string root);
  // `path` is the decoded request path ("/app.js"). 404 JSON when missing or refused.
  HttpResponse Serve(std::string_view path, bool head_only = false) const;
  // The file the path maps to, or nullopt when it is outside the root or not a regular file.
  std::optional<std::string> Resolve(std::string_view path) const;

 private:
  std::string root_;  // canonical, no trailing slash
};

// MIME type for a file name by its extension ("application/octet-stream" when unknown).
std::string_view MimeTypeFor(std::string_view filename);

}  // namespace parley::signaling
