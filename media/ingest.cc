// Ingest: appsrc -> (matroskademux -> opusdec | vp8dec/vp9dec) or raw PCM -> convert/resample
// -> appsinks. Errors arrive through a synchronous bus handler, so no GLib main loop is needed.
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <vector>

#include "media/gst_util.h"
#include "media/media.h"

namespace parley::media {
namespace {

int64_t ToMs(GstClockTime t) {
  return GST_CLOCK_TIME_IS_VALID(t) ? static_cast<int64_t>(t / GST_MSECOND) : -1;
}

}  // namespace

std::string MediaConfig::Validate() const {
  if (analysis_width < 16 || analysis_width > 3840 || analysis_height < 16 ||
      analysis_height > 2160)
    return "analysis size must be within 16x16..3840x2160";
  if (analysis_fps < 1 || analysis_fps > 60) return "analysis frame rate must be 1..60";
  if (audio_frame_ms != 10 && audio_frame_ms != 20) return "audio frames must be 10 or 20 ms";
  if (max_backlog_bytes < 64 * 1024) return "media backlog must be at least 64 KiB";
  if (stop_timeout_ms < 10 || stop_timeout_ms > 60000)
    return "media stop timeout must be 10..60000 ms";
  return {};
}

bool InitGStreamer(std::string* error) {
  static std::once_flag once;
  static bool ok = false;
  static std::string why;
  std::call_once(once, [] {
    GError* err = nullptr;
    if (!gst_init_check(nullptr, nullptr, &err)) {
      why = std::string("GStreamer did not initialise: ") + (err ? err->message : "unknown");
      if (err) g_error_free(err);
      return;
    }
    for (const char* f : {"appsrc", "appsink", "matroskademux", "opusdec", "opusenc", "vp8dec",
                          "vp9dec", "audioconvert", "audioresample", "videoconvert", "videoscale",
                          "queue", "capsfilter", "fakesink"}) {
      GstElementFactory* factory = gst_element_factory_find(f);
      if (factory == nullptr) {
        why = std::string("GStreamer element '") + f +
              "' is missing (install gstreamer1.0-plugins-base and -good)";
        return;
      }
      gst_object_unref(factory);
    }
    ok = true;
  });
  if (!ok && error != nullptr) *error = why;
  return ok;
}

class IngestImpl final : public IngestPipeline {
 public:
  IngestImpl(Format format, int pcm_rate, const MediaConfig& config, Callbacks callbacks,
             core::Metrics& metrics)
      : format_(format),
        pcm_rate_(pcm_rate),
        config_(config),
        cb_(std::move(callbacks)),
        frame_samples_(static_cast<size_t>(kAnalysisRate * config.audio_frame_ms / 1000)),
        audio_seconds_(metrics.GetCounter("parley_media_audio_seconds_total",
                                          "Seconds of audio decoded for analysis")),
        video_frames_(metrics.GetCounter("parley_media_video_frames_total",
                                         "Video frames decoded for analysis")),
        decode_errors_(metrics.GetCounter("parley_media_decode_errors_total",
                                          "Media streams that failed to decode")),
        dropped_overflow_(metrics.GetCounter("parley_media_dropped_total",
                                             "Inbound media dropped by reason",
                                             {{"reason", "overflow"}})),
        dropped_failed_(metrics.GetCounter("parley_media_dropped_total",
                                           "Inbound media dropped by reason",
                                           {{"reason", "pipeline_failed"}})),
        dropped_keyframe_(metrics.GetCounter("parley_media_dropped_total",
                                             "Inbound media dropped by reason",
                                             {{"reason", "waiting_for_keyframe"}})),
        skipped_video_(metrics.GetCounter(
            "parley_media_video_skipped_total",
            "Video frames not decoded: nothing wanted them (the client sends landmarks)")),
        live_pipelines_(LivePipelinesGauge(metrics, "ingest")) {}

  ~IngestImpl() override { Stop(); }

