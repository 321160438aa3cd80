// Synthetic faces with known truth: MediaPipe's canonical face with per-person shape, head-pose
// random walks, blinks, gaze-away episodes (head and eyes together), smiles, stretches with no
// face, timestamp jitter and landmark noise, rendered through a pinhole camera. The truth is
// what the vision accuracy tests and the benches measure against.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "vision/vision.h"

namespace parley::testing {

struct GeneratorConfig {
  uint32_t seed = 1;
  double duration_s = 120;
  double fps = 30;
  int width = 640, height = 480;
  bool irises = true;              // 478 points; false: 468
  double blink_rate_per_min = -1;  // < 0: drawn from 5..30
  double noise_px = -1;            // < 0: drawn from 0.5..1.5
  double jitter_ms = 4;            // uniform ± on each timestamp
  bool gaze_away = true, smiles = true, no_face = true;
  // Situations of real sessions the default mix lacks:
  bool early_face_loss = false;  // the face missing for 1–2 s within the first 3 s
  double first_frame_yaw = 0;    // ≠ 0: looking away this far (°) from the first frame, 1–2 s
  bool face_loss_in_episodes = false;  // half the gaze-away episodes lose the face midway
                                       // (the truth splits them around the loss)
  bool dlib68 = false;  // 68-point frames (dlib's layout) instead of MediaPipe's mesh
};

// dlib's 68 points as vertices of MediaPipe's mesh: the correspondence table in common use
// (jaw 127…356 through the chin 152, brows, nose, eyes, lips), independent of the mapping the
// pose fit uses (vision/features.cc).
vision::LandmarkFrame ToDlib68(const vision::LandmarkFrame& mesh);

using Span = std::pair<double, double>;  // [start, end) ms on the frame clock (t of frame 0 = 0)

struct Truth {
  std::vector<Span> blinks;     // start, end
  std::vector<Span> gaze_away;  // while the person looks away
  std::vector<Span> smiles;
  std::vector<Span> no_face;
  struct PerFrame {
    bool face = false, on_screen = true, smiling = false;
    double yaw = 0, pitch = 0, roll = 0;
  };
  std::vector<PerFrame> frames;
  // Time-weighted the way docs/scoring.md defines them (interval after each frame).
  double face_visible_ratio = 0, gaze_on_screen_ratio = 0, smile_ratio = 0;
  double blink_rate_per_min = 0;
};

struct Synthetic {
  std::vector<vision::LandmarkFrame> frames;
  Truth truth;
};

Synthetic GenerateSession(const GeneratorConfig& config);

// Renders one frame: a head pose (degrees), eye-in-head angles, eye closure 0..1 and smile
// 0..1 for the canonical face; the generator's building block, also used by pose tests.
struct FacePose {
  double yaw = 0, pitch = 0, roll = 0;
  double eye_yaw = 0, eye_pitch = 0;
  double closure = 0, smile = 0;
  double tx = 0, ty = 0, tz = 55;  // cm, camera frame
};
struct Person {
  double width = 1, height = 1, depth = 1, eye_opening = 1, mouth_width = 1;
};
// The head's angles against the line of sight from the camera to it (docs/scoring.md: a head
// facing the lens is 0/0/0 wherever it is in the image), from a pose in camera axes.
struct HeadAngles {
  double yaw = 0, pitch = 0, roll = 0;
};
HeadAngles AgainstLineOfSight(const FacePose& pose);

vision::LandmarkFrame RenderFace(const FacePose& pose, const Person& person, double focal_px,
                                 int width, int height, bool irises);

// Greedy one-to-one matching of detected event times to truth times within `tolerance_ms`.
struct Match {
  int true_positives = 0, detected = 0, truth = 0;
  double precision() const { return detected ? double(true_positives) / detected : 1; }
  double recall() const { return truth ? double(true_positives) / truth : 1; }
  Match& operator+=(const Match& m) {  // pools matches over sessions
    true_positives += m.true_positives;
    detected += m.detected;
    truth += m.truth;
    return *this;
  }
  double f1() const {
    const double p = precision(), r = recall();
    return p + r > 0 ? 2 * p * r / (p + r) : 0;
  }
};
Match MatchTimes(const std::vector<double>& detected, const std::vector<double>& truth,
                 double tolerance_ms);
// Episodes match when their intersection over union is at least `min_iou`.
Match MatchSpans(const std::vector<Span>& detected, const std::vector<Span>& truth, double min_iou);

}  // namespace parley::testing
