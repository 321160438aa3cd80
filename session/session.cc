#include <uuid/uuid.h>

#include <algorithm>
#include <cmath>

#include "session/internal.h"

namespace parley::session {

std::string_view StateName(State s) {
  switch (s) {
    case State::kCreated:
      return "created";
    case State::kLive:
      return "live";
    case State::kEnded:
      return "ended";
  }
  return "created";
}

std::string_view MediaName(StartParams::Media m) {
  return m == StartParams::Media::kPcm ? "pcm" : "webm";
}

// ---- Timeline -------------------------------------------------------------------------------

void Timeline::AddSample(int64_t t_ms, const Json::Value& values) {
  const int64_t second = t_ms >= 0 ? t_ms / 1000 : 0;
  const std::lock_guard lock(mu_);
  auto it = samples_.find(second);
  if (it == samples_.end()) {
    if (samples_.size() >= kMaxSeconds) {
      ++dropped_;
      return;
    }
    it = samples_.emplace(second, Json::Value(Json::objectValue)).first;
  }
  for (const auto& key : values.getMemberNames()) it->second[key] = values[key];
}

void Timeline::AddEvent(int64_t t_ms, std::string type, Json::Value data) {
  Json::Value e = data.isObject() ? std::move(data) : Json::Value(Json::objectValue);
  e["t"] = Json::Int64(t_ms);
  e["type"] = std::move(type);
  const std::lock_guard lock(mu_);
  if (events_.size() >= kMaxEvents) {
    ++dropped_;
    return;
  }
  events_.push_back(std::move(e));
}

void Timeline::AddTurn(TranscriptTurn turn) {
  Json::Value t = turn.extra.isObject() ? turn.extra : Json::Value(Json::objectValue);
  t["role"] = turn.role;
  t["text"] = turn.text;
  t["t_start"] = Json::Int64(turn.t_start_ms);
  t["t_end"] = Json::Int64(turn.t_end_ms);
  const std::lock_guard lock(mu_);
  if (turns_.size() >= kMaxEvents) {
    ++dropped_;
    return;
  }
  turns_.push_back(std::move(t));
}

Timeline::Snapshot Timeline::Take() const {
  Snapshot s{Json::Value(Json::arrayValue), Json::Value(Json::arrayValue),
             Json::Value(Json::arrayValue), 0};
  const std::lock_guard lock(mu_);
  for (const auto& [second, values] : samples_) {
    Json::Value row = values;
    row["t"] = Json::Int64(second);
    s.samples.append(std::move(row));
  }
  // Analysers finish out of order (two utterances decoded in parallel, calibration replays):
  // the report lists events and turns in time order.
  std::vector<const Json::Value*> events, turns;
  for (const auto& e : events_) events.push_back(&e);
  for (const auto& t : turns_) turns.push_back(&t);
  const auto by = [](const char* key) {
    return [key](const Json::Value* a, const Json::Value* b) {
      return (*a)[key].asInt64() < (*b)[key].asInt64();
    };
  };
  std::stable_sort(events.begin(), events.end(), by("t"));
  std::stable_sort(turns.begin(), turns.end(), by("t_start"));
  for (const auto* e : events) s.events.append(*e);
  for (const auto* t : turns) s.transcript.append(*t);
  s.dropped = dropped_;
  return s;
}

// ---- Session --------------------------------------------------------------------------------

Session::Session(std::string id, std::string user_id, std::string persona_id, Outbox* outbox)
    : id_(std::move(id)),
      user_id_(std::move(user_id)),
      persona_id_(std::move(persona_id)),
      created_at_(std::chrono::system_clock::now()),
      outbox_(outbox) {}

Session::~Session() = default;

State Session::state() const {
  const std::lock_guard lock(mu_);
  return state_;
}

bool Session::recording() const {
  const std::lock_guard lock(mu_);
  return recording_;
}

std::optional<StartParams::Media> Session::media() const {
  const std::lock_guard lock(mu_);
  if (!media_) return std::nullopt;
  return media_->media;
}

int64_t Session::NowMs() const {
  const std::lock_guard lock(mu_);
  if (state_ == State::kCreated) return 0;
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               live_steady_)
      .count();
}

SessionInfo Session::Info() const {
  SessionInfo info;
  info.id = id_;
  info.user_id = user_id_;
  info.persona_id = persona_id_;
  info.created_at = created_at_;
  const std::lock_guard lock(mu_);
  info.state = state_;
  info.started_at = started_at_;
  info.ended_at = ended_at_;
  info.end_reason = end_reason_;
  info.connections = connections_.size();
  if (media_) info.media = media_->media;
  info.recording = recording_;
  if (recorded_duration_s_) {
    info.duration_s = *recorded_duration_s_;
  } else if (started_at_) {
    const auto end = ended_at_.value_or(std::chrono::system_clock::now());
    info.duration_s =
        std::round(std::chrono::duration<double>(end - *started_at_).count() * 1000) / 1000;
  }
  return info;
}

