// HTTP API (runs on worker threads). Routes and error codes are listed in docs/protocol.md.
#include <cstdlib>

#include "app/app_impl.h"

namespace parley::app {
namespace {

using signaling::HttpRequest;
using signaling::HttpResponse;

constexpr int kDefaultPageSize = 20;
constexpr int kMaxPageSize = 100;
constexpr int kDefaultProgressSessions = 50;  // GET /api/progress: the last 50 ended sessions
constexpr int kDefaultTrendWindow = 5;        // a trend is over the last 5 sessions with a score

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

HttpResponse WithRoute(HttpResponse r, std::string route) {
  r.headers.emplace_back("x-parley-route", std::move(route));
  return r;
}

HttpResponse MethodNotAllowed(const std::string& allow) {
  HttpResponse r =
      HttpResponse::Error(405, "method_not_allowed", "this path accepts " + allow + " only");
  r.headers.emplace_back("allow", allow);
  return r;
}

HttpResponse Unauthorized(const HttpRequest& req) {
  HttpResponse r = HttpResponse::Error(
      401, "unauthorized",
      req.identity.error.empty() ? "a bearer token is required" : req.identity.error);
  r.headers.emplace_back("www-authenticate", "Bearer");
  return r;
}

signaling::HttpResponse App::Impl::HandleHttp(const HttpRequest& request) { return Route(request); }

std::optional<HttpResponse> App::Impl::HandleHttpNow(const HttpRequest& request) {
  if (request.path == "/health" && (request.method == "GET" || request.method == "HEAD"))
    return WithRoute(Health(), "/health");
  if (request.path == "/health/ready" && (request.method == "GET" || request.method == "HEAD"))
    return WithRoute(Readiness(), "/health/ready");
  return std::nullopt;
}

void App::Impl::HandleHttpAsync(HttpRequest request, Responder respond) {
  if (request.path == "/api/analyze") return Analyze(std::move(request), respond);
  // POST /api/sessions/{id}/end: the end (up to the last transcripts, the report's store
  // write) runs on the registry's end workers; this worker is free at once.
  const auto seg = Segments(request.path);
  if (request.method == "POST" && seg.size() == 4 && seg[0] == "api" && seg[1] == "sessions" &&
      seg[3] == "end" && request.identity.authenticated) {
    if (auto session = OwnSession(request, seg[2])) {
      auto req = std::make_shared<HttpRequest>(std::move(request));
      registry.EndAsync(std::move(session), "ended_by_client", [this, req, respond] {
        // An ended session is no longer in memory once its report is safe: read it back.
        HttpResponse error;
        const auto view = SessionView(*req, (Segments(req->path))[2], &error);
        respond(WithRoute(view ? HttpResponse::Json(200, *view) : error, "/api/sessions/{id}/end"));
      });
      return;
    }
  }
  // DELETE /api/sessions/{id} of a session still in memory ends it first: on the end workers.
  if (request.method == "DELETE" && seg.size() == 3 && seg[0] == "api" && seg[1] == "sessions" &&
      request.identity.authenticated) {
    if (auto session = OwnSession(request, seg[2])) {
      auto req = std::make_shared<HttpRequest>(std::move(request));
      registry.EndAsync(std::move(session), "deleted", [this, req, respond] {
        respond(WithRoute(DeleteSession(*req, Segments(req->path)[2]), "/api/sessions/{id}"));
      });
      return;
    }
  }
  respond(Route(request));
}

HttpResponse App::Impl::Route(const HttpRequest& req) {
  const std::string& path = req.path;
  const auto seg = Segments(path);
  const std::string& m = req.method;

  if (path == "/health") {
    if (m != "GET" && m != "HEAD") return WithRoute(MethodNotAllowed("GET"), "/health");
    return WithRoute(Health(), "/health");
  }
  if (path == "/health/ready") {
    if (m != "GET" && m != "HEAD") return WithRoute(MethodNotAllowed("GET"), "/health/ready");
    return WithRoute(Readiness(), "/health/ready");
  }
  if (path == "/metrics") {
    if (m != "GET" && m != "HEAD") return WithRoute(MethodNotAllowed("GET"), "/metrics");
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics.RenderPrometheus();
    return WithRoute(std::move(r), "/metrics");
  }
  if (!seg.empty() && seg[0] == "ws") {
    HttpResponse r =
        HttpResponse::Error(426, "upgrade_required",
                            "this path is a WebSocket endpoint; connect with Upgrade: websocket");
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
        return WithRoute(
            HttpResponse::Error(404, "persona_not_found", "no persona '" + seg[2] + "'"),
            "/api/personas/{id}");
      return WithRoute(HttpResponse::Json(200, p->doc), "/api/personas/{id}");
    }
  }

