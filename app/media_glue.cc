// Wiring between sessions and media/: a session's start message has its media strand build
// the ingest pipeline (frames that arrive meanwhile wait in a bounded buffer), binary frames
// feed it, decoded audio/video go to the session's consumers, and the pipeline is torn down on
// stop (on the strand) or at the end (the end drains the strand on its own thread, before the
// report). The service thread never touches GStreamer beyond a non-blocking push.
#include <optional>

#include "app/app_impl.h"

namespace parley::app {

void App::Impl::AttachMedia() {
  registry.AddStartHook([this](Session& s, const StartParams& p, std::string* error) {
    return StartMedia(s, p, error);
  });
  registry.AddStopHook([this](Session& s) { StopMedia(s); });
  registry.AddEndHook([this](Session& s) { EndMedia(s); });
}

bool App::Impl::StartMedia(Session& s, const StartParams& params, std::string* error) {
  const auto session = registry.Find(s.id());
  if (!session) {
    *error = "the session has ended";
    return false;
  }
  std::weak_ptr<Session> weak = session;
  const int64_t offset_ms = s.NowMs();  // stream time 0 is now on the session clock
  media::IngestPipeline::Callbacks cb;
  cb.on_audio = [weak, offset_ms](const media::AudioFrame& f) {
    if (const auto sp = weak.lock()) sp->DeliverAudio(offset_ms + f.pts_ms, f.samples);
  };
  cb.on_video = [weak, offset_ms](const media::VideoFrame& f) {
    if (const auto sp = weak.lock())
      sp->DeliverVideo(offset_ms + f.pts_ms, f.width, f.height, f.stride, f.bgr);
  };
  cb.on_error = [weak, this](const std::string& code, const std::string& message, bool fatal) {
    const auto sp = weak.lock();
    if (!sp) return;
    metrics
        .GetCounter("parley_errors_total", "Error responses and events by code", {{"code", code}})
        .Add();
    Json::Value e(Json::objectValue);
    e["type"] = "error";
    e["error"]["code"] = code;
    e["error"]["message"] = message;
    e["error"]["fatal"] = fatal;
    sp->Emit(e);
    Json::Value d(Json::objectValue);
    d["code"] = code;
    d["message"] = message;
    sp->timeline().AddEvent(sp->NowMs(), "media_error", d);
    log.Warn("media error", {{"session_id", sp->id()}, {"code", code}, {"error", message}});
  };
  cb.on_event = [weak](const std::string& event) {
    const auto sp = weak.lock();
    if (!sp) return;
    Json::Value e(Json::objectValue);
    e["type"] = "media";
    e["event"] = event;
    sp->Emit(e);
  };
  const auto format = params.media == "pcm" ? media::IngestPipeline::Format::kPcm
                                            : media::IngestPipeline::Format::kWebm;
  auto feeder = std::make_shared<Feeder>();
  auto build = [this, weak, feeder, format, rate = params.sample_rate,
                cb = std::move(cb)](const std::shared_ptr<MediaTotals>& totals) mutable {
    {
      const std::lock_guard lock(feeder->mu);
      // Ended before its turn with nothing to decode: no pipeline at all.
      if (feeder->closed && feeder->early.empty()) return;
    }
    std::string why;
    auto pipeline =
        media::IngestPipeline::Create(format, rate, config.media, std::move(cb), metrics, &why);
    std::unique_lock lock(feeder->mu);
    if (!pipeline) {
      feeder->failed = true;
      feeder->early.clear();
      lock.unlock();
      if (const auto sp = weak.lock()) {
        Json::Value e(Json::objectValue);
        e["type"] = "error";
        e["error"]["code"] = "pipeline_error";
        e["error"]["message"] = "media could not start: " + why;
        e["error"]["fatal"] = true;
        sp->Emit(e);
      }
      log.Error("cannot build the ingest pipeline", {{"error", why}});
      return;
    }
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
  bool posted = false;
  {
    const std::lock_guard lock(media_mu);
    // A start hook may race the session's end (hooks run outside the session's lock): the
    // end's hook found no state to drain, so nothing may be built after it.
    if (s.state() == SessionState::kEnded) {
      *error = "the session has ended";
      return false;
    }
    // One state per session: a restart adds to the same totals, on the same strand.
    MediaState& st = media_states.try_emplace(s.id(), pool).first->second;
    st.feeder = feeder;
    posted =
        st.strand.Post([build = std::move(build), totals = st.totals]() mutable { build(totals); });
  }
  if (!posted) {
    // The pool is full: refuse the start. The queued build sees a closed, empty feeder and
    // builds nothing when its turn comes.
    *error = "the server is busy; retry the start shortly";
    const std::lock_guard lock(feeder->mu);
    feeder->closed = true;
    feeder->early.clear();
    return false;
  }
  const uint8_t kind = static_cast<uint8_t>(
      format == media::IngestPipeline::Format::kPcm ? FrameKind::kPcm : FrameKind::kWebm);
  const size_t limit = config.media.max_backlog_bytes;
  s.SetBinarySink(kind, [feeder, limit, this](std::string_view bytes) {
    const std::lock_guard lock(feeder->mu);
    if (feeder->closed || feeder->failed) return;
    if (feeder->pipeline) {
      feeder->pipeline->Push(bytes);  // non-blocking
    } else if (feeder->early_bytes + bytes.size() <= limit) {
      feeder->early.emplace_back(bytes);
      feeder->early_bytes += bytes.size();
    } else {
      metrics
          .GetCounter("parley_media_dropped_total", "Inbound media dropped by reason",
                      {{"reason", "overflow"}})
          .Add();
    }
  });
  return true;
}

void App::Impl::Retire(MediaState& st) {
  if (!st.feeder) return;
  {
    const std::lock_guard lock(st.feeder->mu);
    st.feeder->closed = true;  // input refused from now on
  }
  // After the build in the strand's order: it either handed the pipeline over or stops it.
  st.strand.Post([feeder = std::move(st.feeder), totals = st.totals] {
    std::unique_ptr<media::IngestPipeline> pipeline;
    {
      const std::lock_guard lock(feeder->mu);
      pipeline = std::move(feeder->pipeline);
    }
    if (!pipeline) return;
    pipeline->Stop();
    totals->Add(pipeline->stats());
  });  // refused by a full pool: runs at the next Post or the end's Drain
}

void App::Impl::StopMedia(Session& s) {
  s.SetBinarySink(static_cast<uint8_t>(FrameKind::kWebm), nullptr);
  s.SetBinarySink(static_cast<uint8_t>(FrameKind::kPcm), nullptr);
  const std::lock_guard lock(media_mu);
  const auto it = media_states.find(s.id());
  if (it != media_states.end()) Retire(it->second);  // Stop() runs on a worker
}

void App::Impl::EndMedia(Session& s) {
  s.SetBinarySink(static_cast<uint8_t>(FrameKind::kWebm), nullptr);
  s.SetBinarySink(static_cast<uint8_t>(FrameKind::kPcm), nullptr);
  std::optional<MediaState> st;
  {
    const std::lock_guard lock(media_mu);
    const auto it = media_states.find(s.id());
    if (it == media_states.end()) return;  // never started media: metrics.media stays null
    Retire(it->second);
    st.emplace(std::move(it->second));
    media_states.erase(it);
  }
  // Builds and stops still queued run here, on this worker: waiting for another worker would
  // starve when every worker is ending a session at once (shutdown, a storm of drops).
  st->strand.Drain();
  Json::Value m(Json::objectValue);
  m["audio_seconds"] = static_cast<double>(st->totals->audio_samples.load()) / media::kAnalysisRate;
  m["video_frames"] = static_cast<Json::UInt64>(st->totals->video_frames.load());
  m["decode_errors"] = static_cast<Json::UInt64>(st->totals->decode_errors.load());
  m["bytes_received"] = static_cast<Json::UInt64>(st->totals->bytes_in.load());
  m["dropped_waiting_keyframe"] =
      static_cast<Json::UInt64>(st->totals->dropped_waiting_keyframe.load());
  Json::Value patch(Json::objectValue);
  patch["metrics"]["media"] = m;
  s.MergeReport(patch);
}

}  // namespace parley::app