void Session::Emit(Event event, bool droppable, std::optional<int64_t> t_ms) {
  const bool finished_turn =
      std::holds_alternative<TranscriptFinal>(event) || std::holds_alternative<ReplyEvent>(event);
  std::vector<uint64_t> targets;
  {
    const std::lock_guard lock(mu_);
    if (finished_turn) turn_since_checkpoint_ = true;
    targets.assign(connections_.begin(), connections_.end());
  }
  if (outbox_ == nullptr) return;
  if (targets.empty()) return;
  outbox_->Deliver(targets, Envelope{t_ms ? *t_ms : NowMs(), std::move(event), droppable});
}

void Session::EmitAudio(std::string packet) {
  if (outbox_ == nullptr) return;
  std::vector<uint64_t> targets;
  {
    const std::lock_guard lock(mu_);
    targets.assign(connections_.begin(), connections_.end());
  }
  if (!targets.empty()) outbox_->DeliverAudio(targets, std::move(packet));
}

void DeepMerge(Json::Value& into, const Json::Value& patch) {
  for (const auto& key : patch.getMemberNames()) {
    const Json::Value& v = patch[key];
    // A null is "not measured here": it never erases what another stage measured (a stage's
    // `patch["metrics"]` lookup leaves a null behind when it has nothing to say).
    if (v.isNull() && into.isMember(key)) continue;
    if (v.isObject() && into[key].isObject()) {
      DeepMerge(into[key], v);
    } else {
      into[key] = v;
    }
  }
}

void Session::MergeReport(const Json::Value& patch) {
  if (!patch.isObject()) return;
  const std::lock_guard lock(mu_);
  DeepMerge(report_patch_, patch);
}

Json::Value Session::report_patch() const {
  const std::lock_guard lock(mu_);
  return report_patch_;
}

bool Session::TakeCheckpointDue(std::chrono::steady_clock::time_point now,
                                std::chrono::steady_clock::duration interval) {
  const std::lock_guard lock(mu_);
  if (state_ != State::kLive || recording_) return false;
  if (last_checkpoint_ == std::chrono::steady_clock::time_point{}) last_checkpoint_ = live_steady_;
  if (!turn_since_checkpoint_ && now - last_checkpoint_ < interval) return false;
  turn_since_checkpoint_ = false;
  last_checkpoint_ = now;
  return true;
}

void Session::SetRecordedDuration(double seconds) {
  const std::lock_guard lock(mu_);
  recorded_duration_s_ = std::round(seconds * 1000) / 1000;
}

bool Session::GoLiveForRecording() {
  const std::lock_guard lock(mu_);
  if (state_ != State::kCreated) return false;
  state_ = State::kLive;
  recording_ = true;
  live_steady_ = std::chrono::steady_clock::now();
  started_at_ = std::chrono::system_clock::now();
  return true;
}

bool Session::Attach(uint64_t connection, bool* went_live) {
  const std::lock_guard lock(mu_);
  *went_live = false;
  if (state_ == State::kEnded) return false;
  if (state_ == State::kCreated) {
    state_ = State::kLive;
    live_steady_ = std::chrono::steady_clock::now();
    started_at_ = std::chrono::system_clock::now();
    *went_live = true;
  }
  connections_.insert(connection);
  disconnected_since_.reset();
  return true;
}

void Session::Detach(uint64_t connection) {
  const std::lock_guard lock(mu_);
  connections_.erase(connection);
  if (connections_.empty() && state_ == State::kLive)
    disconnected_since_ = std::chrono::steady_clock::now();
}

bool Session::BeginMedia(const StartParams& params, std::string* error) {
  const std::lock_guard lock(mu_);
  if (state_ != State::kLive) {
    *error = "the session is not live";
    return false;
  }
  if (media_) {
    *error =
        "media already started (" + std::string(MediaName(media_->media)) + "); send stop first";
    return false;
  }
  media_ = params;
  return true;
}

bool Session::EndMediaMark(std::string* error) {
  const std::lock_guard lock(mu_);
  if (!media_) {
    *error = "media was not started";
    return false;
  }
  media_.reset();
  return true;
}

void Session::AbandonMedia() {
  const std::lock_guard lock(mu_);
  media_.reset();
}

bool Session::MarkEnded(const std::string& reason, std::vector<uint64_t>* connections) {
  const std::lock_guard lock(mu_);
  if (state_ == State::kEnded) return false;
  state_ = State::kEnded;
  ended_at_ = std::chrono::system_clock::now();
  end_reason_ = reason;
  connections->assign(connections_.begin(), connections_.end());
  media_.reset();
  return true;
}

void Session::MarkEndFinished() {
  {
    const std::lock_guard lock(mu_);
    end_finished_ = true;
  }
  end_finished_cv_.notify_all();
}

bool Session::end_finished() const {
  const std::lock_guard lock(mu_);
  return end_finished_;
}

bool Session::WaitEndFinished(std::chrono::steady_clock::duration timeout) const {
  std::unique_lock lock(mu_);
  return end_finished_cv_.wait_for(lock, timeout, [this] { return end_finished_; });
}

bool Session::TakeExpiredGrace(std::chrono::steady_clock::time_point now,
                               std::chrono::steady_clock::duration grace) {
  const std::lock_guard lock(mu_);
  if (state_ != State::kLive || !disconnected_since_ || now - *disconnected_since_ < grace)
    return false;
  disconnected_since_.reset();  // do not schedule twice
  return true;
}

}  // namespace parley::session
