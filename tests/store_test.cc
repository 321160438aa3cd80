// The store against real back ends: files on disk, and MongoDB over the wire (jongodb, or a
// real mongod when MONGODB_URI is set).
#include "store/store.h"

#include <gtest/gtest.h>
#include <mongoc/mongoc.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "tests/support/mongo_server.h"
#include "tests/support/test_server.h"

namespace parley::store {
namespace {

using namespace std::chrono_literals;
using testing::MongoServer;
using testing::TempDir;

int64_t kBaseMs = 1'763'000'000'000;

Json::Value Doc(const std::string& id, const std::string& user, int64_t created_ms,
                const std::string& payload = "x") {
  Json::Value d(Json::objectValue);
  d["session_id"] = id;
  d["user_id"] = user;
  d["created_at"] = DateValue(created_ms);
  d["payload"] = payload;
  d["score"] = 1.0;  // a double that looks like an integer
  d["ratio"] = 0.25;
  d["turns"] = 7;  // an int
  d["big"] = Json::Int64(5'000'000'000);
  d["nested"]["list"].append(2.0);
  d["nested"]["list"].append(3);
  d["nested"]["when"] = DateValue(created_ms + 1000);
  d["nothing"] = Json::Value();
  return d;
}

// ---- file store ---------------------------------------------------------------------------------

class FileStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> Open() {
    StoreConfig c;
    c.data_dir = dir_.path();
    std::string error;
    auto s = Store::Open(c, log_, metrics_, &error);
    EXPECT_TRUE(s) << error;
    return s;
  }
  TempDir dir_;
  core::Logger log_{core::LogLevel::kError};
  core::Metrics metrics_;
};

TEST(CheckpointLog, AWriteAfterTheReportIsStoredIsRefusedAndLeftoversAreFoundOrClearedOnReopen) {
  TempDir dir;
  std::string error;
  auto log = CheckpointLog::Open(dir.path(), &error);
  ASSERT_TRUE(log) << error;
  Json::Value c(Json::objectValue);
  c["report"]["session_id"] = "s1";
  ASSERT_TRUE(log->Write("s1", c, &error)) << error;
  c["report"]["session_id"] = "s2";
  ASSERT_TRUE(log->Write("s2", c, &error)) << error;
  EXPECT_FALSE(log->Write("../escape", c, &error));  // never a path outside the directory
  ASSERT_TRUE(log->Close("s2", &error)) << error;
  // A checkpoint built while the session was ending comes too late: refused, not resurrected.
  EXPECT_FALSE(log->Write("s2", c, &error));
  EXPECT_EQ(log->written(), 2u);
  std::ofstream(dir.path() + "/checkpoints/bad.json") << "{not json";
  std::ofstream(dir.path() + "/checkpoints/s3.json.tmp-12") << "half written";

  auto reopened = CheckpointLog::Open(dir.path(), &error);  // the next process
  ASSERT_TRUE(reopened) << error;
  std::vector<std::string> unreadable;
  const auto found = reopened->LoadAll(&unreadable);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].first, "s1");
  EXPECT_EQ(found[0].second["report"]["session_id"].asString(), "s1");
  ASSERT_EQ(unreadable.size(), 1u);
  EXPECT_NE(unreadable[0].find("bad.json"), std::string::npos);
  // The half-written temp file of the crashed process is gone; the unreadable one is kept.
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/checkpoints/s3.json.tmp-12"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/checkpoints/bad.json"));
}

