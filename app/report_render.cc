// CSV and printable HTML renderings of a stored report (the download formats).
#include <cstdio>
#include <map>
#include <set>

#include "app/app_impl.h"

namespace parley::app {
namespace {

std::string HtmlEscape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

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

std::string Number(const Json::Value& v) {
  if (v.isNull()) return "not measured";
  if (v.isDouble()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", v.asDouble());
    return buf;
  }
  return v.isString() ? v.asString() : core::ToJson(v);
}

// Numeric series of the per-second timeline, by name.
std::map<std::string, std::vector<std::pair<double, double>>> Series(const Json::Value& timeline) {
  std::map<std::string, std::vector<std::pair<double, double>>> out;
  for (const auto& row : timeline) {
    for (const auto& key : row.getMemberNames()) {
      if (key != "t" && row[key].isNumeric())
        out[key].emplace_back(row["t"].asDouble(), row[key].asDouble());
    }
  }
  return out;
}

std::string SvgChart(const std::string& name, const std::vector<std::pair<double, double>>& pts) {
  constexpr double kW = 640, kH = 120;
  double t0 = pts.front().first, t1 = pts.back().first, lo = pts.front().second, hi = lo;
  for (const auto& [t, v] : pts) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (t1 <= t0) t1 = t0 + 1;
  if (hi <= lo) hi = lo + 1;
  std::string path;
  for (const auto& [t, v] : pts) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s%.1f,%.1f ", path.empty() ? "M" : "L",
                  (t - t0) / (t1 - t0) * kW, kH - (v - lo) / (hi - lo) * kH);
    path += buf;
  }
  char range[96];
  std::snprintf(range, sizeof range, "%.3g – %.3g over %.0f s", lo, hi, t1 - t0);
  return "<figure><figcaption>" + HtmlEscape(name) + " <small>(" + range +
         ")</small></figcaption><svg viewBox=\"0 0 640 120\" width=\"640\" height=\"120\" "
         "role=\"img\" aria-label=\"" +
         HtmlEscape(name) + "\"><path d=\"" + path +
         "\" fill=\"none\" stroke=\"#2563eb\" stroke-width=\"1.5\"/></svg></figure>\n";
}

}  // namespace

std::string RenderReportCsv(const Json::Value& report) {
  std::set<std::string> columns;
  for (const auto& row : report["timeline"]) {
    for (const auto& key : row.getMemberNames()) {
      if (key != "t") columns.insert(key);
    }
  }
  std::string out = "t_s";
  for (const auto& c : columns) {
    out.push_back(',');
    out += CsvField(c);
  }
  out += "\r\n";
  for (const auto& row : report["timeline"]) {
    out += CsvField(row["t"]);
    for (const auto& c : columns) {
      out.push_back(',');
      out += CsvField(row[c]);
    }
    out += "\r\n";
  }
  return out;
}

std::string RenderReportHtml(const Json::Value& report) {
  const std::string id = report["session_id"].asString();
  std::string h =
      "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<title>Parley report " +
      HtmlEscape(id) +
      "</title><style>body{font:14px/1.45 system-ui,sans-serif;max-width:760px;margin:2em "
      "auto;color:#111}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid "
      "#ddd;padding:4px 8px;text-align:left}.nm{color:#888}figure{margin:1em 0}"
      "@media print{a{color:inherit}}</style></head><body>\n";
  h += "<h1>Conversation report</h1>\n<p>Session <code>" + HtmlEscape(id) + "</code> with " +
       HtmlEscape(report["persona_name"].isString() ? report["persona_name"].asString()
                                                    : report["persona_id"].asString()) +
       " — " + HtmlEscape(Number(report["started_at"])) + ", " +
       HtmlEscape(Number(report["duration_s"])) + " s.</p>\n";
  h += "<p>" + HtmlEscape(report["feedback"]["summary"].asString()) + "</p>\n";
  auto table = [&](const char* title, const Json::Value& obj) {
    h += std::string("<h2>") + title + "</h2>\n<table>\n";
    for (const auto& key : obj.getMemberNames()) {
      if (key == "summary" || key == "summary_by" || key == "feedback_details") continue;
      const Json::Value& v = obj[key];
      h += "<tr><th>" + HtmlEscape(key) + "</th><td" + (v.isNull() ? " class=\"nm\"" : "") + ">" +
           HtmlEscape(v.isObject() || v.isArray() ? core::ToJson(v) : Number(v)) + "</td></tr>\n";
    }
    h += "</table>\n";
  };
  table("Scores", report["feedback"]);
  table("Measures", report["metrics"]);
  const auto series = Series(report["timeline"]);
  if (!series.empty()) {
    h += "<h2>Over time</h2>\n";
    for (const auto& [name, pts] : series) h += SvgChart(name, pts);
  }
  if (!report["tips"].empty()) {
    h += "<h2>Tips</h2>\n<ul>\n";
    for (const auto& tip : report["tips"])
      h += "<li>" + HtmlEscape(tip.isString() ? tip.asString() : core::ToJson(tip)) + "</li>\n";
    h += "</ul>\n";
  }
  if (!report["transcript"].empty()) {
    h += "<h2>Transcript</h2>\n<table>\n";
    for (const auto& turn : report["transcript"]) {
      char when[32];
      std::snprintf(when, sizeof when, "%.1f s", turn["t_start"].asDouble() / 1000.0);
      h += "<tr><td>" + std::string(when) + "</td><th>" + HtmlEscape(turn["role"].asString()) +
           "</th><td>" + HtmlEscape(turn["text"].asString()) + "</td></tr>\n";
    }
    h += "</table>\n";
  }
  h += "</body></html>\n";
  return h;
}

}  // namespace parley::app
