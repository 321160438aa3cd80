// WebSocket protocol for /ws/practice and /ws/landmarks (runs on the service thread: parse,
// route, never block). docs/protocol.md is the reference for every message here.
#include <cstdio>
#include <variant>

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
  if (!registry.HasRoomFor(*session)) {
    // Created long ago and connecting only now, when the machine is full.
    HttpResponse r = HttpResponse::Error(
        503, "at_capacity", "the server is holding all the live conversations it can; retry shortly");
    r.headers.emplace_back("retry-after", std::to_string(kAtCapacityRetryAfterS));
    return UpgradeDecision::Reject(std::move(r));
  }
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

namespace {
template <class... Fs>
struct Overloaded : Fs... {
  using Fs::operator()...;
};
}  // namespace

void App::Impl::OnMessage(signaling::ConnectionId id, bool binary, std::string_view data) {
  const auto it = live.find(id);
  if (it == live.end()) return;
  LiveConn& conn = it->second;
  session::Session& session = *conn.session;
  std::visit(Overloaded{
                 [&](const client::Hello& hello) {
                   if (hello.protocol != kProtocolVersion) {
                     SendError(id, conn, "unsupported_protocol",
                               "this server speaks protocol " + std::to_string(kProtocolVersion));
                     server->Close(id, signaling::kCloseProtocolError,
                                   "unsupported protocol version");
                     return;
                   }
                   conn.protocol = hello.protocol;
                   Json::Value w(Json::objectValue);
                   w["type"] = "welcome";
                   w["protocol"] = kProtocolVersion;
                   w["session_id"] = session.id();
                   w["persona_id"] = session.persona_id();
                   w["endpoint"] = conn.endpoint == Endpoint::kPractice ? "practice" : "landmarks";
                   w["server"] = std::string("parley/") + PARLEY_VERSION;
                   w["limits"]["max_message_bytes"] =
                       static_cast<Json::UInt64>(config.server.max_message_bytes);
                   w["limits"]["max_messages_per_s"] = config.server.max_messages_per_s;
                   w["limits"]["idle_timeout_s"] = config.server.idle_timeout_s;
                   w["t"] = Json::Int64(session.NowMs());
                   server->SendJson(id, w);
                 },
                 [&](const client::Ping& ping) {
                   Json::Value p(Json::objectValue);
                   p["type"] = "pong";
                   if (!ping.id.isNull()) p["id"] = ping.id;
                   p["t"] = Json::Int64(session.NowMs());
                   server->SendJson(id, p);
                 },
                 [&](const client::Start& start) { OnStart(id, conn, start.params); },
                 [&](const client::Stop&) {
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
                 },
                 [&](const client::Say& say) {
                   std::string error;
                   if (!session.conversation()->Say(say.text, &error))
                     SendError(id, conn, "bad_say", error);
                 },
                 [&](const client::PlaybackPosition& position) {
                   std::string error;
                   if (!session.conversation()->PlaybackPosition(position.utterance,
                                                                 position.played_ms, &error))
                     SendError(id, conn, "bad_playback", error);
                 },
                 [&](const client::Landmarks& frame) {
                   session.conversation()->PushLandmarks(frame.format, frame.bytes);
                 },
                 [&](const client::Media& media) { OnMedia(id, conn, media); },
                 [&](const client::Refusal& refusal) {
                   SendError(id, conn, refusal.code, refusal.message);
                 },
             },
             ReadClientMessage(conn.endpoint, binary, data));
}

void App::Impl::OnStart(signaling::ConnectionId id, LiveConn& conn,
                        const session::StartParams& params) {
  session::Session& session = *conn.session;
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
  ok["media"] = std::string(session::MediaName(params.media));
  if (params.sample_rate > 0) ok["sample_rate"] = params.sample_rate;
  ok["t"] = Json::Int64(session.NowMs());
  server->SendJson(id, ok);
}

void App::Impl::OnMedia(signaling::ConnectionId id, LiveConn& conn, const client::Media& media) {
  session::Session& session = *conn.session;
  const auto started_media = session.media();
  if (!started_media) {
    SendError(id, conn, "not_started", "send {\"type\":\"start\",...} before media frames");
    return;
  }
  if (media.pcm != (*started_media == session::StartParams::Media::kPcm)) {
    SendError(id, conn, "wrong_media",
              "binary kind " + KindHex(media.pcm ? 0x02 : 0x01) +
                  " does not match the started media '" +
                  std::string(session::MediaName(*started_media)) + "'");
    return;
  }
  session.conversation()->PushMedia(media.bytes);
}

}  // namespace parley::app
