// Vision: landmark parsing, head pose, and the accuracy of every detector against synthetic
// faces with known truth; real faces from MediaPipe (astronaut fixture) and dlib.
#include "vision/vision.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <numbers>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "tests/support/audio_files.h"
#include "tests/support/face_generator.h"

namespace parley::testing {
namespace {

using vision::LandmarkFrame;

std::string ContractJson(const LandmarkFrame& f) {
  std::ostringstream o;
  o.precision(9);
  o << R"({"t":)" << f.t_ms << R"(,"width":)" << f.width << R"(,"height":)" << f.height
    << R"(,"landmarks":[)";
  for (size_t i = 0; i < f.points.size(); ++i)
    o << (i ? "," : "") << "[" << f.points[i].x << "," << f.points[i].y << "," << f.points[i].z
      << "]";
  o << R"(],"blendshapes":{"mouthSmileLeft":0.7,"mouthSmileRight":0.5,"notAName":0.3}})";
  return o.str();
}

LandmarkFrame Frontal(bool irises = true) { return RenderFace({}, {}, 640, 640, 480, irises); }

TEST(LandmarkParsing, ContractJsonRoundTrips) {
  LandmarkFrame f = Frontal();
  f.t_ms = 1733.5;
  vision::JsonFrameParser parser;
  LandmarkFrame got;
  std::string error;
  ASSERT_TRUE(parser.Parse(ContractJson(f), &got, &error)) << error;
  EXPECT_EQ(got.points.size(), 478u);
  EXPECT_DOUBLE_EQ(got.t_ms, 1733.5);
  EXPECT_EQ(got.width, 640);
  EXPECT_NEAR(got.points[33].x, f.points[33].x, 1e-6);
  EXPECT_TRUE(got.has_blendshapes);
  EXPECT_FLOAT_EQ(got.blendshapes[static_cast<size_t>(vision::BlendshapeIndex("mouthSmileLeft"))],
                  0.7f);
}

TEST(LandmarkParsing, MediaPipeResultShapeIsAccepted) {
  const LandmarkFrame f = Frontal(false);
  std::ostringstream o;
  o << R"({"t":5,"width":640,"height":480,"faceLandmarks":[[)";
  for (size_t i = 0; i < f.points.size(); ++i)
    o << (i ? "," : "") << R"({"x":)" << f.points[i].x << R"(,"y":)" << f.points[i].y << R"(,"z":)"
      << f.points[i].z << R"(,"visibility":0})";
  o << R"(]],"faceBlendshapes":[{"categories":[{"index":44,"score":0.8,"categoryName":"mouthSmileLeft","displayName":""}]}]})";
  vision::JsonFrameParser parser;
  LandmarkFrame got;
  std::string error;
  ASSERT_TRUE(parser.Parse(o.str(), &got, &error)) << error;
  EXPECT_EQ(got.points.size(), 468u);
  EXPECT_FLOAT_EQ(got.blendshapes[44], 0.8f);
}

TEST(LandmarkParsing, NoFaceIsAnEmptyOrMissingList) {
  vision::JsonFrameParser parser;
  LandmarkFrame got;
  std::string error;
  ASSERT_TRUE(parser.Parse(R"({"t":1,"width":640,"height":480,"landmarks":[]})", &got, &error));
  EXPECT_FALSE(got.has_face());
  ASSERT_TRUE(parser.Parse(R"({"t":2})", &got, &error)) << error;
  EXPECT_FALSE(got.has_face());
}

TEST(LandmarkParsing, RejectionsNameTheProblem) {
  vision::JsonFrameParser parser;
  LandmarkFrame got;
  const auto reject = [&](const std::string& text) {
    std::string error;
    EXPECT_FALSE(parser.Parse(text, &got, &error)) << text;
    return error;
  };
  std::string pts;
  for (int i = 0; i < 100; ++i) pts += std::string(i ? "," : "") + "[0.5,0.5,0]";
  EXPECT_NE(
      reject(R"({"t":1,"width":640,"height":480,"landmarks":[)" + pts + "]}").find("100 points"),
      std::string::npos);
  EXPECT_NE(reject(R"({"width":640,"height":480,"landmarks":[]})").find("\"t\""),
            std::string::npos);
  EXPECT_NE(reject(R"({"t":1,"landmarks":[[0.5,NaN,0]]})").find("not valid"), std::string::npos);
  EXPECT_NE(reject(R"({"t":1,"width":640,"height":480,"landmarks":[[0.5,"a",0]]})"), std::string());
  EXPECT_NE(reject("[1,2,3]"), std::string());
  EXPECT_NE(reject(R"({"t":1,"width":0,"height":480,"landmarks":[)" + pts + "]}"), std::string());
  std::string far;
  for (int i = 0; i < 68; ++i) far += std::string(i ? "," : "") + "[5,0.5,0]";
  EXPECT_NE(
      reject(R"({"t":1,"width":640,"height":480,"landmarks":[)" + far + "]}").find("landmark 0"),
      std::string::npos);
  EXPECT_NE(reject(R"({"t":-5})").find("0..1e13"), std::string::npos);
}

TEST(LandmarkParsing, AbsurdTimesAndFloodsOfBlendshapesAreRefused) {
  vision::JsonFrameParser parser;
  LandmarkFrame got;
  std::string error;
  for (const char* t : {"1e300", "1.0000001e13", "-1e12", "-0.5"}) {
    EXPECT_FALSE(parser.Parse(std::string(R"({"t":)") + t + "}", &got, &error)) << t;
    EXPECT_NE(error.find("0..1e13"), std::string::npos) << t << ": " << error;
  }
  EXPECT_TRUE(parser.Parse(R"({"t":1e13})", &got, &error)) << error;  // the bound itself
  EXPECT_TRUE(parser.Parse(R"({"t":1764800000000.5})", &got, &error)) << "Date.now() is a clock";

  const auto with_blendshapes = [](int n, bool known) {
    std::string b;
    for (int i = 0; i < n; ++i) {
      const std::string name = known ? std::string(vision::BlendshapeNames()[i % 52])
                                     : "madeUpShape" + std::to_string(i);
      b += std::string(i ? "," : "") + "\"" + name + "\":0.1";
    }
    return R"({"t":5,"blendshapes":{)" + b + "}}";
  };
  EXPECT_TRUE(parser.Parse(with_blendshapes(52, true), &got, &error)) << error;
  EXPECT_TRUE(parser.Parse(with_blendshapes(60, false), &got, &error)) << "unknown names: ignored";
  EXPECT_FALSE(got.has_blendshapes);
  for (bool known : {true, false}) {
    EXPECT_FALSE(parser.Parse(with_blendshapes(5000, known), &got, &error));
    EXPECT_NE(error.find("more than 64 blendshapes"), std::string::npos) << error;
  }
  std::string categories;
  for (int i = 0; i < 100; ++i)
    categories += std::string(i ? "," : "") + R"({"categoryName":"x)" + std::to_string(i) +
                  R"(","score":0.5})";
  EXPECT_FALSE(parser.Parse(R"({"t":5,"faceBlendshapes":[{"categories":[)" + categories + "]}]}",
                            &got, &error));
  EXPECT_NE(error.find("more than 64 blendshapes"), std::string::npos) << error;
}

