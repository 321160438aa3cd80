// Parley dialogue: what the persona says and when. Policy and engines, no audio:
//  - TurnTaking: a pure state machine (injected clock) that decides when the persona answers,
//    greets or speaks up after a silence;
//  - the persona's profile, its speaking style for the current intimacy, the system prompt;
//  - Intimacy: a 0..100 level per session that grows with engaged turns (docs/scoring.md);
//  - Safety: crisis words make the persona step out of role with a supportive message;
//  - engines behind one streaming interface: the offline persona engine (rule-based, the
//    default, labelled "offline") and any OpenAI-compatible /v1/chat/completions with SSE
//    streaming ("llm"); SseParser is the stream's reader.
//
// Threads: TurnTaking, IntimacyModel, OfflineEngine and SseParser belong to one session and are
// used by one thread at a time. LlmEngine is shared and thread-safe; Reply blocks (network):
// call it on a worker. The rest are pure functions.
#pragma once

#include <json/value.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace parley::core {
class FlagSet;
}  // namespace parley::core

namespace parley::dialogue {

// ---- Persona ---------------------------------------------------------------------------------

struct StyleLevel {
  int min_intimacy = 0;
  std::string name;  // "formal", "friendly", "casual"...
  std::string description;
  std::vector<std::string> examples;
};

struct PersonaProfile {
  std::string id, name, gender, occupation, summary, background, greeting, language = "en";
  int age = 0;
  std::vector<std::string> personality, hobbies, likes, dislikes;
  std::vector<StyleLevel> styles;  // ascending min_intimacy, the first at 0
  // Optional lines the persona file adds to the offline engine's own ("lines": {"acknowledge":
  // [...], "follow_up": [...], "speak_up": [...], "farewell": [...]}).
  std::vector<std::string> extra_acknowledge, extra_follow_up, extra_speak_up, extra_farewell;
  std::string voice;  // tts.voice
  double rate = 1.0;  // tts.rate
};
// From a persona document (personas/*.json, already validated by the catalog).
PersonaProfile ProfileFromDocument(const std::string& id, const Json::Value& doc);
// The level for `intimacy`, and its index (0 = most formal).
const StyleLevel& StyleFor(const PersonaProfile& p, int intimacy, size_t* index = nullptr);

// ---- Intimacy --------------------------------------------------------------------------------

// What a user turn shows (docs/scoring.md "Intimacy").
struct TurnSignals {
  int words = 0;
  bool question = false;         // asks something
  bool about_persona = false;    // asks about the persona ("you", "your")
  bool self_disclosure = false;  // speaks of themselves ("I", "my") at some length
  int positive_words = 0, negative_words = 0;
  bool smiled = false;  // smiled while talking (vision)
};
TurnSignals AnalyzeTurn(std::string_view text, bool smiled = false);

class IntimacyModel {
 public:
  explicit IntimacyModel(int start = 10) : level_(start) {}
  // Returns the change.
  int Update(const TurnSignals& s);
  int level() const { return level_; }