  bool Build(std::string* error) {
    pipeline_.reset(GST_ELEMENT(gst_object_ref_sink(gst_pipeline_new("ingest"))));
    CountWhileAlive(pipeline_.get(), live_pipelines_);
    GstElement* src = MakeElement("appsrc", "src", error);
    if (src == nullptr) return false;
    appsrc_ = src;
    gst_bin_add(GST_BIN(pipeline_.get()), src);
    g_object_set(src, "is-live", TRUE, "block", FALSE, "max-bytes", guint64{0}, "stream-type",
                 GST_APP_STREAM_TYPE_STREAM, nullptr);
    GstBus* bus = gst_element_get_bus(pipeline_.get());
    HandOffToStreamingThreads(this);
    gst_bus_set_sync_handler(bus, &IngestImpl::OnBusMessage, this, nullptr);
    gst_object_unref(bus);

    if (format_ == Format::kWebm) {
      g_object_set(src, "format", GST_FORMAT_BYTES, nullptr);
      GstElement* demux = MakeElement("matroskademux", "demux", error);
      if (demux == nullptr) return false;
      gst_bin_add(GST_BIN(pipeline_.get()), demux);
      if (!gst_element_link(src, demux)) {
        *error = "cannot link appsrc to matroskademux";
        return false;
      }
      g_signal_connect(demux, "pad-added", G_CALLBACK(&IngestImpl::OnDemuxPad), this);
    } else {
      const CapsPtr caps(gst_caps_new_simple("audio/x-raw", "format", G_TYPE_STRING, "S16LE",
                                             "rate", G_TYPE_INT, pcm_rate_, "channels", G_TYPE_INT,
                                             1, "layout", G_TYPE_STRING, "interleaved", nullptr));
      g_object_set(src, "format", GST_FORMAT_TIME, "caps", caps.get(), nullptr);
      GstPad* pad = gst_element_get_static_pad(src, "src");
      const bool ok = BuildAudioBranch(pad, nullptr, error);
      gst_object_unref(pad);
      if (!ok) return false;
    }
    HandOffToStreamingThreads(this);
    if (gst_element_set_state(pipeline_.get(), GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
      *error = "the ingest pipeline refused to start";
      return false;
    }
    return true;
  }

  bool Push(std::string_view bytes) override {
    if (bytes.empty()) return true;
    if (failed_.load() || stopping_.load()) {
      dropped_failed_.Add();
      return false;
    }
    if (gst_app_src_get_current_level_bytes(GST_APP_SRC(appsrc_)) + bytes.size() >
        config_.max_backlog_bytes) {
      dropped_overflow_.Add();
      Fail("media_overflow", "media arrives faster than it can be decoded (backlog over " +
                                 std::to_string(config_.max_backlog_bytes) +
                                 " bytes); media stopped: send stop, then start again");
      return false;
    }
    stats_.bytes_in += bytes.size();
    GstBuffer* buffer = nullptr;
    if (format_ == Format::kPcm) {
      // Raw PCM: whole samples only (a message may split one), timestamps from the count.
      std::string data = std::move(pcm_carry_);
      pcm_carry_.clear();
      data.append(bytes);
      if (data.size() % 2 != 0) {
        pcm_carry_.assign(1, data.back());
        data.pop_back();
      }
      if (data.empty()) return true;
      const uint64_t samples = data.size() / 2;
      CheckPcmRate(samples);
      buffer = gst_buffer_new_memdup(data.data(), data.size());
      GST_BUFFER_PTS(buffer) = gst_util_uint64_scale(pcm_samples_, GST_SECOND, pcm_rate_);
      GST_BUFFER_DURATION(buffer) = gst_util_uint64_scale(samples, GST_SECOND, pcm_rate_);
      pcm_samples_ += samples;
    } else {
      buffer = gst_buffer_new_memdup(bytes.data(), bytes.size());
    }
    HandOffToStreamingThreads(this);
    return gst_app_src_push_buffer(GST_APP_SRC(appsrc_), buffer) == GST_FLOW_OK;
  }

  void Stop() override {
    if (!pipeline_ || stopped_.exchange(true)) return;
    stopping_ = true;
    if (!failed_.load()) {
      gst_app_src_end_of_stream(GST_APP_SRC(appsrc_));
      std::unique_lock lock(mu_);
      eos_cv_.wait_for(lock, std::chrono::milliseconds(config_.stop_timeout_ms),
                       [this] { return eos_ || failed_.load(); });
    }
    // Setting NULL joins the streaming threads; a partial last audio frame is dropped.
    gst_element_set_state(pipeline_.get(), GST_STATE_NULL);
    TakeOverFromStreamingThreads(this);
    GstBus* bus = gst_element_get_bus(pipeline_.get());
    gst_bus_set_sync_handler(bus, nullptr, nullptr, nullptr);
    gst_object_unref(bus);
    pipeline_.reset();
    // Bytes came and nothing decoded, without an error while streaming: the stream stopped
    // inside its header (or before its first frame). The client would otherwise hear nothing.
    if (!failed_.load() && stats_.bytes_in.load() > 0 && stats_.audio_samples.load() == 0 &&
        stats_.video_frames.load() == 0 && stats_.video_frames_skipped.load() == 0 &&
        cb_.on_error) {
      cb_.on_error("no_media_decoded",
                   "the stream ended after " + std::to_string(stats_.bytes_in.load()) +
                       " bytes without a decodable frame (cut inside its header?)",
                   false);
    }
  }

  const IngestStats& stats() const override { return stats_; }
  bool failed() const override { return failed_.load(); }
  void SetVideoWanted(bool wanted) override {
    video_wanted_.store(wanted, std::memory_order_relaxed);
  }

  size_t backlog_bytes() const override {
    return stopping_.load() ? 0 : gst_app_src_get_current_level_bytes(GST_APP_SRC(appsrc_));
  }

 private:
  void Fail(const std::string& code, const std::string& message) {
    if (failed_.exchange(true)) return;
    if (cb_.on_error) cb_.on_error(code, message, true);
    eos_cv_.notify_all();
  }

  // A declared rate that does not match what arrives in real time (48000 declared, 16 kHz
  // sent) would silently stretch the audio: after 5 s, say so once (not fatal: a client may
  // also upload faster than real time on purpose).
  void CheckPcmRate(uint64_t samples) {
    const auto now = std::chrono::steady_clock::now();
    if (pcm_first_push_ == std::chrono::steady_clock::time_point{}) pcm_first_push_ = now;
    const double elapsed = std::chrono::duration<double>(now - pcm_first_push_).count();
    if (rate_warned_ || elapsed < 5.0) return;
    rate_warned_ = true;
    const double observed = static_cast<double>(pcm_samples_ + samples) / elapsed;
    if (observed < 0.6 * pcm_rate_ || observed > 1.7 * pcm_rate_) {
      if (cb_.on_error)
        cb_.on_error("pcm_rate_mismatch",
                     "PCM arrives at about " + std::to_string(static_cast<int>(observed)) +
                         " samples/s but the start message declared " + std::to_string(pcm_rate_) +
                         "; check sample_rate",
                     false);
    }
  }

  void Event(const std::string& e) {
    if (cb_.on_event) cb_.on_event(e);
  }

  static GstBusSyncReply OnBusMessage(GstBus*, GstMessage* msg, gpointer user) {
    auto* self = static_cast<IngestImpl*>(user);
    const StreamingCallback on_streaming_thread(self);
    switch (GST_MESSAGE_TYPE(msg)) {
      case GST_MESSAGE_EOS: {
        const std::lock_guard lock(self->mu_);
        self->eos_ = true;
        self->eos_cv_.notify_all();
        break;
      }
      case GST_MESSAGE_ERROR: {
        GError* err = nullptr;
        gchar* debug = nullptr;
        gst_message_parse_error(msg, &err, &debug);
        const std::string where = GST_OBJECT_NAME(GST_MESSAGE_SRC(msg));
        const std::string text = err != nullptr ? err->message : "unknown error";
        g_clear_error(&err);
        g_free(debug);
        if (!self->stopping_.load()) {
          self->stats_.decode_errors++;
          self->decode_errors_.Add();
          self->Fail("decode_error", "media could not be decoded (" + where + ": " + text +
                                         "); media stopped: send stop, then start again");
        } else {
          // Draining a stream cut short (a header without its end): nothing more will come,
          // and Stop() need not wait for its timeout.
          const std::lock_guard lock(self->mu_);
          self->eos_ = true;
          self->eos_cv_.notify_all();
        }
        break;
      }
      default:
        break;
    }
    // A sync handler that drops a message owns it (gstbus.h). Each message holds a reference
    // to the element that posted it, so a message not unreffed here keeps the whole pipeline,
    // its buses' socketpairs and buffers alive after Stop().
    gst_message_unref(msg);
    return GST_BUS_DROP;
  }

  static void OnDemuxPad(GstElement*, GstPad* pad, gpointer user) {
    auto* self = static_cast<IngestImpl*>(user);
    const StreamingCallback on_streaming_thread(self);
    const CapsPtr caps(gst_pad_get_current_caps(pad));
    const std::string name =
        caps ? gst_structure_get_name(gst_caps_get_structure(caps.get(), 0)) : "";
    std::string error;
    bool ok = false;
    if (name == "audio/x-opus") {
      ok = self->BuildAudioBranch(pad, "opusdec", &error);
    } else if (name == "video/x-vp8") {
      ok = self->BuildVideoBranch(pad, "vp8dec", &error);
    } else if (name == "video/x-vp9") {
      ok = self->BuildVideoBranch(pad, "vp9dec", &error);
    } else {
      // Keep the demuxer flowing, and say what was refused.
      self->LinkToFakesink(pad);
      if (self->cb_.on_error)
        self->cb_.on_error("unsupported_codec",
                           "stream '" + name + "' is not decoded (Parley takes Opus, VP8, VP9)",
                           false);
      return;
    }
    if (!ok) self->Fail("pipeline_error", error);
  }

  void LinkToFakesink(GstPad* pad) {
    GstElement* sink = gst_element_factory_make("fakesink", nullptr);
    g_object_set(sink, "sync", FALSE, "async", FALSE, nullptr);
    gst_bin_add(GST_BIN(pipeline_.get()), sink);
    gst_element_sync_state_with_parent(sink);
    GstPad* sinkpad = gst_element_get_static_pad(sink, "sink");
    gst_pad_link(pad, sinkpad);
    gst_object_unref(sinkpad);
  }

  // Adds `elements` to the pipeline, links them in order after `pad`, starts them.
  bool AddChain(GstPad* pad, const std::vector<GstElement*>& elements, std::string* error) {
    for (GstElement* e : elements) {
      if (e == nullptr) return false;
      gst_bin_add(GST_BIN(pipeline_.get()), e);
    }
    for (size_t i = 0; i + 1 < elements.size(); ++i) {
      if (!gst_element_link(elements[i], elements[i + 1])) {
        *error = std::string("cannot link ") + GST_ELEMENT_NAME(elements[i]) + " to " +
                 GST_ELEMENT_NAME(elements[i + 1]);
        return false;
      }
    }
    for (GstElement* e : elements) gst_element_sync_state_with_parent(e);
    GstPad* sinkpad = gst_element_get_static_pad(elements.front(), "sink");
    const GstPadLinkReturn r = gst_pad_link(pad, sinkpad);
    gst_object_unref(sinkpad);
    if (r != GST_PAD_LINK_OK) {
      *error = "cannot link the stream to its decoder";
      return false;
    }
    return true;
  }

  bool BuildAudioBranch(GstPad* pad, const char* decoder, std::string* error) {
    std::vector<GstElement*> chain{MakeElement("queue", nullptr, error)};
    if (decoder != nullptr) chain.push_back(MakeElement(decoder, nullptr, error));
    chain.push_back(MakeElement("audioconvert", nullptr, error));
    chain.push_back(MakeElement("audioresample", nullptr, error));
    GstElement* filter = MakeElement("capsfilter", nullptr, error);
    GstElement* sink = MakeElement("appsink", "audio_sink", error);
    if (filter == nullptr || sink == nullptr) return false;
    const CapsPtr caps(gst_caps_new_simple("audio/x-raw", "format", G_TYPE_STRING, "S16LE", "rate",
                                           G_TYPE_INT, kAnalysisRate, "channels", G_TYPE_INT, 1,
                                           nullptr));
    g_object_set(filter, "caps", caps.get(), nullptr);
    g_object_set(sink, "sync", FALSE, "async", FALSE, "emit-signals", FALSE, nullptr);
    GstAppSinkCallbacks callbacks{};
    callbacks.new_sample = &IngestImpl::OnAudioSample;
    gst_app_sink_set_callbacks(GST_APP_SINK(sink), &callbacks, this, nullptr);
    chain.push_back(filter);
    chain.push_back(sink);
    if (!AddChain(pad, chain, error)) return false;
    Event("audio_started");
    return true;
  }

  bool BuildVideoBranch(GstPad* pad, const char* decoder, std::string* error) {
    GstElement* queue = MakeElement("queue", nullptr, error);
    GstElement* dec = MakeElement(decoder, nullptr, error);
    GstElement* convert = MakeElement("videoconvert", nullptr, error);
    GstElement* scale = MakeElement("videoscale", nullptr, error);
    GstElement* filter = MakeElement("capsfilter", nullptr, error);
    GstElement* sink = MakeElement("appsink", "video_sink", error);
    if (!queue || !dec || !convert || !scale || !filter || !sink) return false;
    // A late joiner's first frames reference a keyframe it never got: drop them (and say so)
    // rather than let the decoder fail.
    GstPad* qpad = gst_element_get_static_pad(queue, "sink");
    gst_pad_add_probe(qpad, GST_PAD_PROBE_TYPE_BUFFER, &IngestImpl::KeyframeGate, this, nullptr);
    gst_object_unref(qpad);
    // Cap the analysis rate before converting and scaling (videorate asserts on the
    // duration-less frames MediaRecorder produces, and would convert frames it then drops).
    GstPad* decoded = gst_element_get_static_pad(dec, "src");
    gst_pad_add_probe(decoded, GST_PAD_PROBE_TYPE_BUFFER, &IngestImpl::RateGate, this, nullptr);
    gst_object_unref(decoded);
    const CapsPtr caps(gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, "BGR", "width",
                                           GST_TYPE_INT_RANGE, 16, config_.analysis_width, "height",
                                           GST_TYPE_INT_RANGE, 16, config_.analysis_height,
                                           "pixel-aspect-ratio", GST_TYPE_FRACTION, 1, 1, nullptr));
    g_object_set(filter, "caps", caps.get(), nullptr);
    g_object_set(sink, "sync", FALSE, "async", FALSE, "emit-signals", FALSE, nullptr);
    GstAppSinkCallbacks callbacks{};
    callbacks.new_sample = &IngestImpl::OnVideoSample;
    gst_app_sink_set_callbacks(GST_APP_SINK(sink), &callbacks, this, nullptr);
    return AddChain(pad, {queue, dec, convert, scale, filter, sink}, error);
  }

