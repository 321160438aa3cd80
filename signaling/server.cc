// The libwebsockets server: one protocol callback handling HTTP and WebSocket, following the
// shape of lws' minimal examples. Every lws call except lws_cancel_service() happens on the
// service thread; other threads talk to it through the Mailbox.
#include <libwebsockets.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <variant>

#include "signaling/front_door.h"
#include "signaling/signaling.h"

namespace parley::signaling {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kHttpChunk = 16 * 1024;
// How much of a body refused for its size is still read (and thrown away) so that the client,
// still sending it, gets the 413 instead of a reset connection; beyond, it is answered at once.
constexpr size_t kMaxDiscardedBody = 16 << 20;
constexpr int kRateErrorIntervalS = 1;         // at most one rate_limited event per interval
constexpr size_t kKeepRxCapacity = 64 * 1024;  // larger receive buffers are not kept

// lws logs through a plain function pointer with no user data; this one keeps no state and
// writes the same JSON-lines shape as core::Logger so the output stays machine-readable.
void EmitLwsLog(int level, const char* line) {
  std::string text(line);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  core::WriteStderrLogLine((level & LLL_ERR) ? core::LogLevel::kError : core::LogLevel::kWarn,
                           "libwebsockets", {{"detail", text}});
}

std::string HeaderCopy(lws* wsi, lws_token_indexes token) {
  const int len = lws_hdr_total_length(wsi, token);
  if (len <= 0) return {};
  std::string out(static_cast<size_t>(len) + 1, '\0');
  const int n = lws_hdr_copy(wsi, out.data(), len + 1, token);
  if (n < 0) return {};
  out.resize(static_cast<size_t>(n));
  return out;
}

std::map<std::string, std::string> QueryArgs(lws* wsi) {
  std::map<std::string, std::string> out;
  for (int i = 0; i < 32; ++i) {
    const int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
    if (len <= 0) break;
    std::string frag(static_cast<size_t>(len) + 1, '\0');
    const int n = lws_hdr_copy_fragment(wsi, frag.data(), len + 1, WSI_TOKEN_HTTP_URI_ARGS, i);
    if (n < 0) break;
    frag.resize(static_cast<size_t>(n));
    const size_t eq = frag.find('=');
    if (eq == std::string::npos) {
      out.emplace(frag, "");
    } else {
      out.emplace(frag.substr(0, eq), frag.substr(eq + 1));
    }
  }
  return out;
}

std::string PeerIp(lws* wsi) {
  char buf[64] = {0};
  lws_get_peer_simple(wsi, buf, sizeof buf);
  std::string ip(buf);
  // IPv4-mapped IPv6 addresses count as their IPv4 address for per-IP limits.
  if (ip.rfind("::ffff:", 0) == 0) ip = ip.substr(7);
  return ip;
}

// A Sec-WebSocket-Key is a base64-encoded 16-byte nonce: 22 base64 characters and "==".
bool IsWebSocketKey(const std::string& key) {
  // Checked by hand: lws's decoder reads a character outside the alphabet as zero bits.
  static constexpr std::string_view kBase64 =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  if (key.size() != 24 || key.compare(22, 2, "==") != 0) return false;
  for (size_t i = 0; i < 22; ++i) {
    const size_t v = kBase64.find(key[i]);
    if (v == std::string_view::npos) return false;
    if (i == 21 && (v & 0x0F) != 0) return false;  // the last 4 bits are padding
  }
  return true;
}

std::string_view MethodName(int m) {
  switch (m) {
    case LWSHUMETH_GET:
      return "GET";
    case LWSHUMETH_POST:
      return "POST";
    case LWSHUMETH_OPTIONS:
      return "OPTIONS";
    case LWSHUMETH_PUT:
      return "PUT";
    case LWSHUMETH_PATCH:
      return "PATCH";
    case LWSHUMETH_DELETE:
      return "DELETE";
    case LWSHUMETH_HEAD:
      return "HEAD";
    default:
      return "";
  }
}

// "/ws/practice" -> "practice" for metric labels; anything unexpected is "other".
std::string EndpointLabel(const std::string& path) {
  if (path == "/ws/practice") return "practice";
  if (path == "/ws/landmarks") return "landmarks";
  return "other";
}

}  // namespace

std::string ServerConfig::Validate() const {
  if (port < 0 || port > 65535) return "port must be 0..65535";
  if (bind_address.empty()) return "bind address must not be empty";
  if (max_message_bytes < 1024 || max_message_bytes > (256u << 20))
    return "max message size must be 1 KiB..256 MiB";
  if (max_http_body_bytes < 1024 || max_http_body_bytes > (256u << 20))
    return "max HTTP body size must be 1 KiB..256 MiB";
  if (max_upload_bytes < 1024 || max_upload_bytes > (1u << 30))
    return "max upload size must be 1 KiB..1 GiB";
  if (!(max_messages_per_s >= 1 && max_messages_per_s <= 1e6))
    return "max messages per second must be 1..1000000";
  if (!(message_burst >= 1 && message_burst <= 1e7)) return "message burst must be 1..10000000";
  if (idle_timeout_s < 1 || idle_timeout_s > 86400) return "idle timeout must be 1..86400 s";
  if (ping_interval_s < 1 || ping_interval_s > 3600) return "ping interval must be 1..3600 s";
  if (pong_timeout_s < 1 || pong_timeout_s > 3600) return "pong timeout must be 1..3600 s";
  if (max_connections_per_ip < 1) return "max connections per IP must be at least 1";
  if (max_connections < 1) return "max connections must be at least 1";
  if (send_queue_max_bytes < 64 * 1024) return "send queue limit must be at least 64 KiB";
  for (const auto& o : allowed_origins) {
    if (o != "*" && o.rfind("http://", 0) != 0 && o.rfind("https://", 0) != 0)
      return "allowed origin '" + o + "' must be \"*\" or start with http:// or https://";
  }
  return {};
}

