// The Parley application: wires signaling (HTTP + WebSocket), sessions and personas together.
//
//   parley::core::Logger log;
//   auto config = parley::app::ParseCommandLine(argc, argv, std::cout, std::cerr);
//   parley::app::App app(std::get<parley::app::AppConfig>(config), log);
//   if (!app.Start()) return 1;     // binds the port, prints the URL
//   ... wait for SIGTERM ...
//   app.Shutdown();                 // ends live sessions (end hooks run), closes sockets
//
// Start() and Shutdown() are called from one controlling thread; everything else inside runs
// on the server's service thread, the worker pool and the session expiry thread.
#pragma once

#include <iosfwd>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "core/core.h"
#include "session/session.h"
#include "signaling/signaling.h"
#include "store/store.h"

namespace parley::app {

// POST /api/analyze: uploaded recordings (their largest size is --max-upload-kib).
struct UploadConfig {
  int max_duration_s = 1200;  // longer recordings are refused with 413
  // Analyses run on their own threads, never the general pool's: one keeps about a core busy.
  int concurrent = 1;
  int queue = 4;             // waiting beyond the running ones: 503 with Retry-After
  int stall_timeout_s = 30;  // an analysis that makes no progress this long fails (503)
  std::string Validate() const;
  void AddFlags(core::FlagSet& flags);
};

struct AppConfig {
  signaling::ServerConfig server;
  signaling::AuthConfig auth;
  core::WorkerPoolConfig workers;
  session::SessionConfig sessions;
  // The stages of every session: media, vision, hearing (each module's own config inside).
  session::ConversationConfig conversation;
  UploadConfig uploads;
  std::string log_level = "info";
  std::string data_dir = "./data";
  std::string web_root;      // default: the checkout's web/
  std::string personas_dir;  // default: the checkout's personas/
  store::StoreConfig store;  // mongodb_uri empty: the embedded file store under data_dir
  int shutdown_timeout_s = 20;

  // Every problem found, each a full sentence naming the option; empty when valid.
  std::vector<std::string> Validate() const;
  // Fills the options whose default depends on others (0 = derived): the speech decoders a
  // full house needs from the session capacity. Idempotent.
  void Derive();
  // Registers every option (the modules' own AddFlags, and the application's).
  void AddFlags(core::FlagSet& flags);
  // The effective configuration, secrets masked (logged at start).
  Json::Value Describe() const;
};

// Parses flags, falling back to environment variables (PORT, MONGODB_URI, ...), then
// validates. Returns the config, or the exit code when the program should stop now:
// 0 after --help/--version, 2 on a bad value (message written to `err`).
std::variant<AppConfig, int> ParseCommandLine(int argc, const char* const* argv, std::ostream& out,
                                              std::ostream& err);

class App {
 public:
  App(AppConfig config, core::Logger& log);
  ~App();
  App(const App&) = delete;
  App& operator=(const App&) = delete;

  // Loads personas, prepares the data directory, binds the port. False (logged) on failure.
  bool Start();
  int port() const;
  // Graceful stop, bounded by shutdown_timeout_s: refuse new work, end live sessions so their
  // end hooks run, close WebSockets with 1001, stop threads. Idempotent.
  void Shutdown();

  core::Metrics& metrics();
  session::SessionRegistry& sessions();
  store::Store& store();  // valid after Start()

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// main(): parse, start, wait for SIGTERM/SIGINT, shut down. Returns the process exit code.
int RunMain(int argc, const char* const* argv);

}  // namespace parley::app
