// Internal to app/: the application object shared by app.cc (lifecycle), api.cc (HTTP routes)
// and live.cc (WebSocket protocol).
#pragma once

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "app/app.h"
#include "media/media.h"
#include "personas/personas.h"
#include "speech/speech.h"

namespace parley::app {

inline constexpr int kProtocolVersion = 1;
// A text message on /ws/landmarks up to this size is checked for a control "type"; larger
// ones are always landmark frames (docs/protocol.md).
inline constexpr size_t kMaxControlMessageBytes = 4096;

// A session's analyser state in a per-analyser map: looked up (and, at the session's end,
// taken out) under that map's mutex. Null when the session has none.
template <typename State>
std::shared_ptr<State> FindSessionState(
    std::mutex& mu, std::unordered_map<std::string, std::shared_ptr<State>>& states,
    const std::string& session_id, bool take) {
  const std::lock_guard lock(mu);
  const auto it = states.find(session_id);
  if (it == states.end()) return nullptr;
  auto state = it->second;
  if (take) states.erase(it);
  return state;
}

// A model that is slow to load (~100 MB, ~1 s: dlib's landmarks, PocketSphinx's decoders),
// loaded once on first use from a worker and shared afterwards. state() is for /health and
// never waits for the load.
template <typename T>
class LazyModel {
 public:
  // `load` returns the model, or null with the reason in its argument; the outcome is logged.
  std::shared_ptr<T> Get(const std::function<std::shared_ptr<T>(std::string*)>& load,
                         core::Logger& log, const std::string& what) {
    const std::lock_guard lock(mu_);
    if (!model_ && error_.empty()) {
      state_ = "loading";
      const auto t0 = std::chrono::steady_clock::now();
      model_ = load(&error_);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      state_ = model_ ? "ready" : "failed";
      if (model_)
        log.Info(what + " loaded", {{"load_ms", static_cast<Json::Int64>(ms)}});
      else
        log.Error(what + " could not load: off", {{"error", error_}});
    }
    return model_;
  }
  // "not_loaded", "loading", "ready" or "failed".
  const char* state() const { return state_.load(); }
  // The model when it has loaded; null otherwise (never waits for a load in progress).
  std::shared_ptr<T> IfLoaded() const {
    const std::unique_lock lock(mu_, std::try_to_lock);
    return lock.owns_lock() ? model_ : nullptr;
  }
  std::string error() const {
    const std::lock_guard lock(mu_);
    return error_;
  }

 private:
  mutable std::mutex mu_;  // held while loading
  std::shared_ptr<T> model_;
  std::string error_;
  std::atomic<const char*> state_{"not_loaded"};
};

struct App::Impl final : signaling::Handler {
  Impl(AppConfig c, core::Logger& l);

  // signaling::Handler
  signaling::HttpResponse HandleHttp(const signaling::HttpRequest& request) override;
  signaling::UpgradeDecision OnUpgrade(const signaling::UpgradeRequest& request) override;
  void OnOpen(signaling::ConnectionId id, const signaling::UpgradeRequest& request,
              const std::string& tag) override;
  void OnMessage(signaling::ConnectionId id, bool binary, std::string_view data) override;
  void OnClosed(signaling::ConnectionId id, uint16_t close_code) override;

  // api.cc
  signaling::HttpResponse Route(const signaling::HttpRequest& req);
  signaling::HttpResponse Health();
  signaling::HttpResponse CreateSession(const signaling::HttpRequest& req);
  signaling::HttpResponse ListSessions(const signaling::HttpRequest& req);
  // The caller's session, or nullptr (also for another user's session: no existence leak).
  std::shared_ptr<Session> OwnSession(const signaling::HttpRequest& req, const std::string& id);
  // The caller's session document (memory first, then the store), in API shape.
  // 404/503 responses in `error` when there is none.
  std::optional<Json::Value> SessionView(const signaling::HttpRequest& req, const std::string& id,
                                         signaling::HttpResponse* error);
  // format: "json", "csv" or "html".
  signaling::HttpResponse Report(const signaling::HttpRequest& req, const std::string& id,
                                 const std::string& format);
  signaling::HttpResponse DeleteSession(const signaling::HttpRequest& req, const std::string& id);

  // media_glue.cc
  struct MediaTotals {
    std::atomic<uint64_t> audio_samples{0};
    std::atomic<uint64_t> video_frames{0};
    std::atomic<uint64_t> decode_errors{0};
    std::atomic<uint64_t> bytes_in{0};
    std::atomic<uint64_t> dropped_waiting_keyframe{0};
    void Add(const media::IngestStats& s) {
      dropped_waiting_keyframe += s.dropped_frames_waiting_keyframe.load();
      audio_samples += s.audio_samples.load();
      video_frames += s.video_frames.load();
      decode_errors += s.decode_errors.load();
      bytes_in += s.bytes_in.load();
    }
  };
  // Between the service thread (which feeds bytes) and the worker that builds the pipeline:
  // bytes that arrive before the pipeline exists wait here (bounded by the media backlog).
  struct Feeder {
    std::mutex mu;
    std::unique_ptr<media::IngestPipeline> pipeline;  // null until built
    std::vector<std::string> early;
    size_t early_bytes = 0;
    bool closed = false;  // stop/end: input refused; the pipeline is retired once built
    bool failed = false;
  };
  struct MediaState {
    explicit MediaState(core::WorkerPool& pool) : strand(pool) {}
    std::shared_ptr<Feeder> feeder;  // the current start's
    std::shared_ptr<MediaTotals> totals = std::make_shared<MediaTotals>();
    core::Strand strand;  // builds and stops, in the order of start and stop messages
  };
  void AttachMedia();
  bool StartMedia(Session& s, const StartParams& params, std::string* error);
  void StopMedia(Session& s);  // service thread: hands the teardown to a worker
  void EndMedia(Session& s);   // worker: waits for teardown, adds metrics.media
  void Retire(MediaState& st);
  std::mutex media_mu;
  std::unordered_map<std::string, MediaState> media_states;

