// Server-side landmarks for clients that send video only: dlib's HOG face detector on a
// downscaled frame every few frames, the face box carried over from the last landmarks in
// between, and dlib's 68-point shape predictor on the full-resolution frame.
#include <dlib/image_processing.h>
#include <dlib/image_processing/frontal_face_detector.h>
#include <dlib/opencv/cv_image.h>

#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "vision/vision.h"

namespace parley::vision {

std::string LandmarkerConfig::Validate() const {
  if (detect_width < 80 || detect_width > 4096) return "landmark detection width must be 80..4096";
  if (redetect_every < 1 || redetect_every > 300)
    return "landmark redetection must be 1..300 frames";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(shape_model, ec))
    return "dlib's 68-point model is not at " + shape_model +
           " (Debian package libdlib-data installs it)";
  return {};
}

class LandmarkerModel {
 public:
  dlib::shape_predictor predictor;  // const use is thread-safe
  LandmarkerConfig config;
};

std::shared_ptr<const LandmarkerModel> LoadLandmarkerModel(const LandmarkerConfig& config,
                                                           std::string* error) {
  if (std::string why = config.Validate(); !why.empty()) {
    *error = why;
    return nullptr;
  }
  auto model = std::make_shared<LandmarkerModel>();
  model->config = config;
  try {
    dlib::deserialize(config.shape_model) >> model->predictor;
  } catch (const std::exception& e) {
    *error = "cannot load " + config.shape_model + ": " + e.what();
    return nullptr;
  }
  if (model->predictor.num_parts() != 68) {
    *error = config.shape_model + " is not a 68-point model";
    return nullptr;
  }
  return model;
}

struct Landmarker::State {
  std::shared_ptr<const LandmarkerModel> model;
  dlib::frontal_face_detector detector = dlib::get_frontal_face_detector();  // not shareable
  int frames_since_detect = 1 << 20;
  std::optional<dlib::rectangle> face;  // from the last landmarks
  cv::Mat small, gray_small;
};

Landmarker::Landmarker(std::shared_ptr<const LandmarkerModel> model)
    : state_(std::make_unique<State>()) {
  state_->model = std::move(model);
}
Landmarker::~Landmarker() = default;
Landmarker::Landmarker(Landmarker&&) noexcept = default;
Landmarker& Landmarker::operator=(Landmarker&&) noexcept = default;

LandmarkFrame Landmarker::Detect(double t_ms, int width, int height, int stride,
                                 const uint8_t* bgr) {
  LandmarkFrame out;
  out.t_ms = t_ms;
  out.width = width;
  out.height = height;
  State& s = *state_;
  if (width <= 0 || height <= 0 || bgr == nullptr) return out;
  const cv::Mat image(height, width, CV_8UC3, const_cast<uint8_t*>(bgr),
                      static_cast<size_t>(stride));
  const LandmarkerConfig& config = s.model->config;

  if (!s.face || ++s.frames_since_detect >= config.redetect_every) {
    s.frames_since_detect = 0;
    const double scale = static_cast<double>(config.detect_width) / width;  // < 1 usually
    cv::resize(image, s.small, cv::Size(), scale, scale,
               scale < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
    cv::cvtColor(s.small, s.gray_small, cv::COLOR_BGR2GRAY);
    const dlib::cv_image<unsigned char> gray(s.gray_small);
    const std::vector<dlib::rectangle> faces = s.detector(gray);
    if (faces.empty()) {
      s.face.reset();
      return out;
    }
    // The largest face is the person practising.
    const auto biggest = *std::max_element(faces.begin(), faces.end(),
                                           [](auto& a, auto& b) { return a.area() < b.area(); });
    s.face = dlib::rectangle(
        static_cast<long>(biggest.left() / scale), static_cast<long>(biggest.top() / scale),
        static_cast<long>(biggest.right() / scale), static_cast<long>(biggest.bottom() / scale));
  }
  const dlib::cv_image<dlib::bgr_pixel> view(image);
  const dlib::full_object_detection shape = s.model->predictor(view, *s.face);
  out.points.reserve(68);
  long left = width, top = height, right = 0, bottom = 0;
  for (unsigned long i = 0; i < shape.num_parts(); ++i) {
    const dlib::point p = shape.part(i);
    out.points.push_back({static_cast<float>(p.x()) / static_cast<float>(width),
                          static_cast<float>(p.y()) / static_cast<float>(height), 0.0f});
    left = std::min(left, p.x());
    right = std::max(right, p.x());
    top = std::min(top, p.y());
    bottom = std::max(bottom, p.y());
  }
  // Track: next frame's box is this frame's landmarks' box, grown to the detector's framing
  // (its boxes start at the brows and are about as tall as wide).
  const long w = right - left;
  s.face = dlib::rectangle(left - w / 10, top - w / 5, right + w / 10, bottom + w / 20);
  if (w < 8) {  // degenerate: look again next frame
    s.face.reset();
    out.points.clear();
  }
  return out;
}

}  // namespace parley::vision
