// WebSocket protocol for /ws/practice and /ws/landmarks (runs on the service thread: parse,
// route, never block). docs/protocol.md is the reference for every message here.
#include <cmath>
#include <cstdio>

#include "app/app_impl.h"

namespace parley::app {
namespace {

using signaling::HttpResponse;
using signaling::UpgradeDecision;

constexpr auto kErrorRepeatInterval = std::chrono::seconds(1);

std::string KindHex(uint8_t kind) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", kind);
  return buf;
}

}  // namespace

UpgradeDecision App::Impl::OnUpgrade(const signaling::UpgradeRequest& req) {
  if (req.path != "/ws/practice" && req.path != "/ws/landmarks")
    return UpgradeDecision::Reject(
        HttpResponse::Error(404, "not_found", "no WebSocket endpoint at " + req.path));
  if (!req.identity.authenticated) {
    HttpResponse r = HttpResponse::Error(
        401, "unauthorized",
        req.identity.error.empty() ? "a bearer token is required (Authorization or ?token=)"
                                   : req.identity.error);
    r.headers.emplace_back("www-authenticate", "Bearer");
    return UpgradeDecision::Reject(std::move(r));
  }
  const auto it = req.query.find("session");
  if (it == req.query.end() || it->second.empty())
    return UpgradeDecision::Reject(
        HttpResponse::Error(400, "missing_session", "add ?session=<session_id> to the URL"));
  const auto session = registry.Find(it->second);
  std::string ended_owner;
  if (!session && registry.RecentlyEnded(it->second, &ended_owner) &&
      ended_owner == req.identity.user_id)
    return UpgradeDecision::Reject(
        HttpResponse::Error(410, "session_ended", "this session has ended; create a new one"));
  if (!session || session->user_id() != req.identity.user_id)
    return UpgradeDecision::Reject(
        HttpResponse::Error(404, "session_not_found", "no such session"));
  if (session->state() == session::State::kEnded)
    return UpgradeDecision::Reject(
        HttpResponse::Error(410, "session_ended", "this session has ended; create a new one"));
  return UpgradeDecision::Accept(session->id());
}

void App::Impl::OnOpen(signaling::ConnectionId id, const signaling::UpgradeRequest& req,
                       const std::string& tag) {
  auto session = registry.Find(tag);
  if (!session || !registry.Attach(*session, id)) {
    server->Close(id, signaling::kClosePolicyViolation, "session ended");
    return;
  }
  LiveConn conn;
  conn.endpoint = req.path == "/ws/landmarks" ? Endpoint::kLandmarks : Endpoint::kPractice;
  conn.session = std::move(session);
  live.emplace(id, std::move(conn));
  log.Debug("websocket open", {{"session_id", tag},
                               {"connection", Json::UInt64(id)},
                               {"endpoint", req.path},
                               {"peer", req.peer_ip}});
}

void App::Impl::OnClosed(signaling::ConnectionId id, uint16_t close_code) {
  const auto it = live.find(id);
  if (it == live.end()) return;
  log.Debug("websocket closed", {{"session_id", it->second.session->id()},
                                 {"connection", Json::UInt64(id)},
                                 {"close_code", close_code}});
  if (it->second.owns_media) {
    std::string ignored;  // already stopped by another connection: nothing to do
    registry.Stop(*it->second.session, &ignored);
  }
  registry.Detach(*it->second.session, id);
  live.erase(it);
}

void App::Impl::SendError(signaling::ConnectionId id, LiveConn& conn, const std::string& code,
                          const std::string& message) {
  metrics.GetCounter("parley_errors_total", "Error responses and events by code", {{"code", code}})
      .Add();
  // A client repeating the same mistake gets one event per second, with a count of the rest.
  auto& throttle = conn.error_throttle[code];
  const auto now = std::chrono::steady_clock::now();
  if (now - throttle.last < kErrorRepeatInterval) {
    ++throttle.suppressed;
    return;
  }
  Json::Value err(Json::objectValue);
  err["type"] = "error";
  err["error"]["code"] = code;
  err["error"]["message"] = message;
  if (throttle.suppressed > 0) err["error"]["repeated"] = throttle.suppressed;
  err["t"] = Json::Int64(conn.session->NowMs());
  throttle.last = now;
  throttle.suppressed = 0;
  server->SendJson(id, err);
}

