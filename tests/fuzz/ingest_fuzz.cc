// Media chunks from a client (0x01 WebM, 0x02 PCM) through the real ingest pipeline
// (GStreamer: matroskademux, Opus/Vorbis/VP8/VP9 decoders, resampling). The first byte picks
// WebM or PCM and its rate, the next one seeds the chunking. Whatever arrives, the pipeline stops
// in bounded time, every audio frame it delivers is exactly audio_frame_ms of 16 kHz, every
// video frame fits the analysis box, and a failure is said with a code.
// GStreamer's own code is not instrumented: coverage guides only Parley's side of the pipeline,
// and each input builds a pipeline (milliseconds), so this target runs far fewer inputs.
#include <atomic>
#include <string>

#include "core/core.h"
#include "media/media.h"
#include "tests/fuzz/fuzz.h"

using namespace parley;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::string error;
  if (!media::InitGStreamer(&error)) {
    std::fprintf(stderr, "GStreamer: %s\n", error.c_str());
    std::abort();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static core::Metrics metrics;
  static const media::MediaConfig config = [] {
    media::MediaConfig c;
    c.stop_timeout_ms = 500;
    return c;
  }();
  constexpr int kRates[] = {8000, 16000, 22050, 44100, 48000};
  fuzz::FuzzInput in(data, size);
  const uint8_t mode = in.Byte();
  const bool pcm = (mode & 1) != 0;
  const int rate = kRates[(mode >> 1) % 5];
  const size_t samples_per_frame = media::kAnalysisRate * config.audio_frame_ms / 1000;
  std::atomic<bool> bad_audio{false}, bad_video{false}, bad_error{false};
  media::IngestPipeline::Callbacks callbacks;
  callbacks.on_audio = [&](const media::AudioFrame& f) {
    if (f.samples.size() != samples_per_frame || f.pts_ms < 0) bad_audio = true;
  };
  callbacks.on_video = [&](const media::VideoFrame& f) {
    if (f.width < 1 || f.height < 1 || f.width > config.analysis_width ||
        f.height > config.analysis_height || f.stride < 3 * f.width || f.bgr == nullptr)
      bad_video = true;
  };
  callbacks.on_error = [&](const std::string& code, const std::string& message, bool) {
    if (code.empty() || message.empty()) bad_error = true;
  };
  std::string error;
  auto pipeline = media::IngestPipeline::Create(
      pcm ? media::IngestPipeline::Format::kPcm : media::IngestPipeline::Format::kWebm, rate,
      config, callbacks, metrics, &error);
  PARLEY_FUZZ_CHECK(pipeline != nullptr);
  uint32_t state = in.Byte();
  for (std::string_view stream = in.Rest(); !stream.empty();) {
    state = state * 1103515245U + 12345U;
    const size_t chunk = std::min<size_t>(stream.size(), 1 + (state >> 16) % 4096);
    pipeline->Push(stream.substr(0, chunk));
    stream.remove_prefix(chunk);
  }
  pipeline->Stop();
  PARLEY_FUZZ_CHECK(!bad_audio && !bad_video && !bad_error);
  return 0;
}
