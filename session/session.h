// Parley sessions: one practice conversation from creation to its report.
//
// A Session owns its clock, its timeline (what the analysers measured), its connections (as
// opaque ids) and its Conversation: the per-session object that holds the stages — ingest
// (media), hearing, vision, dialogue and playback — each with its own strand on the shared
// pools. The SessionRegistry owns every Session and decides its lifetime: created -> live
// (first connection) -> ended (explicit end, disconnect grace, abandonment, shutdown). Ending
// drains the conversation's stages and runs the end hooks exactly once, on the thread that
// ended it (a worker or the shutdown thread), never on the WebSocket service thread.
//
// Inside, stages talk in typed events (below); the report is built as the stored document.
// No sockets, URLs or wire JSON here: app/ maps events to the protocol.
//
// Thread safety: Session, Timeline, Conversation, Services and SessionRegistry may be used
// from any thread. Conversation's Push*/Say/StartMedia/StopMedia never block (the WebSocket
// service thread calls them); End() blocks (bounded) and runs on a worker.
#pragma once

#include <json/value.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <variant>
#include <vector>

#include "core/core.h"
#include "dialogue/dialogue.h"
#include "media/media.h"
#include "speech/speech.h"
#include "vision/vision.h"

namespace parley::session {

enum class State { kCreated, kLive, kEnded };
std::string_view StateName(State s);

// ---- Typed events: what a session tells its clients ------------------------------------------

struct ErrorEvent {
  std::string code;
  std::string message;
  std::optional<bool> fatal;  // media errors say whether the stream stopped
  int repeated = 0;           // errors of the same code folded into this one (throttling)
};
struct MediaNotice {
  std::string event;  // "audio_started", "waiting_for_keyframe", "video_started"
};
struct SpeechStarted {};
struct SpeechEnded {
  bool too_short = false;  // a burst too short to be a turn (not transcribed)
};
struct TranscriptPartial {
  std::string text;
  int64_t t_start_ms = 0;
};
struct WordTiming {
  std::string text;
  int64_t t_start_ms = 0, t_end_ms = 0;
  double confidence = 0;
};
struct ProsodySummary {
  std::optional<double> f0_mean_hz, f0_std_semitones, f0_range_semitones, volume_dbfs,
      loudness_lufs;
};
struct TranscriptFinal {
  std::string text;
  int64_t t_start_ms = 0, t_end_ms = 0;
  double confidence = 0;
  std::string engine;
  std::vector<WordTiming> words;
  ProsodySummary prosody;
};
struct AsrFallback {
  std::string engine;  // the engine that took over
  std::string reason;
};
struct VisionNotice {
  std::string type;  // "blink", "gaze_away", "face_lost"...
  std::optional<double> duration_ms;
};
struct LiveScores {
  bool calibrated = false;
  std::optional<double> frame_t;  // the client's own t of the frame that completed the second
  double gaze_on_screen_ratio = 0, blink_rate_per_min = 0, smile_ratio = 0, face_visible_ratio = 0;
  double yaw_deg = 0, pitch_deg = 0, roll_deg = 0;
  int gaze = 0, blinking = 0, expression = 0, posture = 0;  // 0..100
};
struct ReplyDelta {
  uint16_t utterance = 0;
  std::string text;  // the next piece of the persona's reply as it is generated
};
// What reply latency is made of, in ms after the user's turn ended (its last voiced sample, or
// the arrival of a typed turn); null when the step did not happen.
struct ReplyTiming {
  std::optional<int64_t> transcript_ms;   // the final transcript came
  std::optional<int64_t> first_text_ms;   // the engine's first words
  std::optional<int64_t> first_audio_ms;  // the first sentence was synthesized
};
struct ReplyEvent {
  uint16_t utterance = 0;  // the voice's utterance id (0: no voice)
  std::string text;
  std::string engine;  // "offline" | "llm"
  int intimacy = 0;
  std::string style;
  bool safety = false;  // the persona stepped out of role (a safety message)
  ReplyTiming timing;
};
struct PlaybackNotice {
  enum class Kind { kStart, kEnd, kPaused, kResumed, kCancelled } kind = Kind::kStart;
  uint16_t utterance = 0;
  int64_t played_ms = 0;
  std::string reason;                       // kCancelled: "barge_in", "stop", "session_ended"
  std::optional<int64_t> reply_latency_ms;  // kStart: user's turn end -> this first packet
};
struct SafetyNotice {
  std::string category;  // "self_harm", "abuse", "violence"
  std::string message;
};
struct EngineFallback {
  std::string stage;   // "dialogue" | "tts"
  std::string engine;  // the engine that took over
  std::string reason;
};
using Event = std::variant<ErrorEvent, MediaNotice, SpeechStarted, SpeechEnded, TranscriptPartial,
                           TranscriptFinal, AsrFallback, VisionNotice, LiveScores, ReplyDelta,
                           ReplyEvent, PlaybackNotice, SafetyNotice, EngineFallback>;

struct Envelope {
  int64_t t_ms = 0;  // session clock
  Event event;
  bool droppable = false;  // may be dropped for a slow reader (live scores, partials)
};

// Where a session's events and audio go: implemented at the edge (app/), which knows the
// connections behind the ids and the wire format. Called from any thread; must not block.
class Outbox {
 public:
  virtual ~Outbox() = default;
  virtual void Deliver(const std::vector<uint64_t>& connections, const Envelope& event) = 0;
  // A finished binary packet of the persona's voice (docs/protocol.md "Playback").
  virtual void DeliverAudio(const std::vector<uint64_t>& connections, std::string packet) = 0;
};

// ---- Timeline: the report's data ---------------------------------------------------------

struct TranscriptTurn {
  std::string role;  // "user" | "assistant"
  std::string text;
  int64_t t_start_ms = 0;
  int64_t t_end_ms = 0;
  Json::Value extra;  // words, confidence, played_ms... (null when none)
};

// What analysers append to while a session runs. Values are the stored report's own fields.
class Timeline {
 public:
  static constexpr size_t kMaxEvents = 200'000;
  static constexpr size_t kMaxSeconds = 6 * 3600;

