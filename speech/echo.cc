// Server-side echo cancellation: the persona's voice, as sent, is the reference.
//
// Three parts, each simple on its own:
// 1. Delay search. The echo comes back 60..600 ms after the packets left (network, the page's
//    buffer, the speaker, the room, the microphone, MediaRecorder). Every 250 ms while the
//    persona speaks, the 10 ms log-energy envelopes of the reference and of the microphone are
//    correlated over the last 2 s at every lag up to max_delay_ms; a clear peak sets the delay.
//    WebRTC's own delay-agnostic estimator then only has to refine within its filter.
// 2. WebRTC's AEC (extended filter, high suppression) on the microphone, fed the reference
//    shifted by that delay.
// 3. A residual-echo gate: the echo path's gain is learned as a low percentile of
//    microphone-over-reference levels while the persona speaks (steps with the user talking
//    raise the ratio, echo-only steps set its floor), so the echo expected in each step is
//    known; a step whose cleaned level is far below it is echo only and becomes silence.
#include <webrtc/modules/audio_processing/include/audio_processing.h>
#include <webrtc/modules/interface/module_common_types.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <deque>
#include <mutex>

#include "core/core.h"
#include "speech/speech.h"

namespace parley::speech {
namespace {

constexpr int kStep = 160;               // 10 ms at 16 kHz
constexpr int kSearchEverySteps = 25;    // 250 ms
constexpr int kSearchWindowSteps = 200;  // 2 s
constexpr double kSilentDb = -60.0;      // a reference step quieter than this is silence
constexpr double kLoudRefDb = -45.0;     // steps used to learn the echo path's gain
constexpr int kGainHistory = 300;        // 3 s of loud reference steps
// The echo path's gain is taken as the median of the aligned echo-only steps (measured: a 30th
// percentile sat 2-3 dB under the true gain and let word onsets through), and before alignment
// as a higher percentile against the loudest reference at any lag, which bounds it from below.
constexpr double kGainPercentile = 0.5;
constexpr double kUnalignedGainPercentile = 0.6;
constexpr double kNoEchoGainDb = -30.0;
constexpr double kAboveNoiseDb = 8.0;
constexpr double kInaudibleDb = 10.0;        // an echo this far under the room's noise is not heard
constexpr double kFloorOfFloorsDb = -110.0;  // a digitally silent room's noise, for that test
constexpr double kNegligibleEchoDb = 20.0;   // an echo this far under the user's voice is left
constexpr double kConvergedErleDb = 15.0;    // recent echo-step attenuation that trusts the AEC
// Geigel's margin: the microphone must be this much over the expected echo to be the user
// (measured in ws_load's speakerphone mix: 2 dB let word onsets through, where WebRTC's AEC
// removes little in the first steps of each utterance).
constexpr double kDoubleTalkDb = 4.0;

double LevelDb(const int16_t* x, int n) {
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const double rms = std::sqrt(sum / n) / 32768.0;
  return 20.0 * std::log10(std::max(rms, 1e-6));  // floor at -120 dBFS
}

double Energy(const int16_t* x, int n) {
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  return sum;
}

}  // namespace

std::vector<std::string> EchoConfig::Validate() const {
  std::vector<std::string> problems;
  if (max_delay_ms < 0 || max_delay_ms > 2000)
    problems.push_back("--echo-max-delay-ms must be 0..2000");
  if (gate_db < 0 || gate_db > 40) problems.push_back("--echo-gate-db must be 0..40");
  return problems;
}

void EchoConfig::AddFlags(core::FlagSet& f) {
  f.Group("Echo");
  f.Add("--echo-cancel", &enabled,
        "Cancel the persona's own voice in the microphone for sessions whose client does not say "
        "(start's \"echo\": \"server\" or \"client\")",
        "PARLEY_ECHO_CANCEL");
  f.Add("--echo-max-delay-ms", &max_delay_ms,
        "Longest delay from a sent packet to its echo in the microphone that is searched",
        "PARLEY_ECHO_MAX_DELAY_MS");
  f.Add("--echo-gate-db", &gate_db,
        "A step under the persona's voice is the user only when what is left after cancelling "
        "is within this many dB of the expected echo",
        "PARLEY_ECHO_GATE_DB");
}

struct EchoCanceller::Impl {
  explicit Impl(const EchoConfig& c)
      : config(c),
        max_lag_steps(c.max_delay_ms / 10),
        ring_steps(max_lag_steps + kSearchWindowSteps + 64),
        ref(static_cast<size_t>(ring_steps) * kStep, 0),
        ref_db(ring_steps, -120.0),
        mic_db(ring_steps, -120.0) {
    webrtc::Config apm_config;
    // The API takes ownership of these raw pointers (webrtc::Config::Set).
    apm_config.Set<webrtc::ExtendedFilter>(new webrtc::ExtendedFilter(true));
    // Our delay search aligns the reference; WebRTC's own delay-agnostic estimator, on top of
    // it, re-aligned for seconds at each start (measured: more echo let through).
    apm_config.Set<webrtc::DelayAgnostic>(new webrtc::DelayAgnostic(false));
    apm.reset(webrtc::AudioProcessing::Create(apm_config));
    if (apm) {
      apm->echo_cancellation()->Enable(true);
      apm->echo_cancellation()->set_suppression_level(webrtc::EchoCancellation::kHighSuppression);
      apm->echo_cancellation()->enable_metrics(true);
      apm->high_pass_filter()->Enable(false);
      apm->noise_suppression()->Enable(false);
      apm->gain_control()->Enable(false);
    }
  }

