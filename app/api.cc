// HTTP API (runs on worker threads). Routes and error codes are listed in docs/protocol.md.
#include <cstdlib>

#include "app/app_impl.h"

namespace parley::app {
namespace {

using signaling::HttpRequest;
using signaling::HttpResponse;

constexpr int kDefaultPageSize = 20;
constexpr int kMaxPageSize = 100;

HttpResponse WithRoute(HttpResponse r, std::string route) {
  r.headers.emplace_back("x-parley-route", std::move(route));
  return r;
}

HttpResponse MethodNotAllowed(const std::string& allow) {
  HttpResponse r = HttpResponse::Error(405, "method_not_allowed",
                                       "this path accepts " + allow + " only");
  r.headers.emplace_back("allow", allow);
  return r;
}

// Splits "/api/sessions/abc/end" into {"api","sessions","abc","end"}.
std::vector<std::string> Segments(const std::string& path) {
  std::vector<std::string> out;
  size_t start = 1;
  while (start < path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    if (end > start) out.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// Query integer within [lo, hi]; nullopt (and `error`) when present but invalid.
std::optional<int> QueryInt(const HttpRequest& req, const std::string& name, int fallback, int lo,
                            int hi, std::string* error) {
  const auto it = req.query.find(name);
  if (it == req.query.end()) return fallback;
  char* end = nullptr;
  const long v = std::strtol(it->second.c_str(), &end, 10);
  if (it->second.empty() || *end != '\0' || v < lo || v > hi) {
    *error = "'" + name + "' must be an integer " + std::to_string(lo) + ".." + std::to_string(hi);
    return std::nullopt;
  }
  return static_cast<int>(v);
}

}  // namespace

signaling::HttpResponse App::Impl::HandleHttp(const HttpRequest& request) {
  return Route(request);
}

HttpResponse App::Impl::Route(const HttpRequest& req) {
  const std::string& path = req.path;
  const auto seg = Segments(path);
  const std::string& m = req.method;

  if (path == "/health") {
    if (m != "GET" && m != "HEAD") return WithRoute(MethodNotAllowed("GET"), "/health");
    return WithRoute(Health(), "/health");
  }
  if (path == "/metrics") {
    if (m != "GET" && m != "HEAD") return WithRoute(MethodNotAllowed("GET"), "/metrics");
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics.RenderPrometheus();
    return WithRoute(std::move(r), "/metrics");
  }
  if (!seg.empty() && seg[0] == "ws") {
    HttpResponse r = HttpResponse::Error(
        426, "upgrade_required", "this path is a WebSocket endpoint; connect with Upgrade: websocket");
    r.headers.emplace_back("upgrade", "websocket");
    return WithRoute(std::move(r), "/ws");
  }
  if (seg.empty() || seg[0] != "api") {
    if (m != "GET" && m != "HEAD") return WithRoute(MethodNotAllowed("GET, HEAD"), "static");
    return WithRoute(static_files.Serve(path, m == "HEAD"), "static");
  }

  // ---- /api/personas -----------------------------------------------------------------------
  if (seg.size() >= 2 && seg[1] == "personas") {
    if (seg.size() == 2) {
      if (m != "GET") return WithRoute(MethodNotAllowed("GET"), "/api/personas");
      Json::Value body(Json::objectValue);
      body["personas"] = Json::Value(Json::arrayValue);
      for (const auto& p : personas->all()) body["personas"].append(personas::Catalog::Summary(p));
      return WithRoute(HttpResponse::Json(200, body), "/api/personas");
    }
    if (seg.size() == 3) {
      if (m != "GET") return WithRoute(MethodNotAllowed("GET"), "/api/personas/{id}");
      const personas::Persona* p = personas->Find(seg[2]);
      if (p == nullptr)
        return WithRoute(HttpResponse::Error(404, "persona_not_found", "no persona '" + seg[2] + "'"),
                         "/api/personas/{id}");
      return WithRoute(HttpResponse::Json(200, p->doc), "/api/personas/{id}");
    }
  }

  // ---- /api/sessions (authenticated) -------------------------------------------------------
  if (seg.size() >= 2 && seg[1] == "sessions") {
    const std::string route = seg.size() == 2   ? "/api/sessions"
                              : seg.size() == 3 ? "/api/sessions/{id}"
                                                : "/api/sessions/{id}/" + seg[3];
    if (!req.identity.authenticated) {
      HttpResponse r = HttpResponse::Error(
          401, "unauthorized",
          req.identity.error.empty() ? "a bearer token is required" : req.identity.error);
      r.headers.emplace_back("www-authenticate", "Bearer");
      return WithRoute(std::move(r), route);
    }
    if (seg.size() == 2) {
      if (m == "POST") return WithRoute(CreateSession(req), route);
      if (m == "GET") return WithRoute(ListSessions(req), route);
      return WithRoute(MethodNotAllowed("GET, POST"), route);
    }
    const auto session = OwnSession(req, seg[2]);
    auto not_found = [&] {
      return WithRoute(HttpResponse::Error(404, "session_not_found", "no such session"), route);
    };
    if (seg.size() == 3) {
      if (m != "GET" && m != "DELETE") return WithRoute(MethodNotAllowed("GET, DELETE"), route);
      if (!session) return not_found();
      if (m == "GET") return WithRoute(HttpResponse::Json(200, session->ToJson()), route);
      registry.End(*session, "deleted");
      registry.Remove(session->id());
      HttpResponse r;
      r.status = 204;
      return WithRoute(std::move(r), route);
    }
    if (seg.size() == 4 && seg[3] == "end") {
      if (m != "POST") return WithRoute(MethodNotAllowed("POST"), route);
      if (!session) return not_found();
      registry.End(*session, "ended_by_client");  // idempotent: an ended session stays ended
      return WithRoute(HttpResponse::Json(200, session->ToJson()), route);
    }
  }
  return WithRoute(HttpResponse::Error(404, "not_found", "no API route " + m + " " + path),
                   "/api/other");
}

HttpResponse App::Impl::Health() {
  Json::Value h(Json::objectValue);
  h["status"] = "ok";
  h["version"] = PARLEY_VERSION;
  h["uptime_s"] = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::steady_clock::now() - started)
                      .count();
  h["auth"] = config.auth.jwt_secret_key.empty() ? "development" : "jwt";
  for (SessionState st : {SessionState::kCreated, SessionState::kLive, SessionState::kEnded})
    h["sessions"][std::string(StateName(st))] = static_cast<Json::UInt64>(registry.CountInState(st));
  h["connections"]["websocket"] =
      static_cast<Json::UInt64>(server ? server->websocket_count() : 0);
  h["workers"]["queue_depth"] = static_cast<Json::UInt64>(pool.QueueDepth());
  // Sessions live in this process's memory until the store module is configured.
  h["dependencies"]["store"]["status"] = "ok";
  h["dependencies"]["store"]["kind"] = "memory";
  h["dependencies"]["store"]["persistent"] = false;
  return HttpResponse::Json(200, h);
}

HttpResponse App::Impl::CreateSession(const HttpRequest& req) {
  std::string parse_error;
  const auto body = core::ParseJson(req.body.empty() ? std::string_view("{}") : req.body,
                                    &parse_error);
  if (!body) return HttpResponse::Error(400, "invalid_json", "body is not valid JSON: " + parse_error);
  if (!body->isObject()) return HttpResponse::Error(400, "invalid_request", "body must be a JSON object");
  const Json::Value& persona_id = (*body)["persona_id"];
  if (!persona_id.isString() || persona_id.asString().empty())
    return HttpResponse::Error(422, "invalid_request", "'persona_id' (string) is required");
  if (personas->Find(persona_id.asString()) == nullptr)
    return HttpResponse::Error(422, "unknown_persona",
                               "no persona '" + persona_id.asString() + "'; see GET /api/personas");
  auto session = registry.Create(req.identity.user_id, persona_id.asString());
  if (!session)
    return HttpResponse::Error(503, "too_many_sessions",
                               "the server holds its maximum number of sessions");
  HttpResponse r = HttpResponse::Json(201, session->ToJson());
  r.headers.emplace_back("location", "/api/sessions/" + session->id());
  return r;
}

HttpResponse App::Impl::ListSessions(const HttpRequest& req) {
  std::string error;
  const auto limit = QueryInt(req, "limit", kDefaultPageSize, 1, kMaxPageSize, &error);
  const auto offset = limit ? QueryInt(req, "offset", 0, 0, 1'000'000'000, &error) : std::nullopt;
  if (!limit || !offset) return HttpResponse::Error(400, "invalid_query", error);
  const auto all = registry.ListForUser(req.identity.user_id);
  Json::Value body(Json::objectValue);
  body["sessions"] = Json::Value(Json::arrayValue);
  for (size_t i = static_cast<size_t>(*offset);
       i < all.size() && i < static_cast<size_t>(*offset + *limit); ++i)
    body["sessions"].append(all[i]->ToJson());
  body["total"] = static_cast<Json::UInt64>(all.size());
  body["limit"] = *limit;
  body["offset"] = *offset;
  const size_t next = static_cast<size_t>(*offset + *limit);
  body["next_offset"] = next < all.size() ? Json::Value(static_cast<Json::UInt64>(next)) : Json::Value();
  return HttpResponse::Json(200, body);
}

std::shared_ptr<Session> App::Impl::OwnSession(const HttpRequest& req, const std::string& id) {
  auto s = registry.Find(id);
  if (!s || s->user_id() != req.identity.user_id) return nullptr;
  return s;
}

}  // namespace parley::app
