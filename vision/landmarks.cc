// Landmark frames in: the contract's JSON, MediaPipe's result shape (both with simdjson's
// on-demand parser: a 478-point frame is ~11 KB of numbers, parsed in microseconds) and the
// compact binary frame. Every rejection says what was wrong.
#include <simdjson.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "vision/vision.h"

namespace parley::vision {
namespace {

constexpr std::array<std::string_view, kBlendshapeCount> kBlendshapeNames = {
    "_neutral",         "browDownLeft",      "browDownRight",      "browInnerUp",
    "browOuterUpLeft",  "browOuterUpRight",  "cheekPuff",          "cheekSquintLeft",
    "cheekSquintRight", "eyeBlinkLeft",      "eyeBlinkRight",      "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft",     "eyeLookInRight",     "eyeLookOutLeft",
    "eyeLookOutRight",  "eyeLookUpLeft",     "eyeLookUpRight",     "eyeSquintLeft",
    "eyeSquintRight",   "eyeWideLeft",       "eyeWideRight",       "jawForward",
    "jawLeft",          "jawOpen",           "jawRight",           "mouthClose",
    "mouthDimpleLeft",  "mouthDimpleRight",  "mouthFrownLeft",     "mouthFrownRight",
    "mouthFunnel",      "mouthLeft",         "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft",   "mouthPressRight",   "mouthPucker",        "mouthRight",
    "mouthRollLower",   "mouthRollUpper",    "mouthShrugLower",    "mouthShrugUpper",
    "mouthSmileLeft",   "mouthSmileRight",   "mouthStretchLeft",   "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft",      "noseSneerRight"};

// Normalised coordinates a little outside the image happen (a face at the edge); far outside
// is a broken client.
constexpr float kMinCoord = -1.0f, kMaxCoord = 2.0f, kMaxDepth = 10.0f;

bool ValidCount(size_t n) { return n == 0 || n == 68 || n == 468 || n == 478; }

std::string CountError(size_t n) {
  return "landmarks has " + std::to_string(n) + " points; expected 0, 68, 468 or 478";
}

// One branch-free pass over all coordinates against per-coordinate bounds (NaN fails its
// self-comparison, infinities the bounds), four at a time with SSE2 (x86-64's baseline; the
// compiler does not vectorise this at -O2); the slow per-point check runs only to name the
// culprit.
bool AllPointsInRange(const std::vector<Point3>& points) {
  static const auto bounds = [] {
    std::array<std::array<float, 478 * 3 + 4>, 2> b{};
    for (size_t i = 0; i < b[0].size(); ++i) {
      const bool z = i % 3 == 2;
      b[0][i] = z ? -kMaxDepth : kMinCoord;
      b[1][i] = z ? kMaxDepth : kMaxCoord;
    }
    return b;
  }();
  const size_t n = points.size() * 3;
  if (n > 478 * 3) return false;
  const float* v = &points.data()->x;  // Point3 is three packed floats
  size_t i = 0;
  int bad = 0;
#if defined(__SSE2__)
  __m128 acc = _mm_setzero_ps();
  for (; i + 4 <= n; i += 4) {
    const __m128 x = _mm_loadu_ps(v + i);
    acc = _mm_or_ps(acc, _mm_cmplt_ps(x, _mm_loadu_ps(bounds[0].data() + i)));
    acc = _mm_or_ps(acc, _mm_cmpgt_ps(x, _mm_loadu_ps(bounds[1].data() + i)));
    acc = _mm_or_ps(acc, _mm_cmpunord_ps(x, x));
  }
  bad = _mm_movemask_ps(acc);
#endif
  for (; i < n; ++i)
    bad |= static_cast<int>(v[i] < bounds[0][i]) | static_cast<int>(v[i] > bounds[1][i]) |
           static_cast<int>(v[i] != v[i]);
  return bad == 0;
}

// Parsers reuse the caller's frame: its point storage is kept between frames.
void ResetKeepingCapacity(LandmarkFrame* f) {
  f->t_ms = 0;
  f->width = f->height = 0;
  f->points.clear();
  f->points.reserve(478);
  f->blendshapes.fill(0.0f);
  f->has_blendshapes = false;
}

bool CheckPoint(const Point3& p, size_t i, std::string* error) {
  if (!std::isfinite(p.x) || !std::isfinite(p.y) || !std::isfinite(p.z)) {
    *error = "landmark " + std::to_string(i) + " has a coordinate that is not a finite number";
    return false;
  }
  if (p.x < kMinCoord || p.x > kMaxCoord || p.y < kMinCoord || p.y > kMaxCoord ||
      std::fabs(p.z) > kMaxDepth) {
    *error = "landmark " + std::to_string(i) +
             " is outside the normalised range (x and y in -1..2, |z| <= 10)";
    return false;
  }
  return true;
}

// Year 2286 in Unix milliseconds. Not 1e12: a client's clock may be Date.now() (1.8e12 today),
// and the contract only asks for milliseconds on the client's clock. Far below where a double
// stops resolving fractions of a millisecond.
constexpr double kMaxFrameTimeMs = 1e13;

bool CheckHeader(const LandmarkFrame& f, const ParseLimits& limits, std::string* error) {
  if (!std::isfinite(f.t_ms) || f.t_ms < 0 || f.t_ms > kMaxFrameTimeMs) {
    *error = "\"t\" must be a number of milliseconds in 0..1e13";
    return false;
  }
  if (f.has_face() || f.width != 0 || f.height != 0) {
    if (f.width < 1 || f.height < 1 || f.width > limits.max_dimension ||
        f.height > limits.max_dimension) {
      *error = "\"width\" and \"height\" must be integers in 1.." +
               std::to_string(limits.max_dimension) + " when landmarks are sent";
      return false;
    }
  }
  return true;
}

using simdjson::ondemand::array;
using simdjson::ondemand::object;
using simdjson::ondemand::value;

// [[x, y, z], ...] (z optional).
void ReadArrayPoints(array points, LandmarkFrame* f) {
  for (value p : points) {
    Point3 q;
    int k = 0;
    for (double c : p.get_array()) {
      if (k == 0) q.x = static_cast<float>(c);
      if (k == 1) q.y = static_cast<float>(c);
      if (k == 2) q.z = static_cast<float>(c);
      if (++k > 3) throw std::invalid_argument("a landmark has more than 3 coordinates");
    }
    if (k < 2) throw std::invalid_argument("a landmark needs at least x and y");
    if (f->points.size() >= 478) throw std::invalid_argument("more than 478 landmarks");
    f->points.push_back(q);
  }
}

// [{"x":..,"y":..,"z":..}, ...] (MediaPipe's NormalizedLandmark list).
void ReadObjectPoints(array points, LandmarkFrame* f) {
  for (value p : points) {
    Point3 q;
    int seen = 0;
    for (auto field : p.get_object()) {
      const std::string_view key = field.unescaped_key();
      if (key == "x") {
        q.x = static_cast<float>(double(field.value()));
        seen |= 1;
      } else if (key == "y") {
        q.y = static_cast<float>(double(field.value()));
        seen |= 2;
      } else if (key == "z") {
        q.z = static_cast<float>(double(field.value()));
      }
    }
    if ((seen & 3) != 3) throw std::invalid_argument("a landmark object needs \"x\" and \"y\"");
    if (f->points.size() >= 478) throw std::invalid_argument("more than 478 landmarks");
    f->points.push_back(q);
  }
}

// Blendshape entries one frame may carry, known names or not: MediaPipe sends 52; the cap keeps a
// frame of thousands of keys from costing a name lookup each.
constexpr int kMaxBlendshapeEntries = 64;

void SetBlendshape(LandmarkFrame* f, std::string_view name, double score, int* entries) {
  if (++*entries > kMaxBlendshapeEntries)
    throw std::invalid_argument("more than " + std::to_string(kMaxBlendshapeEntries) +
                                " blendshapes in one frame");
  const int i = BlendshapeIndex(name);
  if (i < 0) return;  // names from newer models are ignored
  if (!std::isfinite(score) || score < -0.01 || score > 1.01)
    throw std::invalid_argument("blendshape '" + std::string(name) + "' is not a score in 0..1");
  f->blendshapes[static_cast<size_t>(i)] = static_cast<float>(score);
  f->has_blendshapes = true;
}

int ReadDimension(value v, const char* name) {
  const int64_t n = v.get_int64();
  if (n < 0 || n > 1'000'000)
    throw std::invalid_argument(std::string("\"") + name + "\" is out of range");
  return static_cast<int>(n);
}

}  // namespace

const std::array<std::string_view, kBlendshapeCount>& BlendshapeNames() { return kBlendshapeNames; }

int BlendshapeIndex(std::string_view name) {
  for (size_t i = 0; i < kBlendshapeNames.size(); ++i)
    if (kBlendshapeNames[i] == name) return static_cast<int>(i);
  return -1;
}

struct JsonFrameParser::State {
  simdjson::ondemand::parser parser;
  std::string buffer;  // the text plus simdjson's padding
};

JsonFrameParser::JsonFrameParser() : state_(std::make_unique<State>()) {}
JsonFrameParser::~JsonFrameParser() = default;

bool JsonFrameParser::Parse(std::string_view text, LandmarkFrame* frame, std::string* error,
                            const ParseLimits& limits) {
  ResetKeepingCapacity(frame);
  std::string& buf = state_->buffer;
  buf.assign(text);
  buf.resize(text.size() + simdjson::SIMDJSON_PADDING);
  bool have_t = false;
  int blendshape_entries = 0;
  try {
    simdjson::ondemand::document doc =
        state_->parser.iterate(buf.data(), text.size(), buf.size()).value();
    object root = doc.get_object();
    for (auto field : root) {
      const std::string_view key = field.unescaped_key();
      value v = field.value();
      if (key == "t") {
        frame->t_ms = v.get_double();
        have_t = true;
      } else if (key == "width") {
        frame->width = ReadDimension(v, "width");
      } else if (key == "height") {
        frame->height = ReadDimension(v, "height");
      } else if (key == "landmarks") {
        if (v.is_null()) continue;
        ReadArrayPoints(v.get_array(), frame);
      } else if (key == "faceLandmarks" || key == "multiFaceLandmarks") {
        if (v.is_null()) continue;
        bool first = true;
        for (value face : v.get_array()) {  // the first face is the person; others ignored
          if (first) ReadObjectPoints(face.get_array(), frame);
          first = false;
        }
      } else if (key == "blendshapes") {
        if (v.is_null()) continue;
        for (auto b : v.get_object())
          SetBlendshape(frame, b.unescaped_key(), b.value(), &blendshape_entries);
      } else if (key == "faceBlendshapes") {
        if (v.is_null()) continue;
        bool first = true;
        for (value face : v.get_array()) {
          if (first) {
            object classifications = face.get_object();
            for (value c : classifications["categories"].get_array()) {
              std::string_view name;
              double score = 0;
              for (auto cf : c.get_object()) {
                const std::string_view ck = cf.unescaped_key();
                if (ck == "categoryName")
                  name = cf.value().get_string();
                else if (ck == "score")
                  score = cf.value().get_double();
              }
              SetBlendshape(frame, name, score, &blendshape_entries);
            }
          }
          first = false;
        }
      }
    }
  } catch (const simdjson::simdjson_error& e) {
    *error = std::string("landmark frame is not valid: ") + simdjson::error_message(e.error());
    return false;
  } catch (const std::invalid_argument& e) {
    *error = e.what();
    return false;
  }
  if (!have_t) {
    *error = "a landmark frame needs \"t\" (milliseconds on the client's clock)";
    return false;
  }
  if (!ValidCount(frame->points.size())) {
    *error = CountError(frame->points.size());
    return false;
  }
  if (!AllPointsInRange(frame->points)) {
    for (size_t i = 0; i < frame->points.size(); ++i)
      if (!CheckPoint(frame->points[i], i, error)) return false;
  }
  return CheckHeader(*frame, limits, error);
}

// ---- Binary --------------------------------------------------------------------------------

namespace {

static_assert(std::endian::native == std::endian::little, "the binary frame is little-endian");

template <typename T>
T Load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
void Store(std::string& out, T v) {
  char b[sizeof v];
  std::memcpy(b, &v, sizeof v);
  out.append(b, sizeof v);
}

constexpr float kInt16Scale = 16384.0f;

}  // namespace

bool ParseBinaryFrame(std::string_view bytes, LandmarkFrame* frame, std::string* error,
                      const ParseLimits& limits) {
  ResetKeepingCapacity(frame);
  if (bytes.size() < kBinaryHeaderBytes) {
    *error = "binary landmark frame is shorter than its 20-byte header";
    return false;
  }
  const char* p = bytes.data();
  if (std::memcmp(p, "PLM", 3) != 0) {
    *error = "binary landmark frame does not start with the magic \"PLM\"";
    return false;
  }
  if (static_cast<uint8_t>(p[3]) != 1) {
    *error = "binary landmark frame version " + std::to_string(static_cast<uint8_t>(p[3])) +
             " is not supported (this server reads version 1)";
    return false;
  }
  frame->t_ms = Load<double>(p + 4);
  frame->width = Load<uint16_t>(p + 12);
  frame->height = Load<uint16_t>(p + 14);
  const size_t n = Load<uint16_t>(p + 16);
  const auto encoding = static_cast<uint8_t>(p[18]);
  const size_t blend = static_cast<uint8_t>(p[19]);
  if (encoding > 1) {
    *error =
        "binary landmark encoding " + std::to_string(encoding) + " is unknown (0 float32, 1 int16)";
    return false;
  }
  if (!ValidCount(n)) {
    *error = CountError(n);
    return false;
  }
  const size_t coord_bytes = encoding == 0 ? 4 : 2;
  const size_t expected = kBinaryHeaderBytes + n * 3 * coord_bytes + blend * 5;
  if (bytes.size() != expected) {
    *error = "binary landmark frame is " + std::to_string(bytes.size()) + " bytes; its header (" +
             std::to_string(n) + " points, " + std::to_string(blend) + " blendshapes) says " +
             std::to_string(expected);
    return false;
  }
  frame->points.resize(n);
  const char* c = p + kBinaryHeaderBytes;
  if (encoding == 0) {
    std::memcpy(frame->points.data(), c, n * 12);  // Point3 is three packed floats
    static_assert(sizeof(Point3) == 12);
  } else {
    for (size_t i = 0; i < n; ++i) {
      frame->points[i] = {Load<int16_t>(c + i * 6) / kInt16Scale,
                          Load<int16_t>(c + i * 6 + 2) / kInt16Scale,
                          Load<int16_t>(c + i * 6 + 4) / kInt16Scale};
    }
  }
  c += n * 3 * coord_bytes;
  for (size_t i = 0; i < blend; ++i, c += 5) {
    const auto idx = static_cast<uint8_t>(c[0]);
    const float score = Load<float>(c + 1);
    if (idx >= kBlendshapeCount || !std::isfinite(score) || score < -0.01f || score > 1.01f) {
      *error = "binary blendshape " + std::to_string(i) + " has a bad index or score";
      return false;
    }
    frame->blendshapes[idx] = score;
    frame->has_blendshapes = true;
  }
  if (!AllPointsInRange(frame->points)) {
    for (size_t i = 0; i < n; ++i)
      if (!CheckPoint(frame->points[i], i, error)) return false;
  }
  return CheckHeader(*frame, limits, error);
}

std::string EncodeBinaryFrame(const LandmarkFrame& frame, BinaryEncoding encoding) {
  std::string out;
  out.reserve(kBinaryHeaderBytes + frame.points.size() * 12 + kBlendshapeCount * 5);
  out.append("PLM\x01", 4);
  Store<double>(out, frame.t_ms);
  Store<uint16_t>(out, static_cast<uint16_t>(frame.width));
  Store<uint16_t>(out, static_cast<uint16_t>(frame.height));
  Store<uint16_t>(out, static_cast<uint16_t>(frame.points.size()));
  out.push_back(static_cast<char>(encoding));
  uint8_t blend = 0;
  if (frame.has_blendshapes)
    for (float s : frame.blendshapes) blend += s != 0.0f ? 1 : 0;
  out.push_back(static_cast<char>(blend));
  for (const Point3& p : frame.points) {
    if (encoding == BinaryEncoding::kFloat32) {
      Store<float>(out, p.x);
      Store<float>(out, p.y);
      Store<float>(out, p.z);
    } else {
      for (float v : {p.x, p.y, p.z})
        Store<int16_t>(out, static_cast<int16_t>(
                                std::lround(std::clamp(v * kInt16Scale, -32768.0f, 32767.0f))));
    }
  }
  if (blend > 0) {
    for (size_t i = 0; i < kBlendshapeCount; ++i) {
      if (frame.blendshapes[i] == 0.0f) continue;
      out.push_back(static_cast<char>(i));
      Store<float>(out, frame.blendshapes[i]);
    }
  }
  return out;
}

}  // namespace parley::vision
