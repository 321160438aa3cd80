// Playback: each utterance is encoded by its own streaming pipeline (appsrc -> audioconvert ->
// audioresample 48 kHz -> [opusenc] -> appsink) as its audio is appended; its packets queue on
// the session's channel of the one shared Pacer, whose thread sends each 20 ms packet no
// earlier than `lead_ms` before it is due.
#include <algorithm>
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

constexpr uint32_t kFrameSamples = kPlaybackRate * kPlaybackFrameMs / 1000;

void PutU32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>((v >> shift) & 0xff));
}

std::chrono::microseconds SamplesToTime(uint64_t samples) {
  return std::chrono::microseconds(static_cast<int64_t>(samples * 1'000'000 / kPlaybackRate));
}

int64_t Ms(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

struct Packet {
  uint32_t position;  // 48 kHz samples since the utterance began
  uint32_t samples;   // its length in samples
  std::string payload;
};

// One utterance in a channel's queue. Guarded by the pacer's mutex.
struct Utterance {
  explicit Utterance(uint16_t utterance_id) : id(utterance_id) {}
  const uint16_t id;
  std::deque<Packet> packets;
  bool finished = false;    // the writer is done and its encoder drained: no more packets
  bool cancelled = false;   // dropped by Cancel(): later packets are discarded
  bool started = false;     // its first packet was sent
  Clock::time_point start;  // when position 0 plays (moved on by pauses and stalls)
  uint32_t sent_end = 0;    // position after the last packet sent
};

}  // namespace

std::string PlaybackConfig::Validate() const {
  if (bitrate < 6000 || bitrate > 256000) return "Opus bitrate must be 6000..256000";
  if (lead_ms < 0 || lead_ms > 1000) return "playback lead must be 0..1000 ms";
  return {};
}

uint16_t Playback::Say(std::span<const int16_t> pcm, int rate) {
  auto writer = Begin();
  if (!writer || !writer->Append(pcm, rate)) return 0;
  writer->Finish();
  return writer->utterance();
}

// ---- The shared pacer --------------------------------------------------------------------------

struct Channel {
  PlaybackConfig config;
  std::shared_ptr<const Playback::Callbacks> callbacks;
  core::Counter* packets = nullptr;
  std::deque<std::shared_ptr<Utterance>> queue;  // front: playing (or next to play)
  uint32_t seq = 0;
  bool paused = false;
  Clock::time_point paused_at;
  int open_writers = 0;
};