void App::Impl::OnMessage(signaling::ConnectionId id, bool binary, std::string_view data) {
  const auto it = live.find(id);
  if (it == live.end()) return;
  LiveConn& conn = it->second;
  if (binary) {
    OnBinary(id, conn, data);
    return;
  }
  if (conn.endpoint == Endpoint::kLandmarks && data.size() > kMaxControlMessageBytes) {
    conn.session->conversation()->PushLandmarks(session::Conversation::LandmarkFormat::kJson, data);
    return;
  }
  std::string parse_error;
  const auto msg = core::ParseJson(data, &parse_error);
  if (!msg) {
    SendError(id, conn, "bad_json", "message is not valid JSON: " + parse_error);
    return;
  }
  if (!msg->isObject()) {
    SendError(id, conn, "bad_message", "a message must be a JSON object");
    return;
  }
  const Json::Value& type = (*msg)["type"];
  if (conn.endpoint == Endpoint::kLandmarks &&
      (type.isNull() || (type.isString() && type.asString() == "landmarks"))) {
    conn.session->conversation()->PushLandmarks(session::Conversation::LandmarkFormat::kJson, data);
    return;
  }
  if (!type.isString()) {
    SendError(id, conn, "bad_message", "a control message needs a string \"type\"");
    return;
  }
  OnControl(id, conn, *msg);
}

void App::Impl::OnControl(signaling::ConnectionId id, LiveConn& conn, const Json::Value& msg) {
  const std::string type = msg["type"].asString();
  session::Session& session = *conn.session;
  if (type == "hello") {
    const Json::Value& protocol = msg["protocol"];
    if (!protocol.isInt() || protocol.asInt() != kProtocolVersion) {
      SendError(id, conn, "unsupported_protocol",
                "this server speaks protocol " + std::to_string(kProtocolVersion));
      server->Close(id, signaling::kCloseProtocolError, "unsupported protocol version");
      return;
    }
    conn.protocol = protocol.asInt();
    Json::Value w(Json::objectValue);
    w["type"] = "welcome";
    w["protocol"] = kProtocolVersion;
    w["session_id"] = session.id();
    w["persona_id"] = session.persona_id();
    w["endpoint"] = conn.endpoint == Endpoint::kPractice ? "practice" : "landmarks";
    w["server"] = std::string("parley/") + PARLEY_VERSION;
    w["limits"]["max_message_bytes"] = static_cast<Json::UInt64>(config.server.max_message_bytes);
    w["limits"]["max_messages_per_s"] = config.server.max_messages_per_s;
    w["limits"]["idle_timeout_s"] = config.server.idle_timeout_s;
    w["t"] = Json::Int64(session.NowMs());
    server->SendJson(id, w);
    return;
  }
  if (type == "ping") {
    Json::Value p(Json::objectValue);
    p["type"] = "pong";
    if (msg.isMember("id")) p["id"] = msg["id"];
    p["t"] = Json::Int64(session.NowMs());
    server->SendJson(id, p);
    return;
  }
  if (conn.endpoint == Endpoint::kLandmarks) {
    SendError(id, conn, "unknown_type",
              "/ws/landmarks accepts landmark frames, hello and ping (got '" + type + "')");
    return;
  }
  if (type == "start") {
    session::StartParams params;
    const Json::Value& media = msg["media"];
    const std::string media_name = media.isString() ? media.asString() : "";
    if (media_name != "webm" && media_name != "pcm") {
      SendError(id, conn, "bad_start", "\"media\" must be \"webm\" or \"pcm\"");
      return;
    }
    params.media = media_name == "pcm" ? session::StartParams::Media::kPcm
                                       : session::StartParams::Media::kWebm;
    if (params.media == session::StartParams::Media::kPcm) {
      const Json::Value& rate = msg["sample_rate"];
      if (!rate.isInt() || rate.asInt() < 8000 || rate.asInt() > 48000) {
        SendError(id, conn, "bad_start", "pcm needs an integer \"sample_rate\" of 8000..48000");
        return;
      }
      params.sample_rate = rate.asInt();
    }
    const Json::Value& playback = msg["playback"];
    if (!playback.isNull() &&
        (!playback.isString() || (playback.asString() != "opus" && playback.asString() != "pcm"))) {
      SendError(id, conn, "bad_start", "\"playback\" must be \"opus\" or \"pcm\"");
      return;
    }
    params.pcm_playback = playback.isString() && playback.asString() == "pcm";
    const Json::Value& echo = msg["echo"];
    if (!echo.isNull() &&
        (!echo.isString() || (echo.asString() != "client" && echo.asString() != "server"))) {
      SendError(id, conn, "bad_start",
                "\"echo\" must be \"client\" (the microphone has no echo of the persona's voice) "
                "or \"server\" (cancel it here)");
      return;
    }
    if (echo.isString()) params.server_echo_cancel = echo.asString() == "server";
    std::string error;
    if (!registry.Start(session, params, &error)) {
      SendError(id, conn, "bad_start", error);
      return;
    }
    for (auto& [other_id, other] : live) {
      if (other.session == conn.session) other.owns_media = false;
    }
    conn.owns_media = true;
    Json::Value ok(Json::objectValue);
    ok["type"] = "started";
    ok["media"] = media_name;
    if (params.sample_rate > 0) ok["sample_rate"] = params.sample_rate;
    ok["t"] = Json::Int64(session.NowMs());
    server->SendJson(id, ok);
    return;
  }
  if (type == "stop") {
    std::string error;
    if (!registry.Stop(session, &error)) {
      SendError(id, conn, "bad_stop", error);
      return;
    }
    conn.owns_media = false;
    Json::Value ok(Json::objectValue);
    ok["type"] = "stopped";
    ok["t"] = Json::Int64(session.NowMs());
    server->SendJson(id, ok);
    return;
  }
  if (type == "say") {
    const Json::Value& text = msg["text"];
    std::string error;
    if (!text.isString()) {
      SendError(id, conn, "bad_say", "\"say\" needs a string \"text\"");
    } else if (!session.conversation()->Say(text.asString(), &error)) {
      SendError(id, conn, "bad_say", error);
    }
    return;
  }
  if (type == "playback") {
    const Json::Value& utterance = msg["utterance"];
    const Json::Value& played = msg["played_ms"];
    std::string error;
    if (!utterance.isInt() || !played.isNumeric() || !std::isfinite(played.asDouble()) ||
        played.asDouble() < 0 || played.asDouble() > 1e9) {
      SendError(id, conn, "bad_playback",
                "\"playback\" needs an integer \"utterance\" and a number \"played_ms\"");
    } else if (!session.conversation()->PlaybackPosition(
                   utterance.asInt(), static_cast<int64_t>(played.asDouble()), &error)) {
      SendError(id, conn, "bad_playback", error);
    }
    return;
  }
  SendError(id, conn, "unknown_type", "unknown message type '" + type + "'");
}