  // ---- /api/voices, /api/tts ----------------------------------------------------------------
  if (seg.size() == 2 && seg[1] == "voices") {
    if (m != "GET") return WithRoute(MethodNotAllowed("GET"), "/api/voices");
    Json::Value body(Json::objectValue);
    body["voices"] = Json::Value(Json::arrayValue);
    for (const auto& v : services.Voices()) {
      Json::Value j(Json::objectValue);
      j["id"] = v.id;
      j["engine"] = v.engine;
      j["language"] = v.language.empty() ? Json::Value() : Json::Value(v.language);
      j["gender"] = v.gender.empty() ? Json::Value() : Json::Value(v.gender);
      body["voices"].append(j);
    }
    return WithRoute(HttpResponse::Json(200, body), "/api/voices");
  }
  if (seg.size() == 2 && seg[1] == "tts") {
    if (m != "POST") return WithRoute(MethodNotAllowed("POST"), "/api/tts");
    if (!req.identity.authenticated) return WithRoute(Unauthorized(req), "/api/tts");
    return WithRoute(Synthesize(req), "/api/tts");
  }

  // ---- /api/progress (authenticated) -------------------------------------------------------
  if (seg.size() == 2 && seg[1] == "progress") {
    if (m != "GET") return WithRoute(MethodNotAllowed("GET"), "/api/progress");
    if (!req.identity.authenticated) return WithRoute(Unauthorized(req), "/api/progress");
    return WithRoute(Progress(req), "/api/progress");
  }

