#include <uuid/uuid.h>

#include <algorithm>
#include <future>
#include <thread>

#include "session/internal.h"

namespace parley::session {
namespace {

std::string NewSessionId() {
  uuid_t raw;
  uuid_generate_random(raw);
  char text[37];
  uuid_unparse_lower(raw, text);
  return text;
}

}  // namespace

std::string SessionConfig::Validate() const {
  if (disconnect_grace_s < 0 || disconnect_grace_s > 86400)
    return "disconnect grace must be 0..86400 s";
  if (unused_session_ttl_s < 1 || unused_session_ttl_s > 7 * 86400)
    return "unused session TTL must be 1..604800 s";
  if (max_sessions < 1) return "max sessions must be at least 1";
  if (capacity < 0 || capacity > 100'000) return "--session-capacity must be 0..100000 (0: derived)";
  if (capacity_hold_s < 1 || capacity_hold_s > 3600) return "--capacity-hold must be 1..3600 s";
  if (end_hook_timeout_s < 1 || end_hook_timeout_s > 600)
    return "end hook timeout must be 1..600 s";
  if (end_workers < 1 || end_workers > 256) return "--end-workers must be 1..256";
  if (checkpoint_interval_s < 0 || checkpoint_interval_s > 3600)
    return "--checkpoint-interval must be 0..3600 s";
  return {};
}

int SessionConfig::EffectiveCapacity() const {
  if (capacity > 0) return capacity;
  return kSessionsPerCore * static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
}

SessionRegistry::SessionRegistry(const SessionConfig& config, core::Logger& log,
                                 core::Metrics& metrics, Services* services, Outbox* outbox)
    : config_(config),
      capacity_(config.EffectiveCapacity()),
      log_(log),
      metrics_(metrics),
      services_(services),
      outbox_(outbox),
      enders_(core::WorkerPoolConfig{"session_end", config.end_workers, 100'000}, metrics) {
  for (State s : {State::kCreated, State::kLive, State::kEnded}) {
    metrics_.AddGaugeCallback("parley_sessions", "Sessions in memory by state",
                              {{"state", std::string(StateName(s))}},
                              [this, s] { return static_cast<double>(CountInState(s)); });
  }
  metrics_.AddGaugeCallback("parley_sessions_active",
                            "Conversations taking a place (live, or created and connecting)", {},
                            [this] { return static_cast<double>(Active()); });
  metrics_.AddGaugeCallback("parley_session_capacity",
                            "Live conversations admitted at once (--session-capacity)", {},
                            [this] { return static_cast<double>(capacity_); });
  expiry_thread_ = std::thread([this] {
    core::NameThisThread("expiry");
    ExpiryLoop();
  });
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
void SessionRegistry::SetEndedCallback(EndedCallback cb) {
  const std::lock_guard lock(mu_);
  ended_cb_ = std::move(cb);
}
void SessionRegistry::SetLiveCallback(std::function<void(Session&)> cb) {
  const std::lock_guard lock(mu_);
  live_cb_ = std::move(cb);
}

void SessionRegistry::SetCheckpointCallback(std::function<void(std::shared_ptr<Session>)> cb) {
  const std::lock_guard lock(mu_);
  checkpoint_cb_ = std::move(cb);
}

size_t SessionRegistry::ActiveLocked(const Session* except) const {
  const auto hold_since =
      std::chrono::system_clock::now() - std::chrono::seconds(config_.capacity_hold_s);
  size_t n = 0;
  for (const auto& [id, s] : sessions_) {
    if (s.get() == except) continue;
    const State st = s->state();
    if ((st == State::kLive && !s->recording()) ||
        (st == State::kCreated && s->created_at() >= hold_since))
      ++n;
  }
  return n;
}

size_t SessionRegistry::Active() const {
  const std::lock_guard lock(mu_);
  return ActiveLocked(nullptr);
}

bool SessionRegistry::HasRoomFor(const Session& s) const {
  const State st = s.state();
  if (st == State::kLive) return true;
  if (st == State::kCreated &&
      s.created_at() >= std::chrono::system_clock::now() - std::chrono::seconds(config_.capacity_hold_s))
    return true;
  const std::lock_guard lock(mu_);
  return ActiveLocked(&s) < static_cast<size_t>(capacity_);
}

std::shared_ptr<Session> SessionRegistry::Create(const std::string& user_id,
                                                 const std::string& persona_id, Refusal* why,
                                                 bool counts_toward_capacity) {
  std::shared_ptr<Session> s;
  Refusal refusal = Refusal::kNone;
  {
    const std::lock_guard lock(mu_);
    if (sessions_.size() >= static_cast<size_t>(config_.max_sessions)) {
      refusal = Refusal::kFull;
    } else if (counts_toward_capacity &&
               ActiveLocked(nullptr) >= static_cast<size_t>(capacity_)) {
      refusal = Refusal::kAtCapacity;
    } else {
      s = std::make_shared<Session>(NewSessionId(), user_id, persona_id, outbox_);
      if (services_ != nullptr) s->conversation_ = std::make_unique<Conversation>(s, *services_);
      sessions_[s->id()] = s;
    }
  }
  if (refusal != Refusal::kNone) {
    if (why != nullptr) *why = refusal;
    metrics_
        .GetCounter("parley_sessions_refused_total", "Sessions refused at creation",
                    {{"reason", refusal == Refusal::kFull ? "max_sessions" : "capacity"}})
        .Add();
    return nullptr;
  }
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

size_t SessionRegistry::CountInState(State state) const {
  const std::lock_guard lock(mu_);
  return static_cast<size_t>(
      std::count_if(sessions_.begin(), sessions_.end(),
                    [state](const auto& kv) { return kv.second->state() == state; }));
}

bool SessionRegistry::Attach(Session& s, uint64_t connection) {
  bool went_live = false;
  if (!s.Attach(connection, &went_live)) return false;
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

bool SessionRegistry::BeginRecording(Session& s) {
  if (!s.GoLiveForRecording()) return false;
  log_.Info("session live (recording)", {{"session_id", s.id()}});
  std::function<void(Session&)> cb;
  {
    const std::lock_guard lock(mu_);
    cb = live_cb_;
  }
  if (cb) cb(s);
  return true;
}

void SessionRegistry::Detach(Session& s, uint64_t connection) { s.Detach(connection); }

bool SessionRegistry::Start(Session& s, const StartParams& params, std::string* error) {
  if (!s.BeginMedia(params, error)) return false;
  if (Conversation* c = s.conversation(); c != nullptr && !c->StartMedia(params, error)) {
    s.AbandonMedia();
    return false;
  }
  Json::Value d(Json::objectValue);
  d["media"] = std::string(MediaName(params.media));
  if (params.sample_rate > 0) d["sample_rate"] = params.sample_rate;
  s.timeline().AddEvent(s.NowMs(), "media_start", d);
  return true;
}

bool SessionRegistry::Stop(Session& s, std::string* error) {
  if (!s.EndMediaMark(error)) return false;
  if (Conversation* c = s.conversation()) c->StopMedia();
  s.timeline().AddEvent(s.NowMs(), "media_stop");
  return true;
}

bool SessionRegistry::End(Session& s, const std::string& reason) {
  std::vector<uint64_t> connections;
  if (!s.MarkEnded(reason, &connections)) {
    if (!s.WaitEndFinished(std::chrono::seconds(config_.end_hook_timeout_s)))
      log_.Warn("the session's end in progress did not finish in time",
                {{"session_id", s.id()}, {"reason", reason}});
    return false;
  }
  std::vector<EndHook> end_hooks;
  EndedCallback ended;
  {
    const std::lock_guard lock(mu_);
    end_hooks = end_hooks_;
    ended = ended_cb_;
  }
  // The stages drain here, on this thread, so their last figures are in the report.
  if (Conversation* c = s.conversation()) c->End();
  for (auto& h : end_hooks) {
    try {
      h(s);
    } catch (const std::exception& e) {
      log_.Error("session end hook failed", {{"session_id", s.id()}, {"error", e.what()}});
    }
  }
  metrics_
      .GetCounter("parley_sessions_ended_total", "Sessions ended by reason", {{"reason", reason}})
      .Add();
  log_.Info("session ended", {{"session_id", s.id()}, {"reason", reason}});
  if (ended) ended(s, connections);
  s.MarkEndFinished();
  return true;
}

void SessionRegistry::EndAsync(std::shared_ptr<Session> s, const std::string& reason,
                               std::function<void()> done) {
  auto task = [this, s, reason, done] {
    End(*s, reason);
    if (done) done();
  };
  if (!enders_.TrySubmit(task)) task();  // saturated: do it here rather than lose the end
}

void SessionRegistry::Remove(const std::string& id) {
  std::shared_ptr<Session> removed;  // destroyed outside the lock
  const std::lock_guard lock(mu_);
  const auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  if (it->second->state() == State::kEnded && !tombstones_.contains(id)) {
    tombstones_[id] = it->second->user_id();
    tombstone_order_.push_back(id);
    if (tombstone_order_.size() > kMaxTombstones) {
      tombstones_.erase(tombstone_order_.front());
      tombstone_order_.pop_front();
    }
  }
  removed = std::move(it->second);
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
      if (s->state() != State::kEnded) open.push_back(s);
    }
  }
  std::vector<std::future<void>> done;
  for (auto& s : open) {
    auto task =
        std::make_shared<std::packaged_task<void()>>([this, s, reason] { End(*s, reason); });
    done.push_back(task->get_future());
    if (!enders_.TrySubmit([task] { (*task)(); })) (*task)();  // queue full: end it here
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
      if (s->TakeExpiredGrace(now, std::chrono::seconds(config_.disconnect_grace_s))) {
        expired.emplace_back(s, "disconnect_grace");
      } else if (s->state() == State::kCreated &&
                 wall_now - s->created_at() >= std::chrono::seconds(config_.unused_session_ttl_s)) {
        expired.emplace_back(s, "never_connected");
      }
    }
  }
  for (auto& [s, reason] : expired) EndAsync(s, reason);
  if (config_.checkpoint_interval_s <= 0) return;
  std::vector<std::shared_ptr<Session>> due;
  std::function<void(std::shared_ptr<Session>)> checkpoint;
  {
    const std::lock_guard lock(mu_);
    if (!checkpoint_cb_) return;
    checkpoint = checkpoint_cb_;
    for (const auto& [id, s] : sessions_)
      if (s->TakeCheckpointDue(now, std::chrono::seconds(config_.checkpoint_interval_s)))
        due.push_back(s);
  }
  for (auto& s : due) checkpoint(std::move(s));
}

}  // namespace parley::session
