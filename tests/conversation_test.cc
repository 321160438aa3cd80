// The persona answers, through the real server: typed and spoken turns get a reply streamed as
// reply.delta then reply, and a paced voice (Opus or PCM packets between playback.start and
// playback.end) that decodes back to what was synthesized; the greeting when media starts;
// safety words; the LLM engine against a real local OpenAI-compatible server, its failures
// falling back to the offline engine; /api/voices and /api/tts with their bad inputs.
#include <gtest/gtest.h>
#include <json/json.h>
#include <opus/opus.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "speech/speech.h"
#include "tests/support/audio_files.h"
#include "tests/support/fake_openai.h"
#include "tests/support/flite_voice.h"
#include "tests/support/test_server.h"
#include "tests/support/webm_encoder.h"

namespace parley::testing {
namespace {

using namespace std::chrono_literals;

// Every message until `until` (a text message of that type) or the timeout; audio packets too.
struct Heard {
  std::vector<Json::Value> events;
  std::vector<std::string> packets;  // binary, header included
  const Json::Value* Find(const std::string& type, int nth = 0) const {
    for (const auto& e : events)
      if (e["type"] == type && nth-- == 0) return &e;
    return nullptr;
  }
  int Count(const std::string& type) const {
    int n = 0;
    for (const auto& e : events) n += e["type"] == type ? 1 : 0;
    return n;
  }
};

std::string Types(const Heard& h) {
  std::string out;
  for (const auto& e : h.events) {
    out += e["type"].asString();
    if (e.isMember("utterance")) out += "(" + e["utterance"].asString() + ")";
    if (e["type"] == "transcript.final" || e["type"] == "transcript.partial")
      out += "'" + e["text"].asString() + "'";
    out += " ";
  }
  return out;
}

// Every message received, before it is kept (a room's microphone hears the packets as they come).
using Observer = std::function<void(const WsMessage&)>;

Heard ListenUntil(WsClient& ws, const std::string& until, std::chrono::milliseconds timeout,
                  int occurrences = 1, const Observer& observe = nullptr) {
  Heard h;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int seen = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    auto m = ws.Receive(std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now()));
    if (!m) break;
    if (observe) observe(*m);
    if (m->binary) {
      h.packets.push_back(m->data);
      continue;
    }
    Json::Value v;
    Json::CharReaderBuilder b;
    std::string err;
    std::istringstream in(m->data);
    if (!Json::parseFromStream(b, in, &v, &err)) {
      ADD_FAILURE() << "not JSON: " << m->data.substr(0, 2000) << " (" << err << ")";
      continue;
    }
    h.events.push_back(v);
    if (v["type"] == until && ++seen == occurrences) break;
  }
  return h;
}

uint16_t PacketUtterance(const std::string& p) {
  return static_cast<uint16_t>((static_cast<uint8_t>(p[9]) << 8) | static_cast<uint8_t>(p[10]));
}

// Samples at 48 kHz of the Opus packets of `utterance`.
size_t DecodedSamples(const std::vector<std::string>& packets, uint16_t utterance) {
  int err = 0;
  OpusDecoder* dec = opus_decoder_create(48000, 1, &err);
  std::vector<int16_t> out(5760);
  size_t n = 0;
  for (const auto& p : packets) {
    if (p[0] != '\x10' || PacketUtterance(p) != utterance) continue;
    const int got = opus_decode(dec, reinterpret_cast<const unsigned char*>(p.data() + 11),
                                static_cast<opus_int32>(p.size() - 11), out.data(), 5760, 0);
    if (got > 0) n += static_cast<size_t>(got);
  }
  opus_decoder_destroy(dec);
  return n;
}

void NoAsr(app::AppConfig& c) {
  c.conversation.hearing.enabled = false;
  c.conversation.server_landmarks = false;
}

TEST(Conversation, ATypedTurnGetsAStreamedReplyAndAPacedVoiceThatDecodesToItsLength) {
  TestServer s(NoAsr);
  WsHub hub;
  const std::string id = s.CreateSession("alice", "seoa");
  auto ws = s.Join(hub, "practice", id, "alice");
  ws->SendText(R"({"type":"say","text":"What do you do for a living?"})");
  const Heard h = ListenUntil(*ws, "playback.end", 20s);
  const Json::Value* reply = h.Find("reply");
  ASSERT_TRUE(reply) << "no reply";
  EXPECT_EQ((*reply)["engine"].asString(), "offline");
  EXPECT_NE((*reply)["text"].asString().find("marketing lead"), std::string::npos);
  EXPECT_EQ((*reply)["style"].asString(), "formal");
  EXPECT_TRUE((*reply)["intimacy"].isInt());
  const auto utterance = static_cast<uint16_t>((*reply)["utterance"].asUInt());
  ASSERT_NE(utterance, 0);
  // The deltas spell the reply, and came first.
  std::string deltas;
  for (const auto& e : h.events)
    if (e["type"] == "reply.delta") deltas += e["text"].asString();
  EXPECT_EQ(deltas, (*reply)["text"].asString());
  const Json::Value* start = h.Find("playback.start");
  const Json::Value* end = h.Find("playback.end");
  ASSERT_TRUE(start && end);
  EXPECT_EQ((*start)["utterance"].asUInt(), utterance);
  EXPECT_TRUE((*start)["reply_latency_ms"].isInt());
  // The voice: Opus packets of that utterance, as long as playback.end says was played.
  const double voice_ms = DecodedSamples(h.packets, utterance) / 48.0;
  EXPECT_GT(voice_ms, 1000);
  EXPECT_NEAR((*end)["played_ms"].asDouble(), voice_ms, 60);

  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  const Json::Value report =
      Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
  ASSERT_EQ(report["transcript"].size(), 2u) << report["transcript"];
  EXPECT_EQ(report["transcript"][0]["role"].asString(), "user");
  EXPECT_TRUE(report["transcript"][0]["typed"].asBool());
  const Json::Value& said = report["transcript"][1];
  EXPECT_EQ(said["role"].asString(), "assistant");
  EXPECT_EQ(said["text"], (*reply)["text"]);
  EXPECT_NEAR(said["played_ms"].asDouble(), voice_ms, 60);
  EXPECT_FALSE(said["interrupted"].asBool());
  EXPECT_EQ(report["metrics"]["conversation"]["persona_turns"].asInt(), 1);
  EXPECT_EQ(report["metrics"]["conversation"]["typed_turns"].asInt(), 1);
}

