// Parley vision: face landmarks (sent by clients or found by the server in decoded video) →
// per-frame features (eye openness, head pose, gaze, smile, position) → per-person calibrated
// events, live scores and session metrics. docs/scoring.md has every formula.
//
// Threads: a FaceAnalyzer belongs to one session and is used by one thread at a time.
// Parsing functions and FaceModel are stateless/immutable and safe from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace parley::core {
class FlagSet;
}  // namespace parley::core

namespace parley::vision {

// ---- Landmark frames ------------------------------------------------------------------------

struct Point3 {
  float x = 0, y = 0, z = 0;  // x, y normalised to the image; z MediaPipe's relative depth
};

// MediaPipe's 52 blendshape names, in MediaPipe's order; a frame stores scores by this index.
inline constexpr int kBlendshapeCount = 52;
const std::array<std::string_view, kBlendshapeCount>& BlendshapeNames();
int BlendshapeIndex(std::string_view name);  // -1 when not a MediaPipe name

struct LandmarkFrame {
  double t_ms = 0;  // client clock, must increase frame to frame
  int width = 0;    // image size the coordinates are normalised to
  int height = 0;
  std::vector<Point3> points;  // 0 (no face), 68 (dlib order), 468 or 478 (MediaPipe order)
  std::array<float, kBlendshapeCount> blendshapes{};
  bool has_blendshapes = false;
  bool has_face() const { return !points.empty(); }
};

struct ParseLimits {
  int max_dimension = 8192;  // width/height
};

// Parses the contract's JSON frame ({"t","width","height","landmarks":[[x,y,z]...],
// "blendshapes":{name:score}}) or MediaPipe's own result shape ({"faceLandmarks" or
// "multiFaceLandmarks": [[{"x","y","z"}...]], "faceBlendshapes": [{"categories": [...]}]} with
// "t", "width", "height" beside it). Holds simdjson's parser and buffer: one per thread.
class JsonFrameParser {
 public:
  JsonFrameParser();
  ~JsonFrameParser();
  JsonFrameParser(const JsonFrameParser&) = delete;
  JsonFrameParser& operator=(const JsonFrameParser&) = delete;
  // On failure returns false and a message naming the problem.
  bool Parse(std::string_view text, LandmarkFrame* frame, std::string* error,
             const ParseLimits& limits = {});

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Compact binary frame (docs/protocol.md), little-endian:
//   "PLM" u8 version=1 | f64 t | u16 width | u16 height | u16 points | u8 encoding
//   (0 float32 xyz, 1 int16 xyz scaled by 1/16384) | u8 blendshape count B |
//   points × 3 coordinates | B × (u8 index, f32 score)
inline constexpr size_t kBinaryHeaderBytes = 20;
enum class BinaryEncoding : uint8_t { kFloat32 = 0, kInt16 = 1 };
bool ParseBinaryFrame(std::string_view bytes, LandmarkFrame* frame, std::string* error,
                      const ParseLimits& limits = {});
std::string EncodeBinaryFrame(const LandmarkFrame& frame,
                              BinaryEncoding encoding = BinaryEncoding::kFloat32);

// ---- Face model and per-frame features ------------------------------------------------------

// MediaPipe's canonical face (468 vertices, centimetres, y up, +z toward the viewer), built
// into the library.
const std::vector<Point3>& CanonicalFace();

struct Camera {
  double focal_px = 0;  // 0: the image width (a ~53° horizontal field of view, typical webcam)
};

struct HeadPose {
  double yaw_deg = 0;                   // + turned to the image's right (the person's left)
  double pitch_deg = 0;                 // + looking up
  double roll_deg = 0;                  // + head tilted clockwise in the image
  std::array<double, 9> rotation{};     // model → camera, row-major
  std::array<double, 3> translation{};  // cm, camera frame
  double reprojection_px = 0;           // RMS over the pose points
};

struct Features {
  bool face = false;
  int point_count = 0;
  double ear_left = 0, ear_right = 0;  // eye aspect ratio, pose-corrected (eye's own plane)
  HeadPose pose;
  bool has_iris = false;
  double eye_yaw_deg = 0, eye_pitch_deg = 0;    // eyes within the head (iris); 0 without irises
  double gaze_yaw_deg = 0, gaze_pitch_deg = 0;  // head + eyes
  double mouth_width_ratio = 0;  // mouth corner distance / eye corner distance, in the face plane
  double mouth_open_ratio = 0;   // inner lip gap / mouth width
  double smile_blendshape = -1;  // mean of mouthSmileLeft/Right when sent, else -1
  double center_x = 0, center_y = 0;  // face centre, normalised image coordinates
  double size = 0;                    // outer eye-corner distance / image width
};

// Computes features for one frame. Keeps the previous head pose to refine from (cheap), and
// solves from scratch with cv::solvePnP when there is none or refinement fails.
class FeatureExtractor {
 public:
  explicit FeatureExtractor(Camera camera = {});
  ~FeatureExtractor();
  FeatureExtractor(FeatureExtractor&&) noexcept;
  FeatureExtractor& operator=(FeatureExtractor&&) noexcept;
  Features Compute(const LandmarkFrame& frame);
  void Reset();  // forget the previous pose (face lost)

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// ---- Session analysis ------------------------------------------------------------------------

struct VisionConfig {
  double calibration_s = 3.0;      // seconds of face before events are trusted
  double gaze_yaw_limit_deg = 15;  // off-centre gaze beyond which the person looks away
  double gaze_pitch_limit_deg = 12;
  double min_gaze_away_ms = 300;    // shorter excursions are glances, not episodes
  double face_lost_after_ms = 500;  // no face this long: face_lost
  double blink_close_ratio = 0.60;  // EAR below this fraction of the open baseline: closed
  double blink_open_ratio = 0.75;   // and above this: open again
  double max_blink_ms = 500;        // closed longer: eyes shut, not a blink
  double smile_widening = 0.10;     // mouth 10% wider than the person's neutral: smiling
  double min_smile_ms = 400;
  double scores_interval_ms = 1000;  // a scores message about once a second (frame clock)
  std::string Validate() const;
  void AddFlags(core::FlagSet& flags);
};

struct Event {
  std::string type;  // blink, gaze_away, gaze_back, face_lost, face_found, smile_start, smile_end
  double t_ms = 0;   // analysis clock (ms since the first frame)
  double duration_ms = -1;  // for blink, gaze_back, smile_end, face_found: length of the episode
};

// Live figures, 0..100 scores plus the raw values they come from.
struct Scores {
  double t_ms = 0;
  bool calibrated = false;
  double gaze_on_screen_ratio = 0;  // over the last window
  double blink_rate_per_min = 0;
  double smile_ratio = 0;
  double face_visible_ratio = 0;
  double head_yaw_deg = 0, head_pitch_deg = 0, head_roll_deg = 0;
  double gaze_score = 0, blink_score = 0, expression_score = 0, posture_score = 0;
};

struct AxisStats {
  double mean = 0, std = 0;
};

// Session metrics for the report (docs/scoring.md).
struct SessionMetrics {
  double analysed_s = 0;  // frame-clock span covered
  uint64_t frames = 0, face_frames = 0;
  int blinks = 0;
  double blink_rate_per_min = 0;
  double gaze_on_screen_ratio = 0;
  int gaze_away_episodes = 0;
  AxisStats yaw, pitch, roll;
  double smile_ratio = 0;
  double face_visible_ratio = 0;
  double tilt_deg = 0;               // mean |roll|
  double slouch_deg = 0;             // how far the head pitched down from the person's calibration
  double lean_ratio = 0;             // face size change vs calibration (+ closer)
  double vertical_drift = 0;         // face centre moved down (+) by this fraction of the image
  double fidget_per_s = 0;           // mean head motion, face widths per second
  bool gaze_from_head_only = false;  // no irises were sent (68 points or 468)
  double gaze_score = 0, blink_score = 0, expression_score = 0, posture_score = 0;
};

class FaceAnalyzer {
 public:
  explicit FaceAnalyzer(const VisionConfig& config, Camera camera = {});
  ~FaceAnalyzer();
  FaceAnalyzer(FaceAnalyzer&&) noexcept;
  FaceAnalyzer& operator=(FaceAnalyzer&&) noexcept;

