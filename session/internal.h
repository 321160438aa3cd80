// Internal to session/: the stages a Conversation holds. Each stage is its own object with its
// own lock and, where it runs work on the shared pools, its own strand; asynchronous work holds
// the stage (shared_from_this) and reaches the session through a weak reference, so a session
// that is gone is simply skipped. Stages never see sockets or wire JSON: they emit typed events
// through the Session.
#pragma once

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "session/session.h"

namespace parley::session {

// Rounds to a multiple of `unit` (report figures).
inline double Round(double v, double unit) { return std::round(v / unit) * unit; }
// Merges report patches: objects member by member; a null never erases a measured value.
void DeepMerge(Json::Value& into, const Json::Value& patch);

// ---- Ingest: binary media -> GStreamer -> 16 kHz PCM and video frames -----------------------

class IngestStage : public std::enable_shared_from_this<IngestStage> {
 public:
  struct Sinks {
    std::function<void(int64_t t_ms, std::span<const int16_t> pcm)> audio;
    std::function<void(int64_t t_ms, const media::VideoFrame& frame)> video;
    // A start's pipeline has stopped and delivered its last frame (stop, a dropped connection,
    // the end); on the stage's strand.
    std::function<void()> drained;
  };
  IngestStage(std::weak_ptr<Session> session, Services& services, Sinks sinks);

  // Service thread: the pipeline is built on the stage's strand; bytes that arrive meanwhile
  // wait (bounded by the media backlog).
  bool Start(const StartParams& params, std::string* error);
  void Stop();
  void Push(std::string_view bytes);
  // Whether the video needs decoding (server-side landmarks); any thread, cheap.
  void SetVideoWanted(bool wanted);
  // Bytes taken but not decoded yet (a recording's feeder waits on it); any thread.
  size_t Backlog() const;
  // The current start's pipeline could not be built or stopped decoding.
  bool Failed() const;
  // Worker: stops what is running, drains the strand here, adds metrics.media.
  void End(Json::Value* patch);
  // What End adds to the report, as of now, without ending anything (a crash checkpoint).
  void Summarize(Json::Value* patch);

 private:
  struct Totals {
    std::atomic<uint64_t> audio_samples{0}, video_frames{0}, decode_errors{0}, bytes_in{0},
        dropped_waiting_keyframe{0}, video_skipped{0};
    void Add(const media::IngestStats& s);
    void Add(const Totals& t);
  };
  // Between the service thread (which feeds bytes) and the strand that builds the pipeline.
  struct Feeder {
    std::mutex mu;
    std::unique_ptr<media::IngestPipeline> pipeline;  // null until built
    bool video_wanted = true;                         // for the pipeline once built
    std::vector<std::string> early;
    size_t early_bytes = 0;
    bool closed = false;  // stop/end: input refused; the pipeline is retired once built
    bool failed = false;
  };
  void Retire();  // under mu_

