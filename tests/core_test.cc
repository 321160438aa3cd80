#include "core/core.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

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

TEST(Strand, RunsItsTasksOneAtATimeInOrderBesideOtherStrands) {
  Metrics m;
  WorkerPool pool({.threads = 4, .queue_capacity = 1000}, m);
  Strand a(pool), b(pool);
  std::mutex mu;
  std::vector<int> order_a, order_b;
  std::atomic<int> in_a{0}, overlap{0};
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(a.Post([&, i] {
      if (in_a.fetch_add(1) != 0) ++overlap;
      {
        const std::lock_guard lock(mu);
        order_a.push_back(i);
      }
      in_a.fetch_sub(1);
    }));
    ASSERT_TRUE(b.Post([&, i] {
      const std::lock_guard lock(mu);
      order_b.push_back(i);
    }));
  }
  a.Drain();
  b.Drain();
  EXPECT_EQ(overlap.load(), 0);
  ASSERT_EQ(order_a.size(), 200u);
  ASSERT_EQ(order_b.size(), 200u);
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(order_a[static_cast<size_t>(i)], i);
    EXPECT_EQ(order_b[static_cast<size_t>(i)], i);
  }
  EXPECT_EQ(a.Pending(), 0u);
}

TEST(Strand, DrainRunsQueuedWorkOnTheCallerWhenEveryWorkerIsBusy) {
  // Every worker blocked (say, each ending a session): a drain must not wait for one of them.
  Metrics m;
  WorkerPool pool({.threads = 1, .queue_capacity = 8}, m);
  std::promise<void> release;
  auto gate = release.get_future().share();
  ASSERT_TRUE(pool.TrySubmit([gate] { gate.wait(); }));
  Strand strand(pool);
  std::thread::id ran_on;
  ASSERT_TRUE(strand.Post([&] { ran_on = std::this_thread::get_id(); }));
  strand.Drain();
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  release.set_value();
}

TEST(Strand, ATaskRefusedByAFullPoolIsKeptAndRunsAtDrain) {
  Metrics m;
  WorkerPool pool({.threads = 1, .queue_capacity = 1}, m);
  std::promise<void> started, release;
  auto gate = release.get_future().share();
  ASSERT_TRUE(pool.TrySubmit([&started, gate] {
    started.set_value();
    gate.wait();
  }));
  started.get_future().wait();
  ASSERT_TRUE(pool.TrySubmit([] {}));  // the queue is full now
  Strand strand(pool);
  int ran = 0;
  EXPECT_FALSE(strand.Post([&] { ++ran; }));
  EXPECT_EQ(strand.Pending(), 1u);
  strand.Drain();
  EXPECT_EQ(ran, 1);
  release.set_value();
}

TEST(Strand, DrainWaitsForTheTaskInProgress) {
  Metrics m;
  WorkerPool pool({.threads = 2, .queue_capacity = 8}, m);
  Strand strand(pool);
  std::promise<void> started, release;
  std::atomic<bool> finished{false};
  ASSERT_TRUE(strand.Post([&] {
    started.set_value();
    release.get_future().wait();
    finished = true;
  }));
  started.get_future().wait();
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    release.set_value();
  });
  strand.Drain();
  EXPECT_TRUE(finished.load());
  releaser.join();
}

TEST(TimerQueue, RunsCallbacksInTimeOrderAndCancelledOnesNever) {
  TimerQueue timers;
  std::mutex mu;
  std::vector<int> order;
  std::promise<void> last;
  const auto now = TimerQueue::Clock::now();
  const auto note = [&](int i) {
    return [&, i] {
      const std::lock_guard lock(mu);
      order.push_back(i);
    };
  };
  timers.Schedule(now + std::chrono::milliseconds(60), note(2));
  const uint64_t cancelled = timers.Schedule(now + std::chrono::milliseconds(30), note(99));
  timers.Schedule(now + std::chrono::milliseconds(10), note(1));
  timers.Schedule(now + std::chrono::milliseconds(90), [&] { last.set_value(); });
  // Cancelled while the queue's thread waits for the earliest one (the one before it).
  EXPECT_TRUE(timers.Cancel(cancelled));
  EXPECT_FALSE(timers.Cancel(cancelled));
  ASSERT_EQ(last.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
  const std::lock_guard lock(mu);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  EXPECT_EQ(timers.pending(), 0u);
}

TEST(TimerQueue, CancellingTheTimerItWaitsForIsSafe) {
  TimerQueue timers;
  for (int i = 0; i < 200; ++i) {
    const auto id = timers.Schedule(TimerQueue::Clock::now() + std::chrono::milliseconds(5), [] {});
    std::this_thread::sleep_for(std::chrono::microseconds(100 * (i % 7)));
    timers.Cancel(id);
  }
  SUCCEED();  // under AddressSanitizer: no use of a freed timer
}

TEST(ProcessMetrics, CountDescriptorsAndMemoryOfThisProcess) {
  Metrics m;
  AddProcessMetrics(m);
  const int before = CountOpenFds();
  ASSERT_GT(before, 0);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  EXPECT_EQ(CountOpenFds(), before + 2);
  EXPECT_EQ(m.Read("process_open_fds"), before + 2);
  close(fds[0]);
  close(fds[1]);
  EXPECT_GT(m.Read("process_resident_memory_bytes").value_or(0), 1 << 20);
  EXPECT_GT(m.Read("process_threads").value_or(0), 0);
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

TEST(ToJson, InvalidUtf8InAStringIsReplacedSoTheOutputParses) {
  Json::Value v;
  v["message"] = std::string("no persona '\xff\xfe\x80" "abc'");
  v["overlong"] = std::string("\xc0\xaf");       // "/" spelled in two bytes
  v["surrogate"] = std::string("\xed\xa0\x80");  // U+D800
  v["cut"] = std::string("caf\xc3");              // a sequence cut short
  v["kept"] = "caf\u00e9 \u65e5\u672c \U0001F600";
  const std::string out = ToJson(v);
  std::string error;
  const auto back = ParseJson(out, &error);
  ASSERT_TRUE(back.has_value()) << error << ": " << out;
  EXPECT_EQ(ReplaceInvalidUtf8(out), out) << "the output itself is valid UTF-8";
  EXPECT_EQ((*back)["message"].asString(), "no persona '\uFFFD\uFFFD\uFFFDabc'");
  EXPECT_EQ((*back)["overlong"].asString(), "\uFFFD\uFFFD");
  EXPECT_EQ((*back)["surrogate"].asString(), "\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ((*back)["cut"].asString(), "caf\uFFFD");
  EXPECT_EQ((*back)["kept"].asString(), "caf\u00e9 \u65e5\u672c \U0001F600");
  EXPECT_EQ(ReplaceInvalidUtf8("\xf4\x90\x80\x80ok"), "\uFFFD\uFFFD\uFFFD\uFFFDok");  // > U+10FFFF
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
