#include <json/reader.h>
#include <json/writer.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>

#include "core/core.h"

namespace parley::core {

std::optional<LogLevel> ParseLogLevel(std::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn" || name == "warning") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  return std::nullopt;
}

std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

std::string FormatUtc(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}

int64_t UnixMillis(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

namespace {

// Length of the longest prefix of `s` that is whole, valid UTF-8 (RFC 3629). Hand-written: it is
// twenty lines, and the repair needs the position of the first bad byte, which validators
// (simdjson's) do not report.
size_t ValidUtf8Length(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
      ++i;
      continue;
    }
    size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      n = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      n = 3;
      if (b0 == 0xE0) lo = 0xA0;  // overlong
      if (b0 == 0xED) hi = 0x9F;  // surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      n = 4;
      if (b0 == 0xF0) lo = 0x90;  // overlong
      if (b0 == 0xF4) hi = 0x8F;  // past U+10FFFF
    } else {
      return i;
    }
    if (i + n > s.size()) return i;
    const auto b1 = static_cast<unsigned char>(s[i + 1]);
    if (b1 < lo || b1 > hi) return i;
    for (size_t k = 2; k < n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (b < 0x80 || b > 0xBF) return i;
    }
    i += n;
  }
  return i;
}

}  // namespace

std::string ToJson(const Json::Value& v) {
  Json::StreamWriterBuilder builder;
  builder["indentation"] = "";
  builder["emitUTF8"] = true;
  std::string out = Json::writeString(builder, v);
  // jsoncpp copies string bytes through as they are; JSON's own syntax is ASCII, so repairing the
  // whole text only touches the insides of strings.
  if (ValidUtf8Length(out) != out.size()) out = ReplaceInvalidUtf8(out);
  return out;
}

std::string ReplaceInvalidUtf8(std::string_view text) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    const size_t good = ValidUtf8Length(text);
    out.append(text.substr(0, good));
    text.remove_prefix(good);
    if (text.empty()) break;
    out.append(kReplacement);
    text.remove_prefix(1);  // one bad byte at a time: the next may start a valid sequence
  }
  return out;
}

std::optional<Json::Value> ParseJson(std::string_view text, std::string* error) {
  Json::CharReaderBuilder builder;
  builder["collectComments"] = false;
  builder["rejectDupKeys"] = true;
  builder["stackLimit"] = 64;  // bounds recursion on hostile input
  builder["failIfExtra"] = true;
  builder["allowSpecialFloats"] = false;
  const std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
  Json::Value root;
  std::string errs;
  bool ok = false;
  try {
    ok = reader->parse(text.data(), text.data() + text.size(), &root, &errs);
  } catch (const std::exception& e) {  // jsoncpp throws past its stackLimit
    errs = e.what();
  }
  if (!ok) {
    if (error != nullptr) {
      // jsoncpp prefixes "* Line 1, Column 2\n  "; keep it on one line.
      for (char& c : errs) {
        if (c == '\n') c = ' ';
      }
      while (!errs.empty() && errs.back() == ' ') errs.pop_back();
      *error = errs;
    }
    return std::nullopt;
  }
  return root;
}

namespace {

// One write(2) per line so lines from several threads or processes sharing stderr stay whole.
void WriteToStderr(std::string_view line) {
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) return;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace

std::string FormatLogLine(LogLevel level, std::string_view msg, LogFields fields) {
  Json::Value line(Json::objectValue);
  line["ts"] = FormatUtc(std::chrono::system_clock::now());
  line["level"] = std::string(LogLevelName(level));
  line["msg"] = std::string(msg);
  for (const auto& [key, value] : fields) line[std::string(key)] = value;
  std::string text = ToJson(line);
  text.push_back('\n');
  return text;
}

void WriteStderrLogLine(LogLevel level, std::string_view msg, LogFields fields) {
  WriteToStderr(FormatLogLine(level, msg, fields));
}

Logger::Logger(LogLevel level, std::function<void(std::string_view)> sink)
    : level_(level), sink_(std::move(sink)) {
  if (!sink_) sink_ = &WriteToStderr;
}

void Logger::Log(LogLevel level, std::string_view msg, LogFields fields) {
  if (!Enabled(level)) return;
  const std::string text = FormatLogLine(level, msg, fields);
  const std::lock_guard lock(mu_);
  sink_(text);
}

}  // namespace parley::core
