#include "core/core.h"
#include "vision/vision.h"

namespace parley::vision {

void VisionConfig::AddFlags(core::FlagSet& f) {
  f.Group("Vision");
  f.Add("--calibration-s", &calibration_s,
        "Seconds of face a person is calibrated on before vision events are trusted",
        "PARLEY_CALIBRATION_S");
  f.Add("--gaze-yaw-limit", &gaze_yaw_limit_deg,
        "Degrees left/right of a person's usual gaze beyond which they look away",
        "PARLEY_GAZE_YAW_LIMIT");
  f.Add("--gaze-pitch-limit", &gaze_pitch_limit_deg,
        "Degrees up/down of a person's usual gaze beyond which they look away",
        "PARLEY_GAZE_PITCH_LIMIT");
}

void LandmarkerConfig::AddFlags(core::FlagSet& f) {
  f.Group("Vision");
  f.Add("--dlib-model", &shape_model, "dlib 68-point shape predictor (Debian package libdlib-data)",
        "PARLEY_DLIB_MODEL");
  f.Add("--landmark-detect-width", &detect_width, "Width video is scaled to for face detection",
        "PARLEY_LANDMARK_DETECT_WIDTH");
  f.Add("--landmark-redetect-every", &redetect_every,
        "Frames between full face detections (tracked in between)",
        "PARLEY_LANDMARK_REDETECT_EVERY");
}

}  // namespace parley::vision