TEST(Conversation, ThePersonaGreetsWhenMediaStartsAndAnswersSpeech) {
  TestServer s([](app::AppConfig& c) { c.conversation.server_landmarks = false; });
  WsHub hub;
  const std::string id = s.CreateSession("alice", "mina");
  auto ws = s.Join(hub, "practice", id, "alice");
  ws->SendText(R"({"type":"start","media":"pcm","sample_rate":16000})");
  const Heard greeting = ListenUntil(*ws, "playback.end", 20s);
  const Json::Value* hello = greeting.Find("reply");
  ASSERT_TRUE(hello);
  EXPECT_EQ((*hello)["text"].asString(), "Hello, it's good to see you. How are you feeling today?");
  EXPECT_GT(greeting.packets.size(), 50u);

  // A human turn: read at real time, then silence so the turn ends.
  std::vector<int16_t> audio = DecodeTo16k(
      "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav");
  ASSERT_FALSE(audio.empty());
  audio.resize(audio.size() + 16000 * 2, 0);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t off = 0, i = 0; off < audio.size(); off += 1600, ++i) {
    std::this_thread::sleep_until(t0 + i * 100ms);
    const size_t n = std::min<size_t>(1600, audio.size() - off);
    ws->SendBinary("\x02" + std::string(reinterpret_cast<const char*>(audio.data() + off), n * 2));
  }
  const Heard answer = ListenUntil(*ws, "reply", 30s);  // the voice starts before the whole text
  const Json::Value* final_text = answer.Find("transcript.final");
  const Json::Value* reply = answer.Find("reply");
  ASSERT_TRUE(final_text && reply) << "no transcript or no reply: " << [&] {
    std::string types;
    for (const auto& e : answer.events) types += e["type"].asString() + " ";
    return types;
  }();
  EXPECT_FALSE((*reply)["text"].asString().empty());
  const Json::Value* start = answer.Find("playback.start");
  ASSERT_TRUE(start);
  EXPECT_EQ((*start)["utterance"], (*reply)["utterance"]);
  // Its latency is counted from the turn's last voiced sample, through its steps in order: the
  // final transcript (after the end-of-turn silence), the first text, the first synthesized
  // sentence, then the first packet right after it.
  const Json::Value& steps = (*reply)["latency_ms"];
  ASSERT_TRUE(steps["transcript"].isInt() && steps["first_audio"].isInt()) << steps;
  EXPECT_GE(steps["transcript"].asInt(), 400);
  EXPECT_GE(steps["first_text"].asInt(), steps["transcript"].asInt());
  EXPECT_GE(steps["first_audio"].asInt(), steps["first_text"].asInt());
  const int first_packet = (*start)["reply_latency_ms"].asInt();
  EXPECT_GE(first_packet, steps["first_audio"].asInt());
  EXPECT_LT(first_packet - steps["first_audio"].asInt(), 1000);
}

TEST(Conversation, CrisisWordsMakeThePersonaStepOutOfRoleAndTheReportSaysSo) {
  TestServer s(NoAsr);
  WsHub hub;
  const std::string id = s.CreateSession("alice", "daniel");
  auto ws = s.Join(hub, "practice", id, "alice");
  ws->SendText(R"({"type":"say","text":"Honestly, sometimes I want to kill myself."})");
  const Heard h = ListenUntil(*ws, "reply", 20s);
  const Json::Value* safety = h.Find("safety");
  ASSERT_TRUE(safety);
  EXPECT_EQ((*safety)["category"].asString(), "self_harm");
  const Json::Value* reply = h.Find("reply");
  ASSERT_TRUE(reply);
  EXPECT_TRUE((*reply)["safety"].asBool());
  EXPECT_NE((*reply)["text"].asString().find("988"), std::string::npos);
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  const Json::Value report =
      Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
  EXPECT_EQ(report["safety"]["count"].asInt(), 1);
  EXPECT_EQ(report["safety"]["events"][0]["category"].asString(), "self_harm");
}

