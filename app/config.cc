// Command line and environment -> AppConfig, with CLI11.
#include <CLI/CLI.hpp>
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
namespace {

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(start, end - start);
    const auto first = item.find_first_not_of(" \t");
    const auto last = item.find_last_not_of(" \t");
    if (first != std::string::npos) {
      item = item.substr(first, last - first + 1);
      while (item.size() > 1 && item.back() == '/') item.pop_back();  // "http://a/" == "http://a"
      out.push_back(item);
    }
    start = end + 1;
  }
  return out;
}

}  // namespace

std::vector<std::string> AppConfig::Validate() const {
  std::vector<std::string> problems;
  auto check = [&](const std::string& area, const std::string& why) {
    if (!why.empty()) problems.push_back(area + ": " + why);
  };
  check("server", server.Validate());
  check("auth", auth.Validate());
  check("workers", workers.Validate());
  check("sessions", sessions.Validate());
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

std::variant<AppConfig, int> ParseCommandLine(int argc, const char* const* argv, std::ostream& out,
                                              std::ostream& err) {
  AppConfig c;
  c.web_root = PARLEY_DEFAULT_WEB_ROOT;
  c.personas_dir = PARLEY_DEFAULT_PERSONAS_DIR;
  std::string origins;
  int max_message_kib = static_cast<int>(c.server.max_message_bytes / 1024);
  int max_body_kib = static_cast<int>(c.server.max_http_body_bytes / 1024);
  int send_queue_kib = static_cast<int>(c.server.send_queue_max_bytes / 1024);

  CLI::App cli{"Parley: real-time conversation practice server (HTTP + WebSocket on one port)",
               "parley"};
  cli.set_version_flag("--version", PARLEY_VERSION);
  cli.get_formatter()->column_width(44);

  cli.add_option("--bind", c.server.bind_address, "Address to listen on")
      ->envname("PARLEY_BIND")
      ->capture_default_str()
      ->group("Server");
  cli.add_option("--port", c.server.port, "TCP port for HTTP and WebSocket (0: any free port)")
      ->envname("PORT")
      ->capture_default_str()
      ->group("Server");
  cli.add_option("--allowed-origins", origins,
                 "Comma-separated origins allowed for WebSocket and CORS ('*' for any). "
                 "Same-origin pages and non-browser clients are always allowed")
      ->envname("ALLOWED_ORIGINS")
      ->group("Server");
  cli.add_option("--workers", c.workers.threads, "Worker threads for blocking work")
      ->envname("PARLEY_WORKERS")
      ->capture_default_str()
      ->group("Server");
  cli.add_option("--worker-queue", c.workers.queue_capacity,
                 "Tasks that may wait for a worker before requests get 503")
      ->envname("PARLEY_WORKER_QUEUE")
      ->capture_default_str()
      ->group("Server");
  cli.add_option("--web-root", c.web_root, "Directory served as static files")
      ->envname("PARLEY_WEB_ROOT")
      ->capture_default_str()
      ->group("Server");
  cli.add_option("--personas-dir", c.personas_dir, "Directory of persona JSON files")
      ->envname("PARLEY_PERSONAS_DIR")
      ->capture_default_str()
      ->group("Server");
  cli.add_option("--shutdown-timeout", c.shutdown_timeout_s,
                 "Seconds SIGTERM may take to end sessions and close connections")
      ->envname("PARLEY_SHUTDOWN_TIMEOUT")
      ->capture_default_str()
      ->group("Server");
  cli.add_option("--log-level", c.log_level, "debug, info, warn or error (JSON lines on stderr)")
      ->envname("PARLEY_LOG_LEVEL")
      ->capture_default_str()
      ->group("Server");

  cli.add_option("--max-message-kib", max_message_kib,
                 "Largest WebSocket message in KiB; larger closes with 1009")
      ->envname("PARLEY_MAX_MESSAGE_KIB")
      ->capture_default_str()
      ->group("Limits");
  cli.add_option("--max-body-kib", max_body_kib, "Largest HTTP request body in KiB (413 above)")
      ->envname("PARLEY_MAX_BODY_KIB")
      ->capture_default_str()
      ->group("Limits");
  cli.add_option("--max-messages-per-s", c.server.max_messages_per_s,
                 "WebSocket messages per second per connection (token bucket rate)")
      ->envname("PARLEY_MAX_MESSAGES_PER_S")
      ->capture_default_str()
      ->group("Limits");
  cli.add_option("--message-burst", c.server.message_burst,
                 "WebSocket messages a connection may send at once (token bucket depth)")
      ->envname("PARLEY_MESSAGE_BURST")
      ->capture_default_str()
      ->group("Limits");
  cli.add_option("--idle-timeout", c.server.idle_timeout_s,
                 "Seconds without a client message before a WebSocket is closed (1001)")
      ->envname("PARLEY_IDLE_TIMEOUT")
      ->capture_default_str()
      ->group("Limits");
  cli.add_option("--ping-interval", c.server.ping_interval_s,
                 "Seconds of silence before the server pings a WebSocket")
      ->envname("PARLEY_PING_INTERVAL")
      ->capture_default_str()
      ->group("Limits");
  cli.add_option("--pong-timeout", c.server.pong_timeout_s,
                 "Seconds to wait for any traffic after a ping before hanging up")
      ->envname("PARLEY_PONG_TIMEOUT")
      ->capture_default_str()
      ->group("Limits");
  cli.add_option("--max-connections", c.server.max_connections, "WebSocket connections in all")
      ->envname("PARLEY_MAX_CONNECTIONS")
      ->capture_default_str()
      ->group("Limits");
  cli.add_option("--max-connections-per-ip", c.server.max_connections_per_ip,
                 "WebSocket connections from one address")
      ->envname("PARLEY_MAX_CONNECTIONS_PER_IP")
      ->capture_default_str()
      ->group("Limits");
  cli.add_option("--send-queue-kib", send_queue_kib,
                 "Outgoing bytes queued per WebSocket before the slow-consumer policy applies")
      ->envname("PARLEY_SEND_QUEUE_KIB")
      ->capture_default_str()
      ->group("Limits");
  cli.add_option("--max-sessions", c.sessions.max_sessions, "Sessions held in memory")
      ->envname("PARLEY_MAX_SESSIONS")
      ->capture_default_str()
      ->group("Limits");

  cli.add_option("--disconnect-grace", c.sessions.disconnect_grace_s,
                 "Seconds a live session survives with no connection before it ends")
      ->envname("PARLEY_DISCONNECT_GRACE")
      ->capture_default_str()
      ->group("Sessions");
  cli.add_option("--unused-session-ttl", c.sessions.unused_session_ttl_s,
                 "Seconds a created session may wait for its first connection")
      ->envname("PARLEY_UNUSED_SESSION_TTL")
      ->capture_default_str()
      ->group("Sessions");

  int backlog_kib = static_cast<int>(c.conversation.media.max_backlog_bytes / 1024);
  cli.add_option("--analysis-width", c.conversation.media.analysis_width,
                 "Decoded video is scaled to fit this width for analysis")
      ->envname("PARLEY_ANALYSIS_WIDTH")
      ->capture_default_str()
      ->group("Media");
  cli.add_option("--analysis-height", c.conversation.media.analysis_height,
                 "Decoded video is scaled to fit this height for analysis")
      ->envname("PARLEY_ANALYSIS_HEIGHT")
      ->capture_default_str()
      ->group("Media");
  cli.add_option("--analysis-fps", c.conversation.media.analysis_fps,
                 "Most video frames per second analysed")
      ->envname("PARLEY_ANALYSIS_FPS")
      ->capture_default_str()
      ->group("Media");
  cli.add_option("--audio-frame-ms", c.conversation.media.audio_frame_ms,
                 "Length of the audio frames given to analysers (10 or 20)")
      ->envname("PARLEY_AUDIO_FRAME_MS")
      ->capture_default_str()
      ->group("Media");
  cli.add_option("--media-backlog-kib", backlog_kib,
                 "Undecoded media a session may queue before its media is stopped")
      ->envname("PARLEY_MEDIA_BACKLOG_KIB")
      ->capture_default_str()
      ->group("Media");

  cli.add_option("--calibration-s", c.conversation.vision.calibration_s,
                 "Seconds of face a person is calibrated on before vision events are trusted")
      ->envname("PARLEY_CALIBRATION_S")
      ->capture_default_str()
      ->group("Vision");
  cli.add_option("--gaze-yaw-limit", c.conversation.vision.gaze_yaw_limit_deg,
                 "Degrees left/right of a person's usual gaze beyond which they look away")
      ->envname("PARLEY_GAZE_YAW_LIMIT")
      ->capture_default_str()
      ->group("Vision");
  cli.add_option("--gaze-pitch-limit", c.conversation.vision.gaze_pitch_limit_deg,
                 "Degrees up/down of a person's usual gaze beyond which they look away")
      ->envname("PARLEY_GAZE_PITCH_LIMIT")
      ->capture_default_str()
      ->group("Vision");
  cli.add_option("--server-landmarks", c.conversation.server_landmarks,
                 "Find landmarks with dlib in the video of sessions that send none")
      ->envname("PARLEY_SERVER_LANDMARKS")
      ->capture_default_str()
      ->group("Vision");
  cli.add_option("--dlib-model", c.conversation.landmarker.shape_model,
                 "dlib 68-point shape predictor (Debian package libdlib-data)")
      ->envname("PARLEY_DLIB_MODEL")
      ->capture_default_str()
      ->group("Vision");
  cli.add_option("--landmark-detect-width", c.conversation.landmarker.detect_width,
                 "Width video is scaled to for face detection")
      ->envname("PARLEY_LANDMARK_DETECT_WIDTH")
      ->capture_default_str()
      ->group("Vision");
  cli.add_option("--landmark-redetect-every", c.conversation.landmarker.redetect_every,
                 "Frames between full face detections (tracked in between)")
      ->envname("PARLEY_LANDMARK_REDETECT_EVERY")
      ->capture_default_str()
      ->group("Vision");
  cli.add_option("--vision-threads", c.conversation.vision_workers.threads,
                 "Threads for server-side landmarks")
      ->envname("PARLEY_VISION_THREADS")
      ->capture_default_str()
      ->group("Vision");

  cli.add_option("--asr", c.conversation.hearing.enabled,
                 "Transcribe what the person says (PocketSphinx)")
      ->envname("PARLEY_ASR")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--asr-decoders", c.conversation.hearing.asr.pool_size,
                 "PocketSphinx decoders loaded and shared by all sessions (~90 MB each); a "
                 "speaking person holds one for the turn, so this many people are heard at once")
      ->envname("PARLEY_ASR_DECODERS")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--asr-threads", c.conversation.hearing.threads,
                 "Threads decoding speech (CPU-bound: about the number of cores)")
      ->envname("PARLEY_ASR_THREADS")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--asr-partials", c.conversation.hearing.asr.partials,
                 "transcript.partial while the person speaks (the decoder's running hypothesis)")
      ->envname("PARLEY_ASR_PARTIALS")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--asr-second-pass", c.conversation.hearing.asr.second_pass,
                 "PocketSphinx's second (fwdflat) search pass once a turn ends: more CPU and "
                 "latency, no measured accuracy gain on streamed turns")
      ->envname("PARLEY_ASR_SECOND_PASS")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--partial-interval-ms", c.conversation.hearing.partial_interval_ms,
                 "transcript.partial at most this often per utterance")
      ->envname("PARLEY_PARTIAL_INTERVAL_MS")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--asr-remote-url", c.conversation.hearing.remote.base_url,
                 "OpenAI-compatible API base URL (e.g. https://api.openai.com/v1); set: "
                 "transcribe there, PocketSphinx as the fallback")
      ->envname("OPENAI_BASE_URL")
      ->group("Hearing");
  cli.add_option("--asr-remote-key", c.conversation.hearing.remote.api_key,
                 "Bearer token for the remote service")
      ->envname("OPENAI_API_KEY")
      ->group("Hearing");
  cli.add_option("--asr-remote-model", c.conversation.hearing.remote.model,
                 "Remote transcription model")
      ->envname("PARLEY_ASR_REMOTE_MODEL")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--asr-language", c.conversation.hearing.remote.language,
                 "Language hint for the remote service (ISO-639-1; empty: detect)")
      ->envname("PARLEY_ASR_LANGUAGE")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--asr-remote-timeout-ms", c.conversation.hearing.remote.timeout_ms,
                 "Remote request timeout, per attempt")
      ->envname("PARLEY_ASR_REMOTE_TIMEOUT_MS")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--asr-remote-retries", c.conversation.hearing.remote.retries,
                 "Further attempts after a failed remote request (network, 5xx, 429)")
      ->envname("PARLEY_ASR_REMOTE_RETRIES")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--asr-remote-concurrency", c.conversation.hearing.remote_concurrency,
                 "Remote requests in flight at once")
      ->envname("PARLEY_ASR_REMOTE_CONCURRENCY")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--asr-queue", c.conversation.hearing.queue,
                 "Utterances that may wait for a free decoder")
      ->envname("PARLEY_ASR_QUEUE")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--asr-model-dir", c.conversation.hearing.asr.model_dir,
                 "PocketSphinx acoustic model directory")
      ->envname("PARLEY_ASR_MODEL_DIR")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--asr-dictionary", c.conversation.hearing.asr.dictionary,
                 "PocketSphinx pronunciation dictionary")
      ->envname("PARLEY_ASR_DICTIONARY")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--asr-language-model", c.conversation.hearing.asr.language_model,
                 "PocketSphinx language model")
      ->envname("PARLEY_ASR_LANGUAGE_MODEL")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--vad-aggressiveness", c.conversation.hearing.endpoint.aggressiveness,
                 "WebRTC VAD mode 0..3 (3 rejects the most non-speech)")
      ->envname("PARLEY_VAD_AGGRESSIVENESS")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--end-of-turn-ms", c.conversation.hearing.endpoint.end_silence_ms,
                 "Trailing silence that ends the person's turn")
      ->envname("PARLEY_END_OF_TURN_MS")
      ->capture_default_str()
      ->group("Hearing");
  cli.add_option("--min-utterance-ms", c.conversation.hearing.endpoint.min_utterance_ms,
                 "Shorter voiced bursts are not transcribed")
      ->envname("PARLEY_MIN_UTTERANCE_MS")
      ->capture_default_str()
      ->group("Hearing");

  cli.add_option("--jwt-secret-key", c.auth.jwt_secret_key,
                 "HS256 secret for bearer tokens; unset = development mode (one local user)")
      ->envname("JWT_SECRET_KEY")
      ->group("Auth");

  cli.add_option("--data-dir", c.data_dir, "Embedded store, spool and recordings")
      ->envname("PARLEY_DATA_DIR")
      ->capture_default_str()
      ->group("Store");
  cli.add_option("--mongodb-uri", c.store.mongodb_uri,
                 "MongoDB connection string; unset = embedded file store in --data-dir")
      ->envname("MONGODB_URI")
      ->group("Store");
  cli.add_option("--database-name", c.store.database, "MongoDB database")
      ->envname("DATABASE_NAME")
      ->capture_default_str()
      ->group("Store");
  cli.add_option("--mongo-write-concern", c.store.write_concern,
                 "MongoDB write concern: majority or a number of nodes")
      ->envname("PARLEY_MONGO_WRITE_CONCERN")
      ->capture_default_str()
      ->group("Store");
  cli.add_option("--mongo-timeout-ms", c.store.timeout_ms,
                 "MongoDB server selection, connect and socket timeout")
      ->envname("PARLEY_MONGO_TIMEOUT_MS")
      ->capture_default_str()
      ->group("Store");
  cli.add_option("--mongo-retries", c.store.retries,
                 "Retries of a MongoDB write on transient errors before it is spooled")
      ->envname("PARLEY_MONGO_RETRIES")
      ->capture_default_str()
      ->group("Store");
  cli.add_option("--spool-replay-ms", c.store.replay_interval_ms,
                 "How often spooled writes are retried while MongoDB is away")
      ->envname("PARLEY_SPOOL_REPLAY_MS")
      ->capture_default_str()
      ->group("Store");

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

  c.server.allowed_origins = SplitList(origins);
  auto kib = [](int v) { return v > 0 ? static_cast<size_t>(v) * 1024 : 0; };
  c.server.max_message_bytes = kib(max_message_kib);
  c.server.max_http_body_bytes = kib(max_body_kib);
  c.server.send_queue_max_bytes = kib(send_queue_kib);
  c.store.data_dir = c.data_dir;
  c.conversation.media.max_backlog_bytes = kib(backlog_kib);

  if (const auto problems = c.Validate(); !problems.empty()) {
    err << "parley: invalid configuration:\n";
    for (const auto& p : problems) err << "  - " << p << "\n";
    err << "Run 'parley --help' for the options.\n";
    return 2;
  }
  return c;
}

}  // namespace parley::app