  std::weak_ptr<Session> session_;
  Services& services_;
  Sinks sinks_;
  core::Strand strand_;  // builds and stops, in the order of start and stop messages
  mutable std::mutex mu_;
  bool started_ever_ = false;
  bool ended_ = false;
  std::shared_ptr<Feeder> feeder_;  // the current start's
  std::shared_ptr<Totals> totals_ = std::make_shared<Totals>();
};

// ---- Hearing: PCM -> endpointer -> streaming recognition -> transcripts ---------------------

class HearingStage : public std::enable_shared_from_this<HearingStage> {
 public:
  // What the dialogue hears of the user's turns (called on the threads that found them).
  struct Listener {
    std::function<void(int64_t t_ms)> speech_start;
    // `transcript_coming`: the burst was long enough to be an utterance (its final follows).
    std::function<void(int64_t t_ms, bool transcript_coming)> speech_end;
    std::function<void(const std::string& text, double confidence, int64_t t_end_ms)>
        final_transcript;
    std::function<void(const std::string& text)> partial;
    // An utterance whose final will not come (recognition failed or fell behind).
    std::function<void()> transcript_lost;
    // While the user speaks (each frame): how much of the turn is speech so far.
    std::function<void(int64_t spoken_ms)> speech_progress;
  };
  HearingStage(std::weak_ptr<Session> session, Services& services);
  void SetListener(Listener listener) { listener_ = std::move(listener); }  // before any audio
  // The persona's voice is cancelled from the audio before it is heard; before any audio.
  void SetEcho(std::shared_ptr<speech::EchoCanceller> echo) { echo_ = std::move(echo); }
  // The persona's voice over [t_start, t_end] (session clock): not the user's pause.
  void AddPartnerSpeech(int64_t t_start_ms, int64_t t_end_ms);
  // GStreamer's thread: the VAD runs here (a few µs per 10 ms); decoding goes to the ASR pool.
  void Feed(int64_t t_ms, std::span<const int16_t> pcm);
  // Ends a turn in progress.
  void Flush();
  // A recording's analysis: no partial transcripts (nobody listens to them); before any audio.
  void SetRecording() { recording_ = true; }
  // Utterances not transcribed yet (a recording's feeder waits on it); any thread.
  size_t Backlog();
  // Worker: waits (bounded) for the session's last transcripts, adds the talk metrics.
  void End(Json::Value* patch);
  // What End adds to the report, as of now, without ending anything (a crash checkpoint).
  void Summarize(Json::Value* patch);

 private:
  struct Job;
  void TrackUtterances(std::vector<speech::EndpointEvent>& events);
  void EmitEndpointEvents(Session& s, const std::vector<speech::EndpointEvent>& events);
  bool HasWork(const Job& job) const;
  bool StreamsWhileSpoken() const;
  void Kick();
  void Retire(const std::shared_ptr<Job>& job);  // under mu_
  void Pump(const std::shared_ptr<Job>& job);
  void RequestDecoder(Session& s, const std::shared_ptr<Job>& job);
  void MaybeEmitPartial(Session& s, Job& job, std::chrono::milliseconds lag);
  // Under mu_: how long the oldest audio of `job` not yet decoded has waited.
  std::chrono::milliseconds Lag(const Job& job, std::chrono::steady_clock::time_point now) const;
  // Drops the utterances the recogniser is too far behind on (under mu_); true for each
  // dropped, in `dropped`.
  int ShedLagging(std::chrono::steady_clock::time_point now);
  bool ShedIfBehind(Job& job, std::chrono::steady_clock::time_point now);  // under mu_
  void SayBehind(Session& s);
  void TranscribeRemotely(const std::shared_ptr<Job>& job);
  void Deliver(Session& s, const Job& job, const speech::Recognition& r);

  std::weak_ptr<Session> session_;
  Services& services_;
  const speech::HearingConfig& config_;
  Listener listener_;
  std::shared_ptr<speech::EchoCanceller> echo_;
  std::vector<int16_t> cleaned_;  // the last frame after echo cancellation (under mu_)
  bool recording_ = false;