// Every JSON number form a client may send reads as the float nearest the decimal's exact value
// (strtod is correctly rounded), and malformed numbers are rejected.
TEST(LandmarkParsing, EveryNumberFormReadsAsTheNearestFloat) {
  vision::JsonFrameParser parser;
  LandmarkFrame got;
  std::string error;
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> coordinate(-0.99, 1.99);
  const auto check = [&](std::vector<std::string> numbers) {
    for (int i = 0; numbers.size() < 68 * 3; ++i) {
      char b[64];
      std::snprintf(b, sizeof b, "%.*f", 1 + i % 12, coordinate(rng));
      numbers.push_back(b);
    }
    std::string text = R"({"t":1,"width":640,"height":480,"landmarks":[)";
    const char* const spaces[] = {"", " ", "\n", "\t "};
    for (size_t i = 0; i < 68; ++i)
      text += std::string(i ? "," : "") + spaces[i % 4] + "[" + numbers[3 * i] + "," +
              spaces[(i + 1) % 4] + numbers[3 * i + 1] + "," + numbers[3 * i + 2] + spaces[i % 4] +
              "]";
    text += "]}";
    ASSERT_TRUE(parser.Parse(text, &got, &error)) << error;
    ASSERT_EQ(got.points.size(), 68u);
    for (size_t i = 0; i < 68; ++i) {
      const float* p = &got.points[i].x;
      for (size_t k = 0; k < 3; ++k)
        EXPECT_EQ(p[k], static_cast<float>(std::strtod(numbers[3 * i + k].c_str(), nullptr)))
            << numbers[3 * i + k];
    }
  };
  // Plain decimals ...
  check({"0", "-0", "0.0", "1", "-0.5", "1.9999999", "0.000001", "-0.00000000001",
         "0.123456789012345"});
  // ... exponents, and more digits than a double holds exactly.
  check({"1.25e-1", "5E-1", "-7.5e-1", "0.1234567890123456789", "1.0000000000000001"});

  // Not JSON numbers, or not a landmark: rejected whichever path reads them.
  for (const char* bad :
       {"01", "1.", ".5", "--1", "+1", "0x1", "1e", "[0.5,0.5,0.5,0.5]", "[0.5]", "0.5,0.5"}) {
    std::string pts;
    for (int i = 0; i < 68; ++i)
      pts += std::string(i ? "," : "") +
             (i == 7 ? (bad[0] == '[' ? std::string(bad) : "[" + std::string(bad) + ",0.5,0]")
                     : "[0.5,0.5,0]");
    EXPECT_FALSE(
        parser.Parse(R"({"t":1,"width":640,"height":480,"landmarks":[)" + pts + "]}", &got, &error))
        << bad;
  }
}

TEST(LandmarkParsing, BinaryFramesRoundTripInBothEncodings) {
  LandmarkFrame f = Frontal();
  f.t_ms = 12345.25;
  f.has_blendshapes = true;
  f.blendshapes[9] = 0.25f;
  for (auto enc : {vision::BinaryEncoding::kFloat32, vision::BinaryEncoding::kInt16}) {
    const std::string bytes = vision::EncodeBinaryFrame(f, enc);
    LandmarkFrame got;
    std::string error;
    ASSERT_TRUE(vision::ParseBinaryFrame(bytes, &got, &error)) << error;
    EXPECT_DOUBLE_EQ(got.t_ms, f.t_ms);
    ASSERT_EQ(got.points.size(), 478u);
    EXPECT_NEAR(got.points[200].y, f.points[200].y, 1e-4);
    EXPECT_FLOAT_EQ(got.blendshapes[9], 0.25f);
  }
}

