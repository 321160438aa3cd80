// The dropped-connection storm of tests/storm_test.cc, measured: --sessions sessions x
// --connections WebSocket connections dropped without a close frame (a third after `start` with
// --voiced seconds of voiced sound), disconnect grace 1 s, --repeat times against a fresh
// in-process server each. Prints each run and the medians: sessions ended per second after the
// storm (reports stored / (time to the last report - the grace)), /health p50/p99/max and the
// listing's p99 during it.
//   build/default/bench/storm_bench --repeat 5
//   STORM_LOGS=1 build/default/bench/storm_bench --repeat 1   (also prints the server's logs)
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "tests/support/storm.h"

int main(int argc, char** argv) {
  CLI::App cli{"Sessions ended per second and /health latency through a dropped-connection storm"};
  parley::testing::StormOptions options;
  int repeat = 5, general_workers = 2;
  cli.add_option("--sessions", options.sessions, "Sessions in the storm");
  cli.add_option("--connections", options.connections_per_session,
                 "Connections opened and dropped per session");
  cli.add_option("--voiced", options.voiced_s, "Seconds of voiced sound after each start");
  cli.add_option("--workers", general_workers, "General (request) workers of the server");
  cli.add_option("--repeat", repeat, "Storms (medians are reported)");
  CLI11_PARSE(cli, argc, argv);
  using parley::testing::Percentile;
  std::vector<double> rates;
  std::vector<int64_t> p50s, p99s, maxes, list_p99s;
  int errors = 0;
  for (int run = 0; run < repeat; ++run) {
    parley::testing::TestServer server([&](parley::app::AppConfig& c) {
      c.sessions.disconnect_grace_s = 1;
      c.workers.threads = general_workers;
    });
    const auto r = parley::testing::RunStorm(server, options);
    const double rate =
        static_cast<double>(r.reports_stored) / std::max(0.1, r.all_reported_s - 1.0);
    rates.push_back(rate);
    p50s.push_back(Percentile(r.health_ms, 0.5));
    p99s.push_back(Percentile(r.health_ms, 0.99));
    maxes.push_back(Percentile(r.health_ms, 1.0));
    list_p99s.push_back(Percentile(r.list_ms, 0.99));
    errors += static_cast<int>(r.errors.size()) + r.failed_probes;
    std::printf(
        "run %d: %zu/%d reports in %.1f s (%.1f ended/s); /health p50 %lld p99 %lld max %lld ms; "
        "listing p99 %lld ms; %zu probes, %zu errors, %d failed probes\n",
        run + 1, r.reports_stored, options.sessions, r.all_reported_s, rate,
        static_cast<long long>(p50s.back()), static_cast<long long>(p99s.back()),
        static_cast<long long>(maxes.back()), static_cast<long long>(list_p99s.back()),
        r.health_ms.size(), r.errors.size(), r.failed_probes);
    for (const auto& e : r.errors) std::printf("  %s\n", e.c_str());
    if (std::getenv("STORM_LOGS")) std::fputs(server.Logs().c_str(), stderr);
  }
  const auto median = [](auto v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf(
      "median of %d: %.1f sessions ended/s; /health p50 %lld p99 %lld max %lld ms; "
      "listing p99 %lld ms\n",
      repeat, median(rates), static_cast<long long>(median(p50s)),
      static_cast<long long>(median(p99s)), static_cast<long long>(median(maxes)),
      static_cast<long long>(median(list_p99s)));
  return errors == 0 ? 0 : 1;
}
