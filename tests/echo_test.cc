// The server-side echo canceller on real voices: Flite's persona voice played "through
// speakers" (delayed, attenuated, with room noise) into a microphone, with and without a
// recorded person talking over it. What counts is what the VAD then hears.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <random>

#include "speech/speech.h"
#include "tests/support/flite_voice.h"
#include "tests/support/recorded_turns.h"

namespace parley::testing {
namespace {

constexpr int kRate = 16000;
constexpr int kFrame = 320;  // 20 ms, as the session feeds its hearing
constexpr int64_t kPersonaStartMs = 1000;

const std::vector<int16_t>& PersonaVoice() {
  static const auto pcm = FliteSpeak(
      "slt",
      "Thanks for coming in today. I hope the place was easy to find. Tell me a little about "
      "yourself, and what made you interested in this role. We can start wherever you like.");
  return pcm;
}

const std::vector<int16_t>& UserVoice() {
  static const std::vector<int16_t> longest = [] {
    std::vector<int16_t> best;
    for (auto& t : RecordedTurns(true))
      if (t.pcm.size() > best.size() && t.pcm.size() < 16000 * 6) best = t.pcm;
    return best;
  }();
  return longest;
}

struct Scenario {
  int delay_ms = 150;
  double attenuation_db = 6;
  double noise_dbfs = -60;
  bool user_talks = false;
  int64_t user_start_ms = 3000;
  bool cancel = true;
  bool persona_speaks = true;
};

struct Outcome {
  std::vector<speech::EndpointEvent> events;
  speech::EchoStats stats;
  int64_t end_ms = 0;
};

Outcome Simulate(const Scenario& sc) {
  const auto& persona = PersonaVoice();
  const auto& user = UserVoice();
  speech::EchoConfig config;
  config.enabled = sc.cancel;
  speech::EchoCanceller echo(config);
  std::string error;
  auto vad = speech::Endpointer::Create(speech::EndpointConfig{}, &error);
  EXPECT_TRUE(vad) << error;
  std::mt19937 rng(7);
  std::normal_distribution<double> noise(0.0, 32768.0 * std::pow(10.0, sc.noise_dbfs / 20.0));
  const double gain = std::pow(10.0, -sc.attenuation_db / 20.0);
  const int64_t persona_end_ms =
      kPersonaStartMs + static_cast<int64_t>(persona.size()) * 1000 / kRate;
  Outcome out;
  out.end_ms = persona_end_ms + 1500;
  int64_t sent_until_ms = kPersonaStartMs;
  std::vector<int16_t> frame(kFrame);
  for (int64_t t = 0; t < out.end_ms; t += kFrame * 1000 / kRate) {
    // The server sends the voice in real time (a little ahead of the microphone).
    while (sc.persona_speaks && sent_until_ms < std::min(t + 60, persona_end_ms)) {
      const size_t at = static_cast<size_t>((sent_until_ms - kPersonaStartMs) * kRate / 1000);
      const size_t n = std::min<size_t>(kFrame, persona.size() - at);
      echo.AddReference(sent_until_ms, std::span(persona).subspan(at, n));
      sent_until_ms += 20;
    }
    for (int i = 0; i < kFrame; ++i) {
      const int64_t sample = t * kRate / 1000 + i;
      double x = noise(rng);
      const int64_t p = sample - (kPersonaStartMs + sc.delay_ms) * kRate / 1000;
      if (sc.persona_speaks && p >= 0 && p < static_cast<int64_t>(persona.size()))
        x += gain * persona[p];
      const int64_t u = sample - sc.user_start_ms * kRate / 1000;
      if (sc.user_talks && u >= 0 && u < static_cast<int64_t>(user.size())) x += user[u];
      frame[i] = static_cast<int16_t>(std::clamp(x, -32768.0, 32767.0));
    }
    echo.Process(t, frame);
    if (getenv("ECHO_DEBUG") && sc.cancel && sc.delay_ms == atoi(getenv("ECHO_DEBUG")) &&
        !sc.user_talks) {
      double e = 0;
      for (auto v : frame) e += double(v) * v;
      fprintf(stderr, "t %ld out %.1f\n", long(t),
              10 * std::log10(e / kFrame / 32768.0 / 32768.0 + 1e-12));
    }
    vad->Feed(t, frame, &out.events);
  }
  vad->Flush(&out.events);
  out.stats = echo.stats();
  return out;
}

// Speech heard once the persona has begun (the VAD may settle on the room's noise before).
int SpeechStarts(const Outcome& o) {
  return static_cast<int>(std::count_if(o.events.begin(), o.events.end(), [](const auto& e) {
    return e.kind == speech::EndpointEvent::Kind::kSpeechStart && e.t_ms >= kPersonaStartMs;
  }));
}

std::string Starts(const Outcome& o) {
  std::string s = "speech starts at";
  for (const auto& e : o.events)
    if (e.kind == speech::EndpointEvent::Kind::kSpeechStart) s += " " + std::to_string(e.t_ms);
  return s + " ms";
}

TEST(Echo, ThePersonasOwnVoiceInTheMicrophoneIsNeverHeardAsSpeech) {
  ASSERT_FALSE(PersonaVoice().empty());
  for (const int delay : {60, 150, 300}) {
    for (const double attenuation : {6.0, 20.0}) {
      Scenario sc;
      sc.delay_ms = delay;
      sc.attenuation_db = attenuation;
      SCOPED_TRACE("delay " + std::to_string(delay) + " ms, " + std::to_string(attenuation) +
                   " dB");
      sc.cancel = false;
      EXPECT_GT(SpeechStarts(Simulate(sc)), 0) << "without cancelling, the echo is heard as speech";
      sc.cancel = true;
      const Outcome o = Simulate(sc);
      EXPECT_EQ(SpeechStarts(o), 0) << Starts(o);
      ASSERT_TRUE(o.stats.delay_ms);
      EXPECT_NEAR(*o.stats.delay_ms, delay, 30) << "the delay search found the echo";
      ASSERT_TRUE(o.stats.erle_db);
      std::cout << "delay " << delay << " ms, -" << attenuation << " dB: ERLE " << *o.stats.erle_db
                << " dB, gated " << o.stats.gated_frames << "/" << o.stats.frames << " steps\n";
    }
  }
}

// Milliseconds of the user's own speech inside the turns the VAD found.
int64_t Covered(const Outcome& o, const Scenario& sc) {
  const int64_t user_ms = static_cast<int64_t>(UserVoice().size()) * 1000 / kRate;
  int64_t covered = 0;
  for (const auto& e : o.events) {
    if (e.kind != speech::EndpointEvent::Kind::kSpeechEnd || !e.utterance) continue;
    const int64_t a = std::max(e.utterance->t_start_ms, sc.user_start_ms);
    const int64_t b = std::min(e.utterance->t_end_ms, sc.user_start_ms + user_ms);
    covered += std::max<int64_t>(0, b - a);
  }
  return covered;
}

TEST(Echo, APersonTalkingOverTheEchoIsStillHeardFromTheStart) {
  ASSERT_FALSE(UserVoice().empty());
  for (const int delay : {60, 300}) {
    Scenario sc;
    sc.delay_ms = delay;
    sc.attenuation_db = 6;
    sc.user_talks = true;
    SCOPED_TRACE("delay " + std::to_string(delay) + " ms");
    const Outcome o = Simulate(sc);
    const auto start = std::find_if(o.events.begin(), o.events.end(), [](const auto& e) {
      return e.kind == speech::EndpointEvent::Kind::kSpeechStart && e.t_ms >= kPersonaStartMs;
    });
    ASSERT_NE(start, o.events.end()) << "the user was not heard";
    EXPECT_GE(start->t_ms, sc.user_start_ms - 100) << "something before the user counted as speech";
    EXPECT_LE(start->t_ms, sc.user_start_ms + 300) << "the user was heard late";
    // What the VAD finds of the person is close to what it finds with no persona at all.
    Scenario alone = sc;
    alone.persona_speaks = false;
    const int64_t baseline = Covered(Simulate(alone), sc);
    const int64_t covered = Covered(o, sc);
    EXPECT_GT(covered, baseline * 6 / 10) << covered << " of " << baseline << " ms";
    std::cout << "delay " << delay << " ms: the user's speech heard over the echo " << covered
              << " of " << baseline << " ms\n";
  }
}

TEST(Echo, AClientThatCancelsItsOwnEchoIsHeardAtAnyLevelAfterTheFirstSecond) {
  Scenario sc;
  sc.attenuation_db = 70;  // the browser's own canceller left nothing
  sc.user_talks = true;
  const Outcome o = Simulate(sc);
  Scenario alone = sc;
  alone.persona_speaks = false;
  const int64_t baseline = Covered(Simulate(alone), sc);
  EXPECT_GE(Covered(o, sc), baseline * 9 / 10);
}

TEST(Echo, WithoutThePersonaSpeakingNothingIsTouched) {
  speech::EchoConfig config;
  config.enabled = true;
  speech::EchoCanceller echo(config);
  std::vector<int16_t> frame(kFrame);
  for (int i = 0; i < kFrame; ++i) frame[i] = static_cast<int16_t>(8000 * std::sin(i * 0.3));
  const auto copy = frame;
  EXPECT_EQ(echo.Process(500, frame), 0);
  EXPECT_EQ(frame, copy);
  EXPECT_EQ(echo.stats().frames, 0u);
}

}  // namespace
}  // namespace parley::testing
