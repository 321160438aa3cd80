// The per-session feedback report (shape: docs/protocol.md "Report"; formulas: docs/scoring.md).
// Built once when a session ends from what its analysers put on the timeline and merged into
// the session's report patch. A field nobody measured is null and named in "not_measured":
// the report never invents a number.
#include "app/app_impl.h"

namespace parley::app {
namespace {

constexpr int kSchemaVersion = 1;

const char* const kFeedbackFields[] = {"likability",       "initiative", "tone",    "concentration",
                                       "gaze_stability",   "blinking",   "posture", "expression",
                                       "expression_score", "total_score"};

const char* const kMetricFields[] = {"blinks",
                                     "blink_rate_per_min",
                                     "gaze_on_screen_ratio",
                                     "head_pose_deg",
                                     "smile_ratio",
                                     "face_visible_ratio",
                                     "posture",
                                     "speaking_rate_wpm",
                                     "pitch_hz",
                                     "volume_db",
                                     "talk_ratio",
                                     "turns",
                                     "questions_asked",
                                     "filler_words",
                                     "longest_pause_s",
                                     "response_latency_s",
                                     "media"};

}  // namespace

Json::Value BuildReport(const Session& session, const personas::Persona* persona) {
  const Json::Value meta = session.ToJson();
  const Json::Value patch = session.report_patch();
  const Timeline::Snapshot tl = session.timeline().Take();

  Json::Value r(Json::objectValue);
  r["schema_version"] = kSchemaVersion;
  for (const char* f : {"session_id", "user_id", "persona_id", "created_at", "started_at",
                        "ended_at", "end_reason", "duration_s"})
    r[f] = meta[f];
  r["persona_name"] = persona != nullptr ? persona->doc["name"] : Json::Value();

  Json::Value not_measured(Json::arrayValue);
  r["feedback"] = Json::Value(Json::objectValue);
  for (const char* f : kFeedbackFields) {
    r["feedback"][f] = patch["feedback"].isMember(f) ? patch["feedback"][f] : Json::Value();
    if (r["feedback"][f].isNull()) not_measured.append(std::string("feedback.") + f);
  }
  r["metrics"] = Json::Value(Json::objectValue);
  for (const char* f : kMetricFields) {
    r["metrics"][f] = patch["metrics"].isMember(f) ? patch["metrics"][f] : Json::Value();
    if (r["metrics"][f].isNull()) not_measured.append(std::string("metrics.") + f);
  }
  // Analysers may add metrics beyond the contract's list; keep them.
  for (const auto& key : patch["metrics"].getMemberNames()) {
    if (!r["metrics"].isMember(key)) r["metrics"][key] = patch["metrics"][key];
  }

  const bool anything = not_measured.size() < std::size(kFeedbackFields) + std::size(kMetricFields);
  r["feedback"]["summary"] =
      patch["feedback"]["summary"].isString()
          ? patch["feedback"]["summary"]
          : Json::Value(anything ? "Some measures are missing; see not_measured."
                                 : "Nothing was measured in this session: no face landmarks or "
                                   "voice reached an analyser, so no score is given.");
  r["not_measured"] = not_measured;
  r["transcript"] = tl.transcript;
  r["timeline"] = tl.samples;
  r["events"] = tl.events;
  r["tips"] = patch["tips"].isArray() ? patch["tips"] : Json::Value(Json::arrayValue);
  if (tl.dropped > 0) r["timeline_dropped"] = static_cast<Json::UInt64>(tl.dropped);
  return r;
}

}  // namespace parley::app
