// The report's conversation scores (tone, initiative, likability), the total, and the summary
// and tips tied to them. Every formula is in docs/scoring.md ("Scores"); each score carries its
// inputs and parts in feedback_details so a reader can see why. Pure: the report in, the report
// out; deterministic (the wording varies by session id, never by chance).
#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>

#include "session/session.h"

namespace parley::session {
namespace {

// 0 at or outside [zero_lo, zero_hi], 100 inside [full_lo, full_hi], linear between.
double Band(double x, double zero_lo, double full_lo, double full_hi, double zero_hi) {
  if (x >= full_lo && x <= full_hi) return 100;
  if (x <= zero_lo || x >= zero_hi) return 0;
  return x < full_lo ? 100 * (x - zero_lo) / (full_lo - zero_lo)
                     : 100 * (zero_hi - x) / (zero_hi - full_hi);
}
// 100 at or below `full`, 0 at or above `zero` (full < zero), linear between.
double AtMost(double x, double full, double zero) { return Band(x, -1e300, -1e299, full, zero); }
// 0 at or below `zero`, 100 at or above `full`.
double AtLeast(double x, double zero, double full) { return Band(x, zero, full, 1e299, 1e300); }

std::optional<double> Num(const Json::Value& v) {
  if (!v.isNumeric()) return std::nullopt;
  const double d = v.asDouble();
  return std::isfinite(d) ? std::optional<double>(d) : std::nullopt;
}

double Round1(double v) { return std::round(v * 10) / 10; }

// One score's parts: each a 0-100 value with a weight; the score is their weighted mean over
// the parts that were measured.
struct Score {
  std::string name, formula;
  Json::Value inputs{Json::objectValue}, parts{Json::objectValue};
  Json::Value missing{Json::arrayValue};
  double weighted = 0, weights = 0;
  std::string not_enough;  // why there is no score at all

