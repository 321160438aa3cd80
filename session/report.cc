// The per-session feedback report (shape: docs/protocol.md "Report"; formulas: docs/scoring.md).
// Built once when a session ends from what its analysers put on the timeline and merged into
// the session's report patch. A field nobody measured is null and named in "not_measured":
// the report never invents a number.
#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "session/internal.h"
#include "store/store.h"

namespace parley::session {
namespace {

constexpr int kSchemaVersion = 2;  // 2: scores with feedback_details, summary, tips

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

namespace {

Json::Value ReportFrom(const SessionInfo& info, const Json::Value& patch,
                       const Timeline::Snapshot& tl, const std::string& persona_name) {
  const auto date = [](const std::optional<std::chrono::system_clock::time_point>& t) {
    return t ? store::DateValue(core::UnixMillis(*t)) : Json::Value();
  };

  Json::Value r(Json::objectValue);
  r["schema_version"] = kSchemaVersion;
  r["session_id"] = info.id;
  r["user_id"] = info.user_id;
  r["persona_id"] = info.persona_id;
  r["created_at"] = date(info.created_at);
  r["started_at"] = date(info.started_at);
  r["ended_at"] = date(info.ended_at);
  r["end_reason"] = info.end_reason.empty() ? Json::Value() : Json::Value(info.end_reason);
  r["duration_s"] = info.duration_s;
  r["persona_name"] = persona_name.empty() ? Json::Value() : Json::Value(persona_name);

  r["feedback"] = Json::Value(Json::objectValue);
  for (const char* f : kFeedbackFields)
    r["feedback"][f] = patch["feedback"].isMember(f) ? patch["feedback"][f] : Json::Value();
  r["metrics"] = Json::Value(Json::objectValue);
  for (const char* f : kMetricFields)
    r["metrics"][f] = patch["metrics"].isMember(f) ? patch["metrics"][f] : Json::Value();
  // Analysers may add metrics beyond the contract's list; keep them.
  for (const auto& key : patch["metrics"].getMemberNames()) {
    if (!r["metrics"].isMember(key)) r["metrics"][key] = patch["metrics"][key];
  }
  // The conversation scores, the total, the summary and the tips, from the measures above.
  ScoreReport(&r);
  if (patch["feedback"]["summary"].isString())
    r["feedback"]["summary"] = patch["feedback"]["summary"];
  if (patch["tips"].isArray() && !patch["tips"].empty()) r["tips"] = patch["tips"];
  Json::Value not_measured(Json::arrayValue);
  for (const char* f : kFeedbackFields)
    if (r["feedback"][f].isNull()) not_measured.append(std::string("feedback.") + f);
  for (const char* f : kMetricFields)
    if (r["metrics"][f].isNull()) not_measured.append(std::string("metrics.") + f);
  if (not_measured.size() == std::size(kFeedbackFields) + std::size(kMetricFields))
    r["feedback"]["summary"] =
        "Nothing was measured in this session: no face landmarks or voice reached an analyser, "
        "so no score is given.";
  r["not_measured"] = not_measured;
  r["transcript"] = tl.transcript;
  // Each user turn says whether it asked something (the turns CSV, the page's conversation).
  for (auto& turn : r["transcript"])
    if (turn["role"].asString() == "user")
      turn["question"] = dialogue::AnalyzeTurn(turn["text"].asString()).question;
  r["timeline"] = tl.samples;
  r["events"] = tl.events;
  // Crisis words were heard: what and when (docs/protocol.md "safety").
  if (patch["safety"].isObject()) r["safety"] = patch["safety"];
  if (tl.dropped > 0) r["timeline_dropped"] = static_cast<Json::UInt64>(tl.dropped);
  return r;
}

}  // namespace

Json::Value BuildReport(const Session& session, const std::string& persona_name) {
  return ReportFrom(session.Info(), session.report_patch(), session.timeline().Take(),
                    persona_name);
}

Json::Value BuildCheckpoint(Session& session, const std::string& persona_name) {
  const auto now = std::chrono::system_clock::now();
  Json::Value patch = session.report_patch();
  if (Conversation* conversation = session.conversation())
    DeepMerge(patch, conversation->Summary());
  SessionInfo info = session.Info();
  info.state = State::kEnded;
  info.ended_at = now;
  info.end_reason = "server_crash";
  Json::Value r = ReportFrom(info, patch, session.timeline().Take(), persona_name);
  r["checkpoint"]["at"] = store::DateValue(core::UnixMillis(now));
  return r;
}

}  // namespace parley::session
