// The conversation: a session's stages and the wiring between them. Decoded audio goes to
// hearing, decoded video to vision (for server-side landmarks); taps see both.
#include "session/internal.h"

namespace parley::session {

Conversation::Stages::Stages(const std::shared_ptr<Session>& s, Services& svc)
    : session(s), services(svc) {}

void Conversation::Stages::Wire() {
  hearing = std::make_shared<HearingStage>(session, services);
  vision = std::make_shared<VisionStage>(session, services);
  std::weak_ptr<Stages> weak = weak_from_this();
  IngestStage::Sinks sinks;
  sinks.audio = [weak](int64_t t_ms, std::span<const int16_t> pcm) {
    const auto self = weak.lock();
    if (!self) return;
    self->hearing->Feed(t_ms, pcm);
    std::vector<AudioTap> taps;
    {
      const std::lock_guard lock(self->taps_mu);
      taps = self->audio_taps;
    }
    for (const auto& tap : taps) tap(t_ms, pcm);
  };
  sinks.video = [weak](int64_t t_ms, const media::VideoFrame& frame) {
    const auto self = weak.lock();
    if (!self) return;
    self->vision->OnVideo(t_ms, frame);
    std::vector<VideoTap> taps;
    {
      const std::lock_guard lock(self->taps_mu);
      taps = self->video_taps;
    }
    for (const auto& tap : taps) tap(t_ms, frame);
  };
  ingest = std::make_shared<IngestStage>(session, services, std::move(sinks));
}

Conversation::Conversation(const std::shared_ptr<Session>& session, Services& services)
    : stages_(std::make_shared<Stages>(session, services)) {
  stages_->Wire();
}

Conversation::~Conversation() = default;

bool Conversation::StartMedia(const StartParams& params, std::string* error) {
  return stages_->ingest->Start(params, error);
}

void Conversation::StopMedia() { stages_->ingest->Stop(); }

void Conversation::PushMedia(std::string_view bytes) { stages_->ingest->Push(bytes); }

void Conversation::PushLandmarks(LandmarkFormat format, std::string_view bytes) {
  stages_->vision->PushClientFrame(format, bytes);
}

void Conversation::AddAudioTap(AudioTap tap) {
  const std::lock_guard lock(stages_->taps_mu);
  stages_->audio_taps.push_back(std::move(tap));
}

void Conversation::AddVideoTap(VideoTap tap) {
  const std::lock_guard lock(stages_->taps_mu);
  stages_->video_taps.push_back(std::move(tap));
}

void Conversation::End() {
  std::call_once(stages_->ended, [this] {
    Stages& st = *stages_;
    Json::Value patch(Json::objectValue);
    // Media first: the pipeline drains into hearing and vision, which then finish.
    st.ingest->End(&patch);
    st.vision->End(&patch);
    st.hearing->End(&patch);
    if (const auto s = st.session.lock()) s->MergeReport(patch);
  });
}

}  // namespace parley::session