  static GstPadProbeReturn RateGate(GstPad*, GstPadProbeInfo* info, gpointer user) {
    auto* self = static_cast<IngestImpl*>(user);
    const StreamingCallback on_streaming_thread(self);
    const GstClockTime pts = GST_BUFFER_PTS(GST_PAD_PROBE_INFO_BUFFER(info));
    if (!GST_CLOCK_TIME_IS_VALID(pts)) return GST_PAD_PROBE_OK;
    const GstClockTime period = GST_SECOND / static_cast<GstClockTime>(self->config_.analysis_fps);
    // 10% tolerance for timestamp jitter; resync after gaps so a pause does not cause a burst.
    if (self->next_video_due_ != GST_CLOCK_TIME_NONE && pts + period / 10 < self->next_video_due_)
      return GST_PAD_PROBE_DROP;
    self->next_video_due_ =
        (self->next_video_due_ == GST_CLOCK_TIME_NONE || pts > self->next_video_due_ + period)
            ? pts + period
            : self->next_video_due_ + period;
    return GST_PAD_PROBE_OK;
  }

  static GstPadProbeReturn KeyframeGate(GstPad*, GstPadProbeInfo* info, gpointer user) {
    auto* self = static_cast<IngestImpl*>(user);
    const StreamingCallback on_streaming_thread(self);
    if (!self->video_wanted_.load(std::memory_order_relaxed)) {
      // Nobody needs the pictures (the client sends its own landmarks): no decoding at all.
      // When they are wanted again the decoder restarts from a keyframe.
      self->keyframe_seen_ = false;
      self->stats_.video_frames_skipped++;
      self->skipped_video_.Add();
      return GST_PAD_PROBE_DROP;
    }
    if (self->keyframe_seen_) return GST_PAD_PROBE_OK;
    GstBuffer* buffer = GST_PAD_PROBE_INFO_BUFFER(info);
    if (GST_BUFFER_FLAG_IS_SET(buffer, GST_BUFFER_FLAG_DELTA_UNIT)) {
      self->stats_.dropped_frames_waiting_keyframe++;
      self->dropped_keyframe_.Add();
      if (!self->told_waiting_) {
        self->told_waiting_ = true;
        self->Event("waiting_for_keyframe");
      }
      return GST_PAD_PROBE_DROP;
    }
    self->keyframe_seen_ = true;
    if (!self->told_video_started_) {
      self->told_video_started_ = true;
      self->Event("video_started");
    }
    return GST_PAD_PROBE_OK;
  }

