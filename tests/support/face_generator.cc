#include "tests/support/face_generator.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace parley::testing {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kRad = kPi / 180;

struct V3 {
  double x, y, z;
};
V3 operator+(V3 a, V3 b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
V3 operator-(V3 a, V3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
V3 operator*(double s, V3 a) { return {s * a.x, s * a.y, s * a.z}; }

// MediaPipe eye contours (16 points each) and their corners.
constexpr int kRightEye[] = {33,  7,   163, 144, 145, 153, 154, 155,
                             133, 246, 161, 160, 159, 158, 157, 173};
constexpr int kLeftEye[] = {263, 249, 390, 373, 374, 380, 381, 382,
                            362, 466, 388, 387, 386, 385, 384, 398};

bool InMouth(const vision::Point3& p) {
  return std::abs(p.x) < 3.2 && p.y > -6.0 && p.y < -2.8 && p.z > 3.0;
}

// Camera-frame rotation of the docs' convention: R = Ry(-yaw) Rx(-pitch) Rz(roll), applied to
// model points expressed in camera axes (x, -y, -z). Written independently of vision/.
V3 Rotate(const FacePose& p, V3 v) {
  const double a = -p.yaw * kRad, b = -p.pitch * kRad, c = p.roll * kRad;
  // Rz(c)
  V3 r{std::cos(c) * v.x - std::sin(c) * v.y, std::sin(c) * v.x + std::cos(c) * v.y, v.z};
  // Rx(b)
  r = {r.x, std::cos(b) * r.y - std::sin(b) * r.z, std::sin(b) * r.y + std::cos(b) * r.z};
  // Ry(a)
  return {std::cos(a) * r.x + std::sin(a) * r.z, r.y, -std::sin(a) * r.x + std::cos(a) * r.z};
}

}  // namespace

vision::LandmarkFrame ToDlib68(const vision::LandmarkFrame& mesh) {
  static constexpr int kVertex[68] = {
      127, 234, 93,  132, 58,  172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,  // jaw
      70,  63,  105, 66,  107, 336, 296, 334, 293, 300,                                     // brows
      168, 197, 5,   4,   75,  97,  2,   326, 305,                                          // nose
      33,  160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,                           // eyes
      61,  39,  37,  0,   267, 269, 291, 405, 314, 17,  84,  181,                           // lips
      78,  82,  13,  312, 308, 317, 14,  87};
  vision::LandmarkFrame out = mesh;
  out.points.clear();
  if (mesh.points.size() < 468) return out;
  for (int v : kVertex) out.points.push_back(mesh.points[static_cast<size_t>(v)]);
  return out;
}

HeadAngles AgainstLineOfSight(const FacePose& p) {
  // Columns of R (camera axes), then the rotation taking the camera axis onto the ray to the
  // head (Rodrigues about z × d), and the angles of Ray^T R in the docs' convention.
  const V3 cx = Rotate(p, {1, 0, 0}), cy = Rotate(p, {0, 1, 0}), cz = Rotate(p, {0, 0, 1});
  const double r[3][3] = {{cx.x, cy.x, cz.x}, {cx.y, cy.y, cz.y}, {cx.z, cy.z, cz.z}};
  const double n = std::sqrt(p.tx * p.tx + p.ty * p.ty + p.tz * p.tz);
  const V3 d{p.tx / n, p.ty / n, p.tz / n};
  const double s = std::hypot(d.x, d.y);  // |z × d|
  double ray[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  if (s > 1e-12) {
    const V3 k{-d.y / s, d.x / s, 0};  // unit axis
    const double c = d.z;              // cos of the angle; s is its sine
    const double kk[3] = {k.x, k.y, k.z};
    const double kx[3][3] = {{0, -k.z, k.y}, {k.z, 0, -k.x}, {-k.y, k.x, 0}};
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        ray[i][j] = (i == j ? c : 0) + s * kx[i][j] + (1 - c) * kk[i] * kk[j];
  }
  double rel[3][3] = {};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      for (int m = 0; m < 3; ++m) rel[i][j] += ray[m][i] * r[m][j];
  HeadAngles a;
  a.yaw = -std::atan2(rel[0][2], rel[2][2]) / kRad;
  a.pitch = std::asin(std::clamp(rel[1][2], -1.0, 1.0)) / kRad;
  a.roll = std::atan2(rel[1][0], rel[1][1]) / kRad;
  return a;
}

vision::LandmarkFrame RenderFace(const FacePose& pose, const Person& person, double focal_px,
                                 int width, int height, bool irises) {
  const auto& canonical = vision::CanonicalFace();
  std::vector<V3> model(canonical.size());  // model axes: x image-right, y up, z to viewer
  for (size_t i = 0; i < canonical.size(); ++i) {
    const auto& p = canonical[i];
    model[i] = {p.x * person.width, p.y * person.height, p.z * person.depth};
    if (InMouth(p)) {
      const double s = pose.smile;
      model[i].x *= person.mouth_width * (1 + 0.18 * s);
      model[i].y += 0.35 * s * (p.x / 2.46) * (p.x / 2.46);
    }
  }
  // Eyes: lids open by the person's opening, the upper lid closes for blinks.
  const auto shape_eye = [&](const int* idx, int outer, int inner) {
    const double yc =
        0.5 * (model[static_cast<size_t>(outer)].y + model[static_cast<size_t>(inner)].y);
    for (int k = 0; k < 16; ++k) {
      V3& v = model[static_cast<size_t>(idx[k])];
      const double off = (v.y - yc) * person.eye_opening;
      const double keep = off > 0 ? 1 - 0.97 * pose.closure : 1 - 0.3 * pose.closure;
      v.y = yc + off * keep;
    }
    return 0.5 * (model[static_cast<size_t>(outer)] + model[static_cast<size_t>(inner)]);
  };
  const V3 right_mid = shape_eye(kRightEye, 33, 133);
  const V3 left_mid = shape_eye(kLeftEye, 263, 362);
  if (irises) {
    // Eyeball: iris centre 0.5 cm in front of the corners' midpoint when looking ahead, on a
    // sphere of 1.2 cm (scaled with the face), iris radius 0.55 cm.
    const double r = 1.2 * person.width;
    const V3 dir{std::sin(pose.eye_yaw * kRad) * std::cos(pose.eye_pitch * kRad),
                 std::sin(pose.eye_pitch * kRad),
                 std::cos(pose.eye_yaw * kRad) * std::cos(pose.eye_pitch * kRad)};
    const V3 ux{std::cos(pose.eye_yaw * kRad), 0, -std::sin(pose.eye_yaw * kRad)};
    const V3 uy{0, 1, 0};
    for (const V3& mid : {right_mid, left_mid}) {
      const V3 centre = mid + V3{0, 0, 0.5 - r} + r * dir;
      const double ir = 0.55 * person.width;
      for (const V3& v :
           {centre, centre + ir * ux, centre + ir * uy, centre - ir * ux, centre - ir * uy})
        model.push_back(v);
    }
  }
  vision::LandmarkFrame f;
  f.width = width;
  f.height = height;
  f.points.reserve(model.size());
  const double cx = width / 2.0, cy = height / 2.0;
  for (const V3& m : model) {
    const V3 c = Rotate(pose, {m.x, -m.y, -m.z}) + V3{pose.tx, pose.ty, pose.tz};
    const double u = focal_px * c.x / c.z + cx, v = focal_px * c.y / c.z + cy;
    f.points.push_back({static_cast<float>(u / width), static_cast<float>(v / height),
                        static_cast<float>((c.z - pose.tz) / pose.tz * focal_px / width)});
  }
  return f;
}

Synthetic GenerateSession(const GeneratorConfig& config) {
  std::mt19937_64 rng(config.seed * 7919ULL + 17);
  std::uniform_real_distribution<double> uni(0, 1);
  std::normal_distribution<double> gauss(0, 1);
  const auto between = [&](double a, double b) { return a + (b - a) * uni(rng); };

  Person person{between(0.9, 1.1), between(0.9, 1.1), between(0.85, 1.15), between(0.75, 1.25),
                between(0.9, 1.1)};
  const double focal = config.width * between(0.9, 1.1);
  const double noise = config.noise_px >= 0 ? config.noise_px : between(0.5, 1.5);
  const double blink_rate =
      config.blink_rate_per_min >= 0 ? config.blink_rate_per_min : between(5, 30);
  const double total_ms = config.duration_s * 1000;
  Synthetic synthetic;
  Truth truth;

  // Episodes. No-face stretches first; the rest avoid them.
  const auto overlaps = [](const std::vector<Span>& spans, double a, double b, double margin) {
    return std::any_of(spans.begin(), spans.end(), [&](const Span& s) {
      return a < s.second + margin && b > s.first - margin;
    });
  };
  if (config.no_face) {
    for (double t = between(8000, 20000); t < total_ms - 5000; t += between(25000, 50000)) {
      const double d = between(1000, 3000);
      truth.no_face.push_back({t, t + d});
    }
  }
  if (config.early_face_loss) {
    const double t = between(300, 2500);
    truth.no_face.insert(truth.no_face.begin(), {t, t + between(1000, 2000)});
  }
  struct Away {
    double start, end, yaw, pitch;
  };
  std::vector<Away> aways;
  if (config.first_frame_yaw != 0) {
    const double d = between(1000, 2000);
    aways.push_back({-500, d, config.first_frame_yaw, 0});  // fully turned at frame 0
    truth.gaze_away.push_back({0, d});
  }
  if (config.gaze_away) {
    for (double t = between(6000, 12000); t < total_ms - 6000; t += between(8000, 18000)) {
      const double d = between(1000, 4000);
      if (overlaps(truth.no_face, t, t + d, 1500)) continue;
      double yaw = 0, pitch = 0;
      if (uni(rng) < 0.7)
        yaw = (uni(rng) < 0.5 ? -1 : 1) * between(25, 40);
      else
        pitch = -between(22, 32);  // down at notes or a phone
      aways.push_back({t, t + d, yaw, pitch});
      if (config.face_loss_in_episodes && d > 2000 && uni(rng) < 0.5) {
        // Turned so far the face is lost (longer than face_lost's 500 ms), then found still
        // looking away.
        const double lost = t + between(500, d - 1500), found = lost + between(600, 1000);
        truth.no_face.push_back({lost, found});
        truth.gaze_away.push_back({t, lost});
        truth.gaze_away.push_back({found, t + d});
        continue;
      }
      truth.gaze_away.push_back({t, t + d});
    }
  }
  std::sort(truth.no_face.begin(), truth.no_face.end());
  // An episode ends where the face is lost (docs/scoring.md); what is left after the face is
  // found again is an episode of its own when it lasts (300 ms: shorter is a glance).
  {
    std::vector<Span> clipped;
    for (Span away : truth.gaze_away) {
      for (const Span& gone : truth.no_face) {
        if (gone.second <= away.first || gone.first >= away.second) continue;
        if (gone.first - away.first >= 300) clipped.push_back({away.first, gone.first});
        away.first = gone.second;
      }
      if (away.second - away.first >= 300) clipped.push_back(away);
    }
    truth.gaze_away = std::move(clipped);
  }
  if (config.smiles) {
    for (double t = between(4000, 9000); t < total_ms - 6000; t += between(9000, 20000)) {
      const double d = between(1500, 5000);
      if (overlaps(truth.no_face, t, t + d, 1000)) continue;
      truth.smiles.push_back({t, t + d});
    }
  }
  {
    double t = between(500, 3000);
    while (t < total_ms - 1000) {
      const double d = between(100, 300);
      if (!overlaps(truth.no_face, t, t + d, 400)) truth.blinks.push_back({t, t + d});
      // Exponential gaps at the rate, at least 400 ms apart.
      t += std::max(400.0, -std::log(1 - uni(rng)) * 60000 / blink_rate);
    }
  }

  // Head random walk (Ornstein–Uhlenbeck around a personal neutral pose).
  const double neutral_yaw = between(-4, 4), neutral_pitch = between(-4, 4),
               neutral_roll = between(-3, 3);
  double wy = 0, wp = 0, wr = 0, wx = 0, wyp = 0, ez = 0;
  const double base_tz = between(48, 65), base_tx = between(-3, 3), base_ty = between(-3, 3);
  const double dt = 1000 / config.fps;
  const auto ramp = [](double t, double a, double b, double width) {  // 0→1→0 over [a, b]
    if (t < a || t > b) return 0.0;
    return std::clamp(std::min(t - a, b - t) / width, 0.0, 1.0);
  };
  const auto inside = [](const std::vector<Span>& spans, double t) {
    return std::any_of(spans.begin(), spans.end(),
                       [t](const Span& s) { return t >= s.first && t < s.second; });
  };
  for (int i = 0;; ++i) {
    const double t_nominal = i * dt;
    if (t_nominal >= total_ms) break;
    const double t = std::max(0.0, t_nominal + between(-config.jitter_ms, config.jitter_ms));
    const double k = dt / 1000;
    wy += -0.5 * wy * k + 2.0 * std::sqrt(k) * gauss(rng);
    wp += -0.5 * wp * k + 1.5 * std::sqrt(k) * gauss(rng);
    wr += -0.5 * wr * k + 1.0 * std::sqrt(k) * gauss(rng);
    wx += -0.3 * wx * k + 0.4 * std::sqrt(k) * gauss(rng);
    wyp += -0.3 * wyp * k + 0.4 * std::sqrt(k) * gauss(rng);
    ez += -2.0 * ez * k + 3.0 * std::sqrt(k) * gauss(rng);  // eyes wander over the screen

    FacePose pose;
    pose.yaw = neutral_yaw + wy;
    pose.pitch = neutral_pitch + wp;
    pose.roll = neutral_roll + wr;
    pose.eye_yaw = -0.5 * wy + ez;  // eyes compensate the head to keep looking at the screen
    pose.eye_pitch = -0.5 * wp + 0.5 * ez;
    for (const Away& a : aways) {
      const double w = ramp(t, a.start - 75, a.end + 75, 150);
      pose.yaw += 0.6 * a.yaw * w;
      pose.pitch += 0.6 * a.pitch * w;
      pose.eye_yaw += 0.4 * a.yaw * w;
      pose.eye_pitch += 0.4 * a.pitch * w;
    }
    for (const Span& b : truth.blinks) {
      if (t < b.first || t > b.second) continue;
      const double u = (t - b.first) / (b.second - b.first);
      pose.closure = u < 0.4 ? u / 0.4 : (1 - u) / 0.6;
    }
    for (const Span& s : truth.smiles)
      pose.smile = std::max(pose.smile, ramp(t, s.first - 100, s.second + 100, 200));
    pose.tx = base_tx + wx;
    pose.ty = base_ty + wyp;
    pose.tz = base_tz;

    Truth::PerFrame pf;
    pf.face = !inside(truth.no_face, t);
    pf.on_screen = !inside(truth.gaze_away, t);
    pf.smiling = inside(truth.smiles, t);
    const HeadAngles seen = AgainstLineOfSight(pose);
    pf.yaw = seen.yaw;
    pf.pitch = seen.pitch;
    pf.roll = seen.roll;
    truth.frames.push_back(pf);

    vision::LandmarkFrame frame;
    if (pf.face) {
      frame = RenderFace(pose, person, focal, config.width, config.height, config.irises);
      if (config.dlib68) frame = ToDlib68(frame);
      for (auto& p : frame.points) {
        p.x += static_cast<float>(noise * gauss(rng) / config.width);
        p.y += static_cast<float>(noise * gauss(rng) / config.height);
      }
    } else {
      frame.width = config.width;
      frame.height = config.height;
    }
    frame.t_ms = t;
    synthetic.frames.push_back(std::move(frame));
  }

  // Time-weighted truth ratios: each frame's state holds until the next frame.
  double total = 0, face = 0, on = 0, smile = 0;
  for (size_t i = 0; i + 1 < synthetic.frames.size(); ++i) {
    const double d = synthetic.frames[i + 1].t_ms - synthetic.frames[i].t_ms;
    const auto& pf = truth.frames[i];
    total += d;
    if (!pf.face) continue;
    face += d;
    on += pf.on_screen ? d : 0;
    smile += pf.smiling ? d : 0;
  }
  truth.face_visible_ratio = total > 0 ? face / total : 0;
  truth.gaze_on_screen_ratio = face > 0 ? on / face : 0;
  truth.smile_ratio = face > 0 ? smile / face : 0;
  truth.blink_rate_per_min = face > 0 ? truth.blinks.size() / (face / 60000) : 0;
  synthetic.truth = std::move(truth);
  return synthetic;
}

Match MatchTimes(const std::vector<double>& detected, const std::vector<double>& truth,
                 double tolerance_ms) {
  Match m;
  m.detected = static_cast<int>(detected.size());
  m.truth = static_cast<int>(truth.size());
  std::vector<bool> used(truth.size(), false);
  for (double d : detected) {
    int best = -1;
    double best_err = tolerance_ms;
    for (size_t i = 0; i < truth.size(); ++i) {
      const double err = std::abs(truth[i] - d);
      if (!used[i] && err <= best_err) {
        best = static_cast<int>(i);
        best_err = err;
      }
    }
    if (best >= 0) {
      used[static_cast<size_t>(best)] = true;
      ++m.true_positives;
    }
  }
  return m;
}

Match MatchSpans(const std::vector<Span>& detected, const std::vector<Span>& truth,
                 double min_iou) {
  Match m;
  m.detected = static_cast<int>(detected.size());
  m.truth = static_cast<int>(truth.size());
  std::vector<bool> used(truth.size(), false);
  for (const Span& d : detected) {
    for (size_t i = 0; i < truth.size(); ++i) {
      if (used[i]) continue;
      const double inter = std::min(d.second, truth[i].second) - std::max(d.first, truth[i].first);
      const double uni = std::max(d.second, truth[i].second) - std::min(d.first, truth[i].first);
      if (inter > 0 && inter / uni >= min_iou) {
        used[i] = true;
        ++m.true_positives;
        break;
      }
    }
  }
  return m;
}

}  // namespace parley::testing
