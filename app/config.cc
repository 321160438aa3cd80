// Command line and environment -> AppConfig, with CLI11.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <ostream>

#include "app/app.h"

#ifndef PARLEY_DEFAULT_WEB_ROOT
#define PARLEY_DEFAULT_WEB_ROOT "web"
#endif
#ifndef PARLEY_DEFAULT_PERSONAS_DIR
#define PARLEY_DEFAULT_PERSONAS_DIR "personas"
#endif
#ifndef PARLEY_VERSION
#define PARLEY_VERSION "0.0.0"
#endif

namespace parley::app {

std::string UploadConfig::Validate() const {
  if (max_duration_s < 1 || max_duration_s > 6 * 3600)
    return "--max-upload-duration must be 1..21600 s";
  if (concurrent < 1 || concurrent > 64) return "--upload-workers must be 1..64";
  if (queue < 1 || queue > 10'000) return "--upload-queue must be 1..10000";
  if (stall_timeout_s < 1 || stall_timeout_s > 3600)
    return "--upload-stall-timeout must be 1..3600 s";
  return {};
}

void UploadConfig::AddFlags(core::FlagSet& f) {
  f.Group("Uploads");
  f.Add("--max-upload-duration", &max_duration_s,
        "Longest recording POST /api/analyze accepts, in seconds (413 above)",
        "PARLEY_MAX_UPLOAD_DURATION");
  f.Add("--upload-workers", &concurrent, "Uploaded recordings analysed at once (each ~1 core)",
        "PARLEY_UPLOAD_WORKERS");
  f.Add("--upload-queue", &queue, "Uploads that may wait for an analysis slot before 503",
        "PARLEY_UPLOAD_QUEUE");
  f.Add("--upload-stall-timeout", &stall_timeout_s,
        "Seconds an analysis may make no progress before it fails", "PARLEY_UPLOAD_STALL_TIMEOUT");
}

void AppConfig::Derive() {
  auto& asr = conversation.hearing.asr;
  // Everyone in a full house may speak at once (a turn waiting for a decoder waits the whole of
  // someone else's turn); the extra decoders load only when that many speak.
  if (asr.max_pool_size == 0)
    asr.max_pool_size = std::clamp(sessions.EffectiveCapacity(), std::min(asr.pool_size, 64), 64);
}

std::vector<std::string> AppConfig::Validate() const {
  std::vector<std::string> problems;
  auto check = [&](const std::string& area, const std::string& why) {
    if (!why.empty()) problems.push_back(area + ": " + why);
  };
  check("server", server.Validate());
  check("auth", auth.Validate());
  check("workers", workers.Validate());
  check("sessions", sessions.Validate());
  check("uploads", uploads.Validate());
  for (const auto& p : conversation.Validate()) problems.push_back(p);
  if (!core::ParseLogLevel(log_level))
    problems.push_back("--log-level must be one of debug, info, warn, error (got '" + log_level +
                       "')");
  if (data_dir.empty()) problems.push_back("--data-dir must not be empty");
  if (web_root.empty() || !std::filesystem::is_directory(web_root))
    problems.push_back("--web-root '" + web_root + "' is not a directory");
  if (personas_dir.empty() || !std::filesystem::is_directory(personas_dir))
    problems.push_back("--personas-dir '" + personas_dir + "' is not a directory");
  check("store", store.Validate());
  if (!store.mongodb_uri.empty() && store.mongodb_uri.rfind("mongodb://", 0) != 0 &&
      store.mongodb_uri.rfind("mongodb+srv://", 0) != 0)
    problems.push_back("MONGODB_URI must start with mongodb:// or mongodb+srv://");
  if (store.database.empty() || store.database.size() > 63 ||
      store.database.find_first_of("/\\. \"$") != std::string::npos)
    problems.push_back("DATABASE_NAME '" + store.database +
                       "' is not a valid MongoDB database name");
  if (shutdown_timeout_s < 1 || shutdown_timeout_s > 600)
    problems.push_back("--shutdown-timeout must be 1..600 s");
  return problems;
}

void AppConfig::AddFlags(core::FlagSet& f) {
  server.AddFlags(f);
  f.Group("Server");
  f.Add("--workers", &workers.threads, "Worker threads for blocking work (HTTP, store, files)",
        "PARLEY_WORKERS");
  f.AddCustom({"--worker-queue", "PARLEY_WORKER_QUEUE",
               "Tasks that may wait for a worker before requests get 503", "Server", false, true,
               [this] { return std::to_string(workers.queue_capacity); },
               [this](const std::string& v) -> std::string {
                 char* end = nullptr;
                 const long long n = std::strtoll(v.c_str(), &end, 10);
                 if (v.empty() || *end != '\0' || n < 0)
                   return "--worker-queue: '" + v + "' is not a count";
                 workers.queue_capacity = static_cast<size_t>(n);
                 return {};
               }});
  f.Add("--web-root", &web_root, "Directory served as static files", "PARLEY_WEB_ROOT");
  f.Add("--personas-dir", &personas_dir, "Directory of persona JSON files", "PARLEY_PERSONAS_DIR");
  f.Add("--shutdown-timeout", &shutdown_timeout_s,
        "Seconds SIGTERM may take to end sessions and close connections",
        "PARLEY_SHUTDOWN_TIMEOUT");
  f.Add("--log-level", &log_level, "debug, info, warn or error (JSON lines on stderr)",
        "PARLEY_LOG_LEVEL");
  sessions.AddFlags(f);
  conversation.AddFlags(f);
  uploads.AddFlags(f);
  auth.AddFlags(f);
  f.Group("Store");
  f.Add("--data-dir", &data_dir, "Embedded store, spool and recordings", "PARLEY_DATA_DIR");
  store.AddFlags(f);
}

Json::Value AppConfig::Describe() const {
  AppConfig copy = *this;  // the flag set points into the struct it describes
  core::FlagSet flags;
  copy.AddFlags(flags);
  return flags.Describe();
}

std::variant<AppConfig, int> ParseCommandLine(int argc, const char* const* argv, std::ostream& out,
                                              std::ostream& err) {
  AppConfig c;
  c.web_root = PARLEY_DEFAULT_WEB_ROOT;
  c.personas_dir = PARLEY_DEFAULT_PERSONAS_DIR;
  core::FlagSet flags;
  c.AddFlags(flags);

  CLI::App cli{"Parley: real-time conversation practice server (HTTP + WebSocket on one port)",
               "parley"};
  cli.set_version_flag("--version", PARLEY_VERSION);
  cli.get_formatter()->column_width(44);
  // Each module's options, as CLI11 options: the module parses and names its own errors.
  std::vector<std::string> problems;
  for (const auto& flag : flags.flags()) {
    CLI::Option* opt = cli.add_option_function<std::string>(
        flag.name,
        [&flag, &problems](const std::string& value) {
          if (std::string why = flag.set(value); !why.empty()) problems.push_back(why);
        },
        flag.help);
    if (!flag.env.empty()) opt->envname(flag.env);
    if (flag.has_default && !flag.secret) opt->default_str(flag.get());
    opt->group(flag.group);
    opt->type_name(flag.type);
  }

  try {
    cli.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    out << cli.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    out << cli.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion&) {
    out << PARLEY_VERSION << "\n";
    return 0;
  } catch (const CLI::ParseError& e) {
    err << "parley: " << e.what() << "\nRun 'parley --help' for the options.\n";
    return 2;
  }

  // OPENAI_BASE_URL names the one OpenAI-compatible service of the seed systems: each remote
  // engine whose own URL is unset uses it.
  if (const char* base = std::getenv("OPENAI_BASE_URL"); base != nullptr && *base != '\0') {
    for (std::string* url : {&c.conversation.hearing.remote.base_url, &c.conversation.llm.base_url,
                             &c.conversation.remote_tts.base_url})
      if (url->empty()) *url = base;
  }
  c.store.data_dir = c.data_dir;

  for (const auto& p : c.Validate()) problems.push_back(p);
  if (problems.empty()) c.Derive();
  if (!problems.empty()) {
    err << "parley: invalid configuration:\n";
    for (const auto& p : problems) err << "  - " << p << "\n";
    err << "Run 'parley --help' for the options.\n";
    return 2;
  }
  return c;
}

}  // namespace parley::app
