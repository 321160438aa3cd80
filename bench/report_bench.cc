// What a long session's report costs when it ends and when it is downloaded: BuildReport (the
// scores, summary and tips included) and the three renderings, for a 30-minute session shaped
// like a real one (a timeline sample a second, blinks and gaze events, ~360 turns with word
// timings). Run with --benchmark_repetitions=30 for the median and the p99 across repetitions.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "app/app_impl.h"
#include "session/session.h"
#include "store/store.h"

namespace parley {
namespace {

constexpr int kSeconds = 30 * 60;

std::shared_ptr<session::Session> LongSession() {
  auto s = std::make_shared<session::Session>("bench-session", "alice", "seoa", nullptr);
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0, 1);
  for (int t = 0; t < kSeconds; ++t) {
    Json::Value v(Json::objectValue);
    v["gaze_on_screen_ratio"] = 0.7 + 0.3 * u(rng);
    v["blink_rate_per_min"] = 10 + 10 * u(rng);
    v["smile_ratio"] = 0.3 * u(rng);
    v["face_visible_ratio"] = 0.95 + 0.05 * u(rng);
    v["head_yaw_deg"] = 10 * u(rng) - 5;
    v["head_pitch_deg"] = 10 * u(rng) - 5;
    v["head_roll_deg"] = 4 * u(rng) - 2;
    s->timeline().AddSample(int64_t{t} * 1000, v);
    if (t % 4 == 0) s->timeline().AddEvent(int64_t{t} * 1000 + 300, "blink");
    if (t % 45 == 0) {
      Json::Value d(Json::objectValue);
      d["duration_ms"] = 1800;
      s->timeline().AddEvent(int64_t{t} * 1000 + 500, "gaze_away", d);
    }
  }
  const char* const words[] = {"so",    "I",    "think",  "the",     "project", "went",
                               "well",  "and",  "we",     "learned", "a",       "lot",
                               "about", "what", "people", "want"};
  for (int turn = 0, t = 2000; t < kSeconds * 1000 - 6000; ++turn) {
    session::TranscriptTurn tt;
    tt.role = turn % 2 == 0 ? "user" : "assistant";
    const int n = 8 + static_cast<int>(rng() % 20);
    tt.t_start_ms = t;
    tt.extra = Json::Value(Json::objectValue);
    for (int w = 0; w < n; ++w) {
      const std::string word = words[rng() % std::size(words)];
      tt.text += (w ? " " : "") + word;
      Json::Value wj(Json::objectValue);
      wj["w"] = word;
      wj["t_start"] = t + w * 320;
      wj["t_end"] = t + w * 320 + 280;
      tt.extra["words"].append(wj);
    }
    if (turn % 7 == 3) tt.text += "?";
    tt.t_end_ms = t + n * 320;
    t = static_cast<int>(tt.t_end_ms) + 400 + static_cast<int>(rng() % 800);
    s->timeline().AddTurn(std::move(tt));
  }
  Json::Value patch(Json::objectValue);
  Json::Value& m = patch["metrics"];
  m["speaking_rate_wpm"] = 142.0;
  m["pitch_hz"]["mean"] = 180.0;
  m["pitch_hz"]["std"] = 24.0;
  m["volume_db"]["mean"] = -24.0;
  m["volume_db"]["std"] = 3.0;
  m["talk_ratio"] = 0.47;
  m["turns"] = 180;
  m["questions_asked"] = 26;
  m["filler_words"] = 40;
  m["longest_pause_s"] = 2.4;
  m["response_latency_s"]["median"] = 0.8;
  m["response_latency_s"]["p90"] = 1.6;
  m["gaze_on_screen_ratio"] = 0.85;
  m["blink_rate_per_min"] = 15.0;
  m["smile_ratio"] = 0.15;
  m["face_visible_ratio"] = 0.97;
  m["speech"]["speech_s"] = 800.0;
  m["speech"]["pitch_std_semitones"] = 2.6;
  m["speech"]["words"] = 2000;
  m["conversation"]["persona_speech_s"] = 820.0;
  m["conversation"]["user_share_of_speech"] = 0.494;
  m["conversation"]["persona_turns"] = 180;
  m["conversation"]["interruptions"]["count"] = 4;
  m["conversation"]["interruptions"]["per_min"] = 0.13;
  Json::Value& user = m["conversation"]["user_turns"];
  user["opened"] = 30;
  user["questions_about_persona"] = 12;
  user["positive_words"] = 60;
  user["negative_words"] = 10;
  user["smiled"] = 50;
  patch["feedback"]["gaze_stability"] = 85;
  patch["feedback"]["blinking"] = 90;
  patch["feedback"]["posture"] = 92;
  patch["feedback"]["expression_score"] = 60;
  s->MergeReport(patch);
  s->SetRecordedDuration(kSeconds);
  return s;
}

// p99 across repetitions (Google Benchmark gives mean, median and stddev itself).
double P99(const std::vector<double>& v) {
  std::vector<double> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  return sorted[std::min(sorted.size() - 1,
                         static_cast<size_t>(std::ceil(0.99 * sorted.size())) - 1)];
}

void BM_BuildReport30Min(benchmark::State& state) {
  const auto s = LongSession();
  for (auto _ : state) benchmark::DoNotOptimize(session::BuildReport(*s, "Seoa Lee"));
}

// As the API serves it: dates as strings (store::ToPublicJson), then rendered.
Json::Value PublicReport() {
  static const Json::Value report =
      store::ToPublicJson(session::BuildReport(*LongSession(), "Seoa Lee"));
  return report;
}

void BM_RenderHtml30Min(benchmark::State& state) {
  const Json::Value r = PublicReport();
  for (auto _ : state) benchmark::DoNotOptimize(app::RenderReportHtml(r));
  state.counters["bytes"] = static_cast<double>(app::RenderReportHtml(r).size());
}

void BM_RenderCsv30Min(benchmark::State& state) {
  const Json::Value r = PublicReport();
  for (auto _ : state) benchmark::DoNotOptimize(app::RenderReportCsv(r));
}

void BM_RenderTurnsCsv30Min(benchmark::State& state) {
  const Json::Value r = PublicReport();
  for (auto _ : state) benchmark::DoNotOptimize(app::RenderTurnsCsv(r));
}

BENCHMARK(BM_BuildReport30Min)->Unit(benchmark::kMillisecond)->ComputeStatistics("p99", P99);
BENCHMARK(BM_RenderHtml30Min)->Unit(benchmark::kMillisecond)->ComputeStatistics("p99", P99);
BENCHMARK(BM_RenderCsv30Min)->Unit(benchmark::kMillisecond)->ComputeStatistics("p99", P99);
BENCHMARK(BM_RenderTurnsCsv30Min)->Unit(benchmark::kMillisecond)->ComputeStatistics("p99", P99);

}  // namespace
}  // namespace parley

BENCHMARK_MAIN();
