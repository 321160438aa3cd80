// Playback: PCM -> appsrc -> audioconvert -> audioresample (48 kHz) -> opusenc -> appsink, then
// a pacing thread that sends each 20 ms packet no earlier than `lead_ms` before it is due.
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "media/gst_util.h"
#include "media/media.h"

namespace parley::media {
namespace {

using Clock = std::chrono::steady_clock;

struct Packet {
  uint16_t utterance;
  uint32_t position;  // 48 kHz samples since the utterance began
  std::string payload;
};

void PutU32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>((v >> shift) & 0xff));
}

}  // namespace

std::string PlaybackConfig::Validate() const {
  if (bitrate < 6000 || bitrate > 256000) return "Opus bitrate must be 6000..256000";
  if (lead_ms < 0 || lead_ms > 1000) return "playback lead must be 0..1000 ms";
  return {};
}

class PlaybackImpl final : public Playback {
 public:
  PlaybackImpl(const PlaybackConfig& config, Sink sink, core::Metrics& metrics)
      : config_(config),
        sink_(std::move(sink)),
        packets_(metrics.GetCounter("parley_playback_packets_total", "Audio packets sent",
                                    {{"codec", config.opus ? "opus" : "pcm"}})),
        cancels_(metrics.GetCounter("parley_playback_cancels_total", "Utterances cancelled")),
        live_pipelines_(LivePipelinesGauge(metrics, "playback")) {
    pacer_ = std::thread([this] { Pace(); });
  }

  ~PlaybackImpl() override {
    {
      const std::lock_guard lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    pacer_.join();
  }

  uint16_t Say(std::span<const int16_t> pcm, int rate) override {
    std::vector<Packet> encoded;
    uint16_t id = next_utterance_.fetch_add(1);
    if (id == 0) id = next_utterance_.fetch_add(1);  // 0 means "not encoded"; skip it on wrap
    if (!Encode(pcm, rate, id, &encoded) || encoded.empty()) return 0;
    {
      const std::lock_guard lock(mu_);
      for (auto& p : encoded) queue_.push_back(std::move(p));
    }
    cv_.notify_all();
    return id;
  }

  int64_t Cancel() override {
    std::lock_guard lock(mu_);
    const int64_t played_ms = static_cast<int64_t>(sent_position_) * 1000 / kPlaybackRate;
    if (!queue_.empty()) cancels_.Add();
    queue_.clear();
    current_.reset();
    sent_position_ = 0;
    return played_ms;
  }

  bool Busy() const override {
    const std::lock_guard lock(mu_);
    return !queue_.empty();
  }

  bool WaitIdle(std::chrono::milliseconds timeout) override {
    std::unique_lock lock(mu_);
    return idle_cv_.wait_for(lock, timeout, [this] { return queue_.empty(); });
  }

 private:
  bool Encode(std::span<const int16_t> pcm, int rate, uint16_t id, std::vector<Packet>* out) {
    std::string error;
    GstPtr<GstElement> pipeline(GST_ELEMENT(gst_object_ref_sink(gst_pipeline_new("playback"))));
    CountWhileAlive(pipeline.get(), live_pipelines_);
    GstElement* src = MakeElement("appsrc", nullptr, &error);
    GstElement* convert = MakeElement("audioconvert", nullptr, &error);
    GstElement* resample = MakeElement("audioresample", nullptr, &error);
    GstElement* filter = MakeElement("capsfilter", nullptr, &error);
    GstElement* enc = config_.opus ? MakeElement("opusenc", nullptr, &error) : nullptr;
    GstElement* sink = MakeElement("appsink", nullptr, &error);
    if (!src || !convert || !resample || !filter || !sink || (config_.opus && !enc)) return false;
    const CapsPtr in_caps(gst_caps_new_simple("audio/x-raw", "format", G_TYPE_STRING, "S16LE",
                                              "rate", G_TYPE_INT, rate, "channels", G_TYPE_INT, 1,
                                              "layout", G_TYPE_STRING, "interleaved", nullptr));
    g_object_set(src, "caps", in_caps.get(), "format", GST_FORMAT_TIME, nullptr);
    const CapsPtr out_caps(gst_caps_new_simple("audio/x-raw", "format", G_TYPE_STRING, "S16LE",
                                               "rate", G_TYPE_INT, kPlaybackRate, "channels",
                                               G_TYPE_INT, 1, nullptr));
    g_object_set(filter, "caps", out_caps.get(), nullptr);
    g_object_set(sink, "sync", FALSE, "emit-signals", FALSE, "max-buffers", 0u, nullptr);
    gst_bin_add_many(GST_BIN(pipeline.get()), src, convert, resample, filter, sink, nullptr);
    bool linked = gst_element_link_many(src, convert, resample, filter, nullptr);
    if (enc != nullptr) {
      g_object_set(enc, "bitrate", config_.bitrate, "frame-size", kPlaybackFrameMs, nullptr);
      gst_bin_add(GST_BIN(pipeline.get()), enc);
      linked = linked && gst_element_link_many(filter, enc, sink, nullptr);
    } else {
      linked = linked && gst_element_link(filter, sink);
    }
    if (!linked) return false;
    gst_element_set_state(pipeline.get(), GST_STATE_PLAYING);
    GstBuffer* buffer = gst_buffer_new_memdup(pcm.data(), pcm.size_bytes());
    GST_BUFFER_PTS(buffer) = 0;
    GST_BUFFER_DURATION(buffer) = gst_util_uint64_scale(pcm.size(), GST_SECOND, rate);
    gst_app_src_push_buffer(GST_APP_SRC(src), buffer);
    gst_app_src_end_of_stream(GST_APP_SRC(src));

    std::string pcm_out;  // PCM mode: re-framed into 20 ms packets
    const size_t frame_bytes = kPlaybackRate * kPlaybackFrameMs / 1000 * 2;
    for (;;) {
      const SamplePtr sample(gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 5 * GST_SECOND));
      if (!sample) break;  // EOS (or a stall: give up rather than hang a worker)
      GstBuffer* b = gst_sample_get_buffer(sample.get());
      const MappedBuffer map(b);
      if (!map.ok()) continue;
      if (enc != nullptr) {
        const GstClockTime pts = GST_BUFFER_PTS(b);
        const uint32_t position =
            GST_CLOCK_TIME_IS_VALID(pts)
                ? static_cast<uint32_t>(gst_util_uint64_scale(pts, kPlaybackRate, GST_SECOND))
                : static_cast<uint32_t>(out->size() * frame_bytes / 2);
        out->push_back(
            {id, position, std::string(reinterpret_cast<const char*>(map.data()), map.size())});
      } else {
        pcm_out.append(reinterpret_cast<const char*>(map.data()), map.size());
      }
    }
    for (size_t off = 0; off < pcm_out.size(); off += frame_bytes) {
      out->push_back({id, static_cast<uint32_t>(off / 2), pcm_out.substr(off, frame_bytes)});
    }
    gst_element_set_state(pipeline.get(), GST_STATE_NULL);
    return true;
  }