  // Merges `values` (an object) into the per-second sample for floor(t_ms / 1000).
  void AddSample(int64_t t_ms, const Json::Value& values);
  void AddEvent(int64_t t_ms, std::string type, Json::Value data = Json::Value());
  void AddTurn(TranscriptTurn turn);

  struct Snapshot {
    Json::Value samples;     // [{"t": seconds, ...values}], ascending
    Json::Value events;      // [{"t": ms, "type": ..., ...data}]
    Json::Value transcript;  // [{"role","text","t_start","t_end",...}]
    uint64_t dropped = 0;    // entries refused by the limits above
  };
  Snapshot Take() const;

 private:
  mutable std::mutex mu_;
  std::map<int64_t, Json::Value> samples_;
  std::vector<Json::Value> events_;
  std::vector<Json::Value> turns_;
  uint64_t dropped_ = 0;
};

// ---- Shared services: what every session's stages use ----------------------------------------

// Options of the stages (each module's own config struct inside).
struct ConversationConfig {
  media::MediaConfig media;
  vision::VisionConfig vision;
  // Server-side landmarks (dlib) for sessions that send video but no landmarks.
  bool server_landmarks = true;
  vision::LandmarkerConfig landmarker;
  core::WorkerPoolConfig vision_workers{.name = "vision", .threads = 2, .queue_capacity = 64};
  speech::HearingConfig hearing;
  speech::EchoConfig echo;  // the persona's voice cancelled from the microphone
  // Answering: the dialogue engines, turn-taking, the voice.
  dialogue::LlmConfig llm;  // base_url set: the LLM answers, the offline engine as fallback
  dialogue::TurnTakingConfig turn_taking;
  dialogue::InterruptionConfig interruption;
  int history_turns = 12;              // earlier turns given to the LLM
  int max_say_chars = 2000;            // longest typed turn
  speech::RemoteTtsConfig remote_tts;  // base_url set: remote speech, Flite as fallback
  media::PlaybackConfig playback;
  // Replies in progress at once. Each holds its thread while it waits on its engine (an LLM's
  // first token, a remote voice), so the pool is sized for waiting, not for cores: an LLM that
  // stalls for a few sessions must not hold up the others' replies.
  core::WorkerPoolConfig reply_workers{.name = "replies", .threads = 24, .queue_capacity = 4096};
  int synthesis_slots = 3;  // Flite syntheses (CPU) running at once, across all replies
  int end_wait_s = 20;      // how long an end waits for a stage's last results (transcripts)
  std::vector<std::string> Validate() const;
  // Every stage's options (each module's AddFlags), and the ones of the stages themselves.
  void AddFlags(core::FlagSet& flags);
};

// A model that is slow to load (~100 MB, ~1 s: dlib's landmarks, PocketSphinx's decoders),
// loaded once on first use from a worker and shared afterwards. state() never waits.
template <typename T>
class LazyModel {
 public:
  // `load` returns the model, or null with the reason in its argument; the outcome is logged.
  std::shared_ptr<T> Get(const std::function<std::shared_ptr<T>(std::string*)>& load,
                         core::Logger& log, const std::string& what) {
    const std::lock_guard lock(mu_);
    if (!model_ && error_.empty()) {
      state_ = "loading";
      const auto t0 = std::chrono::steady_clock::now();
      model_ = load(&error_);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      state_ = model_ ? "ready" : "failed";
      if (model_)
        log.Info(what + " loaded", {{"load_ms", static_cast<Json::Int64>(ms)}});
      else
        log.Error(what + " could not load: off", {{"error", error_}});
    }
    return model_;
  }
  // "not_loaded", "loading", "ready" or "failed".
  const char* state() const { return state_.load(); }
  // The model when it has loaded; null otherwise (never waits for a load in progress).
  std::shared_ptr<T> IfLoaded() const {
    const std::unique_lock lock(mu_, std::try_to_lock);
    return lock.owns_lock() ? model_ : nullptr;
  }
  std::string error() const {
    const std::lock_guard lock(mu_);
    return error_;
  }

