// CSV and printable HTML renderings of a stored report (the download formats). The HTML is
// app/report.html.mustache (kainjow's Mustache, which escapes every value) filled with the
// report's numbers in words and units: no script, no external resource, an A4 print sheet.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <functional>
#include <kainjow/mustache.hpp>
#include <map>
#include <set>

#include "app/app_impl.h"
#include "app/report_template.h"  // kReportTemplate: app/report.html.mustache

namespace parley::app {
namespace {

std::string CsvField(const Json::Value& v) {
  if (v.isNull()) return {};
  if (v.isDouble()) {  // 10 significant digits: exact enough, and 0.6 stays "0.6"
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.10g", v.asDouble());
    return buf;
  }
  std::string text = v.isString() ? v.asString() : core::ToJson(v);
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  return out + "\"";
}

// ---- The HTML report (app/report.html.mustache) -----------------------------------------

std::string Fixed(double v, int decimals) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}
std::string Percent(double ratio) { return Fixed(100 * ratio, 0) + " %"; }

std::string HumanDuration(double s) {
  if (!std::isfinite(s) || s < 0) return "length unknown";
  const long total = std::lround(s);
  if (total < 60) return std::to_string(total) + " s";
  return std::to_string(total / 60) + " min " + std::to_string(total % 60) + " s";
}

// "2026-12-03T07:10:42.123Z" -> "3 Dec 2026, 07:10 UTC".
std::string HumanDate(const Json::Value& v) {
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  int y = 0, mo = 0, d = 0, h = 0, mi = 0;
  if (!v.isString() || std::sscanf(v.asCString(), "%d-%d-%dT%d:%d", &y, &mo, &d, &h, &mi) != 5 ||
      mo < 1 || mo > 12)
    return "date unknown";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%d %s %d, %02d:%02d UTC", d, kMonths[mo - 1], y, h, mi);
  return buf;
}

std::string Clock(double ms) {
  const long s = std::max(0L, std::lround(ms / 1000));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

const Json::Value* Path(const Json::Value& root, const std::string& path) {
  const Json::Value* v = &root;
  size_t begin = 0;
  while (begin <= path.size()) {
    const size_t dot = path.find('.', begin);
    const std::string key = path.substr(begin, dot == std::string::npos ? dot : dot - begin);
    if (!v->isObject() || !v->isMember(key)) return nullptr;
    v = &(*v)[key];
    if (dot == std::string::npos) break;
    begin = dot + 1;
  }
  return v->isNull() ? nullptr : v;
}

struct ScoreInfo {
  const char* key;
  const char* label;
  const char* what;
  const char* needs;  // said when it was not measured and the report gives no reason
};
const ScoreInfo kScores[] = {
    {"total_score", "Overall", "Weighted over the scores that were measured.",
     "Too few scores were measured."},
    {"likability", "Likability",
     "Interest in your partner, warmth, prompt answers, letting them finish.",
     "Needs a spoken conversation with the persona."},
    {"initiative", "Initiative", "Questions asked, topics brought in, a balanced share of talk.",
     "Needs a spoken conversation with the persona."},
    {"tone", "Tone of voice", "A lively pitch, a comfortable pace, steady loudness, few fillers.",
     "Needs at least 5 seconds of your speech."},
    {"concentration", "Concentration",
     "How much of the time your face was seen, eyes on the screen.",
     "Needs the camera or a landmark stream."},
    {"gaze_stability", "Steady gaze", "How steadily you held your gaze.",
     "Needs the camera or a landmark stream."},
    {"blinking", "Blinking", "Blink rate near the relaxed range of 8–21 per minute.",
     "Needs the camera or a landmark stream."},
    {"posture", "Posture", "An upright head, level shoulders, little fidgeting.",
     "Needs the camera or a landmark stream."},
    {"expression_score", "Expression", "How warm and open your face looked.",
     "Needs the camera or a landmark stream."},
};

const std::map<std::string, std::string> kPartNames = {
    {"pitch_variation", "a lively pitch"},
    {"speaking_rate", "a comfortable pace"},
    {"loudness_steadiness", "steady loudness"},
    {"few_fillers", "few filler words"},
    {"questions", "asking questions"},
    {"turns_opened", "bringing in topics"},
    {"talk_balance", "a balanced share of talk"},
    {"interest_in_persona", "interest in your partner"},
    {"warmth", "warmth"},
    {"responsiveness", "answering promptly"},
    {"lets_persona_finish", "letting your partner finish"}};

using Formatter = std::function<std::string(const Json::Value&)>;
std::string Rounded(const Json::Value& v, int decimals) {
  return v.isNumeric() ? Fixed(v.asDouble(), decimals) : std::string("–");
}
struct MeasureInfo {
  const char* path;
  const char* label;
  Formatter format;
};
const MeasureInfo kMeasures[] = {
    {"metrics.speaking_rate_wpm", "Speaking rate",
     [](const Json::Value& v) { return Rounded(v, 0) + " words/min"; }},
    {"metrics.talk_ratio", "Time you were speaking",
     [](const Json::Value& v) { return Percent(v.asDouble()); }},
    {"metrics.conversation.user_share_of_speech", "Your share of the talk",
     [](const Json::Value& v) { return Percent(v.asDouble()); }},
    {"metrics.turns", "Your turns", [](const Json::Value& v) { return Rounded(v, 0); }},
    {"metrics.questions_asked", "Questions you asked",
     [](const Json::Value& v) { return Rounded(v, 0); }},
    {"metrics.filler_words", "Filler words", [](const Json::Value& v) { return Rounded(v, 0); }},
    {"metrics.longest_pause_s", "Longest pause",
     [](const Json::Value& v) { return Rounded(v, 1) + " s"; }},
    {"metrics.response_latency_s", "Time to answer",
     [](const Json::Value& v) { return Rounded(v["median"], 2) + " s (median)"; }},
    {"metrics.pitch_hz", "Voice pitch",
     [](const Json::Value& v) {
       return Rounded(v["mean"], 0) + " Hz, varying by " + Rounded(v["std"], 0) + " Hz";
     }},
    {"metrics.speech.pitch_std_semitones", "Pitch variation",
     [](const Json::Value& v) { return Rounded(v, 1) + " semitones"; }},
    {"metrics.volume_db", "Loudness",
     [](const Json::Value& v) {
       return Rounded(v["mean"], 0) + " dBFS (± " + Rounded(v["std"], 1) + " dB)";
     }},
    {"metrics.gaze_on_screen_ratio", "Eyes on screen",
     [](const Json::Value& v) { return Percent(v.asDouble()); }},
    {"metrics.blink_rate_per_min", "Blinks per minute",
     [](const Json::Value& v) { return Rounded(v, 1); }},
    {"metrics.smile_ratio", "Smiling", [](const Json::Value& v) { return Percent(v.asDouble()); }},
    {"metrics.face_visible_ratio", "Face visible",
     [](const Json::Value& v) { return Percent(v.asDouble()); }},
    {"metrics.conversation.persona_turns", "Persona's turns",
     [](const Json::Value& v) { return Rounded(v, 0); }},
    {"metrics.conversation.reply_latency_ms", "Persona's reply time",
     [](const Json::Value& v) { return Rounded(v["median"], 0) + " ms (median)"; }},
    {"metrics.conversation.interruptions", "Times you interrupted",
     [](const Json::Value& v) { return Rounded(v["count"], 0); }},
};

struct ChartInfo {
  const char* key;
  const char* title;
  double lo, hi;
  bool percent;
};
const ChartInfo kCharts[] = {
    {"gaze_on_screen_ratio", "Eyes on screen", 0, 1, true},
    {"smile_ratio", "Smiling", 0, 1, true},
    {"blink_rate_per_min", "Blinks per minute", 0, 40, false},
    {"face_visible_ratio", "Face visible", 0, 1, true},
};

// A line over the session's time axis, the persona's turns shaded behind it.
std::string SvgChart(const std::vector<std::pair<double, double>>& pts, double lo, double hi,
                     double t_end, const std::vector<std::pair<double, double>>& persona,
                     bool dots) {
  constexpr double kW = 640, kH = 120;
  if (t_end <= 0) t_end = 1;
  const auto x = [&](double t) { return std::clamp(t / t_end, 0.0, 1.0) * kW; };
  const auto y = [&](double v) { return kH - std::clamp((v - lo) / (hi - lo), 0.0, 1.0) * kH; };
  std::string svg = "<svg viewBox='0 0 640 120' role='img' preserveAspectRatio='none'>";
  svg += "<rect width='640' height='120' fill='#fafbfc'/>";
  for (const auto& [a, b] : persona)
    svg += "<rect x='" + Fixed(x(a), 1) + "' width='" + Fixed(std::max(1.0, x(b) - x(a)), 1) +
           "' height='120' fill='#eceff4'/>";
  std::string path;
  for (const auto& [t, v] : pts) {
    if (dots) {
      svg +=
          "<circle cx='" + Fixed(x(t), 1) + "' cy='" + Fixed(y(v), 1) + "' r='3' fill='#1f5f8b'/>";
    } else {
      path += (path.empty() ? "M" : "L") + Fixed(x(t), 1) + "," + Fixed(y(v), 1);
    }
  }
  if (!path.empty())
    svg += "<path d='" + path + "' fill='none' stroke='#1f5f8b' stroke-width='1.5'/>";
  return svg + "</svg>";
}

}  // namespace

std::string RenderReportCsv(const Json::Value& report) {
  // The documented columns first, always, in this order (docs/protocol.md "CSV"); a column an
  // analyser adds beyond them follows, by name.
  static const std::vector<std::string> kColumns = {
      "gaze_on_screen_ratio", "blink_rate_per_min", "smile_ratio",
      "face_visible_ratio",   "head_yaw_deg",       "head_pitch_deg",
      "head_roll_deg",        "user_speaking_s",    "persona_speaking_s"};
  std::vector<std::string> columns = kColumns;
  std::set<std::string> extra;
  int64_t seconds = 0;
  for (const auto& row : report["timeline"]) {
    seconds = std::max<int64_t>(seconds, row["t"].asInt64() + 1);
    for (const auto& key : row.getMemberNames())
      if (key != "t" && std::find(kColumns.begin(), kColumns.end(), key) == kColumns.end())
        extra.insert(key);
  }
  columns.insert(columns.end(), extra.begin(), extra.end());
  // One row per second of the session: a voice-only session has rows too.
  if (report["duration_s"].isNumeric() && std::isfinite(report["duration_s"].asDouble()))
    seconds = std::max<int64_t>(seconds, std::llround(std::ceil(report["duration_s"].asDouble())));
  for (const auto& turn : report["transcript"])
    seconds = std::max<int64_t>(seconds, (turn["t_end"].asInt64() + 999) / 1000);
  seconds = std::min<int64_t>(seconds, 24 * 3600);
  std::vector<double> user(static_cast<size_t>(seconds)), persona(user.size());
  for (const auto& turn : report["transcript"]) {  // seconds of each second spent speaking
    std::vector<double>& into = turn["role"].asString() == "user" ? user : persona;
    const double from = turn["t_start"].asDouble() / 1000, to = turn["t_end"].asDouble() / 1000;
    for (int64_t sec = std::max<int64_t>(0, static_cast<int64_t>(from));
         sec < seconds && static_cast<double>(sec) < to; ++sec)
      into[static_cast<size_t>(sec)] +=
          std::min(to, sec + 1.0) - std::max(from, static_cast<double>(sec));
  }
  std::map<int64_t, const Json::Value*> samples;
  for (const auto& row : report["timeline"]) samples[row["t"].asInt64()] = &row;

  std::string out = "t_s";
  for (const auto& c : columns) out += "," + CsvField(c);
  out += "\r\n";
  for (int64_t sec = 0; sec < seconds; ++sec) {
    out += std::to_string(sec);
    const auto it = samples.find(sec);
    for (const auto& c : columns) {
      out.push_back(',');
      if (c == "user_speaking_s" || c == "persona_speaking_s") {
        const double v = (c == "user_speaking_s" ? user : persona)[static_cast<size_t>(sec)];
        out += Fixed(std::min(1.0, v), 2);
      } else if (it != samples.end()) {
        out += CsvField((*it->second)[c]);
      }
    }
    out += "\r\n";
  }
  return out;
}

std::string RenderTurnsCsv(const Json::Value& report) {
  std::string out =
      "turn,role,start_s,end_s,duration_s,words,words_per_min,question,interrupted,played_s,"
      "confidence,typed,text\r\n";
  int n = 0;
  for (const auto& turn : report["transcript"]) {
    const bool is_user = turn["role"].asString() == "user";
    const double start = turn["t_start"].asDouble() / 1000, end = turn["t_end"].asDouble() / 1000;
    const std::string text = turn["text"].asString();
    size_t words = 0;  // whitespace-separated, as a reader counts them
    for (size_t i = 0; i < text.size(); ++i)
      if (!std::isspace(static_cast<unsigned char>(text[i])) &&
          (i == 0 || std::isspace(static_cast<unsigned char>(text[i - 1]))))
        ++words;
    const double length = std::max(0.0, end - start);
    out += std::to_string(++n);
    out += is_user ? ",user," : ",persona,";
    out += Fixed(start, 2) + "," + Fixed(end, 2) + "," + Fixed(length, 2) + ",";
    out += std::to_string(words) + ",";
    // A rate over less than a second of speech says nothing.
    if (is_user && length >= 1 && !turn["typed"].asBool())
      out += Fixed(static_cast<double>(words) / length * 60, 0);
    out += ",";
    out += is_user ? (turn["question"].asBool() ? "1" : "0") : "";
    out += ",";
    out += is_user ? "" : (turn["interrupted"].asBool() ? "1" : "0");
    out += ",";
    if (!is_user && turn["played_ms"].isNumeric())
      out += Fixed(turn["played_ms"].asDouble() / 1000, 2);
    out += ",";
    if (is_user && turn["confidence"].isNumeric()) out += Fixed(turn["confidence"].asDouble(), 3);
    out += ",";
    out += turn["typed"].asBool() ? "1" : "0";
    out += "," + CsvField(Json::Value(text)) + "\r\n";
  }
  return out;
}

std::string RenderReportHtml(const Json::Value& report) {
  namespace mu = kainjow::mustache;
  mu::mustache tmpl{std::string(kReportTemplate)};  // render() is not const: one per call
  mu::data d;
  const std::string persona = report["persona_name"].isString() ? report["persona_name"].asString()
                                                                : report["persona_id"].asString();
  d.set("persona", persona.empty() ? "the persona" : persona);
  d.set("date",
        HumanDate(report["started_at"].isString() ? report["started_at"] : report["created_at"]));
  d.set("duration", HumanDuration(report["duration_s"].asDouble()));
  d.set("session_id", report["session_id"].asString());
  d.set("schema_version", std::to_string(report["schema_version"].asInt()));
  static const std::map<std::string, std::string> kEnds = {
      {"ended_by_client", "ended by you"},
      {"disconnect_grace", "the connection was lost"},
      {"idle_timeout", "ended after a long silence"},
      {"server_shutdown", "the server restarted"},
      {"server_crash", "recovered after a server crash"}};
  if (const auto it = kEnds.find(report["end_reason"].asString()); it != kEnds.end())
    d.set("end_reason", it->second);
  const Json::Value& fb = report["feedback"];
  d.set("summary", fb["summary"].asString());

  mu::data scores{mu::data::type::list};
  for (const auto& s : kScores) {
    mu::data card;
    card.set("label", s.label);
    const Json::Value& v = fb[s.key];
    const Json::Value& details = fb["feedback_details"][s.key];
    if (v.isNumeric()) {
      card.set("measured", true);
      card.set("value", std::to_string(static_cast<int>(std::lround(v.asDouble()))));
      std::string why = s.what;
      // Which part held it back most, in words.
      std::string lowest;
      int lowest_value = 101;
      for (const auto& part : details["parts"].getMemberNames())
        if (details["parts"][part].asInt() < lowest_value && kPartNames.contains(part)) {
          lowest_value = details["parts"][part].asInt();
          lowest = kPartNames.at(part);
        }
      if (!lowest.empty() && lowest_value < 80)
        why += " Held back most by " + lowest + " (" + std::to_string(lowest_value) + " of 100).";
      if (std::string(s.key) == "total_score" && !details["missing"].empty())
        why += details["missing"].size() == 1
                   ? std::string(" Without the one score that was not measured.")
                   : " Without " + std::to_string(details["missing"].size()) +
                         " scores that were not measured.";
      card.set("why", why);
    } else {
      card.set("measured", false);
      card.set("why", details["reason"].isString()
                          ? "Not scored: " + details["reason"].asString() + "."
                          : std::string(s.needs));
    }
    scores.push_back(card);
  }
  d.set("scores", scores);

  mu::data tips{mu::data::type::list};
  for (const auto& t : report["tips"])
    if (t.isString()) tips.push_back(mu::data(t.asString()));
  d.set("has_tips", !report["tips"].empty());
  d.set("tips", tips);

  // The persona's turns, shaded on every chart.
  std::vector<std::pair<double, double>> persona_spans;
  for (const auto& turn : report["transcript"])
    if (turn["role"] == "assistant" && turn["t_start"].isNumeric())
      persona_spans.emplace_back(turn["t_start"].asDouble() / 1000,
                                 turn.get("t_end", turn["t_start"]).asDouble() / 1000);
  const double t_end = report["duration_s"].asDouble();
  mu::data charts{mu::data::type::list};
  for (const auto& c : kCharts) {
    std::vector<std::pair<double, double>> pts;
    double sum = 0;
    for (const auto& row : report["timeline"])
      if (row[c.key].isNumeric() && row["t"].isNumeric()) {
        pts.emplace_back(row["t"].asDouble(), row[c.key].asDouble());
        sum += row[c.key].asDouble();
      }
    if (pts.empty()) continue;
    const double mean = sum / static_cast<double>(pts.size());
    mu::data chart;
    chart.set("title", c.title);
    chart.set("caption",
              "average " + (c.percent ? Percent(mean) : Fixed(mean, 1)) + ", scale " +
                  (c.percent ? std::string("0–100 %") : Fixed(c.lo, 0) + "–" + Fixed(c.hi, 0)) +
                  "; the persona's turns shaded");
    chart.set("svg", SvgChart(pts, c.lo, c.hi, t_end, persona_spans, false));
    charts.push_back(chart);
  }
  // Your pitch and pace, turn by turn.
  std::vector<std::pair<double, double>> pitch;
  for (const auto& turn : report["transcript"])
    if (turn["role"] == "user" && turn["prosody"]["f0_mean_hz"].isNumeric())
      pitch.emplace_back(turn["t_start"].asDouble() / 1000,
                         turn["prosody"]["f0_mean_hz"].asDouble());
  if (!pitch.empty()) {
    mu::data chart;
    chart.set("title", "Your voice's pitch, turn by turn");
    chart.set("caption", "Hz, 50–350; the persona's turns shaded");
    chart.set("svg", SvgChart(pitch, 50, 350, t_end, persona_spans, true));
    charts.push_back(chart);
  }
  d.set("charts", charts);

  mu::data measures{mu::data::type::list};
  for (const auto& m : kMeasures) {
    mu::data row;
    row.set("label", m.label);
    const Json::Value* v = Path(report, m.path);
    row.set("value", v ? m.format(*v) : std::string("not measured"));
    measures.push_back(row);
  }
  d.set("measures", measures);

  mu::data turns{mu::data::type::list};
  for (const auto& turn : report["transcript"]) {
    mu::data t;
    const bool user = turn["role"] == "user";
    t.set("role", user ? "user" : "assistant");
    t.set("who", user ? (turn["typed"].asBool() ? "You (typed)" : "You") : persona);
    t.set("at", Clock(turn["t_start"].asDouble()));
    const bool cut = turn["interrupted"].asBool();
    t.set("interrupted", cut);
    t.set("text", cut && turn["heard_text"].isString() ? turn["heard_text"].asString()
                                                       : turn["text"].asString());
    turns.push_back(t);
  }
  d.set("turns", turns);

  // What was not measured, in words, once per thing.
  mu::data missing{mu::data::type::list};
  std::set<std::string> said;
  for (const auto& key : report["not_measured"]) {
    const std::string k = key.asString();
    std::string text;
    for (const auto& s : kScores)
      if (k == std::string("feedback.") + s.key) text = std::string(s.label) + ": " + s.needs;
    for (const auto& m : kMeasures)
      if (k == m.path) text = std::string(m.label) + ": not measured in this session.";
    if (!text.empty() && said.insert(text).second) missing.push_back(mu::data(text));
  }
  d.set("has_not_measured", !said.empty());
  d.set("not_measured", missing);
  return tmpl.render(d);
}

}  // namespace parley::app
