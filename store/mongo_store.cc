// MongoDB back end through libmongoc, with the spool in front of it.
#include <mongoc/mongoc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <utility>

#include "store/internal.h"

namespace parley::store {
namespace {

using Clock = std::chrono::steady_clock;

// ---- RAII for libmongoc/libbson handles ---------------------------------------------------------

// Owns a heap bson_t (unique_ptr<bson_t> would drop bson_t's alignment attribute).
class BsonPtr {
 public:
  explicit BsonPtr(bson_t* b = nullptr) : b_(b) {}
  ~BsonPtr() {
    if (b_ != nullptr) bson_destroy(b_);
  }
  BsonPtr(BsonPtr&& o) noexcept : b_(std::exchange(o.b_, nullptr)) {}
  BsonPtr(const BsonPtr&) = delete;
  BsonPtr& operator=(const BsonPtr&) = delete;
  BsonPtr& operator=(BsonPtr&&) = delete;
  bson_t* get() const { return b_; }
  explicit operator bool() const { return b_ != nullptr; }

 private:
  bson_t* b_;
};
struct UriDeleter {
  void operator()(mongoc_uri_t* u) const { mongoc_uri_destroy(u); }
};
struct PoolDeleter {
  void operator()(mongoc_client_pool_t* p) const { mongoc_client_pool_destroy(p); }
};
struct CollectionDeleter {
  void operator()(mongoc_collection_t* c) const { mongoc_collection_destroy(c); }
};
using CollectionPtr = std::unique_ptr<mongoc_collection_t, CollectionDeleter>;
struct CursorDeleter {
  void operator()(mongoc_cursor_t* c) const { mongoc_cursor_destroy(c); }
};
struct WriteConcernDeleter {
  void operator()(mongoc_write_concern_t* w) const { mongoc_write_concern_destroy(w); }
};

// A client checked out of the pool for one operation.
class PooledClient {
 public:
  explicit PooledClient(mongoc_client_pool_t* pool)
      : pool_(pool), client_(mongoc_client_pool_pop(pool)) {}
  ~PooledClient() { mongoc_client_pool_push(pool_, client_); }
  PooledClient(const PooledClient&) = delete;
  PooledClient& operator=(const PooledClient&) = delete;
  mongoc_client_t* get() const { return client_; }

 private:
  mongoc_client_pool_t* pool_;
  mongoc_client_t* client_;
};

// A reply document that is always initialised and always destroyed.
struct Reply {
  bson_t doc = BSON_INITIALIZER;
  ~Reply() { bson_destroy(&doc); }
};

BsonPtr ToBson(const Json::Value& doc, std::string* error) {
  const std::string text = core::ToJson(doc);
  bson_error_t e;
  bson_t* b = bson_new_from_json(reinterpret_cast<const uint8_t*>(text.data()),
                                 static_cast<ssize_t>(text.size()), &e);
  if (b == nullptr) *error = std::string("cannot convert document to BSON: ") + e.message;
  return BsonPtr(b);
}

std::optional<Json::Value> ToJsonValue(const bson_t* b) {
  size_t len = 0;
  char* text = bson_as_relaxed_extended_json(b, &len);
  if (text == nullptr) return std::nullopt;
  auto v = core::ParseJson(std::string_view(text, len));
  bson_free(text);
  return v;
}

BsonPtr Filter(const char* key, const std::string& value) {
  return BsonPtr(BCON_NEW(key, BCON_UTF8(value.c_str())));
}

// Network trouble, an election, a shutting-down server: worth a retry and the spool.
bool IsTransient(const bson_error_t& e) {
  if (e.domain == MONGOC_ERROR_SERVER_SELECTION || e.domain == MONGOC_ERROR_STREAM) return true;
  if (e.domain == MONGOC_ERROR_CLIENT && e.code == MONGOC_ERROR_CLIENT_AUTHENTICATE) return false;
  switch (e.code) {
    case 6:      // HostUnreachable
    case 7:      // HostNotFound
    case 89:     // NetworkTimeout
    case 91:     // ShutdownInProgress
    case 189:    // PrimarySteppedDown
    case 262:    // ExceededTimeLimit
    case 9001:   // SocketException
    case 10107:  // NotWritablePrimary
    case 11600:  // InterruptedAtShutdown
    case 11602:  // InterruptedDueToReplStateChange
    case 13435:  // NotPrimaryNoSecondaryOk
    case 13436:  // NotPrimaryOrSecondary
    case 64:     // WriteConcernFailed
      return true;
    default:
      return false;
  }
}

// mongoc_init() must run once per process before any other libmongoc call.
// libmongoc's default handler prints every level, debug included, in its own format. This
// one keeps warnings and errors, as JSON lines like core::Logger's, and holds no state.
void EmitMongocLog(mongoc_log_level_t level, const char* domain, const char* message, void*) {
  if (level > MONGOC_LOG_LEVEL_WARNING) return;
  core::WriteStderrLogLine(
      level <= MONGOC_LOG_LEVEL_CRITICAL ? core::LogLevel::kError : core::LogLevel::kWarn,
      "libmongoc", {{"domain", domain}, {"detail", message}});
}

void InitMongocOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    mongoc_init();
    mongoc_log_set_handler(&EmitMongocLog, nullptr);
  });
}

}  // namespace

