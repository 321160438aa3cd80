// The interruption policy (docs/scoring.md "Interruptions"): pause at once, cancel on real
// speech, resume after a false alarm.
#include <algorithm>

#include "core/core.h"
#include "dialogue/dialogue.h"
#include "dialogue/text.h"

namespace parley::dialogue {

std::string InterruptionConfig::Validate() const {
  if (min_speech_ms < 50 || min_speech_ms > 10000)
    return "interruption speech must be 50..10000 ms";
  if (backchannel_max_ms < min_speech_ms || backchannel_max_ms > 10000)
    return "the longest backchannel must be the interruption speech..10000 ms";
  if (min_words < 1 || min_words > 20) return "interruption words must be 1..20";
  if (!(min_word_confidence >= 0 && min_word_confidence <= 1))
    return "an interrupting word's confidence must be 0..1";
  if (final_wait_ms < 0 || final_wait_ms > 30000)
    return "the wait for an interruption's transcript must be 0..30000 ms";
  if (false_interruption_ms < 200 || false_interruption_ms > 30000)
    return "false-interruption timeout must be 200..30000 ms";
  if (warmup_ms < 0 || warmup_ms > 10000 || warmup_min_speech_ms < min_speech_ms)
    return "interruption warm-up must be 0..10000 ms, its speech at least the usual";
  return {};
}

void InterruptionConfig::AddFlags(core::FlagSet& f) {
  f.Group("Dialogue");
  f.Add("--interrupt-min-speech-ms", &min_speech_ms,
        "User speech this long over the persona's voice, with a real word heard, interrupts it "
        "(shorter only pauses it)",
        "PARLEY_INTERRUPT_MIN_SPEECH_MS");
  f.Add("--backchannel-max-ms", &backchannel_max_ms,
        "User speech this long interrupts before the recogniser has heard a word of it",
        "PARLEY_BACKCHANNEL_MAX_MS");
  f.Add("--interrupt-min-words", &min_words, "...or this many words that are not backchannels",
        "PARLEY_INTERRUPT_MIN_WORDS");
  f.Add("--interrupt-word-confidence", &min_word_confidence,
        "A short burst's lone real word interrupts when recognised at least this surely (0..1)",
        "PARLEY_INTERRUPT_WORD_CONFIDENCE");
  f.Add("--false-interruption-ms", &false_interruption_ms,
        "Paused this long without real words (a cough, 'mhm'): the persona's voice resumes",
        "PARLEY_FALSE_INTERRUPTION_MS");
  f.Add("--interrupt-final-wait-ms", &final_wait_ms,
        "How long a paused voice waits for a short burst's transcript before it resumes anyway",
        "PARLEY_INTERRUPT_FINAL_WAIT_MS");
  f.Add("--interrupt-warmup-ms", &warmup_ms,
        "The persona's first moments of speech, when an interruption needs stronger evidence",
        "PARLEY_INTERRUPT_WARMUP_MS");
  f.Add("--backchannels", &backchannels, "Words that never interrupt (comma-separated)",
        "PARLEY_BACKCHANNELS");
}

InterruptionPolicy::InterruptionPolicy(InterruptionConfig config) : config_(std::move(config)) {}

int InterruptionPolicy::RealWords(const std::string& t) const {
  int n = 0;
  for (const auto& w : text::Words(t))
    if (std::find(config_.backchannels.begin(), config_.backchannels.end(), w) ==
        config_.backchannels.end())
      ++n;
  return n;
}

bool InterruptionPolicy::InWarmup(int64_t now_ms) const {
  return now_ms - persona_started_ms_ < config_.warmup_ms;
}

void InterruptionPolicy::OnPersonaSpeechStart(int64_t now_ms) {
  persona_speaking_ = true;
  paused_ = false;
  persona_started_ms_ = now_ms;
  // The user already mid-turn when the voice starts counts from the voice's start.
  if (user_speaking_) user_started_ms_ = now_ms;
  words_ = 0;
}

void InterruptionPolicy::OnPersonaSpeechEnd(int64_t) {
  persona_speaking_ = false;
  paused_ = false;
}

InterruptionPolicy::Action InterruptionPolicy::Cancel() {
  paused_ = false;
  persona_speaking_ = false;
  ++interruptions_;
  return Action::kCancel;
}

InterruptionPolicy::Action InterruptionPolicy::OnUserSpeechStart(int64_t now_ms) {
  user_speaking_ = true;
  awaiting_final_ = false;
  user_started_ms_ = now_ms;
  words_ = 0;
  spoken_ms_ = 0;
  backchannel_only_ = false;
  if (!persona_speaking_ || paused_) return Action::kNone;
  paused_ = true;
  paused_at_ms_ = now_ms;
  return Action::kPause;
}

InterruptionPolicy::Action InterruptionPolicy::OnUserSpeechEnd(int64_t now_ms,
                                                               bool transcript_coming) {
  user_speaking_ = false;
  user_ended_ms_ = now_ms;
  awaiting_final_ = transcript_coming;
  // The burst ended before it grew into an interruption: its transcript decides (one real word
  // cuts the reply), else the false-alarm timer resumes the voice.
  return Poll(now_ms);
}

InterruptionPolicy::Action InterruptionPolicy::OnUserSpeechProgress(int64_t spoken_ms,
                                                                    int64_t now_ms) {
  spoken_ms_ = std::max(spoken_ms_, spoken_ms);
  return Poll(now_ms);
}

InterruptionPolicy::Action InterruptionPolicy::OnUserWords(const std::string& text,
                                                           int64_t now_ms) {
  const int real = RealWords(text);
  words_ = std::max(words_, real);
  // Words, all of them backchannels ("mhm", "yeah"): the user keeps the persona talking,
  // however long they take to say it.
  backchannel_only_ = real == 0 && !text::Words(text).empty();
  return Poll(now_ms);
}

InterruptionPolicy::Action InterruptionPolicy::OnUserFinal(const std::string& text,
                                                           double confidence, int64_t now_ms) {
  awaiting_final_ = false;
  if (persona_speaking_ && paused_ && !user_speaking_) {
    // A whole short turn: one real word, clearly heard, is a turn of its own ("stop", "no");
    // in the warm-up, where it may be the persona's own voice, it takes the usual count.
    const int real = RealWords(text);
    if (real >= config_.min_words) return Cancel();
    if (real >= 1 && !InWarmup(paused_at_ms_) && confidence >= config_.min_word_confidence)
      return Cancel();
    return Poll(now_ms);
  }
  return OnUserWords(text, now_ms);
}

InterruptionPolicy::Action InterruptionPolicy::Poll(int64_t now_ms) {
  if (!persona_speaking_ || !paused_) return Action::kNone;
  const bool warm = InWarmup(paused_at_ms_);
  const int need_words = config_.min_words + (warm ? 1 : 0);
  const int need_ms = warm ? config_.warmup_min_speech_ms : config_.min_speech_ms;
  if (words_ >= need_words) return Cancel();
  // Speech the persona's voice started over counts from the voice's start.
  const int64_t spoken = std::min(spoken_ms_, now_ms - user_started_ms_);
  if (user_speaking_ && !backchannel_only_) {
    // Long enough for a real turn and a real word in it, or longer than any backchannel. A
    // shorter burst waits for the recogniser: a synthesized or hummed "mhm" lasts 0.5-0.9 s.
    if (spoken >= need_ms && words_ >= 1) return Cancel();
    if (spoken >= std::max<int64_t>(need_ms, config_.backchannel_max_ms)) return Cancel();
  }
  if (ResumeAt() && now_ms >= *ResumeAt()) {
    paused_ = false;
    awaiting_final_ = false;
    ++false_interruptions_;
    return Action::kResume;
  }
  return Action::kNone;
}

// The false-alarm timer, once the user is quiet: it waits for the burst's transcript too (a
// late one may still say "stop"), at most final_wait_ms past the burst.
std::optional<int64_t> InterruptionPolicy::ResumeAt() const {
  if (!persona_speaking_ || !paused_ || user_speaking_) return std::nullopt;
  int64_t at = paused_at_ms_ + config_.false_interruption_ms;
  if (awaiting_final_) at = std::max(at, user_ended_ms_ + config_.final_wait_ms);
  return at;
}

std::optional<int64_t> InterruptionPolicy::NextDeadline() const {
  return ResumeAt();  // while the user speaks, it moves on with their audio
}

}  // namespace parley::dialogue
