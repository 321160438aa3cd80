// Landmark frames from a client, as text (the contract's JSON or MediaPipe's result shape) or
// as the compact binary frame; the first byte picks which. A frame that parses is sane (a
// landmark count the analyser knows, finite coordinates, t and size in range) and survives a
// round trip through the binary encoding unchanged.
#include <cmath>

#include "tests/fuzz/fuzz.h"
#include "vision/vision.h"

using namespace parley;

namespace {

bool Sane(const vision::LandmarkFrame& f) {
  const size_t n = f.points.size();
  if (n != 0 && n != 68 && n != 468 && n != 478) return false;
  if (!std::isfinite(f.t_ms) || f.t_ms < 0 || f.t_ms > 1e13) return false;
  // A frame without a face may leave out its image size.
  const bool sized = f.width >= 1 && f.width <= 8192 && f.height >= 1 && f.height <= 8192;
  if (!sized && (n != 0 || f.width != 0 || f.height != 0)) return false;
  for (const auto& p : f.points)
    if (!std::isfinite(p.x) || !std::isfinite(p.y) || !std::isfinite(p.z)) return false;
  for (float s : f.blendshapes)
    if (!std::isfinite(s)) return false;
  return true;
}

bool Same(const vision::LandmarkFrame& a, const vision::LandmarkFrame& b) {
  if (a.t_ms != b.t_ms || a.width != b.width || a.height != b.height ||
      a.points.size() != b.points.size())
    return false;
  for (size_t i = 0; i < a.points.size(); ++i)
    if (a.points[i].x != b.points[i].x || a.points[i].y != b.points[i].y ||
        a.points[i].z != b.points[i].z)
      return false;
  return a.blendshapes == b.blendshapes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static vision::JsonFrameParser json_parser;
  fuzz::FuzzInput in(data, size);
  const bool binary = (in.Byte() & 1) != 0;
  const std::string_view bytes = in.Rest();
  vision::LandmarkFrame frame;
  std::string error;
  const bool ok = binary ? vision::ParseBinaryFrame(bytes, &frame, &error)
                         : json_parser.Parse(bytes, &frame, &error);
  if (!ok) {
    PARLEY_FUZZ_CHECK(!error.empty());
    return 0;
  }
  PARLEY_FUZZ_CHECK(Sane(frame));
  vision::LandmarkFrame again;
  const std::string encoded = vision::EncodeBinaryFrame(frame);
  PARLEY_FUZZ_CHECK(vision::ParseBinaryFrame(encoded, &again, &error));
  PARLEY_FUZZ_CHECK(Same(frame, again));
  return 0;
}