 private:
  mutable std::mutex mu_;  // held while loading
  std::shared_ptr<T> model_;
  std::string error_;
  std::atomic<const char*> state_{"not_loaded"};
};

// The pools, models and engines all sessions share. Created once by the application.
class Services {
 public:
  Services(const ConversationConfig& config, core::WorkerPool& general, core::Logger& log,
           core::Metrics& metrics);
  ~Services();  // Shutdown()
  // Runs what is queued and joins the pools' threads. Idempotent.
  void Shutdown();

  const ConversationConfig& config() const { return config_; }
  core::Logger& log() { return log_; }
  core::Metrics& metrics() { return metrics_; }
  core::WorkerPool& general() { return general_; }
  core::WorkerPool& vision_pool() { return vision_pool_; }
  core::WorkerPool& asr_pool() { return asr_pool_; }
  core::WorkerPool& remote_pool() { return remote_pool_; }

  // Loaded on first use (call from a worker); null when it cannot load (logged once).
  std::shared_ptr<const vision::LandmarkerModel> Landmarker();
  std::shared_ptr<speech::DecoderPool> Decoders();
  const LazyModel<const vision::LandmarkerModel>& landmarker_state() const { return landmarker_; }
  const LazyModel<speech::DecoderPool>& decoders_state() const { return decoders_; }
  speech::RemoteRecognizer* remote_asr() { return remote_asr_.get(); }
  // Starts loading what a session with this media will need (non-blocking).
  void Preload(bool video);

  core::WorkerPool& reply_pool() { return reply_pool_; }
  // Held around each local (CPU) synthesis: at most `synthesis_slots` run at once.
  std::counting_semaphore<>& synthesis_slots() { return synthesis_slots_; }
  core::TimerQueue& timers() { return timers_; }
  const std::shared_ptr<media::Pacer>& pacer() const { return pacer_; }
  speech::Synthesizer& flite() { return *flite_; }
  speech::Synthesizer* remote_tts() { return remote_tts_.get(); }
  dialogue::LlmEngine* llm() { return llm_.get(); }
  // Every voice a persona may name, Flite's and the remote service's.
  std::vector<speech::VoiceInfo> Voices() const;
  // The personas, set once before sessions are created; a missing one gets a neutral profile.
  void SetPersonas(std::map<std::string, dialogue::PersonaProfile> personas);
  dialogue::PersonaProfile Persona(const std::string& id) const;

