// Playback: the persona's voice. Each reply is one utterance on the session's Playback (the
// shared pacer sends its packets in real time); each sentence is synthesized as soon as the
// dialogue has it (the remote speech service when configured, else Flite; Flite again when the
// service fails, said once per utterance as an engine_fallback) and appended while the earlier
// ones play.
#include <array>
#include <cmath>
#include <semaphore>

#include "session/internal.h"

namespace parley::session {
namespace {

constexpr size_t kClientPositionsKept = 16;

// Holds one of the shared local-synthesis slots for its scope.
class SynthesisSlot {
 public:
  explicit SynthesisSlot(std::counting_semaphore<>& slots) : slots_(slots) { slots_.acquire(); }
  ~SynthesisSlot() { slots_.release(); }
  SynthesisSlot(const SynthesisSlot&) = delete;
  SynthesisSlot& operator=(const SynthesisSlot&) = delete;

 private:
  std::counting_semaphore<>& slots_;
};

PlaybackNotice::Kind NoticeKind(media::PlaybackEvent::Kind k) {
  switch (k) {
    case media::PlaybackEvent::Kind::kStarted:
      return PlaybackNotice::Kind::kStart;
    case media::PlaybackEvent::Kind::kEnded:
      return PlaybackNotice::Kind::kEnd;
    case media::PlaybackEvent::Kind::kPaused:
      return PlaybackNotice::Kind::kPaused;
    case media::PlaybackEvent::Kind::kResumed:
      return PlaybackNotice::Kind::kResumed;
    case media::PlaybackEvent::Kind::kCancelled:
      return PlaybackNotice::Kind::kCancelled;
  }
  return PlaybackNotice::Kind::kStart;
}

}  // namespace

PlaybackStage::PlaybackStage(std::weak_ptr<Session> session, Services& services)
    : session_(std::move(session)), services_(services), pcm_(!services.config().playback.opus) {}

PlaybackStage::~PlaybackStage() = default;

void PlaybackStage::SetPcm(bool pcm) {
  std::shared_ptr<media::Playback> replaced;  // released outside the lock (it may call back)
  const std::lock_guard lock(mu_);
  if (pcm == pcm_) return;
  pcm_ = pcm;
  // A playback of the other format is replaced at the next utterance once it is idle.
  if (playback_ && !playback_->Busy()) replaced = std::move(playback_);
}

std::unique_ptr<PlaybackStage::Utterance> PlaybackStage::Begin(const std::string& voice,
                                                               double rate) {
  std::unique_ptr<media::Playback::Writer> writer;
  {
    const std::lock_guard lock(mu_);
    if (!playback_) {
      media::PlaybackConfig config = services_.config().playback;
      config.opus = !pcm_;
      std::weak_ptr<PlaybackStage> weak = weak_from_this();
      std::weak_ptr<Session> session = session_;
      media::Playback::Callbacks cb;
      cb.sink = [session, weak](std::string packet) {
        if (const auto self = weak.lock()) self->OnPacketSent(packet);
        if (const auto s = session.lock()) s->EmitAudio(std::move(packet));
      };
      cb.on_event = [weak](const media::PlaybackEvent& e) {
        if (const auto self = weak.lock()) self->OnEvent(e);
      };
      std::string error;
      playback_ = media::Playback::Create(config, services_.pacer(), std::move(cb),
                                          services_.metrics(), &error);
      if (!playback_) {
        services_.log().Error("the persona's voice cannot be played", {{"error", error}});
        return nullptr;
      }
    }
    writer = playback_->Begin();
    if (!writer) return nullptr;
    last_utterance_ = writer->utterance();
    ++utterances_;
  }
  auto u = std::make_unique<Utterance>();
  u->stage_ = shared_from_this();
  u->writer_ = std::move(writer);
  u->voice_ = voice;
  u->rate_ = rate;
  return u;
}

bool PlaybackStage::Utterance::Speak(const std::string& sentence) {
  if (!writer_ || writer_->cancelled()) return false;
  Services& services = stage_->services_;
  speech::SynthesisRequest request{sentence, voice_, rate_};
  std::string error;
  std::optional<speech::Synthesis> audio;
  if (speech::Synthesizer* remote = services.remote_tts()) {
    speech::SynthesisRequest remote_request = request;
    if (!remote->HasVoice(voice_)) remote_request.voice.clear();  // the service's default
    audio = remote->Synthesize(remote_request, &error);
    if (!audio) {
      {
        const std::lock_guard lock(stage_->mu_);
        ++stage_->fallbacks_;
      }
      if (!told_fallback_) {
        told_fallback_ = true;
        if (const auto s = stage_->session_.lock()) {
          s->Emit(EngineFallback{"tts", "flite", error});
          s->timeline().AddEvent(s->NowMs(), "engine_fallback", [&] {
            Json::Value d(Json::objectValue);
            d["stage"] = "tts";
            d["reason"] = error;
            return d;
          }());
        }
        services.log().Warn("remote speech synthesis failed: Flite speaks", {{"error", error}});
      }
    }
  }
  if (!audio) {
    if (!services.flite().HasVoice(request.voice)) request.voice.clear();  // Flite's default
    // CPU-bound: bounded however many replies run; the slot is returned even on a throw.
    const SynthesisSlot slot(services.synthesis_slots());
    audio = services.flite().Synthesize(request, &error);
  }
  if (!audio) {
    const std::lock_guard lock(stage_->mu_);
    ++stage_->failures_;
    services.log().Error("speech synthesis failed", {{"error", error}});
    return false;
  }
  const int64_t ms = static_cast<int64_t>(audio->pcm.size()) * 1000 / audio->sample_rate;
  stage_->KeepReference(writer_->utterance(), audio->pcm, audio->sample_rate);
  if (!writer_->Append(audio->pcm, audio->sample_rate)) return false;
  audio_ms_ += ms;
  const std::lock_guard lock(stage_->mu_);
  stage_->synthesized_ms_ += static_cast<uint64_t>(ms);
  return true;
}

void PlaybackStage::KeepReference(uint16_t utterance, std::span<const int16_t> pcm, int rate) {
  if (!echo_ || rate <= 0) return;
  const std::lock_guard lock(mu_);
  auto& ref = reference_[utterance];
  // To 16 kHz by linear interpolation: the reference only has to match the echo's envelope and
  // the canceller's band, not to be heard.
  const double step = static_cast<double>(rate) / speech::kSampleRate;
  const auto n = static_cast<size_t>(static_cast<double>(pcm.size()) / step);
  for (size_t i = 0; i < n; ++i) {
    const double at = static_cast<double>(i) * step;
    const auto k = static_cast<size_t>(at);
    const double f = at - static_cast<double>(k);
    const double next = k + 1 < pcm.size() ? pcm[k + 1] : pcm[k];
    ref.push_back(static_cast<int16_t>(std::lround(pcm[k] * (1.0 - f) + next * f)));
  }
  while (reference_.size() > 4) reference_.erase(reference_.begin());
}

// The pacer thread, as each packet leaves: its 20 ms of audio goes to the echo reference at
// the time it was sent. Header: kind, sequence u32, position u32 (48 kHz), utterance u16.
void PlaybackStage::OnPacketSent(const std::string& packet) {
  if (!echo_ || packet.size() < 11) return;
  const auto byte = [&](size_t i) {
    return static_cast<uint32_t>(static_cast<uint8_t>(packet[i]));
  };
  const uint32_t position = byte(5) << 24 | byte(6) << 16 | byte(7) << 8 | byte(8);
  const auto utterance = static_cast<uint16_t>(byte(9) << 8 | byte(10));
  const auto s = session_.lock();
  if (!s) return;
  constexpr size_t kPacketSamples = speech::kSampleRate / 50;  // 20 ms
  std::array<int16_t, kPacketSamples> chunk{};
  {
    const std::lock_guard lock(mu_);
    const auto it = reference_.find(utterance);
    if (it == reference_.end()) return;
    const size_t from = position / 3;  // 48 kHz -> 16 kHz
    for (size_t i = 0; i < kPacketSamples && from + i < it->second.size(); ++i)
      chunk[i] = it->second[from + i];
  }
  echo_->AddReference(s->NowMs(), chunk);
}

void PlaybackStage::Utterance::Finish() {
  if (writer_) writer_->Finish();
}

// Pause, Resume and Cancel come from any thread (the service thread on a close) while End may
// be letting the playback go: each holds its own reference for the call.
void PlaybackStage::Cancel(const std::string& reason) {
  std::shared_ptr<media::Playback> playback;
  {
    const std::lock_guard lock(mu_);
    if (!playback_) return;
    cancel_reason_ = reason;
    playback = playback_;
  }
  playback->Cancel();  // its event comes back through OnEvent (with the reason) on this thread
}

void PlaybackStage::Pause() {
  std::shared_ptr<media::Playback> playback;
  {
    const std::lock_guard lock(mu_);
    playback = playback_;
  }
  if (playback != nullptr) playback->Pause();
}

void PlaybackStage::Resume() {
  std::shared_ptr<media::Playback> playback;
  {
    const std::lock_guard lock(mu_);
    playback = playback_;
  }
  if (playback != nullptr) playback->Resume();
}

void PlaybackStage::OnEvent(const media::PlaybackEvent& e) {
  PlaybackNotice notice;
  notice.kind = NoticeKind(e.kind);
  notice.utterance = e.utterance;
  notice.played_ms = e.played_ms;
  if (e.kind == media::PlaybackEvent::Kind::kCancelled) {
    const std::lock_guard lock(mu_);
    notice.reason = cancel_reason_.empty() ? "cancelled" : cancel_reason_;
  }
  // The dialogue first: it knows the reply latency for playback.start.
  if (on_event_) notice.reply_latency_ms = on_event_(e);
  if (const auto s = session_.lock()) s->Emit(std::move(notice));
}

bool PlaybackStage::ClientPosition(int utterance, int64_t played_ms, std::string* error) {
  const std::lock_guard lock(mu_);
  if (utterance <= 0 || utterance > 0xffff || last_utterance_ == 0 ||
      static_cast<uint16_t>(utterance) > last_utterance_ ||
      static_cast<size_t>(last_utterance_ - static_cast<uint16_t>(utterance)) >
          kClientPositionsKept) {
    *error = "no recent utterance " + std::to_string(utterance) + " in this session";
    return false;
  }
  if (played_ms < 0 || played_ms > 10 * 60 * 1000) {
    *error = "played_ms must be 0..600000";
    return false;
  }
  client_played_[static_cast<uint16_t>(utterance)] = played_ms;
  while (client_played_.size() > kClientPositionsKept) client_played_.erase(client_played_.begin());
  return true;
}

std::optional<int64_t> PlaybackStage::ClientPlayed(uint16_t utterance) const {
  const std::lock_guard lock(mu_);
  const auto it = client_played_.find(utterance);
  if (it == client_played_.end()) return std::nullopt;
  return it->second;
}

void PlaybackStage::End(Json::Value* patch) {
  Cancel("session_ended");
  std::shared_ptr<media::Playback> playback;
  {
    const std::lock_guard lock(mu_);
    playback = std::move(playback_);
  }
  playback.reset();  // unregisters from the pacer (or the last caller of Cancel/Pause does)
  Summarize(patch);
}

void PlaybackStage::Summarize(Json::Value* patch) {
  const std::lock_guard lock(mu_);
  if (utterances_ == 0) return;
  Json::Value& v = (*patch)["metrics"]["voice"];
  v["utterances"] = static_cast<Json::UInt64>(utterances_);
  v["synthesized_s"] = Round(static_cast<double>(synthesized_ms_) / 1000, 0.01);
  v["tts_fallbacks"] = static_cast<Json::UInt64>(fallbacks_);
  v["tts_failures"] = static_cast<Json::UInt64>(failures_);
}

}  // namespace parley::session
