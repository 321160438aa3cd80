#include "session/internal.h"

namespace parley::session {

std::vector<std::string> ConversationConfig::Validate() const {
  std::vector<std::string> problems;
  auto check = [&](const std::string& area, const std::string& why) {
    if (!why.empty()) problems.push_back(area + ": " + why);
  };
  check("media", media.Validate());
  check("vision", vision.Validate());
  check("vision workers", vision_workers.Validate());
  if (server_landmarks) check("server landmarks", landmarker.Validate());
  for (const auto& p : hearing.Validate()) problems.push_back(p);
  if (end_wait_s < 1 || end_wait_s > 600) problems.push_back("end wait must be 1..600 s");
  return problems;
}

Services::Services(const ConversationConfig& config, core::WorkerPool& general, core::Logger& log,
                   core::Metrics& metrics)
    : config_(config),
      general_(general),
      log_(log),
      metrics_(metrics),
      vision_pool_(config.vision_workers, metrics),
      // At most one task per utterance in flight waits in the ASR queue.
      asr_pool_(
          core::WorkerPoolConfig{
              .name = "asr", .threads = config.hearing.threads, .queue_capacity = 16384},
          metrics),
      remote_pool_(core::WorkerPoolConfig{.name = "asr_remote",
                                          .threads = config.hearing.remote.base_url.empty()
                                                         ? 1
                                                         : config.hearing.remote_concurrency,
                                          .queue_capacity = 4096},
                   metrics) {
  if (!config_.hearing.remote.base_url.empty()) {
    std::string error;
    remote_asr_ = speech::RemoteRecognizer::Create(config_.hearing.remote, &error);
    if (!remote_asr_) log_.Error("remote speech recognition is unavailable", {{"error", error}});
  }
}

Services::~Services() { Shutdown(); }

void Services::Shutdown() {
  asr_pool_.Shutdown();
  remote_pool_.Shutdown();
  vision_pool_.Shutdown();
}

std::shared_ptr<const vision::LandmarkerModel> Services::Landmarker() {
  return landmarker_.Get(
      [this](std::string* error) { return vision::LoadLandmarkerModel(config_.landmarker, error); },
      log_, "dlib landmark model " + config_.landmarker.shape_model);
}

std::shared_ptr<speech::DecoderPool> Services::Decoders() {
  return decoders_.Get(
      [this](std::string* error) {
        speech::PocketSphinxConfig asr = config_.hearing.asr;
        asr.lead_in_ms = config_.hearing.endpoint.pre_roll_ms;  // turns start with the pre-roll
        return speech::DecoderPool::Create(asr, error);
      },
      log_, std::to_string(config_.hearing.asr.pool_size) + " speech decoders");
}

// The dlib model (~100 MB, ~1 s) loads when the first video session starts, not at boot;
// likewise the speech decoders (~100 MB and ~1 s each) with the first media session.
void Services::Preload(bool video) {
  if (video && config_.server_landmarks) vision_pool_.TrySubmit([this] { Landmarker(); });
  if (config_.hearing.enabled) asr_pool_.TrySubmit([this] { Decoders(); });
}

}  // namespace parley::session
