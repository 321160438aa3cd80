// Wiring between sessions and vision/: landmark frames from clients (JSON on /ws/landmarks,
// binary 0x03 on either endpoint) and, for sessions that send video but no landmarks, dlib's
// landmarks on decoded frames. Events and scores go back to the session's connections; the
// session's timeline and report get the rest.
//
// Client frames are parsed and analysed right on the service thread: that is bounded CPU work
// (~25 µs for a 478-point JSON frame, ~7 µs binary: bench/vision_bench), cheaper than handing
// each frame to a worker (the hand-off's wake-ups and copies cost more than the analysis:
// bench/ws_load --faces, see the vision issue's note), and a client faster than the analysis
// is slowed by TCP instead of having frames dropped. dlib (~5-10 ms a frame) runs on the
// vision pool, one frame in flight per session.
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <thread>

#include "app/app_impl.h"

namespace parley::app {
namespace {

constexpr auto kClientLandmarksWin = std::chrono::seconds(2);
constexpr double kClockResetMs = 5000;  // t going back this far: the client restarted its clock

struct Input {
  enum class Kind { kJson, kBinary, kServer } kind;
  std::string_view bytes;       // borrowed for the call
  vision::LandmarkFrame frame;  // kServer: already landmarks, t on the session clock
};

Json::Value Axis(const vision::AxisStats& a) {
  Json::Value v(Json::objectValue);
  v["mean"] = a.mean;
  v["std"] = a.std;
  return v;
}

double Round(double v, double unit) { return std::round(v / unit) * unit; }
Json::Value Score(double v) { return Json::Int(std::lround(std::clamp(v, 0.0, 100.0))); }

}  // namespace

struct App::Impl::VisionState {
  explicit VisionState(const vision::VisionConfig& config) : analyzer(config) {}

  // Shared by the service thread and the vision pool.
  std::mutex mu;
  std::condition_variable idle;
  bool ended = false;
  bool landmarker_busy = false;
  std::chrono::steady_clock::time_point last_client_frame{};

  // Analysis: the service thread (client frames), a vision worker (server frames), EndVision.
  std::mutex analysis_mu;
  vision::FaceAnalyzer analyzer;
  vision::JsonFrameParser parser;
  std::unique_ptr<vision::Landmarker> landmarker;  // vision pool only (one job at a time)
  bool have_clock = false;
  double client_t0 = 0, session_t0 = 0, last_client_t = 0;
  double origin = -1;  // session-clock time of the analyzer's first frame
  double last_t = -1;  // session-clock time of the last analysed frame
  uint64_t frames = 0, rejected = 0, late = 0, skipped = 0, client_frames = 0, server_frames = 0;
  std::unordered_map<std::string, std::pair<std::chrono::steady_clock::time_point, int>> throttle;
  bool told_no_server_landmarks = false;
};

void App::Impl::AttachVision(const std::shared_ptr<Session>& session) {
  auto st = std::make_shared<VisionState>(config.vision);
  {
    const std::lock_guard lock(vision_mu);
    vision_states[session->id()] = st;
  }
  std::weak_ptr<Session> weak_session = session;
  std::weak_ptr<VisionState> weak_state = st;

  // Errors to the session's clients: one per code per second, with a count of the rest.
  auto report_error = [this](Session& s, VisionState& v, const std::string& code,
                             const std::string& message) {
    metrics
        .GetCounter("parley_errors_total", "Error responses and events by code", {{"code", code}})
        .Add();
    auto& [last, suppressed] = v.throttle[code];
    const auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::seconds(1)) {
      ++suppressed;
      return;
    }
    Json::Value e(Json::objectValue);
    e["type"] = "error";
    e["error"]["code"] = code;
    e["error"]["message"] = message;
    if (suppressed > 0) e["error"]["repeated"] = suppressed;
    last = now;
    suppressed = 0;
    s.Emit(e);
  };