class MongoStore final : public Store {
 public:
  MongoStore(const StoreConfig& config, core::Logger& log, core::Metrics& metrics)
      : config_(config),
        log_(log),
        spool_(config.data_dir + "/spool"),
        writes_(metrics.GetCounter("parley_store_writes_total", "Documents written by back end",
                                   {{"backend", "mongodb"}})),
        failures_(metrics.GetCounter("parley_store_write_failures_total",
                                     "Writes that failed by back end", {{"backend", "mongodb"}})),
        retries_(metrics.GetCounter("parley_store_retries_total",
                                    "MongoDB operations retried after a transient error")),
        spooled_(metrics.GetCounter("parley_store_spooled_total",
                                    "Writes put in the on-disk spool because MongoDB failed")),
        replayed_(metrics.GetCounter("parley_store_replayed_total",
                                     "Spooled writes replayed into MongoDB")),
        rejected_(metrics.GetCounter("parley_store_rejected_total",
                                     "Spooled writes MongoDB refused for good (kept on disk)")) {
    metrics.AddGaugeCallback("parley_store_spool_depth", "Writes waiting in the spool", {},
                             [this] { return static_cast<double>(spool_.Depth()); });
    metrics.AddGaugeCallback("parley_store_mongodb_up",
                             "1 when the last MongoDB operation succeeded", {},
                             [this] { return healthy_.load() ? 1.0 : 0.0; });
  }

  ~MongoStore() override { Close(); }

  bool Init(std::string* error) {
    InitMongocOnce();
    bson_error_t e;
    std::unique_ptr<mongoc_uri_t, UriDeleter> uri(
        mongoc_uri_new_with_error(config_.mongodb_uri.c_str(), &e));
    if (!uri) {
      *error = std::string("MONGODB_URI is not valid: ") + e.message;
      return false;
    }
    // Fail fast and spool rather than hang for libmongoc's 30 s default.
    for (const char* opt : {MONGOC_URI_SERVERSELECTIONTIMEOUTMS, MONGOC_URI_CONNECTTIMEOUTMS,
                            MONGOC_URI_SOCKETTIMEOUTMS}) {
      if (!mongoc_uri_has_option(uri.get(), opt))
        mongoc_uri_set_option_as_int32(uri.get(), opt, config_.timeout_ms);
    }
    if (!mongoc_uri_has_option(uri.get(), MONGOC_URI_APPNAME))
      mongoc_uri_set_appname(uri.get(), "parley");
    pool_.reset(mongoc_client_pool_new(uri.get()));
    if (!pool_) {
      *error = "cannot create the MongoDB client pool";
      return false;
    }
    mongoc_client_pool_set_error_api(pool_.get(), MONGOC_ERROR_API_VERSION_2);
    write_concern_.reset(mongoc_write_concern_new());
    if (config_.write_concern == "majority") {
      mongoc_write_concern_set_wmajority(write_concern_.get(), config_.timeout_ms);
    } else {
      mongoc_write_concern_set_w(write_concern_.get(), std::stoi(config_.write_concern));
      mongoc_write_concern_set_wtimeout_int64(write_concern_.get(), config_.timeout_ms);
    }
    if (!spool_.Open(log_, error)) return false;
    std::string why;
    healthy_ = Ping(&why) && EnsureIndexes(&why);
    if (!healthy_) {
      log_.Warn("MongoDB is not reachable yet: writes go to the spool until it answers",
                {{"error", why}});
    } else {
      log_.Info("MongoDB connected", {{"database", config_.database}});
    }
    replayer_ = std::thread([this] { ReplayLoop(); });
    return true;
  }