// The LLM stalls for some sessions (no first token) and answers another with garbage: the
// other sessions keep getting their replies at once; the stalled ones fall back to the offline
// engine at the first-token timeout, the garbage one at once.
TEST(Conversation, AnLlmThatStallsOrAnswersGarbageForSomeSessionsHoldsUpNoOther) {
  FakeOpenAi llm([](int, const Json::Value& request) {
    const Json::Value& last = request["messages"][request["messages"].size() - 1];
    const std::string said = last["content"].asString();
    FakeOpenAi::Chat c;
    if (said.find("stall") != std::string::npos) {
      c.first_delay_ms = 8000;
      c.pieces = {FakeOpenAi::StreamBody("Sorry, I was miles away.")};
    } else if (said.find("garbage") != std::string::npos) {
      c.pieces = {"\x01\x02{{{ not an event stream\n\n", "data: {\"choices\":[1]}\n\n",
                  "data: [DONE]\n\n"};
    } else {
      c.pieces = {FakeOpenAi::StreamBody("Nice to hear from you.")};
    }
    return c;
  });
  TestServer s([&](app::AppConfig& c) {
    NoAsr(c);
    c.conversation.llm.base_url = llm.url();
    c.conversation.llm.model = "test-model";
    c.conversation.llm.first_token_timeout_ms = 4000;
    c.conversation.llm.retries = 0;
  });
  WsHub hub;
  const auto join = [&](const std::string& user) {
    return s.Join(hub, "practice", s.CreateSession(user, "seoa"), user);
  };
  std::vector<std::shared_ptr<WsClient>> stalled;
  for (int i = 0; i < 4; ++i) {  // more than the voice pool's threads
    stalled.push_back(join("stalled" + std::to_string(i)));
    stalled.back()->SendText(R"({"type":"say","text":"Please stall for a while."})");
  }
  auto garbage = join("garbage");
  garbage->SendText(R"({"type":"say","text":"Send me garbage."})");
  auto normal = join("alice");
  std::this_thread::sleep_for(300ms);  // the stalled requests are out
  for (int turn = 0; turn < 3; ++turn) {
    const auto t0 = std::chrono::steady_clock::now();
    normal->SendText(R"({"type":"say","text":"Hello there, number )" + std::to_string(turn) +
                     "\"}");
    const Heard h = ListenUntil(*normal, "reply", 20s);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    const Json::Value* reply = h.Find("reply");
    ASSERT_TRUE(reply) << Types(h);
    EXPECT_EQ((*reply)["engine"].asString(), "llm") << Types(h);
    std::cout << "turn " << turn << " answered in " << ms << " ms beside 4 stalled sessions\n";
    EXPECT_LT(ms, 2000) << "held up behind the stalled sessions";
    ListenUntil(*normal, "playback.end", 20s);
  }
  const Heard g = ListenUntil(*garbage, "reply", 20s);
  ASSERT_TRUE(g.Find("reply")) << Types(g);
  EXPECT_TRUE(g.Find("engine_fallback")) << Types(g);
  for (auto& ws : stalled) {
    const Heard h = ListenUntil(*ws, "reply", 20s);
    ASSERT_TRUE(h.Find("reply")) << Types(h);
    EXPECT_TRUE(h.Find("engine_fallback")) << Types(h);
  }
}

TEST(Conversation, TheLlmStreamsRepliesAndWhenItDiesTheOfflineEngineFinishesTheSession) {
  FakeOpenAi llm([](int index, const Json::Value&) {
    FakeOpenAi::Chat c;
    if (index == 0) {
      c.pieces = FakeOpenAi::Split(
          FakeOpenAi::StreamBody("That sounds wonderful. Where did you go hiking?"), 9);
      c.piece_delay_ms = 2;
    } else {  // the service dies mid-reply
      std::string body = FakeOpenAi::StreamBody("Oh I see and then");
      body = body.substr(0, body.find("then"));
      body = body.substr(0, body.rfind("data:"));
      c.pieces = {body, "data: {\"error\":{\"message\":\"upstream crashed\"}}\n\n"};
    }
    return c;
  });
  TestServer s([&](app::AppConfig& c) {
    NoAsr(c);
    c.conversation.llm.base_url = llm.url();
    c.conversation.llm.model = "test-model";
    c.conversation.llm.retry_backoff_ms = 10;
  });
  WsHub hub;
  const std::string id = s.CreateSession("alice", "seoa");
  auto ws = s.Join(hub, "practice", id, "alice");
  ws->SendText(R"({"type":"say","text":"I went hiking last weekend."})");
  Heard first = ListenUntil(*ws, "reply", 20s);
  const Json::Value* reply = first.Find("reply");
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["engine"].asString(), "llm");
  EXPECT_EQ((*reply)["text"].asString(), "That sounds wonderful. Where did you go hiking?");
  EXPECT_GE(first.Count("reply.delta"), 5);
  // The prompt carried the persona.
  ASSERT_FALSE(llm.chat_requests().empty());
  EXPECT_NE(llm.chat_requests()[0]["messages"][0]["content"].asString().find("Seoa Lee"),
            std::string::npos);
  ListenUntil(*ws, "playback.end", 20s);

  ws->SendText(R"({"type":"say","text":"It was near the river."})");
  Heard second = ListenUntil(*ws, "reply", 20s);
  const Json::Value* fallback = second.Find("engine_fallback");
  ASSERT_TRUE(fallback);
  EXPECT_EQ((*fallback)["stage"].asString(), "dialogue");
  EXPECT_NE((*fallback)["reason"].asString().find("upstream crashed"), std::string::npos);
  reply = second.Find("reply");
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["engine"].asString(), "offline");
  EXPECT_EQ((*reply)["text"].asString().rfind("Oh I see and", 0), 0u);  // what was said stays
  EXPECT_GT((*reply)["text"].asString().size(), std::string("Oh I see and ").size());

  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  const Json::Value report =
      Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
  EXPECT_EQ(report["metrics"]["conversation"]["engines"]["llm"].asInt(), 1);
  EXPECT_EQ(report["metrics"]["conversation"]["engines"]["offline"].asInt(), 1);
  EXPECT_EQ(report["metrics"]["conversation"]["engine_fallbacks"].asInt(), 1);
  EXPECT_EQ(report["transcript"].size(), 4u);
}

TEST(Conversation, AClientMayAskForPcmVoiceAndReportWhatItPlayed) {
  TestServer s(NoAsr);
  WsHub hub;
  const std::string id = s.CreateSession("alice", "seoa");
  auto ws = s.Join(hub, "practice", id, "alice");
  ws->SendText(R"({"type":"start","media":"pcm","sample_rate":16000,"playback":"pcm"})");
  const Heard greeting = ListenUntil(*ws, "reply", 20s);  // the voice has started by then
  const Json::Value* reply = greeting.Find("reply");
  ASSERT_TRUE(reply);
  const Heard more = ListenUntil(*ws, "playback.end", 20s);
  std::vector<std::string> all = greeting.packets;
  all.insert(all.end(), more.packets.begin(), more.packets.end());
  ASSERT_FALSE(all.empty());
  for (const auto& p : all) EXPECT_EQ(p[0], '\x11');
  const int u = (*reply)["utterance"].asInt();
  ws->SendText(R"({"type":"playback","utterance":)" + std::to_string(u) + R"(,"played_ms":800})");
  ws->SendText(R"({"type":"playback","utterance":999,"played_ms":10})");
  ws->SendText(R"({"type":"start","media":"pcm","sample_rate":16000,"playback":"mp3"})");
  const Heard errors = ListenUntil(*ws, "none", 1500ms);
  int bad_playback = 0, bad_start = 0;
  for (const auto& e : errors.events) {
    if (e["type"] != "error") continue;
    bad_playback += e["error"]["code"] == "bad_playback";
    bad_start += e["error"]["code"] == "bad_start";
  }
  EXPECT_EQ(bad_playback, 1);  // the unknown utterance only
  EXPECT_EQ(bad_start, 1);
  std::this_thread::sleep_for(1s);  // the same error code again is said at most once a second
  ws->SendText(R"({"type":"start","media":"pcm","sample_rate":16000,"echo":"browser"})");
  const auto bad_echo = ws->ReceiveType("error");
  ASSERT_TRUE(bad_echo);
  EXPECT_EQ((*bad_echo)["error"]["code"].asString(), "bad_start");
  EXPECT_NE((*bad_echo)["error"]["message"].asString().find("\"echo\""), std::string::npos);
  ws->SendText(R"({"type":"say","text":""})");
  const auto err = ws->ReceiveType("error");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["error"]["code"].asString(), "bad_say");
}

