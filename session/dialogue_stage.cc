// Dialogue: the turn-taking state machine (dialogue::TurnTaking) hears the user's turns (final
// transcripts, typed `say`s), the voice's life and the clock (one shared timer queue for its
// deadlines); when it says "answer", "greet" or "speak up", the reply runs on the stage's strand
// (the voice pool): safety first, then the LLM when one is configured (the offline persona
// engine when it fails, said as an engine_fallback), each piece of text streamed as reply.delta
// and each finished sentence synthesized and queued at once, so the voice starts while the rest
// is still being written.
#include <algorithm>
#include <numeric>
#include <sstream>

#include "session/internal.h"

namespace parley::session {
namespace {

Json::Value LatencySummary(std::vector<int64_t> v) {
  if (v.empty()) return Json::Value();
  std::sort(v.begin(), v.end());
  Json::Value j(Json::objectValue);
  const double sum = std::accumulate(v.begin(), v.end(), 0.0);
  j["mean"] = Round(sum / static_cast<double>(v.size()), 1);
  j["median"] = Json::Int64(v[v.size() / 2]);
  j["p95"] = Json::Int64(v[std::min(v.size() - 1, v.size() * 95 / 100)]);
  j["max"] = Json::Int64(v.back());
  j["turns"] = static_cast<Json::UInt64>(v.size());
  return j;
}

Json::Value TimingJson(const ReplyTiming& t) {
  Json::Value j(Json::objectValue);
  const auto put = [&](const char* k, const std::optional<int64_t>& v) {
    j[k] = v ? Json::Value(Json::Int64(*v)) : Json::Value();
  };
  put("transcript", t.transcript_ms);
  put("first_text", t.first_text_ms);
  put("first_audio", t.first_audio_ms);
  return j;
}

// The words of a reply heard by `played_ms`: whole sentences that had played, and the share of
// the next one's words that its played part stands for.
std::string HeardText(const std::vector<std::pair<std::string, int64_t>>& sentences,
                      int64_t played_ms) {
  std::string heard;
  int64_t begin = 0;
  for (const auto& [sentence, end] : sentences) {
    if (played_ms >= end) {
      heard += (heard.empty() ? "" : " ") + sentence;
    } else {
      const double share = end > begin ? static_cast<double>(played_ms - begin) / (end - begin) : 0;
      std::istringstream in(sentence);
      std::vector<std::string> words;
      for (std::string w; in >> w;) words.push_back(w);
      const auto n = static_cast<size_t>(std::max(0.0, share) * static_cast<double>(words.size()));
      for (size_t i = 0; i < n; ++i) heard += (heard.empty() ? "" : " ") + words[i];
      break;
    }
    begin = end;
  }
  return heard;
}

}  // namespace

DialogueStage::DialogueStage(std::weak_ptr<Session> session, Services& services,
                             std::shared_ptr<PlaybackStage> playback,
                             std::shared_ptr<HearingStage> hearing)
    : session_(std::move(session)),
      services_(services),
      playback_(std::move(playback)),
      hearing_(hearing),
      strand_(services.reply_pool()),
      turn_taking_(services.config().turn_taking),
      interruptions_(services.config().interruption) {
  if (const auto s = session_.lock()) persona_ = services.Persona(s->persona_id());
  intimacy_start_ = intimacy_max_ = intimacy_.level();
}

DialogueStage::~DialogueStage() {
  if (timer_ != 0) services_.timers().Cancel(timer_);
}

int64_t DialogueStage::Now() const {
  const auto s = session_.lock();
  return s ? s->NowMs() : 0;
}

void DialogueStage::SetListenOnly() {
  const std::lock_guard lock(mu_);
  listen_only_ = true;
}

void DialogueStage::OnMediaStarted() {
  {
    const std::lock_guard lock(mu_);
    turn_taking_.OnMediaStarted(Now());
  }
  Step();
}

void DialogueStage::OnSpeechStart(int64_t t_ms) {
  dialogue::InterruptionPolicy::Action act;
  {
    const std::lock_guard lock(mu_);
    act = interruptions_.OnUserSpeechStart(Now());
    if (interruptions_.persona_speaking()) ++overlaps_;
    turn_taking_.OnUserSpeechStart(Now());
    user_speaking_ = true;
    smiled_in_turn_ = smiling_;
    // The user's response latency: the persona's voice ended, this is their first speech since.
    if (persona_ended_ms_ && t_ms >= *persona_ended_ms_)
      response_latencies_ms_.push_back(t_ms - *persona_ended_ms_);
    persona_ended_ms_.reset();
  }
  Apply(act);
  Step();
}

void DialogueStage::OnSpeechEnd(int64_t, bool transcript_coming) {
  dialogue::InterruptionPolicy::Action act;
  {
    const std::lock_guard lock(mu_);
    turn_taking_.OnUserSpeechEnd(Now(), transcript_coming);
    user_speaking_ = false;
    act = interruptions_.OnUserSpeechEnd(Now(), transcript_coming);
  }
  Apply(act);
  Step();
}

void DialogueStage::OnSpeechProgress(int64_t spoken_ms) {
  dialogue::InterruptionPolicy::Action act;
  {
    const std::lock_guard lock(mu_);
    if (!interruptions_.paused()) return;  // nothing to decide (the common case: cheap)
    act = interruptions_.OnUserSpeechProgress(spoken_ms, Now());
  }
  Apply(act);
  if (act != dialogue::InterruptionPolicy::Action::kNone) Step();
}

void DialogueStage::OnPartial(const std::string& text) {
  dialogue::InterruptionPolicy::Action act;
  {
    const std::lock_guard lock(mu_);
    act = interruptions_.OnUserWords(text, Now());
  }
  Apply(act);
  Step();
}

// Outside mu_: the playback calls back (OnPlayback) with its events.
void DialogueStage::Apply(dialogue::InterruptionPolicy::Action act) {
  using Act = dialogue::InterruptionPolicy::Action;
  switch (act) {
    case Act::kPause:
      playback_->Pause();
      break;
    case Act::kResume:
      playback_->Resume();
      break;
    case Act::kCancel: {
      {
        const std::lock_guard lock(mu_);
        barge_in_pending_ = true;
      }
      playback_->Cancel("barge_in");
      break;
    }
    case Act::kNone:
      break;
  }
}

void DialogueStage::OnFinal(const std::string& text, double confidence, int64_t t_end_ms) {
  dialogue::InterruptionPolicy::Action act;
  bool backchannel = false;
  {
    const std::lock_guard lock(mu_);
    const bool persona_had_floor = interruptions_.persona_speaking();
    act = interruptions_.OnUserFinal(text, confidence, Now());
    // Heard over the persona's voice and not an interruption ("mhm", a cough, its own echo's
    // residue): the persona keeps the floor and the words are not a turn to answer later.
    backchannel = persona_had_floor && act != dialogue::InterruptionPolicy::Action::kCancel;
    if (backchannel) ++backchannels_;
  }
  Apply(act);
  {
    const std::lock_guard lock(mu_);
    // Either way an answer held back for this transcript may go now (Step).
    turn_taking_.OnTranscript(Now());
    if (!backchannel && text.find_first_not_of(' ') != std::string::npos) {
      turn_end_ms_ = t_end_ms;
      final_at_ms_ = Now();
      turn_taking_.OnUserTurn(text, Now());
    }
  }
  Step();
}

void DialogueStage::OnTranscriptLost() {
  {
    const std::lock_guard lock(mu_);
    turn_taking_.OnTranscript(Now());
  }
  Step();
}

bool DialogueStage::Say(const std::string& text, std::string* error) {
  const auto s = session_.lock();
  if (!s) {
    *error = "the session has ended";
    return false;
  }
  if (text.find_first_not_of(" \t\n") == std::string::npos) {
    *error = "\"text\" must not be empty";
    return false;
  }
  const size_t limit = static_cast<size_t>(services_.config().max_say_chars);
  if (text.size() > limit) {
    *error = "\"text\" is longer than " + std::to_string(limit) + " bytes";
    return false;
  }
  const int64_t now = s->NowMs();
  {
    const std::lock_guard lock(mu_);
    if (ended_) {
      *error = "the session has ended";
      return false;
    }
    ++typed_turns_;
    turn_end_ms_ = now;
    final_at_ms_ = now;
    if (persona_ended_ms_ && now >= *persona_ended_ms_)
      response_latencies_ms_.push_back(now - *persona_ended_ms_);
    persona_ended_ms_.reset();
    turn_taking_.OnUserTurn(text, now);
  }
  TranscriptTurn turn;
  turn.role = "user";
  turn.text = text;
  turn.t_start_ms = now;
  turn.t_end_ms = now;
  turn.extra = Json::Value(Json::objectValue);
  turn.extra["typed"] = true;
  s->timeline().AddTurn(std::move(turn));
  Step();
  return true;
}

void DialogueStage::OnVisionEvent(const std::string& type) {
  const std::lock_guard lock(mu_);
  if (type == "smile_start") {
    smiling_ = true;
    if (user_speaking_) smiled_in_turn_ = true;
  } else if (type == "smile_end") {
    smiling_ = false;
  }
}

std::optional<int64_t> DialogueStage::OnPlayback(const media::PlaybackEvent& e) {
  const auto s = session_.lock();
  const int64_t now = s ? s->NowMs() : 0;
  std::optional<int64_t> latency;
  {
    const std::lock_guard lock(mu_);
    const auto it = spoken_.find(e.utterance);
    if (it == spoken_.end()) return std::nullopt;
    Spoken& sp = it->second;
    if (e.kind == media::PlaybackEvent::Kind::kStarted) {
      sp.started_ms = now;
      if (sp.turn_end_ms) {
        latency = now - *sp.turn_end_ms;
        sp.reply_latency_ms = latency;
        reply_latencies_ms_.push_back(*latency);
      }
      return latency;
    }
    if (e.kind != media::PlaybackEvent::Kind::kEnded &&
        e.kind != media::PlaybackEvent::Kind::kCancelled)
      return std::nullopt;
    // What the client says it played wins over the server's reckoning.
    int64_t played = e.played_ms;
    if (const auto client = playback_->ClientPlayed(e.utterance))
      played = std::min(played, *client);
    const int64_t start = sp.started_ms.value_or(now - played);
    persona_speech_ms_ += played;
    const bool cut = e.kind == media::PlaybackEvent::Kind::kCancelled;
    const std::string heard = cut ? HeardText(sp.sentences, played) : sp.text;
    if (cut) {
      sp.heard = heard;
      if (barge_in_pending_) {
        barge_in_pending_ = false;
        ++interrupted_turns_;
        interrupted_at_ms_.push_back(played);
      }
      // The history holds what the user heard, not what the engine wrote.
      if (sp.history_index && *sp.history_index < history_.size())
        history_[*sp.history_index].text = heard;
    }
    interruptions_.OnPersonaSpeechEnd(now);
    if (s) {
      TranscriptTurn turn;
      turn.role = "assistant";
      turn.text = sp.text;
      turn.t_start_ms = start;
      turn.t_end_ms = start + played;
      turn.extra = Json::Value(Json::objectValue);
      turn.extra["utterance"] = e.utterance;
      turn.extra["played_ms"] = Json::Int64(played);
      turn.extra["interrupted"] = cut;
      if (cut) turn.extra["heard_text"] = heard;
      turn.extra["engine"] = sp.engine;
      turn.extra["intimacy"] = sp.intimacy;
      turn.extra["style"] = sp.style;
      if (sp.reply_latency_ms) turn.extra["reply_latency_ms"] = Json::Int64(*sp.reply_latency_ms);
      turn.extra["timing_ms"] = TimingJson(sp.timing);
      s->timeline().AddTurn(std::move(turn));
    }
    if (const auto hearing = hearing_.lock()) hearing->AddPartnerSpeech(start, start + played);
    if (!cut || sp.done) {
      spoken_.erase(it);
    } else {
      sp.recorded = true;  // the reply is still being written: RunReply lets it go
    }
    persona_ended_ms_ = now;
    turn_taking_.OnPersonaSpeechEnd(now);
  }
  Step();
  return latency;
}

void DialogueStage::Step() {
  dialogue::TurnTaking::Action action;
  auto interrupt = dialogue::InterruptionPolicy::Action::kNone;
  {
    const std::lock_guard lock(mu_);
    if (ended_ || listen_only_) return;
    const int64_t now = Now();
    interrupt = interruptions_.Poll(now);
    action = turn_taking_.Poll(now);
    if (timer_ != 0) services_.timers().Cancel(timer_);
    timer_ = 0;
    auto deadline = turn_taking_.NextDeadline();
    if (const auto d = interruptions_.NextDeadline(); d && (!deadline || *d < *deadline))
      deadline = d;
    if (action.kind == dialogue::TurnTaking::Action::Kind::kNone && deadline) {
      const auto at = core::TimerQueue::Clock::now() +
                      std::chrono::milliseconds(std::max<int64_t>(0, *deadline - now));
      timer_ = services_.timers().Schedule(at, [weak = weak_from_this()] {
        if (const auto self = weak.lock()) self->Step();
      });
    }
  }
  if (interrupt != dialogue::InterruptionPolicy::Action::kNone) {
    Apply(interrupt);
    Step();  // the cancel or resume changed what the turn-taking may do
    return;
  }
  if (action.kind == dialogue::TurnTaking::Action::Kind::kNone) return;
  // Refused by a full pool, it stays queued and runs with the next reply or at the end.
  strand_.Post([self = shared_from_this(), action = std::move(action)] { self->RunReply(action); });
}

void DialogueStage::RunReply(dialogue::TurnTaking::Action action) {
  using Kind = dialogue::TurnTaking::Action::Kind;
  const auto s = session_.lock();
  dialogue::ReplyRequest request;
  request.persona = &persona_;
  std::optional<int64_t> turn_end;
  ReplyTiming timing;
  {
    const std::lock_guard lock(mu_);
    if (ended_ || !s) {
      turn_taking_.OnReplyFailed(Now());
      return;
    }
    request.kind = action.kind == Kind::kGreet     ? dialogue::ReplyRequest::Kind::kGreeting
                   : action.kind == Kind::kSpeakUp ? dialogue::ReplyRequest::Kind::kSpeakUp
                                                   : dialogue::ReplyRequest::Kind::kAnswer;
    const size_t keep = static_cast<size_t>(services_.config().history_turns) * 2;
    request.history.assign(
        history_.size() > keep ? history_.end() - static_cast<long>(keep) : history_.begin(),
        history_.end());
    if (action.kind == Kind::kAnswer) {
      request.user_text = action.text;
      const dialogue::TurnSignals signals = dialogue::AnalyzeTurn(action.text, smiled_in_turn_);
      intimacy_.Update(signals);
      ++user_turns_.turns;
      user_turns_.about_persona += signals.about_persona ? 1 : 0;
      user_turns_.self_disclosures += signals.self_disclosure ? 1 : 0;
      user_turns_.positive_words += signals.positive_words;
      user_turns_.negative_words += signals.negative_words;
      user_turns_.smiled += signals.smiled ? 1 : 0;
      // Not the answer to a question the persona just asked: the user took the lead.
      user_turns_.opened += last_reply_asked_ ? 0 : 1;
      intimacy_max_ = std::max(intimacy_max_, intimacy_.level());
      smiled_in_turn_ = false;
      history_.push_back({dialogue::Message::Role::kUser, action.text});
      turn_end = turn_end_ms_;
      if (turn_end && final_at_ms_) timing.transcript_ms = *final_at_ms_ - *turn_end;
    }
    request.intimacy = intimacy_.level();
  }
  const dialogue::StyleLevel& style = dialogue::StyleFor(persona_, request.intimacy);
  auto utterance = playback_->Begin(persona_.voice, persona_.rate);
  const uint16_t id = utterance ? utterance->id() : 0;
  if (id != 0) {
    const std::lock_guard lock(mu_);
    Spoken& sp = spoken_[id];
    sp.turn_end_ms = turn_end;
    sp.intimacy = request.intimacy;
    sp.style = style.name;
    // The persona holds the floor from now: user speech pauses (or holds back) its voice.
    interruptions_.OnPersonaSpeechStart(Now());
  }
  const auto since_turn = [&]() -> std::optional<int64_t> {
    if (!turn_end) return std::nullopt;
    return s->NowMs() - *turn_end;
  };
  dialogue::SentenceSplitter splitter;
  bool spoke = false;
  std::string streamed;
  const auto speak = [&](const std::string& sentence) {
    if (!utterance || !utterance->Speak(sentence)) return;
    spoke = true;
    if (!timing.first_audio_ms) timing.first_audio_ms = since_turn();
    const std::lock_guard lock(mu_);
    if (const auto it = spoken_.find(id); it != spoken_.end())
      it->second.sentences.emplace_back(sentence, utterance->audio_ms());
  };
  const dialogue::DeltaSink on_delta = [&](std::string_view delta) {
    if (!timing.first_text_ms) timing.first_text_ms = since_turn();
    streamed.append(delta);
    s->Emit(ReplyDelta{id, std::string(delta)});
    std::vector<std::string> sentences;
    splitter.Feed(delta, &sentences);
    for (const auto& sentence : sentences) speak(sentence);
    const std::lock_guard lock(mu_);
    if (const auto it = spoken_.find(id); it != spoken_.end())
      it->second.text = streamed.substr(std::min(streamed.find_first_not_of(' '), streamed.size()));
    return !ended_ && !(utterance && utterance->cancelled());
  };

  std::string engine = "offline";
  std::string error;
  bool safety = false;
  std::optional<dialogue::SafetyHit> hit;
  if (request.kind == dialogue::ReplyRequest::Kind::kAnswer)
    hit = dialogue::CheckSafety(request.user_text);
  if (hit) {
    // Out of role, whatever the engine: a fixed supportive message.
    safety = true;
    s->Emit(SafetyNotice{hit->category, hit->message});
    s->timeline().AddEvent(s->NowMs(), "safety", [&] {
      Json::Value d(Json::objectValue);
      d["category"] = hit->category;
      return d;
    }());
    {
      const std::lock_guard lock(mu_);
      ++safety_events_;
      Json::Value entry(Json::objectValue);
      entry["t"] = Json::Int64(s->NowMs());
      entry["category"] = hit->category;
      safety_log_.append(entry);
    }
    on_delta(hit->message);
  } else {
    if (dialogue::LlmEngine* llm = services_.llm()) {
      if (llm->Reply(request, on_delta, &error)) {
        engine = "llm";
      } else if (error != "cancelled") {
        s->Emit(EngineFallback{"dialogue", "offline", error});
        s->timeline().AddEvent(s->NowMs(), "engine_fallback", [&] {
          Json::Value d(Json::objectValue);
          d["stage"] = "dialogue";
          d["reason"] = error;
          return d;
        }());
        services_.log().Warn("the dialogue service failed: the offline engine answers",
                             {{"session_id", s->id()}, {"error", error}});
        const std::lock_guard lock(mu_);
        ++engine_fallbacks_;
      }
    }
    if (engine != "llm" && error != "cancelled") {
      // What the LLM said before it failed stays said; the offline engine finishes the turn.
      if (!streamed.empty()) on_delta(" ");
      if (!offline_) offline_ = std::make_unique<dialogue::OfflineEngine>(persona_);
      std::string offline_error;
      if (!offline_->Reply(request, on_delta, &offline_error))
        services_.log().Warn("the offline engine had no reply",
                             {{"session_id", s->id()}, {"error", offline_error}});
    }
  }
  if (auto rest = splitter.Flush()) speak(*rest);
  std::string text = streamed;
  text.erase(0, text.find_first_not_of(' '));
  bool playing = false, cut = false;
  std::string heard;
  {
    const std::lock_guard lock(mu_);
    if (const auto it = spoken_.find(id); it != spoken_.end()) {
      Spoken& sp = it->second;
      if (sp.recorded) {  // interrupted while it was being written: its turn is in already
        cut = true;
        heard = sp.heard;
        spoken_.erase(it);
      } else if (spoke) {
        sp.text = text;
        sp.engine = engine;
        sp.timing = timing;
        sp.done = true;
        playing = true;
      } else {
        spoken_.erase(it);
      }
    }
  }
  if (utterance) utterance->Finish();
  s->Emit(ReplyEvent{spoke ? id : uint16_t{0}, text, engine, request.intimacy, style.name, safety,
                     timing});
  {
    const std::lock_guard lock(mu_);
    if (!text.empty()) {
      // The LLM's history holds what the user heard of an interrupted reply.
      history_.push_back({dialogue::Message::Role::kAssistant, cut ? heard : text});
      if (const auto it = spoken_.find(id); it != spoken_.end())
        it->second.history_index = history_.size() - 1;
      ++persona_turns_;
      last_reply_asked_ = text.find('?') != std::string::npos;
      if (last_reply_asked_) ++persona_questions_;
      ++engines_[engine];
    }
    // Ended already (a short voice, or interrupted), or no voice at all: listening again.
    const bool still_playing = playing && spoken_.contains(id);
    if (text.empty()) {
      turn_taking_.OnReplyFailed(Now());
    } else {
      turn_taking_.OnReplyReady(Now(), still_playing);
    }
    if (!playing && !cut) interruptions_.OnPersonaSpeechEnd(Now());
    if (!text.empty() && !playing && !cut) {  // no voice: the text alone is the turn
      TranscriptTurn turn;
      turn.role = "assistant";
      turn.text = text;
      turn.t_start_ms = turn.t_end_ms = s->NowMs();
      turn.extra = Json::Value(Json::objectValue);
      turn.extra["engine"] = engine;
      turn.extra["played_ms"] = 0;
      turn.extra["intimacy"] = request.intimacy;
      turn.extra["style"] = style.name;
      s->timeline().AddTurn(std::move(turn));
      persona_ended_ms_ = s->NowMs();
    }
  }
  Step();
}

void DialogueStage::Stop() {
  {
    const std::lock_guard lock(mu_);
    ended_ = true;
    if (timer_ != 0) services_.timers().Cancel(timer_);
    timer_ = 0;
  }
  // A reply in progress stops at its next piece (its sink says so); what is queued runs here
  // and finds the stage ended.
  strand_.Drain();
}

void DialogueStage::Measures(Json::Value* patch) {
  const std::lock_guard lock(mu_);
  Json::Value& mx = (*patch)["metrics"];
  if (!response_latencies_ms_.empty()) {
    std::vector<int64_t> v = response_latencies_ms_;
    std::sort(v.begin(), v.end());
    const double sum = std::accumulate(v.begin(), v.end(), 0.0);
    mx["response_latency_s"]["mean"] = Round(sum / static_cast<double>(v.size()) / 1000, 0.001);
    mx["response_latency_s"]["median"] = Round(static_cast<double>(v[v.size() / 2]) / 1000, 0.001);
    mx["response_latency_s"]["turns"] = static_cast<Json::UInt64>(v.size());
  }
  if (persona_turns_ == 0 && typed_turns_ == 0) return;
  Json::Value& c = mx["conversation"];
  c["persona_turns"] = persona_turns_;
  c["persona_questions"] = persona_questions_;
  c["persona_speech_s"] = Round(static_cast<double>(persona_speech_ms_) / 1000, 0.01);
  c["typed_turns"] = typed_turns_;
  c["reply_latency_ms"] = LatencySummary(reply_latencies_ms_);
  c["intimacy"]["start"] = intimacy_start_;
  c["intimacy"]["end"] = intimacy_.level();
  c["intimacy"]["max"] = intimacy_max_;
  c["engines"] = Json::Value(Json::objectValue);
  for (const auto& [name, n] : engines_) c["engines"][name] = n;
  c["engine_fallbacks"] = engine_fallbacks_;
  Json::Value& in = c["interruptions"];
  in["count"] = interrupted_turns_;
  in["false_alarms"] = interruptions_.false_interruptions();
  in["overlaps"] = overlaps_;
  in["backchannels"] = backchannels_;
  const double minutes = static_cast<double>(Now()) / 60000.0;
  in["per_min"] = minutes > 0 ? Round(interrupted_turns_ / minutes, 0.01) : 0.0;
  in["into_turn_ms"] = LatencySummary(interrupted_at_ms_);
  Json::Value& u = c["user_turns"];
  u["count"] = user_turns_.turns;
  u["opened"] = user_turns_.opened;
  u["questions_about_persona"] = user_turns_.about_persona;
  u["self_disclosures"] = user_turns_.self_disclosures;
  u["positive_words"] = user_turns_.positive_words;
  u["negative_words"] = user_turns_.negative_words;
  u["smiled"] = user_turns_.smiled;
  c["safety_events"] = safety_events_;
  if (safety_events_ > 0) {
    (*patch)["safety"]["events"] = safety_log_;
    (*patch)["safety"]["count"] = safety_events_;
  }
}

}  // namespace parley::session