  static GstFlowReturn OnAudioSample(GstAppSink* sink, gpointer user) {
    auto* self = static_cast<IngestImpl*>(user);
    const SamplePtr sample(gst_app_sink_pull_sample(sink));
    const StreamingCallback on_streaming_thread(self);
    if (!sample) return GST_FLOW_OK;
    GstBuffer* buffer = gst_sample_get_buffer(sample.get());
    const MappedBuffer map(buffer);
    if (!map.ok()) return GST_FLOW_OK;
    if (self->audio_base_ms_ < 0)
      self->audio_base_ms_ = std::max<int64_t>(0, ToMs(GST_BUFFER_PTS(buffer)));
    const auto* s = reinterpret_cast<const int16_t*>(map.data());
    self->pending_.insert(self->pending_.end(), s, s + map.size() / 2);
    size_t used = 0;
    while (self->pending_.size() - used >= self->frame_samples_) {
      AudioFrame f;
      f.pts_ms = self->audio_base_ms_ +
                 static_cast<int64_t>(self->emitted_samples_ * 1000 / kAnalysisRate);
      f.samples = std::span<const int16_t>(self->pending_.data() + used, self->frame_samples_);
      if (self->cb_.on_audio) self->cb_.on_audio(f);
      used += self->frame_samples_;
      self->emitted_samples_ += self->frame_samples_;
      self->stats_.audio_samples += self->frame_samples_;
      self->audio_seconds_.Add(static_cast<double>(self->frame_samples_) / kAnalysisRate);
    }
    self->pending_.erase(self->pending_.begin(), self->pending_.begin() + static_cast<long>(used));
    return GST_FLOW_OK;
  }