TEST(Conversation, VoicesAreListedAndTtsAnswersEachFormatAndRefusesBadInput) {
  TestServer s(NoAsr);
  const auto voices = Http("GET", s.Url("/api/voices")).JsonBody();
  ASSERT_GE(voices["voices"].size(), 4u);
  std::set<std::string> ids;
  for (const auto& v : voices["voices"]) ids.insert(v["id"].asString());
  for (const char* v : {"slt", "rms", "awb", "kal16"}) EXPECT_TRUE(ids.contains(v)) << v;
  const auto auth = s.Auth("alice");
  const auto wav =
      Http("POST", s.Url("/api/tts"), R"({"text":"Hello there.","voice":"rms"})", auth);
  ASSERT_EQ(wav.status, 200) << wav.body;
  EXPECT_EQ(wav.Header("content-type"), "audio/wav");
  std::vector<int16_t> pcm;
  int rate = 0;
  std::string error;
  ASSERT_TRUE(speech::DecodeSound(wav.body, &pcm, &rate, &error)) << error;
  EXPECT_EQ(rate, 16000);
  EXPECT_GT(pcm.size(), 8000u);
  const auto raw =
      Http("POST", s.Url("/api/tts"), R"({"text":"Hello there.","format":"pcm"})", auth);
  ASSERT_EQ(raw.status, 200);
  EXPECT_EQ(raw.Header("content-type"), "audio/L16;rate=16000;channels=1");
  const auto ogg =
      Http("POST", s.Url("/api/tts"), R"({"text":"Hello there.","format":"opus"})", auth);
  ASSERT_EQ(ogg.status, 200) << ogg.body;
  EXPECT_EQ(ogg.body.substr(0, 4), "OggS");
  const auto code = [&](const std::string& body) {
    const auto r = Http("POST", s.Url("/api/tts"), body, auth);
    return std::make_pair(r.status, r.JsonBody()["error"]["code"].asString());
  };
  EXPECT_EQ(code(R"({"text":""})").first, 422);
  EXPECT_EQ(code(R"({"text":"hi","voice":"nobody"})"),
            std::make_pair(422L, std::string("unknown_voice")));
  EXPECT_EQ(code(R"({"text":"hi","format":"mp3"})").first, 422);
  EXPECT_EQ(code("{\"text\":\"" + std::string(5000, 'a') + "\"}").first, 413);
  EXPECT_EQ(code("not json").first, 400);
  EXPECT_EQ(Http("POST", s.Url("/api/tts"), R"({"text":"hi"})").status, 401);
  EXPECT_EQ(Http("GET", s.Url("/api/tts"), "", auth).status, 405);
}

TEST(Conversation, TheRemoteSpeechServiceSpeaksAndFliteTakesOverWhenItFails) {
  const auto flite_wav = speech::EncodeWav(std::vector<int16_t>(24000, 300), 24000);  // 1 s
  std::atomic<bool> healthy{true};
  FakeOpenAi service([](int, const Json::Value&) { return FakeOpenAi::Chat{}; },
                     [&](int, const Json::Value&) {
                       FakeOpenAi::Speech r;
                       if (healthy) {
                         r.body = flite_wav;
                       } else {
                         r.status = 500;
                         r.content_type = "application/json";
                         r.body = R"({"error":{"message":"voice farm down"}})";
                       }
                       return r;
                     });
  TestServer s([&](app::AppConfig& c) {
    NoAsr(c);
    c.conversation.remote_tts.base_url = service.url();
    c.conversation.remote_tts.retries = 0;
  });
  WsHub hub;
  const std::string id = s.CreateSession("alice", "seoa");
  auto ws = s.Join(hub, "practice", id, "alice");
  ws->SendText(R"({"type":"say","text":"Hi!"})");
  const Heard first = ListenUntil(*ws, "playback.end", 20s);
  EXPECT_FALSE(first.Find("engine_fallback"));
  ASSERT_FALSE(service.speech_requests().empty());
  const Json::Value req = service.speech_requests()[0];
  EXPECT_EQ(req["response_format"].asString(), "wav");
  EXPECT_FALSE(req["input"].asString().empty());
  healthy = false;
  ws->SendText(R"({"type":"say","text":"Tell me about yourself."})");
  const Heard second = ListenUntil(*ws, "playback.end", 20s);
  const Json::Value* fallback = second.Find("engine_fallback");
  ASSERT_TRUE(fallback);
  EXPECT_EQ((*fallback)["stage"].asString(), "tts");
  EXPECT_EQ((*fallback)["engine"].asString(), "flite");
  EXPECT_GT(second.packets.size(), 20u);  // Flite spoke instead
}