TEST(LandmarkParsing, BinaryRejectionsNameTheProblem) {
  LandmarkFrame f = Frontal();
  std::string bytes = vision::EncodeBinaryFrame(f);
  LandmarkFrame got;
  std::string error;
  EXPECT_FALSE(vision::ParseBinaryFrame(bytes.substr(0, bytes.size() - 3), &got, &error));
  EXPECT_NE(error.find("header"), std::string::npos) << error;
  EXPECT_FALSE(vision::ParseBinaryFrame("PLM", &got, &error));
  std::string wrong = bytes;
  wrong[0] = 'X';
  EXPECT_FALSE(vision::ParseBinaryFrame(wrong, &got, &error));
  EXPECT_NE(error.find("magic"), std::string::npos);
  wrong = bytes;
  wrong[3] = 9;
  EXPECT_FALSE(vision::ParseBinaryFrame(wrong, &got, &error));
  EXPECT_NE(error.find("version"), std::string::npos);
  wrong = bytes;
  const float nan = std::nanf("");
  std::memcpy(wrong.data() + vision::kBinaryHeaderBytes + 12 * 7, &nan, 4);
  EXPECT_FALSE(vision::ParseBinaryFrame(wrong, &got, &error));
  EXPECT_NE(error.find("landmark 7"), std::string::npos) << error;
}

// ---- Pose ------------------------------------------------------------------------------------

TEST(HeadPose, RecoversKnownPosesOfTheCanonicalFace) {
  vision::FeatureExtractor fresh;
  for (double yaw : {-35.0, -10.0, 0.0, 20.0, 40.0}) {
    for (double pitch : {-25.0, 0.0, 15.0}) {
      for (double roll : {-15.0, 0.0, 10.0}) {
        FacePose p;
        p.yaw = yaw, p.pitch = pitch, p.roll = roll;
        vision::FeatureExtractor once;
        const auto f = once.Compute(RenderFace(p, {}, 640, 640, 480, true));
        ASSERT_TRUE(f.face);
        EXPECT_NEAR(f.pose.yaw_deg, yaw, 0.3) << yaw << " " << pitch << " " << roll;
        EXPECT_NEAR(f.pose.pitch_deg, pitch, 0.3) << yaw << " " << pitch << " " << roll;
        EXPECT_NEAR(f.pose.roll_deg, roll, 0.3) << yaw << " " << pitch << " " << roll;
        // Refining the previous pose (warm start) lands where solving afresh does.
        const auto warm = fresh.Compute(RenderFace(p, {}, 640, 640, 480, true));
        EXPECT_NEAR(warm.pose.yaw_deg, f.pose.yaw_deg, 0.05);
        EXPECT_NEAR(warm.pose.pitch_deg, f.pose.pitch_deg, 0.05);
      }
    }
  }
}

// Pose is read against the line of sight: a head 20° to the side of the camera's axis that
// turns 20° to face the lens is frontal; elsewhere the reading is the generator's own.
TEST(HeadPose, AHeadFacingTheLensReadsFrontalAnywhereInTheImage) {
  for (const double side : {-1.0, 1.0}) {
    FacePose p;
    p.tx = side * p.tz * std::tan(20 * std::numbers::pi / 180);
    p.yaw = -side * 20;  // + is turned to the image's right: towards the lens is the other way
    vision::FeatureExtractor x;
    const auto f = x.Compute(RenderFace(p, {}, 640, 640, 480, true));
    ASSERT_TRUE(f.face);
    EXPECT_NEAR(f.pose.yaw_deg, 0, 0.3) << side;
    EXPECT_NEAR(f.pose.pitch_deg, 0, 0.3) << side;
    FacePose up;
    up.ty =
        -side * up.tz * std::tan(12 * std::numbers::pi / 180);  // above / below the axis (y down)
    up.pitch = -side * 12;  // + is looking up: a head above the lens looks down at it
    const auto g = vision::FeatureExtractor().Compute(RenderFace(up, {}, 640, 640, 480, true));
    EXPECT_NEAR(g.pose.pitch_deg, 0, 0.3) << side;
    EXPECT_NEAR(g.pose.yaw_deg, 0, 0.3) << side;
  }
  for (double tx : {-12.0, 0.0, 9.0})
    for (double ty : {-8.0, 6.0})
      for (double yaw : {-25.0, 15.0}) {
        FacePose p;
        p.tx = tx, p.ty = ty, p.yaw = yaw, p.pitch = 10, p.roll = -5;
        const auto f = vision::FeatureExtractor().Compute(RenderFace(p, {}, 640, 640, 480, true));
        const HeadAngles seen = AgainstLineOfSight(p);
        EXPECT_NEAR(f.pose.yaw_deg, seen.yaw, 0.3) << tx << " " << ty << " " << yaw;
        EXPECT_NEAR(f.pose.pitch_deg, seen.pitch, 0.3) << tx << " " << ty << " " << yaw;
        EXPECT_NEAR(f.pose.roll_deg, seen.roll, 0.3) << tx << " " << ty << " " << yaw;
      }
}

TEST(HeadPose, IrisGazeAddsTheEyesToTheHead) {
  FacePose p;
  p.yaw = 10;
  p.eye_yaw = 15;
  p.eye_pitch = -10;
  vision::FeatureExtractor x;
  const auto f = x.Compute(RenderFace(p, {}, 640, 640, 480, true));
  EXPECT_NEAR(f.eye_yaw_deg, 15, 1.5);
  EXPECT_NEAR(f.eye_pitch_deg, -10, 1.5);
  EXPECT_NEAR(f.gaze_yaw_deg, 25, 1.5);
}

TEST(Features, EyeOpennessIsPoseInvariantAndFallsWhenTheEyesClose) {
  vision::FeatureExtractor x;
  const double open = x.Compute(Frontal()).ear_left;
  FacePose turned;
  turned.yaw = 30;
  turned.pitch = -20;
  EXPECT_NEAR(x.Compute(RenderFace(turned, {}, 640, 640, 480, true)).ear_left, open, 0.15 * open);
  turned.closure = 1;
  // The generator's lower lid stays (a closed eye keeps ~35% of its EAR).
  EXPECT_LT(x.Compute(RenderFace(turned, {}, 640, 640, 480, true)).ear_left, 0.45 * open);
}