  // Frames must come in increasing t (callers drop late ones). Appends events to `events`.
  // The frame's `t_ms` sets the analysis clock: ms since the first frame.
  void Process(const LandmarkFrame& frame, std::vector<Event>* events);
  // Scores when one is due (about every scores_interval_ms of frame time), else nullopt.
  std::optional<Scores> TakeScoresIfDue();
  // Ends calibration with what was seen so far (a short session) so Metrics() covers every
  // frame; call once when the session ends.
  void Finish(std::vector<Event>* events);
  const Features& last_features() const;
  SessionMetrics Metrics() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// ---- Server-side landmarks -------------------------------------------------------------------

struct LandmarkerConfig {
  std::string shape_model = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat";
  int detect_width = 480;  // faces are detected on the frame scaled to this width
  int redetect_every = 5;  // frames between full detections; tracked in between
  std::string Validate() const;
  void AddFlags(core::FlagSet& flags);
};

// dlib's 68-point shape predictor on BGR frames. Loading the model takes ~100 MB and ~1 s;
// the model is shared (immutable) between landmarkers made by one LandmarkerModel.
class LandmarkerModel;
std::shared_ptr<const LandmarkerModel> LoadLandmarkerModel(const LandmarkerConfig& config,
                                                           std::string* error);

class Landmarker {
 public:
  explicit Landmarker(std::shared_ptr<const LandmarkerModel> model);
  ~Landmarker();
  Landmarker(Landmarker&&) noexcept;
  Landmarker& operator=(Landmarker&&) noexcept;
  // 68 normalised points, or none when no face is found. `stride` in bytes.
  LandmarkFrame Detect(double t_ms, int width, int height, int stride, const uint8_t* bgr);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace parley::vision
