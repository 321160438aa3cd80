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
  for (int i = 0; i < config.threads; ++i) threads_.emplace_back([this] { Run(); });
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

}  // namespace parley::core
