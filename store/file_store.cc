#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "store/internal.h"

namespace parley::store {
namespace {

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

bool FsyncDirectory(const std::string& dir, std::string* error) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    *error = Errno("open " + dir);
    return false;
  }
  const bool ok = ::fsync(fd) == 0;
  if (!ok) *error = Errno("fsync " + dir);
  ::close(fd);
  return ok;
}

// Parses "2026-11-22T04:05:08.938Z" (the forms Parley and libbson write).
int64_t ParseRfc3339Millis(const std::string& s) {
  std::tm tm{};
  const char* rest = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest == nullptr) return 0;
  int64_t ms = static_cast<int64_t>(timegm(&tm)) * 1000;
  if (*rest == '.') {
    ++rest;
    int digits = 0;
    int frac = 0;
    while (*rest >= '0' && *rest <= '9') {
      if (digits < 3) {
        frac = frac * 10 + (*rest - '0');
        ++digits;
      }
      ++rest;
    }
    while (digits < 3) {
      frac *= 10;
      ++digits;
    }
    ms += frac;
  }
  return ms;
}

}  // namespace

std::string_view CollectionName(Collection c) {
  return c == Collection::kSessions ? "sessions" : "reports";
}

bool IsValidId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char ch : id) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_') return false;
  }
  return true;
}

Json::Value DateValue(int64_t unix_ms) {
  Json::Value v(Json::objectValue);
  const auto tp = std::chrono::system_clock::time_point(std::chrono::milliseconds(unix_ms));
  v["$date"] = core::FormatUtc(tp);
  return v;
}

int64_t DateMillis(const Json::Value& v) {
  if (!v.isObject() || !v.isMember("$date")) return 0;
  const Json::Value& d = v["$date"];
  if (d.isString()) return ParseRfc3339Millis(d.asString());
  if (d.isNumeric()) return d.asInt64();
  if (d.isObject() && d["$numberLong"].isString()) return std::stoll(d["$numberLong"].asString());
  return 0;
}

Json::Value Project(const Json::Value& doc, const std::vector<std::string>& fields) {
  if (fields.empty() || !doc.isObject()) return doc;
  Json::Value out(Json::objectValue);
  for (const char* key : {"session_id", "user_id", "created_at"})
    if (doc.isMember(key)) out[key] = doc[key];
  for (const auto& f : fields)
    if (doc.isMember(f)) out[f] = doc[f];
  return out;
}

Json::Value ToPublicJson(const Json::Value& v) {
  if (v.isObject()) {
    if (v.size() == 1 && v.isMember("$date")) {
      const int64_t ms = DateMillis(v);
      return core::FormatUtc(std::chrono::system_clock::time_point(std::chrono::milliseconds(ms)));
    }
    if (v.size() == 1 && v.isMember("$numberLong") && v["$numberLong"].isString())
      return Json::Int64(std::stoll(v["$numberLong"].asString()));
    Json::Value out(Json::objectValue);
    for (const auto& key : v.getMemberNames()) {
      if (key == "_id") continue;
      out[key] = ToPublicJson(v[key]);
    }
    return out;
  }
  if (v.isArray()) {
    Json::Value out(Json::arrayValue);
    for (const auto& e : v) out.append(ToPublicJson(e));
    return out;
  }
  return v;
}

std::string CheckDocument(const Json::Value& doc) {
  if (!doc.isObject()) return "document must be a JSON object";
  if (!doc["session_id"].isString() || !IsValidId(doc["session_id"].asString()))
    return "document needs a valid string session_id";
  if (!doc["user_id"].isString() || doc["user_id"].asString().empty())
    return "document needs a string user_id";
  if (DateMillis(doc["created_at"]) == 0) return "document needs a created_at date";
  return {};
}

bool AtomicWriteFile(const std::string& path, std::string_view data, std::string* error) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::string tmp = path + ".tmp-" + std::to_string(rng());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (fd < 0) {
    *error = Errno("create " + tmp);
    return false;
  }
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = Errno("write " + tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return false;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    *error = Errno("fsync " + tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return false;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    *error = Errno("rename " + tmp);
    ::unlink(tmp.c_str());
    return false;
  }
  return FsyncDirectory(dir, error);
}

std::optional<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool RemoveFileDurably(const std::string& path, std::string* error) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    *error = Errno("unlink " + path);
    return false;
  }
  const auto slash = path.rfind('/');
  return FsyncDirectory(slash == std::string::npos ? "." : path.substr(0, slash), error);
}

// ---- FileStore ----------------------------------------------------------------------------------

FileStore::FileStore(std::string root, core::Logger& log, core::Metrics& metrics)
    : root_(std::move(root)),
      log_(log),
      writes_(metrics.GetCounter("parley_store_writes_total", "Documents written by back end",
                                 {{"backend", "file"}})),
      failures_(metrics.GetCounter("parley_store_write_failures_total",
                                   "Writes that failed by back end", {{"backend", "file"}})) {}

