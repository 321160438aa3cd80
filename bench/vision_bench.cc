// Vision kernels: parse + analyse one landmark frame (what the server does per frame), by
// input shape, on one core; and the head-pose step against cv::solvePnP.
//   build/release/bench/vision_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>

#include <iomanip>
#include <map>
#include <mutex>
#include <opencv2/calib3d.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "tests/support/face_generator.h"
#include "vision/vision.h"

namespace parley {
namespace {

using testing::GenerateSession;
using testing::GeneratorConfig;

const testing::Synthetic& Session() {
  static const testing::Synthetic s = [] {
    GeneratorConfig c;
    c.seed = 7;
    c.duration_s = 100;  // 3,000 frames
    c.no_face = false;
    return GenerateSession(c);
  }();
  return s;
}

std::string ContractJson(const vision::LandmarkFrame& f) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(3) << R"({"t":)" << f.t_ms << std::setprecision(5)
    << R"(,"width":)" << f.width << R"(,"height":)" << f.height << R"(,"landmarks":[)";
  for (size_t i = 0; i < f.points.size(); ++i)
    o << (i ? "," : "") << "[" << f.points[i].x << "," << f.points[i].y << "," << f.points[i].z
      << "]";
  o << "]}";
  return o.str();
}

std::string MediaPipeJson(const vision::LandmarkFrame& f) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(3) << R"({"t":)" << f.t_ms << std::setprecision(16)
    << R"(,"width":)" << f.width << R"(,"height":)" << f.height << R"(,"faceLandmarks":[[)";
  for (size_t i = 0; i < f.points.size(); ++i)
    o << (i ? "," : "") << R"({"x":)" << f.points[i].x << R"(,"y":)" << f.points[i].y << R"(,"z":)"
      << f.points[i].z << "}";
  o << "]]}";
  return o.str();
}

enum class Shape { kContract, kMediaPipe, kFloat32, kInt16 };