  std::mutex mu_;
  std::condition_variable idle_;
  std::unique_ptr<speech::Endpointer> endpointer_;  // created with the first audio
  bool ended_ = false;
  std::vector<std::shared_ptr<Job>> jobs_;  // utterances not transcribed yet, in order
  size_t streamed_ = 0;                     // samples of the utterance in progress handed over
  speech::TalkStats talk_;
  std::optional<int64_t> first_audio_ms_;
  int64_t last_audio_ms_ = 0;
  uint64_t utterances_ = 0, recognised_ = 0, failed_ = 0, refused_ = 0, fallbacks_ = 0;
  uint64_t behind_ = 0;         // of refused_: failed because the recogniser fell behind
  uint64_t partials_shed_ = 0;  // partials skipped while the recogniser was behind
};

// ---- Vision: landmark frames (client or dlib) -> FaceAnalyzer -> events and scores ----------

class VisionStage : public std::enable_shared_from_this<VisionStage> {
 public:
  VisionStage(std::weak_ptr<Session> session, Services& services);
  // Each vision event's type ("smile_start"...), for the dialogue's intimacy; set before frames.
  void SetListener(std::function<void(const std::string& type)> on_event) {
    on_event_ = std::move(on_event);
  }
  // The service thread: client frames are analysed right here (bounded CPU, ~7-25 µs).
  void PushClientFrame(Conversation::LandmarkFormat format, std::string_view bytes);
  // Whether the client has sent landmarks lately (then server-side landmarks are not made, and
  // the video need not be decoded). Any thread.
  bool ClientSendsLandmarks() const;
  // GStreamer's thread: a decoded video frame, for dlib while the client sends no landmarks.
  void OnVideo(int64_t t_ms, const media::VideoFrame& frame);
  // A recording's analysis: a frame that comes while dlib is busy waits for it (the decoder
  // slows down) instead of being skipped; before any frame.
  void SetLossless() { lossless_ = true; }
  // Worker: waits for dlib's frame in flight, adds the vision metrics and scores.
  void End(Json::Value* patch);
  // What End adds to the report, as of now, without ending anything (a crash checkpoint).
  void Summarize(Json::Value* patch);

 private:
  struct Input;
  void Analyse(Session& s, Input& in);  // analysis_mu_ held
  void Submit(Input in);                // any thread
  void ReportError(Session& s, const std::string& code, const std::string& message);

  std::weak_ptr<Session> session_;
  Services& services_;
  std::function<void(const std::string&)> on_event_;
  core::Counter& rejected_frames_;
  core::Counter& late_frames_;
  core::Counter& analysed_frames_;

  // Shared by the service thread and the vision pool.
  std::mutex mu_;
  std::condition_variable idle_;
  bool ended_ = false;
  bool landmarker_busy_ = false;
  bool lossless_ = false;
  std::chrono::steady_clock::time_point last_client_frame_{};
  std::atomic<int64_t> last_client_push_ms_{0};  // steady clock ms of the last client frame

  // Analysis: the service thread (client frames), a vision worker (server frames), End.
  std::mutex analysis_mu_;
  vision::FaceAnalyzer analyzer_;
  vision::JsonFrameParser parser_;
  std::unique_ptr<vision::Landmarker> landmarker_;  // vision pool only (one job at a time)
  bool have_clock_ = false;
  double client_t0_ = 0, session_t0_ = 0, last_client_t_ = 0;
  double origin_ = -1;  // session-clock time of the analyzer's first frame
  double last_t_ = -1;  // session-clock time of the last analysed frame
  uint64_t frames_ = 0, rejected_ = 0, late_ = 0, skipped_ = 0, client_frames_ = 0,
           server_frames_ = 0;
  std::unordered_map<std::string, std::pair<std::chrono::steady_clock::time_point, int>> throttle_;
  bool told_no_server_landmarks_ = false;
};

// ---- Playback: the persona's voice (synthesis and paced packets) ----------------------------

class PlaybackStage : public std::enable_shared_from_this<PlaybackStage> {
 public:
  PlaybackStage(std::weak_ptr<Session> session, Services& services);
  ~PlaybackStage();
  // The packet format for the next utterances (a start message's "playback").
  void SetPcm(bool pcm);
  // The voice's life, for the dialogue (the pacer thread or the caller; must be quick).
  using Listener = std::function<std::optional<int64_t>(const media::PlaybackEvent&)>;
  void SetListener(Listener on_event) { on_event_ = std::move(on_event); }
  // Each packet's audio, as it is sent, becomes the echo canceller's reference; before Begin.
  void SetEcho(std::shared_ptr<speech::EchoCanceller> echo) { echo_ = std::move(echo); }