  bool Put(Collection c, const Json::Value& doc, std::string* error) override {
    if (const std::string why = CheckDocument(doc); !why.empty()) {
      *error = why;
      return false;
    }
    return Write("put", c, doc["session_id"].asString(), doc, error);
  }

  bool Delete(Collection c, const std::string& session_id, std::string* error) override {
    if (!IsValidId(session_id)) return true;
    // Earlier pending writes of this document must never resurrect it.
    {
      const std::lock_guard lock(write_mu_);
      if (!spool_.DropKey(c, session_id, error)) return false;
    }
    return Write("delete", c, session_id, Json::Value(Json::objectValue), error);
  }

  ReadStatus Get(Collection c, const std::string& session_id, Json::Value* doc,
                 std::string* error) override {
    if (!IsValidId(session_id)) return ReadStatus::kNotFound;
    if (auto pending = spool_.Latest(c, session_id)) {
      if (pending->op == "delete") return ReadStatus::kNotFound;
      *doc = std::move(pending->doc);
      return ReadStatus::kOk;
    }
    PooledClient client(pool_.get());
    CollectionPtr coll(Coll(client, c));
    const BsonPtr filter = Filter("session_id", session_id);
    const BsonPtr opts(BCON_NEW("limit", BCON_INT64(1)));
    std::unique_ptr<mongoc_cursor_t, CursorDeleter> cursor(
        mongoc_collection_find_with_opts(coll.get(), filter.get(), opts.get(), nullptr));
    const bson_t* found = nullptr;
    const bool have = mongoc_cursor_next(cursor.get(), &found);
    bson_error_t e;
    if (!have && mongoc_cursor_error(cursor.get(), &e)) {
      Failed(e);
      *error = e.message;
      return ReadStatus::kUnavailable;
    }
    if (!have) return ReadStatus::kNotFound;
    auto v = ToJsonValue(found);
    if (!v) return ReadStatus::kUnavailable;
    *doc = std::move(*v);
    return ReadStatus::kOk;
  }