// A live microphone: 100 ms PCM chunks at real time, silence (with a little room noise) unless
// audio was queued, from its own thread.
class Microphone {
 public:
  // `webm`: the microphone sends WebM/Opus (as the page's MediaRecorder does), else PCM.
  explicit Microphone(WsClient& ws, bool webm = false)
      : ws_(ws),
        webm_(webm ? std::make_unique<WebmOpusEncoder>() : nullptr),
        thread_([this] { Run(); }) {}
  // A speaker in the same room: each Opus packet of the persona's voice, as it arrives, comes
  // back into this microphone `delay` later, `attenuation_db` quieter (a client without echo
  // cancellation).
  void SetEcho(std::chrono::milliseconds delay, double attenuation_db) {
    const std::lock_guard lock(mu_);
    echo_delay_ = delay;
    echo_gain_ = std::pow(10.0, -attenuation_db / 20.0);
    int err = 0;
    decoder_.reset(opus_decoder_create(48000, 1, &err));
  }
  // The speaker is a player's jitter buffer: each packet plays right after the one before it,
  // or `delay` after it arrives if that is later (an utterance's first packet, a resume); a
  // cancel drops what is queued.
  void Hear(const WsMessage& m) {
    const std::lock_guard lock(mu_);
    if (!decoder_) return;
    const auto arrived = static_cast<int64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(m.received + echo_delay_ - start_)
            .count() *
        16 / 1000);
    if (!m.binary) {
      if (m.data.find("\"playback.cancelled\"") != std::string::npos) {
        echo_.erase(echo_.lower_bound(arrived), echo_.end());
        play_cursor_ = std::min(play_cursor_, arrived);
      }
      return;
    }
    const std::string& packet = m.data;
    if (packet.size() < 12 || packet[0] != '\x10') return;
    std::vector<int16_t> out(5760);
    const int got =
        opus_decode(decoder_.get(), reinterpret_cast<const unsigned char*>(packet.data() + 11),
                    static_cast<opus_int32>(packet.size() - 11), out.data(), 5760, 0);
    if (got <= 0) return;
    int64_t index = std::max(play_cursor_, arrived);
    play_cursor_ = index + got / 3;
    for (int i = 0; i + 2 < got; i += 3, ++index)
      echo_[index] += echo_gain_ * (out[i] + out[i + 1] + out[i + 2]) / 3.0;
  }
  ~Microphone() {
    stop_ = true;
    thread_.join();
  }
  // Plays `pcm` (16 kHz) next; returns when it has all been sent.
  void Say(const std::vector<int16_t>& pcm) {
    {
      const std::lock_guard lock(mu_);
      queue_.insert(queue_.end(), pcm.begin(), pcm.end());
    }
    while (true) {
      {
        const std::lock_guard lock(mu_);
        if (queue_.empty()) return;
      }
      std::this_thread::sleep_for(20ms);
    }
  }

 private:
  void Run() {
    std::mt19937 rng(3);
    std::normal_distribution<double> noise(0, 20);  // about -64 dBFS
    auto next = std::chrono::steady_clock::now();
    while (!stop_) {
      std::vector<int16_t> chunk(1600);
      {
        const std::lock_guard lock(mu_);
        const size_t n = std::min<size_t>(chunk.size(), queue_.size());
        std::copy(queue_.begin(), queue_.begin() + static_cast<long>(n), chunk.begin());
        queue_.erase(queue_.begin(), queue_.begin() + static_cast<long>(n));
      }
      {
        const std::lock_guard lock(mu_);
        for (size_t i = 0; i < chunk.size(); ++i) {
          const auto it = echo_.find(sent_ + static_cast<int64_t>(i));
          if (it == echo_.end()) continue;
          chunk[i] = static_cast<int16_t>(std::clamp(chunk[i] + it->second, -32768.0, 32767.0));
          echo_.erase(it);
        }
        sent_ += static_cast<int64_t>(chunk.size());
        while (!echo_.empty() && echo_.begin()->first < sent_) echo_.erase(echo_.begin());
      }
      for (auto& v : chunk) v = static_cast<int16_t>(std::clamp(v + noise(rng), -32768.0, 32767.0));
      if (!webm_) {
        ws_.SendBinary("\x02" + std::string(reinterpret_cast<const char*>(chunk.data()), 3200));
      } else if (const std::string bytes = webm_->Encode(chunk); !bytes.empty()) {
        ws_.SendBinary("\x01" + bytes);
      }
      next += 100ms;
      std::this_thread::sleep_until(next);
    }
  }
  struct DecoderFree {
    void operator()(OpusDecoder* d) const { opus_decoder_destroy(d); }
  };
  WsClient& ws_;
  std::mutex mu_;
  std::deque<int16_t> queue_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  int64_t sent_ = 0;                // microphone samples sent so far (16 kHz)
  std::map<int64_t, double> echo_;  // sample index -> echo to add there
  int64_t play_cursor_ = 0;         // where the speaker's queue ends (sample index)
  std::chrono::milliseconds echo_delay_{0};
  double echo_gain_ = 0;
  std::unique_ptr<OpusDecoder, DecoderFree> decoder_;
  std::unique_ptr<WebmOpusEncoder> webm_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

const std::string kLongReply =
    "Let me tell you about the first trip I ever planned on my own. It was a rainy week in "
    "October and nothing went as expected. The train was late, the hotel had lost my booking, "
    "and the museum I wanted to see was closed for repairs. But then I found a tiny cafe by the "
    "harbour where the owner told me stories about the town for hours. That is still my "
    "favourite memory of any trip.";

// An LLM that tells a long story when asked for one, and answers anything else briefly.
FakeOpenAi::ChatAnswer StoryThenShort() {
  return [](int, const Json::Value& request) {
    const Json::Value& last = request["messages"][request["messages"].size() - 1];
    const bool story = last["content"].asString().find("trip") != std::string::npos;
    FakeOpenAi::Chat c;
    c.pieces = {FakeOpenAi::StreamBody(story ? kLongReply : "Oh, sorry, go ahead.")};
    return c;
  };
}

void WithLlm(app::AppConfig& c, const FakeOpenAi& llm) {
  c.conversation.server_landmarks = false;
  c.conversation.llm.base_url = llm.url();
  c.conversation.llm.model = "test-model";
}

