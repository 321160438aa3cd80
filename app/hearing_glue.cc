// Wiring between sessions and speech/: the session's 16 kHz audio (from the media pipeline)
// goes through its Endpointer on the GStreamer thread that delivers it (the VAD costs a few µs
// per 10 ms); `speech_start`/`speech_end` go to the client. Each utterance streams, while it is
// spoken, into a decoder checked out of the shared PocketSphinx pool (partials on the way); the
// decoding runs on the ASR pool, one task at a time per utterance. With a remote engine the whole
// utterance goes to it at the end, falling back to a pooled decoder when the service fails.
// Transcripts, prosody and talk metrics go to the client, the timeline and the report.
#include <cmath>
#include <condition_variable>
#include <ctime>

#include "app/app_impl.h"

namespace parley::app {

// One utterance on its way to a transcript.
struct App::Impl::HearingJob {
  int64_t t_start_ms = 0;
  std::vector<int16_t> pending;  // audio not yet fed to the recogniser
  std::unique_ptr<speech::RecognitionStream> stream;
  bool requested = false;                      // a decoder was asked for
  bool ended = false;                          // the endpointer ended the utterance
  bool dropped = false;                        // not transcribed (too short, overloaded, failed)
  bool remote_failed = false;                  // the remote engine failed: decode it here
  bool pumping = false;                        // a Pump task has it (queued or running)
  std::optional<speech::Utterance> utterance;  // at the end, when long enough
  std::string last_partial;
  std::chrono::steady_clock::time_point last_partial_at{}, ended_at{};
  double decode_s = 0;  // CPU time in the local recogniser, or waiting for the remote one
  double audio_s = 0;   // audio the local recogniser decoded
};

namespace {

double Round(double v, double unit) { return std::round(v / unit) * unit; }

// CPU time of the calling thread: decoding cost without the waits of a busy machine.
double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

Json::Value WordsJson(const speech::Recognition& r, int64_t offset_ms) {
  Json::Value words(Json::arrayValue);
  for (const auto& w : r.words) {
    Json::Value j(Json::objectValue);
    j["w"] = w.text;
    j["t_start"] = Json::Int64(offset_ms + w.t_start_ms);
    j["t_end"] = Json::Int64(offset_ms + w.t_end_ms);
    j["confidence"] = Round(w.confidence, 0.001);
    words.append(j);
  }
  return words;
}

Json::Value ProsodyJson(const speech::Prosody& p) {
  Json::Value j(Json::objectValue);
  j["f0_mean_hz"] = p.voiced_frames > 0 ? Json::Value(Round(p.f0_mean_hz, 0.1)) : Json::Value();
  j["f0_std_semitones"] =
      p.voiced_frames > 0 ? Json::Value(Round(p.f0_std_semitones, 0.01)) : Json::Value();
  j["f0_range_semitones"] =
      p.voiced_frames > 0 ? Json::Value(Round(p.f0_range_semitones, 0.01)) : Json::Value();
  j["volume_dbfs"] =
      p.volume_db.empty() ? Json::Value() : Json::Value(Round(p.volume_dbfs_mean, 0.1));
  j["loudness_lufs"] = p.loudness_lufs ? Json::Value(Round(*p.loudness_lufs, 0.1)) : Json::Value();
  return j;
}

Json::Value ErrorJson(const std::string& code, const std::string& message) {
  Json::Value err(Json::objectValue);
  err["type"] = "error";
  err["error"]["code"] = code;
  err["error"]["message"] = message;
  return err;
}

}  // namespace

struct App::Impl::HearingState {
  std::mutex mu;
  std::condition_variable idle;
  std::weak_ptr<Session> session;
  std::unique_ptr<speech::Endpointer> endpointer;  // created with the first audio
  bool ended = false;
  std::vector<std::shared_ptr<HearingJob>> jobs;  // utterances not transcribed yet, in order
  size_t streamed = 0;  // samples of the utterance in progress handed over
  speech::TalkStats talk;
  std::optional<int64_t> first_audio_ms;
  int64_t last_audio_ms = 0;
  uint64_t utterances = 0, recognised = 0, failed = 0, refused = 0, fallbacks = 0;
};

void App::Impl::AttachHearing(const std::shared_ptr<Session>& session) {
  if (!config.asr_enabled) return;
  auto st = std::make_shared<HearingState>();
  st->session = session;
  {
    const std::lock_guard lock(hearing_mu);
    hearing_states[session->id()] = st;
  }
  std::weak_ptr<Session> weak_session = session;
  std::weak_ptr<HearingState> weak_state = st;
  const bool stream_to_decoder = StreamsWhileSpoken();
  session->AddAudioConsumer([this, weak_session, weak_state, stream_to_decoder](
                                int64_t t_ms, std::span<const int16_t> pcm) {
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
      if (!v->first_audio_ms) v->first_audio_ms = t_ms;
      v->last_audio_ms = t_ms + static_cast<int64_t>(pcm.size()) * 1000 / speech::kSampleRate;
      v->endpointer->Feed(t_ms, pcm, &events);
      TrackUtterances(*v, events, stream_to_decoder);
      // The utterance in progress streams to its recogniser as it is spoken.
      if (stream_to_decoder && v->endpointer->in_speech() && !v->jobs.empty()) {
        const auto audio = v->endpointer->current_audio();
        if (audio.size() > v->streamed) {
          auto& pending = v->jobs.back()->pending;
          pending.insert(pending.end(), audio.begin() + static_cast<long>(v->streamed),
                         audio.end());
          v->streamed = audio.size();
        }
      }
    }
    EmitEndpointEvents(*s, events);
    Kick(v);
  });
}