  // ---- /api/sessions (authenticated) -------------------------------------------------------
  if (seg.size() >= 2 && seg[1] == "sessions") {
    const std::string route = seg.size() == 2   ? "/api/sessions"
                              : seg.size() == 3 ? "/api/sessions/{id}"
                                                : "/api/sessions/{id}/" + seg[3];
    if (!req.identity.authenticated) return WithRoute(Unauthorized(req), route);
    if (seg.size() == 2) {
      if (m == "POST") return WithRoute(CreateSession(req), route);
      if (m == "GET") return WithRoute(ListSessions(req), route);
      return WithRoute(MethodNotAllowed("GET, POST"), route);
    }
    const std::string& id = seg[2];
    if (seg.size() == 3) {
      if (m == "GET") {
        HttpResponse error;
        const auto view = SessionView(req, id, &error);
        return WithRoute(view ? HttpResponse::Json(200, *view) : error, route);
      }
      if (m == "DELETE") return WithRoute(DeleteSession(req, id), route);
      return WithRoute(MethodNotAllowed("GET, DELETE"), route);
    }
    if (seg.size() == 4 && seg[3] == "end") {
      if (m != "POST") return WithRoute(MethodNotAllowed("POST"), route);
      if (const auto session = OwnSession(req, id)) {
        registry.End(*session, "ended_by_client");  // idempotent: an ended session stays ended
      }
      // An ended session is no longer in memory once its report is safe: read it back.
      HttpResponse error;
      const auto view = SessionView(req, id, &error);
      return WithRoute(view ? HttpResponse::Json(200, *view) : error, route);
    }
    if (seg.size() == 4 &&
        (seg[3] == "report" || seg[3] == "report.csv" || seg[3] == "report.html" ||
         seg[3] == "report.json" || seg[3] == "turns.csv")) {
      if (m != "GET") return WithRoute(MethodNotAllowed("GET"), route);
      const std::string format = seg[3] == "report"      ? "json"
                                 : seg[3] == "turns.csv" ? "turns.csv"
                                                         : seg[3].substr(7);
      return WithRoute(Report(req, id, format), route);
    }
  }
  return WithRoute(HttpResponse::Error(404, "not_found", "no API route " + m + " " + path),
                   "/api/other");
}

HttpResponse App::Impl::Health() {
  Json::Value h(Json::objectValue);
  h["status"] = "ok";
  h["version"] = PARLEY_VERSION;
  h["uptime_s"] =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started)
          .count();
  h["auth"] = config.auth.jwt_secret_key.empty() ? "development" : "jwt";
  for (session::State st :
       {session::State::kCreated, session::State::kLive, session::State::kEnded})
    h["sessions"][std::string(session::StateName(st))] =
        static_cast<Json::UInt64>(registry.CountInState(st));
  h["sessions"]["active"] = static_cast<Json::UInt64>(registry.Active());
  h["sessions"]["capacity"] = registry.capacity();
  h["connections"]["websocket"] = static_cast<Json::UInt64>(server ? server->websocket_count() : 0);
  h["workers"]["queue_depth"] = static_cast<Json::UInt64>(pool.QueueDepth());
  h["dependencies"]["store"] = store->Health();
  // dlib's model loads when the first video session starts.
  h["dependencies"]["server_landmarks"]["status"] =
      config.conversation.server_landmarks ? services.landmarker_state().state() : "off";
  h["dependencies"]["speech_recognition"]["status"] =
      config.conversation.hearing.enabled ? services.decoders_state().state() : "off";
  if (const auto decoder_pool =
          services.decoders_state().IfLoaded()) {  // the first loads first, the rest after
    auto& asr = h["dependencies"]["speech_recognition"];
    asr["decoders"] = decoder_pool->size();
    asr["decoders_loaded"] = decoder_pool->loaded();
    asr["decoders_max"] = decoder_pool->max_size();
    asr["decoders_busy"] = decoder_pool->busy();
    // The pool cannot grow to what the session capacity assumes: fewer turns are heard at once.
    if (const std::string load_error = decoder_pool->load_error(); !load_error.empty()) {
      asr["status"] = "degraded";
      asr["load_error"] = load_error;
      h["status"] = "degraded";
    }
  }
  if (h["dependencies"]["store"]["status"].asString() != "ok") h["status"] = "degraded";
  return HttpResponse::Json(200, h);
}

// Whether a new conversation would be admitted now: for a load balancer (503: send it
// elsewhere).
HttpResponse App::Impl::Readiness() {
  Json::Value r(Json::objectValue);
  const size_t active = registry.Active();
  r["sessions_active"] = static_cast<Json::UInt64>(active);
  r["capacity"] = registry.capacity();
  r["reasons"] = Json::Value(Json::arrayValue);
  if (shut_down.load()) r["reasons"].append("shutting_down");
  if (active >= static_cast<size_t>(registry.capacity())) r["reasons"].append("at_capacity");
  r["ready"] = r["reasons"].empty();
  HttpResponse out = HttpResponse::Json(r["ready"].asBool() ? 200 : 503, r);
  if (!r["ready"].asBool())
    out.headers.emplace_back("retry-after", std::to_string(kAtCapacityRetryAfterS));
  return out;
}

