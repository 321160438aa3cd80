#include <signal.h>

#include <filesystem>
#include <iostream>

#include "app/app_impl.h"

namespace parley::app {

namespace {
AppConfig Derived(AppConfig c) {
  c.Derive();
  return c;
}
}  // namespace

App::Impl::Impl(AppConfig c, core::Logger& l)
    : config(Derived(std::move(c))),
      log(l),
      pool(config.workers, metrics),
      services(config.conversation, pool, log, metrics),
      registry(config.sessions, log, metrics, &services, this),
      static_files(config.web_root),
      uploads(core::WorkerPoolConfig{"uploads", config.uploads.concurrent,
                                     static_cast<size_t>(config.uploads.queue)},
              metrics) {
  config.server.upload_paths = {"/api/analyze"};
  core::AddProcessMetrics(metrics);
  registry.SetLiveCallback([this](session::Session& s) {
    // Runs on the service thread: the store write goes to a worker.
    auto live_session = registry.Find(s.id());
    if (live_session && !pool.TrySubmit([this, live_session] { PersistSession(*live_session); }))
      log.Warn("worker queue full: live state not persisted", {{"session_id", s.id()}});
  });
  registry.SetCheckpointCallback([this](std::shared_ptr<session::Session> s) {
    // The registry's timer thread: the report is built and written on a worker.
    if (!pool.TrySubmit([this, s] { WriteCheckpoint(*s); }))
      log.Warn("worker queue full: checkpoint skipped", {{"session_id", s->id()}});
  });
  registry.SetEndedCallback([this](session::Session& s, const std::vector<uint64_t>& conns) {
    const bool stored = StoreReport(s);
    if (stored) registry.Remove(s.id());  // memory holds only sessions not yet safe on disk
    if (!server) return;
    Json::Value ended(Json::objectValue);
    ended["type"] = "session_ended";
    ended["session_id"] = s.id();
    ended["reason"] = s.Info().end_reason;
    ended["report"] = stored ? Json::Value("/api/sessions/" + s.id() + "/report") : Json::Value();
    ended["t"] = Json::Int64(s.NowMs());
    for (const auto id : conns) {
      server->SendJson(id, ended);
      server->Close(id, signaling::kCloseNormal, "session ended");
    }
  });
}

bool App::Impl::PersistSession(const session::Session& s) {
  if (!store) return false;
  std::string error;
  if (store->Put(store::Collection::kSessions, SessionDocument(s.Info()), &error)) return true;
  log.Error("could not store the session", {{"session_id", s.id()}, {"error", error}});
  return false;
}

bool App::Impl::StoreReport(session::Session& s) {
  if (!store) return false;
  const personas::Persona* persona = personas ? personas->Find(s.persona_id()) : nullptr;
  Json::Value report =
      session::BuildReport(s, persona != nullptr ? persona->doc["name"].asString() : "");
  std::string error;
  // With a dialogue LLM configured it may reword the summary and tips (the numbers stay).
  if (dialogue::LlmEngine* llm = services.llm(); llm != nullptr) {
    if (!session::RewriteFeedback(&report, *llm, &error)) {
      report["feedback"]["summary_rewrite_error"] = error;
      log.Warn("the report's summary stays the templates'",
               {{"session_id", s.id()}, {"error", error}});
    }
    error.clear();
  }
  if (!store->Put(store::Collection::kReports, report, &error)) {
    log.Error("could not store the report", {{"session_id", s.id()}, {"error", error}});
    return false;
  }
  if (!PersistSession(s)) return false;
  // The report is safe: the checkpoint that stood in for it goes.
  if (checkpoints && !checkpoints->Close(s.id(), &error))
    log.Warn("could not remove the session's checkpoint",
             {{"session_id", s.id()}, {"error", error}});
  return true;
}

void App::Impl::WriteCheckpoint(session::Session& s) {
  if (!checkpoints || s.state() != session::State::kLive) return;
  const personas::Persona* persona = personas ? personas->Find(s.persona_id()) : nullptr;
  Json::Value checkpoint(Json::objectValue);
  checkpoint["report"] =
      session::BuildCheckpoint(s, persona != nullptr ? persona->doc["name"].asString() : "");
  session::SessionInfo info = s.Info();
  info.state = session::State::kEnded;
  info.ended_at = std::chrono::system_clock::now();
  info.end_reason = "server_crash";
  info.connections = 0;
  info.media.reset();
  checkpoint["session"] = SessionDocument(info);
  checkpoint["interval_s"] = config.sessions.checkpoint_interval_s;
  std::string error;
  // Refused once the session's report is stored (it ended while this was built): that is fine.
  if (!checkpoints->Write(s.id(), checkpoint, &error) && s.state() == session::State::kLive)
    log.Warn("could not write the session's checkpoint",
             {{"session_id", s.id()}, {"error", error}});
}

void App::Impl::RecoverCheckpoints() {
  std::vector<std::string> unreadable;
  const auto found = checkpoints->LoadAll(&unreadable);
  for (const auto& path : unreadable)
    log.Error("a checkpoint cannot be read; left in place", {{"path", path}});
  Json::Value recovered(Json::arrayValue);
  for (const auto& [id, checkpoint] : found) {
    std::string error;
    Json::Value existing;
    if (store->Get(store::Collection::kReports, id, &existing, &error) == store::ReadStatus::kOk) {
      // It ended, and its report was stored, just before the crash: that report stands.
      checkpoints->Close(id, &error);
      continue;
    }
    Json::Value report = checkpoint["report"];
    Json::Value session = checkpoint["session"];
    if (!report.isObject() || !session.isObject() || report["session_id"].asString() != id) {
      log.Error("a checkpoint is not a session's; left in place", {{"session_id", id}});
      continue;
    }
    const int64_t now_ms = core::UnixMillis(std::chrono::system_clock::now());
    Json::Value& c = report["checkpoint"];
    c["recovered_at"] = store::DateValue(now_ms);
    c["interval_s"] = checkpoint["interval_s"];
    c["gap"] =
        "The server stopped without ending this session: this report is its last checkpoint. "
        "What happened after checkpoint.at (at most checkpoint.interval_s, or the last turn) is "
        "not in it.";
    if (!store->Put(store::Collection::kReports, report, &error) ||
        !store->Put(store::Collection::kSessions, session, &error)) {
      log.Error("a crashed session's report could not be stored; its checkpoint stays",
                {{"session_id", id}, {"error", error}});
      continue;
    }
    checkpoints->Close(id, &error);
    recovered.append(id);
  }
  if (!recovered.empty())
    log.Warn("reports of sessions a crash left were built from their checkpoints",
             {{"sessions", recovered}, {"count", recovered.size()}});
}

App::App(AppConfig config, core::Logger& log)
    : impl_(std::make_unique<Impl>(std::move(config), log)) {}

App::~App() { Shutdown(); }

core::Metrics& App::metrics() { return impl_->metrics; }
session::SessionRegistry& App::sessions() { return impl_->registry; }
store::Store& App::store() { return *impl_->store; }
int App::port() const { return impl_->server ? impl_->server->port() : 0; }

bool App::Start() {
  Impl& s = *impl_;
  s.log.Info("effective configuration", {{"config", s.config.Describe()}});
  std::string error;
  s.personas = personas::Catalog::Load(s.config.personas_dir, &error);
  if (!s.personas) {
    s.log.Error("cannot load personas", {{"error", error}});
    return false;
  }
  std::map<std::string, dialogue::PersonaProfile> profiles;
  for (const auto& p : s.personas->all())
    profiles.emplace(p.id, dialogue::ProfileFromDocument(p.id, p.doc));
  s.services.SetPersonas(std::move(profiles));
  std::error_code ec;
  std::filesystem::create_directories(s.config.data_dir, ec);
  if (ec) {
    s.log.Error("cannot create the data directory",
                {{"data_dir", s.config.data_dir}, {"error", ec.message()}});
    return false;
  }
  store::StoreConfig store_config = s.config.store;
  store_config.data_dir = s.config.data_dir;
  s.store = store::Store::Open(store_config, s.log, s.metrics, &error);
  if (!s.store) {
    s.log.Error("cannot open the store", {{"error", error}});
    return false;
  }
  s.checkpoints = store::CheckpointLog::Open(s.config.data_dir, &error);
  if (!s.checkpoints) {
    s.log.Error("cannot open the checkpoints", {{"error", error}});
    return false;
  }
  s.RecoverCheckpoints();
  if (!media::InitGStreamer(&error)) {
    s.log.Error("cannot start media", {{"error", error}});
    return false;
  }
  if (s.config.auth.jwt_secret_key.empty()) {
    s.log.Warn(
        "DEVELOPMENT MODE: JWT_SECRET_KEY is not set, so authentication is OFF and every "
        "request acts as the single local user. Set JWT_SECRET_KEY before exposing this server.",
        {{"dev_user_id", s.config.auth.dev_user_id}});
  }
  s.server = std::make_unique<signaling::Server>(s.config.server, s.config.auth, s, s.pool, s.log,
                                                 s.metrics);
  if (!s.server->Start()) {
    s.server.reset();
    return false;
  }
  const std::string host =
      s.config.server.bind_address == "0.0.0.0" ? "localhost" : s.config.server.bind_address;
  const std::string url = "http://" + host + ":" + std::to_string(s.server->port()) + "/";
  s.log.Info("parley listening",
             {{"url", url},
              {"port", s.server->port()},
              {"personas", static_cast<Json::UInt>(s.personas->all().size())},
              {"store", s.store->Health()["kind"]},
              {"session_capacity", s.registry.capacity()},
              {"auth", s.config.auth.jwt_secret_key.empty() ? "development" : "jwt"}});
  return true;
}

void App::Shutdown() {
  Impl& s = *impl_;
  if (s.shut_down.exchange(true)) return;
  if (!s.server) {
    s.uploads.Shutdown();
    s.services.Shutdown();
    s.pool.Shutdown();
    if (s.store) s.store->Close();
    return;
  }
  const auto begin = std::chrono::steady_clock::now();
  s.log.Info("shutting down: refusing new requests, ending live sessions");
  s.server->BeginDrain();
  const size_t ended = s.registry.EndAll("shutdown");
  s.uploads.Shutdown();  // analyses in progress saw their sessions end; queued ones answer 503
  const auto elapsed = std::chrono::steady_clock::now() - begin;
  const auto budget = std::chrono::seconds(s.config.shutdown_timeout_s);
  const auto left = budget > elapsed
                        ? std::chrono::duration_cast<std::chrono::milliseconds>(budget - elapsed)
                        : std::chrono::milliseconds(0);
  s.server->CloseAll(signaling::kCloseGoingAway, "server shutting down",
                     std::min(left, std::chrono::milliseconds(2000)));
  s.server->Stop();
  s.services.Shutdown();
  s.pool.Shutdown();
  // One last chance for spooled writes; what remains is replayed by the next process.
  const size_t spooled = s.store->ReplayNow();
  s.store->Close();
  s.log.Info("shutdown complete", {{"sessions_ended", static_cast<Json::UInt64>(ended)},
                                   {"spool_depth", static_cast<Json::UInt64>(spooled)}});
}

int RunMain(int argc, const char* const* argv) {
  auto parsed = ParseCommandLine(argc, argv, std::cout, std::cerr);
  if (const int* code = std::get_if<int>(&parsed)) return *code;
  AppConfig config = std::get<AppConfig>(std::move(parsed));

  // Block the stop signals in every thread (threads inherit the mask) and take them here.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  core::Logger log(*core::ParseLogLevel(config.log_level));
  App app(std::move(config), log);
  if (!app.Start()) return 1;
  int sig = 0;
  sigwait(&stop_signals, &sig);
  log.Info("stop signal received", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  app.Shutdown();
  return 0;
}

}  // namespace parley::app
