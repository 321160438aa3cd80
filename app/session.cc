#include "app/session.h"

#include <uuid/uuid.h>

#include <algorithm>
#include <cmath>
#include <future>

#include "store/store.h"

namespace parley::app {
namespace {

std::string NewSessionId() {
  uuid_t raw;
  uuid_generate_random(raw);
  char text[37];
  uuid_unparse_lower(raw, text);
  return text;
}

}  // namespace

std::string_view StateName(SessionState s) {
  switch (s) {
    case SessionState::kCreated:
      return "created";
    case SessionState::kLive:
      return "live";
    case SessionState::kEnded:
      return "ended";
  }
  return "created";
}

std::string_view FrameKindName(uint8_t kind) {
  switch (static_cast<FrameKind>(kind)) {
    case FrameKind::kWebm:
      return "webm";
    case FrameKind::kPcm:
      return "pcm";
    case FrameKind::kLandmarks:
      return "landmarks";
    case FrameKind::kOpus:
      return "opus";
    case FrameKind::kPcmOut:
      return "pcm_out";
  }
  return "unknown";
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

Session::Session(std::string id, std::string user_id, std::string persona_id, Emitter emitter)
    : id_(std::move(id)),
      user_id_(std::move(user_id)),
      persona_id_(std::move(persona_id)),
      created_at_(std::chrono::system_clock::now()),
      emitter_(std::move(emitter)) {}

SessionState Session::state() const {
  const std::lock_guard lock(mu_);
  return state_;
}

int64_t Session::NowMs() const {
  const std::lock_guard lock(mu_);
  if (state_ == SessionState::kCreated) return 0;
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               live_steady_)
      .count();
}

void Session::SetBinarySink(uint8_t kind, BinarySink sink) {
  const std::lock_guard lock(mu_);
  if (sink) {
    binary_sinks_[kind] = std::move(sink);
  } else {
    binary_sinks_.erase(kind);
  }
}

void Session::SetLandmarkTextSink(TextSink sink) {
  const std::lock_guard lock(mu_);
  landmark_sink_ = std::move(sink);
}

Session::BinarySink Session::binary_sink(uint8_t kind) const {
  const std::lock_guard lock(mu_);
  const auto it = binary_sinks_.find(kind);
  return it == binary_sinks_.end() ? BinarySink{} : it->second;
}

Session::TextSink Session::landmark_text_sink() const {
  const std::lock_guard lock(mu_);
  return landmark_sink_;
}

std::optional<StartParams> Session::media() const {
  const std::lock_guard lock(mu_);
  return media_;
}

void Session::AddAudioConsumer(AudioConsumer c) {
  const std::lock_guard lock(mu_);
  audio_consumers_.push_back(std::move(c));
}

void Session::AddVideoConsumer(VideoConsumer c) {
  const std::lock_guard lock(mu_);
  video_consumers_.push_back(std::move(c));
}

void Session::DeliverAudio(int64_t t_ms, std::span<const int16_t> pcm16k) const {
  std::vector<AudioConsumer> consumers;
  {
    const std::lock_guard lock(mu_);
    consumers = audio_consumers_;
  }
  for (const auto& c : consumers) c(t_ms, pcm16k);
}

void Session::DeliverVideo(int64_t t_ms, int width, int height, int stride,
                           const uint8_t* bgr) const {
  std::vector<VideoConsumer> consumers;
  {
    const std::lock_guard lock(mu_);
    consumers = video_consumers_;
  }
  for (const auto& c : consumers) c(t_ms, width, height, stride, bgr);
}

void Session::Emit(Json::Value event, bool droppable) {
  if (!event.isMember("t")) event["t"] = Json::Int64(NowMs());
  std::vector<uint64_t> targets;
  {
    const std::lock_guard lock(mu_);
    targets.assign(connections_.begin(), connections_.end());
  }
  if (!targets.empty() && emitter_) emitter_(targets, event, droppable);
}

namespace {

void DeepMerge(Json::Value& into, const Json::Value& patch) {
  for (const auto& key : patch.getMemberNames()) {
    const Json::Value& v = patch[key];
    if (v.isObject() && into[key].isObject()) {
      DeepMerge(into[key], v);
    } else {
      into[key] = v;
    }
  }
}

Json::Value Date(std::chrono::system_clock::time_point t) {
  return store::DateValue(core::UnixMillis(t));
}

}  // namespace

void Session::MergeReport(const Json::Value& patch) {
  if (!patch.isObject()) return;
  const std::lock_guard lock(mu_);
  DeepMerge(report_patch_, patch);
}

Json::Value Session::report_patch() const {
  const std::lock_guard lock(mu_);
  return report_patch_;
}

Json::Value Session::ToJson() const {
  Json::Value v(Json::objectValue);
  v["session_id"] = id_;
  v["user_id"] = user_id_;
  v["persona_id"] = persona_id_;
  v["created_at"] = Date(created_at_);
  const std::lock_guard lock(mu_);
  v["state"] = std::string(StateName(state_));
  v["started_at"] = started_at_ ? Date(*started_at_) : Json::Value();
  v["ended_at"] = ended_at_ ? Date(*ended_at_) : Json::Value();
  v["end_reason"] = end_reason_.empty() ? Json::Value() : Json::Value(end_reason_);
  double duration = 0;
  if (started_at_) {
    const auto end = ended_at_.value_or(std::chrono::system_clock::now());
    duration = std::chrono::duration<double>(end - *started_at_).count();
  }
  v["duration_s"] = static_cast<double>(std::round(duration * 1000) / 1000);
  v["connections"] = static_cast<Json::UInt>(connections_.size());
  v["media"] = media_ ? Json::Value(media_->media) : Json::Value();
  v["urls"]["practice"] = "/ws/practice?session=" + id_;
  v["urls"]["landmarks"] = "/ws/landmarks?session=" + id_;
  v["urls"]["report"] = "/api/sessions/" + id_ + "/report";
  return v;
}

// ---- SessionRegistry --------------------------------------------------------------------------

std::string SessionConfig::Validate() const {
  if (disconnect_grace_s < 0 || disconnect_grace_s > 86400)
    return "disconnect grace must be 0..86400 s";
  if (unused_session_ttl_s < 1 || unused_session_ttl_s > 7 * 86400)
    return "unused session TTL must be 1..604800 s";
  if (max_sessions < 1) return "max sessions must be at least 1";
  if (end_hook_timeout_s < 1 || end_hook_timeout_s > 600)
    return "end hook timeout must be 1..600 s";
  return {};
}

SessionRegistry::SessionRegistry(const SessionConfig& config, core::WorkerPool& pool,
                                 core::Logger& log, core::Metrics& metrics)
    : config_(config), pool_(pool), log_(log), metrics_(metrics) {
  for (SessionState s : {SessionState::kCreated, SessionState::kLive, SessionState::kEnded}) {
    metrics_.AddGaugeCallback("parley_sessions", "Sessions in memory by state",
                              {{"state", std::string(StateName(s))}},
                              [this, s] { return static_cast<double>(CountInState(s)); });
  }
  expiry_thread_ = std::thread([this] { ExpiryLoop(); });
}

SessionRegistry::~SessionRegistry() {
  {
    const std::lock_guard lock(expiry_mu_);
    stopping_ = true;
  }
  expiry_cv_.notify_all();
  if (expiry_thread_.joinable()) expiry_thread_.join();
}

void SessionRegistry::AddEndHook(EndHook hook) {
  const std::lock_guard lock(mu_);
  end_hooks_.push_back(std::move(hook));
}
void SessionRegistry::AddStartHook(StartHook hook) {
  const std::lock_guard lock(mu_);
  start_hooks_.push_back(std::move(hook));
}
void SessionRegistry::AddStopHook(StopHook hook) {
  const std::lock_guard lock(mu_);
  stop_hooks_.push_back(std::move(hook));
}
void SessionRegistry::SetEndedCallback(EndedCallback cb) {
  const std::lock_guard lock(mu_);
  ended_cb_ = std::move(cb);
}
void SessionRegistry::SetLiveCallback(std::function<void(Session&)> cb) {
  const std::lock_guard lock(mu_);
  live_cb_ = std::move(cb);
}
void SessionRegistry::SetEmitter(Session::Emitter emitter) {
  const std::lock_guard lock(mu_);
  emitter_ = std::move(emitter);
}

void SessionRegistry::AddCreateHook(std::function<void(const std::shared_ptr<Session>&)> hook) {
  const std::lock_guard lock(mu_);
  create_hooks_.push_back(std::move(hook));
}

std::shared_ptr<Session> SessionRegistry::Create(const std::string& user_id,
                                                 const std::string& persona_id) {
  std::shared_ptr<Session> s;
  std::vector<std::function<void(const std::shared_ptr<Session>&)>> hooks;
  {
    const std::lock_guard lock(mu_);
    if (sessions_.size() >= static_cast<size_t>(config_.max_sessions)) return nullptr;
    s = std::make_shared<Session>(NewSessionId(), user_id, persona_id, emitter_);
    sessions_[s->id()] = s;
    hooks = create_hooks_;
  }
  for (const auto& hook : hooks) hook(s);
  metrics_.GetCounter("parley_sessions_created_total", "Sessions created").Add();
  log_.Info("session created",
            {{"session_id", s->id()}, {"user_id", user_id}, {"persona_id", persona_id}});
  return s;
}

std::shared_ptr<Session> SessionRegistry::Find(const std::string& id) const {
  const std::lock_guard lock(mu_);
  const auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<Session>> SessionRegistry::ListForUser(
    const std::string& user_id) const {
  std::vector<std::shared_ptr<Session>> out;
  {
    const std::lock_guard lock(mu_);
    for (const auto& [id, s] : sessions_) {
      if (s->user_id() == user_id) out.push_back(s);
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    if (a->created_at() != b->created_at()) return a->created_at() > b->created_at();
    return a->id() > b->id();
  });
  return out;
}

size_t SessionRegistry::CountInState(SessionState state) const {
  const std::lock_guard lock(mu_);
  return static_cast<size_t>(
      std::count_if(sessions_.begin(), sessions_.end(),
                    [state](const auto& kv) { return kv.second->state() == state; }));
}

bool SessionRegistry::Attach(Session& s, uint64_t connection) {
  bool went_live = false;
  {
    const std::lock_guard lock(s.mu_);
    if (s.state_ == SessionState::kEnded) return false;
    if (s.state_ == SessionState::kCreated) {
      s.state_ = SessionState::kLive;
      s.live_steady_ = std::chrono::steady_clock::now();
      s.started_at_ = std::chrono::system_clock::now();
      went_live = true;
    }
    s.connections_.insert(connection);
    s.disconnected_since_.reset();
  }
  if (went_live) {
    log_.Info("session live", {{"session_id", s.id()}});
    std::function<void(Session&)> cb;
    {
      const std::lock_guard lock(mu_);
      cb = live_cb_;
    }
    if (cb) cb(s);
  }
  return true;
}

void SessionRegistry::Detach(Session& s, uint64_t connection) {
  const std::lock_guard lock(s.mu_);
  s.connections_.erase(connection);
  if (s.connections_.empty() && s.state_ == SessionState::kLive)
    s.disconnected_since_ = std::chrono::steady_clock::now();
}

bool SessionRegistry::Start(Session& s, const StartParams& params, std::string* error) {
  {
    const std::lock_guard lock(s.mu_);
    if (s.state_ != SessionState::kLive) {
      *error = "the session is not live";
      return false;
    }
    if (s.media_) {
      *error = "media already started (" + s.media_->media + "); send stop first";
      return false;
    }
    s.media_ = params;
  }
  std::vector<StartHook> hooks;
  {
    const std::lock_guard lock(mu_);
    hooks = start_hooks_;
  }
  for (auto& h : hooks) {
    if (!h(s, params, error)) {
      const std::lock_guard lock(s.mu_);
      s.media_.reset();
      return false;
    }
  }
  s.timeline().AddEvent(s.NowMs(), "media_start", [&] {
    Json::Value d(Json::objectValue);
    d["media"] = params.media;
    if (params.sample_rate > 0) d["sample_rate"] = params.sample_rate;
    return d;
  }());
  return true;
}

bool SessionRegistry::Stop(Session& s, std::string* error) {
  {
    const std::lock_guard lock(s.mu_);
    if (!s.media_) {
      *error = "media was not started";
      return false;
    }
    s.media_.reset();
  }
  std::vector<StopHook> hooks;
  {
    const std::lock_guard lock(mu_);
    hooks = stop_hooks_;
  }
  for (auto& h : hooks) h(s);
  s.timeline().AddEvent(s.NowMs(), "media_stop");
  return true;
}

bool SessionRegistry::End(Session& s, const std::string& reason) {
  std::vector<uint64_t> connections;
  {
    const std::lock_guard lock(s.mu_);
    if (s.state_ == SessionState::kEnded) return false;
    s.state_ = SessionState::kEnded;
    s.ended_at_ = std::chrono::system_clock::now();
    s.end_reason_ = reason;
    connections.assign(s.connections_.begin(), s.connections_.end());
    s.media_.reset();
  }
  std::vector<EndHook> end_hooks;
  EndedCallback ended;
  {
    const std::lock_guard lock(mu_);
    end_hooks = end_hooks_;
    ended = ended_cb_;
  }
  // Stop hooks are not run here: end hooks tear media down themselves, synchronously (this
  // is a worker thread), so their final figures are in before the report is built.
  for (auto& h : end_hooks) {
    try {
      h(s);
    } catch (const std::exception& e) {
      log_.Error("session end hook failed", {{"session_id", s.id()}, {"error", e.what()}});
    }
  }
  {
    const std::lock_guard lock(s.mu_);
    s.binary_sinks_.clear();
    s.landmark_sink_ = nullptr;
  }
  metrics_
      .GetCounter("parley_sessions_ended_total", "Sessions ended by reason", {{"reason", reason}})
      .Add();
  log_.Info("session ended", {{"session_id", s.id()}, {"reason", reason}});
  if (ended) ended(s, connections);
  return true;
}

void SessionRegistry::Remove(const std::string& id) {
  const std::lock_guard lock(mu_);
  const auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  if (it->second->state() == SessionState::kEnded && !tombstones_.contains(id)) {
    tombstones_[id] = it->second->user_id();
    tombstone_order_.push_back(id);
    if (tombstone_order_.size() > kMaxTombstones) {
      tombstones_.erase(tombstone_order_.front());
      tombstone_order_.pop_front();
    }
  }
  sessions_.erase(it);
}

bool SessionRegistry::RecentlyEnded(const std::string& id, std::string* user_id) const {
  const std::lock_guard lock(mu_);
  const auto it = tombstones_.find(id);
  if (it == tombstones_.end()) return false;
  *user_id = it->second;
  return true;
}

size_t SessionRegistry::EndAll(const std::string& reason) {
  std::vector<std::shared_ptr<Session>> open;
  {
    const std::lock_guard lock(mu_);
    for (const auto& [id, s] : sessions_) {
      if (s->state() != SessionState::kEnded) open.push_back(s);
    }
  }
  std::vector<std::future<void>> done;
  for (auto& s : open) {
    auto task =
        std::make_shared<std::packaged_task<void()>>([this, s, reason] { End(*s, reason); });
    done.push_back(task->get_future());
    if (!pool_.TrySubmit([task] { (*task)(); })) (*task)();  // pool full: end it here
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(config_.end_hook_timeout_s);
  size_t finished = 0;
  for (auto& f : done) {
    if (f.wait_until(deadline) == std::future_status::ready) ++finished;
  }
  if (finished < done.size()) {
    log_.Error("shutdown: some sessions did not finish ending in time",
               {{"pending", static_cast<Json::UInt64>(done.size() - finished)}});
  }
  return open.size();
}

void SessionRegistry::ExpiryLoop() {
  std::unique_lock lock(expiry_mu_);
  while (!stopping_) {
    expiry_cv_.wait_for(lock, std::chrono::milliseconds(250));
    if (stopping_) break;
    lock.unlock();
    CheckExpiry();
    lock.lock();
  }
}

void SessionRegistry::CheckExpiry() {
  const auto now = std::chrono::steady_clock::now();
  const auto wall_now = std::chrono::system_clock::now();
  std::vector<std::pair<std::shared_ptr<Session>, std::string>> expired;
  {
    const std::lock_guard lock(mu_);
    for (const auto& [id, s] : sessions_) {
      const std::lock_guard slock(s->mu_);
      if (s->state_ == SessionState::kLive && s->disconnected_since_ &&
          now - *s->disconnected_since_ >= std::chrono::seconds(config_.disconnect_grace_s)) {
        s->disconnected_since_.reset();  // do not schedule twice
        expired.emplace_back(s, "disconnect_grace");
      } else if (s->state_ == SessionState::kCreated &&
                 wall_now - s->created_at_ >= std::chrono::seconds(config_.unused_session_ttl_s)) {
        expired.emplace_back(s, "never_connected");
      }
    }
  }
  for (auto& [s, reason] : expired) {
    if (!pool_.TrySubmit([this, s = s, reason = reason] { End(*s, reason); })) {
      End(*s, reason);  // pool saturated: do it here rather than lose the end
    }
  }
}

}  // namespace parley::app
