// Session analysis: per-person calibration (robust percentiles of recent frames, so it keeps
// adapting), event detectors with hysteresis and minimum durations, time-weighted ratios,
// live scores and the report's metrics. docs/scoring.md is the written form of this file.
#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <tuple>

#include "vision/vision.h"

namespace parley::vision {
namespace {

constexpr double kMaxIntervalMs = 1000;  // a longer gap between frames counts as this much
constexpr double kBaselineWindowMs = 60'000;
constexpr double kBaselineSampleMs = 100;
constexpr double kScoreWindowMs = 30'000;
constexpr size_t kMaxCalibrationFrames = 20'000;

// Robust level of a signal over the last minute: a percentile of a bounded ring of values.
class RecentPercentile {
 public:
  void Add(double t_ms, double v) {
    values_.emplace_back(t_ms, v);
    while (!values_.empty() && values_.front().first < t_ms - kBaselineWindowMs)
      values_.pop_front();
  }
  std::optional<double> Get(double q) const {
    if (values_.size() < 5) return std::nullopt;
    scratch_.clear();
    for (const auto& [t, v] : values_) scratch_.push_back(v);
    const auto k = static_cast<size_t>(q * static_cast<double>(scratch_.size() - 1));
    std::nth_element(scratch_.begin(), scratch_.begin() + static_cast<long>(k), scratch_.end());
    return scratch_[k];
  }

 private:
  std::deque<std::pair<double, double>> values_;
  mutable std::vector<double> scratch_;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  const size_t k = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

// Where the screen is for this person: the gaze cluster nearest straight ahead (the line of
// sight to the camera, which sits at the screen). The median of the window, used before, is
// pulled off the screen whenever the person looked away for much of it: turned away in the
// first seconds, when calibration has seen only 3 s of face, it put the centre between the
// screen and the away direction and raised a false ~3 s gaze_away once they looked back.
class GazeCentre {
 public:
  void Add(double t_ms, double yaw, double pitch) {
    samples_.push_back({t_ms, yaw, pitch});
    while (!samples_.empty() && samples_.front().t < t_ms - kBaselineWindowMs) samples_.pop_front();
  }
  // A cluster counts when a box of half the limits around one of its samples holds a quarter
  // of the window; the one nearest straight ahead wins, its centre the median of the samples
  // within the limits of it. None (no cluster that dense): the median of all.
  std::optional<std::pair<double, double>> Get(double yaw_limit, double pitch_limit) const {
    const size_t n = samples_.size();
    if (n < 5) return std::nullopt;
    const size_t stride = std::max<size_t>(1, n / 120);  // bounded cost: ~120 x n
    const Sample* best = nullptr;
    double best_distance = std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < n; i += stride) {
      const Sample& c = samples_[i];
      size_t support = 0;
      for (const Sample& s : samples_)
        support += std::abs(s.yaw - c.yaw) <= 0.5 * yaw_limit &&
                   std::abs(s.pitch - c.pitch) <= 0.5 * pitch_limit;
      if (4 * support < n) continue;
      const double distance = std::hypot(c.yaw / yaw_limit, c.pitch / pitch_limit);
      if (distance < best_distance) {
        best_distance = distance;
        best = &c;
      }
    }
    std::vector<double> yaws, pitches;
    for (const Sample& s : samples_) {
      if (best != nullptr && (std::abs(s.yaw - best->yaw) > yaw_limit ||
                              std::abs(s.pitch - best->pitch) > pitch_limit))
        continue;
      yaws.push_back(s.yaw);
      pitches.push_back(s.pitch);
    }
    return std::pair{Median(std::move(yaws)), Median(std::move(pitches))};
  }