TEST(BargeIn, SpeechOverThePersonaPausesThenCutsItAndIsAnsweredNext) {
  FakeOpenAi llm(StoryThenShort());
  TestServer s([&](app::AppConfig& c) { WithLlm(c, llm); });
  WsHub hub;
  const std::string id = s.CreateSession("alice", "seoa");
  auto ws = s.Join(hub, "practice", id, "alice");
  ws->SendText(R"({"type":"start","media":"pcm","sample_rate":16000})");
  Microphone mic(*ws);
  ListenUntil(*ws, "playback.end", 20s);  // the greeting
  ws->SendText(R"({"type":"say","text":"Tell me about a trip you took."})");
  const Heard story = ListenUntil(*ws, "playback.start", 20s);
  const Json::Value* start = story.Find("playback.start");
  ASSERT_TRUE(start) << Types(story);
  const int u = (*start)["utterance"].asInt();
  std::this_thread::sleep_for(2500ms);  // past the warm-up
  const auto speech = DecodeTo16k(
      "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav");
  ASSERT_FALSE(speech.empty());
  std::thread talker([&] { mic.Say(speech); });
  const Heard cut = ListenUntil(*ws, "playback.cancelled", 20s);
  talker.join();
  const Json::Value* paused = cut.Find("playback.paused");
  const Json::Value* cancelled = cut.Find("playback.cancelled");
  ASSERT_TRUE(paused && cancelled) << Types(cut);
  EXPECT_EQ((*cancelled)["reason"].asString(), "barge_in");
  EXPECT_EQ((*cancelled)["utterance"].asInt(), u);
  const Heard after = ListenUntil(*ws, "reply", 30s);
  for (const auto& p : after.packets)
    EXPECT_NE(PacketUtterance(p), u) << "a packet after the cancel";
  ASSERT_TRUE(after.Find("transcript.final"));
  const Json::Value* answer = after.Find("reply");
  ASSERT_TRUE(answer);
  EXPECT_EQ((*answer)["text"].asString(), "Oh, sorry, go ahead.");
  // The LLM was told what the user heard of the story, not the whole of it.
  const auto requests = llm.chat_requests();
  ASSERT_EQ(requests.size(), 3u);  // greeting, story, the answer
  const Json::Value& msgs = requests[2]["messages"];
  std::string told;
  for (const auto& m : msgs)
    if (m["role"] == "assistant" && m["content"].asString().rfind("Let me tell", 0) == 0)
      told = m["content"].asString();
  EXPECT_FALSE(told.empty());
  EXPECT_LT(told.size(), kLongReply.size());

  ws->SendText(R"({"type":"stop"})");
  ws->ReceiveType("stopped", 10s);
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice"), 60s).status,
            200);
  const Json::Value report =
      Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
  bool found = false;
  for (const auto& t : report["transcript"]) {
    if (t["utterance"].asInt() != u) continue;
    found = true;
    EXPECT_TRUE(t["interrupted"].asBool());
    EXPECT_GT(t["played_ms"].asInt(), 2000);
    EXPECT_LT(t["heard_text"].asString().size(), kLongReply.size());
    EXPECT_EQ(kLongReply.rfind(t["heard_text"].asString(), 0), 0u);  // its beginning
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(report["metrics"]["conversation"]["interruptions"]["count"].asInt(), 1);
}

// Each is longer than the 0.5 s an interruption takes by duration alone but the hummed "mhm"
// and Flite's "okay" (0.6-0.7 s): they wait for the recogniser, which hears a backchannel or
// no word at all.
TEST(BargeIn, ACoughAShortYeahAHummedMhmOrAnOkayOnlyPauseThePersonaWhichThenResumes) {
  FakeOpenAi llm(StoryThenShort());
  TestServer s([&](app::AppConfig& c) { WithLlm(c, llm); });
  WsHub hub;
  const std::string id = s.CreateSession("alice", "seoa");
  auto ws = s.Join(hub, "practice", id, "alice");
  ws->SendText(R"({"type":"start","media":"pcm","sample_rate":16000})");
  Microphone mic(*ws);
  ListenUntil(*ws, "playback.end", 20s);
  ws->SendText(R"({"type":"say","text":"Tell me about a trip you took."})");
  ASSERT_TRUE(ListenUntil(*ws, "playback.start", 20s).Find("playback.start"));
  std::this_thread::sleep_for(2000ms);
  // A 150 ms burst of loud noise, like a cough or a knock.
  std::vector<int16_t> burst(2400);
  std::mt19937 rng(9);
  std::normal_distribution<double> loud(0, 6000);
  for (auto& v : burst) v = static_cast<int16_t>(std::clamp(loud(rng), -32768.0, 32767.0));
  for (const auto& sound :
       {burst, FliteSpeak("kal16", "yeah"), HummedMhm(120, 1), FliteSpeak("kal16", "okay")}) {
    mic.Say(sound);
    std::this_thread::sleep_for(3500ms);  // paused, resumed 2 s later
  }
  const Heard rest = ListenUntil(*ws, "playback.end", 40s);
  EXPECT_FALSE(rest.Find("playback.cancelled"))
      << "a false interruption cut the reply: " << Types(rest);
  const Json::Value* end = rest.Find("playback.end");
  ASSERT_TRUE(end);
  EXPECT_GT((*end)["played_ms"].asInt(), 15000) << Types(rest);  // the whole story played
  if (rest.Find("playback.paused")) {
    EXPECT_TRUE(rest.Find("playback.resumed"));
  }
  // They kept the floor with the persona: none of them is answered once the story ends (an
  // answer to pending words comes at once; a speak-up only after 12 s of quiet).
  const Heard after = ListenUntil(*ws, "reply.delta", 5s);
  EXPECT_FALSE(after.Find("reply.delta")) << "a backchannel was answered: " << Types(after);
}

// ---- Report scores from real spoken conversations ------------------------------------------