  // Looked up once per session, not per frame (30 a second per session).
  const auto frames_counter = [this](const char* outcome) {
    return &metrics.GetCounter("parley_landmark_frames_total", "Landmark frames by outcome",
                               {{"outcome", outcome}});
  };
  core::Counter* const rejected_frames = frames_counter("rejected");
  core::Counter* const late_frames = frames_counter("late");
  core::Counter* const analysed_frames = frames_counter("analysed");

  // Runs one frame through the analyser; analysis_mu held.
  auto analyse = [this, report_error, rejected_frames, late_frames, analysed_frames](
                     Session& s, VisionState& v, Input& in) {
    vision::LandmarkFrame frame;
    std::string error;
    bool ok = true;
    if (in.kind == Input::Kind::kJson) {
      ok = v.parser.Parse(in.bytes, &frame, &error);
    } else if (in.kind == Input::Kind::kBinary) {
      ok = vision::ParseBinaryFrame(in.bytes, &frame, &error);
    } else {
      frame = std::move(in.frame);
    }
    if (!ok) {
      ++v.rejected;
      rejected_frames->Add();
      report_error(s, v, "bad_landmarks", error);
      return;
    }
    // Client clock → session clock: anchored at the first frame, re-anchored when the client's
    // clock restarts (a reconnect); the session clock then follows the frames' own pace.
    double t = frame.t_ms;
    const double client_t = frame.t_ms;
    if (in.kind != Input::Kind::kServer) {
      if (!v.have_clock || frame.t_ms < v.last_client_t - kClockResetMs) {
        v.have_clock = true;
        v.client_t0 = frame.t_ms;
        v.session_t0 = std::max(static_cast<double>(s.NowMs()), v.last_t + 1);
      }
      v.last_client_t = std::max(v.last_client_t, frame.t_ms);
      t = v.session_t0 + (frame.t_ms - v.client_t0);
    }
    if (t <= v.last_t) {
      ++v.late;
      late_frames->Add();
      report_error(s, v, "late_frame",
                   "landmark frame t=" + std::to_string(frame.t_ms) +
                       " is not after the previous frame; dropped (t must increase)");
      return;
    }
    v.last_t = t;
    if (v.origin < 0) v.origin = t;
    frame.t_ms = t;
    ++v.frames;
    ++(in.kind == Input::Kind::kServer ? v.server_frames : v.client_frames);
    analysed_frames->Add();
    std::vector<vision::Event> events;
    v.analyzer.Process(frame, &events);
    for (const auto& e : events) {
      const auto at = static_cast<int64_t>(std::llround(v.origin + e.t_ms));
      Json::Value msg(Json::objectValue);
      msg["type"] = e.type;
      msg["t"] = Json::Int64(at);
      Json::Value data(Json::objectValue);
      if (e.duration_ms >= 0) {
        msg["duration_ms"] = std::round(e.duration_ms);
        data["duration_ms"] = std::round(e.duration_ms);
      }
      s.Emit(msg);
      s.timeline().AddEvent(at, e.type, data);
    }
    if (auto sc = v.analyzer.TakeScoresIfDue()) {
      const auto at = static_cast<int64_t>(std::llround(v.origin + sc->t_ms));
      Json::Value msg(Json::objectValue);
      msg["type"] = "scores";
      msg["t"] = Json::Int64(at);
      msg["calibrated"] = sc->calibrated;
      // The client's own t of the frame that completed this second (lets a client line the
      // scores up with its video, and measure latency).
      if (in.kind != Input::Kind::kServer) msg["frame_t"] = client_t;
      msg["gaze_on_screen_ratio"] = Round(sc->gaze_on_screen_ratio, 0.001);
      msg["blink_rate_per_min"] = Round(sc->blink_rate_per_min, 0.1);
      msg["smile_ratio"] = Round(sc->smile_ratio, 0.001);
      msg["face_visible_ratio"] = Round(sc->face_visible_ratio, 0.001);
      msg["head_pose_deg"]["yaw"] = Round(sc->head_yaw_deg, 0.1);
      msg["head_pose_deg"]["pitch"] = Round(sc->head_pitch_deg, 0.1);
      msg["head_pose_deg"]["roll"] = Round(sc->head_roll_deg, 0.1);
      msg["scores"]["gaze"] = Score(sc->gaze_score);
      msg["scores"]["blinking"] = Score(sc->blink_score);
      msg["scores"]["expression"] = Score(sc->expression_score);
      msg["scores"]["posture"] = Score(sc->posture_score);
      s.Emit(msg, /*droppable=*/true);
      Json::Value sample(Json::objectValue);
      for (const char* k :
           {"gaze_on_screen_ratio", "blink_rate_per_min", "smile_ratio", "face_visible_ratio"})
        sample[k] = msg[k];
      sample["head_yaw_deg"] = msg["head_pose_deg"]["yaw"];
      sample["head_pitch_deg"] = msg["head_pose_deg"]["pitch"];
      sample["head_roll_deg"] = msg["head_pose_deg"]["roll"];
      s.timeline().AddSample(at, sample);
    }
  };