HttpResponse HttpResponse::Json(int status, const Json::Value& body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/json";
  r.body = core::ToJson(body);
  return r;
}

HttpResponse HttpResponse::Error(int status, std::string_view code, std::string_view message) {
  Json::Value err(Json::objectValue);
  err["error"]["code"] = std::string(code);
  err["error"]["message"] = std::string(message);
  HttpResponse r = Json(status, err);
  r.headers.emplace_back("x-parley-error", std::string(code));
  return r;
}

// ---------------------------------------------------------------------------------------------
// Mailbox: the only state other threads touch. Tasks on the worker pool hold a shared_ptr to
// it, so a response finishing after the server stopped is dropped instead of touching a
// destroyed lws context.

struct SendCmd {
  ConnectionId id;
  OutMessage message;
};
struct CloseCmd {
  ConnectionId id;
  uint16_t code;
  std::string reason;
};
struct HttpDoneCmd {
  ConnectionId id;
  uint64_t seq;
  HttpResponse response;
};
struct CloseAllCmd {
  uint16_t code;
  std::string reason;
};
// A connection the front door accepted (its first request head sound, unread); closed unless
// lws adopts it.
struct AdoptCmd {
  struct Fd {
    int fd = -1;
    explicit Fd(int f) : fd(f) {}
    Fd(Fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
      if (this != &o) {
        if (fd >= 0) ::close(fd);
        fd = std::exchange(o.fd, -1);
      }
      return *this;
    }
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
    int Release() { return std::exchange(fd, -1); }
  } fd;
};
using Command = std::variant<SendCmd, CloseCmd, HttpDoneCmd, CloseAllCmd, AdoptCmd>;

class Mailbox {
 public:
  void Post(Command c) {
    const std::lock_guard lock(mu_);
    if (context_ == nullptr) return;  // server stopped: nobody to deliver to
    const bool wake = commands_.empty();
    commands_.push_back(std::move(c));
    if (wake) lws_cancel_service(context_);
  }
  std::vector<Command> Take() {
    const std::lock_guard lock(mu_);
    std::vector<Command> out;
    out.swap(commands_);
    return out;
  }
  void Attach(lws_context* ctx) {
    const std::lock_guard lock(mu_);
    context_ = ctx;
  }
  void Wake() {
    const std::lock_guard lock(mu_);
    if (context_ != nullptr) lws_cancel_service(context_);
  }

 private:
  std::mutex mu_;
  lws_context* context_ = nullptr;
  std::vector<Command> commands_;
};

// ---------------------------------------------------------------------------------------------

struct Server::Impl {
  struct Conn {
    ConnectionId id = 0;
    lws* wsi = nullptr;
    std::string peer_ip;
    // HTTP transaction in progress.
    uint64_t http_seq = 0;
    HttpRequest request;
    bool expecting_body = false;
    bool body_rejected = false;
    // A body refused for its size is still read and thrown away (up to kMaxDiscardedBody), and
    // this answer sent once it is all in: closing on a client still sending makes the kernel
    // reset the connection, which can destroy the answer before the client reads it.
    std::optional<HttpResponse> refusal;
    size_t body_discarded = 0;
    std::optional<HttpResponse> response;
    bool response_head_only = false;
    bool response_close = false;
    bool headers_sent = false;
    size_t body_sent = 0;
    std::string cors_origin;
    // WebSocket.
    bool is_ws = false;
    bool opened = false;   // Handler::OnOpen was called
    bool counted = false;  // holds a slot in the per-IP and global counts
    UpgradeRequest upgrade;
    std::string tag;
    std::string endpoint = "other";
    // Per-endpoint counters, looked up once at upgrade (the per-message path takes no lock).
    core::Counter* messages_in = nullptr;
    core::Counter* bytes_in = nullptr;
    core::Counter* messages_out = nullptr;
    core::Counter* bytes_out = nullptr;
    std::string rx;
    bool rx_binary = false;
    struct Queued {
      bool binary;
      std::vector<unsigned char> buf;  // LWS_PRE bytes of headroom, then the payload
    };
    std::deque<Queued> sendq;
    size_t sendq_bytes = 0;
    std::optional<std::pair<uint16_t, std::string>> close_pending;
    uint16_t close_code = 1006;  // no close frame seen (RFC 6455 7.1.5)
    Clock::time_point last_rx;
    double tokens = 0;
    Clock::time_point last_refill;
    Clock::time_point last_rate_error;
  };

  Impl(const ServerConfig& c, const AuthConfig& a, Handler& h, core::WorkerPool& p, core::Logger& l,
       core::Metrics& m)
      : config(c), auth(a), handler(h), pool(p), log(l), metrics(m) {
    retry.secs_since_valid_ping = static_cast<uint16_t>(config.ping_interval_s);
    retry.secs_since_valid_hangup =
        static_cast<uint16_t>(config.ping_interval_s + config.pong_timeout_s);
    protocols[0] = {"parley", &Impl::Callback, 0, 64 * 1024, 0, nullptr, 0};
    protocols[1] = {nullptr, nullptr, 0, 0, 0, nullptr, 0};
    metrics.AddGaugeCallback("parley_connections", "Open connections by kind", {{"kind", "http"}},
                             [this] { return static_cast<double>(http_conns.load()); });
    metrics.AddGaugeCallback("parley_connections", "Open connections by kind",
                             {{"kind", "websocket"}},
                             [this] { return static_cast<double>(ws_conns.load()); });
  }