 private:
  ConversationConfig config_;
  core::WorkerPool& general_;
  core::Logger& log_;
  core::Metrics& metrics_;
  core::WorkerPool vision_pool_;  // server-side landmarks: slow, kept off the general pool
  core::WorkerPool asr_pool_;     // decoding; at most one task per utterance queued
  core::WorkerPool remote_pool_;  // requests to the remote transcription service (network waits)
  std::unique_ptr<speech::RemoteRecognizer> remote_asr_;
  LazyModel<const vision::LandmarkerModel> landmarker_;
  LazyModel<speech::DecoderPool> decoders_;
  core::WorkerPool reply_pool_;  // replies: engine calls (network waits) and synthesis
  std::counting_semaphore<> synthesis_slots_;
  core::TimerQueue timers_;
  std::shared_ptr<media::Pacer> pacer_;
  std::unique_ptr<speech::Synthesizer> flite_;
  std::unique_ptr<speech::Synthesizer> remote_tts_;
  std::unique_ptr<dialogue::LlmEngine> llm_;
  mutable std::mutex personas_mu_;
  std::map<std::string, dialogue::PersonaProfile> personas_;
};

// ---- Session and its conversation -----------------------------------------------------------

// Parameters of a practice "start" message.
struct StartParams {
  enum class Media { kWebm, kPcm } media = Media::kWebm;
  int sample_rate = 0;        // pcm only
  bool pcm_playback = false;  // the persona's voice as PCM (0x11) instead of Opus (0x10)
  // Who takes the persona's voice out of the microphone: true the server (`"echo":"server"`),
  // false the client or nobody needs to (`"client"`); unset, `--echo-cancel` decides.
  std::optional<bool> server_echo_cancel;
  // An uploaded recording (Conversation::AnalyzeRecording): every frame is analysed, nothing is
  // skipped to keep up with real time, and the persona does not answer.
  bool recording = false;
};
std::string_view MediaName(StartParams::Media m);

class Session;

// A session's stages. Created with the session; Session::conversation() returns it.
class Conversation {
 public:
  // `session` is the session that owns this conversation (the stages keep a weak reference).
  Conversation(const std::shared_ptr<Session>& session, Services& services);
  ~Conversation();
  Conversation(const Conversation&) = delete;
  Conversation& operator=(const Conversation&) = delete;

  // Non-blocking entry points (the service thread).
  bool StartMedia(const StartParams& params, std::string* error);
  void StopMedia();
  // WebM (after a webm start) or PCM (after a pcm start) bytes, any chunking.
  void PushMedia(std::string_view bytes);
  enum class LandmarkFormat { kJson, kBinary };
  void PushLandmarks(LandmarkFormat format, std::string_view bytes);
  // A typed user turn: answered exactly as speech is. False with `error` when refused.
  bool Say(const std::string& text, std::string* error);
  // The client's report of how much of `utterance` it has played. False with `error` when it
  // names no utterance of this session or an impossible position.
  bool PlaybackPosition(int utterance, int64_t played_ms, std::string* error);

  // Decoded media as the stages see it (session clock), for tests and tools: called on
  // GStreamer's threads, must be quick.
  using AudioTap = std::function<void(int64_t t_ms, std::span<const int16_t> pcm16k)>;
  using VideoTap = std::function<void(int64_t t_ms, const media::VideoFrame& frame)>;
  void AddAudioTap(AudioTap tap);
  void AddVideoTap(VideoTap tap);

  // Drains every stage (bounded) and merges their measures into the session's report.
  // Blocks: a worker or the shutdown thread. Idempotent.
  void End();
  // The measures End would merge if the session ended now, ending nothing: for a crash
  // checkpoint. Any thread; takes each stage's lock briefly.
  Json::Value Summary();

