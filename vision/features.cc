// Per-frame features from landmarks: head pose against MediaPipe's canonical face, eye openness,
// iris gaze, mouth geometry and face position. docs/scoring.md gives the formulas.
//
// Head pose: cv::solvePnP (SQPnP) finds the pose when there is no previous one; after that a
// small hand-written Levenberg–Marquardt step refines the previous pose on the same points.
// Why by hand: every cv::solvePnP* call costs 19–120 µs here (argument conversion, generic
// solvers; bench/vision_bench), more than the whole per-frame budget of a 150,000 frames/s
// binary path; a warm-started 6-parameter refinement on 20 points costs ~1–2 µs and lands on the
// same minimum (tests compare it with cv::solvePnP).
#include <cmath>
#include <cstring>
#include <opencv2/calib3d.hpp>
#include <opencv2/core.hpp>
#include <sstream>

#include "vision/vision.h"

namespace parley::vision {
namespace internal {
extern const char kCanonicalFaceText[];
}

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kDeg = 180.0 / kPi;
// The eyeball model shared by the gaze estimate and docs/scoring.md: the iris centre sits
// kIrisForwardCm in front of the eye corners' midpoint when looking straight ahead, on a sphere
// of radius kEyeRadiusCm (scaled by the person's eye width against the canonical 2.59 cm).
constexpr double kIrisForwardCm = 0.5;
constexpr double kEyeRadiusCm = 1.2;
constexpr double kCanonicalEyeWidthCm = 2.59;

// Indices of one landmark layout (MediaPipe 468/478 or dlib 68).
struct Layout {
  std::vector<int> pose_points;  // into the frame
  // The same places on the canonical face: a vertex, or the mean of a few where no one vertex
  // is the place (dlib's jaw contour lies between mesh vertices).
  std::vector<std::vector<int>> pose_model;
  int right_outer, right_inner, left_outer, left_inner;    // eye corners (person's right/left)
  std::vector<std::pair<int, int>> right_lids, left_lids;  // (upper, lower) pairs
  int mouth_right, mouth_left, lip_upper, lip_lower;
  int iris_right = -1, iris_left = -1;
};

const Layout& MediaPipeLayout() {
  static const Layout layout = [] {
    Layout l;
    // Points that do not move with expressions: eye corners, nose, forehead, face sides.
    l.pose_points = {33, 133, 362, 263, 168, 6, 197, 195, 5,   4,
                     1,  98,  327, 10,  151, 9, 234, 454, 127, 356};
    for (int i : l.pose_points) l.pose_model.push_back({i});
    l.right_outer = 33, l.right_inner = 133, l.left_outer = 263, l.left_inner = 362;
    l.right_lids = {{161, 163}, {160, 144}, {159, 145}, {158, 153}, {157, 154}};
    l.left_lids = {{388, 390}, {387, 373}, {386, 374}, {385, 380}, {384, 381}};
    l.mouth_right = 61, l.mouth_left = 291, l.lip_upper = 13, l.lip_lower = 14;
    return l;
  }();
  return layout;
}

const Layout& MediaPipeIrisLayout() {
  static const Layout layout = [] {
    Layout l = MediaPipeLayout();
    l.iris_right = 468, l.iris_left = 473;
    return l;
  }();
  return layout;
}

const Layout& DlibLayout() {
  static const Layout layout = [] {
    Layout l;
    // dlib 68 → canonical: eye corners, nose bridge/tip/wings/base, chin, jaw. dlib's jaw
    // contour starts between mesh vertices 127 (eye level) and 234 (on the astronaut, aligned
    // by the eye corners, dlib's 0 and 16 fall halfway between them).
    l.pose_points = {36, 39, 42, 45, 27, 30, 31, 35, 33, 8, 0, 16};
    l.pose_model = {{33}, {133}, {362}, {263}, {168},      {4},
                    {98}, {327}, {2},   {152}, {127, 234}, {356, 454}};
    l.right_outer = 36, l.right_inner = 39, l.left_outer = 45, l.left_inner = 42;
    l.right_lids = {{37, 41}, {38, 40}};
    l.left_lids = {{43, 47}, {44, 46}};
    l.mouth_right = 48, l.mouth_left = 54, l.lip_upper = 62, l.lip_lower = 66;
    return l;
  }();
  return layout;
}

const Layout* LayoutFor(size_t n) {
  if (n == 478) return &MediaPipeIrisLayout();
  if (n == 468) return &MediaPipeLayout();
  if (n == 68) return &DlibLayout();
  return nullptr;
}

// Canonical vertex in the camera's axes (x right, y down, z away): a frontal face has R = I.
cv::Vec3d ModelPoint(int i) {
  const Point3& p = CanonicalFace()[static_cast<size_t>(i)];
  return {p.x, -p.y, -p.z};
}

cv::Matx33d ExpMap(const cv::Vec3d& w) {
  const double theta = cv::norm(w);
  const cv::Matx33d wx(0, -w[2], w[1], w[2], 0, -w[0], -w[1], w[0], 0);
  if (theta < 1e-12) return cv::Matx33d::eye() + wx;
  const double a = std::sin(theta) / theta;
  const double b = (1 - std::cos(theta)) / (theta * theta);
  return cv::Matx33d::eye() + a * wx + b * (wx * wx);
}

// Solves (A) x = b for a symmetric positive definite 6×6 A; false when it is not.
bool Cholesky6(double a[6][6], const double b[6], double x[6]) {
  double l[6][6] = {};
  for (int i = 0; i < 6; ++i) {
    for (int j = 0; j <= i; ++j) {
      double s = a[i][j];
      for (int k = 0; k < j; ++k) s -= l[i][k] * l[j][k];
      if (i == j) {
        if (s <= 1e-18) return false;
        l[i][i] = std::sqrt(s);
      } else {
        l[i][j] = s / l[j][j];
      }
    }
  }
  double y[6];
  for (int i = 0; i < 6; ++i) {
    double s = b[i];
    for (int k = 0; k < i; ++k) s -= l[i][k] * y[k];
    y[i] = s / l[i][i];
  }
  for (int i = 5; i >= 0; --i) {
    double s = y[i];
    for (int k = i + 1; k < 6; ++k) s -= l[k][i] * x[k];
    x[i] = s / l[i][i];
  }
  return true;
}

struct Intrinsics {
  double f, cx, cy;
};

// Levenberg–Marquardt on (rotation increment, translation), starting from r, t. The cost of a
// trial step is computed in the same pass as the next step's Jacobian.
bool RefinePose(const std::vector<cv::Vec3d>& model, const std::vector<cv::Vec2d>& image,
                const Intrinsics& k, cv::Matx33d& r, cv::Vec3d& t, double* rms) {
  double lambda = 1e-3;
  double best_cost = std::numeric_limits<double>::infinity();
  cv::Matx33d best_r = r;
  cv::Vec3d best_t = t;
  double h[6][6], g[6];
  bool have_step = false;
  for (int iter = 0; iter < 10; ++iter) {
    // Linearise at (r, t); its cost decides whether the step that led here is kept.
    double nh[6][6] = {}, ng[6] = {}, cost = 0;
    bool valid = true;
    for (size_t i = 0; i < model.size() && valid; ++i) {
      const cv::Vec3d p0 = r * model[i];
      const cv::Vec3d p = p0 + t;
      if (p[2] <= 1e-6) {
        valid = false;
        break;
      }
      const double iz = 1.0 / p[2];
      const double ru = k.f * p[0] * iz + k.cx - image[i][0];
      const double rv = k.f * p[1] * iz + k.cy - image[i][1];
      cost += ru * ru + rv * rv;
      const double du[3] = {k.f * iz, 0, -k.f * p[0] * iz * iz};
      const double dv[3] = {0, k.f * iz, -k.f * p[1] * iz * iz};
      // dP/dw = -[p0]x (left-multiplied rotation increment), dP/dt = I.
      const double m[3][3] = {{0, p0[2], -p0[1]}, {-p0[2], 0, p0[0]}, {p0[1], -p0[0], 0}};
      double ju[6], jv[6];
      for (int c = 0; c < 3; ++c) {
        ju[c] = du[0] * m[0][c] + du[2] * m[2][c];
        jv[c] = dv[1] * m[1][c] + dv[2] * m[2][c];
        ju[c + 3] = du[c];
        jv[c + 3] = dv[c];
      }
      for (int a = 0; a < 6; ++a) {
        ng[a] += ju[a] * ru + jv[a] * rv;
        for (int b = 0; b <= a; ++b) nh[a][b] += ju[a] * ju[b] + jv[a] * jv[b];
      }
    }
    if (valid && cost < best_cost) {
      const bool small_gain = have_step && best_cost - cost < 1e-4 * best_cost;
      best_cost = cost;
      best_r = r;
      best_t = t;
      std::memcpy(h, nh, sizeof h);
      std::memcpy(g, ng, sizeof g);
      for (int a = 0; a < 6; ++a)
        for (int b = 0; b < a; ++b) h[b][a] = h[a][b];
      lambda = std::max(lambda * 0.1, 1e-7);
      if (small_gain) break;
    } else {
      if (!have_step) return false;  // the starting pose itself is unusable
      lambda *= 10;                  // reject the step: back to the best, damp more
      if (lambda > 1e6) break;
    }
    double damped[6][6], neg_g[6], delta[6];
    for (int a = 0; a < 6; ++a) {
      neg_g[a] = -g[a];
      for (int b = 0; b < 6; ++b) damped[a][b] = h[a][b];
      damped[a][a] += lambda * (h[a][a] + 1e-9);
    }
    if (!Cholesky6(damped, neg_g, delta)) {
      lambda *= 10;
      r = best_r;
      t = best_t;
      continue;
    }
    r = ExpMap({delta[0], delta[1], delta[2]}) * best_r;
    t = best_t + cv::Vec3d(delta[3], delta[4], delta[5]);
    // A step this small (< 0.006° of rotation, < 10 µm) changes nothing that is reported:
    // take it without paying for another linearisation to confirm it.
    const double turn = std::abs(delta[0]) + std::abs(delta[1]) + std::abs(delta[2]);
    const double move = std::abs(delta[3]) + std::abs(delta[4]) + std::abs(delta[5]);
    if (turn < 1e-4 && move < 1e-3) {
      *rms = std::sqrt(best_cost / static_cast<double>(model.size()));
      return std::isfinite(best_cost);
    }
    have_step = true;
  }
  r = best_r;
  t = best_t;
  *rms = std::sqrt(best_cost / static_cast<double>(model.size()));
  return std::isfinite(best_cost);
}

// The rotation that turns the camera's axis (0, 0, 1) onto the ray towards `t` (the smallest
// such rotation: no twist about the ray).
cv::Matx33d LineOfSight(const cv::Vec3d& t) {
  const double n = cv::norm(t);
  if (n < 1e-9) return cv::Matx33d::eye();
  const cv::Vec3d d = t / n;
  const cv::Vec3d axis = cv::Vec3d(0, 0, 1).cross(d);  // (-d.y, d.x, 0)
  const double s = cv::norm(axis);
  if (s < 1e-12) return cv::Matx33d::eye();
  return ExpMap(axis * (std::atan2(s, d[2]) / s));
}

bool SolveFromScratch(const std::vector<cv::Vec3d>& model, const std::vector<cv::Vec2d>& image,
                      const Intrinsics& k, cv::Matx33d& r, cv::Vec3d& t) {
  std::vector<cv::Point3d> obj(model.begin(), model.end());
  std::vector<cv::Point2d> img(image.begin(), image.end());
  const cv::Matx33d cam(k.f, 0, k.cx, 0, k.f, k.cy, 0, 0, 1);
  cv::Mat rvec, tvec;
  try {
    if (!cv::solvePnP(obj, img, cam, cv::noArray(), rvec, tvec, false, cv::SOLVEPNP_SQPNP))
      return false;
  } catch (const cv::Exception&) {
    return false;
  }
  cv::Matx33d rm;
  cv::Rodrigues(rvec, rm);
  r = rm;
  t = cv::Vec3d(tvec.at<double>(0), tvec.at<double>(1), tvec.at<double>(2));
  return t[2] > 0;
}

}  // namespace

