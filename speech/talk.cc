// Talk metrics over a session's turns: speaking rate, fillers, questions, pauses, talk ratio
// and session-wide prosody (formulas: docs/scoring.md).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <numeric>
#include <set>
#include <sstream>

#include "speech/speech.h"

namespace parley::speech {
namespace {

std::vector<std::string> Tokens(const std::string& text) {
  std::vector<std::string> out;
  std::string w;
  for (const char c : text) {
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '\'') {
      w.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    } else if (!w.empty()) {
      out.push_back(std::move(w));
      w.clear();
    }
  }
  if (!w.empty()) out.push_back(std::move(w));
  return out;
}

const std::set<std::string, std::less<>> kFillers = {"um", "uh",  "er", "erm",
                                                     "ah", "hmm", "mm", "uhm"};
const std::set<std::string, std::less<>> kFillerPairs = {"you know", "i mean", "kind of",
                                                         "sort of"};
// "like" is a filler unless a word before it makes it a verb or a comparison ("I like",
// "would like", "looks like", "more like").
const std::set<std::string, std::less<>> kLikeIsAWordAfter = {
    "i",        "you",     "we",     "they",  "he",    "she",    "it",     "would", "i'd",
    "you'd",    "we'd",    "they'd", "do",    "don't", "did",    "didn't", "does",  "doesn't",
    "really",   "to",      "not",    "look",  "looks", "looked", "feel",   "feels", "felt",
    "sound",    "sounds",  "seem",   "seems", "more",  "much",   "just",   "what",  "something",
    "anything", "nothing", "people", "be",    "is",    "was",    "are",    "were",  "would've",
    "might",    "may",     "will",   "also"};
const std::set<std::string, std::less<>> kQuestionOpeners = {
    "what",   "why",   "how",   "when",     "where",     "who",     "whom",  "whose",
    "which",  "is",    "are",   "was",      "were",      "do",      "does",  "did",
    "can",    "could", "would", "will",     "should",    "shall",   "may",   "might",
    "have",   "has",   "had",   "am",       "isn't",     "aren't",  "don't", "doesn't",
    "didn't", "can't", "won't", "wouldn't", "shouldn't", "haven't", "hasn't"};

// Filler words in a turn's word sequence, by name.
std::vector<std::string> FindFillers(const std::vector<std::string>& words) {
  std::vector<std::string> found;
  for (size_t i = 0; i < words.size(); ++i) {
    if (kFillers.contains(words[i])) {
      found.push_back(words[i]);
    } else if (i + 1 < words.size() && kFillerPairs.contains(words[i] + " " + words[i + 1])) {
      found.push_back(words[i] + " " + words[i + 1]);
      ++i;
    } else if (words[i] == "like" && (i == 0 || !kLikeIsAWordAfter.contains(words[i - 1]))) {
      found.push_back("like");
    }
  }
  return found;
}

double Mean(const std::vector<double>& v) {
  return v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}
double Std(const std::vector<double>& v) {
  const double m = Mean(v);
  double s = 0;
  for (const double x : v) s += (x - m) * (x - m);
  return v.empty() ? 0 : std::sqrt(s / static_cast<double>(v.size()));
}

}  // namespace

bool TalkStats::IsQuestion(const std::string& text, const Prosody& prosody) {
  if (text.find('?') != std::string::npos) return true;
  const auto words = Tokens(text);
  if (words.size() >= 3 && kQuestionOpeners.contains(words.front())) return true;
  // A rising end: the last 300 ms of pitch at least 2 semitones over the turn's median.
  return prosody.voiced_frames >= 30 && prosody.f0_end_slope_semitones >= 2.0;
}

