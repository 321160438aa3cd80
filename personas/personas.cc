#include "personas/personas.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/core.h"

namespace parley::personas {
namespace {

bool IsNonEmptyString(const Json::Value& v) { return v.isString() && !v.asString().empty(); }

bool IsStringArray(const Json::Value& v) {
  if (!v.isArray() || v.empty()) return false;
  for (const auto& e : v) {
    if (!IsNonEmptyString(e)) return false;
  }
  return true;
}

}  // namespace

std::string Catalog::Validate(const Json::Value& doc) {
  if (!doc.isObject()) return "persona must be a JSON object";
  for (const char* field : {"name", "occupation", "mbti", "summary", "gender", "language"}) {
    if (!IsNonEmptyString(doc[field]))
      return std::string("'") + field + "' must be a non-empty string";
  }
  if (!doc["age"].isInt() || doc["age"].asInt() < 18 || doc["age"].asInt() > 120)
    return "'age' must be an integer 18..120";
  if (doc["mbti"].asString().size() != 4) return "'mbti' must be a four-letter type";
  for (const char* field : {"personality", "hobbies"}) {
    if (!IsStringArray(doc[field]))
      return std::string("'") + field + "' must be a non-empty array of strings";
  }
  const Json::Value& levels = doc["speaking_style"]["levels"];
  if (!levels.isArray() || levels.size() < 2)
    return "'speaking_style.levels' must list at least two levels (formal to casual)";
  int previous = -1;
  for (const auto& level : levels) {
    if (!IsNonEmptyString(level["name"]) || !IsNonEmptyString(level["description"]))
      return "each speaking style level needs 'name' and 'description'";
    if (!level["min_intimacy"].isInt()) return "each speaking style level needs 'min_intimacy'";
    const int min = level["min_intimacy"].asInt();
    if (min <= previous || min < 0 || min > 100)
      return "speaking style levels must have increasing 'min_intimacy' in 0..100, starting at 0";
    if (previous == -1 && min != 0) return "the first speaking style level must start at 0";
    previous = min;
    if (!IsStringArray(level["examples"])) return "each speaking style level needs 'examples'";
  }
  const Json::Value& tts = doc["tts"];
  if (!IsNonEmptyString(tts["engine"]) || !IsNonEmptyString(tts["voice"]))
    return "'tts' must name an 'engine' and a 'voice'";
  if (!IsNonEmptyString(doc["greeting"])) return "'greeting' must be a non-empty string";
  return {};
}

std::optional<Catalog> Catalog::Load(const std::string& dir, std::string* error) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    *error = "personas directory '" + dir + "' does not exist";
    return std::nullopt;
  }
  Catalog catalog;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".json") continue;
    const std::string file = entry.path().string();
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    std::string parse_error;
    auto doc = core::ParseJson(text.str(), &parse_error);
    if (!doc) {
      *error = file + ": not valid JSON: " + parse_error;
      return std::nullopt;
    }
    if (const std::string why = Validate(*doc); !why.empty()) {
      *error = file + ": " + why;
      return std::nullopt;
    }
    Persona p{entry.path().stem().string(), std::move(*doc)};
    p.doc["id"] = p.id;
    catalog.personas_.push_back(std::move(p));
  }
  if (ec) {
    *error = "cannot read personas directory '" + dir + "': " + ec.message();
    return std::nullopt;
  }
  if (catalog.personas_.empty()) {
    *error = "no persona (*.json) in '" + dir + "'";
    return std::nullopt;
  }
  std::sort(catalog.personas_.begin(), catalog.personas_.end(),
            [](const Persona& a, const Persona& b) { return a.id < b.id; });
  return catalog;
}

const Persona* Catalog::Find(std::string_view id) const {
  for (const auto& p : personas_) {
    if (p.id == id) return &p;
  }
  return nullptr;
}

Json::Value Catalog::Summary(const Persona& p) {
  Json::Value s(Json::objectValue);
  s["id"] = p.id;
  for (const char* f : {"name", "age", "gender", "occupation", "mbti", "summary", "language"})
    s[f] = p.doc[f];
  s["tts"] = p.doc["tts"];
  return s;
}

Json::Value Catalog::StyleFor(const Persona& p, int intimacy) {
  const Json::Value& levels = p.doc["speaking_style"]["levels"];
  Json::Value chosen = levels[0];
  for (const auto& level : levels) {
    if (intimacy >= level["min_intimacy"].asInt()) chosen = level;
  }
  return chosen;
}

}  // namespace parley::personas
