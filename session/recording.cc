// An uploaded recording through a session's stages: the same ingest, hearing and vision a live
// session has, fed as fast as they take it. Live sessions shed work to keep up with real time
// (dlib skips frames, an overloaded recogniser refuses turns); a recording must not lose
// anything, so the feeder waits instead: it hands the decoder a chunk only while the decoder's
// backlog and the recogniser's queue are short, and dlib holds the decoder back frame by frame
// (VisionStage::SetLossless). The waits poll (a few ms): the three stages have no common
// signal, and a batch feeder polling every 2 ms costs nothing next to decoding.
#include <thread>

#include "session/internal.h"

namespace parley::session {
namespace {

constexpr size_t kWebmChunkBytes = 64 * 1024;
constexpr size_t kMaxUtterancesWaiting = 3;  // the recogniser's queue the feeder lets build up
constexpr auto kPoll = std::chrono::milliseconds(2);

}  // namespace

Conversation::RecordingOutcome Conversation::AnalyzeRecording(StartParams params,
                                                              std::string_view bytes,
                                                              const RecordingLimits& limits) {
  using Status = RecordingOutcome::Status;
  Stages& st = *stages_;
  RecordingOutcome out{Status::kAnalysed};
  const auto session = st.session.lock();
  if (!session || session->state() != State::kLive) {
    out.status = Status::kEnded;
    out.error = "the session is not live";
    return out;
  }
  params.recording = true;
  params.server_echo_cancel = false;  // nobody played anything into this microphone
  st.dialogue->SetListenOnly();
  st.hearing->SetRecording();
  st.vision->SetLossless();

  // What has been decoded, from the taps (GStreamer's threads).
  struct Progress {
    std::atomic<int64_t> end_ms{0};
    std::atomic<uint64_t> audio{0}, video{0};
  };
  auto progress = std::make_shared<Progress>();
  const int64_t t0 = session->NowMs();  // stream time 0 on the session clock (within a ms)
  const auto advance = [progress](int64_t end) {
    int64_t seen = progress->end_ms.load();
    while (end > seen && !progress->end_ms.compare_exchange_weak(seen, end)) {
    }
  };
  AddAudioTap([progress, advance](int64_t t_ms, std::span<const int16_t> pcm) {
    ++progress->audio;
    advance(t_ms + static_cast<int64_t>(pcm.size()) * 1000 / media::kAnalysisRate);
  });
  AddVideoTap([progress, advance](int64_t t_ms, const media::VideoFrame&) {
    ++progress->video;
    advance(t_ms);
  });

  std::string error;
  if (!StartMedia(params, &error)) {
    out.status = Status::kUndecodable;
    out.error = error;
    return out;
  }
  const double max_ms = limits.max_seconds * 1000;
  const size_t chunk = params.media == StartParams::Media::kPcm
                           ? static_cast<size_t>(std::max(params.sample_rate, 8000)) * 2
                           : kWebmChunkBytes;
  // Waits while `busy` holds; false when the analysis must stop (its status set in `out`).
  auto last_change = std::chrono::steady_clock::now();
  std::tuple<size_t, size_t, uint64_t, uint64_t> last_seen{};
  const auto wait_while = [&](const auto& busy) {
    while (true) {
      if (session->state() == State::kEnded) {
        out.status = Status::kEnded;
        return false;
      }
      if (st.ingest->Failed()) return false;  // undecodable: decided from what was decoded
      if (progress->end_ms.load() - t0 > max_ms) {
        out.status = Status::kTooLong;
        return false;
      }
      if (!busy()) return true;
      const std::tuple<size_t, size_t, uint64_t, uint64_t> seen{
          st.ingest->Backlog(), st.hearing->Backlog(), progress->audio.load(),
          progress->video.load()};
      const auto now = std::chrono::steady_clock::now();
      if (seen != last_seen) {
        last_seen = seen;
        last_change = now;
      } else if (now - last_change > limits.stall_timeout) {
        out.status = Status::kStalled;
        return false;
      }
      std::this_thread::sleep_for(kPoll);
    }
  };
  bool fed = true;
  for (size_t offset = 0; offset < bytes.size() && fed; offset += chunk) {
    fed = wait_while([&] {
      return st.ingest->Backlog() > chunk || st.hearing->Backlog() > kMaxUtterancesWaiting;
    });
    if (fed) PushMedia(bytes.substr(offset, chunk));
  }
  // Everything handed over is decoded before the stream ends (Stop's EOS drain is bounded).
  if (fed) wait_while([&] { return st.ingest->Backlog() > 0; });
  const bool failed = st.ingest->Failed();
  StopMedia();
  // The pipeline's last frames drain here (the ingest's own end is idempotent: the
  // conversation's End adds metrics.media from the same totals).
  Json::Value unused;
  st.ingest->End(&unused);
  out.audio_frames = progress->audio.load();
  out.video_frames = progress->video.load();
  out.media_s = static_cast<double>(std::max<int64_t>(0, progress->end_ms.load() - t0)) / 1000;
  session->SetRecordedDuration(out.media_s);
  if (out.status == Status::kAnalysed && out.audio_frames + out.video_frames == 0)
    out.status = Status::kUndecodable;
  if (out.status == Status::kUndecodable || failed) {
    // The decoder's own words: its error went to the timeline as a media_error event.
    for (const auto& e : session->timeline().Take().events)
      if (e["type"].asString() == "media_error") out.error = e["message"].asString();
  }
  return out;
}

}  // namespace parley::session