// Under v.mu: utterances start and end as jobs.
void App::Impl::TrackUtterances(HearingState& v, std::vector<speech::EndpointEvent>& events,
                                bool stream_to_decoder) {
  for (auto& e : events) {
    if (e.kind == speech::EndpointEvent::Kind::kSpeechStart) {
      auto job = std::make_shared<HearingJob>();
      job->t_start_ms = e.t_ms;
      v.jobs.push_back(std::move(job));
      v.streamed = 0;
      continue;
    }
    if (v.jobs.empty()) continue;
    HearingJob& job = *v.jobs.back();
    job.ended = true;
    job.ended_at = std::chrono::steady_clock::now();
    if (!e.utterance) {
      job.dropped = true;  // a cough, a click: no transcript
      continue;
    }
    ++v.utterances;
    const auto& audio = e.utterance->audio;
    if (stream_to_decoder && audio.size() > v.streamed)
      job.pending.insert(job.pending.end(), audio.begin() + static_cast<long>(v.streamed),
                         audio.end());
    v.streamed = 0;
    job.utterance = std::move(e.utterance);
  }
}

void App::Impl::EmitEndpointEvents(Session& s, const std::vector<speech::EndpointEvent>& events) {
  for (const auto& e : events) {
    Json::Value msg(Json::objectValue);
    const bool start = e.kind == speech::EndpointEvent::Kind::kSpeechStart;
    msg["type"] = start ? "speech_start" : "speech_end";
    msg["t"] = Json::Int64(e.t_ms);
    if (!start && !e.utterance) msg["too_short"] = true;
    s.Emit(msg);
    s.timeline().AddEvent(e.t_ms, start ? "speech_start" : "speech_end");
  }
}

std::shared_ptr<speech::DecoderPool> App::Impl::Decoders() {
  return decoders.Get(
      [this](std::string* error) {
        speech::PocketSphinxConfig asr = config.asr;
        asr.lead_in_ms = config.endpoint.pre_roll_ms;  // turns start with the pre-roll
        return speech::DecoderPool::Create(asr, error);
      },
      log, std::to_string(config.asr.pool_size) + " speech decoders");
}

// With the offline engine a turn streams into a recogniser while it is spoken, so its final
// result is ready moments after the person stops. With the remote engine the turn goes over
// whole at its end (a recogniser is taken only when the service fails).
bool App::Impl::StreamsWhileSpoken() const { return config.remote_asr.base_url.empty(); }

// Whether a job has something for an ASR thread to do now (under v.mu).
bool App::Impl::HasWork(const HearingJob& job) const {
  if (job.pumping) return false;
  if (job.dropped) return job.ended;
  if (!config.remote_asr.base_url.empty() && !job.remote_failed) return job.ended;
  if (!job.stream) return !job.requested && (job.ended || StreamsWhileSpoken());
  return !job.pending.empty() || job.ended;
}

// Schedules a Pump for each of the session's utterances that has work. A session's utterances
// decode in parallel when it has several (a backlog), each on its own decoder.
void App::Impl::Kick(const std::shared_ptr<HearingState>& v) {
  std::vector<std::shared_ptr<HearingJob>> ready;
  {
    const std::lock_guard lock(v->mu);
    for (const auto& job : v->jobs)
      if (HasWork(*job)) {
        job->pumping = true;
        ready.push_back(job);
      }
  }
  for (const auto& job : ready) {
    if (asr_pool.TrySubmit([this, v, job] { Pump(v, job); })) continue;
    // Full only with far more utterances in flight than it was sized for: the next audio
    // kicks again.
    const std::lock_guard lock(v->mu);
    job->pumping = false;
    log.Warn("speech recognition queue full");
  }
}