  // An utterance being spoken, sentence by sentence (Speak blocks: a worker).
  class Utterance {
   public:
    uint16_t id() const { return writer_ ? writer_->utterance() : 0; }
    // Synthesizes and queues `sentence`; false when nothing could be synthesized or the
    // utterance was cancelled.
    bool Speak(const std::string& sentence);
    void Finish();
    bool cancelled() const { return writer_ && writer_->cancelled(); }
    int64_t audio_ms() const { return audio_ms_; }  // synthesized so far

   private:
    friend class PlaybackStage;
    std::shared_ptr<PlaybackStage> stage_;
    std::unique_ptr<media::Playback::Writer> writer_;
    std::string voice_;
    double rate_ = 1.0;
    int64_t audio_ms_ = 0;
    bool told_fallback_ = false;
  };
  // Null when no playback can be made (logged).
  std::unique_ptr<Utterance> Begin(const std::string& voice, double rate);
  // Stops the voice at once (`reason` goes in playback.cancelled).
  void Cancel(const std::string& reason);
  // Holds the voice (packets stop within one) and lets it go on where it stopped.
  void Pause();
  void Resume();
  bool ClientPosition(int utterance, int64_t played_ms, std::string* error);
  // The client's last report for `utterance` (nullopt: none).
  std::optional<int64_t> ClientPlayed(uint16_t utterance) const;
  void End(Json::Value* patch);
  // What End adds to the report, as of now, without ending anything (a crash checkpoint).
  void Summarize(Json::Value* patch);

 private:
  void OnEvent(const media::PlaybackEvent& e);
  void KeepReference(uint16_t utterance, std::span<const int16_t> pcm, int rate);
  void OnPacketSent(const std::string& packet);

  std::weak_ptr<Session> session_;
  Services& services_;
  Listener on_event_;
  mutable std::mutex mu_;
  std::shared_ptr<media::Playback> playback_;  // shared: see Cancel
  bool pcm_ = false;
  std::string cancel_reason_;
  uint16_t last_utterance_ = 0;
  std::map<uint16_t, int64_t> client_played_;  // bounded: the last few utterances
  std::shared_ptr<speech::EchoCanceller> echo_;
  // The last utterances' audio at 16 kHz, for the echo reference (bounded: a few utterances).
  std::map<uint16_t, std::vector<int16_t>> reference_;
  uint64_t synthesized_ms_ = 0, fallbacks_ = 0, failures_ = 0, utterances_ = 0;
};

// ---- Dialogue: when and what the persona answers ------------------------------------------------

class DialogueStage : public std::enable_shared_from_this<DialogueStage> {
 public:
  DialogueStage(std::weak_ptr<Session> session, Services& services,
                std::shared_ptr<PlaybackStage> playback, std::shared_ptr<HearingStage> hearing);
  ~DialogueStage();
  // A recording's analysis: the persona listens (turns are measured) and never answers; before
  // media starts.
  void SetListenOnly();
  // Inputs; any thread, non-blocking.
  void OnMediaStarted();
  void OnSpeechStart(int64_t t_ms);
  void OnSpeechEnd(int64_t t_ms, bool transcript_coming);
  void OnFinal(const std::string& text, double confidence, int64_t t_end_ms);
  // A turn's transcript will not come: an answer held back for it need not wait any longer.
  void OnTranscriptLost();
  bool Say(const std::string& text, std::string* error);
  void OnPartial(const std::string& text);  // the user's running hypothesis
  void OnSpeechProgress(int64_t spoken_ms);
  void OnVisionEvent(const std::string& type);
  // The voice's life; returns the reply latency for a start (user's turn end -> first packet).
  std::optional<int64_t> OnPlayback(const media::PlaybackEvent& e);
  // Worker: no new reply from now on; waits for the one in progress.
  void Stop();
  // The conversation measures (after the playback stage has ended: its last turn is in).
  void Measures(Json::Value* patch);