class PacerImpl final : public Pacer, public std::enable_shared_from_this<PacerImpl> {
 public:
  explicit PacerImpl(core::Metrics& metrics)
      : late_(metrics.GetCounter("parley_playback_stalls_total",
                                 "Times an utterance's next packet came too late to play on "
                                 "time (its timing restarts from then)")) {
    thread_ = std::thread([this] {
      core::NameThisThread("pacer");
      Run();
    });
  }
  ~PacerImpl() override {
    {
      const std::lock_guard lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  size_t channels() const override {
    const std::lock_guard lock(mu_);
    return channels_.size();
  }

  void Register(Channel* ch) {
    const std::lock_guard lock(mu_);
    channels_.push_back(ch);
  }
  // Returns once the pacer is not calling into `ch` (unless called from the pacer itself).
  void Unregister(Channel* ch) {
    std::unique_lock lock(mu_);
    std::erase(channels_, ch);
    if (std::this_thread::get_id() != thread_.get_id())
      dispatched_.wait(lock, [&] { return dispatching_ != ch; });
  }

  std::mutex& mu() { return mu_; }
  void Wake() { cv_.notify_all(); }
  std::condition_variable& idle() { return idle_; }

  // Milliseconds of `u` played by now (real time since its first packet, as the client hears).
  static int64_t PlayedMs(const Channel& ch, const Utterance& u, Clock::time_point now) {
    if (!u.started) return 0;
    const auto at = ch.paused ? ch.paused_at : now;
    const int64_t elapsed = std::max<int64_t>(0, Ms(at - u.start));
    return std::min<int64_t>(elapsed, Ms(SamplesToTime(u.sent_end)));
  }

 private:
  struct Send {
    std::shared_ptr<const Playback::Callbacks> callbacks;
    core::Counter* packets;
    std::string packet;
    std::optional<PlaybackEvent> event;  // instead of a packet
  };

  void Run() {
    std::unique_lock lock(mu_);
    while (!quit_) {
      const auto now = Clock::now();
      std::optional<Clock::time_point> next;
      for (Channel* ch : channels_) {
        std::vector<Send> out;
        Collect(*ch, now, &out, &next);
        if (out.empty()) continue;
        // Calls happen outside the lock, one channel at a time, so Unregister can wait them out.
        dispatching_ = ch;
        lock.unlock();
        for (auto& s : out) {
          if (s.event) {
            if (s.callbacks->on_event) s.callbacks->on_event(*s.event);
          } else {
            s.callbacks->sink(std::move(s.packet));
            s.packets->Add();
          }
        }
        lock.lock();
        dispatching_ = nullptr;
        dispatched_.notify_all();
        next = now;  // the channel list may have changed: look again at once
        break;
      }
      if (next && *next <= now) continue;
      if (next)
        cv_.wait_until(lock, *next);
      else
        cv_.wait(lock);
    }
  }

  // Under mu_: the packets (and events) of `ch` due by `now`; `next` gets its next due time.
  void Collect(Channel& ch, Clock::time_point now, std::vector<Send>* out,
               std::optional<Clock::time_point>* next) {
    const auto lead = std::chrono::milliseconds(ch.config.lead_ms);
    while (!ch.paused && !ch.queue.empty()) {
      Utterance& u = *ch.queue.front();
      if (u.packets.empty()) {
        if (!u.finished) return;  // the encoder has more to come
        if (u.started)
          out->push_back(
              {ch.callbacks,
               ch.packets,
               {},
               PlaybackEvent{PlaybackEvent::Kind::kEnded, u.id, Ms(SamplesToTime(u.sent_end))}});
        ch.queue.pop_front();
        idle_.notify_all();
        continue;
      }
      Packet& p = u.packets.front();
      if (!u.started) {
        u.started = true;
        u.start = now;
        out->push_back(
            {ch.callbacks, ch.packets, {}, PlaybackEvent{PlaybackEvent::Kind::kStarted, u.id, 0}});
      }
      auto plays_at = u.start + SamplesToTime(p.position);
      // The encoder fell behind (the next sentence was still being synthesized): the client
      // has run dry, so this packet plays when it arrives; timing restarts from it.
      if (now > plays_at + std::chrono::milliseconds(kPlaybackFrameMs)) {
        u.start += now - plays_at;
        plays_at = now;
        late_.Add();
      }
      const auto due = plays_at - lead;
      if (due > now) {
        if (!*next || due < **next) *next = due;
        return;
      }
      std::string packet;
      packet.reserve(kPacketHeaderBytes + p.payload.size());
      packet.push_back(static_cast<char>(ch.config.opus ? 0x10 : 0x11));
      PutU32(packet, ch.seq++);
      PutU32(packet, p.position);
      packet.push_back(static_cast<char>(u.id >> 8));
      packet.push_back(static_cast<char>(u.id & 0xff));
      packet += p.payload;
      u.sent_end = p.position + p.samples;
      u.packets.pop_front();
      out->push_back({ch.callbacks, ch.packets, std::move(packet), std::nullopt});
    }
  }

  core::Counter& late_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_;        // an utterance left a queue
  std::condition_variable dispatched_;  // the pacer stopped calling into a channel
  std::vector<Channel*> channels_;
  Channel* dispatching_ = nullptr;
  bool quit_ = false;
  std::thread thread_;
};

std::shared_ptr<Pacer> Pacer::Create(core::Metrics& metrics) {
  return std::make_shared<PacerImpl>(metrics);
}

// ---- An utterance's encoder --------------------------------------------------------------------

class WriterImpl final : public Playback::Writer {
 public:
  WriterImpl(std::shared_ptr<PacerImpl> pacer, std::shared_ptr<Channel> channel,
             std::shared_ptr<Utterance> u, core::Gauge& live_pipelines)
      : pacer_(std::move(pacer)),
        channel_(std::move(channel)),
        utterance_(std::move(u)),
        live_pipelines_(live_pipelines),
        opus_(channel_->config.opus),
        bitrate_(channel_->config.bitrate) {}

  ~WriterImpl() override {
    Teardown();
    const std::lock_guard lock(pacer_->mu());
    utterance_->finished = true;  // whatever was queued plays; nothing more comes
    --channel_->open_writers;
    pacer_->Wake();
    pacer_->idle().notify_all();
  }

  uint16_t utterance() const override { return utterance_->id; }

  bool cancelled() const override {
    const std::lock_guard lock(pacer_->mu());
    return utterance_->cancelled;
  }

  bool Append(std::span<const int16_t> pcm, int rate) override {
    if (cancelled() || finished_ || rate < 8000 || rate > 192000) return false;
    if (pcm.empty()) return true;
    if (!pipeline_ && !Build(rate)) return false;
    if (rate != rate_) {  // another engine's rate mid-utterance: new caps, same stream
      rate_ = rate;
      const CapsPtr caps(InputCaps(rate));
      g_object_set(src_, "caps", caps.get(), nullptr);
    }
    GstBuffer* buffer = gst_buffer_new_memdup(pcm.data(), pcm.size_bytes());
    const GstClockTime duration = gst_util_uint64_scale(pcm.size(), GST_SECOND, rate);
    GST_BUFFER_PTS(buffer) = pts_;
    GST_BUFFER_DURATION(buffer) = duration;
    pts_ += duration;
    HandOffToStreamingThreads(this);
    return gst_app_src_push_buffer(GST_APP_SRC(src_), buffer) == GST_FLOW_OK;
  }

  void Finish() override {
    if (finished_) return;
    finished_ = true;
    if (!pipeline_) {
      const std::lock_guard lock(pacer_->mu());
      utterance_->finished = true;
      pacer_->Wake();
      return;
    }
    gst_app_src_end_of_stream(GST_APP_SRC(src_));
    std::unique_lock lock(eos_mu_);
    eos_cv_.wait_for(lock, std::chrono::seconds(10), [this] { return eos_; });
    lock.unlock();
    FlushPcm();
    const std::lock_guard pacer_lock(pacer_->mu());
    utterance_->finished = true;
    pacer_->Wake();
  }

 private:
  static GstCaps* InputCaps(int rate) {
    return gst_caps_new_simple("audio/x-raw", "format", G_TYPE_STRING, "S16LE", "rate", G_TYPE_INT,
                               rate, "channels", G_TYPE_INT, 1, "layout", G_TYPE_STRING,
                               "interleaved", nullptr);
  }

  bool Build(int rate) {
    std::string error;
    pipeline_.reset(GST_ELEMENT(gst_object_ref_sink(gst_pipeline_new("playback"))));
    CountWhileAlive(pipeline_.get(), live_pipelines_);
    GstElement* src = MakeElement("appsrc", nullptr, &error);
    GstElement* convert = MakeElement("audioconvert", nullptr, &error);
    GstElement* resample = MakeElement("audioresample", nullptr, &error);
    GstElement* filter = MakeElement("capsfilter", nullptr, &error);
    GstElement* enc = opus_ ? MakeElement("opusenc", nullptr, &error) : nullptr;
    GstElement* sink = MakeElement("appsink", nullptr, &error);
    if (!src || !convert || !resample || !filter || !sink || (opus_ && !enc)) {
      for (GstElement* e : {src, convert, resample, filter, enc, sink})
        if (e != nullptr) gst_object_unref(gst_object_ref_sink(e));
      pipeline_.reset();
      return false;
    }
    rate_ = rate;
    const CapsPtr in_caps(InputCaps(rate));
    g_object_set(src, "caps", in_caps.get(), "format", GST_FORMAT_TIME, "max-bytes", guint64{0},
                 nullptr);
    const CapsPtr out_caps(gst_caps_new_simple("audio/x-raw", "format", G_TYPE_STRING, "S16LE",
                                               "rate", G_TYPE_INT, kPlaybackRate, "channels",
                                               G_TYPE_INT, 1, nullptr));
    g_object_set(filter, "caps", out_caps.get(), nullptr);
    g_object_set(sink, "sync", FALSE, "emit-signals", FALSE, "max-buffers", 0u, nullptr);
    GstAppSinkCallbacks callbacks{};
    callbacks.new_sample = &WriterImpl::OnSample;
    callbacks.eos = &WriterImpl::OnEos;
    gst_app_sink_set_callbacks(GST_APP_SINK(sink), &callbacks, this, nullptr);
    gst_bin_add_many(GST_BIN(pipeline_.get()), src, convert, resample, filter, sink, nullptr);
    bool linked = gst_element_link_many(src, convert, resample, filter, nullptr);
    if (enc != nullptr) {
      g_object_set(enc, "bitrate", bitrate_, "frame-size", kPlaybackFrameMs, nullptr);
      gst_bin_add(GST_BIN(pipeline_.get()), enc);
      linked = linked && gst_element_link_many(filter, enc, sink, nullptr);
    } else {
      linked = linked && gst_element_link(filter, sink);
    }
    HandOffToStreamingThreads(this);
    if (!linked ||
        gst_element_set_state(pipeline_.get(), GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
      pipeline_.reset();
      return false;
    }
    src_ = src;
    return true;
  }

  void Teardown() {
    if (!pipeline_) return;
    gst_element_set_state(pipeline_.get(), GST_STATE_NULL);  // joins the streaming thread
    TakeOverFromStreamingThreads(this);
    pipeline_.reset();
  }

  // Streaming thread: encoded (or resampled) audio to the utterance's queue.
  static GstFlowReturn OnSample(GstAppSink* sink, gpointer user) {
    auto* self = static_cast<WriterImpl*>(user);
    const SamplePtr sample(gst_app_sink_pull_sample(sink));
    const StreamingCallback on_streaming_thread(self);
    if (!sample) return GST_FLOW_OK;
    GstBuffer* b = gst_sample_get_buffer(sample.get());
    const MappedBuffer map(b);
    if (!map.ok()) return GST_FLOW_OK;
    if (self->opus_) {
      // Every packet is one 20 ms frame of the one stream (opusenc's own timestamps are offset
      // by its look-ahead on the first frame).
      const uint32_t position = self->opus_position_;
      self->opus_position_ += kFrameSamples;
      self->Queue({position, kFrameSamples,
                   std::string(reinterpret_cast<const char*>(map.data()), map.size())});
      return GST_FLOW_OK;
    }
    // PCM: re-framed into 20 ms packets.
    self->pcm_carry_.append(reinterpret_cast<const char*>(map.data()), map.size());
    constexpr size_t kFrameBytes = kFrameSamples * 2;
    size_t off = 0;
    for (; self->pcm_carry_.size() - off >= kFrameBytes; off += kFrameBytes) {
      self->Queue({self->pcm_position_, kFrameSamples, self->pcm_carry_.substr(off, kFrameBytes)});
      self->pcm_position_ += kFrameSamples;
    }
    self->pcm_carry_.erase(0, off);
    return GST_FLOW_OK;
  }

  static void OnEos(GstAppSink*, gpointer user) {
    auto* self = static_cast<WriterImpl*>(user);
    const StreamingCallback on_streaming_thread(self);
    const std::lock_guard lock(self->eos_mu_);
    self->eos_ = true;
    self->eos_cv_.notify_all();
  }

  void FlushPcm() {  // the last, shorter PCM frame
    if (opus_ || pcm_carry_.size() < 2) return;
    const auto samples = static_cast<uint32_t>(pcm_carry_.size() / 2);
    Queue({pcm_position_, samples, pcm_carry_.substr(0, samples * 2)});
    pcm_position_ += samples;
    pcm_carry_.clear();
  }

  void Queue(Packet p) {
    const std::lock_guard lock(pacer_->mu());
    if (utterance_->cancelled) return;
    utterance_->packets.push_back(std::move(p));
    pacer_->Wake();
  }

  std::shared_ptr<PacerImpl> pacer_;
  std::shared_ptr<Channel> channel_;  // shared: a writer may outlive its Playback
  std::shared_ptr<Utterance> utterance_;
  core::Gauge& live_pipelines_;
  const bool opus_;
  const int bitrate_;
  GstPtr<GstElement> pipeline_;
  GstElement* src_ = nullptr;  // owned by the pipeline
  int rate_ = 0;
  GstClockTime pts_ = 0;
  bool finished_ = false;
  std::mutex eos_mu_;
  std::condition_variable eos_cv_;
  bool eos_ = false;
  // Streaming-thread side.
  uint32_t opus_position_ = 0;
  std::string pcm_carry_;
  uint32_t pcm_position_ = 0;
};

// ---- A session's playback ----------------------------------------------------------------------

class PlaybackImpl final : public Playback {
 public:
  PlaybackImpl(const PlaybackConfig& config, std::shared_ptr<PacerImpl> pacer, Callbacks cb,
               core::Metrics& metrics)
      : pacer_(std::move(pacer)),
        cancels_(metrics.GetCounter("parley_playback_cancels_total", "Utterances cancelled")),
        live_pipelines_(LivePipelinesGauge(metrics, "playback")) {
    channel_->config = config;
    channel_->callbacks = std::make_shared<const Callbacks>(std::move(cb));
    channel_->packets = &metrics.GetCounter("parley_playback_packets_total", "Audio packets sent",
                                            {{"codec", config.opus ? "opus" : "pcm"}});
    pacer_->Register(channel_.get());
  }

  ~PlaybackImpl() override {
    Cancel();
    pacer_->Unregister(channel_.get());
  }

  std::unique_ptr<Writer> Begin() override {
    uint16_t id = next_utterance_++;
    if (id == 0) id = next_utterance_++;  // 0 means "none"; skip it on wrap
    auto u = std::make_shared<Utterance>(id);
    {
      const std::lock_guard lock(pacer_->mu());
      channel_->queue.push_back(u);
      ++channel_->open_writers;
    }
    return std::make_unique<WriterImpl>(pacer_, channel_, std::move(u), live_pipelines_);
  }

  void Pause() override {
    std::optional<PlaybackEvent> event;
    {
      const std::lock_guard lock(pacer_->mu());
      if (channel_->paused) return;
      channel_->paused = true;
      channel_->paused_at = Clock::now();
      if (!channel_->queue.empty() && channel_->queue.front()->started) {
        const Utterance& u = *channel_->queue.front();
        event = PlaybackEvent{PlaybackEvent::Kind::kPaused, u.id,
                              PacerImpl::PlayedMs(*channel_, u, channel_->paused_at)};
      }
    }
    if (event && channel_->callbacks->on_event) channel_->callbacks->on_event(*event);
  }

  void Resume() override {
    std::optional<PlaybackEvent> event;
    {
      const std::lock_guard lock(pacer_->mu());
      if (!channel_->paused) return;
      const auto now = Clock::now();
      if (!channel_->queue.empty() && channel_->queue.front()->started) {
        Utterance& u = *channel_->queue.front();
        event = PlaybackEvent{PlaybackEvent::Kind::kResumed, u.id,
                              PacerImpl::PlayedMs(*channel_, u, channel_->paused_at)};
        u.start += now - channel_->paused_at;  // it continues where it paused
      }
      channel_->paused = false;
      pacer_->Wake();
    }
    if (event && channel_->callbacks->on_event) channel_->callbacks->on_event(*event);
  }

  int64_t Cancel() override {
    std::optional<PlaybackEvent> event;
    {
      const std::lock_guard lock(pacer_->mu());
      if (!channel_->queue.empty()) {
        const Utterance& u = *channel_->queue.front();
        event = PlaybackEvent{PlaybackEvent::Kind::kCancelled, u.id,
                              PacerImpl::PlayedMs(*channel_, u, Clock::now())};
        cancels_.Add();
      }
      for (auto& u : channel_->queue) {
        u->cancelled = true;
        u->packets.clear();
      }
      channel_->queue.clear();
      channel_->paused = false;
      pacer_->idle().notify_all();
    }
    if (event && channel_->callbacks->on_event) channel_->callbacks->on_event(*event);
    return event ? event->played_ms : 0;
  }

  bool paused() const override {
    const std::lock_guard lock(pacer_->mu());
    return channel_->paused;
  }

  bool Busy() const override {
    const std::lock_guard lock(pacer_->mu());
    return !channel_->queue.empty();
  }

  bool WaitIdle(std::chrono::milliseconds timeout) override {
    std::unique_lock lock(pacer_->mu());
    return pacer_->idle().wait_for(lock, timeout, [this] { return channel_->queue.empty(); });
  }

  uint16_t current() const override {
    const std::lock_guard lock(pacer_->mu());
    return channel_->queue.empty() ? 0 : channel_->queue.front()->id;
  }

  int64_t played_ms() const override {
    const std::lock_guard lock(pacer_->mu());
    if (channel_->queue.empty()) return 0;
    return PacerImpl::PlayedMs(*channel_, *channel_->queue.front(), Clock::now());
  }

 private:
  std::shared_ptr<PacerImpl> pacer_;
  core::Counter& cancels_;
  core::Gauge& live_pipelines_;
  std::shared_ptr<Channel> channel_ = std::make_shared<Channel>();  // the pacer's mutex guards it
  std::atomic<uint16_t> next_utterance_{1};
};

std::unique_ptr<Playback> Playback::Create(const PlaybackConfig& config,
                                           std::shared_ptr<Pacer> pacer, Callbacks callbacks,
                                           core::Metrics& metrics, std::string* error) {
  if (!InitGStreamer(error)) return nullptr;
  if (const std::string why = config.Validate(); !why.empty()) {
    *error = why;
    return nullptr;
  }
  auto impl = std::dynamic_pointer_cast<PacerImpl>(pacer);
  if (!impl || !callbacks.sink) {
    *error = "playback needs the shared pacer and a sink";
    return nullptr;
  }
  return std::make_unique<PlaybackImpl>(config, std::move(impl), std::move(callbacks), metrics);
}

std::string EncodeOggOpus(std::span<const int16_t> pcm, int rate, int bitrate, std::string* error) {
  if (!InitGStreamer(error)) return {};
  if (pcm.empty() || rate < 8000 || rate > 192000) {
    *error = "no audio to encode";
    return {};
  }
  GError* gerr = nullptr;
  const std::string description =
      "appsrc name=src format=time caps=audio/x-raw,format=S16LE,channels=1,layout=interleaved,"
      "rate=" +
      std::to_string(rate) +
      " ! audioconvert ! audioresample ! audio/x-raw,rate=48000 ! opusenc bitrate=" +
      std::to_string(bitrate) + " ! oggmux ! appsink name=sink sync=false";
  GstPtr<GstElement> pipeline(gst_parse_launch(description.c_str(), &gerr));
  if (gerr != nullptr) {
    *error = std::string("cannot build the Ogg Opus encoder: ") + gerr->message;
    g_error_free(gerr);
    return {};
  }
  GstPtr<GstElement> src(gst_bin_get_by_name(GST_BIN(pipeline.get()), "src"));
  GstPtr<GstElement> sink(gst_bin_get_by_name(GST_BIN(pipeline.get()), "sink"));
  gst_element_set_state(pipeline.get(), GST_STATE_PLAYING);
  GstBuffer* buffer = gst_buffer_new_memdup(pcm.data(), pcm.size_bytes());
  GST_BUFFER_PTS(buffer) = 0;
  GST_BUFFER_DURATION(buffer) = gst_util_uint64_scale(pcm.size(), GST_SECOND, rate);
  gst_app_src_push_buffer(GST_APP_SRC(src.get()), buffer);
  gst_app_src_end_of_stream(GST_APP_SRC(src.get()));
  std::string out;
  for (;;) {
    const SamplePtr sample(gst_app_sink_try_pull_sample(GST_APP_SINK(sink.get()), 10 * GST_SECOND));
    if (!sample) break;  // EOS
    const MappedBuffer map(gst_sample_get_buffer(sample.get()));
    if (map.ok()) out.append(reinterpret_cast<const char*>(map.data()), map.size());
  }
  gst_element_set_state(pipeline.get(), GST_STATE_NULL);
  if (out.empty()) *error = "the Ogg Opus encoder produced nothing";
  return out;
}

}  // namespace parley::media