void TalkStats::AddTurn(const Recognition& r, int64_t t_start_ms, int64_t t_end_ms,
                        const Prosody& prosody) {
  const auto words = Tokens(r.text);
  const auto fillers = FindFillers(words);
  for (const auto& f : fillers) {
    auto it =
        std::find_if(fillers_.begin(), fillers_.end(), [&](const auto& e) { return e.first == f; });
    if (it == fillers_.end())
      fillers_.emplace_back(f, 1);
    else
      ++it->second;
  }
  // Silences between consecutive recognised words.
  double longest_gap = 0;
  for (size_t i = 1; i < r.words.size(); ++i)
    longest_gap = std::max(
        longest_gap, static_cast<double>(r.words[i].t_start_ms - r.words[i - 1].t_end_ms) / 1000);
  size_t filler_tokens = 0;  // "you know" is one filler of two words
  for (const auto& f : fillers)
    filler_tokens += 1 + static_cast<size_t>(std::count(f.begin(), f.end(), ' '));
  turns_.push_back({t_start_ms, t_end_ms, static_cast<int>(words.size()),
                    static_cast<int>(words.size() - filler_tokens), longest_gap});
  if (!words.empty() && IsQuestion(r.text, prosody)) ++questions_;
  f0_.insert(f0_.end(), prosody.f0_hz.begin(), prosody.f0_hz.end());
  volume_.insert(volume_.end(), prosody.volume_db.begin(), prosody.volume_db.end());
  if (prosody.loudness_lufs) lufs_.push_back(*prosody.loudness_lufs);
}

void TalkStats::AddPartnerSpeech(int64_t t_start_ms, int64_t t_end_ms) {
  if (t_end_ms > t_start_ms) partner_.emplace_back(t_start_ms, t_end_ms);
}

TalkSummary TalkStats::Summarize(double session_s) const {
  TalkSummary s;
  s.turns = static_cast<int>(turns_.size());
  int content_words = 0;
  std::vector<Turn> ordered = turns_;
  std::sort(ordered.begin(), ordered.end(),
            [](const Turn& a, const Turn& b) { return a.t_start_ms < b.t_start_ms; });
  for (size_t i = 0; i < ordered.size(); ++i) {
    const Turn& t = ordered[i];
    s.words += t.words_total;
    content_words += t.words_content;
    s.speech_s += static_cast<double>(t.t_end_ms - t.t_start_ms) / 1000;
    std::vector<double> pauses = {t.longest_gap_s};
    if (i > 0) {
      // A gap the persona spoke in is not the person's pause: only what followed its voice
      // (their response latency) counts.
      int64_t from = ordered[i - 1].t_end_ms;
      for (const auto& [a, b] : partner_)
        if (a < t.t_start_ms && b > from) from = std::max(from, std::min(b, t.t_start_ms));
      pauses.push_back(static_cast<double>(t.t_start_ms - from) / 1000);
    }
    for (const double p : pauses) {
      s.longest_pause_s = std::max(s.longest_pause_s, p);
      if (p > 1.0) ++s.pauses_over_1s;
    }
  }
  s.speaking_rate_wpm = s.speech_s > 0 ? content_words / (s.speech_s / 60) : 0;
  s.fillers = fillers_;
  for (const auto& [word, n] : fillers_) s.filler_words += n;
  s.questions_asked = questions_;
  s.talk_ratio = session_s > 0 ? std::min(1.0, s.speech_s / session_s) : 0;
  if (!f0_.empty()) {
    s.has_pitch = true;
    s.f0_mean_hz = Mean(f0_);
    s.f0_std_hz = Std(f0_);
    std::vector<double> sorted = f0_;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    std::vector<double> st;
    st.reserve(f0_.size());
    for (const double hz : f0_) st.push_back(12 * std::log2(hz / median));
    s.f0_std_semitones = Std(st);
    const double p05 = sorted[static_cast<size_t>(0.05 * static_cast<double>(sorted.size() - 1))];
    const double p95 = sorted[static_cast<size_t>(0.95 * static_cast<double>(sorted.size() - 1))];
    s.f0_range_semitones = 12 * std::log2(p95 / p05);
  }
  if (!volume_.empty()) {
    s.has_volume = true;
    s.volume_dbfs_mean = Mean(volume_);
    s.volume_dbfs_std = Std(volume_);
  }
  if (!lufs_.empty()) {
    // Loudness averages as energy, not as decibels.
    double energy = 0;
    for (const double l : lufs_) energy += std::pow(10, l / 10);
    s.loudness_lufs = 10 * std::log10(energy / static_cast<double>(lufs_.size()));
  }
  return s;
}

}  // namespace parley::speech
