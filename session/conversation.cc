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
  sinks.drained = [weak] {
    if (const auto self = weak.lock()) self->hearing->Flush();  // the turn ends with its stream
  };
  ingest = std::make_shared<IngestStage>(session, services, std::move(sinks));
  playback = std::make_shared<PlaybackStage>(session, services);
  // Made for every session that listens: its client says at `start` whether it is needed.
  if (services.config().hearing.enabled) {
    echo = std::make_shared<speech::EchoCanceller>(services.config().echo);
    playback->SetEcho(echo);
    hearing->SetEcho(echo);
  }
  dialogue = std::make_shared<DialogueStage>(session, services, playback, hearing);
  std::weak_ptr<DialogueStage> talk = dialogue;
  HearingStage::Listener heard;
  heard.speech_start = [talk](int64_t t) {
    if (const auto d = talk.lock()) d->OnSpeechStart(t);
  };
  heard.speech_end = [talk](int64_t t, bool transcript_coming) {
    if (const auto d = talk.lock()) d->OnSpeechEnd(t, transcript_coming);
  };
  heard.final_transcript = [talk](const std::string& text, double confidence, int64_t t_end) {
    if (const auto d = talk.lock()) d->OnFinal(text, confidence, t_end);
  };
  heard.transcript_lost = [talk] {
    if (const auto d = talk.lock()) d->OnTranscriptLost();
  };
  heard.partial = [talk](const std::string& text) {
    if (const auto d = talk.lock()) d->OnPartial(text);
  };
  heard.speech_progress = [talk](int64_t spoken_ms) {
    if (const auto d = talk.lock()) d->OnSpeechProgress(spoken_ms);
  };
  hearing->SetListener(std::move(heard));
  vision->SetListener([talk](const std::string& type) {
    if (const auto d = talk.lock()) d->OnVisionEvent(type);
  });
  playback->SetListener([talk](const media::PlaybackEvent& e) -> std::optional<int64_t> {
    if (const auto d = talk.lock()) return d->OnPlayback(e);
    return std::nullopt;
  });
}

Conversation::Conversation(const std::shared_ptr<Session>& session, Services& services)
    : stages_(std::make_shared<Stages>(session, services)) {
  stages_->Wire();
}

Conversation::~Conversation() = default;

bool Conversation::StartMedia(const StartParams& params, std::string* error) {
  if (!stages_->ingest->Start(params, error)) return false;
  stages_->playback->SetPcm(params.pcm_playback);
  if (stages_->echo)
    stages_->echo->SetActive(
        params.server_echo_cancel.value_or(stages_->services.config().echo.enabled));
  stages_->dialogue->OnMediaStarted();  // the persona greets once media starts
  return true;
}

void Conversation::StopMedia() {
  stages_->ingest->Stop();
  stages_->playback->Cancel("stop");
}

bool Conversation::Say(const std::string& text, std::string* error) {
  return stages_->dialogue->Say(text, error);
}

bool Conversation::PlaybackPosition(int utterance, int64_t played_ms, std::string* error) {
  return stages_->playback->ClientPosition(utterance, played_ms, error);
}

void Conversation::PushMedia(std::string_view bytes) {
  // Video is decoded only for server-side landmarks: not while the client sends its own.
  stages_->ingest->SetVideoWanted(stages_->services.config().server_landmarks &&
                                  !stages_->vision->ClientSendsLandmarks());
  stages_->ingest->Push(bytes);
}

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

namespace {

// Who talked how much: the user's share of the speech of both.
void AddShareOfSpeech(Json::Value* patch) {
  const Json::Value& read = *patch;  // const: reading adds no members
  const Json::Value& user = read["metrics"]["speech"]["speech_s"];
  const Json::Value& persona = read["metrics"]["conversation"]["persona_speech_s"];
  if (user.isNumeric() && persona.isNumeric() && user.asDouble() + persona.asDouble() > 0)
    (*patch)["metrics"]["conversation"]["user_share_of_speech"] =
        Round(user.asDouble() / (user.asDouble() + persona.asDouble()), 0.001);
}

}  // namespace

void Conversation::End() {
  std::call_once(stages_->ended, [this] {
    Stages& st = *stages_;
    Json::Value patch(Json::objectValue);
    // Media first: the pipeline drains into hearing and vision. The dialogue stops answering
    // and the voice is cut (its last turn goes to the transcript) before hearing sums up, so
    // the persona's speech is not counted as the user's pauses.
    st.ingest->End(&patch);
    st.vision->End(&patch);
    st.dialogue->Stop();
    st.playback->End(&patch);
    st.hearing->End(&patch);
    st.dialogue->Measures(&patch);
    AddShareOfSpeech(&patch);
    if (const auto s = st.session.lock()) s->MergeReport(patch);
  });
}

Json::Value Conversation::Summary() {
  Stages& st = *stages_;
  Json::Value patch(Json::objectValue);
  st.ingest->Summarize(&patch);
  st.vision->Summarize(&patch);
  st.playback->Summarize(&patch);
  st.hearing->Summarize(&patch);
  st.dialogue->Measures(&patch);
  AddShareOfSpeech(&patch);
  return patch;
}

}  // namespace parley::session