// A spoken conversation with the offline persona: each of `turns` said by Flite's kal16 voice
// (its intonation spread `pitch_stddev_hz`) after the persona's previous reply has played;
// returns the report.
Json::Value SpokenConversationReport(const std::vector<std::string>& turns,
                                     double pitch_stddev_hz) {
  TestServer s([](app::AppConfig& c) { c.conversation.server_landmarks = false; });
  WsHub hub;
  const std::string id = s.CreateSession("alice", "mina");
  auto ws = s.Join(hub, "practice", id, "alice");
  ws->SendText(R"({"type":"start","media":"pcm","sample_rate":16000})");
  Microphone mic(*ws);
  ListenUntil(*ws, "playback.end", 20s);  // the greeting
  for (const auto& turn : turns) {
    mic.Say(FliteSpeak("kal16", turn, 1.0, pitch_stddev_hz));
    const Heard answer = ListenUntil(*ws, "playback.end", 30s);
    EXPECT_TRUE(answer.Find("transcript.final")) << turn << ": " << Types(answer);
  }
  ws->SendText(R"({"type":"stop"})");
  ws->ReceiveType("stopped", 10s);
  EXPECT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice"), 60s).status,
            200);
  return Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
}

TEST(ReportScores, ALivelyCuriousSpeakerOutscoresAMonotoneOneOnToneAndInitiative) {
  const Json::Value curious = SpokenConversationReport(
      {"I am doing well thank you. How was your weekend?",
       "That sounds lovely. What kind of music do you like to listen to?",
       "I enjoy hiking in the mountains near my home. Have you ever been hiking?",
       "Why do you like the city so much?"},
      30);
  const Json::Value flat = SpokenConversationReport(
      {"I am fine.", "I went to work and then I went home and I slept.",
       "I watched television for most of the evening.", "The weather was cold and grey."},
      0);
  for (const Json::Value* r : {&curious, &flat}) {
    const Json::Value& fb = (*r)["feedback"];
    SCOPED_TRACE(core::ToJson(fb["feedback_details"]));
    // Every conversation score is there when its inputs are, with its inputs beside it.
    for (const char* score : {"tone", "initiative", "likability", "total_score"}) {
      EXPECT_TRUE(fb[score].isInt()) << score;
      EXPECT_GE(fb[score].asInt(), 0);
      EXPECT_LE(fb[score].asInt(), 100);
      EXPECT_TRUE(fb["feedback_details"][score]["formula"].isString()) << score;
    }
    // No face was sent: the total says what it is missing.
    EXPECT_FALSE(fb["feedback_details"]["total_score"]["missing"].empty());
    EXPECT_TRUE(fb["summary"].isString());
    EXPECT_NE(fb["summary"].asString().find("Overall"), std::string::npos) << fb["summary"];
    const Json::Value& tips = (*r)["tips"];
    EXPECT_GE(tips.size(), 3u) << tips;
    EXPECT_LE(tips.size(), 6u) << tips;
  }
  for (const Json::Value* r : {&curious, &flat})
    std::cout << ((r == &curious) ? "curious: " : "flat: ") << core::ToJson((*r)["feedback"])
              << "\ntips: " << core::ToJson((*r)["tips"]) << "\n";
  const Json::Value& cd = curious["feedback"]["feedback_details"];
  const Json::Value& fd = flat["feedback"]["feedback_details"];
  EXPECT_GT(curious["metrics"]["speech"]["pitch_std_semitones"].asDouble(),
            flat["metrics"]["speech"]["pitch_std_semitones"].asDouble());
  EXPECT_GT(cd["tone"]["parts"]["pitch_variation"].asInt(),
            fd["tone"]["parts"]["pitch_variation"].asInt());
  EXPECT_GT(curious["feedback"]["tone"].asInt(), flat["feedback"]["tone"].asInt());
  EXPECT_GT(curious["metrics"]["questions_asked"].asInt(),
            flat["metrics"]["questions_asked"].asInt());
  EXPECT_GT(curious["feedback"]["initiative"].asInt(), flat["feedback"]["initiative"].asInt());
  EXPECT_GT(cd["likability"]["parts"]["interest_in_persona"].asInt(),
            fd["likability"]["parts"]["interest_in_persona"].asInt());
  // The flat speaker's tips cite this session's own numbers.
  const std::string asked =
      "You asked " + flat["metrics"]["questions_asked"].asString() + " question";
  bool cites = false;
  for (const auto& t : flat["tips"]) cites = cites || t.asString().rfind(asked, 0) == 0;
  EXPECT_TRUE(cites) << flat["tips"];
  for (const auto& t : flat["tips"])
    EXPECT_EQ(t.asString().find('_'), std::string::npos) << "a raw key in a tip: " << t;
}

// Listens like ListenUntil while the room's speaker plays what arrives into `mic`.
Heard ListenThroughTheRoom(WsClient& ws, Microphone& mic, const std::string& until,
                           std::chrono::milliseconds timeout) {
  return ListenUntil(ws, until, timeout, 1, [&](const WsMessage& m) { mic.Hear(m); });
}

// A practice session whose LLM tells a story when asked, with media started (PCM, or WebM/Opus
// as the page sends) and a live microphone in the room; the client asks for the server's echo
// canceller (`"echo":"server"`) or says nothing (the server's default: none).
struct RoomSession {
  explicit RoomSession(bool echo_cancel, bool webm = false)
      : llm(StoryThenShort()), server([this](app::AppConfig& c) { WithLlm(c, llm); }) {
    id = server.CreateSession("alice", "seoa");
    ws = server.Join(hub, "practice", id, "alice");
    Json::Value start(Json::objectValue);
    start["type"] = "start";
    start["media"] = webm ? "webm" : "pcm";
    if (!webm) start["sample_rate"] = 16000;
    if (echo_cancel) start["echo"] = "server";
    ws->SendText(core::ToJson(start));
    mic = std::make_unique<Microphone>(*ws, webm);
  }
  FakeOpenAi llm;
  TestServer server;
  WsHub hub;
  std::string id;
  std::shared_ptr<WsClient> ws;
  std::unique_ptr<Microphone> mic;
};

