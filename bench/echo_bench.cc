// CPU of the echo path per 20 ms of a session's microphone: while the persona speaks (delay
// search, WebRTC's AEC, the gate) and while it is silent (nothing runs).
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>

#include "speech/speech.h"
#include "tests/support/flite_voice.h"

namespace {

constexpr int kFrame = 320;  // 20 ms at 16 kHz

void BM_EchoWhileThePersonaSpeaks(benchmark::State& state) {
  const auto voice = parley::testing::FliteSpeak(
      "slt", "Thanks for coming in today. Tell me a little about yourself and what you enjoy.");
  parley::speech::EchoConfig config;
  config.enabled = true;
  parley::speech::EchoCanceller echo(config);
  std::mt19937 rng(1);
  std::normal_distribution<double> noise(0, 30);
  std::vector<int16_t> frame(kFrame);
  int64_t t = 0;
  const int delay = static_cast<int>(state.range(0)) * 16;  // samples
  for (auto _ : state) {
    const size_t at = static_cast<size_t>(t * 16) % voice.size();
    std::span<const int16_t> ref(voice.data() + at, std::min<size_t>(kFrame, voice.size() - at));
    echo.AddReference(t, ref);
    for (int i = 0; i < kFrame; ++i) {
      const int64_t p = static_cast<int64_t>(at) + i - delay;
      const double e = p >= 0 ? 0.5 * voice[static_cast<size_t>(p) % voice.size()] : 0;
      frame[i] = static_cast<int16_t>(std::clamp(e + noise(rng), -32768.0, 32767.0));
    }
    benchmark::DoNotOptimize(echo.Process(t, frame));
    t += 20;
  }
  state.counters["erle_db"] = echo.stats().erle_db.value_or(0);
  state.counters["delay_ms"] = echo.stats().delay_ms.value_or(-1);
  state.SetLabel("per 20 ms frame");
}
BENCHMARK(BM_EchoWhileThePersonaSpeaks)->Arg(60)->Arg(300);

void BM_EchoWhileSilent(benchmark::State& state) {
  parley::speech::EchoConfig config;
  config.enabled = true;
  parley::speech::EchoCanceller echo(config);
  std::vector<int16_t> frame(kFrame, 100);
  int64_t t = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(echo.Process(t, frame));
    t += 20;
  }
  state.SetLabel("per 20 ms frame");
}
BENCHMARK(BM_EchoWhileSilent);

}  // namespace

BENCHMARK_MAIN();
