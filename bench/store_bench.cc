// Store figures: write and read latency of a long session's report (about 200 KB) to MongoDB
// and to the embedded file store, and replay throughput of a spool of N reports.
//
//   store_bench [--reports 200] [--spool 1000] [--bytes 200000]
// MongoDB is the pinned jongodb the tests use, or MONGODB_URI when set.
#include <mongoc/mongoc.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iostream>
#include <random>

#include "store/store.h"
#include "tests/support/mongo_server.h"
#include "tests/support/test_server.h"

namespace {

using Clock = std::chrono::steady_clock;
using parley::store::Collection;

// A report shaped like a long session's: per-second samples, events and a transcript.
Json::Value BigReport(const std::string& id, size_t target_bytes, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  Json::Value r(Json::objectValue);
  r["schema_version"] = 1;
  r["session_id"] = id;
  r["user_id"] = "bench-user";
  r["persona_id"] = "seoa";
  r["created_at"] = parley::store::DateValue(1'763'000'000'000);
  r["duration_s"] = 3600.0;
  r["metrics"]["blinks"] = 812;
  r["metrics"]["gaze_on_screen_ratio"] = 0.83;
  r["timeline"] = Json::Value(Json::arrayValue);
  // Serialising the whole report is costly: measure the size once every 100 samples.
  for (int t = 0; t % 100 != 0 || parley::core::ToJson(r).size() < target_bytes; ++t) {
    Json::Value s(Json::objectValue);
    s["t"] = t;
    s["gaze"] = u(rng);
    s["blink_rate"] = u(rng) * 30;
    s["smile"] = u(rng);
    s["yaw"] = u(rng) * 20 - 10;
    s["pitch_hz"] = 120 + u(rng) * 80;
    s["volume_db"] = -40 + u(rng) * 20;
    r["timeline"].append(s);
  }
  return r;
}

struct Stats {
  double p50_ms, p99_ms, mean_ms;
};
Stats Summarise(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  auto at = [&](double p) { return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))]; };
  return {at(0.5), at(0.99), sum / static_cast<double>(v.size())};
}

Json::Value LatencyJson(const std::vector<double>& writes, const std::vector<double>& reads) {
  const Stats w = Summarise(writes), r = Summarise(reads);
  Json::Value out(Json::objectValue);
  out["write_p50_ms"] = w.p50_ms;
  out["write_p99_ms"] = w.p99_ms;
  out["read_p50_ms"] = r.p50_ms;
  out["read_p99_ms"] = r.p99_ms;
  return out;
}

