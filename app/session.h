// Sessions: one practice conversation from creation to its report.
//
// A Session owns its timeline (what analysers measured), its sinks (where binary media and
// landmark frames go) and its clock. The SessionRegistry owns every Session and decides its
// lifetime: created -> live (first WebSocket) -> ended (explicit end, disconnect grace,
// abandonment or shutdown). End hooks run exactly once per session, on the thread that ended
// it (a worker thread or the shutdown thread), never on the WebSocket service thread.
//
// Thread safety: Session, Timeline and SessionRegistry are safe to use from any thread.
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
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/core.h"

namespace parley::app {

enum class SessionState { kCreated, kLive, kEnded };
std::string_view StateName(SessionState s);

// Binary frame kinds (first byte of a binary WebSocket message), see docs/protocol.md.
enum class FrameKind : uint8_t {
  kWebm = 0x01,
  kPcm = 0x02,
  kLandmarks = 0x03,
  kOpus = 0x10,    // server -> client
  kPcmOut = 0x11,  // server -> client
};
std::string_view FrameKindName(uint8_t kind);

struct TranscriptTurn {
  std::string role;  // "user" | "assistant"
  std::string text;
  int64_t t_start_ms = 0;
  int64_t t_end_ms = 0;
  Json::Value extra;  // words, confidence... (null when none)
};

// What analysers append to while a session runs; the report is built from a Snapshot().
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

// Parameters of a practice "start" message.
struct StartParams {
  std::string media;    // "webm" | "pcm"
  int sample_rate = 0;  // pcm only
};

class Session {
 public:
  using BinarySink = std::function<void(std::string_view payload)>;
  using TextSink = std::function<void(std::string_view text)>;
  // Decoded media for analysers (called on GStreamer threads; t_ms on the session clock).
  using AudioConsumer = std::function<void(int64_t t_ms, std::span<const int16_t> pcm16k)>;
  using VideoConsumer =
      std::function<void(int64_t t_ms, int width, int height, int stride, const uint8_t* bgr)>;
  // Delivers an event to the session's connections: (json, droppable).
  using Emitter = std::function<void(const std::vector<uint64_t>& connections,
                                     const Json::Value& event, bool droppable)>;

  Session(std::string id, std::string user_id, std::string persona_id, Emitter emitter);

  const std::string& id() const { return id_; }
  const std::string& user_id() const { return user_id_; }
  const std::string& persona_id() const { return persona_id_; }
  std::chrono::system_clock::time_point created_at() const { return created_at_; }

  SessionState state() const;
  // Milliseconds on the session clock: 0 when it went live (always 0 before).
  int64_t NowMs() const;
  Timeline& timeline() { return timeline_; }
  const Timeline& timeline() const { return timeline_; }

  // Sinks: later modules attach consumers; a kind with no sink is an error event to the client.
  void SetBinarySink(uint8_t kind, BinarySink sink);
  void SetLandmarkTextSink(TextSink sink);
  BinarySink binary_sink(uint8_t kind) const;
  TextSink landmark_text_sink() const;

  std::optional<StartParams> media() const;

  void AddAudioConsumer(AudioConsumer c);
  void AddVideoConsumer(VideoConsumer c);
  void DeliverAudio(int64_t t_ms, std::span<const int16_t> pcm16k) const;
  void DeliverVideo(int64_t t_ms, int width, int height, int stride, const uint8_t* bgr) const;

  // Sends `event` to every connection of this session; sets "t" when absent.
  void Emit(Json::Value event, bool droppable = false);

  // Analysers contribute to the report by merging a partial report, e.g.
  // {"metrics": {"blinks": 12}, "feedback": {"blinking": 80}} (objects merge deeply).
  void MergeReport(const Json::Value& patch);
  Json::Value report_patch() const;

  // The session document: ids, state, times (as {"$date": ...}), duration. Stored in the
  // sessions collection; store::ToPublicJson() turns it into the API's shape.
  Json::Value ToJson() const;

 private:
  friend class SessionRegistry;

  const std::string id_;
  const std::string user_id_;
  const std::string persona_id_;
  const std::chrono::system_clock::time_point created_at_;
  const Emitter emitter_;
  Timeline timeline_;

