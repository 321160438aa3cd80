// Parley speech: signals and engines. Listening: voice activity and end of turn on the 16 kHz
// PCM from the media pipeline; streaming speech recognition with a shared pool of PocketSphinx
// decoders, and a remote OpenAI-compatible engine; prosody (pitch, loudness) and talk metrics.
// Speaking: text to speech behind one Synthesizer interface (Flite in-process, or a remote
// OpenAI-compatible service).
//
// Threads: an Endpointer, a RecognitionStream and a TalkStats belong to one session and are
// used by one thread at a time. The DecoderPool is shared by all sessions. Calls that decode or
// go to the network block: run them on workers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace parley::core {
class FlagSet;
}  // namespace parley::core

namespace parley::speech {

inline constexpr int kSampleRate = 16000;

// ---- Voice activity and endpointing ----------------------------------------------------------

struct EndpointConfig {
  int aggressiveness = 2;    // WebRTC VAD mode 0..3 (3 rejects the most non-speech)
  int start_speech_ms = 60;  // voiced this long (within start_window_ms) starts an utterance
  int start_window_ms = 100;
  // Trailing silence that ends a turn; shorter pauses stay inside it. 400 ms by measurement
  // (bench/endpoint_sweep over 549 recorded turns: 300 ms cuts 1.1 % of them at a pause
  // between clauses, 350 ms 0.5 %, 400 ms 0.4 %, the same as waiting a full second).
  int end_silence_ms = 400;
  int min_utterance_ms = 200;     // shorter bursts (a cough, a click) are not utterances
  int max_utterance_ms = 30'000;  // a turn this long is cut (and a new one starts)
  int pre_roll_ms = 500;          // audio kept from before the detected start, for the ASR
  int tail_ms = 500;  // and after the last voiced step, at most the end silence (the recogniser
                      // wants some silence around the words)
  std::string Validate() const;
};

struct Utterance {
  int64_t t_start_ms = 0;      // on the clock of the fed frames
  int64_t t_end_ms = 0;        // end of the last voiced frame (the trailing silence excluded)
  int64_t audio_start_ms = 0;  // time of audio[0] (before t_start by the pre-roll)
  std::vector<int16_t> audio;  // pre-roll + speech + tail, 16 kHz mono
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
  // The audio of the utterance in progress so far (pre-roll first); empty outside speech. For
  // streaming it to a recogniser while the person speaks.
  virtual std::span<const int16_t> current_audio() const = 0;
  virtual uint64_t voiced_ms() const = 0;  // total voiced time seen
  // In an utterance: its start to the end of its last voiced step (its trailing silence left
  // out: what was actually spoken so far); 0 outside speech.
  virtual int64_t current_span_ms() const = 0;
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
  // Decoders loaded ahead (~90 MB and ~1 s each). A speaking person holds one for the turn;
  // when all are held, the pool loads more, one at a time, up to max_pool_size (0: the
  // application sets it, to the session capacity). Past that, turns queue (their audio waits).
  int pool_size = 8;
  int max_pool_size = 0;
  // transcript.partial while the person speaks (the decoder's running best hypothesis).
  bool partials = true;
  // PocketSphinx's second (fwdflat) pass over the whole utterance once it ends: ~25 % more CPU
  // and ~0.2 s more per turn after the person stops, for no measured gain on streamed turns.
  bool second_pass = false;
  // Audio at the start of each utterance before its speech (the endpointer's pre-roll): left
  // out of the utterance's starting cepstral mean, which should describe the voice.
  int lead_in_ms = 0;
  // The search's pruning: a preset ("fast", chosen by bench/asr_sweep; "full": PocketSphinx's
  // own defaults, the old setting) or PocketSphinx flags ("-beam 1e-40 -topn 2 ...": beams,
  // -ds, -topn, -maxhmmpf, -maxwpf, -pl_window, -pl_beam, -pl_pbeam, -fwdtree, -lw, -wip).
  std::string search = "fast";
  // bench/asr_sweep over the librivox sentences and asterisk prompts: about half of "full"'s
  // CPU per audio second, the same WER on the prose and lower on the prompts (a cap on the HMMs
  // kept per frame). Narrower beams (-beam 1e-40) cost less but turn a short "okay" into two
  // words, a false barge-in, and lose 2.8 points on the prose; -maxwpf 5 loses "hello world".
  static constexpr const char* kFastSearch = "-maxhmmpf 3000";
  std::string Validate() const;
  // The search flags `search` stands for, as (flag, value) pairs; empty with `error` set when
  // it is neither a preset nor valid flags.
  std::vector<std::pair<std::string, std::string>> SearchFlags(std::string* error) const;
  // The decoder's command line (model, dictionary, language model, search settings).
  std::vector<std::string> DecoderArguments() const;
};

// One utterance recognised while it is spoken: feed audio as it arrives, read the partial
// hypothesis, finish for the final result (only the end of the search is left by then). Holds a
// pooled decoder until destroyed (a stream destroyed unfinished abandons its utterance).
// Feed/Partial/Finish decode: call them on a worker, one thread at a time.
class RecognitionStream {
 public:
  virtual ~RecognitionStream() = default;
  virtual bool Feed(std::span<const int16_t> pcm16k, std::string* error) = 0;
  // The best hypothesis so far (empty before the first words).
  virtual std::string Partial() = 0;
  // Ends the utterance: the final words, their times (relative to the first sample) and
  // confidences. `whole` is decoded only when nothing was fed (a turn handed over at its end).
  virtual std::optional<Recognition> Finish(std::span<const int16_t> whole, std::string* error) = 0;
};

// Loaded PocketSphinx decoders shared by every session: memory grows with the pool, not with
// the number of sessions. A decoder is checked out for one utterance.
class DecoderPool {
 public:
  using Ready = std::function<void(std::unique_ptr<RecognitionStream>)>;
  static std::shared_ptr<DecoderPool> Create(const PocketSphinxConfig& config, std::string* error);
  virtual ~DecoderPool() = default;
  // Calls `ready` with a stream on a free decoder: at once on this thread when one is free,
  // otherwise on the thread that returns one, in the order asked. Never blocks. A decoder carries
  // only its noise-floor estimate from one utterance (or session) to the next: no speech.
  virtual void Acquire(Ready ready) = 0;
  virtual int size() const = 0;      // recognisers loaded ahead (on demand: up to max_size)
  virtual int max_size() const = 0;  // the most it loads
  virtual int loaded() const = 0;   // recognisers loaded so far (the rest load in the background)
  virtual int busy() const = 0;     // decoders checked out now
  virtual int waiting() const = 0;  // Acquire calls not served yet
  // Why a decoder past the first failed to load (the pool then stops growing: callers wait for
  // the decoders it has); empty while none failed.
  virtual std::string load_error() const = 0;
};

// Decodes one whole utterance on the calling thread (for tests and tools): waits for a decoder.
std::optional<Recognition> RecognizeUtterance(DecoderPool& pool, std::span<const int16_t> pcm16k,
                                              std::string* error);

// ---- Remote recognition: any OpenAI-compatible POST /v1/audio/transcriptions ------------------

struct RemoteAsrConfig {
  std::string base_url;  // e.g. https://api.openai.com/v1 (OPENAI_BASE_URL); empty: off
  std::string api_key;   // OPENAI_API_KEY; sent as a bearer token when set
  std::string model = "whisper-1";
  std::string language = "en";  // ISO-639-1 hint; empty: the service detects it
  int connect_timeout_ms = 2000;
  int timeout_ms = 15000;  // whole request, per attempt
  int retries = 1;         // further attempts after a failed one (network, 5xx, 429)
  int retry_backoff_ms = 250;
  std::string Validate() const;
};

// One utterance per request: a 16-bit WAV in multipart/form-data with `response_format`
// verbose_json and word timestamps. Thread-safe; Transcribe blocks (network): run it on a worker.
class RemoteRecognizer {
 public:
  static std::unique_ptr<RemoteRecognizer> Create(const RemoteAsrConfig& config,
                                                  std::string* error);
  virtual ~RemoteRecognizer() = default;
  // nullopt with `error` after the retries failed or when the answer is not a transcription.
  virtual std::optional<Recognition> Transcribe(std::span<const int16_t> pcm16k,
                                                std::string* error) = 0;
};
// A transcription service's verbose_json answer ({"text", "segments", "words"}) as a
// Recognition; nullopt with `error` when it is not one. Exposed for tests and fuzzing.
std::optional<Recognition> ParseTranscription(const std::string& body, std::string* error);

// ---- Hearing: how a session listens ----------------------------------------------------------

// The listening stage's options: end of turn, the offline recogniser and its pool, and the
// remote engine (base_url set: transcribe there, PocketSphinx as the fallback).
struct HearingConfig {
  bool enabled = true;  // false: no VAD, no transcripts
  EndpointConfig endpoint;
  PocketSphinxConfig asr;
  int threads = 2;                // decoding threads (CPU-bound: about the number of cores)
  int queue = 256;                // utterances that may wait for a decoder, over all sessions
  int partial_interval_ms = 300;  // transcript.partial at most this often per utterance
  // Overload (the local recogniser behind real time): partials stop once a turn's audio has
  // waited this long for decoding, and a turn waiting longer than max_lag_ms (for a decoder or
  // a decoding thread) is failed with asr_overloaded instead of transcribed later. 3 s: the
  // turn-taking waits as long for a final (dialogue's final_wait_ms) before answering without.
  int shed_partials_lag_ms = 1000;
  int max_lag_ms = 3000;
  RemoteAsrConfig remote;         // base_url set: the remote engine, offline fallback
  int remote_concurrency = 4;     // requests in flight to the remote service
  // Every problem found, each naming the option; empty when valid.
  std::vector<std::string> Validate() const;
  void AddFlags(core::FlagSet& flags);
};

// ---- Echo: the persona's own voice coming back through the user's microphone -----------------

// A client without echo cancellation plays the persona through speakers and its microphone
// carries it back. The server knows exactly what it sent, so it cancels that here.
struct EchoConfig {
  // For sessions whose client does not say (`start`'s "echo"): off by default. A client with
  // its own canceller (a browser) loses the first second of the user talking over the
  // persona's first words to the gate while it learns that no echo comes back.
  bool enabled = false;
  int max_delay_ms = 600;  // the longest speaker-to-microphone delay searched (network+buffers)
  // Residual-echo gate: while the persona's voice may be in the microphone, a 10 ms step counts
  // as the user only when what is left after cancellation is within this many dB of the echo
  // that was expected there (or louder); below that, it is echo and the hearing gets silence.
  double gate_db = 10.0;
  std::vector<std::string> Validate() const;
  void AddFlags(core::FlagSet& flags);
};

struct EchoStats {
  uint64_t frames = 0;            // 10 ms microphone steps processed while a reference was live
  uint64_t gated_frames = 0;      // of them, taken as echo only
  std::optional<int> delay_ms;    // the echo's delay as last estimated
  std::optional<double> erle_db;  // echo return loss enhancement over echo-only steps
};

// WebRTC's echo canceller (libwebrtc-audio-processing, extended filter, delay-agnostic) behind a
// delay search of our own (the envelope of the sent voice against the microphone's), plus the
// residual-echo gate. One per session; AddReference and Process may be called from different
// threads (the pacer, the media thread). Costs nothing while the persona is silent.
class EchoCanceller {
 public:
  explicit EchoCanceller(const EchoConfig& config);
  ~EchoCanceller();
  EchoCanceller(const EchoCanceller&) = delete;
  EchoCanceller& operator=(const EchoCanceller&) = delete;
  // The voice as sent: 16 kHz mono starting at session time `t_ms`.
  void AddReference(int64_t t_ms, std::span<const int16_t> pcm);
  // Microphone audio (16 kHz, whole 10 ms steps) starting at `t_ms`: the echo is removed in
  // place; steps the gate takes for echo only are zeroed. Returns how many steps were gated.
  int Process(int64_t t_ms, std::span<int16_t> pcm);
  // Whether it cancels (initially config.enabled): a session's client may say its microphone
  // has no echo ("client") or ask for the server's ("server") when it starts media. Any thread.
  void SetActive(bool active);
  bool active() const;
  EchoStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A mono 16-bit WAV file's bytes (libsndfile), 16 kHz unless `rate` says otherwise.
std::string EncodeWav(std::span<const int16_t> pcm, int rate = kSampleRate);
// Any WAV (or other libsndfile format) in memory as mono S16 (channels mixed down); false with
// `error` when it is not a sound file. `max_seconds` bounds what is decoded.
bool DecodeSound(std::string_view bytes, std::vector<int16_t>* pcm, int* rate, std::string* error,
                 double max_seconds = 3600);

// ---- Speaking: text to speech ------------------------------------------------------------------

struct VoiceInfo {
  std::string id;        // "slt", "rms"... (Flite) or the remote service's voice names
  std::string engine;    // "flite" | "remote"
  std::string language;  // "en"
  std::string gender;    // "female" | "male" | "" (unknown)
};

struct SynthesisRequest {
  std::string text;
  std::string voice;  // one of Voices(); empty: the engine's default
  double rate = 1.0;  // speaking-rate multiplier (above 1 is faster)
};

struct Synthesis {
  std::vector<int16_t> pcm;  // mono S16
  int sample_rate = 0;
  std::string engine;
  std::string voice;
};

// One engine behind one interface. Thread-safe; Synthesize blocks (CPU or network): workers.
class Synthesizer {
 public:
  virtual ~Synthesizer() = default;
  // nullopt with `error` on failure (unknown voice, engine error, timeout).
  virtual std::optional<Synthesis> Synthesize(const SynthesisRequest& request,
                                              std::string* error) = 0;
  virtual std::vector<VoiceInfo> Voices() const = 0;
  bool HasVoice(std::string_view id) const;
};

// Flite in-process (flite1-dev, BSD-style licence): voices slt (female), rms, awb, kal16 (male),
// 16 kHz. Flite keeps global state, so one synthesis runs at a time per process.
std::unique_ptr<Synthesizer> CreateFliteSynthesizer();

// Any OpenAI-compatible POST /v1/audio/speech: {"model","input","voice","response_format":
// "wav","speed"}; the WAV's own rate is kept.
struct RemoteTtsConfig {
  std::string base_url;  // empty: off
  std::string api_key;
  std::string model = "tts-1";
  std::vector<std::string> voices = {"alloy"};  // the first is the default
  int connect_timeout_ms = 2000;
  int timeout_ms = 15000;
  int retries = 1;
  int retry_backoff_ms = 250;
  std::string Validate() const;
  void AddFlags(core::FlagSet& flags);
};
std::unique_ptr<Synthesizer> CreateRemoteSynthesizer(const RemoteTtsConfig& config,
                                                     std::string* error);

// ---- Prosody -------------------------------------------------------------------------------

// Fundamental frequency by YIN (de Cheveigné & Kawahara 2002) with parabolic refinement, on
// one frame of 16 kHz audio; nullopt when the frame is unvoiced or aperiodic.
class PitchTracker {
 public:
  explicit PitchTracker(double min_hz = 60, double max_hz = 500, double threshold = 0.2);
  std::optional<double> Estimate(std::span<const int16_t> frame);
  size_t frame_samples() const { return frame_; }  // 2 periods of min_hz, rounded
 private:
  double min_hz_, max_hz_, threshold_;
  size_t frame_;
  std::vector<double> diff_;
};

struct Prosody {
  int voiced_frames = 0;  // 10 ms steps with a pitch
  double f0_mean_hz = 0, f0_median_hz = 0, f0_std_semitones = 0;
  double f0_range_semitones = 0;                     // 5th to 95th percentile
  double f0_end_slope_semitones = 0;                 // last 300 ms with pitch vs the turn's median
  double volume_dbfs_mean = 0, volume_dbfs_std = 0;  // 50 ms RMS over the active frames
  std::optional<double> loudness_lufs;  // EBU R128 integrated (libebur128); needs 400 ms
  std::vector<double> f0_hz;            // one per pitched step, in order (for session statistics)
  std::vector<double> volume_db;        // one per active 50 ms block
};

// Pitch every 10 ms (YIN over 30 ms windows), volume and loudness of one utterance.
Prosody AnalyzeProsody(std::span<const int16_t> pcm16k);

// ---- Talk metrics -------------------------------------------------------------------------------

struct TalkSummary {
  int turns = 0;
  int words = 0;                 // recognised words, fillers included
  double speech_s = 0;           // sum of turn durations (speech start to end)
  double speaking_rate_wpm = 0;  // words (fillers excluded) per minute of speech
  int filler_words = 0;
  std::vector<std::pair<std::string, int>> fillers;  // each filler and its count
  int questions_asked = 0;
  double longest_pause_s = 0;  // longest silence between or inside the person's turns
  int pauses_over_1s = 0;
  double talk_ratio = 0;  // the person's speech time / session time
  // Session-wide prosody over every turn's frames.
  double f0_mean_hz = 0, f0_std_hz = 0, f0_std_semitones = 0, f0_range_semitones = 0;
  double volume_dbfs_mean = 0, volume_dbfs_std = 0;
  std::optional<double> loudness_lufs;  // mean over turns, in the energy domain
  bool has_pitch = false, has_volume = false;
};

// Per-session accumulation of turns into the report's talk metrics (docs/scoring.md).
class TalkStats {
 public:
  // A finished user turn: its recognition, bounds on the session clock, and its prosody.
  void AddTurn(const Recognition& r, int64_t t_start_ms, int64_t t_end_ms, const Prosody& prosody);
  // The persona's voice over [t_start, t_end]: its time in a gap is not the person's pause.
  void AddPartnerSpeech(int64_t t_start_ms, int64_t t_end_ms);
  TalkSummary Summarize(double session_s) const;
  // Whether a recognised turn reads as a question (a "?" from a punctuating engine, an opening
  // interrogative or auxiliary, or a rising end).
  static bool IsQuestion(const std::string& text, const Prosody& prosody);

 private:
  struct Turn {
    int64_t t_start_ms, t_end_ms;
    int words_total, words_content;
    double longest_gap_s;
  };
  std::vector<Turn> turns_;
  std::vector<std::pair<std::string, int>> fillers_;
  int questions_ = 0;
  std::vector<double> f0_, volume_;
  std::vector<double> lufs_;
  std::vector<std::pair<int64_t, int64_t>> partner_;
};

}  // namespace parley::speech