  using Store::ListByUser;
  ReadStatus ListByUser(Collection c, const std::string& user_id, uint64_t offset, uint64_t limit,
                        const std::vector<std::string>& fields, Page* page,
                        std::string* error) override {
    // Pending spooled writes for this user are merged in, so a page never hides a write.
    const auto pending = spool_.PendingForUser(c, user_id);
    PooledClient client(pool_.get());
    CollectionPtr coll(Coll(client, c));
    const BsonPtr filter = Filter("user_id", user_id);
    bson_error_t e;
    const int64_t total =
        mongoc_collection_count_documents(coll.get(), filter.get(), nullptr, nullptr, nullptr, &e);
    if (total < 0) {
      Failed(e);
      *error = e.message;
      return ReadStatus::kUnavailable;
    }
    const int64_t want = static_cast<int64_t>(offset + limit + pending.size());
    const BsonPtr opts(BCON_NEW("sort", "{", "created_at", BCON_INT32(-1), "session_id",
                                BCON_INT32(-1), "}", "limit", BCON_INT64(want)));
    if (!fields.empty()) {  // MongoDB leaves the rest on the server
      bson_t projection;
      bson_append_document_begin(opts.get(), "projection", -1, &projection);
      for (const char* key : {"session_id", "user_id", "created_at"})
        BSON_APPEND_INT32(&projection, key, 1);
      for (const auto& f : fields)
        if (f != "session_id" && f != "user_id" && f != "created_at")
          BSON_APPEND_INT32(&projection, f.c_str(), 1);
      bson_append_document_end(opts.get(), &projection);
    }
    std::unique_ptr<mongoc_cursor_t, CursorDeleter> cursor(
        mongoc_collection_find_with_opts(coll.get(), filter.get(), opts.get(), nullptr));
    std::vector<Json::Value> docs;
    const bson_t* d = nullptr;
    while (mongoc_cursor_next(cursor.get(), &d)) {
      if (auto v = ToJsonValue(d)) docs.push_back(std::move(*v));
    }
    if (mongoc_cursor_error(cursor.get(), &e)) {
      Failed(e);
      *error = e.message;
      return ReadStatus::kUnavailable;
    }
    int64_t adjusted_total = total;
    for (const auto& p : pending) {
      auto it = std::find_if(docs.begin(), docs.end(), [&](const Json::Value& x) {
        return x["session_id"].asString() == p.session_id;
      });
      if (it != docs.end()) {
        *it = p.doc;  // newer than what MongoDB has
      } else {
        docs.push_back(p.doc);
        ++adjusted_total;
      }
    }
    // Documents whose deletion is still spooled are gone for the reader.
    std::erase_if(docs, [&](const Json::Value& x) {
      auto latest = spool_.Latest(c, x["session_id"].asString());
      if (latest && latest->op == "delete") {
        --adjusted_total;
        return true;
      }
      return false;
    });
    std::sort(docs.begin(), docs.end(), [](const Json::Value& a, const Json::Value& b) {
      const int64_t ta = DateMillis(a["created_at"]), tb = DateMillis(b["created_at"]);
      if (ta != tb) return ta > tb;
      return a["session_id"].asString() > b["session_id"].asString();
    });
    page->docs.clear();
    for (uint64_t i = offset; i < docs.size() && page->docs.size() < limit; ++i)
      page->docs.push_back(Project(docs[i], fields));  // spooled ones are whole
    page->total = static_cast<uint64_t>(std::max<int64_t>(0, adjusted_total));
    return ReadStatus::kOk;
  }

  Json::Value Health() override {
    Json::Value h(Json::objectValue);
    const size_t depth = spool_.Depth();
    h["kind"] = "mongodb";
    h["database"] = config_.database;
    h["mongodb"] = healthy_.load() ? "up" : "unreachable";
    h["spool_depth"] = static_cast<Json::UInt64>(depth);
    h["status"] = healthy_.load() && depth == 0 ? "ok" : "degraded";
    h["persistent"] = true;
    return h;
  }

  size_t ReplayNow() override {
    ReplayOnce();
    return spool_.Depth();
  }

  void Close() override {
    {
      const std::lock_guard lock(replay_mu_);
      if (closed_) return;
      closed_ = true;
    }
    replay_cv_.notify_all();
    if (replayer_.joinable()) replayer_.join();
  }

 private:
  mongoc_collection_t* Coll(const PooledClient& client, Collection c) const {
    return mongoc_client_get_collection(client.get(), config_.database.c_str(),
                                        std::string(CollectionName(c)).c_str());
  }

  void Failed(const bson_error_t& e) {
    if (IsTransient(e) && healthy_.exchange(false)) {
      log_.Warn("MongoDB became unreachable: writes go to the spool", {{"error", e.message}});
      indexes_ok_ = false;  // a replacement server may start empty
      replay_cv_.notify_all();
    }
  }