  // Steps before the stream's start (the first seconds' search window) wrap like any other.
  size_t Slot(int64_t step) const {
    return static_cast<size_t>(((step % ring_steps) + ring_steps) % ring_steps);
  }

  // Writes reference samples at absolute sample index `at`; a gap since the last write is
  // silence (the persona paused, or nothing was playing).
  void WriteReference(int64_t at, std::span<const int16_t> pcm) {
    const auto size = static_cast<int64_t>(ref.size());
    const int64_t from = written_until > 0 ? std::min(written_until, at) : at;
    for (int64_t i = std::max(from, at - size); i < at; ++i) ref[static_cast<size_t>(i % size)] = 0;
    for (size_t i = 0; i < pcm.size(); ++i)
      ref[static_cast<size_t>((at + static_cast<int64_t>(i)) % size)] = pcm[i];
    written_until = std::max(written_until, at + static_cast<int64_t>(pcm.size()));
    // The level of every whole step touched.
    std::array<int16_t, kStep> buf{};
    for (int64_t step = std::max(from, written_until - size) / kStep;
         (step + 1) * kStep <= written_until; ++step) {
      Copy(step, buf.data());
      const double db = LevelDb(buf.data(), kStep);
      ref_db[Slot(step)] = db;
      ref_step_known_until = std::max(ref_step_known_until, step + 1);
      if (db > kSilentDb) last_active_step = std::max(last_active_step, step);
    }
  }

  // The reference step `step` (zeros where nothing was written or it was overwritten).
  void Copy(int64_t step, int16_t* out) const {
    const int64_t from = step * kStep;
    for (int i = 0; i < kStep; ++i) {
      const int64_t at = from + i;
      const bool present =
          at < written_until && written_until - at <= static_cast<int64_t>(ref.size());
      out[i] = present ? ref[static_cast<size_t>(at % static_cast<int64_t>(ref.size()))] : 0;
    }
  }

  double RefDb(int64_t step) const {
    if (step < 0 || step >= ref_step_known_until || ref_step_known_until - step > ring_steps)
      return -120.0;
    return ref_db[Slot(step)];
  }