 private:
  int level_;
};

// ---- Safety ----------------------------------------------------------------------------------

struct SafetyHit {
  std::string category;  // "self_harm", "abuse", "violence"
  std::string message;   // what the persona says out of role, with a resource hint
};
// nullopt when no crisis words are in `text` (English and Korean lists).
std::optional<SafetyHit> CheckSafety(std::string_view text);

// ---- Messages and engines --------------------------------------------------------------------

struct Message {
  enum class Role { kSystem, kUser, kAssistant } role;
  std::string text;
};

// The persona's system prompt: profile, personality, likes, background and the style level.
std::string BuildSystemPrompt(const PersonaProfile& p, int intimacy);

struct ReplyRequest {
  enum class Kind { kAnswer, kSpeakUp, kGreeting } kind = Kind::kAnswer;
  const PersonaProfile* persona = nullptr;
  std::vector<Message> history;  // earlier turns, oldest first (bounded by the caller)
  std::string user_text;         // kAnswer: what the user just said (turns joined)
  int intimacy = 0;
};

// Streams text as it is generated: return false from it to stop (the reply was cancelled).
using DeltaSink = std::function<bool(std::string_view delta)>;

class Engine {
 public:
  virtual ~Engine() = default;
  // The whole reply (also streamed through `on_delta`); nullopt with `error` on failure.
  virtual std::optional<std::string> Reply(const ReplyRequest& request, const DeltaSink& on_delta,
                                           std::string* error) = 0;
  virtual std::string_view name() const = 0;  // "offline" | "llm"
};

// The offline persona engine: answers questions about the persona from its profile, reacts to
// what the user said (topics, sentiment, questions), asks follow-ups, tracks topics covered,
// never repeats a line in a session, handles short answers and silences, and shifts style with
// intimacy. One per session (it remembers what it said).
class OfflineEngine final : public Engine {
 public:
  explicit OfflineEngine(const PersonaProfile& persona, uint32_t seed = 1);
  ~OfflineEngine() override;
  std::optional<std::string> Reply(const ReplyRequest& request, const DeltaSink& on_delta,
                                   std::string* error) override;
  std::string_view name() const override { return "offline"; }

 private:
  struct State;
  std::unique_ptr<State> state_;
};

struct LlmConfig {
  std::string base_url;  // OpenAI-compatible API base (…/v1); empty: the offline engine only
  std::string api_key;
  std::string model = "gpt-4o-mini";
  int connect_timeout_ms = 2000;
  int first_token_timeout_ms = 8000;  // request sent -> first streamed token
  int total_timeout_ms = 30000;
  int retries = 1;  // on 429/5xx/network errors before the first token
  int retry_backoff_ms = 250;
  int max_tokens = 200;
  double temperature = 0.8;
  std::string Validate() const;
  void AddFlags(core::FlagSet& flags);
};

// POST {base}/chat/completions with "stream": true; SSE "data:" lines of chat.completion.chunk
// objects, "[DONE]" at the end; an {"error": ...} object mid-stream is a failure.
class LlmEngine final : public Engine {
 public:
  static std::unique_ptr<LlmEngine> Create(const LlmConfig& config, std::string* error);
  std::optional<std::string> Reply(const ReplyRequest& request, const DeltaSink& on_delta,
                                   std::string* error) override;
  std::string_view name() const override { return "llm"; }
  // The request's messages: the system prompt, the history, the user's turn (or a nudge).
  static std::vector<Message> Messages(const ReplyRequest& request);
  // Any chat request (the report's feedback rewrite): the whole answer, or nullopt with
  // `error`. Blocks up to the configured timeouts; any thread.
  std::optional<std::string> Complete(const std::vector<Message>& messages, int max_tokens,
                                      double temperature, std::string* error);
  const std::string& model() const { return config_.model; }

 private:
  explicit LlmEngine(LlmConfig config);
  std::optional<std::string> StreamChat(const std::vector<Message>& messages, int max_tokens,
                                        double temperature, const DeltaSink& on_delta,
                                        std::string* error);
  LlmConfig config_;
  std::string url_;
};

// Server-sent events (the WHATWG rules Parley needs): lines end in \n, \r\n or \r, split
// anywhere across Feed() calls; "data:" lines (one optional space after the colon) join with \n
// into one event at a blank line; comments (":...") and other fields are ignored.
class SseParser {
 public:
  // Appends the events completed by `bytes`.
  void Feed(std::string_view bytes, std::vector<std::string>* events);
  size_t buffered() const { return line_.size() + data_.size(); }