void App::Impl::OnBinary(signaling::ConnectionId id, LiveConn& conn, std::string_view data) {
  if (data.empty()) {
    SendError(id, conn, "empty_frame", "a binary frame needs at least its kind byte");
    return;
  }
  const auto kind = static_cast<uint8_t>(data[0]);
  const std::string_view payload = data.substr(1);
  session::Session& session = *conn.session;
  const bool known = kind == static_cast<uint8_t>(FrameKind::kWebm) ||
                     kind == static_cast<uint8_t>(FrameKind::kPcm) ||
                     kind == static_cast<uint8_t>(FrameKind::kLandmarks);
  if (!known) {
    SendError(id, conn, "unknown_kind",
              "binary kind " + KindHex(kind) + " is not a client-to-server kind");
    return;
  }
  if (kind == static_cast<uint8_t>(FrameKind::kLandmarks)) {
    session.conversation()->PushLandmarks(session::Conversation::LandmarkFormat::kBinary, payload);
    return;
  }
  if (conn.endpoint != Endpoint::kPractice) {
    SendError(id, conn, "wrong_endpoint", "media frames go to /ws/practice");
    return;
  }
  const auto media = session.media();
  if (!media) {
    SendError(id, conn, "not_started", "send {\"type\":\"start\",...} before media frames");
    return;
  }
  const bool pcm = kind == static_cast<uint8_t>(FrameKind::kPcm);
  if (pcm != (*media == session::StartParams::Media::kPcm)) {
    SendError(id, conn, "wrong_media",
              "binary kind " + KindHex(kind) + " does not match the started media '" +
                  std::string(session::MediaName(*media)) + "'");
    return;
  }
  session.conversation()->PushMedia(payload);
}

}  // namespace parley::app