  void Pace() {
    std::unique_lock lock(mu_);
    while (!quit_) {
      if (queue_.empty()) {
        idle_cv_.notify_all();
        cv_.wait(lock, [this] { return quit_ || !queue_.empty(); });
        continue;
      }
      Packet& next = queue_.front();
      if (!current_ || *current_ != next.utterance) {
        current_ = next.utterance;
        utterance_start_ = Clock::now();
        sent_position_ = 0;
      }
      const auto due = utterance_start_ +
                       std::chrono::microseconds(static_cast<int64_t>(next.position) * 1'000'000 /
                                                 kPlaybackRate) -
                       std::chrono::milliseconds(config_.lead_ms);
      if (Clock::now() < due) {
        cv_.wait_until(lock, due);  // woken early by Cancel/quit: re-check
        continue;
      }
      Packet p = std::move(next);
      queue_.pop_front();
      std::string packet;
      packet.reserve(kPacketHeaderBytes + p.payload.size());
      packet.push_back(static_cast<char>(config_.opus ? 0x10 : 0x11));
      PutU32(packet, seq_++);
      PutU32(packet, p.position);
      packet.push_back(static_cast<char>(p.utterance >> 8));
      packet.push_back(static_cast<char>(p.utterance & 0xff));
      packet += p.payload;
      const uint32_t frame_samples = config_.opus ? kPlaybackRate * kPlaybackFrameMs / 1000
                                                  : static_cast<uint32_t>(p.payload.size() / 2);
      sent_position_ = p.position + frame_samples;
      lock.unlock();
      sink_(std::move(packet));
      packets_.Add();
      lock.lock();
    }
  }

  PlaybackConfig config_;
  Sink sink_;
  core::Counter& packets_;
  core::Counter& cancels_;
  core::Gauge& live_pipelines_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<Packet> queue_;
  std::optional<uint16_t> current_;
  Clock::time_point utterance_start_;
  uint32_t sent_position_ = 0;
  uint32_t seq_ = 0;
  std::atomic<uint16_t> next_utterance_{1};
  bool quit_ = false;
  std::thread pacer_;
};

std::unique_ptr<Playback> Playback::Create(const PlaybackConfig& config, Sink sink,
                                           core::Metrics& metrics, std::string* error) {
  if (!InitGStreamer(error)) return nullptr;
  if (const std::string why = config.Validate(); !why.empty()) {
    *error = why;
    return nullptr;
  }
  return std::make_unique<PlaybackImpl>(config, std::move(sink), metrics);
}

}  // namespace parley::media