// ---- Accuracy over many synthetic people -------------------------------------------------------

struct SessionResult {
  Match blinks, gaze;
  double on_screen_error = 0, face_error = 0, smile_error = 0;
  double yaw_mae = 0, pitch_mae = 0, roll_mae = 0;
};

SessionResult RunSession(const GeneratorConfig& config) {
  const Synthetic s = GenerateSession(config);
  vision::FaceAnalyzer analyzer(vision::VisionConfig{});
  std::vector<vision::Event> events;
  std::vector<vision::Features> features;
  // Features come back in frame order; the analyzer only holds frames while calibrating.
  vision::FeatureExtractor extractor;
  double yaw_err = 0, pitch_err = 0, roll_err = 0;
  int posed = 0;
  const double t0 = s.frames.front().t_ms;
  for (size_t i = 0; i < s.frames.size(); ++i) {
    analyzer.Process(s.frames[i], &events);
    const auto& f = analyzer.last_features();
    if (f.face) {
      yaw_err += std::abs(f.pose.yaw_deg - s.truth.frames[i].yaw);
      pitch_err += std::abs(f.pose.pitch_deg - s.truth.frames[i].pitch);
      roll_err += std::abs(f.pose.roll_deg - s.truth.frames[i].roll);
      ++posed;
    }
  }
  analyzer.Finish(&events);
  const auto m = analyzer.Metrics();
  SessionResult r;
  std::vector<double> blinks, truth_blinks;
  std::vector<Span> away;
  double away_start = -1;
  for (const auto& e : events) {
    const double t = e.t_ms + t0;
    if (e.type == "blink") blinks.push_back(t);
    if (e.type == "gaze_away") away_start = t;
    // An episode ends with the gaze coming back, or with the face lost (no gaze_back then).
    if ((e.type == "gaze_back" || e.type == "face_lost") && away_start >= 0) {
      away.push_back({away_start, t});
      away_start = -1;
    }
  }
  for (const auto& b : s.truth.blinks) truth_blinks.push_back(b.first);
  r.blinks = MatchTimes(blinks, truth_blinks, 150);
  r.gaze = MatchSpans(away, s.truth.gaze_away, 0.5);
  r.on_screen_error = std::abs(m.gaze_on_screen_ratio - s.truth.gaze_on_screen_ratio);
  r.face_error = std::abs(m.face_visible_ratio - s.truth.face_visible_ratio);
  r.smile_error = std::abs(m.smile_ratio - s.truth.smile_ratio);
  r.yaw_mae = yaw_err / posed;
  r.pitch_mae = pitch_err / posed;
  r.roll_mae = roll_err / posed;
  return r;
}

TEST(VisionAccuracy, DetectorsMatchTheTruthOverManySyntheticPeople) {
  Match blinks, gaze;
  double yaw = 0, pitch = 0, roll = 0;
  constexpr int kSeeds = 16;
  for (uint32_t seed = 1; seed <= kSeeds; ++seed) {
    GeneratorConfig config;
    config.seed = seed;
    config.duration_s = 150;
    const SessionResult r = RunSession(config);
    SCOPED_TRACE("seed " + std::to_string(seed));
    EXPECT_LE(r.on_screen_error, 0.03);
    EXPECT_LE(r.face_error, 0.03);
    EXPECT_LE(r.smile_error, 0.03);
    blinks += r.blinks;
    gaze += r.gaze;
    yaw += r.yaw_mae / kSeeds;
    pitch += r.pitch_mae / kSeeds;
    roll += r.roll_mae / kSeeds;
    std::printf(
        "seed %2u blink P %.3f R %.3f | gaze P %.3f R %.3f | on %.3f face %.3f smile "
        "%.3f | mae %.2f %.2f %.2f\n",
        seed, r.blinks.precision(), r.blinks.recall(), r.gaze.precision(), r.gaze.recall(),
        r.on_screen_error, r.face_error, r.smile_error, r.yaw_mae, r.pitch_mae, r.roll_mae);
  }
  std::printf(
      "pooled: blink F1 %.3f (%d/%d/%d) | gaze F1 %.3f (%d/%d/%d) | MAE yaw %.2f pitch "
      "%.2f roll %.2f\n",
      blinks.f1(), blinks.true_positives, blinks.detected, blinks.truth, gaze.f1(),
      gaze.true_positives, gaze.detected, gaze.truth, yaw, pitch, roll);
  EXPECT_GE(blinks.f1(), 0.95) << blinks.true_positives << "/" << blinks.detected << "/"
                               << blinks.truth;
  EXPECT_GE(gaze.f1(), 0.90) << gaze.true_positives << "/" << gaze.detected << "/" << gaze.truth;
  EXPECT_LE(yaw, 3.0);
  EXPECT_LE(pitch, 3.0);
  EXPECT_LE(roll, 3.0);
}

