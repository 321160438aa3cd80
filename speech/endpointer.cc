// Voice activity (WebRTC's VAD from libwebrtc-audio-processing) on 10 ms steps, and the
// turn logic on top: a start needs a little voiced time, the turn holds through unvoiced steps
// (its hangover) and ends after a trailing silence, bursts shorter than a minimum are dropped.
#include <algorithm>
#include <deque>

#include "speech/speech.h"

// Debian's libwebrtc-audio-processing exports the VAD but installs no header for it; these
// are the prototypes of webrtc/common_audio/vad/include/webrtc_vad.h in that version.
extern "C" {
struct WebRtcVadInst;
WebRtcVadInst* WebRtcVad_Create();
void WebRtcVad_Free(WebRtcVadInst* handle);
int WebRtcVad_Init(WebRtcVadInst* handle);
int WebRtcVad_set_mode(WebRtcVadInst* handle, int mode);
int WebRtcVad_Process(WebRtcVadInst* handle, int fs, const int16_t* audio_frame,
                      size_t frame_length);
}

namespace parley::speech {
namespace {

constexpr int kStepMs = 10;
constexpr size_t kStepSamples = kSampleRate * kStepMs / 1000;

struct VadDeleter {
  void operator()(WebRtcVadInst* v) const { WebRtcVad_Free(v); }
};

class EndpointerImpl final : public Endpointer {
 public:
  EndpointerImpl(const EndpointConfig& config, std::unique_ptr<WebRtcVadInst, VadDeleter> vad)
      : config_(config), vad_(std::move(vad)) {}

  void Feed(int64_t t_ms, std::span<const int16_t> pcm,
            std::vector<EndpointEvent>* events) override {
    if (!pending_.empty() &&
        t_ms - pending_t_ - static_cast<int64_t>(pending_.size()) * 1000 / kSampleRate >
            config_.end_silence_ms) {
      pending_.clear();  // the rest of a step before the gap
      if (in_speech_) End(events);
    } else if (pending_.empty() && have_fed_ && in_speech_ &&
               t_ms - next_t_ > config_.end_silence_ms) {
      End(events);
    }
    have_fed_ = true;
    if (pending_.empty()) pending_t_ = t_ms;
    next_t_ = t_ms + static_cast<int64_t>(pcm.size()) * 1000 / kSampleRate;
    pending_.insert(pending_.end(), pcm.begin(), pcm.end());
    size_t used = 0;
    while (pending_.size() - used >= kStepSamples) {
      Step(pending_t_, std::span<const int16_t>(pending_.data() + used, kStepSamples), events);
      used += kStepSamples;
      pending_t_ += kStepMs;
    }
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(used));
  }

  void Flush(std::vector<EndpointEvent>* events) override {
    if (in_speech_) End(events);
    pending_.clear();
  }

  bool in_speech() const override { return in_speech_; }
  uint64_t voiced_ms() const override { return voiced_total_ms_; }
  int64_t current_span_ms() const override {
    return in_speech_ ? std::max<int64_t>(0, last_voiced_end_ - utterance_.t_start_ms) : 0;
  }
  std::span<const int16_t> current_audio() const override {
    if (!in_speech_) return {};
    return utterance_.audio;
  }

 private:
  void Step(int64_t t, std::span<const int16_t> frame, std::vector<EndpointEvent>* events) {
    const bool voiced = WebRtcVad_Process(vad_.get(), kSampleRate, frame.data(), frame.size()) == 1;
    if (voiced) voiced_total_ms_ += kStepMs;
    // Recent audio for the pre-roll, and recent decisions for the start rule.
    history_.push_back({t, voiced, std::vector<int16_t>(frame.begin(), frame.end())});
    const size_t keep =
        static_cast<size_t>(std::max(config_.pre_roll_ms, config_.start_window_ms) / kStepMs) + 1;
    while (history_.size() > keep) history_.pop_front();

    if (!in_speech_) {
      const size_t window = static_cast<size_t>(config_.start_window_ms / kStepMs);
      int voiced_in_window = 0;
      int64_t first_voiced = t;
      for (size_t i = history_.size() > window ? history_.size() - window : 0; i < history_.size();
           ++i) {
        if (history_[i].voiced) {
          if (voiced_in_window == 0) first_voiced = history_[i].t;
          ++voiced_in_window;
        }
      }
      if (voiced_in_window * kStepMs >= config_.start_speech_ms) Start(first_voiced, events);
      return;
    }
    utterance_.audio.insert(utterance_.audio.end(), frame.begin(), frame.end());
    if (voiced) {
      last_voiced_end_ = t + kStepMs;
      audio_at_last_voiced_ = utterance_.audio.size();
    }
    if (t + kStepMs - last_voiced_end_ >= config_.end_silence_ms) {
      End(events);
    } else if (t + kStepMs - utterance_.t_start_ms >= config_.max_utterance_ms) {
      End(events);
      Start(t + kStepMs, events);
    }
  }