  // vision_glue.cc: landmark frames (client JSON/binary on the service thread, or dlib on
  // decoded video on the vision pool) → the session's FaceAnalyzer, in order.
  struct VisionState;
  void AttachVision(const std::shared_ptr<Session>& session);
  void EndVision(Session& s);  // worker: waits for dlib's frame, adds vision metrics to the report
  std::shared_ptr<const vision::LandmarkerModel> LandmarkerModel();  // loads once
  std::mutex vision_mu;
  std::unordered_map<std::string, std::shared_ptr<VisionState>> vision_states;
  LazyModel<const vision::LandmarkerModel> landmarker;

  // hearing_glue.cc: the session's audio → endpointer → streaming recognition (ASR pool, or
  // the remote engine on its own pool) → transcript, prosody and talk metrics.
  struct HearingState;
  struct HearingJob;
  void AttachHearing(const std::shared_ptr<Session>& session);
  void TrackUtterances(HearingState& v, std::vector<speech::EndpointEvent>& events,
                       bool stream_to_decoder);
  void EmitEndpointEvents(Session& s, const std::vector<speech::EndpointEvent>& events);
  bool HasWork(const HearingJob& job) const;
  bool StreamsWhileSpoken() const;  // turns decode while spoken (the offline engine)
  void Kick(const std::shared_ptr<HearingState>& v);
  void Retire(HearingState& v, const std::shared_ptr<HearingJob>& job);
  void Pump(const std::shared_ptr<HearingState>& v, const std::shared_ptr<HearingJob>& job);
  void RequestDecoder(Session& s, const std::shared_ptr<HearingState>& v,
                      const std::shared_ptr<HearingJob>& job);
  void MaybeEmitPartial(Session& s, HearingJob& job);
  void TranscribeRemotely(const std::shared_ptr<HearingState>& v,
                          const std::shared_ptr<HearingJob>& job);
  void Deliver(Session& s, HearingState& v, const HearingJob& job, const speech::Recognition& r);
  void StopHearing(Session& s);  // flushes the endpointer: a turn in progress ends
  void EndHearing(Session& s);   // worker: waits (bounded) for the session's transcripts
  std::shared_ptr<speech::DecoderPool> Decoders();  // loads once, on an ASR thread
  std::mutex hearing_mu;
  std::unordered_map<std::string, std::shared_ptr<HearingState>> hearing_states;
  LazyModel<speech::DecoderPool> decoders;

  // Lifecycle glue (app.cc).
  bool PersistSession(const Session& s);
  // Builds and stores the report and the final session document; true when both are safe.
  bool StoreReport(Session& s);

  // live.cc
  enum class Endpoint { kPractice, kLandmarks };
  struct LiveConn {
    Endpoint endpoint = Endpoint::kPractice;
    std::shared_ptr<Session> session;
    int protocol = kProtocolVersion;
    struct Throttle {
      std::chrono::steady_clock::time_point last{};
      int suppressed = 0;
    };
    std::unordered_map<std::string, Throttle> error_throttle;
  };
  void OnControl(signaling::ConnectionId id, LiveConn& conn, const Json::Value& msg);
  void OnBinary(signaling::ConnectionId id, LiveConn& conn, std::string_view data);
  void OnLandmarkText(signaling::ConnectionId id, LiveConn& conn, std::string_view text);
  void SendError(signaling::ConnectionId id, LiveConn& conn, const std::string& code,
                 const std::string& message);
  void DropForNoSink(signaling::ConnectionId id, LiveConn& conn, const std::string& what);

  AppConfig config;
  core::Logger& log;
  core::Metrics metrics;
  core::WorkerPool pool;
  core::WorkerPool vision_pool;  // server-side landmarks: slow, kept off the general pool
  core::WorkerPool asr_pool;     // decoding; at most one task per session queued
  core::WorkerPool remote_pool;  // requests to the remote transcription service (network waits)
  std::unique_ptr<speech::RemoteRecognizer> remote_asr;  // when one is configured
  std::optional<personas::Catalog> personas;
  std::unique_ptr<store::Store> store;
  SessionRegistry registry;
  signaling::StaticFiles static_files;
  std::unique_ptr<signaling::Server> server;
  const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::atomic<bool> shut_down{false};

  // Service-thread only.
  std::unordered_map<signaling::ConnectionId, LiveConn> live;
};

// report.cc
Json::Value BuildReport(const Session& session, const personas::Persona* persona);
// A report (API shape) as CSV of its per-second timeline, and as a printable HTML page.
std::string RenderReportCsv(const Json::Value& report);
std::string RenderReportHtml(const Json::Value& report);

}  // namespace parley::app