TEST(Echo, ThePersonaHearingItsOwnVoiceThroughSpeakersNeverInterruptsItself) {
  struct Room {
    bool cancel, webm;
  };
  for (const auto [cancel, webm] : {Room{false, false}, Room{true, false}, Room{true, true}}) {
    SCOPED_TRACE(std::string(cancel ? "echo cancelled" : "echo not cancelled") +
                 (webm ? ", WebM/Opus microphone" : ", PCM microphone"));
    RoomSession room(cancel, webm);
    TestServer& s = room.server;
    const std::string& id = room.id;
    auto& ws = room.ws;
    Microphone& mic = *room.mic;
    mic.SetEcho(180ms, 6);
    const Heard greeting = ListenThroughTheRoom(*ws, mic, "playback.end", 20s);
    if (!cancel) {
      // The control: the same room without the canceller hears the persona as a person.
      EXPECT_TRUE(greeting.Find("speech_start") || greeting.Find("playback.paused"))
          << Types(greeting);
      continue;
    }
    ws->SendText(R"({"type":"say","text":"Tell me about a trip you took."})");
    const Heard story = ListenThroughTheRoom(*ws, mic, "playback.end", 60s);
    // From the greeting's first packet on (the VAD may settle on the room's noise before).
    Heard voiced;
    bool playing = false;
    for (const auto& e : greeting.events) {
      playing = playing || e["type"] == "playback.start";
      if (playing) voiced.events.push_back(e);
    }
    // The persona is never cut off and none of its words is taken for the user's. On a quiet
    // machine nothing pauses it either; under a loaded CI run a few word onsets have come
    // through as short pauses (then resumed), so pauses are counted, not failed. Through
    // WebM/Opus the echo is Opus-coded twice (ERLE 17-23 dB against 21-26 over PCM): alone it
    // is as clean as PCM, but in loaded suites (ASan beside another build) residue onsets were
    // transcribed as 1-2 short words ("but"); never a cancel. There they are counted and said
    // (a known gap, issue 14's note), over PCM none is allowed.
    int pauses = 0, worded_finals = 0;
    for (const Heard* h : {static_cast<const Heard*>(&voiced), &story}) {
      EXPECT_FALSE(h->Find("playback.cancelled")) << Types(*h);
      for (const auto& e : h->events) {
        if (e["type"] == "transcript.final" && !SplitWords(e["text"].asString()).empty())
          ++worded_finals;
      }
      pauses += h->Count("playback.paused");
    }
    if (!webm) {
      EXPECT_EQ(worded_finals, 0) << Types(voiced) << " / " << Types(story);
    }
    std::cout << "persona words transcribed as the user's: " << worded_finals << "\n";
    std::cout << "self-pauses over the greeting and the story: " << pauses << "\n";
    ASSERT_TRUE(story.Find("playback.end")) << Types(story);
    EXPECT_GT((*story.Find("playback.end"))["played_ms"].asInt(), 15000) << "the whole story";
    ws->SendText(R"({"type":"stop"})");
    ws->ReceiveType("stopped", 10s);
    ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice"), 60s).status,
              200);
    const Json::Value report =
        Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
    const Json::Value& echo = report["metrics"]["echo"];
    EXPECT_NEAR(echo["delay_ms"].asInt(), 180 + 60, 150) << echo.toStyledString();
    EXPECT_GT(echo["erle_db"].asDouble(), 10) << echo.toStyledString();
    std::cout << "server echo: " << echo.toStyledString();
  }
}

// The user talking over the persona in a room that echoes it: with the canceller on, their
// speech still pauses and then cuts the reply, and is transcribed about as well as in a room
// without echo.
TEST(Echo, APersonTalkingOverTheEchoStillInterruptsAndIsTranscribed) {
  const std::string reference =
      "unless to be rather cold hearted and rather selfish is to be ill "
      "disposed";  // the corpus' transcription of 0890
  const auto speech = DecodeTo16k(
      "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0890.wav");
  ASSERT_FALSE(speech.empty());
  std::map<bool, double> wer;
  for (const bool echoing : {false, true}) {
    SCOPED_TRACE(echoing ? "room with echo" : "room without echo");
    RoomSession room(/*echo_cancel=*/true);
    auto& ws = room.ws;
    Microphone& mic = *room.mic;
    if (echoing) mic.SetEcho(180ms, 6);
    ListenThroughTheRoom(*ws, mic, "playback.end", 20s);  // the greeting
    ws->SendText(R"({"type":"say","text":"Tell me about a trip you took."})");
    ASSERT_TRUE(ListenThroughTheRoom(*ws, mic, "playback.start", 20s).Find("playback.start"));
    ListenThroughTheRoom(*ws, mic, "", 2500ms);  // the story plays (and echoes) past the warm-up
    std::thread talker([&] { mic.Say(speech); });
    const Heard cut = ListenThroughTheRoom(*ws, mic, "playback.cancelled", 30s);
    const Heard answered = ListenThroughTheRoom(*ws, mic, "reply", 30s);
    talker.join();
    ASSERT_TRUE(cut.Find("playback.paused")) << Types(cut);
    const Json::Value* cancelled = cut.Find("playback.cancelled");
    ASSERT_TRUE(cancelled) << Types(cut);
    EXPECT_EQ((*cancelled)["reason"].asString(), "barge_in");
    const Json::Value* final = answered.Find("transcript.final");
    if (!final) final = cut.Find("transcript.final");
    ASSERT_TRUE(final) << Types(cut) << " / " << Types(answered);
    wer[echoing] = WordErrorRate(reference, (*final)["text"].asString());
    std::cout << (echoing ? "over the echo: " : "without echo: ") << (*final)["text"].asString()
              << " (WER " << wer[echoing] << ")\n";
  }
  // Measured: 0.36 without echo, 0.43-0.50 over it: the first words, spoken under a loud echo
  // (-6 dB), are partly taken for it (the price of the double-talk test). Bound: 3 words more.
  EXPECT_LE(wer[true], wer[false] + 0.22);
}

}  // namespace
}  // namespace parley::testing