const std::vector<Point3>& CanonicalFace() {
  static const std::vector<Point3> face = [] {
    std::vector<Point3> v;
    std::istringstream in(internal::kCanonicalFaceText);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream l(line);
      Point3 p;
      if (l >> p.x >> p.y >> p.z) v.push_back(p);
    }
    return v;
  }();
  return face;
}

struct FeatureExtractor::State {
  Camera camera;
  bool has_pose = false;
  const Layout* layout = nullptr;
  cv::Matx33d r = cv::Matx33d::eye();
  cv::Vec3d t;
  std::vector<cv::Vec3d> model;
  std::vector<cv::Vec2d> image;
};

FeatureExtractor::FeatureExtractor(Camera camera) : state_(std::make_unique<State>()) {
  state_->camera = camera;
}
FeatureExtractor::~FeatureExtractor() = default;
FeatureExtractor::FeatureExtractor(FeatureExtractor&&) noexcept = default;
FeatureExtractor& FeatureExtractor::operator=(FeatureExtractor&&) noexcept = default;

void FeatureExtractor::Reset() { state_->has_pose = false; }

Features FeatureExtractor::Compute(const LandmarkFrame& frame) {
  Features out;
  State& s = *state_;
  const Layout* layout = LayoutFor(frame.points.size());
  if (layout == nullptr || frame.width <= 0 || frame.height <= 0 || CanonicalFace().size() != 468) {
    s.has_pose = false;
    return out;
  }
  out.face = true;
  out.point_count = static_cast<int>(frame.points.size());
  if (layout != s.layout) {
    s.layout = layout;
    s.has_pose = false;
    s.model.clear();
    for (const auto& vertices : layout->pose_model) {
      cv::Vec3d p(0, 0, 0);
      for (int i : vertices) p += ModelPoint(i);
      s.model.push_back(p / static_cast<double>(vertices.size()));
    }
  }
  const double w = frame.width, h = frame.height;
  const Intrinsics k{s.camera.focal_px > 0 ? s.camera.focal_px : w, w / 2, h / 2};
  const auto px = [&](int i) {
    const Point3& p = frame.points[static_cast<size_t>(i)];
    return cv::Vec2d(p.x * w, p.y * h);
  };
  s.image.clear();
  for (int i : layout->pose_points) s.image.push_back(px(i));

  // Pose: refine the previous one; solve afresh when there is none or it no longer fits.
  double rms = 0;
  const double max_rms = 0.03 * w;  // 19 px at 640: the previous pose was lost, not refined
  bool ok = s.has_pose && RefinePose(s.model, s.image, k, s.r, s.t, &rms) && rms < max_rms;
  if (!ok) {
    ok = SolveFromScratch(s.model, s.image, k, s.r, s.t) &&
         RefinePose(s.model, s.image, k, s.r, s.t, &rms);
  }
  s.has_pose = ok;
  if (ok) {
    // Angles against the line of sight, not the camera's axis: a head facing the lens reads
    // 0/0/0 wherever it is in the image. (Against the axis, a face 150 px above the centre of a
    // 640-wide frame that looks into the lens reads 13° of pitch.)
    const cv::Matx33d r = LineOfSight(s.t).t() * s.r;
    out.pose.yaw_deg = -std::atan2(r(0, 2), r(2, 2)) * kDeg;
    out.pose.pitch_deg = std::asin(std::clamp(r(1, 2), -1.0, 1.0)) * kDeg;
    out.pose.roll_deg = std::atan2(r(1, 0), r(1, 1)) * kDeg;
    for (int i = 0; i < 9; ++i) out.pose.rotation[static_cast<size_t>(i)] = r.val[i];
    for (int i = 0; i < 3; ++i) out.pose.translation[static_cast<size_t>(i)] = s.t[i];
    out.pose.reprojection_px = rms;
  }

  // Points on the face's own planes (undoes head rotation and perspective): the ray through a
  // landmark meets the plane through `anchor` (model point) facing the camera's axis of the face.
  const cv::Matx33d rt = s.r.t();
  const cv::Vec3d normal = s.r * cv::Vec3d(0, 0, 1);
  const auto on_plane = [&](const cv::Vec3d& anchor, int i) {
    const cv::Vec2d uv = px(i);
    const cv::Vec3d ray((uv[0] - k.cx) / k.f, (uv[1] - k.cy) / k.f, 1.0);
    const cv::Vec3d c = s.r * anchor + s.t;
    const double denom = normal.dot(ray);
    const double scale = std::abs(denom) > 1e-9 ? normal.dot(c) / denom : c[2];
    const cv::Vec3d head = rt * (scale * ray - s.t);
    return cv::Vec2d(head[0], head[1]);
  };
  const auto mid = [](const cv::Vec3d& a, const cv::Vec3d& b) { return 0.5 * (a + b); };
  const cv::Vec3d forward(0, 0, -kIrisForwardCm);  // toward the viewer in camera axes
  const cv::Vec3d right_eye = mid(ModelPoint(33), ModelPoint(133)) + forward;
  const cv::Vec3d left_eye = mid(ModelPoint(263), ModelPoint(362)) + forward;
  const cv::Vec3d mouth = ModelPoint(13);

  struct EyeResult {
    double ear = 0, width = 0;
    cv::Vec2d centre;
  };
  // The corners are measured on their own plane; the lids and the iris, which sit in front of
  // them, on the plane kIrisForwardCm ahead (projecting them onto the corners' plane would
  // shift them by the parallax of an oblique view).
  const auto eye = [&](const cv::Vec3d& anchor, int outer, int inner,
                       const std::vector<std::pair<int, int>>& lids) {
    EyeResult e;
    const cv::Vec3d corners = anchor - forward;
    const cv::Vec2d a = on_plane(corners, outer), b = on_plane(corners, inner);
    e.width = cv::norm(a - b);
    e.centre = 0.5 * (a + b);
    double open = 0;
    for (const auto& [up, low] : lids)
      open += cv::norm(on_plane(anchor, up) - on_plane(anchor, low));
    e.ear = e.width > 1e-9 ? open / static_cast<double>(lids.size()) / e.width : 0;
    return e;
  };
  const EyeResult re = eye(right_eye, layout->right_outer, layout->right_inner, layout->right_lids);
  const EyeResult le = eye(left_eye, layout->left_outer, layout->left_inner, layout->left_lids);
  out.ear_right = re.ear;
  out.ear_left = le.ear;

  if (layout->iris_right >= 0) {
    out.has_iris = true;
    double yaw = 0, pitch = 0;
    for (const auto& [anchor, eye_result, iris] : {std::tuple{right_eye, re, layout->iris_right},
                                                   std::tuple{left_eye, le, layout->iris_left}}) {
      const cv::Vec2d d = on_plane(anchor, iris) - eye_result.centre;
      const double radius = kEyeRadiusCm * eye_result.width / kCanonicalEyeWidthCm;
      yaw += std::asin(std::clamp(d[0] / radius, -1.0, 1.0)) * kDeg;
      pitch += std::asin(std::clamp(-d[1] / radius, -1.0, 1.0)) * kDeg;
    }
    out.eye_yaw_deg = yaw / 2;
    out.eye_pitch_deg = pitch / 2;
  }
  out.gaze_yaw_deg = out.pose.yaw_deg + out.eye_yaw_deg;
  out.gaze_pitch_deg = out.pose.pitch_deg + out.eye_pitch_deg;

  const cv::Vec2d mr = on_plane(mouth, layout->mouth_right),
                  ml = on_plane(mouth, layout->mouth_left);
  const double mouth_width = cv::norm(mr - ml);
  const double eye_span =
      cv::norm(on_plane(right_eye, layout->right_outer) - on_plane(left_eye, layout->left_outer));
  out.mouth_width_ratio = eye_span > 1e-9 ? mouth_width / eye_span : 0;
  out.mouth_open_ratio =
      mouth_width > 1e-9
          ? cv::norm(on_plane(mouth, layout->lip_upper) - on_plane(mouth, layout->lip_lower)) /
                mouth_width
          : 0;
  if (frame.has_blendshapes) {
    const auto& b = frame.blendshapes;
    out.smile_blendshape = 0.5 * (b[static_cast<size_t>(BlendshapeIndex("mouthSmileLeft"))] +
                                  b[static_cast<size_t>(BlendshapeIndex("mouthSmileRight"))]);
  }
  const Point3& ro = frame.points[static_cast<size_t>(layout->right_outer)];
  const Point3& lo = frame.points[static_cast<size_t>(layout->left_outer)];
  out.center_x = 0.5 * (ro.x + lo.x);
  out.center_y = 0.5 * (ro.y + lo.y);
  out.size = std::hypot((ro.x - lo.x) * w, (ro.y - lo.y) * h) / w;
  return out;
}

}  // namespace parley::vision
