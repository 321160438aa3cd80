#include "core/core.h"

namespace parley::core {

std::string WorkerPoolConfig::Validate() const {
  if (threads < 1 || threads > 256) return "worker threads must be between 1 and 256";
  if (queue_capacity < 1 || queue_capacity > 1'000'000)
    return "worker queue capacity must be between 1 and 1000000";
  return {};
}

WorkerPool::WorkerPool(const WorkerPoolConfig& config, Metrics& metrics)
    : capacity_(config.queue_capacity),
      rejected_(metrics.GetCounter("parley_worker_tasks_rejected_total",
                                   "Tasks refused because the worker queue was full",
                                   {{"pool", config.name}})),
      executed_(metrics.GetCounter("parley_worker_tasks_total", "Tasks run by the worker pool",
                                   {{"pool", config.name}})) {
  metrics.AddGaugeCallback("parley_worker_queue_depth", "Tasks waiting for a worker thread",
                           {{"pool", config.name}},
                           [this] { return static_cast<double>(QueueDepth()); });
  threads_.reserve(static_cast<size_t>(config.threads));
  for (int i = 0; i < config.threads; ++i)
    threads_.emplace_back([this, name = "p:" + config.name] {
      NameThisThread(name);
      Run();
    });
}

WorkerPool::~WorkerPool() { Shutdown(); }

bool WorkerPool::TrySubmit(std::function<void()> task) {
  {
    const std::lock_guard lock(mu_);
    if (stopping_ || queue_.size() >= capacity_) {
      rejected_.Add();
      return false;
    }
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
  return true;
}

void WorkerPool::Shutdown() {
  {
    const std::lock_guard lock(mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

size_t WorkerPool::QueueDepth() const {
  const std::lock_guard lock(mu_);
  return queue_.size();
}

void WorkerPool::Run() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
    executed_.Add();
  }
}

// ---- Strand ---------------------------------------------------------------------------------

struct Strand::State {
  std::mutex mu;
  std::condition_variable idle;  // a task finished
  std::deque<std::function<void()>> queue;
  bool scheduled = false;  // a turn is waiting in (or running on) the pool
  bool running = false;    // a task is running (on the pool or in Drain)
};

Strand::Strand(WorkerPool& pool) : pool_(&pool), state_(std::make_shared<State>()) {}

bool Strand::Post(std::function<void()> task) {
  {
    const std::lock_guard lock(state_->mu);
    state_->queue.push_back(std::move(task));
    if (state_->scheduled) return true;
    state_->scheduled = true;
  }
  if (pool_->TrySubmit([state = state_] { RunQueued(state); })) return true;
  const std::lock_guard lock(state_->mu);
  state_->scheduled = false;
  return false;
}

void Strand::RunQueued(const std::shared_ptr<State>& state) {
  std::unique_lock lock(state->mu);
  // Drain() may be running tasks on its own thread meanwhile: one runner at a time.
  while (!state->running && !state->queue.empty()) {
    auto task = std::move(state->queue.front());
    state->queue.pop_front();
    state->running = true;
    lock.unlock();
    task();
    task = nullptr;  // captures die outside the lock
    lock.lock();
    state->running = false;
    state->idle.notify_all();
  }
  state->scheduled = false;
}

void Strand::Drain() {
  std::unique_lock lock(state_->mu);
  for (;;) {
    if (state_->running) {
      state_->idle.wait(lock);
    } else if (!state_->queue.empty()) {
      auto task = std::move(state_->queue.front());
      state_->queue.pop_front();
      state_->running = true;
      lock.unlock();
      task();
      task = nullptr;
      lock.lock();
      state_->running = false;
      state_->idle.notify_all();
    } else {
      return;
    }
  }
}

size_t Strand::Pending() const {
  const std::lock_guard lock(state_->mu);
  return state_->queue.size() + (state_->running ? 1 : 0);
}

// ---- TimerQueue -----------------------------------------------------------------------------

TimerQueue::TimerQueue() {
  thread_ = std::thread([this] {
    NameThisThread("timers");
    Run();
  });
}

TimerQueue::~TimerQueue() {
  {
    const std::lock_guard lock(mu_);
    quit_ = true;
    timers_.clear();
  }
  cv_.notify_all();
  thread_.join();
}

uint64_t TimerQueue::Schedule(Clock::time_point at, std::function<void()> fn) {
  uint64_t id = 0;
  {
    const std::lock_guard lock(mu_);
    id = next_id_++;
    timers_.emplace(at, std::make_pair(id, std::move(fn)));
  }
  cv_.notify_all();
  return id;
}

bool TimerQueue::Cancel(uint64_t id) {
  const std::lock_guard lock(mu_);
  for (auto it = timers_.begin(); it != timers_.end(); ++it) {
    if (it->second.first == id) {
      timers_.erase(it);
      return true;
    }
  }
  return false;
}

size_t TimerQueue::pending() const {
  const std::lock_guard lock(mu_);
  return timers_.size();
}

void TimerQueue::Run() {
  std::unique_lock lock(mu_);
  while (!quit_) {
    if (timers_.empty()) {
      cv_.wait(lock);
      continue;
    }
    const auto first = timers_.begin();
    if (first->first > Clock::now()) {
      const Clock::time_point when = first->first;  // a copy: Cancel may erase the node
      cv_.wait_until(lock, when);
      continue;
    }
    auto fn = std::move(first->second.second);
    timers_.erase(first);
    lock.unlock();
    fn();
    fn = nullptr;
    lock.lock();
  }
}

}  // namespace parley::core