// The situations that broke precision on real streams: the face missing for a second or two
// within the first seconds (sitting down), re-acquired in the middle of a gaze-away episode,
// and a head turned far away at the very first frame. No false episode at face_found or at the
// first frames; episodes still found with good timing.
TEST(VisionAccuracy, FaceLossAndReacquisitionRaiseNoFalseGazeAway) {
  struct Situation {
    const char* name;
    void (*set)(GeneratorConfig&);
  };
  const Situation situations[] = {
      {"early face loss", [](GeneratorConfig& c) { c.early_face_loss = true; }},
      {"face lost mid-episode", [](GeneratorConfig& c) { c.face_loss_in_episodes = true; }},
      {"yaw 40 at the first frame", [](GeneratorConfig& c) { c.first_frame_yaw = 40; }},
      {"yaw -35 at the first frame, early loss",
       [](GeneratorConfig& c) {
         c.first_frame_yaw = -35;
         c.early_face_loss = true;
       }},
  };
  constexpr int kSeeds = 12;
  for (const auto& situation : situations) {
    Match gaze;
    double worst_on_screen = 0;
    for (uint32_t seed = 1; seed <= kSeeds; ++seed) {
      GeneratorConfig config;
      config.seed = 100 + seed;
      config.duration_s = 60;
      situation.set(config);
      const SessionResult r = RunSession(config);
      gaze += r.gaze;
      worst_on_screen = std::max(worst_on_screen, r.on_screen_error);
    }
    std::printf("%-40s gaze P %.3f R %.3f F1 %.3f (%d/%d/%d) | worst on-screen error %.3f\n",
                situation.name, gaze.precision(), gaze.recall(), gaze.f1(), gaze.true_positives,
                gaze.detected, gaze.truth, worst_on_screen);
    SCOPED_TRACE(situation.name);
    EXPECT_GE(gaze.precision(), 0.9);
    EXPECT_GE(gaze.f1(), 0.9);
    EXPECT_LE(worst_on_screen, 0.03);
  }
}

// Frames in dlib's 68-point layout, taken from the generator's face by the common dlib ↔ mesh
// table (not the pose fit's own mapping): the pose, blinks and face time still read true.
TEST(VisionAccuracy, SixtyEightPointFramesOfTheGeneratorsFaceReadTheTruePose) {
  Match blinks;
  double yaw = 0, pitch = 0, roll = 0;
  constexpr int kSeeds = 8;
  for (uint32_t seed = 1; seed <= kSeeds; ++seed) {
    GeneratorConfig config;
    config.seed = 200 + seed;
    config.duration_s = 60;
    config.dlib68 = true;
    const SessionResult r = RunSession(config);
    SCOPED_TRACE("seed " + std::to_string(config.seed));
    EXPECT_LE(r.face_error, 0.03);
    blinks += r.blinks;
    yaw += r.yaw_mae / kSeeds;
    pitch += r.pitch_mae / kSeeds;
    roll += r.roll_mae / kSeeds;
  }
  std::printf("68 points: blink F1 %.3f (%d/%d/%d) | MAE yaw %.2f pitch %.2f roll %.2f\n",
              blinks.f1(), blinks.true_positives, blinks.detected, blinks.truth, yaw, pitch, roll);
  EXPECT_LE(yaw, 3.0);
  // The common table and the fit's mapping (set on a real dlib face) disagree by about a
  // centimetre on where dlib's jaw and nose wings sit on the mesh: ~4° of pitch. The mapping
  // before read 8.8° here.
  EXPECT_LE(pitch, 5.0);
  EXPECT_LE(roll, 3.0);
  EXPECT_GE(blinks.f1(), 0.8);  // two lid pairs per eye in this layout, against five
}

// ---- Real faces
// ----------------------------------------------------------------------------------

LandmarkFrame ReadAstronaut() {
  std::ifstream in(PARLEY_SOURCE_DIR "/tests/data/astronaut_mediapipe_478.txt");
  std::string line;
  LandmarkFrame f;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream l(line);
    if (f.width == 0) {
      l >> f.width >> f.height;
      continue;
    }
    vision::Point3 p;
    l >> p.x >> p.y >> p.z;
    f.points.push_back(p);
  }
  return f;
}

TEST(RealFaces, MediaPipeAstronautReadsAsOpenEyedFrontalAndOnScreen) {
  const LandmarkFrame astronaut = ReadAstronaut();
  ASSERT_EQ(astronaut.points.size(), 478u);
  vision::FeatureExtractor x;
  const auto f = x.Compute(astronaut);
  ASSERT_TRUE(f.face);
  EXPECT_LT(std::abs(f.pose.yaw_deg), 15);
  EXPECT_LT(std::abs(f.pose.pitch_deg), 15);
  EXPECT_LT(std::abs(f.pose.roll_deg), 15);
  // Open eyes: close to the canonical face's openness, far above a closed eye.
  const double open = vision::FeatureExtractor().Compute(Frontal()).ear_left;
  EXPECT_GT(f.ear_left, 0.6 * open);
  EXPECT_GT(f.ear_right, 0.6 * open);
  // On screen: gaze within the default limits of straight ahead.
  const vision::VisionConfig defaults;
  EXPECT_LT(std::abs(f.gaze_yaw_deg), defaults.gaze_yaw_limit_deg);
  EXPECT_LT(std::abs(f.gaze_pitch_deg), defaults.gaze_pitch_limit_deg);
}

std::shared_ptr<const vision::LandmarkerModel> Dlib() {
  std::string error;
  // Photos with small faces: detect on an upscaled image, as dlib's own example does.
  vision::LandmarkerConfig config;
  config.detect_width = 1000;
  auto model = vision::LoadLandmarkerModel(config, &error);
  EXPECT_TRUE(model) << error;
  return model;
}

// The Chromium fake camera's frame of the astronaut (tests/browser/make_fixtures.py): the photo's
// rows 16..495 centred on a grey 640x480 frame, the frame the MediaPipe fixture was taken from.
cv::Mat AstronautCameraFrame() {
  const cv::Mat photo =
      cv::imread("/usr/lib/python3/dist-packages/skimage/data/astronaut.png", cv::IMREAD_COLOR);
  cv::Mat frame(480, 640, CV_8UC3, cv::Scalar(96, 96, 96));
  if (photo.empty()) return {};
  photo(cv::Rect(0, 16, 512, 480)).copyTo(frame(cv::Rect(64, 0, 512, 480)));
  return frame;
}