// Under v.mu: a job leaves the session (its decoder, if any, is released by the caller's
// reference going away outside the lock).
void App::Impl::Retire(HearingState& v, const std::shared_ptr<HearingJob>& job) {
  std::erase(v.jobs, job);
  job->pumping = false;
  v.idle.notify_all();
}

// ASR thread: moves one utterance along (decoder, audio, partial, final) until it must wait
// for audio, a decoder or the remote service.
void App::Impl::Pump(const std::shared_ptr<HearingState>& v,
                     const std::shared_ptr<HearingJob>& job) {
  const auto s = v->session.lock();
  const bool remote = !config.remote_asr.base_url.empty();
  for (;;) {
    std::vector<int16_t> audio;
    bool ended = false;
    {
      std::unique_lock lock(v->mu);
      if (!s || (job->dropped && job->ended)) {
        Retire(*v, job);
        lock.unlock();
        job->stream.reset();  // back to the pool (maybe to another session) after the unlock
        return;
      }
      if (job->dropped) {
        job->pending.clear();
        job->pumping = false;
        return;
      }
      if (remote && !job->remote_failed) {
        if (!job->ended) {
          job->pumping = false;
          return;
        }
        lock.unlock();
        // Still "pumping" while the remote pool has it.
        if (remote_pool.TrySubmit([this, v, job] { TranscribeRemotely(v, job); })) return;
        lock.lock();
        job->remote_failed = true;  // decode it here (the recogniser takes the whole turn)
        continue;
      }
      if (!job->stream) {
        const bool ask = !job->requested && (job->ended || StreamsWhileSpoken());
        job->requested = true;
        job->pumping = false;
        lock.unlock();
        if (ask) RequestDecoder(*s, v, job);  // the pool calls back
        return;
      }
      audio.swap(job->pending);
      ended = job->ended;
    }
    std::string error;
    const double t0 = ThreadCpuSeconds();
    bool ok = audio.empty() || job->stream->Feed(audio, &error);
    job->audio_s += static_cast<double>(audio.size()) / speech::kSampleRate;
    std::optional<speech::Recognition> result;
    if (ok && ended) {
      const std::span<const int16_t> whole = job->utterance
                                                 ? std::span<const int16_t>(job->utterance->audio)
                                                 : std::span<const int16_t>();
      if (job->audio_s == 0) job->audio_s = static_cast<double>(whole.size()) / speech::kSampleRate;
      result = job->stream->Finish(whole, &error);
      ok = result.has_value();
    }
    job->decode_s += ThreadCpuSeconds() - t0;
    if (ended || !ok) job->stream.reset();  // the decoder goes back to the pool
    if (!ok) {
      s->Emit(ErrorJson("asr_failed", "speech recognition failed: " + error));
      const std::lock_guard lock(v->mu);
      ++v->failed;
      job->dropped = true;
      continue;
    }
    if (result) {
      Deliver(*s, *v, *job, *result);
      const std::lock_guard lock(v->mu);
      Retire(*v, job);
      return;
    }
    MaybeEmitPartial(*s, *job);
    const std::lock_guard lock(v->mu);
    if (job->pending.empty() && !job->ended) {
      job->pumping = false;
      return;
    }
  }
}

void App::Impl::RequestDecoder(Session& s, const std::shared_ptr<HearingState>& v,
                               const std::shared_ptr<HearingJob>& job) {
  const auto decoder_pool = Decoders();
  if (!decoder_pool) {
    s.Emit(ErrorJson("asr_unavailable", "speech recognition is unavailable: " + decoders.error()));
    {
      const std::lock_guard lock(v->mu);
      job->dropped = true;
      ++v->failed;
    }
    Kick(v);  // an ended turn is retired now, not at the next audio (there may be none)
    return;
  }
  if (decoder_pool->waiting() >= config.asr_queue) {
    s.Emit(ErrorJson("asr_overloaded",
                     "speech recognition is saturated; an utterance was not transcribed"));
    {
      const std::lock_guard lock(v->mu);
      job->dropped = true;
      ++v->refused;
    }
    Kick(v);
    return;
  }
  metrics.GetGauge("parley_asr_waiting", "Utterances waiting for a free speech decoder").Add(1);
  std::weak_ptr<HearingState> weak = v;
  decoder_pool->Acquire([this, weak, job](std::unique_ptr<speech::RecognitionStream> stream) {
    metrics.GetGauge("parley_asr_waiting", "Utterances waiting for a free speech decoder").Add(-1);
    const auto st = weak.lock();
    if (!st) return;  // the session is gone: the stream's destructor returns the decoder
    {
      const std::lock_guard lock(st->mu);
      job->stream = std::move(stream);
    }
    Kick(st);
  });
}