 private:
  std::string line_, data_;
  bool have_data_ = false, after_cr_ = false;
};

// An OpenAI-compatible chat-completion stream's body as it arrives: SSE events of
// chat.completion.chunk JSON → the content deltas, "[DONE]", or the stream's failure (an
// {"error": ...} object, a chunk that is not JSON, an event over 1 MiB). Exposed for tests and
// fuzzing; one stream, one thread.
class ChatStreamReader {
 public:
  // Appends the deltas completed by `bytes` (also those before a failure in the same bytes);
  // false with `error` once the stream has failed (read no more of it).
  bool Feed(std::string_view bytes, std::vector<std::string>* deltas, std::string* error);
  bool done() const { return done_; }  // "[DONE]" seen

 private:
  SseParser sse_;
  bool done_ = false;
};

// Splits streamed text into sentences as they complete (., !, ? or … followed by a space or
// the end; a sentence of at least `min_chars` so "Dr." or "Oh." alone does not become one).
class SentenceSplitter {
 public:
  explicit SentenceSplitter(size_t min_chars = 12) : min_chars_(min_chars) {}
  void Feed(std::string_view text, std::vector<std::string>* sentences);
  // The rest, at the end of the stream.
  std::optional<std::string> Flush();

 private:
  size_t min_chars_;
  std::string buffer_;
};

// ---- Turn-taking ------------------------------------------------------------------------------

struct TurnTakingConfig {
  int speak_up_after_ms = 12000;  // quiet this long (nobody speaking, nothing pending): speak up
  int max_speak_ups = 2;          // in a row without an answer from the user
  // Speech that ended with its transcript still being recognised holds the answer back this
  // long at most: the answer takes the whole turn, not what was pending before it.
  int final_wait_ms = 3000;
  std::string Validate() const;
  void AddFlags(core::FlagSet& flags);
};

// When the persona speaks: answers a finished user turn (several finals in a row join into
// one), never while the user is mid-turn and never over its own voice, greets once when media
// starts, and speaks up after a silence. Pure: every input carries the time, and Poll() tells
// what to do now.
class TurnTaking {
 public:
  explicit TurnTaking(const TurnTakingConfig& config) : config_(config) {}

  struct Action {
    enum class Kind { kNone, kGreet, kAnswer, kSpeakUp } kind = Kind::kNone;
    std::string text;  // kAnswer: the user's turn(s)
  };

  void OnMediaStarted(int64_t now_ms);
  void OnUserSpeechStart(int64_t now_ms);
  // `transcript_coming`: the recogniser will give this speech a final transcript (OnTranscript).
  void OnUserSpeechEnd(int64_t now_ms, bool transcript_coming = false);
  // A final transcript arrived, whether or not it is a turn (empty, a backchannel).
  void OnTranscript(int64_t now_ms);
  // A final transcript that is a turn, or a typed `say`; empty text is ignored (a cough has no
  // words).
  void OnUserTurn(std::string text, int64_t now_ms);
  // The reply was produced (its text); `spoken` when it has a voice that is now playing.
  void OnReplyReady(int64_t now_ms, bool spoken);
  void OnReplyFailed(int64_t now_ms);
  void OnPersonaSpeechEnd(int64_t now_ms);
  // What to do now; state moves as if the action was taken.
  Action Poll(int64_t now_ms);
  // When Poll() may next act without new input (nullopt: only on input).
  std::optional<int64_t> NextDeadline() const;

  enum class State { kListening, kUserSpeaking, kThinking, kPersonaSpeaking };
  State state() const { return state_; }

