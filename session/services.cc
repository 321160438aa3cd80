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
  for (const auto& p : echo.Validate()) problems.push_back("echo: " + p);
  check("dialogue engine", llm.Validate());
  check("turn-taking", turn_taking.Validate());
  check("interruptions", interruption.Validate());
  check("speech service", remote_tts.Validate());
  check("playback", playback.Validate());
  check("reply workers", reply_workers.Validate());
  if (synthesis_slots < 1 || synthesis_slots > 64)
    problems.push_back("--voice-threads must be 1..64");
  if (history_turns < 0 || history_turns > 200)
    problems.push_back("--llm-history-turns must be 0..200");
  if (max_say_chars < 1 || max_say_chars > 100000)
    problems.push_back("--max-say-chars must be 1..100000");
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
                   metrics),
      reply_pool_(config.reply_workers, metrics),
      synthesis_slots_(config.synthesis_slots),
      pacer_(media::Pacer::Create(metrics)),
      flite_(speech::CreateFliteSynthesizer()) {
  if (!config_.remote_tts.base_url.empty()) {
    std::string error;
    remote_tts_ = speech::CreateRemoteSynthesizer(config_.remote_tts, &error);
    if (!remote_tts_) log_.Error("remote speech synthesis is unavailable", {{"error", error}});
  }
  if (!config_.llm.base_url.empty()) {
    std::string error;
    llm_ = dialogue::LlmEngine::Create(config_.llm, &error);
    if (!llm_) log_.Error("the dialogue service is unavailable", {{"error", error}});
  }
  if (!config_.hearing.remote.base_url.empty()) {
    std::string error;
    remote_asr_ = speech::RemoteRecognizer::Create(config_.hearing.remote, &error);
    if (!remote_asr_) log_.Error("remote speech recognition is unavailable", {{"error", error}});
  }
}

Services::~Services() { Shutdown(); }

void Services::Shutdown() {
  reply_pool_.Shutdown();
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

std::vector<speech::VoiceInfo> Services::Voices() const {
  std::vector<speech::VoiceInfo> out = flite_->Voices();
  if (remote_tts_) {
    const auto remote = remote_tts_->Voices();
    out.insert(out.end(), remote.begin(), remote.end());
  }
  return out;
}

void Services::SetPersonas(std::map<std::string, dialogue::PersonaProfile> personas) {
  const std::lock_guard lock(personas_mu_);
  personas_ = std::move(personas);
}

dialogue::PersonaProfile Services::Persona(const std::string& id) const {
  {
    const std::lock_guard lock(personas_mu_);
    if (const auto it = personas_.find(id); it != personas_.end()) return it->second;
  }
  dialogue::PersonaProfile p;
  p.id = id;
  p.name = "Alex";
  p.occupation = "Conversation partner";
  p.greeting = "Hello, it's nice to meet you.";
  p.hobbies = {"reading", "walking"};
  p.styles = {{0, "formal", "Polite and clear.", {}}, {50, "casual", "Relaxed.", {}}};
  p.voice = "slt";
  return p;
}

}  // namespace parley::session