  static GstFlowReturn OnVideoSample(GstAppSink* sink, gpointer user) {
    auto* self = static_cast<IngestImpl*>(user);
    const SamplePtr sample(gst_app_sink_pull_sample(sink));
    const StreamingCallback on_streaming_thread(self);
    if (!sample) return GST_FLOW_OK;
    GstCaps* caps = gst_sample_get_caps(sample.get());
    GstStructure* st = gst_caps_get_structure(caps, 0);
    int width = 0, height = 0;
    gst_structure_get_int(st, "width", &width);
    gst_structure_get_int(st, "height", &height);
    GstBuffer* buffer = gst_sample_get_buffer(sample.get());
    const MappedBuffer map(buffer);
    if (!map.ok() || width <= 0 || height <= 0) return GST_FLOW_OK;
    VideoFrame f;
    f.pts_ms = ToMs(GST_BUFFER_PTS(buffer));
    f.width = width;
    f.height = height;
    f.stride = static_cast<int>(map.size() / static_cast<size_t>(height));  // rows are padded
    f.bgr = map.data();
    self->stats_.video_frames++;
    self->video_frames_.Add();
    if (self->cb_.on_video) self->cb_.on_video(f);
    return GST_FLOW_OK;
  }

  Format format_;
  int pcm_rate_;
  MediaConfig config_;
  Callbacks cb_;
  size_t frame_samples_;
  core::Counter& audio_seconds_;
  core::Counter& video_frames_;
  core::Counter& decode_errors_;
  core::Counter& dropped_overflow_;
  core::Counter& dropped_failed_;
  core::Counter& dropped_keyframe_;
  core::Counter& skipped_video_;
  core::Gauge& live_pipelines_;

