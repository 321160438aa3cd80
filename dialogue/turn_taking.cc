#include "dialogue/dialogue.h"

namespace parley::dialogue {

std::string TurnTakingConfig::Validate() const {
  if (speak_up_after_ms < 1000 || speak_up_after_ms > 600000)
    return "speak-up silence must be 1000..600000 ms";
  if (max_speak_ups < 0 || max_speak_ups > 100) return "speak-ups in a row must be 0..100";
  if (final_wait_ms < 0 || final_wait_ms > 60000)
    return "the wait for a turn's transcript must be 0..60000 ms";
  return {};
}

void TurnTaking::OnMediaStarted(int64_t now_ms) {
  if (!greeted_) greet_pending_ = true;
  if (!quiet_clock_) {
    quiet_clock_ = true;
    quiet_since_ms_ = now_ms;
  }
}

void TurnTaking::OnUserSpeechStart(int64_t) {
  if (state_ == State::kListening) state_ = State::kUserSpeaking;
  user_speaking_ = true;
}

void TurnTaking::OnUserSpeechEnd(int64_t now_ms, bool transcript_coming) {
  user_speaking_ = false;
  if (transcript_coming) {
    ++transcripts_awaited_;
    awaited_until_ms_ = now_ms + config_.final_wait_ms;
  }
  if (state_ == State::kUserSpeaking) state_ = State::kListening;
  quiet_since_ms_ = now_ms;
  quiet_clock_ = true;
}

void TurnTaking::OnTranscript(int64_t) {
  if (transcripts_awaited_ > 0) --transcripts_awaited_;
}

void TurnTaking::OnUserTurn(std::string text, int64_t now_ms) {
  // Trimmed; a turn without words (a cough the recogniser heard as nothing) is no turn.
  const auto first = text.find_first_not_of(" \t\n");
  if (first == std::string::npos) return;
  text = text.substr(first, text.find_last_not_of(" \t\n") - first + 1);
  if (!pending_.empty()) pending_ += ' ';
  pending_ += text;
  speak_ups_ = 0;
  quiet_since_ms_ = now_ms;
  quiet_clock_ = true;
}

void TurnTaking::OnReplyReady(int64_t now_ms, bool spoken) {
  if (state_ != State::kThinking) return;
  if (spoken) {
    state_ = State::kPersonaSpeaking;
  } else {
    state_ = user_speaking_ ? State::kUserSpeaking : State::kListening;
    quiet_since_ms_ = now_ms;
  }
}

void TurnTaking::OnReplyFailed(int64_t now_ms) {
  if (state_ != State::kThinking) return;
  state_ = user_speaking_ ? State::kUserSpeaking : State::kListening;
  quiet_since_ms_ = now_ms;
}

void TurnTaking::OnPersonaSpeechEnd(int64_t now_ms) {
  if (state_ != State::kPersonaSpeaking) return;
  state_ = user_speaking_ ? State::kUserSpeaking : State::kListening;
  quiet_since_ms_ = now_ms;
}

TurnTaking::Action TurnTaking::Poll(int64_t now_ms) {
  // Never over its own voice or its reply in progress, never while the user is mid-turn.
  if (state_ != State::kListening) return {};
  if (transcripts_awaited_ > 0) {
    if (now_ms < awaited_until_ms_) return {};  // the rest of the turn is being recognised
    transcripts_awaited_ = 0;                   // lost or late: answer what there is
  }
  if (!pending_.empty()) {
    Action a{Action::Kind::kAnswer, std::move(pending_)};
    pending_.clear();
    greet_pending_ = false;  // the user spoke first: answer them instead of greeting
    greeted_ = true;
    state_ = State::kThinking;
    return a;
  }
  if (greet_pending_) {
    greet_pending_ = false;
    greeted_ = true;
    state_ = State::kThinking;
    return {Action::Kind::kGreet, {}};
  }
  if (quiet_clock_ && speak_ups_ < config_.max_speak_ups &&
      now_ms - quiet_since_ms_ >= config_.speak_up_after_ms) {
    ++speak_ups_;
    state_ = State::kThinking;
    return {Action::Kind::kSpeakUp, {}};
  }
  return {};
}

std::optional<int64_t> TurnTaking::NextDeadline() const {
  if (state_ != State::kListening) return std::nullopt;
  if (transcripts_awaited_ > 0) return awaited_until_ms_;
  if (!pending_.empty() || greet_pending_) return quiet_since_ms_;  // at once
  if (quiet_clock_ && speak_ups_ < config_.max_speak_ups)
    return quiet_since_ms_ + config_.speak_up_after_ms;
  return std::nullopt;
}

}  // namespace parley::dialogue