  // A whole recording (WebM, or mono S16LE PCM at `sample_rate`) through the stages as fast as
  // they take it: the media is fed with back-pressure (the decoder's backlog, the recogniser's
  // queue, dlib on every frame), listened to and watched, never answered. Blocks for the
  // analysis (its caller's own executor, never the general pool); End() afterwards collects the
  // report. The session must be live (SessionRegistry::BeginRecording).
  struct RecordingLimits {
    double max_seconds = 1200;  // stream time beyond this: stops, too_long
    // No progress (bytes taken, audio or video decoded) for this long: stops, stalled.
    std::chrono::milliseconds stall_timeout{30'000};
  };
  struct RecordingOutcome {
    enum class Status { kAnalysed, kUndecodable, kTooLong, kStalled, kEnded } status;
    double media_s = 0;  // stream time decoded
    uint64_t audio_frames = 0, video_frames = 0;
    std::string error;  // the decoder's own words when it failed
  };
  RecordingOutcome AnalyzeRecording(StartParams params, std::string_view bytes,
                                    const RecordingLimits& limits);

  struct Stages;  // conversation.cc and the stage files

 private:
  std::shared_ptr<Stages> stages_;
};

// A session's facts, for its stored document and its report.
struct SessionInfo {
  std::string id, user_id, persona_id;
  State state = State::kCreated;
  std::chrono::system_clock::time_point created_at;
  std::optional<std::chrono::system_clock::time_point> started_at, ended_at;
  std::string end_reason;
  size_t connections = 0;
  std::optional<StartParams::Media> media;  // while media is started
  double duration_s = 0;                    // started -> ended (or now), ms precision
  bool recording = false;                   // an uploaded recording's analysis, not a live one
};

class Session {
 public:
  Session(std::string id, std::string user_id, std::string persona_id, Outbox* outbox);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::string& id() const { return id_; }
  const std::string& user_id() const { return user_id_; }
  const std::string& persona_id() const { return persona_id_; }
  std::chrono::system_clock::time_point created_at() const { return created_at_; }

  State state() const;
  bool recording() const;  // an uploaded recording's analysis (not a live conversation)
  SessionInfo Info() const;
  std::optional<StartParams::Media> media() const;
  // Milliseconds on the session clock: 0 when it went live (always 0 before).
  int64_t NowMs() const;
  Timeline& timeline() { return timeline_; }
  const Timeline& timeline() const { return timeline_; }
  // The stages; null for sessions of a registry without services.
  Conversation* conversation() { return conversation_.get(); }

  // To every connection of this session; `t` is now unless given.
  void Emit(Event event, bool droppable = false, std::optional<int64_t> t_ms = std::nullopt);
  void EmitAudio(std::string packet);

  // A recording's session lasts as long as its media, not as long as its analysis took.
  void SetRecordedDuration(double seconds);

  // True once its end has finished: the stages drained and the ended callback (the report's
  // store write) returned. Between MarkEnded and this, the state is already ended but the
  // report may not be stored yet.
  bool end_finished() const;
  // Waits up to `timeout` for end_finished(); true when it is.
  bool WaitEndFinished(std::chrono::steady_clock::duration timeout) const;

  // Analysers contribute to the report by merging a partial report, e.g.
  // {"metrics": {"blinks": 12}, "feedback": {"blinking": 80}} (objects merge deeply).
  void MergeReport(const Json::Value& patch);
  Json::Value report_patch() const;

  // Crash checkpoints: true when a live session's next one is due (`interval` after the last,
  // or as soon as a turn has finished: a final transcript, the persona's reply), and then not
  // again until the next is. Never for a recording's analysis (it has no live state to lose).
  bool TakeCheckpointDue(std::chrono::steady_clock::time_point now,
                         std::chrono::steady_clock::duration interval);

 private:
  friend class SessionRegistry;  // drives the transitions below; never the fields directly
  // Each transition runs under the session's own lock; the registry decides when.
  bool Attach(uint64_t connection, bool* went_live);  // false once ended
  bool GoLiveForRecording();                          // created -> live without a connection
  void Detach(uint64_t connection);
  bool BeginMedia(const StartParams& params, std::string* error);
  bool EndMediaMark(std::string* error);
  void AbandonMedia();
  // created/live -> ended; false when it had already ended. `connections` gets the open ones.
  bool MarkEnded(const std::string& reason, std::vector<uint64_t>* connections);
  void MarkEndFinished();
  // How long a live session has had no connection (nullopt: it has one, or is not live);
  // marks it so that it expires once.
  bool TakeExpiredGrace(std::chrono::steady_clock::time_point now,
                        std::chrono::steady_clock::duration grace);

