// The LLM's rewrite of a report's summary and tips (docs/scoring.md "Summary and tips"). The
// templates stay the source of truth: the model gets their text and the session's numbers and
// may only reword them; an answer that is not the asked JSON, drops or adds a tip, or states a
// number the facts do not hold is refused and the templates' text stays (said in the report).
#include <regex>
#include <set>

#include "session/internal.h"

namespace parley::session {
namespace {

constexpr size_t kMaxSummaryChars = 1200;
constexpr size_t kMaxTipChars = 500;

// Every number written in `text` ("2", "8.5", "43"), as written.
void Numbers(const std::string& text, std::set<std::string>* out) {
  static const std::regex number(R"(\d+(?:\.\d+)?)");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), number);
       it != std::sregex_iterator(); ++it)
    out->insert(it->str());
}

void NumbersIn(const Json::Value& v, std::set<std::string>* out) {
  if (v.isString()) {
    Numbers(v.asString(), out);
  } else if (v.isNumeric()) {
    Numbers(core::ToJson(v), out);
    const double d = v.asDouble();
    for (int decimals = 0; decimals <= 2; ++decimals) {  // the ways a person rounds it
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.*f", decimals, d);
      Numbers(buf, out);
      std::snprintf(buf, sizeof buf, "%.*f", decimals, d * 100);  // a ratio as a percentage
      Numbers(buf, out);
    }
  } else if (v.isObject() || v.isArray()) {
    for (const auto& x : v) NumbersIn(x, out);
  }
}

// The JSON object in a model's answer (models wrap it in ``` fences or a sentence).
std::optional<Json::Value> AnswerObject(const std::string& text) {
  const size_t open = text.find('{'), close = text.rfind('}');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  std::string why;
  auto v = core::ParseJson(std::string_view(text).substr(open, close - open + 1), &why);
  if (!v || !v->isObject()) return std::nullopt;
  return v;
}

}  // namespace

bool RewriteFeedback(Json::Value* report, dialogue::LlmEngine& llm, std::string* error) {
  Json::Value& fb = (*report)["feedback"];
  const Json::Value& tips = (*report)["tips"];
  if (!fb["summary"].isString() || !tips.isArray() || tips.empty()) {
    *error = "no templated summary and tips to rewrite";
    return false;
  }
  Json::Value facts(Json::objectValue);
  facts["summary"] = fb["summary"];
  facts["tips"] = tips;
  for (const char* k : {"tone", "initiative", "likability", "concentration", "gaze_stability",
                        "blinking", "posture", "expression_score", "total_score"})
    if (fb[k].isNumeric()) facts["scores"][k] = fb[k];
  facts["duration_s"] = (*report)["duration_s"];
  for (const char* k : {"speaking_rate_wpm", "talk_ratio", "turns", "questions_asked",
                        "filler_words", "longest_pause_s", "response_latency_s",
                        "gaze_on_screen_ratio", "blink_rate_per_min", "smile_ratio"})
    if (!(*report)["metrics"][k].isNull()) facts["measures"][k] = (*report)["metrics"][k];

  std::vector<dialogue::Message> messages{
      {dialogue::Message::Role::kSystem,
       "You write the feedback a conversation-practice app gives after a session. Rewrite the "
       "summary and each tip in the facts below in plain, warm, second-person English. Keep "
       "every number exactly as it is in the facts; add no number, no claim and no advice the "
       "facts do not support. Answer with one JSON object only: {\"summary\": \"at most three "
       "sentences\", \"tips\": [one string per tip given, in the same order]}."},
      {dialogue::Message::Role::kUser, core::ToJson(facts)}};
  const auto answer = llm.Complete(messages, 600, 0.4, error);
  if (!answer) return false;
  const auto obj = AnswerObject(*answer);
  if (!obj || !(*obj)["summary"].isString() || !(*obj)["tips"].isArray()) {
    *error = "the answer is not the JSON object asked for";
    return false;
  }
  const Json::Value& summary = (*obj)["summary"];
  const Json::Value& new_tips = (*obj)["tips"];
  if (summary.asString().empty() || summary.asString().size() > kMaxSummaryChars) {
    *error = "the rewritten summary is empty or too long";
    return false;
  }
  if (new_tips.size() != tips.size()) {
    *error = "the answer has " + std::to_string(new_tips.size()) + " tips for " +
             std::to_string(tips.size());
    return false;
  }
  std::set<std::string> known;
  NumbersIn(facts, &known);
  for (Json::ArrayIndex i = 0; i < new_tips.size(); ++i) {
    if (!new_tips[i].isString() || new_tips[i].asString().empty() ||
        new_tips[i].asString().size() > kMaxTipChars) {
      *error = "tip " + std::to_string(i + 1) + " is not a short string";
      return false;
    }
    // Each tip stays tied to this session's numbers: one that had numbers keeps one.
    std::set<std::string> had, has;
    Numbers(tips[i].asString(), &had);
    Numbers(new_tips[i].asString(), &has);
    if (!had.empty() && has.empty()) {
      *error = "tip " + std::to_string(i + 1) + " lost its numbers";
      return false;
    }
  }
  std::set<std::string> stated;
  NumbersIn(*obj, &stated);
  for (const auto& n : stated) {
    if (!known.count(n)) {
      *error = "the rewrite states " + n + ", which is not among the session's numbers";
      return false;
    }
  }
  fb["summary"] = summary;
  (*report)["tips"] = new_tips;
  fb["summary_by"] = "llm";
  fb["summary_model"] = llm.model();
  return true;
}

}  // namespace parley::session
