// The edge between typed session events and the WebSocket protocol (docs/protocol.md): every
// server -> client event message is written here, and nowhere else.
#include "app/app_impl.h"

namespace parley::app {
namespace {

using namespace session;

Json::Value Optional(const std::optional<double>& v) { return v ? Json::Value(*v) : Json::Value(); }

Json::Value Date(std::chrono::system_clock::time_point t) {
  return store::DateValue(core::UnixMillis(t));
}

struct ToJson {
  Json::Value& m;
  void operator()(const ErrorEvent& e) const {
    m["type"] = "error";
    m["error"]["code"] = e.code;
    m["error"]["message"] = e.message;
    if (e.fatal) m["error"]["fatal"] = *e.fatal;
    if (e.repeated > 0) m["error"]["repeated"] = e.repeated;
  }
  void operator()(const MediaNotice& e) const {
    m["type"] = "media";
    m["event"] = e.event;
  }
  void operator()(const SpeechStarted&) const { m["type"] = "speech_start"; }
  void operator()(const SpeechEnded& e) const {
    m["type"] = "speech_end";
    if (e.too_short) m["too_short"] = true;
  }
  void operator()(const TranscriptPartial& e) const {
    m["type"] = "transcript.partial";
    m["text"] = e.text;
    m["t_start"] = Json::Int64(e.t_start_ms);
  }
  void operator()(const TranscriptFinal& e) const {
    m["type"] = "transcript.final";
    m["text"] = e.text;
    m["t_start"] = Json::Int64(e.t_start_ms);
    m["t_end"] = Json::Int64(e.t_end_ms);
    m["confidence"] = e.confidence;
    m["engine"] = e.engine;
    Json::Value words(Json::arrayValue);
    for (const auto& w : e.words) {
      Json::Value j(Json::objectValue);
      j["w"] = w.text;
      j["t_start"] = Json::Int64(w.t_start_ms);
      j["t_end"] = Json::Int64(w.t_end_ms);
      j["confidence"] = w.confidence;
      words.append(j);
    }
    m["words"] = words;
    Json::Value& p = m["prosody"];
    p["f0_mean_hz"] = Optional(e.prosody.f0_mean_hz);
    p["f0_std_semitones"] = Optional(e.prosody.f0_std_semitones);
    p["f0_range_semitones"] = Optional(e.prosody.f0_range_semitones);
    p["volume_dbfs"] = Optional(e.prosody.volume_dbfs);
    p["loudness_lufs"] = Optional(e.prosody.loudness_lufs);
  }
  void operator()(const AsrFallback& e) const {
    m["type"] = "asr_fallback";
    m["engine"] = e.engine;
    m["reason"] = e.reason;
  }
  void operator()(const VisionNotice& e) const {
    m["type"] = e.type;
    if (e.duration_ms) m["duration_ms"] = *e.duration_ms;
  }
  void operator()(const LiveScores& e) const {
    m["type"] = "scores";
    m["calibrated"] = e.calibrated;
    if (e.frame_t) m["frame_t"] = *e.frame_t;
    m["gaze_on_screen_ratio"] = e.gaze_on_screen_ratio;
    m["blink_rate_per_min"] = e.blink_rate_per_min;
    m["smile_ratio"] = e.smile_ratio;
    m["face_visible_ratio"] = e.face_visible_ratio;
    m["head_pose_deg"]["yaw"] = e.yaw_deg;
    m["head_pose_deg"]["pitch"] = e.pitch_deg;
    m["head_pose_deg"]["roll"] = e.roll_deg;
    m["scores"]["gaze"] = e.gaze;
    m["scores"]["blinking"] = e.blinking;
    m["scores"]["expression"] = e.expression;
    m["scores"]["posture"] = e.posture;
  }
  void operator()(const ReplyDelta& e) const {
    m["type"] = "reply.delta";
    m["utterance"] = e.utterance;
    m["text"] = e.text;
  }
  void operator()(const ReplyEvent& e) const {
    m["type"] = "reply";
    m["utterance"] = e.utterance;
    m["text"] = e.text;
    m["engine"] = e.engine;
    m["intimacy"] = e.intimacy;
    m["style"] = e.style;
    if (e.safety) m["safety"] = true;
    Json::Value& t = m["latency_ms"];
    const auto put = [&](const char* k, const std::optional<int64_t>& v) {
      t[k] = v ? Json::Value(Json::Int64(*v)) : Json::Value();
    };
    put("transcript", e.timing.transcript_ms);
    put("first_text", e.timing.first_text_ms);
    put("first_audio", e.timing.first_audio_ms);
  }
  void operator()(const PlaybackNotice& e) const {
    switch (e.kind) {
      case PlaybackNotice::Kind::kStart:
        m["type"] = "playback.start";
        break;
      case PlaybackNotice::Kind::kEnd:
        m["type"] = "playback.end";
        break;
      case PlaybackNotice::Kind::kPaused:
        m["type"] = "playback.paused";
        break;
      case PlaybackNotice::Kind::kResumed:
        m["type"] = "playback.resumed";
        break;
      case PlaybackNotice::Kind::kCancelled:
        m["type"] = "playback.cancelled";
        m["reason"] = e.reason;
        break;
    }
    m["utterance"] = e.utterance;
    if (e.kind != PlaybackNotice::Kind::kStart) m["played_ms"] = Json::Int64(e.played_ms);
    if (e.reply_latency_ms) m["reply_latency_ms"] = Json::Int64(*e.reply_latency_ms);
  }
  void operator()(const SafetyNotice& e) const {
    m["type"] = "safety";
    m["category"] = e.category;
    m["message"] = e.message;
  }
  void operator()(const EngineFallback& e) const {
    m["type"] = "engine_fallback";
    m["stage"] = e.stage;
    m["engine"] = e.engine;
    m["reason"] = e.reason;
  }
};

}  // namespace

Json::Value EventJson(const Envelope& e) {
  Json::Value m(Json::objectValue);
  std::visit(ToJson{m}, e.event);
  m["t"] = Json::Int64(e.t_ms);
  return m;
}

Json::Value SessionDocument(const SessionInfo& info) {
  Json::Value v(Json::objectValue);
  v["session_id"] = info.id;
  v["user_id"] = info.user_id;
  v["persona_id"] = info.persona_id;
  v["created_at"] = Date(info.created_at);
  v["state"] = std::string(StateName(info.state));
  v["started_at"] = info.started_at ? Date(*info.started_at) : Json::Value();
  v["ended_at"] = info.ended_at ? Date(*info.ended_at) : Json::Value();
  v["end_reason"] = info.end_reason.empty() ? Json::Value() : Json::Value(info.end_reason);
  v["duration_s"] = info.duration_s;
  v["source"] = info.recording ? "upload" : "live";
  v["connections"] = static_cast<Json::UInt>(info.connections);
  v["media"] = info.media ? Json::Value(std::string(MediaName(*info.media))) : Json::Value();
  v["urls"]["practice"] = "/ws/practice?session=" + info.id;
  v["urls"]["landmarks"] = "/ws/landmarks?session=" + info.id;
  v["urls"]["report"] = "/api/sessions/" + info.id + "/report";
  return v;
}

void App::Impl::Deliver(const std::vector<uint64_t>& connections, const Envelope& event) {
  if (!server) return;
  const std::string text = core::ToJson(EventJson(event));
  for (const auto id : connections)
    server->Send(id, signaling::OutMessage{false, text, event.droppable});
}

void App::Impl::DeliverAudio(const std::vector<uint64_t>& connections, std::string packet) {
  if (!server) return;
  for (size_t i = 0; i < connections.size(); ++i) {
    // The last connection takes the packet itself; the others get copies.
    server->Send(connections[i],
                 signaling::OutMessage{
                     true, i + 1 == connections.size() ? std::move(packet) : packet, false});
  }
}

}  // namespace parley::app