  mutable std::mutex mu_;
  SessionState state_ = SessionState::kCreated;
  std::chrono::steady_clock::time_point live_steady_{};
  std::optional<std::chrono::system_clock::time_point> started_at_;
  std::optional<std::chrono::system_clock::time_point> ended_at_;
  std::string end_reason_;
  std::set<uint64_t> connections_;
  std::optional<std::chrono::steady_clock::time_point> disconnected_since_;
  std::optional<StartParams> media_;
  std::map<uint8_t, BinarySink> binary_sinks_;
  TextSink landmark_sink_;
  Json::Value report_patch_{Json::objectValue};
  std::vector<AudioConsumer> audio_consumers_;
  std::vector<VideoConsumer> video_consumers_;
};

struct SessionConfig {
  int disconnect_grace_s = 30;      // live session with no connection for this long: ended
  int unused_session_ttl_s = 3600;  // created but never connected for this long: ended
  int max_sessions = 10'000;        // sessions held in memory (all states)
  int end_hook_timeout_s = 20;      // shutdown waits this long for end hooks
  std::string Validate() const;
};

class SessionRegistry {
 public:
  using EndHook = std::function<void(Session&)>;
  // Runs when a session ends, after the hooks: closes its connections.
  using EndedCallback = std::function<void(Session&, const std::vector<uint64_t>& connections)>;
  // Runs when a session gets a start/stop message (media modules hook in here). A start hook
  // that returns false (with `error`) refuses the start.
  using StartHook = std::function<bool(Session&, const StartParams&, std::string* error)>;
  using StopHook = std::function<void(Session&)>;

  SessionRegistry(const SessionConfig& config, core::WorkerPool& pool, core::Logger& log,
                  core::Metrics& metrics);
  ~SessionRegistry();  // stops the expiry thread; does not end sessions (see EndAll)

  // Runs right after a session is created (attach sinks and consumers), on the caller's thread.
  void AddCreateHook(std::function<void(const std::shared_ptr<Session>&)> hook);
  void AddEndHook(EndHook hook);
  void AddStartHook(StartHook hook);
  void AddStopHook(StopHook hook);
  void SetEndedCallback(EndedCallback cb);
  // Runs on the service thread when a session goes live: must not block.
  void SetLiveCallback(std::function<void(Session&)> cb);
  void SetEmitter(Session::Emitter emitter);

  // nullptr when the registry is full.
  std::shared_ptr<Session> Create(const std::string& user_id, const std::string& persona_id);
  std::shared_ptr<Session> Find(const std::string& id) const;
  // The user's sessions, newest first.
  std::vector<std::shared_ptr<Session>> ListForUser(const std::string& user_id) const;
  size_t CountInState(SessionState s) const;

  // Attaches a connection: created -> live. False when the session has ended meanwhile.
  bool Attach(Session& s, uint64_t connection);
  void Detach(Session& s, uint64_t connection);
  // start/stop control messages; false with `error` when refused.
  bool Start(Session& s, const StartParams& params, std::string* error);
  bool Stop(Session& s, std::string* error);

  // Ends the session on this thread (hooks run here). False when it had already ended.
  bool End(Session& s, const std::string& reason);
  // Removes an ended session from memory, remembering (bounded) that it ended.
  void Remove(const std::string& id);
  // True when `id` ended in this process and was removed from memory; `user_id` is its owner.
  bool RecentlyEnded(const std::string& id, std::string* user_id) const;
  // Ends every session that has not ended, hooks in parallel on the pool; waits up to
  // end_hook_timeout_s. Returns how many were ended.
  size_t EndAll(const std::string& reason);

 private:
  void ExpiryLoop();
  void CheckExpiry();

  SessionConfig config_;
  core::WorkerPool& pool_;
  core::Logger& log_;
  core::Metrics& metrics_;

  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Session>> sessions_;
  static constexpr size_t kMaxTombstones = 100'000;
  std::unordered_map<std::string, std::string> tombstones_;  // id -> user, for 410 answers
  std::deque<std::string> tombstone_order_;
  std::vector<std::function<void(const std::shared_ptr<Session>&)>> create_hooks_;
  std::vector<EndHook> end_hooks_;
  std::vector<StartHook> start_hooks_;
  std::vector<StopHook> stop_hooks_;
  EndedCallback ended_cb_;
  std::function<void(Session&)> live_cb_;
  Session::Emitter emitter_;

  std::mutex expiry_mu_;
  std::condition_variable expiry_cv_;
  bool stopping_ = false;
  std::thread expiry_thread_;
};

}  // namespace parley::app
