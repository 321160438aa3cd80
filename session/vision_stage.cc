// Vision: landmark frames from clients (JSON on /ws/landmarks, binary 0x03 on either endpoint)
// and, for sessions that send video but no landmarks, dlib's landmarks on decoded frames.
// Events and scores go to the session's clients; the timeline and report get the rest.
//
// Client frames are parsed and analysed right on the service thread: that is bounded CPU work
// (~25 µs for a 478-point JSON frame, ~7 µs binary: bench/vision_bench), cheaper than handing
// each frame to a worker (the hand-off's wake-ups and copies cost more than the analysis:
// bench/ws_load --faces), and a client faster than the analysis is slowed by TCP instead of
// having frames dropped. dlib (~5-10 ms a frame) runs on the vision pool, one frame in flight
// per session.
#include <cmath>
#include <cstring>

#include "session/internal.h"

namespace parley::session {
namespace {

constexpr auto kClientLandmarksWin = std::chrono::seconds(2);

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
constexpr double kClockResetMs = 5000;  // t going back this far: the client restarted its clock

Json::Value Axis(const vision::AxisStats& a) {
  Json::Value v(Json::objectValue);
  v["mean"] = a.mean;
  v["std"] = a.std;
  return v;
}

int Score(double v) { return static_cast<int>(std::lround(std::clamp(v, 0.0, 100.0))); }

}  // namespace

struct VisionStage::Input {
  enum class Kind { kJson, kBinary, kServer } kind;
  std::string_view bytes;       // borrowed for the call
  vision::LandmarkFrame frame;  // kServer: already landmarks, t on the session clock
};

VisionStage::VisionStage(std::weak_ptr<Session> session, Services& services)
    : session_(std::move(session)),
      services_(services),
      // Looked up once per session, not per frame (30 a second per session).
      rejected_frames_(services.metrics().GetCounter(
          "parley_landmark_frames_total", "Landmark frames by outcome", {{"outcome", "rejected"}})),
      late_frames_(services.metrics().GetCounter(
          "parley_landmark_frames_total", "Landmark frames by outcome", {{"outcome", "late"}})),
      analysed_frames_(services.metrics().GetCounter(
          "parley_landmark_frames_total", "Landmark frames by outcome", {{"outcome", "analysed"}})),
      analyzer_(services.config().vision) {}

// Errors to the session's clients: one per code per second, with a count of the rest.
// (analysis_mu_ held.)
void VisionStage::ReportError(Session& s, const std::string& code, const std::string& message) {
  services_.metrics()
      .GetCounter("parley_errors_total", "Error responses and events by code", {{"code", code}})
      .Add();
  auto& [last, suppressed] = throttle_[code];
  const auto now = std::chrono::steady_clock::now();
  if (now - last < std::chrono::seconds(1)) {
    ++suppressed;
    return;
  }
  ErrorEvent e{code, message, std::nullopt, suppressed};
  last = now;
  suppressed = 0;
  s.Emit(std::move(e));
}

// Runs one frame through the analyser; analysis_mu_ held.
void VisionStage::Analyse(Session& s, Input& in) {
  vision::LandmarkFrame frame;
  std::string error;
  bool ok = true;
  if (in.kind == Input::Kind::kJson) {
    ok = parser_.Parse(in.bytes, &frame, &error);
  } else if (in.kind == Input::Kind::kBinary) {
    ok = vision::ParseBinaryFrame(in.bytes, &frame, &error);
  } else {
    frame = std::move(in.frame);
  }
  if (!ok) {
    ++rejected_;
    rejected_frames_.Add();
    ReportError(s, "bad_landmarks", error);
    return;
  }
  // Client clock → session clock: anchored at the first frame, re-anchored when the client's
  // clock restarts (a reconnect); the session clock then follows the frames' own pace.
  double t = frame.t_ms;
  const double client_t = frame.t_ms;
  if (in.kind != Input::Kind::kServer) {
    if (!have_clock_ || frame.t_ms < last_client_t_ - kClockResetMs) {
      have_clock_ = true;
      client_t0_ = frame.t_ms;
      session_t0_ = std::max(static_cast<double>(s.NowMs()), last_t_ + 1);
    }
    last_client_t_ = std::max(last_client_t_, frame.t_ms);
    t = session_t0_ + (frame.t_ms - client_t0_);
  }
  if (t <= last_t_) {
    ++late_;
    late_frames_.Add();
    ReportError(s, "late_frame",
                "landmark frame t=" + std::to_string(frame.t_ms) +
                    " is not after the previous frame; dropped (t must increase)");
    return;
  }
  last_t_ = t;
  if (origin_ < 0) origin_ = t;
  frame.t_ms = t;
  ++frames_;
  ++(in.kind == Input::Kind::kServer ? server_frames_ : client_frames_);
  analysed_frames_.Add();
  std::vector<vision::Event> events;
  analyzer_.Process(frame, &events);
  for (const auto& e : events) {
    const auto at = static_cast<int64_t>(std::llround(origin_ + e.t_ms));
    VisionNotice notice{e.type, std::nullopt};
    Json::Value data(Json::objectValue);
    if (e.duration_ms >= 0) {
      notice.duration_ms = std::round(e.duration_ms);
      data["duration_ms"] = std::round(e.duration_ms);
    }
    s.Emit(std::move(notice), false, at);
    s.timeline().AddEvent(at, e.type, data);
    if (on_event_) on_event_(e.type);
  }
  if (auto sc = analyzer_.TakeScoresIfDue()) {
    const auto at = static_cast<int64_t>(std::llround(origin_ + sc->t_ms));
    LiveScores live;
    live.calibrated = sc->calibrated;
    // The client's own t of the frame that completed this second (lets a client line the
    // scores up with its video, and measure latency).
    if (in.kind != Input::Kind::kServer) live.frame_t = client_t;
    live.gaze_on_screen_ratio = Round(sc->gaze_on_screen_ratio, 0.001);
    live.blink_rate_per_min = Round(sc->blink_rate_per_min, 0.1);
    live.smile_ratio = Round(sc->smile_ratio, 0.001);
    live.face_visible_ratio = Round(sc->face_visible_ratio, 0.001);
    live.yaw_deg = Round(sc->head_yaw_deg, 0.1);
    live.pitch_deg = Round(sc->head_pitch_deg, 0.1);
    live.roll_deg = Round(sc->head_roll_deg, 0.1);
    live.gaze = Score(sc->gaze_score);
    live.blinking = Score(sc->blink_score);
    live.expression = Score(sc->expression_score);
    live.posture = Score(sc->posture_score);
    Json::Value sample(Json::objectValue);
    sample["gaze_on_screen_ratio"] = live.gaze_on_screen_ratio;
    sample["blink_rate_per_min"] = live.blink_rate_per_min;
    sample["smile_ratio"] = live.smile_ratio;
    sample["face_visible_ratio"] = live.face_visible_ratio;
    sample["head_yaw_deg"] = live.yaw_deg;
    sample["head_pitch_deg"] = live.pitch_deg;
    sample["head_roll_deg"] = live.roll_deg;
    s.timeline().AddSample(at, sample);
    s.Emit(std::move(live), /*droppable=*/true, at);
  }
}

// Analyses a frame now, on the calling thread.
void VisionStage::Submit(Input in) {
  const auto s = session_.lock();
  if (!s) return;
  {
    const std::lock_guard lock(mu_);
    // dlib's frame in flight when the session ended still counts: End waits for it.
    if (ended_ && in.kind != Input::Kind::kServer) return;
    if (in.kind != Input::Kind::kServer) last_client_frame_ = std::chrono::steady_clock::now();
  }
  const std::lock_guard lock(analysis_mu_);
  Analyse(*s, in);
}

bool VisionStage::ClientSendsLandmarks() const {
  const int64_t last = last_client_push_ms_.load(std::memory_order_relaxed);
  return last != 0 && SteadyMs() - last < std::chrono::duration_cast<std::chrono::milliseconds>(
                                              kClientLandmarksWin)
                                              .count();
}

void VisionStage::PushClientFrame(Conversation::LandmarkFormat format, std::string_view bytes) {
  last_client_push_ms_.store(SteadyMs(), std::memory_order_relaxed);
  Submit(Input{
      format == Conversation::LandmarkFormat::kJson ? Input::Kind::kJson : Input::Kind::kBinary,
      bytes,
      {}});
}

// Server-side landmarks: only while the client sends none, one frame in flight per session
// (frames arriving meanwhile are skipped: analysis runs at the rate dlib keeps up with).
void VisionStage::OnVideo(int64_t t_ms, const media::VideoFrame& f) {
  if (!services_.config().server_landmarks || f.width <= 0 || f.height <= 0) return;
  {
    std::unique_lock lock(mu_);
    if (ended_ || std::chrono::steady_clock::now() - last_client_frame_ < kClientLandmarksWin)
      return;
    if (lossless_) {  // a recording: the decoder waits for dlib instead of skipping the frame
      // Bounded generously: the first frame also loads dlib's model (seconds on a busy machine).
      idle_.wait_for(lock, std::chrono::seconds(60), [&] { return !landmarker_busy_ || ended_; });
      if (ended_) return;
    }
    if (landmarker_busy_) {  // dlib is still on the previous frame
      ++skipped_;
      return;
    }
    landmarker_busy_ = true;
  }
  // The frame is only valid during this call: copy it (packed BGR).
  auto pixels = std::make_shared<std::vector<uint8_t>>();
  const int width = f.width, height = f.height;
  pixels->resize(static_cast<size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y)
    std::memcpy(pixels->data() + static_cast<size_t>(y) * width * 3,
                f.bgr + static_cast<size_t>(y) * f.stride, static_cast<size_t>(width) * 3);
  const bool queued =
      services_.vision_pool().TrySubmit([self = shared_from_this(), pixels, t_ms, width, height] {
        const auto model = self->services_.Landmarker();
        if (!model) {
          const auto s = self->session_.lock();
          const std::lock_guard lock(self->analysis_mu_);
          if (s && !self->told_no_server_landmarks_) {
            self->told_no_server_landmarks_ = true;
            self->ReportError(*s, "server_landmarks_unavailable",
                              "video cannot be analysed on the server: " +
                                  self->services_.landmarker_state().error());
          }
        } else {
          if (!self->landmarker_) self->landmarker_ = std::make_unique<vision::Landmarker>(model);
          Input in{Input::Kind::kServer, {}, {}};
          in.frame = self->landmarker_->Detect(static_cast<double>(t_ms), width, height, width * 3,
                                               pixels->data());
          self->Submit(std::move(in));
        }
        const std::lock_guard lock(self->mu_);
        self->landmarker_busy_ = false;
        self->idle_.notify_all();
      });
  if (!queued) {
    const std::lock_guard lock(mu_);
    landmarker_busy_ = false;
    ++skipped_;
  }
}

void VisionStage::End(Json::Value* patch) {
  const auto s = session_.lock();
  {
    std::unique_lock lock(mu_);
    ended_ = true;
    idle_.notify_all();  // a recording's decoder waiting to hand over a frame stops waiting
    // A frame dlib is working on still counts.
    idle_.wait_for(lock, std::chrono::seconds(10), [&] { return !landmarker_busy_; });
  }
  {
    const std::lock_guard lock(analysis_mu_);
    std::vector<vision::Event> events;
    analyzer_.Finish(&events);
    if (s) {
      for (const auto& e : events)
        s->timeline().AddEvent(static_cast<int64_t>(std::llround(origin_ + e.t_ms)), e.type);
    }
  }
  Summarize(patch);
}

void VisionStage::Summarize(Json::Value* patch) {
  const std::lock_guard lock(analysis_mu_);
  if (frames_ == 0 && rejected_ == 0 && late_ == 0) return;  // no landmarks: not measured
  const vision::SessionMetrics m = analyzer_.Metrics();
  Json::Value& mx = (*patch)["metrics"];
  Json::Value& fb = (*patch)["feedback"];
  Json::Value& info = mx["vision"];
  info["frames"] = static_cast<Json::UInt64>(m.frames);
  info["face_frames"] = static_cast<Json::UInt64>(m.face_frames);
  info["analysed_s"] = Round(m.analysed_s, 0.01);
  info["client_frames"] = static_cast<Json::UInt64>(client_frames_);
  info["server_frames"] = static_cast<Json::UInt64>(server_frames_);
  info["rejected_frames"] = static_cast<Json::UInt64>(rejected_);
  info["late_frames"] = static_cast<Json::UInt64>(late_);
  info["skipped_video_frames"] = static_cast<Json::UInt64>(skipped_);
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
}

}  // namespace parley::session
