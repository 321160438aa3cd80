#include "core/core.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

namespace parley::core {
namespace {

TEST(Metrics, RendersCountersAndGaugesInPrometheusFormat) {
  Metrics m;
  m.GetCounter("parley_x_total", "Things", {{"kind", "a\"b"}}).Add(3);
  m.GetGauge("parley_level", "Level").Set(1.5);
  m.AddGaugeCallback("parley_cb", "From a callback", {}, [] { return 7.0; });
  const std::string text = m.RenderPrometheus();
  EXPECT_NE(text.find("# TYPE parley_x_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("parley_x_total{kind=\"a\\\"b\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("parley_level 1.5\n"), std::string::npos);
  EXPECT_NE(text.find("parley_cb 7\n"), std::string::npos);
  EXPECT_EQ(m.Read("parley_x_total", {{"kind", "a\"b"}}), 3.0);
  EXPECT_FALSE(m.Read("parley_missing").has_value());
}

TEST(Metrics, CounterReferencesStayValidAcrossNewSeries) {
  Metrics m;
  Counter& first = m.GetCounter("c_total", "c", {{"i", "0"}});
  for (int i = 1; i < 500; ++i) m.GetCounter("c_total", "c", {{"i", std::to_string(i)}});
  first.Add();
  EXPECT_EQ(m.Read("c_total", {{"i", "0"}}), 1.0);
}

TEST(WorkerPool, RejectsWhenQueueIsFullAndRunsEverythingQueuedAtShutdown) {
  Metrics m;
  WorkerPool pool({.threads = 1, .queue_capacity = 2}, m);
  std::promise<void> release;
  auto gate = release.get_future().share();
  std::atomic<int> ran{0};
  ASSERT_TRUE(pool.TrySubmit([gate, &ran] {
    gate.wait();
    ++ran;
  }));
  // The single worker is busy: wait until it took the task so the queue is empty again.
  while (pool.QueueDepth() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(pool.TrySubmit([&ran] { ++ran; }));
  EXPECT_TRUE(pool.TrySubmit([&ran] { ++ran; }));
  EXPECT_FALSE(pool.TrySubmit([&ran] { ++ran; }));  // capacity 2
  EXPECT_EQ(m.Read("parley_worker_tasks_rejected_total", {{"pool", "general"}}), 1.0);
  release.set_value();
  pool.Shutdown();
  EXPECT_EQ(ran.load(), 3);
  EXPECT_FALSE(pool.TrySubmit([] {}));
}

TEST(Logger, WritesOneJsonObjectPerLineWithFields) {
  std::string out;
  Logger log(LogLevel::kInfo, [&](std::string_view line) { out.append(line); });
  log.Debug("hidden");
  log.Info("session ended", {{"session_id", "abc"}, {"n", 3}});
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(out.find('\n'), out.size() - 1);  // exactly one line
  const auto v = ParseJson(out.substr(0, out.size() - 1));
  ASSERT_TRUE(v);
  EXPECT_EQ((*v)["msg"].asString(), "session ended");
  EXPECT_EQ((*v)["session_id"].asString(), "abc");
  EXPECT_EQ((*v)["level"].asString(), "info");
  EXPECT_EQ((*v)["n"].asInt(), 3);
  EXPECT_TRUE((*v)["ts"].isString());
}

TEST(ParseJson, RejectsTrailingGarbageDeepNestingAndDuplicateKeys) {
  std::string err;
  EXPECT_FALSE(ParseJson("{\"a\":1} x", &err));
  EXPECT_FALSE(err.empty());
  EXPECT_FALSE(ParseJson(std::string(10000, '['), &err));
  EXPECT_FALSE(ParseJson("{\"a\":1,\"a\":2}", &err));
  EXPECT_FALSE(ParseJson("{\"a\":NaN}", &err));
  EXPECT_TRUE(ParseJson("{\"a\":[1,2,{\"b\":null}]}", &err));
}

}  // namespace
}  // namespace parley::core
