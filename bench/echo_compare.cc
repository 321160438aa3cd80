// The two echo cancellers Debian offers, on the same echo: WebRTC's AEC (what Parley uses,
// libwebrtc-audio-processing) and speexdsp's MDF canceller with its residual-echo suppressor.
// Both get the reference already shifted by the true delay (Parley's own delay search does that
// for WebRTC's), so this compares the cancellers, not delay estimation. The echo is Flite's voice
// delayed, attenuated, with room noise; ERLE is over echo-only frames, CPU per 10 ms frame.
// Built only when libspeexdsp-dev is installed (it is not a dependency of the server).
#include <benchmark/benchmark.h>
#include <speex/speex_echo.h>
#include <speex/speex_preprocess.h>
#include <webrtc/modules/audio_processing/include/audio_processing.h>
#include <webrtc/modules/interface/module_common_types.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "tests/support/flite_voice.h"

namespace {

constexpr int kRate = 16000;
constexpr int kStep = 160;  // 10 ms

struct Room {
  std::vector<int16_t> reference, microphone;
};

// `seconds` of the persona's voice and its echo `attenuation_db` down, with -60 dBFS noise.
// The reference is already aligned with the echo (the delay is taken out).
Room MakeRoom(double attenuation_db) {
  const auto voice = parley::testing::FliteSpeak(
      "slt",
      "Thanks for coming in today. Tell me a little about yourself and what you enjoy. I would "
      "love to hear about the last trip you took, and what surprised you most about it.");
  Room r;
  r.reference = voice;
  r.microphone.resize(voice.size());
  std::mt19937 rng(7);
  std::normal_distribution<double> noise(0, 32768 * 0.001);
  const double gain = std::pow(10.0, -attenuation_db / 20.0);
  // A short room response: the direct path and two reflections.
  for (size_t i = 0; i < voice.size(); ++i) {
    double e = gain * voice[i];
    if (i >= 80) e += 0.3 * gain * voice[i - 80];
    if (i >= 400) e += 0.1 * gain * voice[i - 400];
    r.microphone[i] = static_cast<int16_t>(std::clamp(e + noise(rng), -32768.0, 32767.0));
  }
  return r;
}

double LevelDb(const int16_t* x, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return 10 * std::log10(std::max(s / n, 1e-9) / (32768.0 * 32768.0));
}

// ERLE over frames whose reference is loud (echo only: nobody else talks in this room).
struct Erle {
  double in = 0, out = 0;
  void Add(const int16_t* ref, const int16_t* mic, const int16_t* cleaned) {
    if (LevelDb(ref, kStep) < -45) return;
    for (int i = 0; i < kStep; ++i) {
      in += static_cast<double>(mic[i]) * mic[i];
      out += static_cast<double>(cleaned[i]) * cleaned[i];
    }
  }
  double Db() const { return out > 0 ? 10 * std::log10(in / out) : 99; }
};

// Feeds the room to `cancel(reference, microphone, out)` one 10 ms frame per iteration, round
// and round; ERLE counts from the second pass on (both cancellers have converged by then).
template <typename Cancel>
double RunRoom(benchmark::State& state, const Room& room, Cancel cancel) {
  std::vector<int16_t> out(kStep);
  Erle erle;
  size_t at = 0;
  int pass = 0;
  for (auto _ : state) {
    if (at + kStep > room.reference.size()) {
      at = 0;
      ++pass;
    }
    cancel(room.reference.data() + at, room.microphone.data() + at, out.data());
    if (pass > 0) erle.Add(room.reference.data() + at, room.microphone.data() + at, out.data());
    at += kStep;
  }
  return erle.Db();
}

void BM_WebRtcAec(benchmark::State& state) {
  const Room room = MakeRoom(static_cast<double>(state.range(0)));
  webrtc::Config config;
  config.Set<webrtc::ExtendedFilter>(new webrtc::ExtendedFilter(true));
  config.Set<webrtc::DelayAgnostic>(new webrtc::DelayAgnostic(false));
  std::unique_ptr<webrtc::AudioProcessing> apm(webrtc::AudioProcessing::Create(config));
  apm->echo_cancellation()->Enable(true);
  apm->echo_cancellation()->set_suppression_level(webrtc::EchoCancellation::kHighSuppression);
  webrtc::AudioFrame far, near;
  state.counters["erle_db"] =
      RunRoom(state, room, [&](const int16_t* ref, const int16_t* mic, int16_t* out) {
        far.UpdateFrame(0, 0, ref, kStep, kRate, webrtc::AudioFrame::kNormalSpeech,
                        webrtc::AudioFrame::kVadUnknown, 1);
        apm->ProcessReverseStream(&far);
        near.UpdateFrame(0, 0, mic, kStep, kRate, webrtc::AudioFrame::kNormalSpeech,
                         webrtc::AudioFrame::kVadUnknown, 1);
        apm->set_stream_delay_ms(0);
        apm->ProcessStream(&near);
        std::copy_n(near.data_, kStep, out);
      });
  state.SetLabel("per 10 ms frame, after the first pass");
}
BENCHMARK(BM_WebRtcAec)->Arg(6)->Arg(20);

// speexdsp: a 100 ms MDF filter (the reflections are within it) and its residual-echo suppressor.
void BM_SpeexMdf(benchmark::State& state) {
  const Room room = MakeRoom(static_cast<double>(state.range(0)));
  const bool suppress = state.range(1) != 0;
  const std::unique_ptr<SpeexEchoState, decltype(&speex_echo_state_destroy)> echo(
      speex_echo_state_init(kStep, kRate / 10), speex_echo_state_destroy);
  int rate = kRate;
  speex_echo_ctl(echo.get(), SPEEX_ECHO_SET_SAMPLING_RATE, &rate);
  const std::unique_ptr<SpeexPreprocessState, decltype(&speex_preprocess_state_destroy)> pre(
      speex_preprocess_state_init(kStep, kRate), speex_preprocess_state_destroy);
  speex_preprocess_ctl(pre.get(), SPEEX_PREPROCESS_SET_ECHO_STATE, echo.get());
  int off = 0;
  speex_preprocess_ctl(pre.get(), SPEEX_PREPROCESS_SET_DENOISE, &off);
  state.counters["erle_db"] =
      RunRoom(state, room, [&](const int16_t* ref, const int16_t* mic, int16_t* out) {
        speex_echo_cancellation(echo.get(), mic, ref, out);
        if (suppress) speex_preprocess_run(pre.get(), out);
      });
  state.SetLabel(suppress ? "MDF + residual suppression, per 10 ms frame"
                          : "MDF alone, per 10 ms frame");
}
BENCHMARK(BM_SpeexMdf)->Args({6, 0})->Args({6, 1})->Args({20, 0})->Args({20, 1});

}  // namespace

BENCHMARK_MAIN();