  void Start(int64_t t_start, std::vector<EndpointEvent>* events) {
    in_speech_ = true;
    utterance_ = Utterance{};
    utterance_.t_start_ms = t_start;
    last_voiced_end_ = t_start;
    // Pre-roll: the kept steps from t_start - pre_roll on (the window's voiced frames too).
    utterance_.audio_start_ms = -1;
    for (const auto& h : history_) {
      if (h.t < t_start - config_.pre_roll_ms) continue;
      if (utterance_.audio_start_ms < 0) utterance_.audio_start_ms = h.t;
      utterance_.audio.insert(utterance_.audio.end(), h.audio.begin(), h.audio.end());
    }
    if (utterance_.audio_start_ms < 0) utterance_.audio_start_ms = t_start;
    for (const auto& h : history_)
      if (h.voiced) last_voiced_end_ = std::max(last_voiced_end_, h.t + kStepMs);
    audio_at_last_voiced_ = utterance_.audio.size();
    events->push_back({EndpointEvent::Kind::kSpeechStart, t_start, std::nullopt});
  }

  void End(std::vector<EndpointEvent>* events) {
    in_speech_ = false;
    utterance_.t_end_ms = last_voiced_end_;
    // Keep the audio up to the last voiced step plus a tail (words trail off quietly, and the
    // recogniser decodes better with some silence around them).
    // (no more than the end silence: later audio has not arrived when the turn ends).
    const size_t tail =
        static_cast<size_t>(std::min(config_.tail_ms, config_.end_silence_ms) / kStepMs) *
        kStepSamples;
    utterance_.audio.resize(std::min(utterance_.audio.size(), audio_at_last_voiced_ + tail));
    EndpointEvent e{EndpointEvent::Kind::kSpeechEnd, utterance_.t_end_ms, std::nullopt};
    if (utterance_.t_end_ms - utterance_.t_start_ms >= config_.min_utterance_ms)
      e.utterance = std::move(utterance_);
    events->push_back(std::move(e));
    utterance_ = Utterance{};
  }

  struct Step_ {
    int64_t t;
    bool voiced;
    std::vector<int16_t> audio;
  };

  const EndpointConfig config_;
  std::unique_ptr<WebRtcVadInst, VadDeleter> vad_;
  std::vector<int16_t> pending_;
  int64_t pending_t_ = 0;
  int64_t next_t_ = 0;  // where the next fed frame should start
  bool have_fed_ = false;
  std::deque<Step_> history_;
  bool in_speech_ = false;
  Utterance utterance_;
  int64_t last_voiced_end_ = 0;
  size_t audio_at_last_voiced_ = 0;
  uint64_t voiced_total_ms_ = 0;
};

}  // namespace

std::string EndpointConfig::Validate() const {
  if (aggressiveness < 0 || aggressiveness > 3) return "VAD aggressiveness must be 0..3";
  if (start_window_ms < 10 || start_speech_ms < 10 || start_speech_ms > start_window_ms)
    return "speech start needs 10 <= start_speech_ms <= start_window_ms";
  if (end_silence_ms < 100 || end_silence_ms > 5000)
    return "end-of-turn silence must be 100..5000 ms";
  if (min_utterance_ms < 0 || max_utterance_ms < 1000) return "utterance limits are out of range";
  if (pre_roll_ms < 0 || pre_roll_ms > 1000) return "pre-roll must be 0..1000 ms";
  if (tail_ms < 0 || tail_ms > 1000) return "the kept tail must be 0..1000 ms";
  return {};
}

std::unique_ptr<Endpointer> Endpointer::Create(const EndpointConfig& config, std::string* error) {
  if (std::string why = config.Validate(); !why.empty()) {
    *error = why;
    return nullptr;
  }
  std::unique_ptr<WebRtcVadInst, VadDeleter> vad(WebRtcVad_Create());
  if (!vad || WebRtcVad_Init(vad.get()) != 0 ||
      WebRtcVad_set_mode(vad.get(), config.aggressiveness) != 0) {
    *error = "cannot initialise WebRTC's voice activity detector";
    return nullptr;
  }
  return std::make_unique<EndpointerImpl>(config, std::move(vad));
}

}  // namespace parley::speech