  // Correlates the envelopes over the last window; sets `delay_steps` on a clear peak.
  void SearchDelay(int64_t now_step) {
    const int64_t first = now_step - kSearchWindowSteps + 1;
    int voiced = 0;
    for (int64_t s = first - max_lag_steps; s <= now_step; ++s)
      if (RefDb(s) > kSilentDb) ++voiced;
    if (voiced < 50) return;  // under half a second of voice: nothing to lock on
    double mic_mean = 0;
    for (int64_t s = first; s <= now_step; ++s) mic_mean += mic_db[Slot(s)];
    mic_mean /= kSearchWindowSteps;
    double best = 0, second = 0;
    int best_lag = -1;
    for (int lag = 0; lag <= max_lag_steps; ++lag) {
      double ref_mean = 0;
      for (int64_t s = first; s <= now_step; ++s) ref_mean += std::max(RefDb(s - lag), -80.0);
      ref_mean /= kSearchWindowSteps;
      double sxy = 0, sxx = 0, syy = 0;
      for (int64_t s = first; s <= now_step; ++s) {
        const double x = std::max(RefDb(s - lag), -80.0) - ref_mean;
        const double y = std::max(mic_db[Slot(s)], -80.0) - mic_mean;
        sxy += x * y;
        sxx += x * x;
        syy += y * y;
      }
      const double r = (sxx > 0 && syy > 0) ? sxy / std::sqrt(sxx * syy) : 0;
      if (r > best) {
        if (best_lag < 0 || std::abs(lag - best_lag) > 3) second = best;
        best = r;
        best_lag = lag;
      } else if (std::abs(lag - best_lag) > 3 && r > second) {
        second = r;
      }
    }
    if (best_lag >= 0 && best > 0.4 && best - second > 0.05) delay_steps = best_lag;
  }

  // A step with no echo in it: the room (and the user, if talking).
  void HearRoom(double db) {
    quiet.push_back(db);
    if (quiet.size() > kGainHistory) quiet.pop_front();
  }
  // The quietest levels of the last 3 s of echo-free steps: the room without anyone talking.
  double NoiseFloorDb() const {
    if (quiet.empty()) return -120.0;
    std::vector<double> sorted(quiet.begin(), quiet.end());
    const size_t k = sorted.size() / 10;
    std::nth_element(sorted.begin(), sorted.begin() + static_cast<long>(k), sorted.end());
    return sorted[k];
  }

  double ExpectedEchoDb(double aligned_ref_db) const {
    if (gains.size() < 20) return aligned_ref_db;  // nothing learned yet: assume a loud echo
    std::vector<double> sorted(gains.begin(), gains.end());
    const double percentile = gains_aligned ? kGainPercentile : kUnalignedGainPercentile;
    const size_t k = static_cast<size_t>(percentile * static_cast<double>(sorted.size() - 1));
    std::nth_element(sorted.begin(), sorted.begin() + static_cast<long>(k), sorted.end());
    // Unaligned, the estimate only tells "no echo comes back at all" (a client that cancels
    // its own): otherwise the echo is taken as loud as the voice until the delay is found.
    // That needs loud voice seen over more than the longest delay.
    if (!gains_aligned &&
        (sorted[k] > kNoEchoGainDb || static_cast<int>(gains.size()) < max_lag_steps + 50))
      return aligned_ref_db;
    return aligned_ref_db + sorted[k];
  }

  const EchoConfig config;
  std::atomic<bool> active{config.enabled};  // this session cancels (SetActive)
  const int max_lag_steps;
  const int ring_steps;
  std::unique_ptr<webrtc::AudioProcessing> apm;

