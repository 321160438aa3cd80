// Hearing: the session's 16 kHz audio (from the ingest pipeline) goes through its Endpointer on
// the GStreamer thread that delivers it (the VAD costs a few µs per 10 ms); speech start/end go
// to the client. Each utterance streams, while it is spoken, into a decoder checked out of the
// shared PocketSphinx pool (partials on the way); the decoding runs on the ASR pool, one task
// at a time per utterance. With a remote engine the whole utterance goes to it at the end,
// falling back to a pooled decoder when the service fails. Transcripts, prosody and talk
// metrics go to the client, the timeline and the report.
#include <cmath>
#include <ctime>

#include "session/internal.h"

namespace parley::session {

// One utterance on its way to a transcript.
struct HearingStage::Job {
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
  // When the oldest sample in `pending` arrived: how far the recogniser is behind this turn.
  std::chrono::steady_clock::time_point pending_since{};
  double decode_s = 0;  // CPU time in the local recogniser, or waiting for the remote one
  double audio_s = 0;   // audio the local recogniser decoded
};

namespace {

// CPU time of the calling thread: decoding cost without the waits of a busy machine.
double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

std::vector<WordTiming> Words(const speech::Recognition& r, int64_t offset_ms) {
  std::vector<WordTiming> words;
  for (const auto& w : r.words)
    words.push_back(
        {w.text, offset_ms + w.t_start_ms, offset_ms + w.t_end_ms, Round(w.confidence, 0.001)});
  return words;
}

ProsodySummary Summary(const speech::Prosody& p) {
  ProsodySummary s;
  if (p.voiced_frames > 0) {
    s.f0_mean_hz = Round(p.f0_mean_hz, 0.1);
    s.f0_std_semitones = Round(p.f0_std_semitones, 0.01);
    s.f0_range_semitones = Round(p.f0_range_semitones, 0.01);
  }
  if (!p.volume_db.empty()) s.volume_dbfs = Round(p.volume_dbfs_mean, 0.1);
  if (p.loudness_lufs) s.loudness_lufs = Round(*p.loudness_lufs, 0.1);
  return s;
}

Json::Value OptionalJson(const std::optional<double>& v) {
  return v ? Json::Value(*v) : Json::Value();
}

}  // namespace

HearingStage::HearingStage(std::weak_ptr<Session> session, Services& services)
    : session_(std::move(session)), services_(services), config_(services.config().hearing) {}

void HearingStage::Feed(int64_t t_ms, std::span<const int16_t> pcm) {
  if (!config_.enabled) return;
  const auto s = session_.lock();
  if (!s) return;
  std::vector<speech::EndpointEvent> events;
  int64_t spoken_ms = 0;
  int behind_now = 0;
  {
    const std::lock_guard lock(mu_);
    if (ended_) return;
    if (!endpointer_) {
      std::string error;
      endpointer_ = speech::Endpointer::Create(config_.endpoint, &error);
      if (!endpointer_) {
        services_.log().Error("voice activity detection is unavailable", {{"error", error}});
        ended_ = true;
        return;
      }
    }
    if (!first_audio_ms_) first_audio_ms_ = t_ms;
    last_audio_ms_ = t_ms + static_cast<int64_t>(pcm.size()) * 1000 / speech::kSampleRate;
    if (echo_) {
      // The persona's own voice, come back through the user's speakers, is taken out first:
      // the VAD, the interruption policy and the recogniser hear only the user.
      cleaned_.assign(pcm.begin(), pcm.end());
      echo_->Process(t_ms, cleaned_);
      pcm = cleaned_;
    }
    endpointer_->Feed(t_ms, pcm, &events);
    TrackUtterances(events);
    spoken_ms = endpointer_->current_span_ms();
    // The utterance in progress streams to its recogniser as it is spoken.
    if (StreamsWhileSpoken() && endpointer_->in_speech() && !jobs_.empty()) {
      const auto audio = endpointer_->current_audio();
      if (audio.size() > streamed_) {
        Job& job = *jobs_.back();
        if (!job.dropped) {
          if (job.pending.empty()) job.pending_since = std::chrono::steady_clock::now();
          job.pending.insert(job.pending.end(), audio.begin() + static_cast<long>(streamed_),
                             audio.end());
        }
        streamed_ = audio.size();
      }
    }
    behind_now = ShedLagging(std::chrono::steady_clock::now());
  }
  for (int i = 0; i < behind_now; ++i) SayBehind(*s);
  EmitEndpointEvents(*s, events);
  if (spoken_ms > 0 && listener_.speech_progress) listener_.speech_progress(spoken_ms);
  Kick();
}

// Under mu_: utterances start and end as jobs.
void HearingStage::TrackUtterances(std::vector<speech::EndpointEvent>& events) {
  const bool stream_to_decoder = StreamsWhileSpoken();
  for (auto& e : events) {
    if (e.kind == speech::EndpointEvent::Kind::kSpeechStart) {
      auto job = std::make_shared<Job>();
      job->t_start_ms = e.t_ms;
      jobs_.push_back(std::move(job));
      streamed_ = 0;
      continue;
    }
    if (jobs_.empty()) continue;
    Job& job = *jobs_.back();
    job.ended = true;
    job.ended_at = std::chrono::steady_clock::now();
    if (!e.utterance) {
      job.dropped = true;  // a cough, a click: no transcript
      continue;
    }
    ++utterances_;
    const auto& audio = e.utterance->audio;
    if (stream_to_decoder && audio.size() > streamed_ && !job.dropped) {
      if (job.pending.empty()) job.pending_since = job.ended_at;
      job.pending.insert(job.pending.end(), audio.begin() + static_cast<long>(streamed_),
                         audio.end());
    }
    streamed_ = 0;
    job.utterance = std::move(e.utterance);
  }
}

void HearingStage::EmitEndpointEvents(Session& s,
                                      const std::vector<speech::EndpointEvent>& events) {
  for (const auto& e : events) {
    const bool start = e.kind == speech::EndpointEvent::Kind::kSpeechStart;
    if (start)
      s.Emit(SpeechStarted{}, false, e.t_ms);
    else
      s.Emit(SpeechEnded{!e.utterance}, false, e.t_ms);
    s.timeline().AddEvent(e.t_ms, start ? "speech_start" : "speech_end");
    if (start && listener_.speech_start) listener_.speech_start(e.t_ms);
    if (!start && listener_.speech_end) listener_.speech_end(e.t_ms, e.utterance.has_value());
  }
}

// With the offline engine a turn streams into a recogniser while it is spoken, so its final
// result is ready moments after the person stops. With the remote engine the turn goes over
// whole at its end (a recogniser is taken only when the service fails).
bool HearingStage::StreamsWhileSpoken() const { return config_.remote.base_url.empty(); }

// Whether a job has something for an ASR thread to do now (under mu_).
bool HearingStage::HasWork(const Job& job) const {
  if (job.pumping) return false;
  if (job.dropped) return job.ended || job.stream != nullptr;  // retire it, or free its decoder
  if (!config_.remote.base_url.empty() && !job.remote_failed) return job.ended;
  if (!job.stream) return !job.requested && (job.ended || StreamsWhileSpoken());
  return !job.pending.empty() || job.ended;
}

// Schedules a Pump for each of the session's utterances that has work. A session's utterances
// decode in parallel when it has several (a backlog), each on its own decoder.
void HearingStage::Kick() {
  std::vector<std::shared_ptr<Job>> ready;
  {
    const std::lock_guard lock(mu_);
    for (const auto& job : jobs_)
      if (HasWork(*job)) {
        job->pumping = true;
        ready.push_back(job);
      }
  }
  for (const auto& job : ready) {
    if (services_.asr_pool().TrySubmit([self = shared_from_this(), job] { self->Pump(job); }))
      continue;
    // Full only with far more utterances in flight than it was sized for: the next audio
    // kicks again.
    const std::lock_guard lock(mu_);
    job->pumping = false;
    services_.log().Warn("speech recognition queue full");
  }
}

std::chrono::milliseconds HearingStage::Lag(const Job& job,
                                           std::chrono::steady_clock::time_point now) const {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  if (job.dropped) return milliseconds(0);
  if (!job.pending.empty()) return duration_cast<milliseconds>(now - job.pending_since);
  if (job.ended && job.utterance) return duration_cast<milliseconds>(now - job.ended_at);
  return milliseconds(0);
}

// Under mu_. Overload: a turn the local recogniser is more than --asr-max-lag-ms behind on
// (waiting for a decoder, or for a decoding thread) is failed now rather than answered seconds
// late; the CPU goes to the turns that can still be answered in time. Not for a recording's
// analysis (it feeds faster than real time, and nobody waits) nor the remote engine (it takes
// whole turns), nor while the decoders are still loading (a turn waiting for the first one is
// late once, at start-up, not because the machine is full).
bool HearingStage::ShedIfBehind(Job& job, std::chrono::steady_clock::time_point now) {
  if (recording_ || !StreamsWhileSpoken() || job.dropped) return false;
  if (Lag(job, now) <= std::chrono::milliseconds(config_.max_lag_ms)) return false;
  const auto pool = services_.decoders_state().IfLoaded();
  if (!pool || pool->loaded() < pool->size()) return false;
  job.dropped = true;
  job.pending.clear();
  ++refused_;
  ++behind_;
  return true;
}

int HearingStage::ShedLagging(std::chrono::steady_clock::time_point now) {
  int shed = 0;
  for (const auto& job : jobs_) shed += ShedIfBehind(*job, now) ? 1 : 0;
  return shed;
}

void HearingStage::SayBehind(Session& s) {
  services_.metrics()
      .GetCounter("parley_asr_overloaded_total", "Utterances not transcribed: recognition overloaded",
                  {{"reason", "behind"}})
      .Add();
  s.Emit(ErrorEvent{"asr_overloaded",
                    "speech recognition fell more than " + std::to_string(config_.max_lag_ms) +
                        " ms behind; an utterance was not transcribed",
                    std::nullopt});
}

// Under mu_: a job leaves the session (its decoder, if any, is released by the caller's
// reference going away outside the lock).
void HearingStage::Retire(const std::shared_ptr<Job>& job) {
  std::erase(jobs_, job);
  job->pumping = false;
  idle_.notify_all();
}

// ASR thread: moves one utterance along (decoder, audio, partial, final) until it must wait
// for audio, a decoder or the remote service.
void HearingStage::Pump(const std::shared_ptr<Job>& job) {
  const auto s = session_.lock();
  const bool remote = !config_.remote.base_url.empty();
  for (;;) {
    std::vector<int16_t> audio;
    bool ended = false;
    std::chrono::milliseconds lag{0};
    {
      std::unique_lock lock(mu_);
      const auto now = std::chrono::steady_clock::now();
      if (s && ShedIfBehind(*job, now)) {
        lock.unlock();
        SayBehind(*s);
        lock.lock();
      }
      if (!s || (job->dropped && job->ended)) {
        const bool lost = s && job->utterance.has_value();
        Retire(job);
        auto done = std::move(job->stream);
        lock.unlock();
        done.reset();  // back to the pool (maybe to another session) after the unlock
        if (lost && listener_.transcript_lost) listener_.transcript_lost();
        return;
      }
      if (job->dropped) {
        job->pending.clear();
        job->pumping = false;
        auto done = std::move(job->stream);  // its decoder is free for other turns now
        lock.unlock();
        return;
      }
      if (remote && !job->remote_failed) {
        if (!job->ended) {
          job->pumping = false;
          return;
        }
        lock.unlock();
        // Still "pumping" while the remote pool has it.
        if (services_.remote_pool().TrySubmit(
                [self = shared_from_this(), job] { self->TranscribeRemotely(job); }))
          return;
        lock.lock();
        job->remote_failed = true;  // decode it here (the recogniser takes the whole turn)
        continue;
      }
      if (!job->stream) {
        const bool ask = !job->requested && (job->ended || StreamsWhileSpoken());
        job->requested = true;
        job->pumping = false;
        lock.unlock();
        if (ask) RequestDecoder(*s, job);  // the pool calls back
        return;
      }
      lag = Lag(*job, now);
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
    if (ended || !ok) {
      // The decoder goes back to the pool, outside the lock (the pool may hand it straight to
      // another session), but the pointer is cleared under it: End() reads it.
      std::unique_ptr<speech::RecognitionStream> done;
      {
        const std::lock_guard lock(mu_);
        done = std::move(job->stream);
      }
    }
    if (!ok) {
      s->Emit(ErrorEvent{"asr_failed", "speech recognition failed: " + error, std::nullopt});
      const std::lock_guard lock(mu_);
      ++failed_;
      job->dropped = true;
      continue;
    }
    {
      // Shed while it decoded: its decoder is released and it is retired at the loop's top.
      const std::lock_guard lock(mu_);
      if (job->dropped) continue;
    }
    if (result) {
      Deliver(*s, *job, *result);
      const std::lock_guard lock(mu_);
      Retire(job);
      return;
    }
    MaybeEmitPartial(*s, *job, lag);
    const std::lock_guard lock(mu_);
    if (job->pending.empty() && !job->ended) {
      job->pumping = false;
      return;
    }
  }
}

void HearingStage::RequestDecoder(Session& s, const std::shared_ptr<Job>& job) {
  const auto decoder_pool = services_.Decoders();
  if (!decoder_pool) {
    s.Emit(ErrorEvent{"asr_unavailable",
                      "speech recognition is unavailable: " + services_.decoders_state().error(),
                      std::nullopt});
    {
      const std::lock_guard lock(mu_);
      job->dropped = true;
      ++failed_;
    }
    Kick();  // an ended turn is retired now, not at the next audio (there may be none)
    return;
  }
  if (decoder_pool->waiting() >= config_.queue) {
    services_.metrics()
        .GetCounter("parley_asr_overloaded_total",
                    "Utterances not transcribed: recognition overloaded", {{"reason", "queue"}})
        .Add();
    s.Emit(ErrorEvent{"asr_overloaded",
                      "speech recognition is saturated; an utterance was not transcribed",
                      std::nullopt});
    {
      const std::lock_guard lock(mu_);
      job->dropped = true;
      ++refused_;
    }
    Kick();
    return;
  }
  core::Gauge& waiting = services_.metrics().GetGauge(
      "parley_asr_waiting", "Utterances waiting for a free speech decoder");
  waiting.Add(1);
  std::weak_ptr<HearingStage> weak = weak_from_this();
  decoder_pool->Acquire([weak, job, &waiting](std::unique_ptr<speech::RecognitionStream> stream) {
    waiting.Add(-1);
    const auto self = weak.lock();
    if (!self) return;  // the session is gone: the stream's destructor returns the decoder
    {
      const std::lock_guard lock(self->mu_);
      job->stream = std::move(stream);
    }
    self->Kick();
  });
}

size_t HearingStage::Backlog() {
  const std::lock_guard lock(mu_);
  return jobs_.size();
}

void HearingStage::MaybeEmitPartial(Session& s, Job& job, std::chrono::milliseconds lag) {
  if (!config_.asr.partials || recording_) return;
  // Behind: partials go first (the final matters more than a running guess).
  if (lag > std::chrono::milliseconds(config_.shed_partials_lag_ms)) {
    const std::lock_guard lock(mu_);
    ++partials_shed_;
    services_.metrics()
        .GetCounter("parley_asr_partials_shed_total",
                    "Partial transcripts skipped while recognition was behind")
        .Add();
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - job.last_partial_at < std::chrono::milliseconds(config_.partial_interval_ms)) return;
  job.last_partial_at = now;
  const double t0 = ThreadCpuSeconds();
  std::string text = job.stream->Partial();
  job.decode_s += ThreadCpuSeconds() - t0;
  if (text.empty() || text == job.last_partial) return;
  job.last_partial = text;
  if (listener_.partial) listener_.partial(text);
  s.Emit(TranscriptPartial{text, job.t_start_ms}, /*droppable=*/true);
}

// Remote pool: one utterance to the OpenAI-compatible service; on failure the utterance goes
// back to the session's queue for a pooled decoder.
void HearingStage::TranscribeRemotely(const std::shared_ptr<Job>& job) {
  const auto s = session_.lock();
  std::string error = "no transcription service";
  std::optional<speech::Recognition> r;
  const auto t0 = std::chrono::steady_clock::now();
  if (s && services_.remote_asr() != nullptr)
    r = services_.remote_asr()->Transcribe(job->utterance->audio, &error);
  job->decode_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (s && r) {
    Deliver(*s, *job, *r);
    const std::lock_guard lock(mu_);
    Retire(job);
    return;
  }
  if (s) {
    // An event: the client, the timeline and the server log all see the fallback.
    s->Emit(AsrFallback{"pocketsphinx", error});
    s->timeline().AddEvent(s->NowMs(), "asr_fallback");
    services_.log().Warn("remote speech recognition failed: decoding here",
                         {{"session_id", s->id()}, {"error", error}});
  }
  {
    const std::lock_guard lock(mu_);
    ++fallbacks_;
    job->remote_failed = true;  // decoded here: the recogniser takes the whole turn
    job->pumping = false;
  }
  Kick();
}

// A finished utterance: prosody, the transcript to the client, the timeline and talk metrics.
void HearingStage::Deliver(Session& s, const Job& job, const speech::Recognition& r) {
  const speech::Utterance& u = *job.utterance;
  const speech::Prosody prosody = speech::AnalyzeProsody(u.audio);
  core::Metrics& metrics = services_.metrics();
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
  TranscriptFinal final_event;
  final_event.text = r.text;
  final_event.t_start_ms = u.t_start_ms;
  final_event.t_end_ms = u.t_end_ms;
  final_event.confidence = Round(r.confidence, 0.001);
  final_event.engine = r.engine;
  final_event.words = Words(r, u.audio_start_ms);
  final_event.prosody = Summary(prosody);
  if (!r.text.empty()) {
    TranscriptTurn turn;
    turn.role = "user";
    turn.text = r.text;
    turn.t_start_ms = u.t_start_ms;
    turn.t_end_ms = u.t_end_ms;
    turn.extra = Json::Value(Json::objectValue);
    Json::Value words(Json::arrayValue);
    for (const auto& w : final_event.words) {
      Json::Value j(Json::objectValue);
      j["w"] = w.text;
      j["t_start"] = Json::Int64(w.t_start_ms);
      j["t_end"] = Json::Int64(w.t_end_ms);
      j["confidence"] = w.confidence;
      words.append(j);
    }
    turn.extra["words"] = words;
    turn.extra["confidence"] = final_event.confidence;
    turn.extra["engine"] = r.engine;
    Json::Value& p = turn.extra["prosody"];
    p["f0_mean_hz"] = OptionalJson(final_event.prosody.f0_mean_hz);
    p["f0_std_semitones"] = OptionalJson(final_event.prosody.f0_std_semitones);
    p["f0_range_semitones"] = OptionalJson(final_event.prosody.f0_range_semitones);
    p["volume_dbfs"] = OptionalJson(final_event.prosody.volume_dbfs);
    p["loudness_lufs"] = OptionalJson(final_event.prosody.loudness_lufs);
    s.timeline().AddTurn(std::move(turn));
  }
  s.Emit(std::move(final_event));
  {
    const std::lock_guard lock(mu_);
    ++recognised_;
    talk_.AddTurn(r, u.t_start_ms, u.t_end_ms, prosody);
  }
  if (listener_.final_transcript) listener_.final_transcript(r.text, r.confidence, u.t_end_ms);
}

void HearingStage::AddPartnerSpeech(int64_t t_start_ms, int64_t t_end_ms) {
  const std::lock_guard lock(mu_);
  talk_.AddPartnerSpeech(t_start_ms, t_end_ms);
}

// Ends a turn in progress: once a start's pipeline has drained (after `stop`, a dropped
// connection, the end). Until then the turn would hold its decoder, one of a few shared by all
// sessions, for as long as no audio comes: a storm of connections dropped mid-sentence would
// leave every other turn waiting for a decoder until the dropped sessions ended.
void HearingStage::Flush() {
  const auto s = session_.lock();
  std::vector<speech::EndpointEvent> events;
  {
    const std::lock_guard lock(mu_);
    if (!endpointer_) return;
    endpointer_->Flush(&events);
    TrackUtterances(events);
  }
  if (s) EmitEndpointEvents(*s, events);
  Kick();
}

void HearingStage::End(Json::Value* patch) {
  if (!config_.enabled) return;
  // The media pipeline has drained (its stage ended first): a turn still open ends here.
  Flush();
  std::unique_lock lock(mu_);
  ended_ = true;
  // Transcripts of the last utterances belong in the report: wait for them (bounded).
  if (!idle_.wait_for(lock, std::chrono::seconds(services_.config().end_wait_s),
                      [&] { return jobs_.empty(); })) {
    Json::Value jobs(Json::arrayValue);
    for (const auto& job : jobs_) {
      Json::Value j;
      j["t_start_ms"] = Json::Int64(job->t_start_ms);
      j["ended"] = job->ended;
      j["dropped"] = job->dropped;
      j["requested"] = job->requested;
      j["decoding"] = job->stream != nullptr;
      j["pumping"] = job->pumping;
      j["pending_samples"] = static_cast<Json::UInt64>(job->pending.size());
      jobs.append(j);
    }
    services_.log().Warn("the session ended with utterances not transcribed in time",
                         {{"end_wait_s", services_.config().end_wait_s}, {"utterances", jobs}});
  }
  lock.unlock();
  Summarize(patch);
}

void HearingStage::Summarize(Json::Value* patch) {
  if (!config_.enabled) return;
  const std::lock_guard lock(mu_);
  if (!first_audio_ms_) return;  // no audio: nothing measured
  const double audio_s = static_cast<double>(last_audio_ms_ - *first_audio_ms_) / 1000;
  const speech::TalkSummary t = talk_.Summarize(audio_s);
  Json::Value& mx = (*patch)["metrics"];
  mx["turns"] = t.turns;
  mx["talk_ratio"] = Round(t.talk_ratio, 0.0001);
  mx["speaking_rate_wpm"] =
      t.speech_s > 0 ? Json::Value(Round(t.speaking_rate_wpm, 0.1)) : Json::Value();
  mx["filler_words"] = t.filler_words;
  mx["questions_asked"] = t.questions_asked;
  mx["longest_pause_s"] = Round(t.longest_pause_s, 0.01);
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
  sp["utterances"] = static_cast<Json::UInt64>(utterances_);
  sp["transcribed"] = static_cast<Json::UInt64>(recognised_);
  sp["failed"] = static_cast<Json::UInt64>(failed_);
  sp["refused"] = static_cast<Json::UInt64>(refused_);
  // How many turns have no transcript, and why (each also an error event to the client).
  Json::Value& lost = sp["not_transcribed"];
  lost["recogniser_behind"] = static_cast<Json::UInt64>(behind_);
  lost["queue_full"] = static_cast<Json::UInt64>(refused_ - behind_);
  lost["asr_failed"] = static_cast<Json::UInt64>(failed_);
  sp["partials_shed"] = static_cast<Json::UInt64>(partials_shed_);
  sp["remote_fallbacks"] = static_cast<Json::UInt64>(fallbacks_);
  if (echo_ && (echo_->active() || echo_->stats().frames > 0)) {
    const speech::EchoStats e = echo_->stats();
    Json::Value& ec = mx["echo"];
    ec["steps_under_voice"] = static_cast<Json::UInt64>(e.frames);
    ec["steps_taken_as_echo"] = static_cast<Json::UInt64>(e.gated_frames);
    ec["delay_ms"] = e.delay_ms ? Json::Value(*e.delay_ms) : Json::Value();
    ec["erle_db"] = e.erle_db ? Json::Value(Round(*e.erle_db, 0.1)) : Json::Value();
  }
}

}  // namespace parley::session
