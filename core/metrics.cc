#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/core.h"

namespace parley::core {
namespace {

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string RenderLabels(const Labels& labels) {
  if (labels.empty()) return {};
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i > 0) out.push_back(',');
    out += labels[i].first + "=\"" + EscapeLabelValue(labels[i].second) + "\"";
  }
  out.push_back('}');
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace

Metrics::Family& Metrics::FamilyFor(const std::string& name, const std::string& help, Kind kind) {
  auto [it, inserted] = families_.try_emplace(name);
  if (inserted) {
    it->second.kind = kind;
    it->second.help = help;
  }
  return it->second;
}

Counter& Metrics::GetCounter(const std::string& name, const std::string& help,
                             const Labels& labels) {
  const std::lock_guard lock(mu_);
  Series& s = FamilyFor(name, help, Kind::kCounter).series[RenderLabels(labels)];
  if (!s.counter) s.counter = std::make_unique<Counter>();
  return *s.counter;
}

Gauge& Metrics::GetGauge(const std::string& name, const std::string& help, const Labels& labels) {
  const std::lock_guard lock(mu_);
  Series& s = FamilyFor(name, help, Kind::kGauge).series[RenderLabels(labels)];
  if (!s.gauge) s.gauge = std::make_unique<Gauge>();
  return *s.gauge;
}

void Metrics::AddGaugeCallback(const std::string& name, const std::string& help,
                               const Labels& labels, std::function<double()> read) {
  const std::lock_guard lock(mu_);
  FamilyFor(name, help, Kind::kGauge).series[RenderLabels(labels)].read = std::move(read);
}

std::optional<double> Metrics::Read(const std::string& name, const Labels& labels) const {
  std::function<double()> read;
  {
    const std::lock_guard lock(mu_);
    const auto fam = families_.find(name);
    if (fam == families_.end()) return std::nullopt;
    const auto s = fam->second.series.find(RenderLabels(labels));
    if (s == fam->second.series.end()) return std::nullopt;
    if (s->second.counter) return s->second.counter->Value();
    if (s->second.gauge) return s->second.gauge->Value();
    read = s->second.read;
  }
  if (read) return read();
  return std::nullopt;
}

std::string Metrics::RenderPrometheus() const {
  // Gauge callbacks may take other locks (the session registry's, say); snapshot the series
  // under mu_ and read them after releasing it so no lock order ties the two together.
  struct Row {
    std::string line_prefix;
    const Counter* counter;
    const Gauge* gauge;
    std::function<double()> read;
  };
  struct Block {
    std::string header;
    std::vector<Row> rows;
  };
  std::vector<Block> blocks;
  {
    const std::lock_guard lock(mu_);
    blocks.reserve(families_.size());
    for (const auto& [name, fam] : families_) {
      Block b;
      b.header = "# HELP " + name + ' ' + fam.help + "\n# TYPE " + name + ' ' +
                 (fam.kind == Kind::kCounter ? "counter" : "gauge") + '\n';
      for (const auto& [labels, s] : fam.series) {
        b.rows.push_back({name + labels, s.counter.get(), s.gauge.get(), s.read});
      }
      blocks.push_back(std::move(b));
    }
  }
  std::ostringstream out;
  for (const Block& b : blocks) {
    out << b.header;
    for (const Row& r : b.rows) {
      double v = 0;
      if (r.counter != nullptr) v = r.counter->Value();
      if (r.gauge != nullptr) v = r.gauge->Value();
      if (r.read) v = r.read();
      out << r.line_prefix << ' ' << FormatValue(v) << '\n';
    }
  }
  return out.str();
}

int CountOpenFds() {
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc/self/fd", ec);
  if (ec) return -1;
  int n = 0;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (ec) return -1;
    ++n;
  }
  return n - 1;  // the iterator's own descriptor of /proc/self/fd
}

int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size_pages = 0, resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return -1;
  return resident_pages * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

int CountThreads() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  }
  return -1;
}

void NameThisThread(const std::string& name) {
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

namespace {

const std::set<std::string, std::less<>> kThreadGroups = {
    "lws",    "general",     "asr",   "asr_remote", "vision", "replies", "voice",
    "uploads", "session_end", "pacer", "gstreamer",  "timers"};

// CPU seconds of the process's live threads, summed by what their names say they do. Threads
// that have exited are not in /proc/self/task: their time shows in "other" (the process total
// minus the named groups).
std::map<std::string, double> ThreadCpuByGroup() {
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  const auto cpu_of = [tick](const std::string& stat_path) {
    std::ifstream in(stat_path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    if (close == std::string::npos) return 0.0;
    std::istringstream rest(text.substr(close + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14) utime = std::stoull(field);
      if (i == 15) stime = std::stoull(field);
    }
    return static_cast<double>(utime + stime) / tick;
  };
  std::map<std::string, double> groups;
  double named = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream comm_file(task.path() / "comm");
    std::string comm;
    std::getline(comm_file, comm);
    // Worker pools are "p:<pool>"; GStreamer names its streaming threads after their pads
    // ("<element>:src"); the rest are named where they start.
    std::string group;
    if (comm.rfind("p:", 0) == 0) {
      group = comm.substr(2);
    } else if (comm == "decoder-loader") {
      group = "asr";
    } else if (comm == "lws" || comm == "pacer" || comm == "timers") {
      group = comm;
    } else if (comm.find(':') != std::string::npos) {
      group = "gstreamer";
    } else {
      continue;
    }
    if (!kThreadGroups.contains(group)) continue;
    const double s = cpu_of((task.path() / "stat").string());
    groups[group] += s;
    named += s;
  }
  groups["other"] = std::max(0.0, cpu_of("/proc/self/stat") - named);
  return groups;
}

}  // namespace

void AddProcessMetrics(Metrics& metrics) {
  // One reading of /proc per scrape, shared by the groups' gauges.
  struct Cache {
    std::mutex mu;
    std::chrono::steady_clock::time_point at{};
    std::map<std::string, double> groups;
  };
  auto cache = std::make_shared<Cache>();
  std::vector<std::string> groups(kThreadGroups.begin(), kThreadGroups.end());
  groups.emplace_back("other");
  for (const std::string& group : groups) {
    metrics.AddGaugeCallback(
        "parley_thread_cpu_seconds",
        "CPU seconds of the process's threads by what they do (worker pool, lws service, pacer, "
        "GStreamer streaming; other: the rest and exited threads)",
        {{"group", group}}, [cache, g = group] {
          const std::lock_guard lock(cache->mu);
          const auto now = std::chrono::steady_clock::now();
          if (now - cache->at > std::chrono::milliseconds(100)) {
            cache->groups = ThreadCpuByGroup();
            cache->at = now;
          }
          const auto it = cache->groups.find(g);
          return it == cache->groups.end() ? 0.0 : it->second;
        });
  }
  metrics.AddGaugeCallback("process_open_fds", "Open file descriptors", {},
                           [] { return static_cast<double>(CountOpenFds()); });
  metrics.AddGaugeCallback("process_resident_memory_bytes", "Resident memory size in bytes", {},
                           [] { return static_cast<double>(ResidentBytes()); });
  metrics.AddGaugeCallback("process_threads", "Threads in the process", {},
                           [] { return static_cast<double>(CountThreads()); });
}

}  // namespace parley::core