  const std::string id_;
  const std::string user_id_;
  const std::string persona_id_;
  const std::chrono::system_clock::time_point created_at_;
  Outbox* const outbox_;
  Timeline timeline_;

  mutable std::mutex mu_;
  mutable std::condition_variable end_finished_cv_;
  State state_ = State::kCreated;
  bool end_finished_ = false;
  std::chrono::steady_clock::time_point live_steady_{};
  std::optional<std::chrono::system_clock::time_point> started_at_;
  std::optional<std::chrono::system_clock::time_point> ended_at_;
  std::string end_reason_;
  std::set<uint64_t> connections_;
  std::optional<std::chrono::steady_clock::time_point> disconnected_since_;
  std::optional<StartParams> media_;
  bool recording_ = false;
  std::optional<double> recorded_duration_s_;
  Json::Value report_patch_{Json::objectValue};
  std::chrono::steady_clock::time_point last_checkpoint_{};
  bool turn_since_checkpoint_ = false;
  // Last: destroyed first, while everything its stages use still exists.
  std::unique_ptr<Conversation> conversation_;
};

struct SessionConfig {
  int disconnect_grace_s = 30;      // live session with no connection for this long: ended
  int unused_session_ttl_s = 3600;  // created but never connected for this long: ended
  int max_sessions = 10'000;        // sessions held in memory (all states)
  // Live conversations the machine holds in real time; past it new ones are refused (503 with
  // Retry-After) and /health/ready says not ready. 0: derived from the cores
  // (kSessionsPerCore each, by measurement: bench/capacity.sh).
  int capacity = 0;
  // A created session holds its place this long while its client connects; one that connects
  // later is admitted only if there is room then.
  int capacity_hold_s = 120;
  static constexpr int kSessionsPerCore = 12;
  int EffectiveCapacity() const;
  int end_hook_timeout_s = 20;      // shutdown waits this long for sessions to end
  // Threads that end sessions (drain stages, build and store reports): their own, so a storm
  // of sessions ending never starves request handling. Ending mostly waits (bounded: media
  // EOS, last transcripts, the store), so there are more of them than cores.
  int end_workers = 16;
  // A live session's checkpoint (what a crash would leave of it) is written this often, and
  // after every finished turn; 0: never.
  int checkpoint_interval_s = 5;
  std::string Validate() const;
  void AddFlags(core::FlagSet& flags);
};

class SessionRegistry {
 public:
  using EndHook = std::function<void(Session&)>;
  // Runs when a session ends, after the hooks: closes its connections.
  using EndedCallback = std::function<void(Session&, const std::vector<uint64_t>& connections)>;

  // `services` gives each session its conversation (null: sessions without stages).
  SessionRegistry(const SessionConfig& config, core::Logger& log, core::Metrics& metrics,
                  Services* services, Outbox* outbox);
  ~SessionRegistry();  // stops the expiry thread; does not end sessions (see EndAll)

  // Runs after the conversation has drained, before the ended callback.
  void AddEndHook(EndHook hook);
  void SetEndedCallback(EndedCallback cb);
  // Runs on the service thread when a session goes live: must not block.
  void SetLiveCallback(std::function<void(Session&)> cb);
  // Runs on the registry's timer thread when a live session's checkpoint is due
  // (Session::TakeCheckpointDue, SessionConfig::checkpoint_interval_s): must not block.
  void SetCheckpointCallback(std::function<void(std::shared_ptr<Session>)> cb);

  // Why Create gave nullptr.
  enum class Refusal {
    kNone,
    kFull,        // max_sessions are in memory
    kAtCapacity,  // the live conversations the machine holds (SessionConfig::capacity)
  };
  // nullptr (and why) when refused. A recording's analysis (`counts_toward_capacity` false) is
  // bounded by the upload slots instead.
  std::shared_ptr<Session> Create(const std::string& user_id, const std::string& persona_id,
                                  Refusal* why = nullptr, bool counts_toward_capacity = true);
  // Conversations taking a place now: live ones (not recordings) and those created in the last
  // capacity_hold_s that have not connected yet.
  size_t Active() const;
  int capacity() const { return capacity_; }
  // Whether `s` may go live now: it has its place (live, or created within the hold), or
  // there is room.
  bool HasRoomFor(const Session& s) const;
  std::shared_ptr<Session> Find(const std::string& id) const;
  // The user's sessions, newest first.
  std::vector<std::shared_ptr<Session>> ListForUser(const std::string& user_id) const;
  size_t CountInState(State s) const;

