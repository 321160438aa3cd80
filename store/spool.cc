#include <cinttypes>
#include <cstdio>
#include <filesystem>

#include "store/internal.h"

namespace parley::store {
namespace {

std::optional<Collection> ParseCollection(const std::string& name) {
  if (name == "sessions") return Collection::kSessions;
  if (name == "reports") return Collection::kReports;
  return std::nullopt;
}

}  // namespace

Spool::Spool(std::string dir) : dir_(std::move(dir)) {}

std::string Spool::PathFor(uint64_t seq) const {
  char name[32];
  std::snprintf(name, sizeof name, "%020" PRIu64 ".json", seq);
  return dir_ + "/" + name;
}

bool Spool::Open(core::Logger& log, std::string* error) {
  std::error_code ec;
  std::filesystem::create_directories(dir_ + "/rejected", ec);
  if (ec) {
    *error = "cannot create spool directory " + dir_ + ": " + ec.message();
    return false;
  }
  const std::lock_guard lock(mu_);
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file()) continue;
    if (name.find(".tmp-") != std::string::npos) {
      std::filesystem::remove(entry.path(), ec);
      continue;
    }
    if (entry.path().extension() != ".json") continue;
    uint64_t seq = 0;
    if (std::sscanf(name.c_str(), "%" SCNu64, &seq) != 1 || seq == 0) continue;
    const auto text = ReadWholeFile(entry.path().string());
    const auto v = text ? core::ParseJson(*text) : std::nullopt;
    const auto c = v ? ParseCollection((*v)["collection"].asString()) : std::nullopt;
    if (!v || !c) {
      log.Error("spool: unreadable entry kept aside", {{"path", entry.path().string()}});
      std::filesystem::rename(entry.path(), dir_ + "/rejected/" + name, ec);
      continue;
    }
    headers_[seq] = Entry{seq,
                          (*v)["op"].asString(),
                          *c,
                          (*v)["session_id"].asString(),
                          (*v)["doc"]["user_id"].asString(),
                          Json::Value()};
    next_seq_ = std::max(next_seq_, seq + 1);
  }
  if (!headers_.empty())
    log.Warn("spool: entries from an earlier run will be replayed",
             {{"depth", static_cast<Json::UInt64>(headers_.size())}});
  return !ec || (*error = "cannot read spool: " + ec.message(), false);
}

bool Spool::Append(const std::string& op, Collection c, const std::string& session_id,
                   const Json::Value& doc, std::string* error) {
  Json::Value entry(Json::objectValue);
  entry["op"] = op;
  entry["collection"] = std::string(CollectionName(c));
  entry["session_id"] = session_id;
  entry["doc"] = doc;
  const std::lock_guard lock(mu_);
  const uint64_t seq = next_seq_;
  if (!AtomicWriteFile(PathFor(seq), core::ToJson(entry), error)) return false;
  ++next_seq_;
  headers_[seq] = Entry{seq, op, c, session_id, doc["user_id"].asString(), Json::Value()};
  return true;
}

std::optional<Spool::Entry> Spool::Load(uint64_t seq) {
  // mu_ held by the caller.
  const auto it = headers_.find(seq);
  if (it == headers_.end()) return std::nullopt;
  Entry e = it->second;
  const auto text = ReadWholeFile(PathFor(seq));
  const auto v = text ? core::ParseJson(*text) : std::nullopt;
  if (v) e.doc = (*v)["doc"];
  return e;
}

std::optional<Spool::Entry> Spool::Front() {
  const std::lock_guard lock(mu_);
  if (headers_.empty()) return std::nullopt;
  return Load(headers_.begin()->first);
}

bool Spool::Remove(uint64_t seq, std::string* error) {
  const std::lock_guard lock(mu_);
  if (!RemoveFileDurably(PathFor(seq), error)) return false;
  headers_.erase(seq);
  return true;
}

bool Spool::Reject(uint64_t seq, std::string* error) {
  const std::lock_guard lock(mu_);
  const std::string from = PathFor(seq);
  const std::string to = dir_ + "/rejected/" + from.substr(from.rfind('/') + 1);
  std::error_code ec;
  std::filesystem::rename(from, to, ec);
  if (ec) {
    *error = "cannot move rejected spool entry: " + ec.message();
    return false;
  }
  headers_.erase(seq);
  return true;
}

size_t Spool::Depth() {
  const std::lock_guard lock(mu_);
  return headers_.size();
}

std::optional<Spool::Entry> Spool::Latest(Collection c, const std::string& session_id) {
  const std::lock_guard lock(mu_);
  for (auto it = headers_.rbegin(); it != headers_.rend(); ++it) {
    if (it->second.collection == c && it->second.session_id == session_id) return Load(it->first);
  }
  return std::nullopt;
}

std::vector<Spool::Entry> Spool::PendingForUser(Collection c, const std::string& user_id) {
  const std::lock_guard lock(mu_);
  std::map<std::string, uint64_t> latest;  // session_id -> newest seq
  for (const auto& [seq, e] : headers_) {
    if (e.collection == c && e.user_id == user_id) latest[e.session_id] = seq;
  }
  std::vector<Entry> out;
  for (const auto& [id, seq] : latest) {
    if (auto e = Load(seq)) out.push_back(std::move(*e));
  }
  return out;
}

bool Spool::DropKey(Collection c, const std::string& session_id, std::string* error) {
  const std::lock_guard lock(mu_);
  for (auto it = headers_.begin(); it != headers_.end();) {
    if (it->second.collection == c && it->second.session_id == session_id) {
      if (!RemoveFileDurably(PathFor(it->first), error)) return false;
      it = headers_.erase(it);
    } else {
      ++it;
    }
  }
  return true;
}

}  // namespace parley::store
