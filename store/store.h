// Parley store: sessions and reports, in MongoDB (libmongoc) or, when no MongoDB is
// configured, in an embedded document store on local disk. Nothing is lost: a write MongoDB
// does not take is spooled on disk (atomically) and replayed in order once MongoDB answers.
//
// Documents are JSON objects in MongoDB's relaxed Extended JSON, so BSON types stay exact:
// a double is written with a fraction (1.0), integers stay integers, and times are
// {"$date": "2026-11-22T04:05:08.938Z"} (BSON dates in MongoDB). Every document carries a
// string "session_id" (the key: writes are upserts by it), a string "user_id" and a
// "created_at" date (listing order).
//
// Thread safety: all methods may be called from any thread; they block (disk, network), so
// call them from worker threads, never from the WebSocket service thread.
#pragma once

#include <json/value.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/core.h"

namespace parley::store {

struct StoreConfig {
  std::string mongodb_uri;  // empty: embedded file store under data_dir/store
  std::string database = "parley";
  std::string data_dir = "./data";
  std::string write_concern = "majority";  // "majority" or a number of nodes (w)
  int timeout_ms = 3000;                   // server selection, connect and socket timeouts
  int retries = 2;                         // extra attempts on transient errors before spooling
  int replay_interval_ms = 1000;           // how often the spool is retried while MongoDB is away
  std::string Validate() const;
  void AddFlags(core::FlagSet& flags);  // data_dir is the application's
};

enum class Collection { kSessions, kReports };
std::string_view CollectionName(Collection c);

enum class ReadStatus { kOk, kNotFound, kUnavailable };

struct Page {
  std::vector<Json::Value> docs;  // newest first
  uint64_t total = 0;             // all of the user's documents
};

class Store {
 public:
  virtual ~Store() = default;

  // Opens the configured back end (creating indexes, directories) and, for MongoDB, starts
  // the spool replayer. nullptr with `error` when the data directory is unusable or the
  // configuration is wrong; an unreachable MongoDB is NOT an error (writes spool).
  static std::unique_ptr<Store> Open(const StoreConfig& config, core::Logger& log,
                                     core::Metrics& metrics, std::string* error);

  // Upsert by doc["session_id"]. False only when not even the local disk took it.
  virtual bool Put(Collection c, const Json::Value& doc, std::string* error) = 0;
  virtual ReadStatus Get(Collection c, const std::string& session_id, Json::Value* doc,
                         std::string* error) = 0;
  // The user's documents newest first. A non-empty `fields` keeps only those top-level fields
  // of each (plus "session_id", "user_id" and "created_at"), so a listing of reports need not
  // carry their timelines.
  virtual ReadStatus ListByUser(Collection c, const std::string& user_id, uint64_t offset,
                                uint64_t limit, const std::vector<std::string>& fields, Page* page,
                                std::string* error) = 0;
  ReadStatus ListByUser(Collection c, const std::string& user_id, uint64_t offset, uint64_t limit,
                        Page* page, std::string* error) {
    return ListByUser(c, user_id, offset, limit, {}, page, error);
  }
  // Removes the document from the store and from the spool. Deleting nothing is success.
  virtual bool Delete(Collection c, const std::string& session_id, std::string* error) = 0;

  // {"status": "ok"|"degraded", "kind": "mongodb"|"file", "spool_depth": n, ...}
  virtual Json::Value Health() = 0;
  // Tries to replay the spool now; returns how many entries remain (tests, shutdown).
  virtual size_t ReplayNow() = 0;
  // Stops background work. Idempotent; also done by the destructor.
  virtual void Close() = 0;
};

// Checkpoints of live sessions on local disk (<data_dir>/checkpoints/<session_id>.json, each
// written atomically and fsynced): what a crash of this process leaves of them until their
// reports are stored. Apart from the back end, so checkpoints go on while MongoDB is away, and
// a restart with the same data directory finds them. Thread-safe; blocks on the disk (workers).
class CheckpointLog {
 public:
  // nullptr with `error` when the directory cannot be made.
  static std::unique_ptr<CheckpointLog> Open(const std::string& data_dir, std::string* error);
  // Replaces the session's checkpoint. False with `error` when the disk refused it, or when the
  // session was closed (a late checkpoint never outlives the report it stands in for).
  bool Write(const std::string& session_id, const Json::Value& checkpoint, std::string* error);
  // The session's report is stored: its checkpoint goes, and later writes for it are refused.
  bool Close(const std::string& session_id, std::string* error);
  // Every checkpoint on disk (left by a process that did not end its sessions), with its
  // session id; the files that cannot be read are named in `unreadable` and left alone.
  std::vector<std::pair<std::string, Json::Value>> LoadAll(std::vector<std::string>* unreadable);
  size_t written() const;  // checkpoints written by this process

 private:
  explicit CheckpointLog(std::string dir) : dir_(std::move(dir)) {}
  std::string PathFor(const std::string& session_id) const;
  std::string dir_;
  mutable std::mutex mu_;
  std::set<std::string> closed_;  // bounded: the oldest go first
  std::deque<std::string> closed_order_;
  size_t written_ = 0;
};

// Helpers for the relaxed Extended JSON document model.
Json::Value DateValue(int64_t unix_ms);
// {"$date": ...} anywhere in `v` becomes its RFC 3339 string; "_id" is dropped. For API output.
Json::Value ToPublicJson(const Json::Value& v);
// `doc` with only `fields` (and the key fields above); all of it when `fields` is empty.
Json::Value Project(const Json::Value& doc, const std::vector<std::string>& fields);
// A session id that is safe as a file name and a query value (letters, digits, '-', '_').
bool IsValidId(std::string_view id);

}  // namespace parley::store