  // Analyses a frame now, on the calling thread.
  auto submit = [weak_session, weak_state, analyse](Input in) {
    const auto v = weak_state.lock();
    const auto s = weak_session.lock();
    if (!v || !s) return;
    {
      const std::lock_guard lock(v->mu);
      if (v->ended) return;
      if (in.kind != Input::Kind::kServer) v->last_client_frame = std::chrono::steady_clock::now();
    }
    const std::lock_guard lock(v->analysis_mu);
    analyse(*s, *v, in);
  };

  session->SetLandmarkTextSink([submit](std::string_view text) {
    submit(Input{Input::Kind::kJson, text, {}});
  });
  session->SetBinarySink(static_cast<uint8_t>(FrameKind::kLandmarks),
                         [submit](std::string_view bytes) {
                           submit(Input{Input::Kind::kBinary, bytes, {}});
                         });

  if (!config.server_landmarks) return;
  // Server-side landmarks: only while the client sends none, one frame in flight per session
  // (frames arriving meanwhile are skipped: analysis runs at the rate dlib keeps up with).
  session->AddVideoConsumer([this, weak_session, weak_state, submit, report_error](
                                int64_t t_ms, int width, int height, int stride,
                                const uint8_t* bgr) {
    const auto v = weak_state.lock();
    if (!v || width <= 0 || height <= 0) return;
    auto pixels = std::make_shared<std::vector<uint8_t>>();
    {
      const std::lock_guard lock(v->mu);
      if (v->ended || std::chrono::steady_clock::now() - v->last_client_frame < kClientLandmarksWin)
        return;
      if (v->landmarker_busy) {  // dlib is still on the previous frame
        ++v->skipped;
        return;
      }
      v->landmarker_busy = true;
    }
    // The frame is only valid during this call: copy it (packed BGR).
    pixels->resize(static_cast<size_t>(width) * height * 3);
    for (int y = 0; y < height; ++y)
      std::memcpy(pixels->data() + static_cast<size_t>(y) * width * 3,
                  bgr + static_cast<size_t>(y) * stride, static_cast<size_t>(width) * 3);
    const bool queued = vision_pool.TrySubmit(
        [this, weak_session, v, pixels, t_ms, width, height, submit, report_error] {
          const auto model = LandmarkerModel();
          if (!model) {
            const auto s = weak_session.lock();
            const std::lock_guard lock(v->analysis_mu);
            if (s && !v->told_no_server_landmarks) {
              v->told_no_server_landmarks = true;
              report_error(*s, *v, "server_landmarks_unavailable",
                           "video cannot be analysed on the server: " + landmarker.error());
            }
          } else {
            if (!v->landmarker) v->landmarker = std::make_unique<vision::Landmarker>(model);
            Input in{Input::Kind::kServer, {}, {}};
            in.frame = v->landmarker->Detect(static_cast<double>(t_ms), width, height, width * 3,
                                             pixels->data());
            submit(std::move(in));
          }
          const std::lock_guard lock(v->mu);
          v->landmarker_busy = false;
          v->idle.notify_all();
        });
    if (!queued) {
      const std::lock_guard lock(v->mu);
      v->landmarker_busy = false;
      ++v->skipped;
    }
  });
}