  // Attaches a connection: created -> live. False when the session has ended meanwhile.
  bool Attach(Session& s, uint64_t connection);
  // created -> live for an uploaded recording's analysis: no connection, no disconnect grace
  // (it ends when the analysis does). False when it is not newly created.
  bool BeginRecording(Session& s);
  void Detach(Session& s, uint64_t connection);
  // start/stop control messages; false with `error` when refused.
  bool Start(Session& s, const StartParams& params, std::string* error);
  bool Stop(Session& s, std::string* error);

  // Ends the session on this thread (its conversation drains here). False when it had ended;
  // when another thread is still ending it, first waits (up to end_hook_timeout_s) for that end
  // to finish, so that on return the report is stored (or its write has failed) either way.
  bool End(Session& s, const std::string& reason);
  // Ends it on the registry's end workers and then calls `done` there (also when it had ended
  // already); never blocks. When even their queue is full it ends here.
  void EndAsync(std::shared_ptr<Session> s, const std::string& reason,
                std::function<void()> done = nullptr);
  // Removes an ended session from memory, remembering (bounded) that it ended.
  void Remove(const std::string& id);
  // True when `id` ended in this process and was removed from memory; `user_id` is its owner.
  bool RecentlyEnded(const std::string& id, std::string* user_id) const;
  // Ends every session that has not ended, in parallel on the pool; waits up to
  // end_hook_timeout_s. Returns how many were ended.
  size_t EndAll(const std::string& reason);

 private:
  void ExpiryLoop();
  void CheckExpiry();

  size_t ActiveLocked(const Session* except) const;  // under mu_

  SessionConfig config_;
  const int capacity_;
  core::Logger& log_;
  core::Metrics& metrics_;
  Services* const services_;
  Outbox* const outbox_;

  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Session>> sessions_;
  static constexpr size_t kMaxTombstones = 100'000;
  std::unordered_map<std::string, std::string> tombstones_;  // id -> user, for 410 answers
  std::deque<std::string> tombstone_order_;
  std::vector<EndHook> end_hooks_;
  EndedCallback ended_cb_;
  std::function<void(Session&)> live_cb_;
  std::function<void(std::shared_ptr<Session>)> checkpoint_cb_;

  std::mutex expiry_mu_;
  std::condition_variable expiry_cv_;
  bool stopping_ = false;
  std::thread expiry_thread_;
  // Last: joined first, while everything an end uses still exists.
  core::WorkerPool enders_;
};

// The report document (docs/protocol.md "Report") of an ended session, from its facts, its
// timeline and its report patch; `persona_name` may be empty.
Json::Value BuildReport(const Session& session, const std::string& persona_name);
// What a crash now would leave of a live session (a checkpoint): the report BuildReport would
// make if it ended now with end_reason "server_crash", its stages' measures as of now
// (Conversation::Summary) merged in, and "checkpoint": {"at": now}. The session goes on
// unchanged. Any thread; costs about what a report costs.
Json::Value BuildCheckpoint(Session& session, const std::string& persona_name);
// The conversation scores (feedback.tone, .initiative, .likability), feedback.total_score, each
// score's inputs in feedback.feedback_details, feedback.summary and the report's tips, from the
// report's metrics and the vision scores already in it (docs/scoring.md "Scores"). Pure; a
// score without enough input stays null with the reason in its details.
void ScoreReport(Json::Value* report);
// The LLM rewords the report's templated summary and tips from the same numbers (rewrite.cc):
// on success feedback.summary_by becomes "llm"; false with `error` (the templates' text stays)
// when the service fails or its answer drops a tip or states a number the session lacks.
// Blocks for the request (an ending thread).
bool RewriteFeedback(Json::Value* report, dialogue::LlmEngine& llm, std::string* error);

}  // namespace parley::session