 private:
  struct Turn;  // the user's turn being answered
  void Step();  // asks the turn-taking what to do now; schedules its next deadline
  void RunReply(dialogue::TurnTaking::Action action);    // the strand
  void Apply(dialogue::InterruptionPolicy::Action act);  // outside mu_
  int64_t Now() const;

  std::weak_ptr<Session> session_;
  Services& services_;
  std::shared_ptr<PlaybackStage> playback_;
  std::weak_ptr<HearingStage> hearing_;
  core::Strand strand_;  // replies, one at a time, in order
  dialogue::PersonaProfile persona_;

  mutable std::mutex mu_;
  bool ended_ = false;
  bool listen_only_ = false;
  dialogue::TurnTaking turn_taking_;
  dialogue::InterruptionPolicy interruptions_;
  bool barge_in_pending_ = false;
  int interrupted_turns_ = 0, overlaps_ = 0;
  int backchannels_ = 0;  // finals heard over the persona that were not interruptions
  std::vector<int64_t> interrupted_at_ms_;
  dialogue::IntimacyModel intimacy_;
  std::unique_ptr<dialogue::OfflineEngine> offline_;  // the strand only
  std::vector<dialogue::Message> history_;
  uint64_t timer_ = 0;
  bool smiling_ = false, smiled_in_turn_ = false, user_speaking_ = false;
  std::optional<int64_t> turn_end_ms_;       // the user's last turn ended (for the reply latency)
  std::optional<int64_t> final_at_ms_;       // ...and its transcript came
  std::optional<int64_t> persona_ended_ms_;  // the persona's voice stopped; the user not yet on
  struct Spoken {  // an utterance playing (or queued), for the transcript when it ends
    std::string text, engine, style;
    int intimacy = 0;
    std::optional<int64_t> turn_end_ms;
    ReplyTiming timing;
    std::optional<int64_t> started_ms;
    std::optional<int64_t> reply_latency_ms;
    std::vector<std::pair<std::string, int64_t>> sentences;  // each with the audio ms it ends at
    std::optional<size_t> history_index;                     // its assistant message in history_
    std::string heard;                                       // what had played when it was cut
    bool done = false;      // the reply is written (RunReply let it go to play)
    bool recorded = false;  // cut while being written; its transcript turn is in
  };
  std::map<uint16_t, Spoken> spoken_;
  // Measures.
  int persona_turns_ = 0, persona_questions_ = 0, typed_turns_ = 0, safety_events_ = 0;
  int engine_fallbacks_ = 0;
  int64_t persona_speech_ms_ = 0;
  std::vector<int64_t> response_latencies_ms_, reply_latencies_ms_;
  int intimacy_start_ = 0, intimacy_max_ = 0;
  // What the user's answered turns carried (dialogue::AnalyzeTurn), for the report's scores.
  struct UserTurns {
    int turns = 0, opened = 0, about_persona = 0, self_disclosures = 0, positive_words = 0,
        negative_words = 0, smiled = 0;
  } user_turns_;
  bool last_reply_asked_ = true;  // the greeting asks; a first turn answers it
  std::map<std::string, int> engines_;
  Json::Value safety_log_{Json::arrayValue};
};

// ---- The conversation's stages, wired together ------------------------------------------------

struct Conversation::Stages : std::enable_shared_from_this<Conversation::Stages> {
  Stages(const std::shared_ptr<Session>& session, Services& services);
  void Wire();  // after construction (the stages' sinks need weak_from_this)

  std::weak_ptr<Session> session;
  Services& services;
  std::shared_ptr<HearingStage> hearing;
  std::shared_ptr<VisionStage> vision;
  std::shared_ptr<IngestStage> ingest;
  std::shared_ptr<PlaybackStage> playback;
  std::shared_ptr<DialogueStage> dialogue;
  std::shared_ptr<speech::EchoCanceller> echo;  // shared by playback (reference) and hearing

  std::mutex taps_mu;
  std::vector<AudioTap> audio_taps;
  std::vector<VideoTap> video_taps;
  std::once_flag ended;
};

}  // namespace parley::session
