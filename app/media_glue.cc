// Wiring between sessions and media/: a session's start message has a worker build its ingest
// pipeline (frames that arrive meanwhile wait in a bounded buffer), binary frames feed it,
// decoded audio/video go to the session's consumers, and the pipeline is torn down on stop (on
// a worker) or at the end (waited for, before the report). The service thread never touches
// GStreamer beyond a non-blocking push.
#include <future>

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
  std::shared_ptr<MediaTotals> totals;  // one per session: a restart adds to the same figures
  {
    const std::lock_guard lock(media_mu);
    MediaState& st = media_states[s.id()];
    if (!st.totals) st.totals = std::make_shared<MediaTotals>();
    totals = st.totals;
  }
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
  auto build = std::make_shared<std::packaged_task<void()>>([this, weak, feeder, totals, format,
                                                             rate = params.sample_rate,
                                                             cb = std::move(cb)]() mutable {
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
  });
  {
    const std::lock_guard lock(media_mu);
    MediaState& st = media_states[s.id()];
    st.feeder = feeder;
    st.work.push_back(build->get_future().share());
  }
  if (!pool.TrySubmit([build] { (*build)(); })) {
    *error = "the server is busy; retry the start shortly";
    const std::lock_guard lock(media_mu);
    media_states[s.id()].feeder.reset();
    media_states[s.id()].work.pop_back();
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
  std::shared_ptr<media::IngestPipeline> pipeline;
  {
    const std::lock_guard lock(st.feeder->mu);
    st.feeder->closed = true;  // a pipeline still being built stops itself when ready
    pipeline = std::move(st.feeder->pipeline);
  }
  if (!pipeline) return;
  auto task = std::make_shared<std::packaged_task<void()>>([pipeline, totals = st.totals] {
    pipeline->Stop();
    totals->Add(pipeline->stats());
  });
  st.work.push_back(task->get_future().share());
  if (!pool.TrySubmit([task] { (*task)(); })) (*task)();
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
  MediaState st;
  {
    const std::lock_guard lock(media_mu);
    const auto it = media_states.find(s.id());
    if (it == media_states.end()) return;  // never started media: metrics.media stays null
    Retire(it->second);
    st = std::move(it->second);
    media_states.erase(it);
  }
  for (auto& f : st.work)
    f.wait_for(std::chrono::milliseconds(config.media.stop_timeout_ms + 2000));
  Json::Value m(Json::objectValue);
  m["audio_seconds"] = static_cast<double>(st.totals->audio_samples.load()) / media::kAnalysisRate;
  m["video_frames"] = static_cast<Json::UInt64>(st.totals->video_frames.load());
  m["decode_errors"] = static_cast<Json::UInt64>(st.totals->decode_errors.load());
  m["bytes_received"] = static_cast<Json::UInt64>(st.totals->bytes_in.load());
  m["dropped_waiting_keyframe"] =
      static_cast<Json::UInt64>(st.totals->dropped_waiting_keyframe.load());
  Json::Value patch(Json::objectValue);
  patch["metrics"]["media"] = m;
  s.MergeReport(patch);
}

}  // namespace parley::app
