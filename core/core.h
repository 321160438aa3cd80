// Parley core: structured logging, Prometheus metrics and the bounded worker pool that every
// module shares. Nothing here is global: main() creates one Logger, one Metrics and one
// WorkerPool and hands references to the modules that need them.
//
// Thread safety: every class in this header may be used from any thread.
#pragma once

#include <json/value.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace parley::core {

// ---------------------------------------------------------------------------------------------
// Logging: one JSON object per line on a stream (stderr by default).
// {"ts":"2026-11-22T03:53:59.123Z","level":"info","msg":"...","session_id":"...",...}

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Parses "debug" | "info" | "warn" | "error"; nullopt for anything else.
std::optional<LogLevel> ParseLogLevel(std::string_view name);
std::string_view LogLevelName(LogLevel level);

using LogFields = std::initializer_list<std::pair<std::string_view, Json::Value>>;

// One log line (newline included) in the shape Logger writes.
std::string FormatLogLine(LogLevel level, std::string_view msg, LogFields fields = {});
// Writes one such line to stderr with a single write(2). Holds no state: for bridging the
// logs of C libraries whose log callbacks carry no user data (libwebsockets, libmongoc).
void WriteStderrLogLine(LogLevel level, std::string_view msg, LogFields fields = {});

class Logger {
 public:
  // `sink` receives whole lines (newline included); the default writes to stderr.
  explicit Logger(LogLevel level = LogLevel::kInfo,
                  std::function<void(std::string_view line)> sink = nullptr);

  bool Enabled(LogLevel level) const { return level >= level_; }
  void Log(LogLevel level, std::string_view msg, LogFields fields = {});
  void Debug(std::string_view msg, LogFields fields = {}) { Log(LogLevel::kDebug, msg, fields); }
  void Info(std::string_view msg, LogFields fields = {}) { Log(LogLevel::kInfo, msg, fields); }
  void Warn(std::string_view msg, LogFields fields = {}) { Log(LogLevel::kWarn, msg, fields); }
  void Error(std::string_view msg, LogFields fields = {}) { Log(LogLevel::kError, msg, fields); }

 private:
  LogLevel level_;
  std::function<void(std::string_view)> sink_;
  std::mutex mu_;  // keeps lines whole when several threads log at once
};

// ---------------------------------------------------------------------------------------------
// Metrics: counters and gauges with labels, rendered in the Prometheus text format (0.0.4).
// Hand-written because Debian 12 packages no Prometheus client for C++; it is small.

