// Wiring between sessions and speech/: the session's 16 kHz audio (from the media pipeline)
// goes through its Endpointer on the GStreamer thread that delivers it (the VAD costs a few µs
// per 10 ms); `speech_start`/`speech_end` go to the client; each finished utterance is queued
// on the ASR pool, whose threads each own one decoder of the shared PocketSphinx pool, and its
// transcript goes to the client and the session's timeline.
#include <cmath>
#include <condition_variable>

#include "app/app_impl.h"

namespace parley::app {

struct App::Impl::HearingState {
  std::mutex mu;
  std::condition_variable idle;
  std::unique_ptr<speech::Endpointer> endpointer;  // created with the first audio
  bool ended = false;
  int pending_asr = 0;  // utterances queued or being decoded
  uint64_t utterances = 0, recognised = 0, failed = 0, refused = 0;
};

namespace {

Json::Value WordsJson(const speech::Recognition& r, int64_t offset_ms) {
  Json::Value words(Json::arrayValue);
  for (const auto& w : r.words) {
    Json::Value j(Json::objectValue);
    j["w"] = w.text;
    j["t_start"] = Json::Int64(offset_ms + w.t_start_ms);
    j["t_end"] = Json::Int64(offset_ms + w.t_end_ms);
    j["confidence"] = std::round(w.confidence * 1000) / 1000;
    words.append(j);
  }
  return words;
}

}  // namespace

void App::Impl::AttachHearing(const std::shared_ptr<Session>& session) {
  if (!config.asr_enabled) return;
  auto st = std::make_shared<HearingState>();
  {
    const std::lock_guard lock(hearing_mu);
    hearing_states[session->id()] = st;
  }
  std::weak_ptr<Session> weak_session = session;
  std::weak_ptr<HearingState> weak_state = st;
  session->AddAudioConsumer(
      [this, weak_session, weak_state](int64_t t_ms, std::span<const int16_t> pcm) {
        const auto v = weak_state.lock();
        const auto s = weak_session.lock();
        if (!v || !s) return;
        std::vector<speech::EndpointEvent> events;
        {
          const std::lock_guard lock(v->mu);
          if (v->ended) return;
          if (!v->endpointer) {
            std::string error;
            v->endpointer = speech::Endpointer::Create(config.endpoint, &error);
            if (!v->endpointer) {
              log.Error("voice activity detection is unavailable", {{"error", error}});
              v->ended = true;
              return;
            }
          }
          v->endpointer->Feed(t_ms, pcm, &events);
        }
        HandleEndpointEvents(*s, v, std::move(events));
      });
}

void App::Impl::HandleEndpointEvents(Session& s, const std::shared_ptr<HearingState>& v,
                                     std::vector<speech::EndpointEvent> events) {
  for (auto& e : events) {
    Json::Value msg(Json::objectValue);
    if (e.kind == speech::EndpointEvent::Kind::kSpeechStart) {
      msg["type"] = "speech_start";
      msg["t"] = Json::Int64(e.t_ms);
      s.Emit(msg);
      s.timeline().AddEvent(e.t_ms, "speech_start");
      continue;
    }
    msg["type"] = "speech_end";
    msg["t"] = Json::Int64(e.t_ms);
    // A burst too short to be an utterance (a cough, a click) gets no transcript.
    if (!e.utterance) msg["too_short"] = true;
    s.Emit(msg);
    s.timeline().AddEvent(e.t_ms, "speech_end");
    if (!e.utterance) continue;
    {
      const std::lock_guard lock(v->mu);
      ++v->utterances;
      ++v->pending_asr;
    }
    metrics.GetGauge("parley_asr_queued", "Utterances waiting for or in speech recognition").Add(1);
    auto utterance = std::make_shared<speech::Utterance>(std::move(*e.utterance));
    std::weak_ptr<Session> weak_session = registry.Find(s.id());
    const bool queued = asr_pool.TrySubmit(
        [this, weak_session, v, utterance] { Recognise(weak_session, v, *utterance); });
    if (!queued) {
      metrics.GetGauge("parley_asr_queued", "Utterances waiting for or in speech recognition")
          .Add(-1);
      const std::lock_guard lock(v->mu);
      --v->pending_asr;
      ++v->refused;
      v->idle.notify_all();
      Json::Value err(Json::objectValue);
      err["type"] = "error";
      err["error"]["code"] = "asr_overloaded";
      err["error"]["message"] = "speech recognition is saturated; an utterance was not transcribed";
      s.Emit(err);
    }
  }
}

std::shared_ptr<speech::DecoderPool> App::Impl::Decoders() {
  return decoders.Get(
      [this](std::string* error) {
        return std::shared_ptr<speech::DecoderPool>(speech::DecoderPool::Create(config.asr, error));
      },
      log, std::to_string(config.asr.pool_size) + " speech decoders");
}

void App::Impl::Recognise(const std::weak_ptr<Session>& weak_session,
                          const std::shared_ptr<HearingState>& v,
                          const speech::Utterance& utterance) {
  const auto done = [&](bool ok) {
    metrics.GetGauge("parley_asr_queued", "Utterances waiting for or in speech recognition")
        .Add(-1);
    const std::lock_guard lock(v->mu);
    --v->pending_asr;
    ++(ok ? v->recognised : v->failed);
    v->idle.notify_all();
  };
  const auto decoder_pool = Decoders();
  const auto s = weak_session.lock();
  if (!decoder_pool || !s) {
    done(false);
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::string error;
  // The ASR pool has one thread per decoder, so the wait is short unless decoders are shared
  // with another caller.
  const auto r = decoder_pool->Recognize(utterance.audio, std::chrono::seconds(30), &error);
  metrics
      .GetCounter("parley_asr_seconds_total", "Seconds spent decoding speech",
                  {{"engine", "pocketsphinx"}})
      .Add(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (!r) {
    Json::Value err(Json::objectValue);
    err["type"] = "error";
    err["error"]["code"] = "asr_failed";
    err["error"]["message"] = "speech recognition failed: " + error;
    s->Emit(err);
    done(false);
    return;
  }
  // Word times are relative to the utterance's audio, which starts with the pre-roll.
  const int64_t audio_t0 = utterance.audio_start_ms;
  Json::Value msg(Json::objectValue);
  msg["type"] = "transcript.final";
  msg["text"] = r->text;
  msg["t_start"] = Json::Int64(utterance.t_start_ms);
  msg["t_end"] = Json::Int64(utterance.t_end_ms);
  msg["confidence"] = std::round(r->confidence * 1000) / 1000;
  msg["engine"] = r->engine;
  msg["words"] = WordsJson(*r, audio_t0);
  msg["t"] = Json::Int64(s->NowMs());
  s->Emit(msg);
  if (!r->text.empty()) {
    TranscriptTurn turn;
    turn.role = "user";
    turn.text = r->text;
    turn.t_start_ms = utterance.t_start_ms;
    turn.t_end_ms = utterance.t_end_ms;
    turn.extra = Json::Value(Json::objectValue);
    turn.extra["words"] = msg["words"];
    turn.extra["confidence"] = msg["confidence"];
    turn.extra["engine"] = r->engine;
    s->timeline().AddTurn(std::move(turn));
  }
  done(true);
}

// Ends a turn in progress. (Not on `stop`: the pipeline still drains after it, and the
// endpointer ends a turn by itself when the stream's clock jumps at the next `start`.)
void App::Impl::StopHearing(Session& s) {
  std::shared_ptr<HearingState> v;
  {
    const std::lock_guard lock(hearing_mu);
    const auto it = hearing_states.find(s.id());
    if (it == hearing_states.end()) return;
    v = it->second;
  }
  std::vector<speech::EndpointEvent> events;
  {
    const std::lock_guard lock(v->mu);
    if (v->endpointer) v->endpointer->Flush(&events);
  }
  HandleEndpointEvents(s, v, std::move(events));
}

void App::Impl::EndHearing(Session& s) {
  // The media pipeline has drained (its end hook ran first): a turn still open ends here.
  StopHearing(s);
  std::shared_ptr<HearingState> v;
  {
    const std::lock_guard lock(hearing_mu);
    const auto it = hearing_states.find(s.id());
    if (it == hearing_states.end()) return;
    v = it->second;
    hearing_states.erase(it);
  }
  std::unique_lock lock(v->mu);
  v->ended = true;
  // Transcripts of the last utterances belong in the report: wait for them (bounded).
  v->idle.wait_for(lock, std::chrono::seconds(config.sessions.end_hook_timeout_s),
                   [&] { return v->pending_asr == 0; });
}

}  // namespace parley::app
