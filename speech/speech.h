// Parley speech (listening half): voice activity and end of turn on the 16 kHz PCM from the
// media pipeline, and offline speech recognition with a shared pool of PocketSphinx decoders.
//
// Threads: an Endpointer belongs to one session and is fed by one thread at a time. The
// DecoderPool is shared by all sessions; Recognize() blocks (it decodes) and runs on workers.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace parley::speech {

inline constexpr int kSampleRate = 16000;

// ---- Voice activity and endpointing ----------------------------------------------------------

struct EndpointConfig {
  int aggressiveness = 2;    // WebRTC VAD mode 0..3 (3 rejects the most non-speech)
  int start_speech_ms = 60;  // voiced this long (within start_window_ms) starts an utterance
  int start_window_ms = 100;
  int hangover_ms = 150;          // unvoiced gaps shorter than this stay inside the speech
  int end_silence_ms = 500;       // trailing silence that ends a turn
  int min_utterance_ms = 200;     // shorter bursts (a cough, a click) are not utterances
  int max_utterance_ms = 30'000;  // a turn this long is cut (and a new one starts)
  int pre_roll_ms = 500;          // audio kept from before the detected start, for the ASR
  int tail_ms = 500;  // and after the last voiced step (the recogniser wants some silence
                      // around the words)
  std::string Validate() const;
};

struct Utterance {
  int64_t t_start_ms = 0;      // on the clock of the fed frames
  int64_t t_end_ms = 0;        // end of the last voiced frame (the trailing silence excluded)
  int64_t audio_start_ms = 0;  // time of audio[0] (before t_start by the pre-roll)
  std::vector<int16_t> audio;  // pre-roll + speech (+ up to hangover), 16 kHz mono
};

struct EndpointEvent {
  enum class Kind { kSpeechStart, kSpeechEnd } kind;
  int64_t t_ms = 0;                    // speech start, or speech end
  std::optional<Utterance> utterance;  // with kSpeechEnd when it was long enough
};

class Endpointer {
 public:
  // nullptr with `error` when the VAD cannot be created.
  static std::unique_ptr<Endpointer> Create(const EndpointConfig& config, std::string* error);
  virtual ~Endpointer() = default;
  // Any frame length; analysed in 10 ms steps. `t_ms` is the time of the first sample; a jump
  // forward of more than the end-of-turn silence (the stream stopped and restarted) ends a
  // turn in progress.
  virtual void Feed(int64_t t_ms, std::span<const int16_t> pcm,
                    std::vector<EndpointEvent>* events) = 0;
  // Ends an utterance in progress (the stream stopped).
  virtual void Flush(std::vector<EndpointEvent>* events) = 0;
  virtual bool in_speech() const = 0;
  virtual uint64_t voiced_ms() const = 0;  // total voiced time seen
};

// ---- Recognition ------------------------------------------------------------------------------

struct Word {
  std::string text;
  int64_t t_start_ms = 0;  // relative to the utterance's first sample
  int64_t t_end_ms = 0;
  double confidence = 0;  // 0..1
};

struct Recognition {
  std::string text;
  std::vector<Word> words;
  double confidence = 0;  // 0..1, mean of the words'
  std::string engine;     // "pocketsphinx", "remote"
};

struct PocketSphinxConfig {
  std::string model_dir = "/usr/share/pocketsphinx/model/en-us/en-us";
  std::string dictionary = "/usr/share/pocketsphinx/model/en-us/cmudict-en-us.dict";
  std::string language_model = "/usr/share/pocketsphinx/model/en-us/en-us.lm.bin";
  int pool_size = 2;  // decoders loaded (~100 MB and ~1 s each); utterances queue beyond
  std::string Validate() const;
};

// Loaded PocketSphinx decoders shared by every session: memory grows with the pool, not with
// the number of sessions. Recognize() checks one out for one utterance.
class DecoderPool {
 public:
  static std::unique_ptr<DecoderPool> Create(const PocketSphinxConfig& config, std::string* error);
  virtual ~DecoderPool() = default;
  // Decodes one utterance (blocks: call it on a worker). Waits up to `wait` for a free
  // decoder; nullopt with `error` when none came free or decoding failed.
  virtual std::optional<Recognition> Recognize(std::span<const int16_t> pcm16k,
                                               std::chrono::milliseconds wait,
                                               std::string* error) = 0;
  virtual int size() const = 0;
  virtual int busy() const = 0;     // decoders checked out now
  virtual int waiting() const = 0;  // callers waiting for one
};

}  // namespace parley::speech