HttpResponse App::Impl::CreateSession(const HttpRequest& req) {
  std::string parse_error;
  const auto body =
      core::ParseJson(req.body.empty() ? std::string_view("{}") : req.body, &parse_error);
  if (!body)
    return HttpResponse::Error(400, "invalid_json", "body is not valid JSON: " + parse_error);
  if (!body->isObject())
    return HttpResponse::Error(400, "invalid_request", "body must be a JSON object");
  const Json::Value& persona_id = (*body)["persona_id"];
  if (!persona_id.isString() || persona_id.asString().empty())
    return HttpResponse::Error(422, "invalid_request", "'persona_id' (string) is required");
  if (personas->Find(persona_id.asString()) == nullptr)
    return HttpResponse::Error(422, "unknown_persona",
                               "no persona '" + persona_id.asString() + "'; see GET /api/personas");
  session::SessionRegistry::Refusal refusal{};
  auto session = registry.Create(req.identity.user_id, persona_id.asString(), &refusal);
  if (!session && refusal == session::SessionRegistry::Refusal::kAtCapacity) {
    HttpResponse r = HttpResponse::Error(
        503, "at_capacity",
        "the server is holding all the live conversations it can (" +
            std::to_string(registry.capacity()) + "); retry shortly");
    r.headers.emplace_back("retry-after", std::to_string(kAtCapacityRetryAfterS));
    return r;
  }
  if (!session)
    return HttpResponse::Error(503, "too_many_sessions",
                               "the server holds its maximum number of sessions");
  if (!PersistSession(*session)) {
    registry.Remove(session->id());
    return HttpResponse::Error(503, "store_unavailable", "the session could not be stored");
  }
  HttpResponse r = HttpResponse::Json(201, store::ToPublicJson(SessionDocument(session->Info())));
  r.headers.emplace_back("location", "/api/sessions/" + session->id());
  return r;
}