void BM_ParseAndAnalyse(benchmark::State& state) {
  const auto shape = static_cast<Shape>(state.range(0));
  const auto& frames = Session().frames;
  std::vector<std::string> inputs;
  size_t bytes = 0;
  for (const auto& f : frames) {
    switch (shape) {
      case Shape::kContract:
        inputs.push_back(ContractJson(f));
        break;
      case Shape::kMediaPipe:
        inputs.push_back(MediaPipeJson(f));
        break;
      case Shape::kFloat32:
        inputs.push_back(vision::EncodeBinaryFrame(f, vision::BinaryEncoding::kFloat32));
        break;
      case Shape::kInt16:
        inputs.push_back(vision::EncodeBinaryFrame(f, vision::BinaryEncoding::kInt16));
        break;
    }
    bytes += inputs.back().size();
  }
  vision::JsonFrameParser parser;
  auto analyzer = std::make_unique<vision::FaceAnalyzer>(vision::VisionConfig{});
  std::vector<vision::Event> events;
  vision::LandmarkFrame frame;
  std::string error;
  size_t i = 0;
  for (auto _ : state) {
    if (i == inputs.size()) {  // a new person: the clock starts again
      state.PauseTiming();
      analyzer = std::make_unique<vision::FaceAnalyzer>(vision::VisionConfig{});
      i = 0;
      state.ResumeTiming();
    }
    const std::string& in = inputs[i++];
    const bool ok = shape == Shape::kContract || shape == Shape::kMediaPipe
                        ? parser.Parse(in, &frame, &error)
                        : vision::ParseBinaryFrame(in, &frame, &error);
    if (!ok) state.SkipWithError(error.c_str());
    events.clear();
    analyzer->Process(frame, &events);
    benchmark::DoNotOptimize(analyzer->TakeScoresIfDue());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["bytes_per_frame"] = static_cast<double>(bytes) / inputs.size();
}
BENCHMARK(BM_ParseAndAnalyse)
    ->Arg(static_cast<int>(Shape::kContract))
    ->Arg(static_cast<int>(Shape::kMediaPipe))
    ->Arg(static_cast<int>(Shape::kFloat32))
    ->Arg(static_cast<int>(Shape::kInt16))
    ->ArgName("shape(0=json,1=mediapipe,2=f32,3=i16)");

void BM_ParseOnly(benchmark::State& state) {
  const auto& frames = Session().frames;
  std::vector<std::string> inputs;
  for (size_t k = 0; k < 200; ++k) inputs.push_back(ContractJson(frames[k]));
  vision::JsonFrameParser parser;
  vision::LandmarkFrame frame;
  std::string error;
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(parser.Parse(inputs[i++ % inputs.size()], &frame, &error));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ParseOnly);

// Features alone (pose refined from the previous frame, eyes, mouth).
void BM_FeaturesWarm(benchmark::State& state) {
  const auto& frames = Session().frames;
  vision::FeatureExtractor x;
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(x.Compute(frames[i++ % frames.size()]));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FeaturesWarm);

// What a per-frame cv::solvePnP would cost on the same 20 points (why the pose is refined).
void BM_CvSolvePnP(benchmark::State& state) {
  const auto method = static_cast<int>(state.range(0));
  const auto& f = Session().frames[10];
  const int idx[] = {33, 133, 362, 263, 168, 6, 197, 195, 5,   4,
                     1,  98,  327, 10,  151, 9, 234, 454, 127, 356};
  std::vector<cv::Point3d> obj;
  std::vector<cv::Point2d> img;
  for (int i : idx) {
    const auto& m = vision::CanonicalFace()[static_cast<size_t>(i)];
    obj.emplace_back(m.x, -m.y, -m.z);
    img.emplace_back(f.points[static_cast<size_t>(i)].x * 640,
                     f.points[static_cast<size_t>(i)].y * 480);
  }
  const cv::Matx33d k(640, 0, 320, 0, 640, 240, 0, 0, 1);
  cv::Mat r, t;
  for (auto _ : state)
    benchmark::DoNotOptimize(cv::solvePnP(obj, img, k, cv::noArray(), r, t, false, method));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CvSolvePnP)->Arg(cv::SOLVEPNP_SQPNP)->Arg(cv::SOLVEPNP_ITERATIVE)->ArgName("method");

// Server-side landmarks: dlib on 640x480 camera-like frames (the astronaut photo, moving a few
// pixels per frame), detection every 5th frame on a 320-wide copy, tracking in between.
// Threads(2) is the aggregate on this 2-core machine.
void BM_DlibLandmarks(benchmark::State& state) {
  static std::map<int, std::shared_ptr<const vision::LandmarkerModel>> models;
  static std::mutex mu;
  std::shared_ptr<const vision::LandmarkerModel> model;
  {
    const std::lock_guard lock(mu);
    auto& m = models[static_cast<int>(state.range(0))];
    if (!m) {
      vision::LandmarkerConfig config;
      config.detect_width = static_cast<int>(state.range(0));
      std::string error;
      m = vision::LoadLandmarkerModel(config, &error);
      if (!m) std::fprintf(stderr, "dlib model: %s\n", error.c_str());
    }
    model = m;
  }
  static const cv::Mat photo =
      cv::imread("/usr/lib/python3/dist-packages/skimage/data/astronaut.png", cv::IMREAD_COLOR);
  if (!model || photo.empty()) {
    state.SkipWithError("needs libdlib-data and python3-skimage");
    return;
  }
  std::vector<cv::Mat> frames;
  for (int k = 0; k < 30; ++k) {  // a small sway: up to 8 px each way
    cv::Mat f;
    const cv::Matx23d shift(1, 0, 8 * std::sin(k * 0.2), 0, 1, 4 * std::cos(k * 0.3));
    cv::Mat scaled;
    cv::resize(photo, scaled, cv::Size(640, 480));
    cv::warpAffine(scaled, f, shift, scaled.size(), cv::INTER_LINEAR, cv::BORDER_REPLICATE);
    frames.push_back(f);
  }
  vision::Landmarker lm(model);
  size_t i = 0, found = 0;
  for (auto _ : state) {
    const cv::Mat& f = frames[i++ % frames.size()];
    const auto out =
        lm.Detect(static_cast<double>(i) * 100, f.cols, f.rows, static_cast<int>(f.step), f.data);
    found += out.points.size() == 68;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["found_ratio"] = static_cast<double>(found) / std::max<size_t>(1, i);
}
BENCHMARK(BM_DlibLandmarks)
    ->ArgName("detect_width")
    ->Arg(320)
    ->Arg(480)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();

}  // namespace
}  // namespace parley

BENCHMARK_MAIN();
