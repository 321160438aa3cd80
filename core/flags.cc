#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "core/core.h"

namespace parley::core {
namespace {

std::string Trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t");
  if (first == std::string::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

std::string FormatDouble(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

FlagSet::Flag FlagSet::Make(const std::string& name, const std::string& help,
                            const std::string& env) {
  Flag f;
  f.name = name;
  f.env = env;
  f.help = help;
  f.group = group_;
  return f;
}

void FlagSet::Add(const std::string& name, int* target, const std::string& help,
                  const std::string& env) {
  Flag f = Make(name, help, env);
  f.get = [target] { return std::to_string(*target); };
  f.set = [target, name](const std::string& text) -> std::string {
    const std::string t = Trim(text);
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(t.c_str(), &end, 10);
    if (t.empty() || *end != '\0' || errno != 0 || v < std::numeric_limits<int>::min() ||
        v > std::numeric_limits<int>::max())
      return name + ": '" + text + "' is not an integer";
    *target = static_cast<int>(v);
    return {};
  };
  f.type = "INT";
  flags_.push_back(std::move(f));
}

void FlagSet::Add(const std::string& name, double* target, const std::string& help,
                  const std::string& env) {
  Flag f = Make(name, help, env);
  f.get = [target] { return FormatDouble(*target); };
  f.set = [target, name](const std::string& text) -> std::string {
    const std::string t = Trim(text);
    char* end = nullptr;
    const double v = std::strtod(t.c_str(), &end);
    if (t.empty() || *end != '\0' || !std::isfinite(v))
      return name + ": '" + text + "' is not a number";
    *target = v;
    return {};
  };
  f.type = "NUMBER";
  flags_.push_back(std::move(f));
}

void FlagSet::Add(const std::string& name, bool* target, const std::string& help,
                  const std::string& env) {
  Flag f = Make(name, help, env);
  f.get = [target] { return *target ? std::string("true") : std::string("false"); };
  f.set = [target, name](const std::string& text) -> std::string {
    std::string t = Trim(text);
    for (auto& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (t == "true" || t == "1" || t == "yes" || t == "on") {
      *target = true;
    } else if (t == "false" || t == "0" || t == "no" || t == "off") {
      *target = false;
    } else {
      return name + ": '" + text + "' is not true or false";
    }
    return {};
  };
  f.type = "BOOL";
  flags_.push_back(std::move(f));
}

void FlagSet::Add(const std::string& name, std::string* target, const std::string& help,
                  const std::string& env, bool secret) {
  Flag f = Make(name, help, env);
  f.secret = secret;
  f.has_default = !target->empty();
  f.get = [target] { return *target; };
  f.set = [target](const std::string& text) -> std::string {
    *target = text;
    return {};
  };
  flags_.push_back(std::move(f));
}

void FlagSet::Add(const std::string& name, std::vector<std::string>* target,
                  const std::string& help, const std::string& env) {
  Flag f = Make(name, help, env);
  f.has_default = !target->empty();
  f.get = [target] {
    std::string out;
    for (const auto& v : *target) out += (out.empty() ? "" : ",") + v;
    return out;
  };
  f.set = [target](const std::string& text) -> std::string {
    target->clear();
    size_t start = 0;
    while (start <= text.size()) {
      size_t end = text.find(',', start);
      if (end == std::string::npos) end = text.size();
      std::string item = Trim(text.substr(start, end - start));
      while (item.size() > 1 && item.back() == '/') item.pop_back();  // "http://a/" == "http://a"
      if (!item.empty()) target->push_back(item);
      start = end + 1;
    }
    return {};
  };
  f.type = "LIST";
  flags_.push_back(std::move(f));
}

void FlagSet::AddKiB(const std::string& name, size_t* bytes, const std::string& help,
                     const std::string& env) {
  Flag f = Make(name, help, env);
  f.get = [bytes] { return std::to_string(*bytes / 1024); };
  f.set = [bytes, name](const std::string& text) -> std::string {
    const std::string t = Trim(text);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(t.c_str(), &end, 10);
    if (t.empty() || *end != '\0' || errno != 0 || v < 0 || v > (1LL << 40))
      return name + ": '" + text + "' is not a size in KiB";
    *bytes = static_cast<size_t>(v) * 1024;
    return {};
  };
  f.type = "KIB";
  flags_.push_back(std::move(f));
}

void FlagSet::AddCustom(Flag flag) {
  if (flag.group.empty()) flag.group = group_;
  flags_.push_back(std::move(flag));
}

Json::Value FlagSet::Describe() const {
  Json::Value out(Json::objectValue);
  for (const auto& f : flags_) {
    const std::string key = f.name.substr(f.name.find_first_not_of('-'));
    const std::string value = f.get();
    out[key] = f.secret && !value.empty() ? "***" : value;
  }
  return out;
}

}  // namespace parley::core