  bool Ping(std::string* why) {
    PooledClient client(pool_.get());
    const BsonPtr cmd(BCON_NEW("ping", BCON_INT32(1)));
    Reply reply;
    bson_error_t e;
    if (!mongoc_client_command_simple(client.get(), "admin", cmd.get(), nullptr, &reply.doc, &e)) {
      *why = e.message;
      return false;
    }
    return true;
  }

  bool EnsureIndexes(std::string* why) {
    PooledClient client(pool_.get());
    for (Collection c : {Collection::kSessions, Collection::kReports}) {
      const std::string name(CollectionName(c));
      const BsonPtr cmd(BCON_NEW(
          "createIndexes", BCON_UTF8(name.c_str()), "indexes", "[", "{", "key", "{", "session_id",
          BCON_INT32(1), "}", "name", BCON_UTF8("session_id_unique"), "unique", BCON_BOOL(true),
          "}", "{", "key", "{", "user_id", BCON_INT32(1), "created_at", BCON_INT32(-1), "}", "name",
          BCON_UTF8("user_id_created_at"), "}", "]"));
      Reply reply;
      bson_error_t e;
      if (!mongoc_client_write_command_with_opts(client.get(), config_.database.c_str(), cmd.get(),
                                                 nullptr, &reply.doc, &e)) {
        *why = std::string("createIndexes on ") + name + ": " + e.message;
        return false;
      }
    }
    indexes_ok_ = true;
    return true;
  }

  // One attempt of a put/delete against MongoDB.
  bool Apply(const std::string& op, Collection c, const std::string& session_id,
             const Json::Value& doc, bson_error_t* e, std::string* error) {
    PooledClient client(pool_.get());
    CollectionPtr coll(Coll(client, c));
    const BsonPtr filter = Filter("session_id", session_id);
    Reply reply;
    bson_t opts = BSON_INITIALIZER;
    mongoc_write_concern_append(write_concern_.get(), &opts);
    bool ok = false;
    if (op == "put") {
      BSON_APPEND_BOOL(&opts, "upsert", true);
      const BsonPtr b = ToBson(doc, error);
      if (!b) {
        bson_destroy(&opts);
        bson_set_error(e, MONGOC_ERROR_BSON, MONGOC_ERROR_BSON_INVALID, "%s", error->c_str());
        return false;
      }
      ok = mongoc_collection_replace_one(coll.get(), filter.get(), b.get(), &opts, &reply.doc, e);
    } else {
      ok = mongoc_collection_delete_one(coll.get(), filter.get(), &opts, &reply.doc, e);
    }
    bson_destroy(&opts);
    if (!ok) *error = e->message;
    return ok;
  }

  // With retries and backoff for transient errors.
  bool ApplyWithRetries(const std::string& op, Collection c, const std::string& session_id,
                        const Json::Value& doc, bool* transient, std::string* error) {
    bson_error_t e{};
    for (int attempt = 0; attempt <= config_.retries; ++attempt) {
      if (attempt > 0) {
        retries_.Add();
        std::this_thread::sleep_for(std::chrono::milliseconds(100 << (attempt - 1)));
      }
      if (Apply(op, c, session_id, doc, &e, error)) {
        if (!healthy_.exchange(true)) log_.Info("MongoDB answers again");
        return true;
      }
      *transient = IsTransient(e);
      if (!*transient) return false;
    }
    Failed(e);
    return false;
  }