 private:
  struct Sample {
    double t, yaw, pitch;
  };
  std::deque<Sample> samples_;
};

double Clamp01(double v) { return std::clamp(v, 0.0, 1.0); }

// Scores (docs/scoring.md).
double BlinkScore(double rate_per_min) {
  if (rate_per_min < 8) return 40 + 60 * rate_per_min / 8;
  if (rate_per_min <= 25) return 100;
  return std::max(0.0, 100 - 4 * (rate_per_min - 25));
}
double ExpressionScore(double smile_ratio) { return 30 + 70 * Clamp01(smile_ratio / 0.25); }
double PostureScore(double tilt_deg, double slouch_deg, double fidget_per_s) {
  const double p = 100 - 3 * std::max(0.0, tilt_deg - 5) - 4 * std::max(0.0, slouch_deg - 5) -
                   200 * std::max(0.0, fidget_per_s - 0.05);
  return std::clamp(p, 0.0, 100.0);
}

struct Bucket {  // one second of frame time, for live scores
  double total_ms = 0, face_ms = 0, on_ms = 0, smile_ms = 0;
  int blinks = 0;
};

}  // namespace

std::string VisionConfig::Validate() const {
  if (!(calibration_s >= 0.5 && calibration_s <= 60)) return "vision calibration must be 0.5..60 s";
  if (!(gaze_yaw_limit_deg > 2 && gaze_yaw_limit_deg < 60 && gaze_pitch_limit_deg > 2 &&
        gaze_pitch_limit_deg < 60))
    return "gaze limits must be 2..60 degrees";
  if (!(blink_close_ratio > 0 && blink_close_ratio < blink_open_ratio && blink_open_ratio < 1))
    return "blink ratios must satisfy 0 < close < open < 1";
  if (!(scores_interval_ms >= 100)) return "scores interval must be at least 100 ms";
  if (min_gaze_away_ms < 0 || face_lost_after_ms < 0 || max_blink_ms <= 0 || min_smile_ms < 0 ||
      smile_widening <= 0)
    return "vision durations and smile widening must be positive";
  return {};
}

struct FaceAnalyzer::State {
  VisionConfig config;
  FeatureExtractor extractor;
  Features last;

  // Clock.
  bool started = false;
  double t0 = 0;      // client t of the first frame
  double prev_t = 0;  // analysis clock of the previous frame
  bool prev_face = false;
  bool have_prev = false;

  // Calibration: frames are held until enough face time was seen, then replayed.
  bool calibrated = false;
  double calib_face_ms = 0;
  std::vector<std::pair<double, Features>> pending;
  double ref_pitch = 0, ref_center_y = 0, ref_size = 0;

  // Baselines (adapting).
  RecentPercentile ear, mouth;
  GazeCentre gaze_centre;
  double ear_open = 0.3, mouth_neutral = 0.8, gaze_c_yaw = 0, gaze_c_pitch = 0;
  double next_baseline_t = 0;
  double next_baseline_sample_t = 0;

  // Detector state.
  bool face_present = false;  // after face_lost hysteresis
  double last_face_t = -1;
  double face_lost_t = -1;
  bool eyes_closed = false;
  double closed_since = 0;
  enum class Gaze { kOn, kMaybeOff, kOff } gaze = Gaze::kOn;
  double gaze_off_since = 0, gaze_pending_ms = 0;
  enum class Smile { kNo, kMaybe, kYes } smile = Smile::kNo;
  double smile_since = 0, smile_pending_ms = 0;

  // Totals.
  uint64_t frames = 0, face_frames = 0;
  double total_ms = 0, face_ms = 0, on_ms = 0, smile_ms = 0;
  int blinks = 0, gaze_episodes = 0;
  double sum[3] = {}, sum_sq[3] = {};  // yaw, pitch, roll
  double sum_abs_roll = 0, sum_pitch_drop = 0, sum_size_change = 0, sum_drift = 0;
  uint64_t posture_frames = 0;
  double motion = 0, motion_ms = 0;  // face widths moved, over face time
  bool have_prev_center = false;
  double prev_cx = 0, prev_cy = 0;
  bool any_iris = false, any_face_without_iris = false;

  // Live scores.
  std::deque<Bucket> buckets;
  Bucket current;
  double next_scores_t = 0;
  bool scores_due = false;
  double scores_t = 0;

  void Baselines(double t) {
    if (auto v = ear.Get(0.70)) ear_open = std::max(*v, 1e-3);
    if (auto v = mouth.Get(0.20)) mouth_neutral = *v;
    if (auto c = gaze_centre.Get(config.gaze_yaw_limit_deg, config.gaze_pitch_limit_deg))
      std::tie(gaze_c_yaw, gaze_c_pitch) = *c;
    next_baseline_t = t + 1000;
  }