std::shared_ptr<const vision::LandmarkerModel> App::Impl::LandmarkerModel() {
  return landmarker.Get(
      [this](std::string* error) { return vision::LoadLandmarkerModel(config.landmarker, error); },
      log, "dlib landmark model " + config.landmarker.shape_model);
}

void App::Impl::EndVision(Session& s) {
  const auto v = FindSessionState(vision_mu, vision_states, s.id(), /*take=*/true);
  if (!v) return;
  {
    std::unique_lock lock(v->mu);
    v->ended = true;
    // A frame dlib is working on still counts.
    v->idle.wait_for(lock, std::chrono::seconds(10), [&] { return !v->landmarker_busy; });
  }
  const std::lock_guard lock(v->analysis_mu);
  if (v->frames == 0 && v->rejected == 0 && v->late == 0) return;  // no landmarks: not measured
  std::vector<vision::Event> events;
  v->analyzer.Finish(&events);
  for (const auto& e : events)
    s.timeline().AddEvent(static_cast<int64_t>(std::llround(v->origin + e.t_ms)), e.type);
  const vision::SessionMetrics m = v->analyzer.Metrics();
  Json::Value patch(Json::objectValue);
  Json::Value& mx = patch["metrics"];
  Json::Value& fb = patch["feedback"];
  Json::Value& info = mx["vision"];
  info["frames"] = static_cast<Json::UInt64>(m.frames);
  info["face_frames"] = static_cast<Json::UInt64>(m.face_frames);
  info["analysed_s"] = Round(m.analysed_s, 0.01);
  info["client_frames"] = static_cast<Json::UInt64>(v->client_frames);
  info["server_frames"] = static_cast<Json::UInt64>(v->server_frames);
  info["rejected_frames"] = static_cast<Json::UInt64>(v->rejected);
  info["late_frames"] = static_cast<Json::UInt64>(v->late);
  info["skipped_video_frames"] = static_cast<Json::UInt64>(v->skipped);
  info["gaze_from_head_only"] = m.gaze_from_head_only;
  info["gaze_away_episodes"] = m.gaze_away_episodes;
  if (m.frames > 0) mx["face_visible_ratio"] = Round(m.face_visible_ratio, 0.0001);
  if (m.face_frames > 0) {
    mx["blinks"] = m.blinks;
    mx["blink_rate_per_min"] = Round(m.blink_rate_per_min, 0.01);
    mx["gaze_on_screen_ratio"] = Round(m.gaze_on_screen_ratio, 0.0001);
    mx["head_pose_deg"]["yaw"] = Axis(m.yaw);
    mx["head_pose_deg"]["pitch"] = Axis(m.pitch);
    mx["head_pose_deg"]["roll"] = Axis(m.roll);
    mx["smile_ratio"] = Round(m.smile_ratio, 0.0001);
    mx["posture"]["tilt_deg"] = Round(m.tilt_deg, 0.01);
    mx["posture"]["slouch_deg"] = Round(m.slouch_deg, 0.01);
    mx["posture"]["lean_ratio"] = Round(m.lean_ratio, 0.0001);
    mx["posture"]["vertical_drift"] = Round(m.vertical_drift, 0.0001);
    mx["posture"]["fidget_per_s"] = Round(m.fidget_per_s, 0.0001);
    fb["gaze_stability"] = Score(m.gaze_score);
    fb["blinking"] = Score(m.blink_score);
    fb["posture"] = Score(m.posture_score);
    fb["expression"] = Score(m.expression_score);
    fb["expression_score"] = Score(m.expression_score);
    fb["concentration"] = Score(100 * m.face_visible_ratio * m.gaze_on_screen_ratio);
  }
  s.MergeReport(patch);
}

}  // namespace parley::app
