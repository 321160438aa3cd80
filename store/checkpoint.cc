// Crash checkpoints of live sessions (see CheckpointLog in store.h).
#include <filesystem>

#include "store/internal.h"

namespace parley::store {
namespace {

constexpr size_t kMaxClosedIds = 100'000;
constexpr std::string_view kSuffix = ".json";

}  // namespace

std::unique_ptr<CheckpointLog> CheckpointLog::Open(const std::string& data_dir,
                                                   std::string* error) {
  const std::string dir = data_dir + "/checkpoints";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    *error = "cannot create " + dir + ": " + ec.message();
    return nullptr;
  }
  // The temp file of a write a crash interrupted (this process has written nothing yet): the
  // checkpoint before it is whole beside it, the half-written one is of no use.
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > kSuffix.size() &&
        name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0)
      continue;
    std::error_code ignored;
    std::filesystem::remove(entry.path(), ignored);
  }
  return std::unique_ptr<CheckpointLog>(new CheckpointLog(dir));
}

std::string CheckpointLog::PathFor(const std::string& session_id) const {
  return dir_ + "/" + session_id + std::string(kSuffix);
}

bool CheckpointLog::Write(const std::string& session_id, const Json::Value& checkpoint,
                          std::string* error) {
  if (!IsValidId(session_id)) {
    *error = "not a session id";
    return false;
  }
  const std::string text = core::ToJson(checkpoint);
  // Held across the write: a Close() of this session waits for it, then removes what it wrote.
  const std::lock_guard lock(mu_);
  if (closed_.count(session_id) != 0) {
    *error = "the session's report is stored already";
    return false;
  }
  if (!AtomicWriteFile(PathFor(session_id), text, error)) return false;
  ++written_;
  return true;
}

bool CheckpointLog::Close(const std::string& session_id, std::string* error) {
  if (!IsValidId(session_id)) return true;
  const std::lock_guard lock(mu_);
  if (closed_.insert(session_id).second) {
    closed_order_.push_back(session_id);
    if (closed_order_.size() > kMaxClosedIds) {
      closed_.erase(closed_order_.front());
      closed_order_.pop_front();
    }
  }
  std::error_code ec;
  if (!std::filesystem::exists(PathFor(session_id), ec)) return true;
  return RemoveFileDurably(PathFor(session_id), error);
}

std::vector<std::pair<std::string, Json::Value>> CheckpointLog::LoadAll(
    std::vector<std::string>* unreadable) {
  std::vector<std::pair<std::string, Json::Value>> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= kSuffix.size() ||
        name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0)
      continue;  // an interrupted write's temp file
    const std::string id = name.substr(0, name.size() - kSuffix.size());
    const auto text = ReadWholeFile(entry.path().string());
    auto doc = text ? core::ParseJson(*text) : std::nullopt;
    if (!IsValidId(id) || !doc || !doc->isObject()) {
      unreadable->push_back(entry.path().string());
      continue;
    }
    out.emplace_back(id, std::move(*doc));
  }
  return out;
}

size_t CheckpointLog::written() const {
  const std::lock_guard lock(mu_);
  return written_;
}

}  // namespace parley::store