Json::Value Measure(parley::store::Store& store, int n, const Json::Value& report) {
  std::vector<double> writes, reads;
  std::string error;
  for (int i = 0; i < n; ++i) {
    Json::Value doc = report;
    doc["session_id"] = "bench-" + std::to_string(i);
    auto t0 = Clock::now();
    if (!store.Put(Collection::kReports, doc, &error)) std::cerr << "put failed: " << error << "\n";
    writes.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  for (int i = 0; i < n; ++i) {
    Json::Value out;
    auto t0 = Clock::now();
    if (store.Get(Collection::kReports, "bench-" + std::to_string(i), &out, &error) !=
        parley::store::ReadStatus::kOk)
      std::cerr << "get failed: " << error << "\n";
    reads.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return LatencyJson(writes, reads);
}

// The same writes and reads with libmongoc alone on a prebuilt BSON document: the floor
// Parley's store (JSON <-> BSON conversion, spool checks) is compared against.
Json::Value MeasureRawMongo(const std::string& uri, const std::string& db, int n,
                            const Json::Value& report) {
  mongoc_init();
  mongoc_client_t* client = mongoc_client_new(uri.c_str());
  mongoc_collection_t* coll = mongoc_client_get_collection(client, db.c_str(), "reports");
  const std::string text = parley::core::ToJson(report);
  bson_error_t e;
  bson_t* doc = bson_new_from_json(reinterpret_cast<const uint8_t*>(text.data()),
                                   static_cast<ssize_t>(text.size()), &e);
  bson_t* opts =
      BCON_NEW("upsert", BCON_BOOL(true), "writeConcern", "{", "w", BCON_UTF8("majority"), "}");
  std::vector<double> writes, reads;
  for (int i = 0; i < n; ++i) {
    const std::string id = "raw-" + std::to_string(i);
    bson_t* filter = BCON_NEW("session_id", BCON_UTF8(id.c_str()));
    bson_t* copy = bson_copy(doc);
    BSON_APPEND_UTF8(copy, "sid", id.c_str());
    auto t0 = Clock::now();
    if (!mongoc_collection_replace_one(coll, filter, copy, opts, nullptr, &e))
      std::cerr << "raw write failed: " << e.message << "\n";
    writes.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    bson_destroy(copy);
    bson_destroy(filter);
  }
  for (int i = 0; i < n; ++i) {
    const std::string id = "raw-" + std::to_string(i);
    bson_t* filter = BCON_NEW("session_id", BCON_UTF8(id.c_str()));
    auto t0 = Clock::now();
    mongoc_cursor_t* cur = mongoc_collection_find_with_opts(coll, filter, nullptr, nullptr);
    const bson_t* found = nullptr;
    mongoc_cursor_next(cur, &found);
    reads.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
  }
  bson_destroy(opts);
  bson_destroy(doc);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(client);
  return LatencyJson(writes, reads);
}

}  // namespace

int main(int argc, char** argv) {
  int reports = 200;
  int spool = 1000;
  size_t bytes = 200'000;
  CLI::App cli{"Parley store benchmark"};
  cli.add_option("--reports", reports, "Reports written and read per back end")
      ->capture_default_str();
  cli.add_option("--spool", spool, "Reports in the spool replay test")->capture_default_str();
  cli.add_option("--bytes", bytes, "Size of each report in bytes")->capture_default_str();
  CLI11_PARSE(cli, argc, argv);

  parley::core::Logger log(parley::core::LogLevel::kError);
  parley::core::Metrics metrics;
  std::mt19937 rng(1);
  const Json::Value report = BigReport("template", bytes, rng);
  Json::Value result(Json::objectValue);
  result["report_bytes"] = static_cast<Json::UInt64>(parley::core::ToJson(report).size());

  std::string error;
  {
    parley::testing::TempDir dir;
    parley::store::StoreConfig c;
    c.data_dir = dir.path();
    auto store = parley::store::Store::Open(c, log, metrics, &error);
    result["file"] = Measure(*store, reports, report);
  }
  parley::testing::MongoServer mongo;
  {
    parley::testing::TempDir dir;
    parley::store::StoreConfig c;
    c.data_dir = dir.path();
    c.mongodb_uri = mongo.uri();
    c.database = parley::testing::MongoServer::NewDatabase("bench");
    auto store = parley::store::Store::Open(c, log, metrics, &error);
    result["mongodb"] = Measure(*store, reports, report);
    result["mongodb_raw_libmongoc"] = MeasureRawMongo(mongo.uri(), c.database, reports, report);
  }
  {
    // Fill a spool while MongoDB is away, then time the replay into a server that came back.
    parley::testing::TempDir dir;
    parley::store::StoreConfig c;
    c.data_dir = dir.path();
    c.mongodb_uri = mongo.uri();
    c.database = parley::testing::MongoServer::NewDatabase("bench_spool");
    c.timeout_ms = 3000;
    c.replay_interval_ms = 600'000;  // replay only when asked
    mongo.Stop();
    auto store = parley::store::Store::Open(c, log, metrics, &error);
    const auto fill0 = Clock::now();
    for (int i = 0; i < spool; ++i) {
      Json::Value doc = report;
      doc["session_id"] = "spool-" + std::to_string(i);
      store->Put(Collection::kReports, doc, &error);
    }
    const double fill_s = std::chrono::duration<double>(Clock::now() - fill0).count();
    mongo.Start();
    const auto t0 = Clock::now();
    const size_t left = store->ReplayNow();
    const double replay_s = std::chrono::duration<double>(Clock::now() - t0).count();
    result["spool"]["reports"] = spool;
    result["spool"]["fill_reports_per_s"] = spool / fill_s;
    result["spool"]["replay_s"] = replay_s;
    result["spool"]["replay_reports_per_s"] = (spool - static_cast<double>(left)) / replay_s;
    result["spool"]["left"] = static_cast<Json::UInt64>(left);
  }
  std::cout << parley::core::ToJson(result) << std::endl;
  return 0;
}
