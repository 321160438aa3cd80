// GET /api/progress: a person's ended sessions oldest first, each with its headline scores and
// measures, and per score a trend over the last sessions (least-squares slope, best, latest).
// Pure: stored reports in, the progress document out (docs/protocol.md "Progress").
#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <vector>

#include "app/app_impl.h"

namespace parley::app {
namespace {

// Headline scores: every 0-100 score a report can carry.
const char* const kProgressScores[] = {"total_score", "likability",    "initiative",
                                       "tone",        "concentration", "gaze_stability",
                                       "blinking",    "posture",       "expression_score"};

// A slope smaller than this (points per session) is "steady": scores move a few points
// between sessions for reasons that are not progress.
constexpr double kSteadySlope = 1.0;

std::optional<double> Number(const Json::Value& v) {
  if (!v.isNumeric()) return std::nullopt;
  const double d = v.asDouble();
  return std::isfinite(d) ? std::optional<double>(d) : std::nullopt;
}

Json::Value Rounded(std::optional<double> v, double step) {
  if (!v) return Json::Value();
  return std::round(*v / step) * step;
}

// The measures a person follows from session to session, each a number (or null).
Json::Value HeadlineMeasures(const Json::Value& report) {
  const Json::Value& m = report["metrics"];
  Json::Value out(Json::objectValue);
  out["speaking_rate_wpm"] = Rounded(Number(m["speaking_rate_wpm"]), 0.1);
  out["talk_ratio"] = Rounded(Number(m["talk_ratio"]), 0.0001);
  out["turns"] = Number(m["turns"]) ? m["turns"] : Json::Value();
  out["questions_asked"] = Number(m["questions_asked"]) ? m["questions_asked"] : Json::Value();
  std::optional<double> fillers_per_min;
  const auto speech_s = Number(m["speech"]["speech_s"]);
  if (const auto fillers = Number(m["filler_words"]); fillers && speech_s && *speech_s > 0)
    fillers_per_min = *fillers / (*speech_s / 60);
  out["filler_words_per_min"] = Rounded(fillers_per_min, 0.01);
  out["response_latency_s"] = Rounded(Number(m["response_latency_s"]["median"]), 0.001);
  out["gaze_on_screen_ratio"] = Rounded(Number(m["gaze_on_screen_ratio"]), 0.0001);
  out["smile_ratio"] = Rounded(Number(m["smile_ratio"]), 0.0001);
  out["blink_rate_per_min"] = Rounded(Number(m["blink_rate_per_min"]), 0.1);
  return out;
}

// The trend of one score over the last `window` sessions that have it.
Json::Value Trend(const std::vector<double>& all, int window) {
  Json::Value t(Json::objectValue);
  t["sessions"] = static_cast<Json::UInt64>(all.size());
  if (all.empty()) {
    for (const char* k : {"latest", "best", "first", "slope_per_session", "direction"})
      t[k] = Json::Value();
    return t;
  }
  t["latest"] = all.back();
  t["best"] = *std::max_element(all.begin(), all.end());
  t["first"] = all.front();
  const size_t n = std::min(all.size(), static_cast<size_t>(window));
  t["window"] = static_cast<Json::UInt64>(n);
  if (n < 2) {
    t["slope_per_session"] = Json::Value();
    t["direction"] = Json::Value();  // one session is no trend
    return t;
  }
  // Least squares over x = 0..n-1 (session order), y = the score.
  const auto first = all.end() - static_cast<std::ptrdiff_t>(n);
  double mean_x = (n - 1) / 2.0, mean_y = 0;
  for (auto it = first; it != all.end(); ++it) mean_y += *it;
  mean_y /= static_cast<double>(n);
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < n; ++i) {
    const double dx = static_cast<double>(i) - mean_x;
    sxy += dx * (first[static_cast<std::ptrdiff_t>(i)] - mean_y);
    sxx += dx * dx;
  }
  const double slope = sxy / sxx;
  t["slope_per_session"] = std::round(slope * 100) / 100;
  t["direction"] = slope >= kSteadySlope    ? "improving"
                   : slope <= -kSteadySlope ? "declining"
                                            : "steady";
  return t;
}

}  // namespace

Json::Value ProgressOf(const std::vector<Json::Value>& reports_newest_first, uint64_t total,
                       int window) {
  Json::Value out(Json::objectValue);
  out["sessions"] = Json::Value(Json::arrayValue);
  std::map<std::string, std::vector<double>> series;
  for (auto it = reports_newest_first.rbegin(); it != reports_newest_first.rend(); ++it) {
    const Json::Value& r = *it;
    Json::Value s(Json::objectValue);
    for (const char* k : {"session_id", "persona_id", "persona_name", "started_at", "ended_at",
                          "duration_s", "end_reason"})
      s[k] = r[k];
    s["scores"] = Json::Value(Json::objectValue);
    for (const char* k : kProgressScores) {
      const auto v = Number(r["feedback"][k]);
      s["scores"][k] = v ? Json::Value(static_cast<int>(std::lround(*v))) : Json::Value();
      if (v) series[k].push_back(std::round(*v));
    }
    s["measures"] = HeadlineMeasures(r);
    out["sessions"].append(s);
  }
  out["total"] = static_cast<Json::UInt64>(total);
  out["window"] = window;
  out["trends"] = Json::Value(Json::objectValue);
  for (const char* k : kProgressScores) out["trends"][k] = Trend(series[k], window);
  return out;
}

}  // namespace parley::app
