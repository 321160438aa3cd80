// Internal to store/: the file back end, the spool and the MongoDB back end.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>

#include "store/store.h"

namespace parley::store {

// Writes `data` to `path` so that a crash leaves either the old file or the new one: a temp
// file in the same directory, fsync, rename over the target, fsync of the directory.
bool AtomicWriteFile(const std::string& path, std::string_view data, std::string* error);
std::optional<std::string> ReadWholeFile(const std::string& path);
bool RemoveFileDurably(const std::string& path, std::string* error);
// Milliseconds of a {"$date": ...} value (RFC 3339 string, number or {"$numberLong"}); 0 if none.
int64_t DateMillis(const Json::Value& v);
// Checks the fields every document needs; empty when fine.
std::string CheckDocument(const Json::Value& doc);

// One JSON file per document under <root>/<collection>/<session_id>.json, with an in-memory
// index of (user, created_at) for listing.
class FileStore final : public Store {
 public:
  static std::unique_ptr<FileStore> Open(const std::string& root, core::Logger& log,
                                         core::Metrics& metrics, std::string* error);

  bool Put(Collection c, const Json::Value& doc, std::string* error) override;
  ReadStatus Get(Collection c, const std::string& session_id, Json::Value* doc,
                 std::string* error) override;
  using Store::ListByUser;
  ReadStatus ListByUser(Collection c, const std::string& user_id, uint64_t offset, uint64_t limit,
                        const std::vector<std::string>& fields, Page* page,
                        std::string* error) override;
  bool Delete(Collection c, const std::string& session_id, std::string* error) override;
  Json::Value Health() override;
  size_t ReplayNow() override { return 0; }
  void Close() override {}

 private:
  FileStore(std::string root, core::Logger& log, core::Metrics& metrics);
  struct Entry {
    std::string user_id;
    int64_t created_ms = 0;
  };
  struct Index {
    std::unordered_map<std::string, Entry> by_id;
    // user -> {(-created_ms, -id order via reverse iteration)}
    std::map<std::string, std::set<std::pair<int64_t, std::string>>> by_user;
  };
  std::string PathFor(Collection c, const std::string& id) const;
  void IndexPut(Collection c, const std::string& id, Entry e);
  void IndexErase(Collection c, const std::string& id);

  std::string root_;
  core::Logger& log_;
  core::Counter& writes_;
  core::Counter& failures_;
  std::mutex mu_;
  Index index_[2];
};

// Ordered on-disk queue of writes MongoDB has not taken yet: <dir>/<seq>.json, each
// {"op": "put"|"delete", "collection", "session_id", "doc"}.
class Spool {
 public:
  struct Entry {
    uint64_t seq = 0;
    std::string op;
    Collection collection = Collection::kSessions;
    std::string session_id;
    std::string user_id;
    Json::Value doc;
  };

  explicit Spool(std::string dir);
  // Creates the directory and loads what a previous process left behind.
  bool Open(core::Logger& log, std::string* error);
  bool Append(const std::string& op, Collection c, const std::string& session_id,
              const Json::Value& doc, std::string* error);
  std::optional<Entry> Front();
  bool Remove(uint64_t seq, std::string* error);
  // Moves an entry MongoDB refuses for good out of the queue (kept under rejected/).
  bool Reject(uint64_t seq, std::string* error);
  size_t Depth();
  // The newest pending entry for a document.
  std::optional<Entry> Latest(Collection c, const std::string& session_id);
  std::vector<Entry> PendingForUser(Collection c, const std::string& user_id);
  // Drops every pending entry for a document (it is being deleted).
  bool DropKey(Collection c, const std::string& session_id, std::string* error);

 private:
  std::optional<Entry> Load(uint64_t seq);
  std::string PathFor(uint64_t seq) const;

  std::string dir_;
  std::mutex mu_;
  uint64_t next_seq_ = 1;
  // seq -> (collection, session_id, user_id, op) headers; documents stay on disk.
  std::map<uint64_t, Entry> headers_;
};

}  // namespace parley::store
