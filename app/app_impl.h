// Internal to app/: the application object shared by app.cc (lifecycle), api.cc (HTTP routes),
// live.cc (WebSocket protocol) and wire.cc (typed session events as protocol JSON).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "app/app.h"
#include "app/client_message.h"
#include "personas/personas.h"

namespace parley::app {

// Longest text POST /api/tts synthesizes (413 above).
inline constexpr size_t kMaxTtsTextBytes = 4000;
// A conversation lasts minutes: a client refused at capacity retries after this long.
inline constexpr int kAtCapacityRetryAfterS = 15;

// api.cc: responses every route uses.
signaling::HttpResponse WithRoute(signaling::HttpResponse r, std::string route);
signaling::HttpResponse MethodNotAllowed(const std::string& allow);
// 401 with the reason the credentials were refused.
signaling::HttpResponse Unauthorized(const signaling::HttpRequest& req);

// wire.cc: a session event as its protocol message; the session document in the API's shape.
Json::Value EventJson(const session::Envelope& e);
Json::Value SessionDocument(const session::SessionInfo& info);

struct App::Impl final : signaling::Handler, session::Outbox {
  Impl(AppConfig c, core::Logger& l);

  // signaling::Handler
  signaling::HttpResponse HandleHttp(const signaling::HttpRequest& request) override;
  // POST /api/analyze answers from the uploads pool; every other request as HandleHttp.
  void HandleHttpAsync(signaling::HttpRequest request, Responder respond) override;
  // GET /health on the service thread: it reads counters only, and must answer even when
  // every worker is busy.
  std::optional<signaling::HttpResponse> HandleHttpNow(
      const signaling::HttpRequest& request) override;
  signaling::UpgradeDecision OnUpgrade(const signaling::UpgradeRequest& request) override;
  void OnOpen(signaling::ConnectionId id, const signaling::UpgradeRequest& request,
              const std::string& tag) override;
  void OnMessage(signaling::ConnectionId id, bool binary, std::string_view data) override;
  void OnClosed(signaling::ConnectionId id, uint16_t close_code) override;

  // session::Outbox
  void Deliver(const std::vector<uint64_t>& connections, const session::Envelope& event) override;
  void DeliverAudio(const std::vector<uint64_t>& connections, std::string packet) override;

  // api.cc
  signaling::HttpResponse Route(const signaling::HttpRequest& req);
  signaling::HttpResponse Health();
  signaling::HttpResponse Readiness();
  signaling::HttpResponse CreateSession(const signaling::HttpRequest& req);
  signaling::HttpResponse ListSessions(const signaling::HttpRequest& req);
  signaling::HttpResponse Progress(const signaling::HttpRequest& req);  // GET /api/progress
  // The caller's session, or nullptr (also for another user's session: no existence leak).
  std::shared_ptr<session::Session> OwnSession(const signaling::HttpRequest& req,
                                               const std::string& id);
  // The caller's session document (memory first, then the store), in API shape.
  // 404/503 responses in `error` when there is none.
  std::optional<Json::Value> SessionView(const signaling::HttpRequest& req, const std::string& id,
                                         signaling::HttpResponse* error);
  // format: "json", "csv", "turns.csv" or "html".
  signaling::HttpResponse Report(const signaling::HttpRequest& req, const std::string& id,
                                 const std::string& format);
  signaling::HttpResponse DeleteSession(const signaling::HttpRequest& req, const std::string& id);
  signaling::HttpResponse Synthesize(const signaling::HttpRequest& req);  // POST /api/tts

  // analyze.cc: POST /api/analyze. Checks the upload on the calling worker, then queues its
  // analysis on `uploads`, which responds when the report is stored.
  void Analyze(signaling::HttpRequest req, const Responder& respond);
  struct Upload;
  signaling::HttpResponse RunAnalysis(const Upload& upload);
  // Ends a session nobody should see (an upload that failed) and deletes what was stored.
  void Discard(session::Session& s);

  // Lifecycle glue (app.cc).
  bool PersistSession(const session::Session& s);
  // Builds and stores the report and the final session document; true when both are safe.
  bool StoreReport(session::Session& s);
  // Writes what a crash now would leave of a live session (a worker).
  void WriteCheckpoint(session::Session& s);
  // At start: the sessions a crashed process left get their reports from their checkpoints.
  void RecoverCheckpoints();

  // live.cc
  struct LiveConn {
    Endpoint endpoint = Endpoint::kPractice;
    std::shared_ptr<session::Session> session;
    int protocol = kProtocolVersion;
    // This connection's `start` began the session's media: its stream cannot continue on
    // another connection, so it stops when this one closes.
    bool owns_media = false;
    struct Throttle {
      std::chrono::steady_clock::time_point last{};
      int suppressed = 0;
    };
    std::unordered_map<std::string, Throttle> error_throttle;
  };
  void OnStart(signaling::ConnectionId id, LiveConn& conn, const session::StartParams& params);
  void OnMedia(signaling::ConnectionId id, LiveConn& conn, const client::Media& media);
  void SendError(signaling::ConnectionId id, LiveConn& conn, const std::string& code,
                 const std::string& message);

  AppConfig config;
  core::Logger& log;
  core::Metrics metrics;
  core::WorkerPool pool;
  session::Services services;  // before the registry: sessions' stages use it to the end
  std::optional<personas::Catalog> personas;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<store::CheckpointLog> checkpoints;
  session::SessionRegistry registry;
  signaling::StaticFiles static_files;
  std::unique_ptr<signaling::Server> server;
  // Uploaded recordings' analyses (after the registry: destroyed, so joined, before it).
  core::WorkerPool uploads;
  const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::atomic<bool> shut_down{false};

  // Service-thread only.
  std::unordered_map<signaling::ConnectionId, LiveConn> live;
};

// report_render.cc: a report (API shape) as CSV of its per-second timeline, and as a printable
// HTML page.
std::string RenderReportCsv(const Json::Value& report);
std::string RenderReportHtml(const Json::Value& report);
// One row per transcript turn (docs/protocol.md "CSV").
std::string RenderTurnsCsv(const Json::Value& report);

// progress.cc: stored reports (API shape, newest first; `total` of them in all) as the
// GET /api/progress document: oldest first, with a trend per score over the last `window`.
Json::Value ProgressOf(const std::vector<Json::Value>& reports_newest_first, uint64_t total,
                       int window);

}  // namespace parley::app