void App::Impl::MaybeEmitPartial(Session& s, HearingJob& job) {
  if (!config.asr.partials) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - job.last_partial_at < std::chrono::milliseconds(config.partial_interval_ms)) return;
  job.last_partial_at = now;
  const double t0 = ThreadCpuSeconds();
  std::string text = job.stream->Partial();
  job.decode_s += ThreadCpuSeconds() - t0;
  if (text.empty() || text == job.last_partial) return;
  job.last_partial = text;
  Json::Value msg(Json::objectValue);
  msg["type"] = "transcript.partial";
  msg["text"] = text;
  msg["t_start"] = Json::Int64(job.t_start_ms);
  msg["t"] = Json::Int64(s.NowMs());
  s.Emit(msg, /*droppable=*/true);
}

// Remote pool: one utterance to the OpenAI-compatible service; on failure the utterance goes
// back to the session's queue for a pooled decoder.
void App::Impl::TranscribeRemotely(const std::shared_ptr<HearingState>& v,
                                   const std::shared_ptr<HearingJob>& job) {
  const auto s = v->session.lock();
  std::string error = "no transcription service";
  std::optional<speech::Recognition> r;
  const auto t0 = std::chrono::steady_clock::now();
  if (s && remote_asr) r = remote_asr->Transcribe(job->utterance->audio, &error);
  job->decode_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (s && r) {
    Deliver(*s, *v, *job, *r);
    const std::lock_guard lock(v->mu);
    Retire(*v, job);
    return;
  }
  if (s) {
    // Logged as an event: the client, the timeline and the server log all see the fallback.
    Json::Value msg(Json::objectValue);
    msg["type"] = "asr_fallback";
    msg["engine"] = "pocketsphinx";
    msg["reason"] = error;
    msg["t"] = Json::Int64(s->NowMs());
    s->Emit(msg);
    s->timeline().AddEvent(s->NowMs(), "asr_fallback");
    log.Warn("remote speech recognition failed: decoding here",
             {{"session_id", s->id()}, {"error", error}});
  }
  {
    const std::lock_guard lock(v->mu);
    ++v->fallbacks;
    job->remote_failed = true;  // decoded here: the recogniser takes the whole turn
    job->pumping = false;
  }
  Kick(v);
}

// A finished utterance: prosody, the transcript to the client, the timeline and talk metrics.
void App::Impl::Deliver(Session& s, HearingState& v, const HearingJob& job,
                        const speech::Recognition& r) {
  const speech::Utterance& u = *job.utterance;
  const speech::Prosody prosody = speech::AnalyzeProsody(u.audio);
  metrics
      .GetCounter("parley_asr_seconds_total",
                  "Seconds spent recognising speech (CPU locally, waiting for a remote engine)",
                  {{"engine", r.engine}})
      .Add(job.decode_s);
  metrics
      .GetCounter("parley_asr_audio_seconds_total", "Seconds of audio recognised",
                  {{"engine", r.engine}})
      .Add(r.engine == "pocketsphinx" ? job.audio_s
                                      : static_cast<double>(u.audio.size()) / speech::kSampleRate);
  metrics
      .GetCounter("parley_asr_final_latency_seconds_total",
                  "Sum of end-of-speech to transcript.final delays")
      .Add(std::chrono::duration<double>(std::chrono::steady_clock::now() - job.ended_at).count());
  metrics.GetCounter("parley_asr_finals_total", "Final transcripts", {{"engine", r.engine}}).Add(1);
  // Word times are relative to the utterance's audio, which starts with the pre-roll.
  Json::Value msg(Json::objectValue);
  msg["type"] = "transcript.final";
  msg["text"] = r.text;
  msg["t_start"] = Json::Int64(u.t_start_ms);
  msg["t_end"] = Json::Int64(u.t_end_ms);
  msg["confidence"] = Round(r.confidence, 0.001);
  msg["engine"] = r.engine;
  msg["words"] = WordsJson(r, u.audio_start_ms);
  msg["prosody"] = ProsodyJson(prosody);
  msg["t"] = Json::Int64(s.NowMs());
  s.Emit(msg);
  if (!r.text.empty()) {
    TranscriptTurn turn;
    turn.role = "user";
    turn.text = r.text;
    turn.t_start_ms = u.t_start_ms;
    turn.t_end_ms = u.t_end_ms;
    turn.extra = Json::Value(Json::objectValue);
    turn.extra["words"] = msg["words"];
    turn.extra["confidence"] = msg["confidence"];
    turn.extra["engine"] = r.engine;
    turn.extra["prosody"] = msg["prosody"];
    s.timeline().AddTurn(std::move(turn));
  }
  const std::lock_guard lock(v.mu);
  ++v.recognised;
  v.talk.AddTurn(r, u.t_start_ms, u.t_end_ms, prosody);
}