// The same photo through both landmark paths: dlib's 68 points on the fake camera's frame and
// MediaPipe's 478 (the fixture, from Chromium's camera) give the same head pose. Before the pose
// was read against the line of sight and dlib's jaw points were mapped between mesh vertices,
// dlib read this frontal face as pitched down 24.8° (MediaPipe: 5.4°).
TEST(RealFaces, BothLandmarkPathsReadTheAstronautsPoseAlike) {
  const auto model = Dlib();
  ASSERT_TRUE(model);
  const cv::Mat image = AstronautCameraFrame();
  ASSERT_FALSE(image.empty());
  vision::Landmarker lm(model);
  const LandmarkFrame d =
      lm.Detect(0, image.cols, image.rows, static_cast<int>(image.step), image.data);
  ASSERT_EQ(d.points.size(), 68u);
  const auto by_dlib = vision::FeatureExtractor().Compute(d).pose;
  const auto by_mediapipe = vision::FeatureExtractor().Compute(ReadAstronaut()).pose;
  std::printf(
      "astronaut: dlib yaw %.1f pitch %.1f roll %.1f | MediaPipe yaw %.1f pitch %.1f "
      "roll %.1f\n",
      by_dlib.yaw_deg, by_dlib.pitch_deg, by_dlib.roll_deg, by_mediapipe.yaw_deg,
      by_mediapipe.pitch_deg, by_mediapipe.roll_deg);
  EXPECT_NEAR(by_dlib.yaw_deg, by_mediapipe.yaw_deg, 4);
  EXPECT_NEAR(by_dlib.pitch_deg, by_mediapipe.pitch_deg, 4);
  EXPECT_NEAR(by_dlib.roll_deg, by_mediapipe.roll_deg, 4);
  for (const auto& pose : {by_dlib, by_mediapipe}) {
    EXPECT_LT(std::abs(pose.yaw_deg), 10);
    EXPECT_LT(std::abs(pose.pitch_deg), 10);
    EXPECT_LT(std::abs(pose.roll_deg), 10);
  }
}

TEST(RealFaces, DlibFindsSixtyEightPointsOnTheAstronautAndTheExampleFaces) {
  const auto model = Dlib();
  ASSERT_TRUE(model);
  std::vector<std::string> files = {"/usr/lib/python3/dist-packages/skimage/data/astronaut.png"};
  for (const auto& e :
       std::filesystem::directory_iterator("/usr/share/doc/libdlib19.1/examples/faces"))
    if (e.path().extension() == ".jpg") files.push_back(e.path());
  ASSERT_GE(files.size(), 4u);
  int found = 0;
  for (const auto& file : files) {
    const cv::Mat image = cv::imread(file, cv::IMREAD_COLOR);
    ASSERT_FALSE(image.empty()) << file;
    vision::Landmarker lm(model);
    const LandmarkFrame f =
        lm.Detect(0, image.cols, image.rows, static_cast<int>(image.step), image.data);
    if (file.find("dogs") != std::string::npos) {  // dlib's own negative example
      EXPECT_TRUE(f.points.empty()) << "a human face found among dogs";
      continue;
    }
    EXPECT_EQ(f.points.size(), 68u) << file;
    if (f.points.size() == 68) ++found;
    if (file.find("astronaut") != std::string::npos) {
      ASSERT_EQ(f.points.size(), 68u);
      vision::FeatureExtractor x;
      const auto feat = x.Compute(f);
      EXPECT_TRUE(feat.face);
      EXPECT_LT(std::abs(feat.pose.yaw_deg), 20);
      EXPECT_FALSE(feat.has_iris);
      EXPECT_GT(feat.ear_left, 0.15);
    }
  }
  EXPECT_EQ(found, static_cast<int>(files.size()) - 1);
}

}  // namespace
}  // namespace parley::testing

// ---- Through the real server
// ----------------------------------------------------------------------

#include "tests/support/test_server.h"