  GstPtr<GstElement> pipeline_;
  GstElement* appsrc_ = nullptr;  // owned by the pipeline
  IngestStats stats_;
  std::atomic<bool> failed_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> stopped_{false};
  std::mutex mu_;
  std::condition_variable eos_cv_;
  bool eos_ = false;
  // Push() side (one caller at a time: the service thread).
  std::string pcm_carry_;
  uint64_t pcm_samples_ = 0;
  std::chrono::steady_clock::time_point pcm_first_push_{};
  bool rate_warned_ = false;
  // Streaming-thread side.
  std::vector<int16_t> pending_;
  uint64_t emitted_samples_ = 0;
  int64_t audio_base_ms_ = -1;
  bool keyframe_seen_ = false;
  GstClockTime next_video_due_ = GST_CLOCK_TIME_NONE;
  std::atomic<bool> video_wanted_{true};
  bool told_video_started_ = false;  // streaming thread
  bool told_waiting_ = false;
};

std::unique_ptr<IngestPipeline> IngestPipeline::Create(Format format, int pcm_rate,
                                                       const MediaConfig& config,
                                                       Callbacks callbacks, core::Metrics& metrics,
                                                       std::string* error) {
  if (!InitGStreamer(error)) return nullptr;
  if (format == Format::kPcm && (pcm_rate < 8000 || pcm_rate > 48000)) {
    *error = "PCM sample rate must be 8000..48000";
    return nullptr;
  }
  auto p = std::make_unique<IngestImpl>(format, pcm_rate, config, std::move(callbacks), metrics);
  if (!p->Build(error)) return nullptr;
  return p;
}

}  // namespace parley::media