  mutable std::mutex mu;
  std::vector<int16_t> ref;
  std::vector<double> ref_db, mic_db;
  int64_t written_until = 0;         // absolute sample index after the newest reference sample
  int64_t ref_step_known_until = 0;  // steps below this have a level
  int64_t last_active_step = -1'000'000;
  int64_t steps_since_search = 0;
  std::optional<int> delay_steps;
  uint64_t noise_state = 0x9e3779b97f4a7c15ULL;  // comfort noise generator (LCG)
  double recent_erle_db = 0;  // moving average of the attenuation on echo-only steps
  std::deque<double> quiet;   // recent microphone step levels, for the noise floor
  std::deque<double> gains;
  bool gains_aligned = false;  // `gains` were measured against the aligned reference  // mic dB -
                               // aligned reference dB on loud reference steps
  EchoStats stats;
  double echo_in = 0, echo_out = 0;  // energies over gated steps (ERLE)
  webrtc::AudioFrame far, near;
};

EchoCanceller::EchoCanceller(const EchoConfig& config) : impl_(std::make_unique<Impl>(config)) {}
EchoCanceller::~EchoCanceller() = default;

void EchoCanceller::AddReference(int64_t t_ms, std::span<const int16_t> pcm) {
  if (!impl_->active || t_ms < 0) return;
  const std::lock_guard lock(impl_->mu);
  // A client's player plays each packet right after the one before it, or when it arrives if
  // that is later. The pacer sends the first packets of an utterance (and of a resume) together,
  // up to its lead ahead of time: placed by send time they would overwrite each other, and the
  // echo of every onset would have no reference.
  impl_->WriteReference(std::max(t_ms * (kStep / 10), impl_->written_until), pcm);
}

int EchoCanceller::Process(int64_t t_ms, std::span<int16_t> pcm) {
  Impl& m = *impl_;
  if (!m.active || !m.apm || t_ms < 0) return 0;
  const std::lock_guard lock(m.mu);
  int gated = 0;
  const int64_t first_step = t_ms / 10;
  const size_t steps = pcm.size() / kStep;
  for (size_t j = 0; j < steps; ++j) {
    const int64_t step = first_step + static_cast<int64_t>(j);
    int16_t* x = pcm.data() + j * kStep;
    const double mic = LevelDb(x, kStep);
    m.mic_db[m.Slot(step)] = mic;
    // No voice sent within the longest delay: no echo can be in this step.
    if (step - m.last_active_step > m.max_lag_steps + 20) {
      m.HearRoom(mic);
      continue;
    }
    if (++m.steps_since_search >= kSearchEverySteps) {
      m.steps_since_search = 0;
      m.SearchDelay(step);
    }
    const int lag = m.delay_steps.value_or(0);
    m.far.UpdateFrame(0, 0, nullptr, kStep, kSampleRate, webrtc::AudioFrame::kNormalSpeech,
                      webrtc::AudioFrame::kVadUnknown, 1);
    m.Copy(step - lag, m.far.data_);
    // Before the delay is known the echo may sit at any lag: expect the loudest of them.
    double aligned_ref = m.RefDb(step - lag);
    if (!m.delay_steps) {
      for (int l = 0; l <= m.max_lag_steps; ++l)
        aligned_ref = std::max(aligned_ref, m.RefDb(step - l));
    }
    m.apm->ProcessReverseStream(&m.far);
    m.near.UpdateFrame(0, 0, x, kStep, kSampleRate, webrtc::AudioFrame::kNormalSpeech,
                       webrtc::AudioFrame::kVadUnknown, 1);
    m.apm->set_stream_delay_ms(0);
    const double in_energy = Energy(x, kStep);
    std::array<int16_t, kStep> original{};
    std::copy_n(x, kStep, original.begin());
    if (m.apm->ProcessStream(&m.near) == webrtc::AudioProcessing::kNoError)
      std::copy_n(m.near.data_, kStep, x);
    ++m.stats.frames;
    // The echo expected here: the loudest reference within ±20 ms of the lag (word onsets, a
    // delay off by a step, a little reverberation) through the learned echo path.
    double near_ref = aligned_ref;
    for (int l = lag - 2; l <= lag + 2; ++l) near_ref = std::max(near_ref, m.RefDb(step - l));
    // Until the canceller has converged the delay found may still be wrong: then the echo may
    // sit at any lag, and the loudest of them is expected.
    const bool converged = m.delay_steps && m.recent_erle_db >= kConvergedErleDb;
    if (!converged) {
      for (int l = 0; l <= m.max_lag_steps; ++l) near_ref = std::max(near_ref, m.RefDb(step - l));
    }
    // Where no echo can be heard the microphone goes on untouched: the AEC has seen the step
    // (it keeps adapting), but its suppression would still colour a user's voice.
    if (near_ref <= kSilentDb) {
      std::copy(original.begin(), original.end(), x);
      m.HearRoom(LevelDb(x, kStep));
      continue;
    }
    const double expected = m.ExpectedEchoDb(near_ref);
    // An echo well under the room's noise cannot be heard. (In a digitally silent room even a
    // very faint one can: the VAD hears a -65 dBFS echo tail in digital silence as an onset.)
    if (expected < std::max(m.NoiseFloorDb(), kFloorOfFloorsDb) - kInaudibleDb) {
      std::copy(original.begin(), original.end(), x);
      continue;
    }  // an echo this faint cannot be heard as speech
    const double left = LevelDb(x, kStep);
    // The microphone itself must be louder than the echo expected there (Geigel's double-talk
    // test), and what is left after cancelling must be near that level too.
    const bool user = left >= expected - m.config.gate_db &&
                      left >= m.NoiseFloorDb() + kAboveNoiseDb &&  // not the room's noise
                      mic >= expected + kDoubleTalkDb;
    if (aligned_ref > kLoudRefDb && m.delay_steps && !user) {
      m.recent_erle_db += 0.02 * ((mic - left) - m.recent_erle_db);
    }
    // The echo path's gain, learned on echo-only steps from loud reference steps: against the
    // aligned reference once the delay is known, before that against the loudest reference at any
    // lag (which bounds it from below, so a higher percentile is taken). A client that cancels its
    // own echo shows a gain near the room's noise, and its user is then heard at any level.
    if (aligned_ref > kLoudRefDb && !user) {  // frozen while the user talks (double talk)
      if (m.delay_steps && !m.gains_aligned) {
        m.gains.clear();
        m.gains_aligned = true;
      }
      m.gains.push_back(mic - aligned_ref);
      if (m.gains.size() > kGainHistory) m.gains.pop_front();
    }
    // The user over an echo far quieter than their voice: the echo is negligible there, and the
    // AEC's suppression would only colour the voice the recogniser hears.
    if (user && mic >= expected + kNegligibleEchoDb) std::copy(original.begin(), original.end(), x);
    if (!user) {
      m.echo_in += in_energy;
      m.echo_out += Energy(x, kStep);
      // Comfort noise at the room's level in its place, as telephony does: digital silence
      // between noisy steps reads as onsets to a VAD, and the echo's residue scaled down keeps
      // a voice's spectrum.
      // A digitally silent room (a synthetic or muted source) stays digitally silent: noise
      // there would itself be a change the VAD hears.
      const double floor_db = m.NoiseFloorDb();
      const double amplitude =
          floor_db < -90.0 ? 0.0 : 32768.0 * std::pow(10.0, floor_db / 20.0) * std::sqrt(3.0);
      for (int i = 0; i < kStep; ++i) {
        m.noise_state = m.noise_state * 6364136223846793005ULL + 1442695040888963407ULL;
        const double u = static_cast<double>(m.noise_state >> 11) / 9007199254740992.0;  // [0,1)
        x[i] = static_cast<int16_t>(std::lround((2.0 * u - 1.0) * amplitude));
      }
      ++m.stats.gated_frames;
      ++gated;
    }
  }
  return gated;
}

void EchoCanceller::SetActive(bool active) { impl_->active = active; }
bool EchoCanceller::active() const { return impl_->active; }

EchoStats EchoCanceller::stats() const {
  const std::lock_guard lock(impl_->mu);
  EchoStats s = impl_->stats;
  if (impl_->delay_steps) s.delay_ms = *impl_->delay_steps * 10;
  if (impl_->echo_in > 0)
    s.erle_db = 10.0 * std::log10(impl_->echo_in / std::max(impl_->echo_out, 1.0));
  return s;
}

}  // namespace parley::speech