namespace parley::testing {
namespace {

using namespace std::chrono_literals;

// Contract JSON for a synthetic frame (no blendshapes: geometry decides smiles).
std::string FrameJson(const LandmarkFrame& f) {
  std::ostringstream o;
  o.precision(7);
  o << R"({"t":)" << std::fixed << std::setprecision(3) << f.t_ms << std::defaultfloat
    << std::setprecision(6) << R"(,"width":)" << f.width << R"(,"height":)" << f.height
    << R"(,"landmarks":[)";
  for (size_t i = 0; i < f.points.size(); ++i)
    o << (i ? "," : "") << "[" << f.points[i].x << "," << f.points[i].y << "," << f.points[i].z
      << "]";
  o << "]}";
  return o.str();
}

// Replays run faster than real time: more messages per second than a live client sends.
void AllowFastReplay(app::AppConfig& c) {
  c.server.max_messages_per_s = 2000;
  c.server.message_burst = 4000;
}

// Collects every JSON message until nothing arrives for `quiet`.
std::vector<Json::Value> Drain(WsClient& ws, std::chrono::milliseconds quiet = 1500ms) {
  std::vector<Json::Value> out;
  while (auto m = ws.ReceiveJson(quiet)) out.push_back(*m);
  return out;
}

int Count(const std::vector<Json::Value>& msgs, const std::string& type) {
  return static_cast<int>(std::count_if(msgs.begin(), msgs.end(),
                                        [&](const Json::Value& m) { return m["type"] == type; }));
}

TEST(VisionOverWebSocket, LandmarkStreamGivesEventsScoresAndReportMetrics) {
  GeneratorConfig config;
  config.seed = 42;
  config.duration_s = 40;
  config.no_face = false;
  const Synthetic synth = GenerateSession(config);
  TestServer s(AllowFastReplay);
  WsHub hub;
  const std::string id = s.CreateSession("alice");
  auto ws = s.Join(hub, "landmarks", id, "alice");
  ASSERT_EQ(ws->state(), WsClient::State::kOpen);
  // Six times faster than real time: the session clock follows the frames' t.
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < synth.frames.size(); ++i) {
    std::this_thread::sleep_until(
        t0 + std::chrono::microseconds(static_cast<int64_t>(synth.frames[i].t_ms * 1000 / 6)));
    ws->SendText(FrameJson(synth.frames[i]));
  }
  const auto msgs = Drain(*ws);
  EXPECT_EQ(Count(msgs, "error"), 0);
  EXPECT_GE(Count(msgs, "scores"), 25);  // about one per second of frame time
  EXPECT_NEAR(Count(msgs, "blink"), static_cast<int>(synth.truth.blinks.size()),
              std::max<size_t>(2, synth.truth.blinks.size() / 10));
  EXPECT_EQ(Count(msgs, "gaze_away"), static_cast<int>(synth.truth.gaze_away.size()));
  for (const auto& m : msgs) {
    if (m["type"] == "scores") {
      EXPECT_TRUE(m["scores"]["gaze"].isNumeric());
      EXPECT_TRUE(m["head_pose_deg"]["yaw"].isNumeric());
    }
    if (m["type"] == "blink") {
      EXPECT_TRUE(m["t"].isInt64());
      EXPECT_GT(m["duration_ms"].asDouble(), 50);
    }
  }
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  const Json::Value r =
      Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
  const Json::Value& m = r["metrics"];
  EXPECT_NEAR(m["gaze_on_screen_ratio"].asDouble(), synth.truth.gaze_on_screen_ratio, 0.03);
  EXPECT_NEAR(m["face_visible_ratio"].asDouble(), 1.0, 0.01);
  EXPECT_NEAR(m["smile_ratio"].asDouble(), synth.truth.smile_ratio, 0.03);
  EXPECT_TRUE(m["head_pose_deg"]["yaw"]["std"].isDouble());
  EXPECT_TRUE(m["posture"]["tilt_deg"].isDouble());
  EXPECT_EQ(m["vision"]["client_frames"].asUInt64(), synth.frames.size());
  EXPECT_FALSE(m["vision"]["gaze_from_head_only"].asBool());
  EXPECT_TRUE(r["feedback"]["gaze_stability"].isNumeric());
  EXPECT_TRUE(r["feedback"]["blinking"].isNumeric());
  // Per-second samples on the timeline, and the events with session-clock times.
  EXPECT_GE(r["timeline"].size(), 25u);
  EXPECT_TRUE(r["timeline"][10]["gaze_on_screen_ratio"].isNumeric());
  int blinks = 0;
  for (const auto& e : r["events"]) blinks += e["type"] == "blink";
  EXPECT_EQ(blinks, m["blinks"].asInt());
}

TEST(VisionOverWebSocket, BinaryFramesOnThePracticeEndpointAreAnalysed) {
  GeneratorConfig config;
  config.seed = 3;
  config.duration_s = 8;
  const Synthetic synth = GenerateSession(config);
  TestServer s(AllowFastReplay);
  WsHub hub;
  const std::string id = s.CreateSession("alice");
  auto ws = s.Join(hub, "practice", id, "alice");
  // Ten times real time.
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& f : synth.frames) {
    std::this_thread::sleep_until(t0 +
                                  std::chrono::microseconds(static_cast<int64_t>(f.t_ms * 100)));
    ws->SendBinary("\x03" + vision::EncodeBinaryFrame(f, vision::BinaryEncoding::kInt16));
  }
  const auto msgs = Drain(*ws);
  EXPECT_EQ(Count(msgs, "error"), 0);
  EXPECT_GE(Count(msgs, "scores"), 5);
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  const Json::Value r =
      Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
  EXPECT_EQ(r["metrics"]["vision"]["client_frames"].asUInt64(), synth.frames.size());
  EXPECT_TRUE(r["metrics"]["blinks"].isInt());
}

TEST(VisionOverWebSocket, BadAndLateFramesAreErrorsThatNameTheProblem) {
  TestServer s;
  WsHub hub;
  const std::string id = s.CreateSession("alice");
  auto ws = s.Join(hub, "landmarks", id, "alice");
  const LandmarkFrame f = Frontal();
  LandmarkFrame a = f, b = f;
  a.t_ms = 1000;
  b.t_ms = 900;  // goes back in time
  ws->SendText(FrameJson(a));
  ws->SendText(FrameJson(b));
  auto late = ws->ReceiveType("error");
  ASSERT_TRUE(late);
  EXPECT_EQ((*late)["error"]["code"], "late_frame");
  ws->SendText(R"({"t":2000,"width":640,"height":480,"landmarks":[[0.5,0.5,0]]})");
  auto bad = ws->ReceiveType("error");
  ASSERT_TRUE(bad);
  EXPECT_EQ((*bad)["error"]["code"], "bad_landmarks");
  EXPECT_NE((*bad)["error"]["message"].asString().find("1 points"), std::string::npos);
  ws->SendBinary(std::string("\x03PLM\x01", 5));
  auto short_bin = ws->ReceiveType("error", 3s);
  // Same code within a second is throttled; either way the connection lives on.
  ws->SendText(R"({"type":"ping"})");
  EXPECT_TRUE(ws->ReceiveType("pong"));
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  const Json::Value r =
      Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
  EXPECT_EQ(r["metrics"]["vision"]["late_frames"].asInt(), 1);
  EXPECT_EQ(r["metrics"]["vision"]["rejected_frames"].asInt(), 2);
  (void)short_bin;
}