 private:
  TurnTakingConfig config_;
  State state_ = State::kListening;
  bool user_speaking_ = false;  // between the user's speech start and end (also over a reply)
  bool greet_pending_ = false, greeted_ = false;
  std::string pending_;           // user turns not answered yet
  int transcripts_awaited_ = 0;   // speech ended, its transcript not in yet...
  int64_t awaited_until_ms_ = 0;  // ...waited for until then
  int64_t quiet_since_ms_ = 0;
  bool quiet_clock_ = false;  // counting silence (media started or a turn happened)
  int speak_ups_ = 0;
};

// ---- Interruptions ----------------------------------------------------------------------------

struct InterruptionConfig {
  // User speech while the persona speaks pauses its voice at once. It becomes a real
  // interruption (the reply is cut) when the speech has lasted this long and the recogniser
  // has heard a word in it that is not a backchannel...
  int min_speech_ms = 500;
  // ...or when it has lasted this long whatever the recogniser says of it so far (no
  // backchannel is this long; PocketSphinx's first hypothesis comes ~1.1 s into a turn)...
  int backchannel_max_ms = 1000;
  // ...or the partial transcript has this many words that are not backchannels. A shorter
  // turn is decided by its final transcript: one real word ("stop", "no") cuts the reply when
  // the recogniser is at least this sure of it (0..1; an echo's residue heard as "but" is not).
  int min_words = 2;
  double min_word_confidence = 0.5;
  // Paused this long with no real words (a cough, "mhm"): the voice resumes where it paused.
  int false_interruption_ms = 2000;
  // After a short burst, how long the pause waits for its transcript before resuming anyway.
  int final_wait_ms = 3000;
  // In the persona's first moments of speech (its echo, if any, not yet learnt), a real
  // interruption needs this much speech and one more word.
  int warmup_ms = 1500;
  int warmup_min_speech_ms = 900;
  // Words that keep the floor with the persona ("mhm", "yeah"...): never an interruption.
  std::vector<std::string> backchannels = {
      "mhm",  "mm", "hmm",   "hm",   "uh", "huh", "um",  "uh-huh", "yeah", "yes", "yep",
      "okay", "ok", "right", "sure", "oh", "ah",  "wow", "really", "i",    "see", "alright"};
  std::string Validate() const;
  void AddFlags(core::FlagSet& flags);
};

// Whether user speech during the persona's voice pauses, cancels or leaves it. Pure: every
// input carries the time; Poll() applies the timers.
class InterruptionPolicy {
 public:
  explicit InterruptionPolicy(InterruptionConfig config);

  enum class Action { kNone, kPause, kResume, kCancel };

  void OnPersonaSpeechStart(int64_t now_ms);
  void OnPersonaSpeechEnd(int64_t now_ms);  // its voice ended or was cancelled
  Action OnUserSpeechStart(int64_t now_ms);
  // `transcript_coming`: the recogniser will give this burst a final transcript (false for a
  // click the endpointer dropped, or with recognition off).
  Action OnUserSpeechEnd(int64_t now_ms, bool transcript_coming = false);
  // How much the user has actually spoken in the current turn (start to the end of its last
  // voiced step, the trailing silence left out).
  Action OnUserSpeechProgress(int64_t spoken_ms, int64_t now_ms);
  // The running hypothesis of the user's current turn...
  Action OnUserWords(const std::string& text, int64_t now_ms);
  // ...and its final transcript, with the recogniser's confidence in it (0..1).
  Action OnUserFinal(const std::string& text, double confidence, int64_t now_ms);
  Action Poll(int64_t now_ms);
  std::optional<int64_t> NextDeadline() const;

  // Non-backchannel words in `text`.
  int RealWords(const std::string& text) const;
  bool persona_speaking() const { return persona_speaking_; }
  bool paused() const { return paused_; }
  int interruptions() const { return interruptions_; }
  int false_interruptions() const { return false_interruptions_; }

 private:
  bool InWarmup(int64_t now_ms) const;
  std::optional<int64_t> ResumeAt() const;
  Action Cancel();

  InterruptionConfig config_;
  bool persona_speaking_ = false, paused_ = false, user_speaking_ = false;
  int64_t persona_started_ms_ = 0, user_started_ms_ = 0, user_ended_ms_ = 0, paused_at_ms_ = 0;
  bool awaiting_final_ = false;
  int words_ = 0;
  int64_t spoken_ms_ = 0;
  bool backchannel_only_ = false;
  int interruptions_ = 0, false_interruptions_ = 0;
};

}  // namespace parley::dialogue