  bool Write(const std::string& op, Collection c, const std::string& session_id,
             const Json::Value& doc, std::string* error) {
    const std::lock_guard lock(write_mu_);
    // Order matters: while anything is spooled, or MongoDB is away, new writes queue behind.
    if (healthy_.load() && indexes_ok_.load() && spool_.Depth() == 0) {
      bool transient = false;
      if (ApplyWithRetries(op, c, session_id, doc, &transient, error)) {
        writes_.Add();
        return true;
      }
      failures_.Add();
      if (!transient) {
        log_.Error("MongoDB refused a write", {{"session_id", session_id}, {"error", *error}});
        // Keep it on disk all the same (rejected/), so nothing is lost.
        std::string ignored;
        if (spool_.Append(op, c, session_id, doc, &ignored)) {
          if (auto front = spool_.Latest(c, session_id)) spool_.Reject(front->seq, &ignored);
        }
        return false;
      }
    }
    if (!spool_.Append(op, c, session_id, doc, error)) {
      log_.Error("spool write failed: the document could not be saved",
                 {{"session_id", session_id}, {"error", *error}});
      return false;
    }
    spooled_.Add();
    replay_cv_.notify_all();
    return true;
  }

  void ReplayOnce() {
    if (spool_.Depth() == 0) return;
    std::string why;
    if (!healthy_.load() || !indexes_ok_.load()) {
      if (!Ping(&why) || !EnsureIndexes(&why)) return;
      healthy_ = true;
      log_.Info("MongoDB answers again: replaying the spool",
                {{"depth", static_cast<Json::UInt64>(spool_.Depth())}});
    }
    for (;;) {
      const std::lock_guard lock(write_mu_);
      auto entry = spool_.Front();
      if (!entry) return;
      bool transient = false;
      std::string error;
      if (ApplyWithRetries(entry->op, entry->collection, entry->session_id, entry->doc, &transient,
                           &error)) {
        spool_.Remove(entry->seq, &error);
        replayed_.Add();
        continue;
      }
      if (transient) return;  // still away: keep order, try again later
      log_.Error("MongoDB refused a spooled write; it is kept under spool/rejected",
                 {{"session_id", entry->session_id}, {"error", error}});
      rejected_.Add();
      spool_.Reject(entry->seq, &error);
    }
  }

  void ReplayLoop() {
    std::unique_lock lock(replay_mu_);
    while (!closed_) {
      replay_cv_.wait_for(lock, std::chrono::milliseconds(config_.replay_interval_ms));
      if (closed_) break;
      lock.unlock();
      ReplayOnce();
      lock.lock();
    }
  }

  StoreConfig config_;
  core::Logger& log_;
  Spool spool_;
  core::Counter& writes_;
  core::Counter& failures_;
  core::Counter& retries_;
  core::Counter& spooled_;
  core::Counter& replayed_;
  core::Counter& rejected_;
  std::unique_ptr<mongoc_client_pool_t, PoolDeleter> pool_;
  std::unique_ptr<mongoc_write_concern_t, WriteConcernDeleter> write_concern_;
  std::atomic<bool> healthy_{false};
  std::atomic<bool> indexes_ok_{false};
  std::mutex write_mu_;
  std::mutex replay_mu_;
  std::condition_variable replay_cv_;
  bool closed_ = false;
  std::thread replayer_;
};

// ---- factory ------------------------------------------------------------------------------------

std::string StoreConfig::Validate() const {
  if (data_dir.empty()) return "data directory must not be empty";
  if (timeout_ms < 100 || timeout_ms > 120'000) return "store timeout must be 100..120000 ms";
  if (retries < 0 || retries > 10) return "store retries must be 0..10";
  if (replay_interval_ms < 10 || replay_interval_ms > 600'000)
    return "spool replay interval must be 10..600000 ms";
  if (write_concern != "majority") {
    char* end = nullptr;
    const long w = std::strtol(write_concern.c_str(), &end, 10);
    if (write_concern.empty() || *end != '\0' || w < 0 || w > 50)
      return "write concern must be \"majority\" or a number 0..50";
  }
  return {};
}

std::unique_ptr<Store> Store::Open(const StoreConfig& config, core::Logger& log,
                                   core::Metrics& metrics, std::string* error) {
  if (config.mongodb_uri.empty()) {
    return FileStore::Open(config.data_dir + "/store", log, metrics, error);
  }
  auto s = std::make_unique<MongoStore>(config, log, metrics);
  if (!s->Init(error)) return nullptr;
  return s;
}

}  // namespace parley::store