// Video is decoded only for server-side landmarks: while the client sends its own, the camera's
// frames are dropped before the decoder; once they stop (2 s), decoding resumes at the next
// keyframe and dlib takes over.
TEST(VisionOverWebSocket, WhileTheClientSendsLandmarksTheVideoIsNotDecoded) {
  TempDir dir;
  // 8 s of VP8 (a keyframe every 0.5 s, 30 fps) with Opus, as a browser would stream it.
  const std::string webm = MakeFixture(
      "videotestsrc num-buffers=240 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 "
      "! vp8enc keyframe-max-dist=15 deadline=1 ! queue ! mux. "
      "audiotestsrc num-buffers=400 samplesperbuffer=960 ! audio/x-raw,rate=48000,channels=1 "
      "! opusenc ! queue ! mux. webmmux name=mux streamable=true",
      dir.path() + "/camera.webm");
  ASSERT_GT(webm.size(), 10'000u);
  TestServer s;
  WsHub hub;
  const std::string id = s.CreateSession("alice");
  auto ws = s.Join(hub, "practice", id, "alice");
  auto tracker = s.Join(hub, "landmarks", id, "alice");
  ws->SendText(R"({"type":"start","media":"webm"})");
  ASSERT_TRUE(ws->ReceiveType("started"));
  const LandmarkFrame face = Frontal();
  // Landmarks at 30 fps for the first 3 s of the 8 s stream, then none.
  const auto t0 = std::chrono::steady_clock::now();
  tracker->SendText(FrameJson(face));
  const size_t chunk = webm.size() / 40;
  for (size_t i = 0, f = 1; i < 40; ++i) {
    const auto due = t0 + i * 200ms;
    while (std::chrono::steady_clock::now() < due) {
      if (f <= 90) {
        LandmarkFrame next = face;
        next.t_ms = static_cast<double>(f) * 1000 / 30;
        tracker->SendText(FrameJson(next));
        ++f;
      }
      std::this_thread::sleep_for(33ms);
    }
    ws->SendBinary("\x01" + webm.substr(i * chunk, i == 39 ? std::string::npos : chunk));
  }
  std::this_thread::sleep_for(1s);
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  const Json::Value r =
      Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
  const Json::Value& media = r["metrics"]["media"];
  std::printf("video frames decoded %d, not decoded %d\n", media["video_frames"].asInt(),
              media["video_frames_not_decoded"].asInt());
  // 0-5 s (landmarks, then their 2 s window): ~150 frames at 30 fps not decoded.
  EXPECT_GE(media["video_frames_not_decoded"].asInt(), 100) << media.toStyledString();
  // 5-8 s decoded again, at the 10 fps analysis rate: ~30 frames (all 8 s would be ~80).
  EXPECT_GE(media["video_frames"].asInt(), 10) << media.toStyledString();
  EXPECT_LE(media["video_frames"].asInt(), 50) << media.toStyledString();
  EXPECT_GE(r["metrics"]["vision"]["client_frames"].asInt(), 60);
}

TEST(VisionOverWebSocket, VideoWithoutLandmarksIsAnalysedOnTheServer) {
  // Chromium's MediaRecorder filming the astronaut photo: dlib finds the face server-side.
  std::ifstream in(PARLEY_SOURCE_DIR "/tests/data/chromium_mediarecorder_vp8_opus.webm",
                   std::ios::binary);
  const std::string webm((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TestServer s;
  WsHub hub;
  const std::string id = s.CreateSession("alice");
  auto ws = s.Join(hub, "practice", id, "alice");
  ws->SendText(R"({"type":"start","media":"webm"})");
  ASSERT_TRUE(ws->ReceiveType("started"));
  // The first video session loads dlib's model (~1 s; much longer under ASan): /health says
  // when it is ready.
  std::string landmarks_state;
  for (int i = 0; i < 600 && landmarks_state != "ready"; ++i) {
    landmarks_state = Http("GET", s.Url("/health"))
                          .JsonBody()["dependencies"]["server_landmarks"]["status"]
                          .asString();
    if (landmarks_state != "ready") std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(landmarks_state, "ready");
  // Real time (the recording is 396 KB over 5.7 s).
  const auto t0 = std::chrono::steady_clock::now();
  const size_t chunk = 16000;
  for (size_t off = 0, i = 0; off < webm.size(); off += chunk, ++i) {
    std::this_thread::sleep_until(t0 + i * 230ms);
    ws->SendBinary("\x01" + webm.substr(off, chunk));
  }
  std::this_thread::sleep_for(1500ms);
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  const Json::Value r =
      Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
  const Json::Value& v = r["metrics"]["vision"];
  // dlib takes ~10 ms a frame in an optimised build but seconds under ASan; frames decoded
  // while one is being analysed are skipped, so the bound depends on the build.
#if defined(__SANITIZE_ADDRESS__)
  constexpr int kMinFrames = 1;
#else
  constexpr int kMinFrames = 8;
#endif
  std::printf("server-side landmark frames: %d\n", v["server_frames"].asInt());
  EXPECT_GE(v["server_frames"].asInt(), kMinFrames) << r["metrics"].toStyledString();
  EXPECT_EQ(v["client_frames"].asInt(), 0);
  EXPECT_TRUE(v["gaze_from_head_only"].asBool());
  EXPECT_GT(r["metrics"]["face_visible_ratio"].asDouble(), 0.8);
  EXPECT_LT(std::abs(r["metrics"]["head_pose_deg"]["yaw"]["mean"].asDouble()), 20);
}

}  // namespace
}  // namespace parley::testing
