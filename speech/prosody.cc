// Prosody of one utterance: pitch by YIN, volume in dBFS, loudness in LUFS (libebur128).
//
// Why a hand-written YIN: the pitch trackers packaged here are GPL (aubio) or integer-lag only
// (sphinxbase's yin, ±1 sample: 2.5 % at 400 Hz), and the report wants 1 %.
#include <ebur128.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "speech/speech.h"

namespace parley::speech {
namespace {

constexpr int kStepSamples = kSampleRate / 100;  // pitch every 10 ms
constexpr int kVolumeBlock = kSampleRate / 20;   // volume over 50 ms
constexpr double kFullScale = 32768.0;

double Dbfs(double rms) { return 20 * std::log10(std::max(rms, 1e-9) / kFullScale); }

double Rms(std::span<const int16_t> x) {
  double sum = 0;
  for (const int16_t v : x) sum += static_cast<double>(v) * v;
  return x.empty() ? 0 : std::sqrt(sum / static_cast<double>(x.size()));
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<size_t>(std::lround(p * static_cast<double>(v.size() - 1)));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

double Semitones(double hz, double reference_hz) { return 12 * std::log2(hz / reference_hz); }

struct EburDeleter {
  void operator()(ebur128_state* s) const { ebur128_destroy(&s); }
};

}  // namespace

PitchTracker::PitchTracker(double min_hz, double max_hz, double threshold)
    : min_hz_(min_hz), max_hz_(max_hz), threshold_(threshold) {
  const auto max_lag = static_cast<size_t>(std::ceil(kSampleRate / min_hz_));
  frame_ = 2 * max_lag;
  diff_.resize(max_lag + 2);
}

std::optional<double> PitchTracker::Estimate(std::span<const int16_t> frame) {
  if (frame.size() < frame_) return std::nullopt;
  const size_t max_lag = diff_.size() - 2;
  const size_t window = frame_ - max_lag - 1;
  const auto min_lag = static_cast<size_t>(std::floor(kSampleRate / max_hz_));
  // Difference function d(τ) and its cumulative-mean normalisation d'(τ).
  diff_[0] = 1;
  double running = 0;
  for (size_t lag = 1; lag <= max_lag + 1; ++lag) {
    double d = 0;
    for (size_t j = 0; j < window; ++j) {
      const double delta = static_cast<double>(frame[j]) - frame[j + lag];
      d += delta * delta;
    }
    running += d;
    diff_[lag] = running > 0 ? d * static_cast<double>(lag) / running : 1;
  }
  // The first dip under the threshold, followed down to its minimum.
  size_t best = 0;
  for (size_t lag = std::max<size_t>(min_lag, 2); lag <= max_lag; ++lag) {
    if (diff_[lag] < threshold_) {
      while (lag + 1 <= max_lag && diff_[lag + 1] < diff_[lag]) ++lag;
      best = lag;
      break;
    }
  }
  if (best == 0) return std::nullopt;
  // Parabola through the three points around the minimum: sub-sample period.
  const double a = diff_[best - 1], b = diff_[best], c = diff_[best + 1];
  const double denominator = a - 2 * b + c;
  const double shift = std::abs(denominator) > 1e-12 ? 0.5 * (a - c) / denominator : 0;
  const double period = static_cast<double>(best) + std::clamp(shift, -1.0, 1.0);
  const double hz = kSampleRate / period;
  if (hz < min_hz_ || hz > max_hz_) return std::nullopt;
  return hz;
}

Prosody AnalyzeProsody(std::span<const int16_t> pcm) {
  Prosody p;
  // Volume per 50 ms block; "active" blocks are within 40 dB of the loudest and above -60 dBFS,
  // so the pre-roll's room noise and the trailing silence do not count.
  std::vector<double> blocks;
  for (size_t at = 0; at + kVolumeBlock <= pcm.size(); at += kVolumeBlock)
    blocks.push_back(Dbfs(Rms(pcm.subspan(at, kVolumeBlock))));
  const double loudest = blocks.empty() ? -100 : *std::max_element(blocks.begin(), blocks.end());
  const double gate = std::max(-60.0, loudest - 40);
  for (const double db : blocks)
    if (db >= gate) p.volume_db.push_back(db);
  if (!p.volume_db.empty()) {
    p.volume_dbfs_mean = std::accumulate(p.volume_db.begin(), p.volume_db.end(), 0.0) /
                         static_cast<double>(p.volume_db.size());
    double var = 0;
    for (const double db : p.volume_db)
      var += (db - p.volume_dbfs_mean) * (db - p.volume_dbfs_mean);
    p.volume_dbfs_std = std::sqrt(var / static_cast<double>(p.volume_db.size()));
  }
  // EBU R128 integrated loudness (needs 400 ms of audio).
  if (std::unique_ptr<ebur128_state, EburDeleter> st(ebur128_init(1, kSampleRate, EBUR128_MODE_I));
      st && pcm.size() >= kSampleRate * 4 / 10) {
    double lufs = 0;
    if (ebur128_add_frames_short(st.get(), pcm.data(), pcm.size()) == EBUR128_SUCCESS &&
        ebur128_loudness_global(st.get(), &lufs) == EBUR128_SUCCESS && std::isfinite(lufs))
      p.loudness_lufs = lufs;
  }
  // Pitch every 10 ms over frames loud enough to be voice (within 30 dB of the loudest block).
  PitchTracker yin;
  const size_t frame = yin.frame_samples();
  const double pitch_gate = std::max(-50.0, loudest - 30);
  std::vector<double> f0;
  for (size_t at = 0; at + frame <= pcm.size(); at += kStepSamples) {
    const auto window = pcm.subspan(at, frame);
    if (Dbfs(Rms(window)) < pitch_gate) continue;
    if (const auto hz = yin.Estimate(window)) f0.push_back(*hz);
  }
  if (f0.empty()) return p;
  // Octave errors (a period doubled or halved) are far from the turn's median: drop them.
  const double median = Percentile(f0, 0.5);
  for (const double hz : f0)
    if (std::abs(Semitones(hz, median)) < 9) p.f0_hz.push_back(hz);
  p.voiced_frames = static_cast<int>(p.f0_hz.size());
  if (p.f0_hz.empty()) return p;
  p.f0_median_hz = median;
  p.f0_mean_hz =
      std::accumulate(p.f0_hz.begin(), p.f0_hz.end(), 0.0) / static_cast<double>(p.f0_hz.size());
  double var = 0;
  for (const double hz : p.f0_hz) var += std::pow(Semitones(hz, median), 2);
  p.f0_std_semitones = std::sqrt(var / static_cast<double>(p.f0_hz.size()));
  p.f0_range_semitones =
      Semitones(Percentile(p.f0_hz, 0.95), std::max(1.0, Percentile(p.f0_hz, 0.05)));
  // The end's pitch (last 300 ms of pitched frames) against the median: rising ends mark
  // questions.
  const size_t tail = std::min<size_t>(30, p.f0_hz.size());
  const std::vector<double> end(p.f0_hz.end() - static_cast<long>(tail), p.f0_hz.end());
  p.f0_end_slope_semitones = Semitones(Percentile(end, 0.5), median);
  return p;
}

}  // namespace parley::speech