std::unique_ptr<FileStore> FileStore::Open(const std::string& root, core::Logger& log,
                                           core::Metrics& metrics, std::string* error) {
  std::unique_ptr<FileStore> s(new FileStore(root, log, metrics));
  for (Collection c : {Collection::kSessions, Collection::kReports}) {
    const std::string dir = root + "/" + std::string(CollectionName(c));
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      *error = "cannot create " + dir + ": " + ec.message();
      return nullptr;
    }
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.find(".tmp-") != std::string::npos) {  // a write a crash interrupted
        std::filesystem::remove(entry.path(), ec);
        continue;
      }
      if (entry.path().extension() != ".json") continue;
      const auto text = ReadWholeFile(entry.path().string());
      const auto doc = text ? core::ParseJson(*text) : std::nullopt;
      if (!doc || !CheckDocument(*doc).empty()) {
        log.Error("store: unreadable document left in place", {{"path", entry.path().string()}});
        continue;
      }
      s->IndexPut(c, (*doc)["session_id"].asString(),
                  {(*doc)["user_id"].asString(), DateMillis((*doc)["created_at"])});
    }
    if (ec) {
      *error = "cannot read " + dir + ": " + ec.message();
      return nullptr;
    }
  }
  return s;
}

std::string FileStore::PathFor(Collection c, const std::string& id) const {
  return root_ + "/" + std::string(CollectionName(c)) + "/" + id + ".json";
}

void FileStore::IndexPut(Collection c, const std::string& id, Entry e) {
  Index& idx = index_[static_cast<int>(c)];
  IndexErase(c, id);
  idx.by_user[e.user_id].emplace(e.created_ms, id);
  idx.by_id[id] = std::move(e);
}

void FileStore::IndexErase(Collection c, const std::string& id) {
  Index& idx = index_[static_cast<int>(c)];
  const auto it = idx.by_id.find(id);
  if (it == idx.by_id.end()) return;
  auto u = idx.by_user.find(it->second.user_id);
  if (u != idx.by_user.end()) {
    u->second.erase({it->second.created_ms, id});
    if (u->second.empty()) idx.by_user.erase(u);
  }
  idx.by_id.erase(it);
}

bool FileStore::Put(Collection c, const Json::Value& doc, std::string* error) {
  if (const std::string why = CheckDocument(doc); !why.empty()) {
    *error = why;
    failures_.Add();
    return false;
  }
  const std::string id = doc["session_id"].asString();
  const std::lock_guard lock(mu_);
  if (!AtomicWriteFile(PathFor(c, id), core::ToJson(doc), error)) {
    failures_.Add();
    log_.Error("store: file write failed", {{"session_id", id}, {"error", *error}});
    return false;
  }
  IndexPut(c, id, {doc["user_id"].asString(), DateMillis(doc["created_at"])});
  writes_.Add();
  return true;
}

ReadStatus FileStore::Get(Collection c, const std::string& session_id, Json::Value* doc,
                          std::string* error) {
  if (!IsValidId(session_id)) return ReadStatus::kNotFound;
  const auto text = ReadWholeFile(PathFor(c, session_id));
  if (!text) return ReadStatus::kNotFound;
  auto parsed = core::ParseJson(*text, error);
  if (!parsed) return ReadStatus::kUnavailable;
  *doc = std::move(*parsed);
  return ReadStatus::kOk;
}

ReadStatus FileStore::ListByUser(Collection c, const std::string& user_id, uint64_t offset,
                                 uint64_t limit, const std::vector<std::string>& fields, Page* page,
                                 std::string* error) {
  std::vector<std::string> ids;
  {
    const std::lock_guard lock(mu_);
    const Index& idx = index_[static_cast<int>(c)];
    const auto u = idx.by_user.find(user_id);
    page->total = u == idx.by_user.end() ? 0 : u->second.size();
    if (u != idx.by_user.end()) {
      uint64_t i = 0;
      for (auto it = u->second.rbegin(); it != u->second.rend() && ids.size() < limit; ++it, ++i) {
        if (i >= offset) ids.push_back(it->second);
      }
    }
  }
  page->docs.clear();
  for (const auto& id : ids) {
    Json::Value d;
    if (Get(c, id, &d, error) == ReadStatus::kOk) page->docs.push_back(Project(d, fields));
  }
  return ReadStatus::kOk;
}

bool FileStore::Delete(Collection c, const std::string& session_id, std::string* error) {
  if (!IsValidId(session_id)) return true;
  const std::lock_guard lock(mu_);
  if (!RemoveFileDurably(PathFor(c, session_id), error)) return false;
  IndexErase(c, session_id);
  return true;
}

Json::Value FileStore::Health() {
  Json::Value h(Json::objectValue);
  h["status"] = "ok";
  h["kind"] = "file";
  h["persistent"] = true;
  h["path"] = root_;
  h["spool_depth"] = 0;
  return h;
}

}  // namespace parley::store