TEST_F(FileStoreTest, RoundTripsDocumentsWithNumberKindsAndDates) {
  auto s = Open();
  std::string error;
  ASSERT_TRUE(s->Put(Collection::kReports, Doc("a1", "u", kBaseMs), &error)) << error;
  Json::Value back;
  ASSERT_EQ(s->Get(Collection::kReports, "a1", &back, &error), ReadStatus::kOk);
  EXPECT_TRUE(back["score"].isDouble());
  EXPECT_EQ(back["score"].asDouble(), 1.0);
  EXPECT_TRUE(back["turns"].isInt());
  EXPECT_EQ(back["big"].asInt64(), 5'000'000'000);
  EXPECT_EQ(back["created_at"]["$date"].asString(), "2025-11-13T02:13:20.000Z");
  const Json::Value pub = ToPublicJson(back);
  EXPECT_EQ(pub["created_at"].asString(), "2025-11-13T02:13:20.000Z");
  EXPECT_EQ(pub["nested"]["when"].asString(), "2025-11-13T02:13:21.000Z");
  EXPECT_EQ(s->Get(Collection::kSessions, "a1", &back, &error), ReadStatus::kNotFound);
  EXPECT_EQ(s->Get(Collection::kReports, "../../etc/passwd", &back, &error), ReadStatus::kNotFound);
}

TEST_F(FileStoreTest, RejectsDocumentsWithoutKeyOwnerOrDate) {
  auto s = Open();
  std::string error;
  Json::Value d = Doc("ok", "u", kBaseMs);
  d["session_id"] = "../escape";
  EXPECT_FALSE(s->Put(Collection::kReports, d, &error));
  d = Doc("ok", "u", kBaseMs);
  d.removeMember("user_id");
  EXPECT_FALSE(s->Put(Collection::kReports, d, &error));
  d = Doc("ok", "u", kBaseMs);
  d["created_at"] = "yesterday";
  EXPECT_FALSE(s->Put(Collection::kReports, d, &error));
}

TEST_F(FileStoreTest, ListsByOwnerNewestFirstWithPagingAndSurvivesReopen) {
  {
    auto s = Open();
    std::string error;
    for (int i = 0; i < 7; ++i)
      ASSERT_TRUE(s->Put(Collection::kSessions, Doc("s" + std::to_string(i), "alice", kBaseMs + i),
                         &error));
    ASSERT_TRUE(s->Put(Collection::kSessions, Doc("b0", "bob", kBaseMs + 100), &error));
  }
  auto s = Open();  // the index is rebuilt from disk
  Page page;
  std::string error;
  ASSERT_EQ(s->ListByUser(Collection::kSessions, "alice", 0, 3, &page, &error), ReadStatus::kOk);
  EXPECT_EQ(page.total, 7u);
  ASSERT_EQ(page.docs.size(), 3u);
  EXPECT_EQ(page.docs[0]["session_id"].asString(), "s6");
  EXPECT_EQ(page.docs[2]["session_id"].asString(), "s4");
  ASSERT_EQ(s->ListByUser(Collection::kSessions, "alice", 6, 3, &page, &error), ReadStatus::kOk);
  ASSERT_EQ(page.docs.size(), 1u);
  EXPECT_EQ(page.docs[0]["session_id"].asString(), "s0");
  ASSERT_TRUE(s->Delete(Collection::kSessions, "s6", &error));
  ASSERT_EQ(s->ListByUser(Collection::kSessions, "alice", 0, 10, &page, &error), ReadStatus::kOk);
  EXPECT_EQ(page.total, 6u);
  Json::Value gone;
  EXPECT_EQ(s->Get(Collection::kSessions, "s6", &gone, &error), ReadStatus::kNotFound);
}

// A listing can leave out what it does not need (GET /api/progress skips reports' timelines).
void ExpectProjectedListing(Store& s) {
  std::string error;
  ASSERT_TRUE(s.Put(Collection::kReports, Doc("p0", "alice", kBaseMs, "a long timeline"), &error));
  Page page;
  ASSERT_EQ(s.ListByUser(Collection::kReports, "alice", 0, 5, {"score", "nested"}, &page, &error),
            ReadStatus::kOk)
      << error;
  ASSERT_EQ(page.docs.size(), 1u);
  const Json::Value& d = page.docs[0];
  EXPECT_EQ(d["session_id"].asString(), "p0");
  EXPECT_EQ(d["user_id"].asString(), "alice");
  EXPECT_TRUE(d.isMember("created_at"));
  EXPECT_TRUE(d["score"].isDouble());
  EXPECT_EQ(d["nested"]["list"].size(), 2u);
  EXPECT_FALSE(d.isMember("payload")) << core::ToJson(d);
  EXPECT_FALSE(d.isMember("turns"));
}

TEST_F(FileStoreTest, ListingWithFieldsReturnsOnlyThoseAndTheKeys) {
  ExpectProjectedListing(*Open());
}

TEST_F(FileStoreTest, CrashMidWriteLeavesTheOldOrTheNewDocumentNeverATornOne) {
  // Both large enough to be caught mid-write, and close in size so that a kill lands in
  // either kind of write often enough for both outcomes to show up.
  const std::string small_payload(1 << 20, 'a');
  const std::string large_payload(3 << 19, 'b');
  {
    auto s = Open();
    std::string error;
    ASSERT_TRUE(s->Put(Collection::kReports, Doc("crash", "u", kBaseMs, small_payload), &error));
  }
  std::mt19937 rng(7);
  int saw_new = 0;
  for (int round = 0; round < 16; ++round) {
    int progress[2];
    ASSERT_EQ(pipe(progress), 0);
    const pid_t pid = fork();
    if (pid == 0) {
      // The child rewrites the document until it is killed, reporting each finished write.
      close(progress[0]);
      core::Logger quiet(core::LogLevel::kError);
      core::Metrics m;
      StoreConfig c;
      c.data_dir = dir_.path();
      std::string error;
      auto s = Store::Open(c, quiet, m, &error);
      for (int i = 0;; ++i) {
        s->Put(Collection::kReports,
               Doc("crash", "u", kBaseMs, i % 2 == 0 ? large_payload : small_payload), &error);
        [[maybe_unused]] const auto n = write(progress[1], "w", 1);
      }
    }
    close(progress[1]);
    // Let it finish a few writes (so the new version exists), then kill it at a random moment
    // of the next ones.
    const int wait_writes = 1 + static_cast<int>(rng() % 4);
    char byte;
    for (int i = 0; i < wait_writes; ++i) ASSERT_EQ(read(progress[0], &byte, 1), 1);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    close(progress[0]);
    auto s = Open();  // also clears temp files the kill left behind
    Json::Value d;
    std::string error;
    ASSERT_EQ(s->Get(Collection::kReports, "crash", &d, &error), ReadStatus::kOk)
        << "round " << round << ": " << error;
    const std::string payload = d["payload"].asString();
    ASSERT_TRUE(payload == small_payload || payload == large_payload) << "torn document";
    saw_new += payload == large_payload;
    for (const auto& e : std::filesystem::directory_iterator(dir_.path() + "/store/reports"))
      EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos);
  }
  EXPECT_GT(saw_new, 0) << "no round ended on the new version: the test proves nothing";
}

