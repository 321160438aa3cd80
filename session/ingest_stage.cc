// Ingest: a start message has the stage's strand build the ingest pipeline (frames that arrive
// meanwhile wait in a bounded buffer), binary frames feed it, decoded audio/video go to the
// conversation's sinks, and the pipeline is torn down on stop (on the strand) or at the end
// (the end drains the strand on its own thread, before the report). The service thread never
// touches GStreamer beyond a non-blocking push.
#include "session/internal.h"

namespace parley::session {

void IngestStage::Totals::Add(const media::IngestStats& s) {
  dropped_waiting_keyframe += s.dropped_frames_waiting_keyframe.load();
  audio_samples += s.audio_samples.load();
  video_frames += s.video_frames.load();
  video_skipped += s.video_frames_skipped.load();
  decode_errors += s.decode_errors.load();
  bytes_in += s.bytes_in.load();
}

void IngestStage::Totals::Add(const Totals& t) {
  dropped_waiting_keyframe += t.dropped_waiting_keyframe.load();
  audio_samples += t.audio_samples.load();
  video_frames += t.video_frames.load();
  video_skipped += t.video_skipped.load();
  decode_errors += t.decode_errors.load();
  bytes_in += t.bytes_in.load();
}

IngestStage::IngestStage(std::weak_ptr<Session> session, Services& services, Sinks sinks)
    : session_(std::move(session)),
      services_(services),
      sinks_(std::move(sinks)),
      strand_(services.general()) {}

bool IngestStage::Start(const StartParams& params, std::string* error) {
  const auto session = session_.lock();
  if (!session) {
    *error = "the session has ended";
    return false;
  }
  services_.Preload(params.media == StartParams::Media::kWebm);
  std::weak_ptr<Session> weak = session;
  const int64_t offset_ms = session->NowMs();  // stream time 0 is now on the session clock
  core::Metrics& metrics = services_.metrics();
  core::Logger& log = services_.log();
  media::IngestPipeline::Callbacks cb;
  cb.on_audio = [sinks = sinks_, offset_ms](const media::AudioFrame& f) {
    if (sinks.audio) sinks.audio(offset_ms + f.pts_ms, f.samples);
  };
  cb.on_video = [sinks = sinks_, offset_ms](const media::VideoFrame& f) {
    if (!sinks.video) return;
    media::VideoFrame at = f;
    at.pts_ms = offset_ms + f.pts_ms;
    sinks.video(at.pts_ms, at);
  };
  cb.on_error = [weak, &metrics, &log](const std::string& code, const std::string& message,
                                       bool fatal) {
    const auto sp = weak.lock();
    if (!sp) return;
    metrics
        .GetCounter("parley_errors_total", "Error responses and events by code", {{"code", code}})
        .Add();
    sp->Emit(ErrorEvent{code, message, fatal});
    Json::Value d(Json::objectValue);
    d["code"] = code;
    d["message"] = message;
    sp->timeline().AddEvent(sp->NowMs(), "media_error", d);
    log.Warn("media error", {{"session_id", sp->id()}, {"code", code}, {"error", message}});
  };
  cb.on_event = [weak](const std::string& event) {
    if (const auto sp = weak.lock()) sp->Emit(MediaNotice{event});
  };
  const auto format = params.media == StartParams::Media::kPcm
                          ? media::IngestPipeline::Format::kPcm
                          : media::IngestPipeline::Format::kWebm;
  auto feeder = std::make_shared<Feeder>();
  // A live stream's end waits briefly for what is still decoding; an upload's end waits for
  // every frame (dlib holds the decoder back frame by frame: seconds under a sanitizer). The
  // analysis bounds itself (--upload-stall-timeout).
  media::MediaConfig media_config = services_.config().media;
  if (params.recording) media_config.stop_timeout_ms = 60'000;
  auto build = [&services = services_, weak, feeder, totals = totals_, format,
                rate = params.sample_rate, media_config, cb = std::move(cb)]() mutable {
    {
      const std::lock_guard lock(feeder->mu);
      // Ended before its turn with nothing to decode: no pipeline at all.
      if (feeder->closed && feeder->early.empty()) return;
    }
    std::string why;
    auto pipeline = media::IngestPipeline::Create(format, rate, media_config, std::move(cb),
                                                  services.metrics(), &why);
    std::unique_lock lock(feeder->mu);
    if (!pipeline) {
      feeder->failed = true;
      feeder->early.clear();
      lock.unlock();
      if (const auto sp = weak.lock())
        sp->Emit(ErrorEvent{"pipeline_error", "media could not start: " + why, true});
      services.log().Error("cannot build the ingest pipeline", {{"error", why}});
      return;
    }
    pipeline->SetVideoWanted(feeder->video_wanted);
    // Bytes that came while it was being built go in first, in order.
    for (const auto& bytes : feeder->early) pipeline->Push(bytes);
    feeder->early.clear();
    feeder->early_bytes = 0;
    if (feeder->closed) {  // stopped before it was ready: decode what came, then stop
      lock.unlock();
      pipeline->Stop();
      totals->Add(pipeline->stats());
      return;
    }
    feeder->pipeline = std::move(pipeline);
  };
  {
    const std::lock_guard lock(mu_);
    // A start may race the session's end: once the end has drained, nothing may be built.
    if (ended_) {
      *error = "the session has ended";
      return false;
    }
    started_ever_ = true;
    feeder_ = feeder;
    if (!strand_.Post(std::move(build))) {
      // The pool is full: refuse the start. The queued build sees a closed, empty feeder and
      // builds nothing when its turn comes.
      *error = "the server is busy; retry the start shortly";
      const std::lock_guard flock(feeder->mu);
      feeder->closed = true;
      feeder->early.clear();
      feeder_.reset();
      return false;
    }
  }
  return true;
}

void IngestStage::Push(std::string_view bytes) {
  std::shared_ptr<Feeder> feeder;
  {
    const std::lock_guard lock(mu_);
    feeder = feeder_;
  }
  if (!feeder) return;
  const std::lock_guard lock(feeder->mu);
  if (feeder->closed || feeder->failed) return;
  if (feeder->pipeline) {
    feeder->pipeline->Push(bytes);  // non-blocking
  } else if (feeder->early_bytes + bytes.size() <= services_.config().media.max_backlog_bytes) {
    feeder->early.emplace_back(bytes);
    feeder->early_bytes += bytes.size();
  } else {
    services_.metrics()
        .GetCounter("parley_media_dropped_total", "Inbound media dropped by reason",
                    {{"reason", "overflow"}})
        .Add();
  }
}

void IngestStage::SetVideoWanted(bool wanted) {
  std::shared_ptr<Feeder> feeder;
  {
    const std::lock_guard lock(mu_);
    feeder = feeder_;
  }
  if (!feeder) return;
  const std::lock_guard lock(feeder->mu);
  if (feeder->video_wanted == wanted) return;
  feeder->video_wanted = wanted;
  if (feeder->pipeline) feeder->pipeline->SetVideoWanted(wanted);
}

size_t IngestStage::Backlog() const {
  std::shared_ptr<Feeder> feeder;
  {
    const std::lock_guard lock(mu_);
    feeder = feeder_;
  }
  if (!feeder) return 0;
  const std::lock_guard lock(feeder->mu);
  return feeder->pipeline ? feeder->pipeline->backlog_bytes() : feeder->early_bytes;
}

bool IngestStage::Failed() const {
  std::shared_ptr<Feeder> feeder;
  {
    const std::lock_guard lock(mu_);
    feeder = feeder_;
  }
  if (!feeder) return false;
  const std::lock_guard lock(feeder->mu);
  return feeder->failed || (feeder->pipeline && feeder->pipeline->failed());
}

void IngestStage::Retire() {
  if (!feeder_) return;
  {
    const std::lock_guard lock(feeder_->mu);
    feeder_->closed = true;  // input refused from now on
  }
  // After the build in the strand's order: it either handed the pipeline over or stops it.
  strand_.Post([feeder = std::move(feeder_), totals = totals_, drained = sinks_.drained] {
    std::unique_ptr<media::IngestPipeline> pipeline;
    {
      const std::lock_guard lock(feeder->mu);
      pipeline = std::move(feeder->pipeline);
    }
    if (!pipeline) return;
    pipeline->Stop();
    totals->Add(pipeline->stats());
    if (drained) drained();
  });  // refused by a full pool: runs at the next Post or the end's Drain
}

void IngestStage::Stop() {
  const std::lock_guard lock(mu_);
  Retire();  // Stop() runs on the strand
}

void IngestStage::End(Json::Value* patch) {
  bool started = false;
  {
    const std::lock_guard lock(mu_);
    ended_ = true;
    Retire();
    started = started_ever_;
  }
  // Builds and stops still queued run here, on this thread: waiting for another worker would
  // starve when every worker is ending a session at once (shutdown, a storm of drops).
  strand_.Drain();
  if (started) Summarize(patch);
}

void IngestStage::Summarize(Json::Value* patch) {
  // The finished starts' totals, and the stream still decoding (a checkpoint).
  Totals now;
  now.Add(*totals_);
  {
    const std::lock_guard lock(mu_);
    if (!started_ever_) return;  // never started media: metrics.media stays null
    if (feeder_) {
      const std::lock_guard feeder_lock(feeder_->mu);
      if (feeder_->pipeline) now.Add(feeder_->pipeline->stats());
    }
  }
  Json::Value& m = (*patch)["metrics"]["media"];
  m["audio_seconds"] = static_cast<double>(now.audio_samples.load()) / media::kAnalysisRate;
  m["video_frames"] = static_cast<Json::UInt64>(now.video_frames.load());
  // Not decoded: the client sent its own landmarks, so nothing needed the pictures.
  m["video_frames_not_decoded"] = static_cast<Json::UInt64>(now.video_skipped.load());
  m["decode_errors"] = static_cast<Json::UInt64>(now.decode_errors.load());
  m["bytes_received"] = static_cast<Json::UInt64>(now.bytes_in.load());
  m["dropped_waiting_keyframe"] = static_cast<Json::UInt64>(now.dropped_waiting_keyframe.load());
}

}  // namespace parley::session