  void Account(double dt) {
    total_ms += dt;
    current.total_ms += dt;
    if (!prev_face) return;
    face_ms += dt;
    current.face_ms += dt;
    if (gaze == Gaze::kOn) {
      on_ms += dt;
      current.on_ms += dt;
    } else if (gaze == Gaze::kMaybeOff) {
      gaze_pending_ms += dt;
    }
    if (smile == Smile::kYes) {
      smile_ms += dt;
      current.smile_ms += dt;
    } else if (smile == Smile::kMaybe) {
      smile_pending_ms += dt;
    }
  }

  void EndGaze(double t, std::vector<Event>* events, bool emit) {
    if (gaze == Gaze::kMaybeOff) {
      on_ms += gaze_pending_ms;  // a glance: it counts as on screen
      current.on_ms += gaze_pending_ms;
    } else if (gaze == Gaze::kOff && emit) {
      events->push_back({"gaze_back", t, t - gaze_off_since});
    }
    gaze = Gaze::kOn;
    gaze_pending_ms = 0;
  }

  void EndSmile(double t, std::vector<Event>* events) {
    if (smile == Smile::kYes) events->push_back({"smile_end", t, t - smile_since});
    smile = Smile::kNo;
    smile_pending_ms = 0;
  }

  // One frame through the detectors (after calibration). `t` on the analysis clock.
  void Detect(double t, const Features& f, std::vector<Event>* events) {
    const double dt = have_prev ? std::min(t - prev_t, kMaxIntervalMs) : 0;
    Account(dt);
    have_prev = true;
    prev_t = t;
    prev_face = f.face;
    if (t >= next_scores_t) {
      buckets.push_back(current);
      current = {};
      while (buckets.size() > kScoreWindowMs / config.scores_interval_ms) buckets.pop_front();
      scores_due = true;
      scores_t = t;
      next_scores_t = t + config.scores_interval_ms;
    }
    ++frames;
    if (!f.face) {
      if (face_present && face_lost_t < 0) face_lost_t = t;
      if (face_present && t - face_lost_t >= config.face_lost_after_ms) {
        face_present = false;
        events->push_back({"face_lost", face_lost_t, -1});
        EndGaze(face_lost_t, events, false);
        EndSmile(face_lost_t, events);
        eyes_closed = false;
      }
      have_prev_center = false;
      return;
    }
    ++face_frames;
    if (!face_present) {
      if (last_face_t >= 0) events->push_back({"face_found", t, t - face_lost_t});
      face_present = true;
    }
    face_lost_t = -1;
    last_face_t = t;
    if (f.has_iris)
      any_iris = true;
    else
      any_face_without_iris = true;

    // Baselines keep adapting to the person (sampled at most every 100 ms: the percentiles
    // need a minute of history, not every frame of it).
    if (t >= next_baseline_sample_t) {
      ear.Add(t, 0.5 * (f.ear_left + f.ear_right));
      mouth.Add(t, f.mouth_width_ratio);
      gaze_centre.Add(t, f.gaze_yaw_deg, f.gaze_pitch_deg);
      next_baseline_sample_t = t + kBaselineSampleMs;
    }
    if (t >= next_baseline_t) Baselines(t);

    // Blink.
    const double openness = 0.5 * (f.ear_left + f.ear_right) / ear_open;
    if (!eyes_closed && openness < config.blink_close_ratio) {
      eyes_closed = true;
      closed_since = t;
    } else if (eyes_closed && openness > config.blink_open_ratio) {
      eyes_closed = false;
      const double d = t - closed_since;
      if (d <= config.max_blink_ms) {
        ++blinks;
        ++current.blinks;
        events->push_back({"blink", closed_since, d});
      }
    }

    // Gaze, with hysteresis (back within 80% of the limits) and a minimum episode length.
    const double dy = std::abs(f.gaze_yaw_deg - gaze_c_yaw);
    const double dp = std::abs(f.gaze_pitch_deg - gaze_c_pitch);
    const bool off = dy > config.gaze_yaw_limit_deg || dp > config.gaze_pitch_limit_deg;
    const bool back =
        dy < 0.8 * config.gaze_yaw_limit_deg && dp < 0.8 * config.gaze_pitch_limit_deg;
    if (gaze == Gaze::kOn && off) {
      gaze = Gaze::kMaybeOff;
      gaze_off_since = t;
      gaze_pending_ms = 0;
    } else if (gaze != Gaze::kOn && back) {
      EndGaze(t, events, true);
    } else if (gaze == Gaze::kMaybeOff && t - gaze_off_since >= config.min_gaze_away_ms) {
      gaze = Gaze::kOff;
      ++gaze_episodes;
      gaze_pending_ms = 0;
      events->push_back({"gaze_away", gaze_off_since, -1});
    }

    // Smile: MediaPipe's blendshapes when sent, else mouth widening against the neutral mouth.
    bool smiling, relaxed;
    if (f.smile_blendshape >= 0) {
      smiling = f.smile_blendshape > 0.5;
      relaxed = f.smile_blendshape < 0.35;
    } else {
      smiling = f.mouth_width_ratio > mouth_neutral * (1 + config.smile_widening);
      relaxed = f.mouth_width_ratio < mouth_neutral * (1 + 0.6 * config.smile_widening);
    }
    if (smile == Smile::kNo && smiling) {
      smile = Smile::kMaybe;
      smile_since = t;
      smile_pending_ms = 0;
    } else if (smile != Smile::kNo && relaxed) {
      EndSmile(t, events);
    } else if (smile == Smile::kMaybe && t - smile_since >= config.min_smile_ms) {
      smile = Smile::kYes;
      smile_ms += smile_pending_ms;
      current.smile_ms += smile_pending_ms;
      smile_pending_ms = 0;
      events->push_back({"smile_start", smile_since, -1});
    }

    // Pose and posture.
    const double angles[3] = {f.pose.yaw_deg, f.pose.pitch_deg, f.pose.roll_deg};
    for (int i = 0; i < 3; ++i) {
      sum[i] += angles[i];
      sum_sq[i] += angles[i] * angles[i];
    }
    ++posture_frames;
    sum_abs_roll += std::abs(f.pose.roll_deg);
    sum_pitch_drop += ref_pitch - f.pose.pitch_deg;
    sum_size_change += ref_size > 0 ? f.size / ref_size - 1 : 0;
    sum_drift += f.center_y - ref_center_y;
    if (have_prev_center && f.size > 0) {
      motion += std::hypot(f.center_x - prev_cx, f.center_y - prev_cy) / f.size;
      motion_ms += dt;
    }
    have_prev_center = true;
    prev_cx = f.center_x;
    prev_cy = f.center_y;
  }