HttpResponse App::Impl::ListSessions(const HttpRequest& req) {
  std::string error;
  const auto limit = QueryInt(req, "limit", kDefaultPageSize, 1, kMaxPageSize, &error);
  const auto offset = limit ? QueryInt(req, "offset", 0, 0, 1'000'000'000, &error) : std::nullopt;
  if (!limit || !offset) return HttpResponse::Error(400, "invalid_query", error);
  store::Page page;
  std::string store_error;
  const auto status = store->ListByUser(store::Collection::kSessions, req.identity.user_id,
                                        static_cast<uint64_t>(*offset),
                                        static_cast<uint64_t>(*limit), &page, &store_error);
  if (status != store::ReadStatus::kOk)
    return HttpResponse::Error(503, "store_unavailable", "the session store is unavailable");
  Json::Value body(Json::objectValue);
  body["sessions"] = Json::Value(Json::arrayValue);
  for (const auto& doc : page.docs) {
    // A session still in memory is fresher than its stored copy (state, connections).
    const auto in_memory = registry.Find(doc["session_id"].asString());
    body["sessions"].append(
        store::ToPublicJson(in_memory ? SessionDocument(in_memory->Info()) : doc));
  }
  body["total"] = static_cast<Json::UInt64>(page.total);
  body["limit"] = *limit;
  body["offset"] = *offset;
  const uint64_t next = static_cast<uint64_t>(*offset + *limit);
  body["next_offset"] =
      next < page.total ? Json::Value(static_cast<Json::UInt64>(next)) : Json::Value();
  return HttpResponse::Json(200, body);
}

HttpResponse App::Impl::Progress(const HttpRequest& req) {
  std::string error;
  const auto limit = QueryInt(req, "limit", kDefaultProgressSessions, 1, kMaxPageSize, &error);
  const auto window =
      limit ? QueryInt(req, "window", kDefaultTrendWindow, 2, kMaxPageSize, &error) : std::nullopt;
  if (!limit || !window) return HttpResponse::Error(400, "invalid_query", error);
  // Every ended session has exactly one report: the reports are the ended sessions.
  store::Page page;
  std::string store_error;
  static const std::vector<std::string> kFields = {
      "persona_id", "persona_name", "started_at", "ended_at",
      "duration_s", "end_reason",   "feedback",   "metrics"};  // not the timelines and transcripts
  if (store->ListByUser(store::Collection::kReports, req.identity.user_id, 0,
                        static_cast<uint64_t>(*limit), kFields, &page,
                        &store_error) != store::ReadStatus::kOk)
    return HttpResponse::Error(503, "store_unavailable", "the report store is unavailable");
  std::vector<Json::Value> reports;
  reports.reserve(page.docs.size());
  for (const auto& doc : page.docs) reports.push_back(store::ToPublicJson(doc));
  return HttpResponse::Json(200, ProgressOf(reports, page.total, *window));
}

std::shared_ptr<session::Session> App::Impl::OwnSession(const HttpRequest& req,
                                                        const std::string& id) {
  auto s = registry.Find(id);
  if (!s || s->user_id() != req.identity.user_id) return nullptr;
  return s;
}

std::optional<Json::Value> App::Impl::SessionView(const HttpRequest& req, const std::string& id,
                                                  HttpResponse* error) {
  if (const auto s = OwnSession(req, id)) return store::ToPublicJson(SessionDocument(s->Info()));
  Json::Value doc;
  std::string why;
  switch (store->Get(store::Collection::kSessions, id, &doc, &why)) {
    case store::ReadStatus::kOk:
      if (doc["user_id"].asString() == req.identity.user_id) return store::ToPublicJson(doc);
      break;  // another user's: same answer as a missing one
    case store::ReadStatus::kUnavailable:
      *error = HttpResponse::Error(503, "store_unavailable", "the session store is unavailable");
      return std::nullopt;
    case store::ReadStatus::kNotFound:
      break;
  }
  *error = HttpResponse::Error(404, "session_not_found", "no such session");
  return std::nullopt;
}

HttpResponse App::Impl::Report(const HttpRequest& req, const std::string& id,
                               const std::string& format) {
  HttpResponse error;
  const auto view = SessionView(req, id, &error);
  if (!view) return error;
  if ((*view)["state"].asString() != "ended")
    return HttpResponse::Error(
        409, "report_not_ready",
        "the session has not ended; POST /api/sessions/" + id + "/end first");
  if (const auto ending = registry.Find(id); ending && !ending->end_finished()) {
    // Ended, but its stages are still draining or its report is being written.
    HttpResponse r = HttpResponse::Error(409, "report_not_ready",
                                         "the session is ending; its report is being written");
    r.headers.emplace_back("retry-after", "1");
    return r;
  }
  Json::Value doc;
  std::string why;
  switch (store->Get(store::Collection::kReports, id, &doc, &why)) {
    case store::ReadStatus::kOk:
      break;
    case store::ReadStatus::kUnavailable:
      return HttpResponse::Error(503, "store_unavailable", "the report store is unavailable");
    case store::ReadStatus::kNotFound:
      return HttpResponse::Error(404, "report_not_found", "this session has no report");
  }
  const Json::Value report = store::ToPublicJson(doc);
  HttpResponse r;
  if (format == "csv" || format == "turns.csv") {
    r.content_type = "text/csv; charset=utf-8";
    r.body = format == "csv" ? RenderReportCsv(report) : RenderTurnsCsv(report);
  } else if (format == "html") {
    r.content_type = "text/html; charset=utf-8";
    r.body = RenderReportHtml(report);
  } else {
    r = HttpResponse::Json(200, report);
  }
  const auto download = req.query.find("download");
  if (download != req.query.end() && download->second != "0" && download->second != "false") {
    const std::string name = format == "turns.csv" ? "parley-turns-" + id + ".csv"
                             : format == "json"    ? "parley-report-" + id + ".json"
                                                   : "parley-report-" + id + "." + format;
    r.headers.emplace_back("content-disposition", "attachment; filename=" + name);
  }
  return r;
}

HttpResponse App::Impl::DeleteSession(const HttpRequest& req, const std::string& id) {
  HttpResponse error;
  if (!SessionView(req, id, &error)) return error;
  if (const auto s = OwnSession(req, id)) {
    registry.End(*s, "deleted");
    registry.Remove(id);
  }
  std::string why;
  if (!store->Delete(store::Collection::kReports, id, &why) ||
      !store->Delete(store::Collection::kSessions, id, &why)) {
    log.Error("delete failed", {{"session_id", id}, {"error", why}});
    return HttpResponse::Error(503, "store_unavailable", "the session could not be deleted");
  }
  HttpResponse r;
  r.status = 204;
  return r;
}

// POST /api/tts {"text", "voice"?, "format": "wav"|"pcm"|"opus"} -> the audio.
HttpResponse App::Impl::Synthesize(const HttpRequest& req) {
  std::string parse_error;
  const auto body = core::ParseJson(req.body, &parse_error);
  if (!body)
    return HttpResponse::Error(400, "invalid_json", "body is not valid JSON: " + parse_error);
  if (!body->isObject())
    return HttpResponse::Error(400, "invalid_request", "body must be a JSON object");
  const Json::Value& text = (*body)["text"];
  if (!text.isString() || text.asString().find_first_not_of(" \t\n") == std::string::npos)
    return HttpResponse::Error(422, "invalid_request", "'text' (a non-empty string) is required");
  if (text.asString().size() > kMaxTtsTextBytes)
    return HttpResponse::Error(413, "text_too_long",
                               "'text' is over " + std::to_string(kMaxTtsTextBytes) + " bytes");
  const Json::Value& format_value = (*body)["format"];
  const std::string format = format_value.isString() ? format_value.asString() : "wav";
  if (format != "wav" && format != "pcm" && format != "opus")
    return HttpResponse::Error(422, "invalid_request", "'format' must be wav, pcm or opus");
  const Json::Value& voice_value = (*body)["voice"];
  if (!voice_value.isNull() && !voice_value.isString())
    return HttpResponse::Error(422, "invalid_request", "'voice' must be a string");
  const std::string voice = voice_value.isString() ? voice_value.asString() : "";
  speech::Synthesizer* engine = &services.flite();
  if (!voice.empty()) {
    if (services.remote_tts() != nullptr && services.remote_tts()->HasVoice(voice)) {
      engine = services.remote_tts();
    } else if (!services.flite().HasVoice(voice)) {
      return HttpResponse::Error(422, "unknown_voice",
                                 "no voice '" + voice + "'; see GET /api/voices");
    }
  } else if (services.remote_tts() != nullptr) {
    engine = services.remote_tts();
  }
  std::string error;
  auto audio = engine->Synthesize({text.asString(), voice, 1.0}, &error);
  if (!audio && engine != &services.flite()) {  // the service failed: Flite speaks
    log.Warn("remote speech synthesis failed: Flite speaks", {{"error", error}});
    audio = services.flite().Synthesize({text.asString(), "", 1.0}, &error);
  }
  if (!audio) return HttpResponse::Error(503, "tts_failed", "speech synthesis failed: " + error);
  HttpResponse r;
  if (format == "wav") {
    r.content_type = "audio/wav";
    r.body = speech::EncodeWav(audio->pcm, audio->sample_rate);
  } else if (format == "pcm") {
    r.content_type = "audio/L16;rate=" + std::to_string(audio->sample_rate) + ";channels=1";
    r.body.assign(reinterpret_cast<const char*>(audio->pcm.data()), audio->pcm.size() * 2);
  } else {
    r.content_type = "audio/ogg";
    r.body = media::EncodeOggOpus(audio->pcm, audio->sample_rate,
                                  config.conversation.playback.bitrate, &error);
    if (r.body.empty())
      return HttpResponse::Error(503, "tts_failed", "Opus encoding failed: " + error);
  }
  r.headers.emplace_back("x-parley-voice", audio->voice);
  r.headers.emplace_back("x-parley-engine", audio->engine);
  r.headers.emplace_back("x-parley-sample-rate", std::to_string(audio->sample_rate));
  return r;
}

}  // namespace parley::app