  void Part(const std::string& part, std::optional<double> value, double weight) {
    if (!value) {
      missing.append(part);
      return;
    }
    const double v = std::clamp(*value, 0.0, 100.0);
    parts[part] = static_cast<int>(std::lround(v));
    weighted += weight * v;
    weights += weight;
  }
  std::optional<int> Value() const {
    if (!not_enough.empty() || weights <= 0) return std::nullopt;
    return static_cast<int>(std::lround(weighted / weights));
  }
  Json::Value Details() const {
    Json::Value d(Json::objectValue);
    d["formula"] = formula;
    d["inputs"] = inputs;
    d["parts"] = parts;
    d["missing"] = missing;
    if (!not_enough.empty()) d["reason"] = not_enough;
    return d;
  }
};

struct Measures {
  std::optional<double> speech_s, turns, pitch_std_st, rate_wpm, volume_std_db, fillers, questions,
      user_share, persona_turns, opened, about_persona, positive, negative, smiled,
      latency_median_s, interruptions_per_min, interruptions, smile_ratio, minutes;
};

Measures Read(const Json::Value& r) {
  const Json::Value& m = r["metrics"];
  const Json::Value& c = m["conversation"];
  const Json::Value& u = c["user_turns"];
  Measures x;
  x.speech_s = Num(m["speech"]["speech_s"]);
  x.turns = Num(m["turns"]);
  x.pitch_std_st = Num(m["speech"]["pitch_std_semitones"]);
  x.rate_wpm = Num(m["speaking_rate_wpm"]);
  x.volume_std_db = Num(m["volume_db"]["std"]);
  x.fillers = Num(m["filler_words"]);
  x.questions = Num(m["questions_asked"]);
  x.user_share = Num(c["user_share_of_speech"]);
  x.persona_turns = Num(c["persona_turns"]);
  x.opened = Num(u["opened"]);
  x.about_persona = Num(u["questions_about_persona"]);
  x.positive = Num(u["positive_words"]);
  x.negative = Num(u["negative_words"]);
  x.smiled = Num(u["smiled"]);
  x.latency_median_s = Num(m["response_latency_s"]["median"]);
  x.interruptions_per_min = Num(c["interruptions"]["per_min"]);
  x.interruptions = Num(c["interruptions"]["count"]);
  x.smile_ratio = Num(m["smile_ratio"]);
  if (const auto d = Num(r["duration_s"]); d && *d > 0) x.minutes = *d / 60;
  return x;
}

constexpr double kMinSpeechS = 5;  // less than this of the user's voice: no voice score

Score Tone(const Measures& x) {
  Score s{"tone", "tone_v1"};
  const double speech_s = x.speech_s.value_or(0);
  s.inputs["speech_s"] = Round1(speech_s);
  if (speech_s < kMinSpeechS) {
    s.not_enough = "under 5 s of the user's speech was heard";
    return s;
  }
  std::optional<double> fillers_per_min;
  if (x.fillers) fillers_per_min = *x.fillers / (speech_s / 60);
  const auto put = [&](const char* k, const std::optional<double>& v) {
    s.inputs[k] = v ? Json::Value(Round1(*v)) : Json::Value();
  };
  put("pitch_std_semitones", x.pitch_std_st);
  put("speaking_rate_wpm", x.rate_wpm);
  put("volume_std_db", x.volume_std_db);
  put("fillers_per_min", fillers_per_min);
  const auto map = [](const std::optional<double>& v, const std::function<double(double)>& f) {
    return v ? std::optional<double>(f(*v)) : std::nullopt;
  };
  s.Part("pitch_variation",
         map(x.pitch_std_st, [](double v) { return Band(v, 0.5, 2.0, 5.0, 12.0); }), 0.35);
  s.Part("speaking_rate", map(x.rate_wpm, [](double v) { return Band(v, 60, 120, 170, 250); }),
         0.25);
  s.Part("loudness_steadiness", map(x.volume_std_db, [](double v) { return AtMost(v, 4, 12); }),
         0.15);
  s.Part("few_fillers", map(fillers_per_min, [](double v) { return AtMost(v, 1, 10); }), 0.25);
  return s;
}

Score Initiative(const Measures& x) {
  Score s{"initiative", "initiative_v1"};
  const double turns = x.turns.value_or(0);
  s.inputs["user_turns"] = turns;
  if (turns < 2 || x.persona_turns.value_or(0) < 1) {
    s.not_enough = "fewer than 2 user turns in a conversation with the persona";
    return s;
  }
  s.inputs["questions_asked"] = x.questions.value_or(0);
  s.inputs["turns_opened"] = x.opened ? Json::Value(*x.opened) : Json::Value();
  s.inputs["user_share_of_speech"] =
      x.user_share ? Json::Value(std::round(*x.user_share * 100) / 100) : Json::Value();
  // A question in 30 % of one's turns is an engaged conversation.
  if (x.questions) s.Part("questions", AtLeast(*x.questions / turns, 0, 0.3), 0.4);
  if (x.opened) s.Part("turns_opened", AtLeast(*x.opened / turns, 0, 0.5), 0.3);
  // 43:57 (top sales performers' talk:listen, Gong 2017) up to an even share is balanced.
  s.Part(
      "talk_balance",
      x.user_share ? std::optional<double>(Band(*x.user_share, 0.1, 0.4, 0.6, 0.9)) : std::nullopt,
      0.3);
  return s;
}

Score Likability(const Measures& x) {
  Score s{"likability", "likability_v1"};
  const double turns = x.turns.value_or(0);
  s.inputs["user_turns"] = turns;
  if (turns < 2 || x.persona_turns.value_or(0) < 1) {
    s.not_enough = "fewer than 2 user turns in a conversation with the persona";
    return s;
  }
  s.inputs["questions_about_persona"] = x.about_persona.value_or(0);
  s.inputs["positive_words"] = x.positive.value_or(0);
  s.inputs["negative_words"] = x.negative.value_or(0);
  s.inputs["smile_ratio"] = x.smile_ratio ? Json::Value(*x.smile_ratio) : Json::Value();
  s.inputs["response_latency_median_s"] =
      x.latency_median_s ? Json::Value(*x.latency_median_s) : Json::Value();
  s.inputs["interruptions_per_min"] =
      x.interruptions_per_min ? Json::Value(*x.interruptions_per_min) : Json::Value();
  // Asking about the other person in one turn of five reads as interest.
  if (x.about_persona)
    s.Part("interest_in_persona", AtLeast(*x.about_persona / turns, 0, 0.2), 0.25);
  // Warmth: net positive words per turn (one per two turns is warm), and smiling when seen.
  if (x.positive && x.negative) {
    const double words = AtLeast((*x.positive - *x.negative) / turns, -0.5, 0.5);
    const double warmth =
        x.smile_ratio ? 0.5 * words + 0.5 * AtLeast(*x.smile_ratio, 0, 0.3) : words;
    s.Part("warmth", warmth, 0.25);
  }
  // The user's gap after the persona stops; people answer in ~200 ms (Stivers et al. 2009).
  s.Part("responsiveness",
         x.latency_median_s ? std::optional<double>(AtMost(*x.latency_median_s, 0.7, 4.0))
                            : std::nullopt,
         0.25);
  s.Part("lets_persona_finish",
         x.interruptions_per_min ? std::optional<double>(AtMost(*x.interruptions_per_min, 0, 3))
                                 : std::nullopt,
         0.25);
  return s;
}

// What each score weighs in the total (docs/scoring.md).
const std::pair<const char*, double> kTotalWeights[] = {
    {"likability", 0.25},    {"initiative", 0.2}, {"tone", 0.2},
    {"concentration", 0.15}, {"expression", 0.1}, {"posture", 0.1}};

std::string Pick(const std::string& seed, size_t salt, std::initializer_list<const char*> options) {
  const size_t h = std::hash<std::string>{}(seed) + salt * 0x9e3779b97f4a7c15ULL;
  return *(options.begin() + static_cast<long>(h % options.size()));
}

std::string Fmt(double v, int decimals = 0) {
  std::ostringstream o;
  o.setf(std::ios::fixed);
  o.precision(decimals);
  o << v;
  return o.str();
}

struct Tip {
  double weakness;  // 100 - the part's value: the weakest parts come first
  std::string text;
};

}  // namespace

void ScoreReport(Json::Value* report) {
  Json::Value& r = *report;
  Json::Value& fb = r["feedback"];
  const Measures x = Read(r);
  Json::Value details(Json::objectValue);
  std::vector<Tip> tips;
  const std::string seed = r["session_id"].asString();

  for (const Score& s : {Tone(x), Initiative(x), Likability(x)}) {
    details[s.name] = s.Details();
    if (const auto v = s.Value()) fb[s.name] = *v;
  }

  // The total over the scores that were measured, renormalised; none without half the weight.
  Json::Value& td = details["total_score"];
  td["formula"] = "total_v1";
  td["inputs"] = Json::Value(Json::objectValue);
  td["weights"] = Json::Value(Json::objectValue);
  td["missing"] = Json::Value(Json::arrayValue);
  double sum = 0, weights = 0;
  for (const auto& [name, w] : kTotalWeights) {
    td["weights"][name] = w;
    if (fb[name].isNumeric()) {
      td["inputs"][name] = fb[name];
      sum += w * fb[name].asDouble();
      weights += w;
    } else {
      td["missing"].append(name);
    }
  }
  if (weights >= 0.4) {
    fb["total_score"] = static_cast<int>(std::lround(sum / weights));
  } else {
    td["reason"] = "too few scores were measured (under half of the total's weight)";
  }
  fb["feedback_details"] = details;

  // Tips, each from a number of this session; the weakest parts first.
  const Json::Value& tone = details["tone"];
  const Json::Value& ini = details["initiative"];
  const Json::Value& lik = details["likability"];
  const auto part = [](const Json::Value& d, const char* p) {
    return d["parts"][p].isNumeric() ? std::optional<double>(d["parts"][p].asDouble())
                                     : std::nullopt;
  };
  const double minutes = x.minutes.value_or(0);
  if (const auto p = part(ini, "questions"); p && *p < 80)
    tips.push_back({100 - *p, "You asked " + Fmt(x.questions.value_or(0)) + " question" +
                                  (x.questions.value_or(0) == 1 ? "" : "s") + " in " +
                                  Fmt(x.turns.value_or(0)) + " turns. " +
                                  Pick(seed, 1,
                                       {"People who ask follow-up questions are liked more: try "
                                        "one after each answer.",
                                        "A follow-up question after an answer keeps the "
                                        "conversation going both ways."})});
  if (const auto p = part(lik, "interest_in_persona"); p && *p < 80)
    tips.push_back({100 - *p, Fmt(x.about_persona.value_or(0)) + " of your " +
                                  Fmt(x.turns.value_or(0)) +
                                  " turns asked about your partner. Ask what they think or how "
                                  "their day went: interest in the other person is what makes "
                                  "a conversation warm."});
  if (const auto p = part(ini, "talk_balance"); p && *p < 80 && x.user_share) {
    const int pct = static_cast<int>(std::lround(*x.user_share * 100));
    tips.push_back({100 - *p, "You spoke " + std::to_string(pct) + "% of the time. " +
                                  (pct < 40 ? "Share a little more of your own: a story, an "
                                              "opinion, why something matters to you."
                                            : "Leave your partner more room: pause and ask, "
                                              "then listen to the answer.")});
  }
  if (const auto p = part(ini, "turns_opened"); p && *p < 60)
    tips.push_back({100 - *p, "You started " + Fmt(x.opened.value_or(0)) + " of " +
                                  Fmt(x.turns.value_or(0)) +
                                  " turns yourself; the rest answered a question. Bring in a "
                                  "topic of your own now and then."});
  if (const auto p = part(tone, "pitch_variation"); p && *p < 80 && x.pitch_std_st)
    tips.push_back({100 - *p, "Your pitch varied by " + Fmt(*x.pitch_std_st, 1) +
                                  " semitones on average. " +
                                  (*x.pitch_std_st < 2 ? "Let your voice rise and fall more: a "
                                                         "flat voice sounds uninterested."
                                                       : "Your voice swings widely; a calmer "
                                                         "melody is easier to follow.")});
  if (const auto p = part(tone, "speaking_rate"); p && *p < 80 && x.rate_wpm)
    tips.push_back({100 - *p, "You spoke at " + Fmt(*x.rate_wpm) + " words per minute. " +
                                  (*x.rate_wpm < 120 ? "A little faster (120-170 is comfortable "
                                                       "to follow) keeps the energy up."
                                                     : "Slow down a little: 120-170 words per "
                                                       "minute is comfortable to follow.")});
  if (const auto p = part(tone, "few_fillers"); p && *p < 80 && x.fillers && x.speech_s) {
    const double per_min = *x.fillers / (*x.speech_s / 60);
    tips.push_back({100 - *p, "You used " + Fmt(*x.fillers) + " filler word" +
                                  (*x.fillers == 1 ? "" : "s") + " (" + Fmt(per_min, 1) +
                                  " per minute of speech). A short silent pause sounds more "
                                  "confident than \"um\"."});
  }
  if (const auto p = part(lik, "responsiveness"); p && *p < 80 && x.latency_median_s)
    tips.push_back({100 - *p, "You took " + Fmt(*x.latency_median_s, 1) +
                                  " s to answer, typically. People answer within about a "
                                  "fifth of a second; a quick \"hmm, let me think\" "
                                  "keeps the floor while you do."});
  if (const auto p = part(lik, "lets_persona_finish"); p && *p < 80 && x.interruptions)
    tips.push_back({100 - *p, "You interrupted " + Fmt(*x.interruptions) + " time" +
                                  (*x.interruptions == 1 ? "" : "s") + " (" +
                                  Fmt(x.interruptions_per_min.value_or(0), 1) +
                                  " per minute). Let your partner finish before you answer."});
  if (const auto p = part(lik, "warmth"); p && *p < 60)
    tips.push_back({100 - *p, "Your turns had " + Fmt(x.positive.value_or(0)) + " positive and " +
                                  Fmt(x.negative.value_or(0)) +
                                  " negative words. Say what you like or enjoy, and smile "
                                  "when you do."});
  if (fb["concentration"].isNumeric() && fb["concentration"].asDouble() < 70 &&
      r["metrics"]["gaze_on_screen_ratio"].isNumeric())
    tips.push_back({100 - fb["concentration"].asDouble(),
                    "You looked at the screen " +
                        Fmt(100 * r["metrics"]["gaze_on_screen_ratio"].asDouble()) +
                        "% of the time. Looking at your partner while they speak shows you "
                        "are listening."});
  std::stable_sort(tips.begin(), tips.end(),
                   [](const Tip& a, const Tip& b) { return a.weakness > b.weakness; });
  if (tips.size() > 6) tips.resize(6);
  // Fewer than three weak points: say what went well, from the strongest parts.
  if (tips.size() < 3) {
    if (const auto p = part(ini, "questions"); p && *p >= 80)
      tips.push_back({0, "Keep asking questions: " + Fmt(x.questions.value_or(0)) + " in " +
                             Fmt(x.turns.value_or(0)) + " turns kept the conversation two-way."});
    if (tips.size() < 3)
      if (const auto p = part(tone, "speaking_rate"); p && *p >= 80 && x.rate_wpm)
        tips.push_back({0, "Your pace, " + Fmt(*x.rate_wpm) +
                               " words per minute, was easy to follow: keep it."});
    if (tips.size() < 3)
      if (const auto p = part(lik, "responsiveness"); p && *p >= 80 && x.latency_median_s)
        tips.push_back({0, "You answered promptly (" + Fmt(*x.latency_median_s, 1) +
                               " s typically): that keeps a conversation lively."});
  }
  Json::Value out(Json::arrayValue);
  for (const auto& t : tips) out.append(t.text);
  r["tips"] = out;

  // The summary: how long, how many turns, the headline scores in words.
  std::string summary;
  const double turns = x.turns.value_or(0);
  if (minutes >= 1)
    summary = "A " + Fmt(std::round(minutes)) + "-minute conversation";
  else if (minutes > 0)
    summary = "A " + Fmt(minutes * 60) + "-second conversation";
  else
    summary = "A conversation";
  if (turns > 0) summary += " in which you spoke " + Fmt(turns) + " time" + (turns == 1 ? "" : "s");
  summary += ".";
  const auto word = [](int v) {
    return v >= 80 ? "strong" : v >= 60 ? "good" : v >= 40 ? "fair" : "weak";
  };
  std::vector<std::string> said;
  for (const char* name : {"likability", "initiative", "tone"})
    if (fb[name].isNumeric())
      said.push_back(std::string(name) + " " + word(fb[name].asInt()) + " (" +
                     std::to_string(fb[name].asInt()) + ")");
  if (!said.empty()) {
    summary += " Scores: ";
    for (size_t i = 0; i < said.size(); ++i) summary += (i ? ", " : "") + said[i];
    summary += ".";
  }
  if (fb["total_score"].isNumeric())
    summary += " Overall " + std::to_string(fb["total_score"].asInt()) + " of 100" +
               (td["missing"].empty() ? "" : ", over the scores that could be measured") + ".";
  else
    summary += " Too little was measured for an overall score.";
  if (!tips.empty() && tips.front().weakness > 0)
    summary += " " + Pick(seed, 2,
                          {"The tips below start with what would help most.",
                           "Start with the first tip: it is where you lost most."});
  fb["summary"] = summary;
  fb["summary_by"] = "templates";
}

}  // namespace parley::session