  void Calibrate(std::vector<Event>* events) {
    std::vector<double> pitch, cy, size;
    for (const auto& [t, f] : pending) {
      if (!f.face) continue;
      ear.Add(t, 0.5 * (f.ear_left + f.ear_right));
      mouth.Add(t, f.mouth_width_ratio);
      gaze_centre.Add(t, f.gaze_yaw_deg, f.gaze_pitch_deg);
      pitch.push_back(f.pose.pitch_deg);
      cy.push_back(f.center_y);
      size.push_back(f.size);
    }
    ref_pitch = Median(pitch);
    ref_center_y = Median(cy);
    ref_size = Median(size);
    Baselines(pending.empty() ? 0 : pending.front().first);
    calibrated = true;
    // The held frames go through the detectors with the calibrated baselines.
    auto held = std::move(pending);
    pending.clear();
    for (const auto& [t, f] : held) Detect(t, f, events);
  }
};

FaceAnalyzer::FaceAnalyzer(const VisionConfig& config, Camera camera)
    : state_(std::make_unique<State>()) {
  state_->config = config;
  state_->extractor = FeatureExtractor(camera);
}
FaceAnalyzer::~FaceAnalyzer() = default;
FaceAnalyzer::FaceAnalyzer(FaceAnalyzer&&) noexcept = default;
FaceAnalyzer& FaceAnalyzer::operator=(FaceAnalyzer&&) noexcept = default;

void FaceAnalyzer::Process(const LandmarkFrame& frame, std::vector<Event>* events) {
  State& s = *state_;
  if (!s.started) {
    s.started = true;
    s.t0 = frame.t_ms;
  }
  const double t = frame.t_ms - s.t0;
  s.last = s.extractor.Compute(frame);
  if (!s.last.face) s.extractor.Reset();
  if (s.calibrated) {
    s.Detect(t, s.last, events);
    return;
  }
  if (s.last.face && !s.pending.empty() && s.pending.back().second.face)
    s.calib_face_ms += std::min(t - s.pending.back().first, kMaxIntervalMs);
  s.pending.emplace_back(t, s.last);
  if (s.calib_face_ms >= s.config.calibration_s * 1000 || s.pending.size() >= kMaxCalibrationFrames)
    s.Calibrate(events);
}

void FaceAnalyzer::Finish(std::vector<Event>* events) {
  if (!state_->calibrated && !state_->pending.empty()) state_->Calibrate(events);
}

std::optional<Scores> FaceAnalyzer::TakeScoresIfDue() {
  State& s = *state_;
  if (!s.scores_due) return std::nullopt;
  s.scores_due = false;
  Bucket w;
  for (const Bucket& b : s.buckets) {
    w.total_ms += b.total_ms;
    w.face_ms += b.face_ms;
    w.on_ms += b.on_ms;
    w.smile_ms += b.smile_ms;
    w.blinks += b.blinks;
  }
  Scores sc;
  sc.t_ms = s.scores_t;
  sc.calibrated = s.calibrated;
  sc.face_visible_ratio = w.total_ms > 0 ? w.face_ms / w.total_ms : 0;
  sc.gaze_on_screen_ratio = w.face_ms > 0 ? w.on_ms / w.face_ms : 0;
  sc.smile_ratio = w.face_ms > 0 ? w.smile_ms / w.face_ms : 0;
  sc.blink_rate_per_min = w.face_ms > 0 ? w.blinks / (w.face_ms / 60'000) : 0;
  sc.head_yaw_deg = s.last.pose.yaw_deg;
  sc.head_pitch_deg = s.last.pose.pitch_deg;
  sc.head_roll_deg = s.last.pose.roll_deg;
  sc.gaze_score = 100 * sc.gaze_on_screen_ratio;
  sc.blink_score = BlinkScore(sc.blink_rate_per_min);
  sc.expression_score = ExpressionScore(sc.smile_ratio);
  const SessionMetrics m = Metrics();
  sc.posture_score = m.posture_score;
  return sc;
}

const Features& FaceAnalyzer::last_features() const { return state_->last; }

SessionMetrics FaceAnalyzer::Metrics() const {
  const State& s = *state_;
  SessionMetrics m;
  m.analysed_s = s.total_ms / 1000;
  m.frames = s.frames;
  m.face_frames = s.face_frames;
  m.blinks = s.blinks;
  m.gaze_away_episodes = s.gaze_episodes;
  const double face_min = s.face_ms / 60'000;
  m.blink_rate_per_min = face_min > 0 ? s.blinks / face_min : 0;
  // Episodes still open count as they stand: a pending glance as on screen, a smile pending
  // confirmation as not smiling.
  const double on = s.on_ms + (s.gaze == State::Gaze::kMaybeOff ? s.gaze_pending_ms : 0);
  m.gaze_on_screen_ratio = s.face_ms > 0 ? on / s.face_ms : 0;
  m.smile_ratio = s.face_ms > 0 ? s.smile_ms / s.face_ms : 0;
  m.face_visible_ratio = s.total_ms > 0 ? s.face_ms / s.total_ms
                         : s.frames > 0 ? static_cast<double>(s.face_frames) / s.frames
                                        : 0;
  const double n = static_cast<double>(s.posture_frames);
  AxisStats* axes[3] = {&m.yaw, &m.pitch, &m.roll};
  for (int i = 0; i < 3; ++i) {
    if (n == 0) break;
    axes[i]->mean = s.sum[i] / n;
    axes[i]->std = std::sqrt(std::max(0.0, s.sum_sq[i] / n - axes[i]->mean * axes[i]->mean));
  }
  if (n > 0) {
    m.tilt_deg = s.sum_abs_roll / n;
    m.slouch_deg = std::max(0.0, s.sum_pitch_drop / n);
    m.lean_ratio = s.sum_size_change / n;
    m.vertical_drift = s.sum_drift / n;
  }
  m.fidget_per_s = s.motion_ms > 0 ? s.motion / (s.motion_ms / 1000) : 0;
  m.gaze_from_head_only = s.any_face_without_iris && !s.any_iris;
  m.gaze_score = 100 * m.gaze_on_screen_ratio;
  m.blink_score = BlinkScore(m.blink_rate_per_min);
  m.expression_score = ExpressionScore(m.smile_ratio);
  m.posture_score = PostureScore(m.tilt_deg, m.slouch_deg, m.fidget_per_s);
  return m;
}

}  // namespace parley::vision