  // ---- helpers ------------------------------------------------------------------------------

  core::Counter& Count(const std::string& name, const std::string& help, core::Labels labels) {
    return metrics.GetCounter(name, help, labels);
  }

  Identity Authenticate(lws* wsi, const std::map<std::string, std::string>* query) {
    if (auth.jwt_secret_key.empty()) return VerifyBearerToken(auth, "");
    std::string authz = HeaderCopy(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    std::string token;
    if (!authz.empty()) {
      if (authz.size() > 7 && strncasecmp(authz.c_str(), "Bearer ", 7) == 0) {
        token = authz.substr(7);
      } else {
        return Identity{false, {}, "Authorization header must be 'Bearer <token>'"};
      }
    } else if (query != nullptr) {
      if (const auto it = query->find("token"); it != query->end()) token = it->second;
    }
    if (token.empty()) return Identity{false, {}, {}};
    return VerifyBearerToken(auth, token);
  }

  bool OriginAllowed(const std::string& origin, const std::string& host) const {
    if (origin.empty()) return true;  // not a browser: nothing to protect against
    if (origin == "http://" + host || origin == "https://" + host) return true;  // same origin
    for (const auto& o : config.allowed_origins) {
      if (o == "*" || o == origin) return true;
    }
    return false;
  }

  Conn* ConnFor(lws* wsi, bool create) {
    if (const auto it = by_wsi.find(wsi); it != by_wsi.end()) return it->second;
    if (!create) return nullptr;
    auto conn = std::make_unique<Conn>();
    conn->id = ++next_id;
    conn->wsi = wsi;
    conn->peer_ip = PeerIp(wsi);
    Conn* raw = conn.get();
    by_wsi[wsi] = raw;
    by_id[raw->id] = std::move(conn);
    http_conns++;
    return raw;
  }

  Conn* ConnById(ConnectionId id) {
    const auto it = by_id.find(id);
    return it == by_id.end() ? nullptr : it->second.get();
  }

  void Forget(lws* wsi) {
    const auto it = by_wsi.find(wsi);
    if (it == by_wsi.end()) return;
    Conn* c = it->second;
    if (c->opened) {
      c->opened = false;
      handler.OnClosed(c->id, c->close_code);
      Count("parley_ws_closes_total", "WebSocket closes by close code",
            {{"code", std::to_string(c->close_code)}})
          .Add();
    }
    Release(c);
    if (c->is_ws) {
      ws_conns--;
    } else {
      http_conns--;
    }
    const ConnectionId id = c->id;
    by_wsi.erase(it);
    by_id.erase(id);
  }

  void Release(Conn* c) {
    if (!c->counted) return;
    c->counted = false;
    if (auto it = per_ip.find(c->peer_ip); it != per_ip.end() && --it->second <= 0)
      per_ip.erase(it);
  }

  // ---- HTTP ---------------------------------------------------------------------------------

  void Respond(Conn* c, HttpResponse r, bool close_after = false) {
    c->response = std::move(r);
    c->response_close = close_after;
    c->headers_sent = false;
    c->body_sent = 0;
    lws_callback_on_writable(c->wsi);
  }

  void CountHttp(const HttpRequest& req, const HttpResponse& r) {
    Count("parley_http_requests_total", "HTTP requests by route and status",
          {{"route", RouteLabel(req, r)}, {"status", std::to_string(r.status)}})
        .Add();
    for (const auto& [k, v] : r.headers) {
      if (k == "x-parley-error")
        Count("parley_errors_total", "Error responses and events by code", {{"code", v}}).Add();
    }
  }

  static std::string RouteLabel(const HttpRequest& req, const HttpResponse& r) {
    for (const auto& [k, v] : r.headers) {
      if (k == "x-parley-route") return v;
    }
    return req.path.rfind("/api/", 0) == 0 ? "/api/other" : "static";
  }

  int OnHttp(lws* wsi) {
    Conn* c = ConnFor(wsi, true);
    c->http_seq++;
    c->request = HttpRequest{};
    c->expecting_body = false;
    c->body_rejected = false;
    c->refusal.reset();
    c->body_discarded = 0;
    c->response.reset();
    char* uri = nullptr;
    int uri_len = 0;
    const int method = lws_http_get_uri_and_method(wsi, &uri, &uri_len);
    HttpRequest& req = c->request;
    req.method = std::string(MethodName(method));
    req.path = uri_len > 0 ? std::string(uri, static_cast<size_t>(uri_len)) : "/";
    req.query = QueryArgs(wsi);
    req.peer_ip = c->peer_ip;
    const std::string origin = HeaderCopy(wsi, WSI_TOKEN_ORIGIN);
    const std::string host = HeaderCopy(wsi, WSI_TOKEN_HOST);
    if (!origin.empty()) req.headers["origin"] = origin;
    if (!host.empty()) req.headers["host"] = host;
    if (auto ct = HeaderCopy(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE); !ct.empty())
      req.headers["content-type"] = ct;
    if (auto accept = HeaderCopy(wsi, WSI_TOKEN_HTTP_ACCEPT); !accept.empty())
      req.headers["accept"] = accept;
    c->cors_origin = (!origin.empty() && OriginAllowed(origin, host)) ? origin : "";
    if (req.method == "HEAD") c->response_head_only = true;

    if (req.method.empty()) {
      return Finish(c, HttpResponse::Error(405, "method_not_allowed", "unsupported HTTP method"));
    }
    if (draining) {
      return Finish(c, HttpResponse::Error(503, "shutting_down", "the server is shutting down"));
    }
    if (req.method == "OPTIONS") return Preflight(c, origin, host);
    req.identity = Authenticate(wsi, nullptr);

    const std::string length = HeaderCopy(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
    const bool chunked = !HeaderCopy(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING).empty();
    if (!length.empty()) {
      char* end = nullptr;
      const unsigned long long n = std::strtoull(length.c_str(), &end, 10);
      if (end == length.c_str() || *end != '\0') {
        return Finish(c, HttpResponse::Error(400, "bad_request", "invalid Content-Length"), true);
      }
      if (n > BodyLimit(req)) {
        if (n - BodyLimit(req) > kMaxDiscardedBody) return Finish(c, TooLarge(req), true);
        return Refuse(c, TooLarge(req));  // answered once the body is in
      }
      c->expecting_body = n > 0;
    } else if (chunked) {
      c->expecting_body = true;
    }
    if (c->expecting_body) return 0;  // wait for LWS_CALLBACK_HTTP_BODY_COMPLETION
    if (auto now = handler.HandleHttpNow(req)) return Finish(c, std::move(*now));
    Dispatch(c);
    return 0;
  }

  // Recordings may be larger than other bodies (ServerConfig::upload_paths).
  bool IsUpload(const HttpRequest& req) const {
    return req.method == "POST" && std::find(config.upload_paths.begin(), config.upload_paths.end(),
                                             req.path) != config.upload_paths.end();
  }
  size_t BodyLimit(const HttpRequest& req) const {
    return IsUpload(req) ? config.max_upload_bytes : config.max_http_body_bytes;
  }

  HttpResponse TooLarge(const HttpRequest& req) const {
    return HttpResponse::Error(413, "payload_too_large",
                               "request body exceeds " + std::to_string(BodyLimit(req)) + " bytes");
  }

  int Preflight(Conn* c, const std::string& origin, const std::string& host) {
    HttpResponse r;
    r.status = origin.empty() || OriginAllowed(origin, host) ? 204 : 403;
    r.content_type = "text/plain";
    if (r.status == 204) {
      r.headers.emplace_back("access-control-allow-methods", "GET, POST, DELETE, OPTIONS");
      r.headers.emplace_back("access-control-allow-headers", "authorization, content-type");
      r.headers.emplace_back("access-control-max-age", "600");
    }
    return Finish(c, std::move(r));
  }

  // Answers on the service thread (no handler involved).
  int Finish(Conn* c, HttpResponse r, bool close_after = false) {
    CountHttp(c->request, r);
    Respond(c, std::move(r), close_after);
    return 0;
  }

  void Dispatch(Conn* c) {
    const ConnectionId id = c->id;
    const uint64_t seq = c->http_seq;
    auto box = mailbox;
    Handler* h = &handler;
    // lws would drop the connection unanswered once its request timeout (20 s) passes while
    // the worker runs: an end waiting for its last transcripts and the report's rewrite, an
    // upload's analysis. Every handler bounds its own time and always answers.
    lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
    // The body is not needed here any more (an upload may be tens of MiB): moved, not copied.
    HttpRequest req = std::move(c->request);
    c->request = HttpRequest{req.method, req.path, {}, {}, {}, req.peer_ip, {}};
    const bool ok = pool.TrySubmit([box, h, id, seq, req = std::move(req)]() mutable {
      auto respond = [box, id, seq](HttpResponse r) {
        box->Post(HttpDoneCmd{id, seq, std::move(r)});
      };
      try {
        h->HandleHttpAsync(std::move(req), respond);
      } catch (const std::exception& e) {
        respond(HttpResponse::Error(500, "internal_error", "the request failed inside the server"));
      }
    });
    if (!ok) Finish(c, HttpResponse::Error(503, "overloaded", "the server is busy; retry shortly"));
  }

  // Refuses the request in progress: its body is read and discarded, then `r` is sent.
  int Refuse(Conn* c, HttpResponse r) {
    c->body_rejected = true;
    c->expecting_body = true;
    c->request.body.clear();
    c->request.body.shrink_to_fit();
    c->refusal = std::move(r);
    return 0;
  }

  int OnHttpBody(lws* wsi, const char* in, size_t len) {
    Conn* c = ConnFor(wsi, false);
    if (c == nullptr) return 0;
    if (c->body_rejected) {
      c->body_discarded += len;
      // More than is worth reading: answer now (the client may see a reset instead).
      if (c->refusal && c->body_discarded > kMaxDiscardedBody) {
        HttpResponse r = std::move(*c->refusal);
        c->refusal.reset();
        return Finish(c, std::move(r), true);
      }
      return 0;
    }
    // Without a Content-Length (chunked) lws reports no completion we could wait for: answer
    // at once.
    if (c->request.body.size() + len > BodyLimit(c->request)) {
      c->body_rejected = true;
      return Finish(c, TooLarge(c->request), true);
    }
    c->request.body.append(in, len);
    return 0;
  }

  int OnHttpBodyComplete(lws* wsi) {
    Conn* c = ConnFor(wsi, false);
    if (c != nullptr && c->refusal) {  // the refused body is all in: the answer can go
      HttpResponse r = std::move(*c->refusal);
      c->refusal.reset();
      c->expecting_body = false;
      return Finish(c, std::move(r), true);
    }
    // lws also reports completion for bodies it was told are empty; those were dispatched.
    if (c == nullptr || c->body_rejected || !c->expecting_body) return 0;
    c->expecting_body = false;
    Dispatch(c);
    return 0;
  }

  // Writes the status line and headers of `r` (security, CORS and its own headers).
  static bool WriteHeaders(lws* wsi, const HttpResponse& r, const std::string& cors_origin,
                           bool close_after) {
    std::vector<unsigned char> buf(LWS_PRE + 4096 + r.headers.size() * 256);
    unsigned char* start = buf.data() + LWS_PRE;
    unsigned char* p = start;
    unsigned char* end = buf.data() + buf.size() - 1;
    if (lws_add_http_common_headers(wsi, static_cast<unsigned int>(r.status),
                                    r.content_type.c_str(), r.body.size(), &p, end) != 0)
      return false;
    auto add = [&](const std::string& name, const std::string& value) {
      const std::string n = name + ":";
      return lws_add_http_header_by_name(wsi, reinterpret_cast<const unsigned char*>(n.c_str()),
                                         reinterpret_cast<const unsigned char*>(value.data()),
                                         static_cast<int>(value.size()), &p, end) == 0;
    };
    bool ok = add("x-content-type-options", "nosniff") && add("referrer-policy", "no-referrer");
    if (!cors_origin.empty()) {
      ok = ok && add("access-control-allow-origin", cors_origin) && add("vary", "Origin") &&
           add("access-control-expose-headers", "content-disposition");
    }
    for (const auto& [k, v] : r.headers) {
      if (k == "x-parley-route" || k == "x-parley-error") continue;  // metric labels only
      ok = ok && add(k, v);
    }
    if (close_after) ok = ok && add("connection", "close");
    return ok && lws_finalize_write_http_header(wsi, start, &p, end) == 0;
  }

  // Writes up to `max` bytes of the body from `offset`; FINAL on the last chunk.
  static bool WriteBodyChunk(lws* wsi, const std::string& body, size_t offset, size_t max) {
    const size_t n = std::min(max, body.size() - offset);
    std::vector<unsigned char> buf(LWS_PRE + n);
    std::memcpy(buf.data() + LWS_PRE, body.data() + offset, n);
    const bool last = offset + n == body.size();
    return lws_write(wsi, buf.data() + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) ==
           static_cast<int>(n);
  }

  int OnHttpWriteable(lws* wsi) {
    Conn* c = ConnFor(wsi, false);
    if (c == nullptr || !c->response) return 0;
    HttpResponse& r = *c->response;
    const bool head_only = c->response_head_only || r.status == 204 || r.status == 304;
    if (!c->headers_sent) {
      if (!WriteHeaders(wsi, r, c->cors_origin, c->response_close)) return -1;
      c->headers_sent = true;
      if (!head_only && !r.body.empty()) {
        lws_callback_on_writable(wsi);
        return 0;
      }
    } else if (!head_only && c->body_sent < r.body.size()) {
      if (!WriteBodyChunk(wsi, r.body, c->body_sent, kHttpChunk)) return -1;
      c->body_sent = std::min(r.body.size(), c->body_sent + kHttpChunk);
      if (c->body_sent < r.body.size()) {
        lws_callback_on_writable(wsi);
        return 0;
      }
    }
    // Transaction done.
    const bool close_after = c->response_close;
    c->response.reset();
    c->response_head_only = false;
    if (close_after) return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
  }

  // Writes a whole (small) response during the upgrade handshake; CONFIRM_UPGRADE returns 1.
  static int RejectUpgrade(lws* wsi, const HttpResponse& r, const std::string& cors_origin) {
    if (!WriteHeaders(wsi, r, cors_origin, true)) return -1;
    if (!r.body.empty() && !WriteBodyChunk(wsi, r.body, 0, r.body.size())) return -1;
    return 1;
  }

  // ---- WebSocket ----------------------------------------------------------------------------

  int OnConfirmUpgrade(lws* wsi) {
    Conn* c = ConnFor(wsi, true);
    char* uri = nullptr;
    int uri_len = 0;
    if (lws_http_get_uri_and_method(wsi, &uri, &uri_len) != LWSHUMETH_GET) return -1;
    UpgradeRequest up;
    up.path = std::string(uri, static_cast<size_t>(std::max(uri_len, 0)));
    up.query = QueryArgs(wsi);
    up.origin = HeaderCopy(wsi, WSI_TOKEN_ORIGIN);
    up.peer_ip = c->peer_ip;
    const std::string host = HeaderCopy(wsi, WSI_TOKEN_HOST);
    const std::string cors = OriginAllowed(up.origin, host) ? up.origin : "";
    HttpRequest for_metrics;
    for_metrics.path = up.path;

    auto reject = [&](HttpResponse r) {
      r.headers.emplace_back("x-parley-route", "upgrade");
      CountHttp(for_metrics, r);
      return RejectUpgrade(wsi, r, cors);
    };
    if (draining)
      return reject(HttpResponse::Error(503, "shutting_down", "the server is shutting down"));
    // RFC 6455 §4.2.1/§4.4; checked here because lws would accept hybi-08 and drop a keyless
    // handshake without an answer.
    if (HeaderCopy(wsi, WSI_TOKEN_VERSION) != "13") {
      HttpResponse r = HttpResponse::Error(426, "unsupported_websocket_version",
                                           "only Sec-WebSocket-Version 13 is supported");
      r.headers.emplace_back("sec-websocket-version", "13");
      return reject(std::move(r));
    }
    if (!IsWebSocketKey(HeaderCopy(wsi, WSI_TOKEN_KEY)))
      return reject(HttpResponse::Error(
          400, "bad_websocket_key", "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455)"));
    if (!OriginAllowed(up.origin, host))
      return reject(HttpResponse::Error(403, "origin_not_allowed",
                                        "origin '" + up.origin + "' is not in ALLOWED_ORIGINS"));
    if (ws_conns.load() >= config.max_connections)
      return reject(HttpResponse::Error(503, "too_many_connections",
                                        "the server has reached its connection limit"));
    if (per_ip[c->peer_ip] >= config.max_connections_per_ip)
      return reject(HttpResponse::Error(429, "too_many_connections_from_address",
                                        "too many WebSocket connections from this address"));
    up.identity = Authenticate(wsi, &up.query);
    UpgradeDecision d = handler.OnUpgrade(up);
    if (!d.accept) return reject(std::move(d.rejection));

    c->is_ws = true;
    c->counted = true;
    per_ip[c->peer_ip]++;
    http_conns--;
    ws_conns++;
    c->endpoint = EndpointLabel(up.path);
    auto counter = [&](const char* name, const char* help, const char* direction) {
      return &Count(name, help, {{"endpoint", c->endpoint}, {"direction", direction}});
    };
    c->messages_in =
        counter("parley_ws_messages_total", "WebSocket messages by endpoint and direction", "in");
    c->messages_out =
        counter("parley_ws_messages_total", "WebSocket messages by endpoint and direction", "out");
    c->bytes_in =
        counter("parley_ws_bytes_total", "WebSocket payload bytes by endpoint and direction", "in");
    c->bytes_out = counter("parley_ws_bytes_total",
                           "WebSocket payload bytes by endpoint and direction", "out");
    c->upgrade = std::move(up);
    c->tag = std::move(d.tag);
    return 0;
  }

  void OnEstablished(lws* wsi) {
    Conn* c = ConnFor(wsi, false);
    if (c == nullptr || !c->is_ws) return;
    const auto now = Clock::now();
    c->last_rx = now;
    c->last_refill = now;
    c->tokens = config.message_burst;
    c->opened = true;
    Count("parley_ws_connections_total", "WebSocket connections accepted by endpoint",
          {{"endpoint", c->endpoint}})
        .Add();
    handler.OnOpen(c->id, c->upgrade, c->tag);
  }

  bool TakeToken(Conn* c, Clock::time_point now) {
    const double elapsed = std::chrono::duration<double>(now - c->last_refill).count();
    c->last_refill = now;
    c->tokens = std::min(config.message_burst, c->tokens + elapsed * config.max_messages_per_s);
    if (c->tokens < 1.0) return false;
    c->tokens -= 1.0;
    return true;
  }

  int OnReceive(lws* wsi, const char* in, size_t len) {
    Conn* c = ConnFor(wsi, false);
    if (c == nullptr || !c->opened) return -1;
    if (lws_is_first_fragment(wsi)) {
      c->rx.clear();
      c->rx_binary = lws_frame_is_binary(wsi) != 0;
    }
    const size_t incoming = c->rx.size() + len + lws_remaining_packet_payload(wsi);
    if (incoming > config.max_message_bytes) {
      Count("parley_ws_rejected_total", "WebSocket messages refused by reason",
            {{"reason", "too_big"}})
          .Add();
      const std::string reason =
          "message exceeds " + std::to_string(config.max_message_bytes) + " bytes";
      c->close_code = kCloseMessageTooBig;
      lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                       reinterpret_cast<unsigned char*>(const_cast<char*>(reason.data())),
                       reason.size());
      return -1;
    }
    c->rx.append(in, len);
    if (!lws_is_final_fragment(wsi)) return 0;

    const auto now = Clock::now();
    c->last_rx = now;
    c->messages_in->Add();
    c->bytes_in->Add(static_cast<double>(c->rx.size()));
    if (!TakeToken(c, now)) {
      Count("parley_ws_rejected_total", "WebSocket messages refused by reason",
            {{"reason", "rate_limited"}})
          .Add();
      if (now - c->last_rate_error >= std::chrono::seconds(kRateErrorIntervalS)) {
        c->last_rate_error = now;
        Json::Value err(Json::objectValue);
        err["type"] = "error";
        err["error"]["code"] = "rate_limited";
        err["error"]["message"] = "more than " +
                                  std::to_string(static_cast<int>(config.max_messages_per_s)) +
                                  " messages/s: messages are being dropped";
        Count("parley_errors_total", "Error responses and events by code",
              {{"code", "rate_limited"}})
            .Add();
        Enqueue(c, OutMessage{false, core::ToJson(err), true});
      }
      c->rx.clear();
      return 0;
    }
    // UTF-8 is checked here rather than by lws (which walks the text byte by byte): simdjson's
    // validator picks the CPU's vector unit at run time, ~20x faster on an 11 KB landmark frame.
    if (!c->rx_binary && !simdjson::validate_utf8(c->rx)) {
      Count("parley_ws_rejected_total", "WebSocket messages refused by reason",
            {{"reason", "invalid_utf8"}})
          .Add();
      static constexpr char kReason[] = "text message is not valid UTF-8";
      c->close_code = kCloseInvalidPayload;
      lws_close_reason(wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD,
                       reinterpret_cast<unsigned char*>(const_cast<char*>(kReason)),
                       sizeof kReason - 1);
      return -1;
    }
    // The buffer is reused for the next message (the handler only borrows it).
    handler.OnMessage(c->id, c->rx_binary, c->rx);
    if (c->rx.capacity() > kKeepRxCapacity) c->rx = std::string();
    c->rx.clear();
    return 0;
  }

  void Enqueue(Conn* c, OutMessage m) {
    if (!c->is_ws || !c->opened || c->close_pending) return;
    const size_t size = m.data.size();
    if (m.droppable && c->sendq_bytes + size > config.send_queue_max_bytes / 2) {
      Count("parley_ws_dropped_total", "Outgoing messages dropped for slow consumers", {}).Add();
      return;
    }
    if (c->sendq_bytes + size > config.send_queue_max_bytes) {
      Count("parley_ws_slow_consumer_closes_total",
            "Connections closed because their send queue overflowed", {})
          .Add();
      c->sendq.clear();
      c->sendq_bytes = 0;
      c->close_pending = {kClosePolicyViolation, "slow consumer: send queue overflow"};
      lws_callback_on_writable(c->wsi);
      return;
    }
    Conn::Queued q{m.binary, std::vector<unsigned char>(LWS_PRE + size)};
    std::memcpy(q.buf.data() + LWS_PRE, m.data.data(), size);
    c->sendq.push_back(std::move(q));
    c->sendq_bytes += size;
    lws_callback_on_writable(c->wsi);
  }

  int OnServerWriteable(lws* wsi) {
    Conn* c = ConnFor(wsi, false);
    if (c == nullptr) return -1;
    if (!c->sendq.empty()) {
      Conn::Queued q = std::move(c->sendq.front());
      c->sendq.pop_front();
      const size_t n = q.buf.size() - LWS_PRE;
      c->sendq_bytes -= n;
      const int wrote =
          lws_write(wsi, q.buf.data() + LWS_PRE, n, q.binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
      if (wrote < static_cast<int>(n)) return -1;
      c->messages_out->Add();
      c->bytes_out->Add(static_cast<double>(n));
      if (!c->sendq.empty() || c->close_pending) lws_callback_on_writable(wsi);
      return 0;
    }
    if (c->close_pending) {
      auto& [code, reason] = *c->close_pending;
      c->close_code = code;
      lws_close_reason(wsi, static_cast<lws_close_status>(code),
                       reinterpret_cast<unsigned char*>(reason.data()), reason.size());
      return -1;
    }
    return 0;
  }

  void OnPeerClose(lws* wsi, const unsigned char* in, size_t len) {
    Conn* c = ConnFor(wsi, false);
    if (c == nullptr) return;
    c->close_code = len >= 2 ? static_cast<uint16_t>((in[0] << 8) | in[1]) : uint16_t{kCloseNormal};
  }

  void CloseConn(Conn* c, uint16_t code, std::string reason) {
    if (!c->is_ws || c->close_pending) return;
    c->close_pending = {code, std::move(reason)};
    lws_callback_on_writable(c->wsi);
  }

  // ---- service-thread plumbing ----------------------------------------------------------------

  void DrainMailbox() {
    for (Command& cmd : mailbox->Take()) {
      std::visit(
          [this](auto& m) {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, SendCmd>) {
              if (Conn* c = ConnById(m.id)) Enqueue(c, std::move(m.message));
            } else if constexpr (std::is_same_v<T, CloseCmd>) {
              if (Conn* c = ConnById(m.id)) CloseConn(c, m.code, std::move(m.reason));
            } else if constexpr (std::is_same_v<T, HttpDoneCmd>) {
              Conn* c = ConnById(m.id);
              if (c == nullptr || c->http_seq != m.seq) return;  // client went away meanwhile
              CountHttp(c->request, m.response);
              Respond(c, std::move(m.response));
            } else if constexpr (std::is_same_v<T, CloseAllCmd>) {
              for (auto& [id, conn] : by_id) CloseConn(conn.get(), m.code, m.reason);
            } else if constexpr (std::is_same_v<T, AdoptCmd>) {
              // lws closes the fd itself when it cannot adopt it.
              lws_adopt_socket_vhost(vhost, m.fd.Release());
            }
          },
          cmd);
    }
  }

  static void Housekeeping(lws_sorted_usec_list_t* sul) {
    // `sul` is the first member of the standard-layout HousekeepingTimer.
    Impl* self = reinterpret_cast<HousekeepingTimer*>(sul)->owner;
    const auto now = Clock::now();
    const auto idle = std::chrono::seconds(self->config.idle_timeout_s);
    for (auto& [id, c] : self->by_id) {
      if (c->opened && !c->close_pending && now - c->last_rx > idle) {
        self->Count("parley_ws_idle_closes_total", "WebSocket connections closed for idleness", {})
            .Add();
        self->CloseConn(c.get(), kCloseGoingAway, "idle timeout");
      }
    }
    lws_sul_schedule(self->context, 0, &self->housekeeping.sul, &Impl::Housekeeping,
                     LWS_US_PER_SEC);
  }

  static int Callback(lws* wsi, lws_callback_reasons reason, void* /*user*/, void* in, size_t len) {
    if (wsi == nullptr) return 0;
    lws_context* ctx = lws_get_context(wsi);
    auto* self = static_cast<Impl*>(lws_context_user(ctx));
    if (self == nullptr) return 0;
    switch (reason) {
      case LWS_CALLBACK_HTTP:
        return self->OnHttp(wsi);
      case LWS_CALLBACK_HTTP_BODY:
        return self->OnHttpBody(wsi, static_cast<const char*>(in), len);
      case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return self->OnHttpBodyComplete(wsi);
      case LWS_CALLBACK_HTTP_WRITEABLE:
        return self->OnHttpWriteable(wsi);
      case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return self->OnConfirmUpgrade(wsi);
      case LWS_CALLBACK_ESTABLISHED:
        self->OnEstablished(wsi);
        return 0;
      case LWS_CALLBACK_RECEIVE:
        return self->OnReceive(wsi, static_cast<const char*>(in), len);
      case LWS_CALLBACK_SERVER_WRITEABLE:
        return self->OnServerWriteable(wsi);
      case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        self->OnPeerClose(wsi, static_cast<const unsigned char*>(in), len);
        return 0;
      case LWS_CALLBACK_WSI_DESTROY:
        self->Forget(wsi);
        return 0;
      case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        self->DrainMailbox();
        return 0;
      default:
        return 0;
    }
  }

  // ---- state --------------------------------------------------------------------------------

  ServerConfig config;
  AuthConfig auth;
  Handler& handler;
  core::WorkerPool& pool;
  core::Logger& log;
  core::Metrics& metrics;

  lws_retry_bo_t retry{};
  lws_protocols protocols[2]{};
  lws_context* context = nullptr;
  lws_vhost* vhost = nullptr;
  std::unique_ptr<FrontDoor> front_door;
  struct HousekeepingTimer {
    lws_sorted_usec_list_t sul;
    Impl* owner;
  } housekeeping{{}, this};
  std::shared_ptr<Mailbox> mailbox = std::make_shared<Mailbox>();
  std::thread service;
  std::atomic<bool> stop{false};
  std::atomic<bool> draining{false};
  std::atomic<int> bound_port{0};

  // Service-thread only.
  ConnectionId next_id = 0;
  std::unordered_map<lws*, Conn*> by_wsi;
  std::unordered_map<ConnectionId, std::unique_ptr<Conn>> by_id;
  std::unordered_map<std::string, int> per_ip;
  // Read by metrics from other threads.
  std::atomic<int> http_conns{0};
  std::atomic<int> ws_conns{0};
};

Server::Server(const ServerConfig& config, const AuthConfig& auth, Handler& handler,
               core::WorkerPool& pool, core::Logger& log, core::Metrics& metrics)
    : impl_(std::make_unique<Impl>(config, auth, handler, pool, log, metrics)) {}

Server::~Server() { Stop(); }

bool Server::Start() {
  Impl& s = *impl_;
  lws_set_log_level(LLL_ERR | LLL_WARN, &EmitLwsLog);
  lws_context_creation_info info{};
  // The front door listens and hands each connection over once its first request head is
  // sound (signaling/front_door.h): lws drops the heads it cannot hold without an answer.
  info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
  info.protocols = s.protocols;
  info.user = &s;
  info.options = 0;  // UTF-8 of text messages is validated in OnReceive
  info.retry_and_idle_policy = &s.retry;
  // Room for the largest head the front door passes, with lws's own bookkeeping.
  info.max_http_header_data = static_cast<unsigned short>(FrontDoorLimits{}.max_head_bytes + 4096);
  info.max_http_header_pool = 256;
  // lws reads the socket into this per-thread buffer (default 4 KiB): a 12 KB landmark frame
  // then took four reads and callbacks; one read takes it whole.
  info.pt_serv_buf_size = 64 * 1024;
  info.vhost_name = "parley";
  info.server_string = "parley";
  info.keepalive_timeout = 30;
  info.timeout_secs = 20;
  s.context = lws_create_context(&info);
  if (s.context == nullptr) {
    s.log.Error("could not start the HTTP/WebSocket server",
                {{"bind", s.config.bind_address}, {"port", s.config.port}});
    return false;
  }
  s.vhost = lws_get_vhost_by_name(s.context, "parley");
  s.mailbox->Attach(s.context);
  s.front_door = std::make_unique<FrontDoor>(
      FrontDoorLimits{},
      [mailbox = s.mailbox](int fd) {
        mailbox->Post(AdoptCmd{AdoptCmd::Fd(fd)});  // closed if undelivered
      },
      s.metrics);
  std::string why;
  if (s.vhost == nullptr || !s.front_door->Start(s.config.bind_address, s.config.port, &why)) {
    s.log.Error("could not start the HTTP/WebSocket server",
                {{"bind", s.config.bind_address}, {"port", s.config.port}, {"error", why}});
    s.front_door.reset();
    s.mailbox->Attach(nullptr);
    lws_context_destroy(s.context);
    s.context = nullptr;
    return false;
  }
  s.bound_port = s.front_door->port();
  lws_sul_schedule(s.context, 0, &s.housekeeping.sul, &Impl::Housekeeping, LWS_US_PER_SEC);
  s.service = std::thread([&s] {
    core::NameThisThread("lws");
    while (!s.stop.load()) {
      if (lws_service(s.context, 0) < 0) break;
    }
  });
  return true;
}

int Server::port() const { return impl_->bound_port.load(); }

void Server::Send(ConnectionId id, OutMessage message) {
  impl_->mailbox->Post(SendCmd{id, std::move(message)});
}

void Server::SendJson(ConnectionId id, const Json::Value& message, bool droppable) {
  Send(id, OutMessage{false, core::ToJson(message), droppable});
}

void Server::Close(ConnectionId id, uint16_t code, std::string reason) {
  impl_->mailbox->Post(CloseCmd{id, code, std::move(reason)});
}

void Server::BeginDrain() { impl_->draining = true; }

void Server::CloseAll(uint16_t code, std::string reason, std::chrono::milliseconds flush) {
  impl_->mailbox->Post(CloseAllCmd{code, std::move(reason)});
  const auto deadline = Clock::now() + flush;
  while (impl_->ws_conns.load() > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void Server::Stop() {
  Impl& s = *impl_;
  if (s.context == nullptr) return;
  s.front_door.reset();  // no new connections; those still sending their head are closed
  s.stop = true;
  s.mailbox->Wake();
  if (s.service.joinable()) s.service.join();
  s.mailbox->Attach(nullptr);
  lws_sul_cancel(&s.housekeeping.sul);
  lws_context_destroy(s.context);
  s.context = nullptr;
}

size_t Server::websocket_count() const {
  return static_cast<size_t>(std::max(0, impl_->ws_conns.load()));
}

}  // namespace parley::signaling