// Ends a turn in progress. (Not on `stop`: the pipeline still drains after it, and the
// endpointer ends a turn by itself when the stream's clock jumps at the next `start`.)
void App::Impl::StopHearing(Session& s) {
  const auto v = FindSessionState(hearing_mu, hearing_states, s.id(), /*take=*/false);
  if (!v) return;
  std::vector<speech::EndpointEvent> events;
  {
    const std::lock_guard lock(v->mu);
    if (!v->endpointer) return;
    v->endpointer->Flush(&events);
    TrackUtterances(*v, events, StreamsWhileSpoken());
  }
  EmitEndpointEvents(s, events);
  Kick(v);
}

void App::Impl::EndHearing(Session& s) {
  // The media pipeline has drained (its end hook ran first): a turn still open ends here.
  StopHearing(s);
  const auto v = FindSessionState(hearing_mu, hearing_states, s.id(), /*take=*/true);
  if (!v) return;
  std::unique_lock lock(v->mu);
  v->ended = true;
  // Transcripts of the last utterances belong in the report: wait for them (bounded).
  v->idle.wait_for(lock, std::chrono::seconds(config.sessions.end_hook_timeout_s),
                   [&] { return v->jobs.empty(); });
  if (!v->first_audio_ms) return;  // no audio: nothing measured
  const double audio_s = static_cast<double>(v->last_audio_ms - *v->first_audio_ms) / 1000;
  const speech::TalkSummary t = v->talk.Summarize(audio_s);
  Json::Value patch(Json::objectValue);
  Json::Value& mx = patch["metrics"];
  mx["turns"] = t.turns;
  mx["talk_ratio"] = Round(t.talk_ratio, 0.0001);
  mx["speaking_rate_wpm"] =
      t.speech_s > 0 ? Json::Value(Round(t.speaking_rate_wpm, 0.1)) : Json::Value();
  mx["filler_words"] = t.filler_words;
  mx["questions_asked"] = t.questions_asked;
  mx["longest_pause_s"] = Round(t.longest_pause_s, 0.01);
  // No persona speech is played yet, so there is no reply to respond to (docs/scoring.md).
  mx["response_latency_s"] = Json::Value();
  if (t.has_pitch) {
    mx["pitch_hz"]["mean"] = Round(t.f0_mean_hz, 0.1);
    mx["pitch_hz"]["std"] = Round(t.f0_std_hz, 0.1);
  }
  if (t.has_volume) {
    mx["volume_db"]["mean"] = Round(t.volume_dbfs_mean, 0.1);
    mx["volume_db"]["std"] = Round(t.volume_dbfs_std, 0.1);
  }
  Json::Value& sp = mx["speech"];
  sp["speech_s"] = Round(t.speech_s, 0.01);
  sp["audio_s"] = Round(audio_s, 0.01);
  sp["words"] = t.words;
  sp["pauses_over_1s"] = t.pauses_over_1s;
  sp["fillers"] = Json::Value(Json::objectValue);
  for (const auto& [word, n] : t.fillers) sp["fillers"][word] = n;
  sp["pitch_std_semitones"] =
      t.has_pitch ? Json::Value(Round(t.f0_std_semitones, 0.01)) : Json::Value();
  sp["pitch_range_semitones"] =
      t.has_pitch ? Json::Value(Round(t.f0_range_semitones, 0.01)) : Json::Value();
  sp["loudness_lufs"] = t.loudness_lufs ? Json::Value(Round(*t.loudness_lufs, 0.1)) : Json::Value();
  sp["utterances"] = static_cast<Json::UInt64>(v->utterances);
  sp["transcribed"] = static_cast<Json::UInt64>(v->recognised);
  sp["failed"] = static_cast<Json::UInt64>(v->failed);
  sp["refused"] = static_cast<Json::UInt64>(v->refused);
  sp["remote_fallbacks"] = static_cast<Json::UInt64>(v->fallbacks);
  lock.unlock();
  s.MergeReport(patch);
}

}  // namespace parley::app