using Labels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing value. References returned by Metrics stay valid for the
// Metrics' lifetime, so hot paths look a counter up once and then only Add().
class Counter {
 public:
  void Add(double v = 1.0) {
    double cur = value_.load(std::memory_order_relaxed);
    while (!value_.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
    }
  }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v) {
    double cur = value_.load(std::memory_order_relaxed);
    while (!value_.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
    }
  }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Metrics {
 public:
  Counter& GetCounter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& GetGauge(const std::string& name, const std::string& help, const Labels& labels = {});
  // A gauge read at scrape time, e.g. the number of sessions in a state.
  void AddGaugeCallback(const std::string& name, const std::string& help, const Labels& labels,
                        std::function<double()> read);

  // Value of a counter or gauge series, or nullopt when it was never created (tests, /health).
  std::optional<double> Read(const std::string& name, const Labels& labels = {}) const;

  std::string RenderPrometheus() const;

 private:
  enum class Kind { kCounter, kGauge };
  struct Series {
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::function<double()> read;
  };
  struct Family {
    Kind kind;
    std::string help;
    std::map<std::string, Series> series;  // keyed by rendered label set
  };
  Family& FamilyFor(const std::string& name, const std::string& help, Kind kind);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

// The process's own figures, read at scrape time from /proc/self, under the names Prometheus
// client libraries use: process_open_fds, process_resident_memory_bytes, process_threads.
// A per-session leak of descriptors or memory shows up here first.
void AddProcessMetrics(Metrics& metrics);
// Names the calling thread (at most 15 characters are kept): the name groups its CPU time in
// parley_thread_cpu_seconds{group} and shows in top -H, perf and gdb.
void NameThisThread(const std::string& name);
// The same readings, for tests and load clients (-1 when /proc cannot be read).
int CountOpenFds();
int64_t ResidentBytes();
int CountThreads();

// ---------------------------------------------------------------------------------------------
// A fixed set of threads draining a bounded FIFO. Used for anything that may block (store
// I/O, ASR, TTS, LLM calls, file reads) so that the WebSocket service thread never does.

struct WorkerPoolConfig {
  std::string name = "general";  // the "pool" label of its metrics
  int threads = 4;
  size_t queue_capacity = 4096;
  // Empty when valid; otherwise says what is wrong.
  std::string Validate() const;
};

class WorkerPool {
 public:
  WorkerPool(const WorkerPoolConfig& config, Metrics& metrics);
  ~WorkerPool();  // Shutdown()
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task`; false when the queue is full or the pool is shutting down (counted).
  bool TrySubmit(std::function<void()> task);
  // Runs everything already queued, then joins the threads. Idempotent.
  void Shutdown();
  size_t QueueDepth() const;

 private:
  void Run();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  size_t capacity_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
  Counter& rejected_;
  Counter& executed_;
};

// A serial executor on a shared pool: tasks posted to one Strand run one at a time, in order,
// on the pool's threads, and never hold a thread while they have nothing to do. A session's
// stage gets one, so its work is ordered without a thread (or a "pumping" flag) of its own.
//
// Drain() runs what is still queued on the calling thread and waits for a task in progress:
// a worker that must see a stage's work finished (a session's end) does not wait for another
// worker to become free, so ends cannot starve each other on a busy pool.
//
// Thread safety: any thread may Post() and Drain(). Tasks must not Drain() their own strand.
// Copies share one queue; the queue lives while a copy or a queued task does.
class Strand {
 public:
  explicit Strand(WorkerPool& pool);
  // Queues `task`. False when the pool refused the strand's turn: the task stays queued and
  // runs at the next Post() the pool accepts or at Drain().
  bool Post(std::function<void()> task);
  // Runs every queued task here and waits for the one in progress; returns when none is left.
  void Drain();
  // Tasks queued or running.
  size_t Pending() const;

 private:
  struct State;
  static void RunQueued(const std::shared_ptr<State>& state);
  WorkerPool* pool_;
  std::shared_ptr<State> state_;
};

// One thread that runs callbacks at their time, for every session's timers (a persona that
// speaks up after a silence): not a thread or a sleeping task per session. Callbacks must be
// quick (post real work to a pool). Thread-safe.
class TimerQueue {
 public:
  using Clock = std::chrono::steady_clock;
  TimerQueue();
  ~TimerQueue();  // joins; pending callbacks are dropped
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;
  // Runs `fn` at `at` (or at once when it has passed); returns an id for Cancel.
  uint64_t Schedule(Clock::time_point at, std::function<void()> fn);
  // False when it already ran (or is running) or was cancelled.
  bool Cancel(uint64_t id);
  size_t pending() const;

 private:
  void Run();
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<Clock::time_point, std::pair<uint64_t, std::function<void()>>> timers_;
  uint64_t next_id_ = 1;
  bool quit_ = false;
  std::thread thread_;
};

// ---------------------------------------------------------------------------------------------
// Options: each module's config struct registers its own fields here (name, environment
// variable, help) in AddFlags(); the application turns the set into its command line (CLI11)
// and logs the effective values at start with Describe(). Modules stay free of the CLI library.

class FlagSet {
 public:
  struct Flag {
    std::string name;  // "--port"
    std::string env;   // "PORT" (empty: none)
    std::string help;
    std::string group;
    bool secret = false;  // shown as "***" by Describe()
    bool has_default = true;
    std::function<std::string()> get;                    // the current value, as text
    std::function<std::string(const std::string&)> set;  // parses; an error message or ""
    std::string type = "TEXT";                           // for --help: INT, NUMBER, BOOL...
  };
  // Options added after this belong to `group` ("Server", "Hearing"...).
  void Group(std::string group) { group_ = std::move(group); }
  void Add(const std::string& name, int* target, const std::string& help,
           const std::string& env = "");
  void Add(const std::string& name, double* target, const std::string& help,
           const std::string& env = "");
  void Add(const std::string& name, bool* target, const std::string& help,
           const std::string& env = "");
  void Add(const std::string& name, std::string* target, const std::string& help,
           const std::string& env = "", bool secret = false);
  // A comma-separated list.
  void Add(const std::string& name, std::vector<std::string>* target, const std::string& help,
           const std::string& env = "");
  // A byte count given in KiB.
  void AddKiB(const std::string& name, size_t* bytes, const std::string& help,
              const std::string& env = "");
  // Any other shape.
  void AddCustom(Flag flag);
  const std::vector<Flag>& flags() const { return flags_; }
  // "--name=value" for every flag, secrets masked: the effective configuration.
  Json::Value Describe() const;

 private:
  Flag Make(const std::string& name, const std::string& help, const std::string& env);
  std::string group_ = "General";
  std::vector<Flag> flags_;
};

// ---------------------------------------------------------------------------------------------
// Small helpers shared by modules.

// UTC wall time as RFC 3339 with milliseconds: "2026-11-22T03:53:59.123Z".
std::string FormatUtc(std::chrono::system_clock::time_point t);
// Milliseconds since the Unix epoch.
int64_t UnixMillis(std::chrono::system_clock::time_point t);
// Compact single-line JSON. Always valid UTF-8: a string holding invalid UTF-8 (a client's bytes
// echoed in an error) has each bad byte replaced by U+FFFD, so the output stays parseable.
std::string ToJson(const Json::Value& v);
// `text` with every byte that does not start a valid UTF-8 sequence replaced by U+FFFD
// (overlong forms, surrogates and code points past U+10FFFF are invalid).
std::string ReplaceInvalidUtf8(std::string_view text);
// Parses JSON text; nullopt with `error` filled on failure (never throws).
std::optional<Json::Value> ParseJson(std::string_view text, std::string* error = nullptr);

}  // namespace parley::core