// ---- MongoDB ------------------------------------------------------------------------------------

// Direct libmongoc access to check what really landed in MongoDB.
class MongoProbe {
 public:
  MongoProbe(const std::string& uri, std::string db) : db_(std::move(db)) {
    mongoc_init();
    client_ = mongoc_client_new(uri.c_str());
  }
  ~MongoProbe() { mongoc_client_destroy(client_); }
  int64_t Count(Collection c, const std::string& session_id = {}) {
    mongoc_collection_t* coll = Coll(c);
    bson_t* filter =
        session_id.empty() ? bson_new() : BCON_NEW("session_id", BCON_UTF8(session_id.c_str()));
    bson_error_t e;
    const int64_t n =
        mongoc_collection_count_documents(coll, filter, nullptr, nullptr, nullptr, &e);
    bson_destroy(filter);
    mongoc_collection_destroy(coll);
    return n;
  }
  // BSON type of a top-level or dotted field of the document with this session_id.
  bson_type_t TypeOf(Collection c, const std::string& session_id, const std::string& dotted) {
    mongoc_collection_t* coll = Coll(c);
    bson_t* filter = BCON_NEW("session_id", BCON_UTF8(session_id.c_str()));
    mongoc_cursor_t* cur = mongoc_collection_find_with_opts(coll, filter, nullptr, nullptr);
    const bson_t* doc = nullptr;
    bson_type_t t = BSON_TYPE_EOD;
    if (mongoc_cursor_next(cur, &doc)) {
      bson_iter_t it, found;
      if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, dotted.c_str(), &found))
        t = bson_iter_type(&found);
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(coll);
    return t;
  }
  std::vector<std::string> IndexNames(Collection c) {
    mongoc_collection_t* coll = Coll(c);
    mongoc_cursor_t* cur = mongoc_collection_find_indexes_with_opts(coll, nullptr);
    std::vector<std::string> names;
    const bson_t* doc = nullptr;
    while (mongoc_cursor_next(cur, &doc)) {
      bson_iter_t it;
      if (bson_iter_init_find(&it, doc, "name")) {
        std::string name = bson_iter_utf8(&it, nullptr);
        bson_iter_t u;
        if (bson_iter_init_find(&u, doc, "unique") && bson_iter_as_bool(&u)) name += "(unique)";
        names.push_back(name);
      }
    }
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(coll);
    return names;
  }

 private:
  mongoc_collection_t* Coll(Collection c) {
    return mongoc_client_get_collection(client_, db_.c_str(),
                                        std::string(CollectionName(c)).c_str());
  }
  std::string db_;
  mongoc_client_t* client_;
};

class MongoStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { mongo_ = new MongoServer(); }
  static void TearDownTestSuite() {
    delete mongo_;
    mongo_ = nullptr;
  }
  void SetUp() override {
    db_ = MongoServer::NewDatabase(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override {
    mongo_->Start();  // a test that stopped it leaves it running
    mongo_->DropDatabase(db_);
  }

  StoreConfig Config() {
    StoreConfig c;
    c.mongodb_uri = mongo_->uri();
    c.database = db_;
    c.data_dir = dir_.path();
    c.timeout_ms = 400;
    c.retries = 1;
    c.replay_interval_ms = 50;
    return c;
  }
  std::unique_ptr<Store> Open() {
    std::string error;
    auto s = Store::Open(Config(), log_, metrics_, &error);
    EXPECT_TRUE(s) << error;
    return s;
  }
  bool WaitForEmptySpool(Store& s, std::chrono::milliseconds timeout = 15000ms) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (s.Health()["spool_depth"].asUInt64() == 0) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  static MongoServer* mongo_;
  std::string db_;
  TempDir dir_;
  core::Logger log_{core::LogLevel::kError};
  core::Metrics metrics_;
};
MongoServer* MongoStoreTest::mongo_ = nullptr;

TEST_F(MongoStoreTest, RoundTripKeepsBsonTypesExact) {
  auto s = Open();
  std::string error;
  ASSERT_TRUE(s->Put(Collection::kReports, Doc("t1", "u", kBaseMs), &error)) << error;
  MongoProbe probe(mongo_->uri(), db_);
  EXPECT_EQ(probe.TypeOf(Collection::kReports, "t1", "score"), BSON_TYPE_DOUBLE);
  EXPECT_EQ(probe.TypeOf(Collection::kReports, "t1", "ratio"), BSON_TYPE_DOUBLE);
  EXPECT_EQ(probe.TypeOf(Collection::kReports, "t1", "turns"), BSON_TYPE_INT32);
  EXPECT_EQ(probe.TypeOf(Collection::kReports, "t1", "big"), BSON_TYPE_INT64);
  EXPECT_EQ(probe.TypeOf(Collection::kReports, "t1", "created_at"), BSON_TYPE_DATE_TIME);
  EXPECT_EQ(probe.TypeOf(Collection::kReports, "t1", "nested.when"), BSON_TYPE_DATE_TIME);
  EXPECT_EQ(probe.TypeOf(Collection::kReports, "t1", "nested.list.0"), BSON_TYPE_DOUBLE);
  EXPECT_EQ(probe.TypeOf(Collection::kReports, "t1", "nothing"), BSON_TYPE_NULL);
  Json::Value back;
  ASSERT_EQ(s->Get(Collection::kReports, "t1", &back, &error), ReadStatus::kOk) << error;
  EXPECT_TRUE(back["score"].isDouble());
  EXPECT_EQ(ToPublicJson(back)["created_at"].asString(), "2025-11-13T02:13:20.000Z");
  EXPECT_FALSE(ToPublicJson(back).isMember("_id"));
  // Upserts by session_id: writing again replaces, never duplicates.
  ASSERT_TRUE(s->Put(Collection::kReports, Doc("t1", "u", kBaseMs, "second"), &error));
  EXPECT_EQ(probe.Count(Collection::kReports, "t1"), 1);
  ASSERT_EQ(s->Get(Collection::kReports, "t1", &back, &error), ReadStatus::kOk);
  EXPECT_EQ(back["payload"].asString(), "second");
}

TEST_F(MongoStoreTest, CreatesUniqueSessionIdAndOwnerDateIndexes) {
  auto s = Open();
  MongoProbe probe(mongo_->uri(), db_);
  for (Collection c : {Collection::kSessions, Collection::kReports}) {
    const auto names = probe.IndexNames(c);
    EXPECT_NE(std::find(names.begin(), names.end(), "session_id_unique(unique)"), names.end());
    EXPECT_NE(std::find(names.begin(), names.end(), "user_id_created_at"), names.end());
  }
}

TEST_F(MongoStoreTest, ListingWithFieldsReturnsOnlyThoseAndTheKeys) {
  ExpectProjectedListing(*Open());
}

TEST_F(MongoStoreTest, ListsByOwnerNewestFirstWithPagingAndDeletes) {
  auto s = Open();
  std::string error;
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(
        s->Put(Collection::kSessions, Doc("m" + std::to_string(i), "alice", kBaseMs + i), &error));
  ASSERT_TRUE(s->Put(Collection::kSessions, Doc("other", "bob", kBaseMs + 50), &error));
  Page page;
  ASSERT_EQ(s->ListByUser(Collection::kSessions, "alice", 1, 2, &page, &error), ReadStatus::kOk)
      << error;
  EXPECT_EQ(page.total, 5u);
  ASSERT_EQ(page.docs.size(), 2u);
  EXPECT_EQ(page.docs[0]["session_id"].asString(), "m3");
  EXPECT_EQ(page.docs[1]["session_id"].asString(), "m2");
  ASSERT_TRUE(s->Delete(Collection::kSessions, "m3", &error));
  ASSERT_EQ(s->ListByUser(Collection::kSessions, "alice", 0, 10, &page, &error), ReadStatus::kOk);
  EXPECT_EQ(page.total, 4u);
  Json::Value d;
  EXPECT_EQ(s->Get(Collection::kSessions, "m3", &d, &error), ReadStatus::kNotFound);
}

TEST_F(MongoStoreTest, OutageSpoolsWritesAndANewServerOnTheSamePortGetsThemAllOnce) {
  auto s = Open();
  std::string error;
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(
        s->Put(Collection::kReports, Doc("before" + std::to_string(i), "u", kBaseMs + i), &error));
  mongo_->Stop();
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(s->Put(Collection::kReports,
                       Doc("during" + std::to_string(i), "u", kBaseMs + 10 + i), &error))
        << error;
  // The same document twice while away: replay must keep the order (last one wins).
  ASSERT_TRUE(s->Put(Collection::kReports, Doc("during0", "u", kBaseMs + 10, "updated"), &error));
  const Json::Value health = s->Health();
  EXPECT_EQ(health["status"].asString(), "degraded");
  EXPECT_EQ(health["spool_depth"].asUInt64(), 11u);
  // Reads see what is spooled.
  Json::Value d;
  ASSERT_EQ(s->Get(Collection::kReports, "during5", &d, &error), ReadStatus::kOk);
  EXPECT_EQ(d["session_id"].asString(), "during5");
  ASSERT_EQ(s->Get(Collection::kReports, "during0", &d, &error), ReadStatus::kOk);
  EXPECT_EQ(d["payload"].asString(), "updated");
  EXPECT_GE(metrics_.Read("parley_store_spooled_total").value_or(0), 11.0);

  mongo_->Start();
  ASSERT_TRUE(WaitForEmptySpool(*s)) << core::ToJson(s->Health());
  EXPECT_EQ(s->Health()["status"].asString(), "ok");
  MongoProbe probe(mongo_->uri(), db_);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(probe.Count(Collection::kReports, "during" + std::to_string(i)), 1) << i;
  ASSERT_EQ(s->Get(Collection::kReports, "during0", &d, &error), ReadStatus::kOk);
  EXPECT_EQ(d["payload"].asString(), "updated");
  // jongodb restarts empty; a real mongod kept the three written before the outage.
  EXPECT_EQ(probe.Count(Collection::kReports), mongo_->external() ? 13 : 10);
  EXPECT_GE(metrics_.Read("parley_store_replayed_total").value_or(0), 11.0);
  // The replacement server got the indexes too.
  const auto names = probe.IndexNames(Collection::kReports);
  EXPECT_NE(std::find(names.begin(), names.end(), "session_id_unique(unique)"), names.end());
}

TEST_F(MongoStoreTest, DeleteWhileAwayRemovesSpooledWritesAndTheStoredDocument) {
  auto s = Open();
  std::string error;
  ASSERT_TRUE(s->Put(Collection::kReports, Doc("keep", "u", kBaseMs), &error));
  ASSERT_TRUE(s->Put(Collection::kReports, Doc("gone", "u", kBaseMs + 1), &error));
  mongo_->Stop();
  ASSERT_TRUE(s->Put(Collection::kReports, Doc("gone", "u", kBaseMs + 1, "v2"), &error));
  ASSERT_TRUE(s->Delete(Collection::kReports, "gone", &error)) << error;
  Json::Value d;
  EXPECT_EQ(s->Get(Collection::kReports, "gone", &d, &error), ReadStatus::kNotFound);
  mongo_->Start();
  ASSERT_TRUE(WaitForEmptySpool(*s));
  EXPECT_EQ(s->Get(Collection::kReports, "gone", &d, &error), ReadStatus::kNotFound);
}

TEST_F(MongoStoreTest, ASpoolLeftByAnEarlierProcessIsReplayedByTheNextOne) {
  mongo_->Stop();
  {
    auto s = Open();  // MongoDB unreachable at start is not an error
    std::string error;
    for (int i = 0; i < 5; ++i)
      ASSERT_TRUE(
          s->Put(Collection::kSessions, Doc("left" + std::to_string(i), "u", kBaseMs + i), &error));
    EXPECT_EQ(s->Health()["spool_depth"].asUInt64(), 5u);
  }  // the process "dies" with a non-empty spool
  mongo_->Start();
  auto next = Open();
  ASSERT_TRUE(WaitForEmptySpool(*next));
  MongoProbe probe(mongo_->uri(), db_);
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(probe.Count(Collection::kSessions, "left" + std::to_string(i)), 1);
}

}  // namespace
}  // namespace parley::store
