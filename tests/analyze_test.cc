// POST /api/analyze through the real server: uploaded WAV and WebM recordings become ended
// sessions whose reports match what streaming the same media live gives; bad uploads get
// clear errors and leave nothing behind; an analysis never holds up other requests.
#include <gtest/gtest.h>

#include <fstream>
#include <future>
#include <random>
#include <sstream>
#include <thread>

#include "core/core.h"
#include "speech/speech.h"
#include "tests/support/audio_files.h"
#include "tests/support/recorded_turns.h"
#include "tests/support/test_server.h"

namespace parley {
namespace {

using namespace std::chrono_literals;
using testing::Headers;
using testing::Http;
using testing::HttpResult;
using testing::TestServer;
using testing::WsClient;
using testing::WsHub;

constexpr auto kAnalysisTimeout = std::chrono::milliseconds(600'000);  // ASan is ~5x slower

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string CommittedWebm() {
  return ReadFile(PARLEY_SOURCE_DIR "/tests/data/chromium_mediarecorder_vp8_opus.webm");
}

// A person speaking: asterisk prompts (one speaker, whole sentences) with the pauses of a
// monologue between them, 16 kHz mono. Empty when asterisk-core-sounds-en is missing.
std::vector<int16_t> Monologue(size_t prompts) {
  std::vector<int16_t> pcm(16000, 0);
  std::mt19937 rng(5);
  size_t used = 0;
  for (const auto& [name, text] : testing::AsteriskTranscripts()) {
    if (used == prompts) break;
    if (std::count(text.begin(), text.end(), ' ') < 4) continue;  // sentences, not words
    const auto speech = testing::DecodeTo16k("/usr/share/asterisk/sounds/en/" + name + ".wav");
    if (speech.size() < 16000) continue;
    pcm.insert(pcm.end(), speech.begin(), speech.end());
    pcm.insert(pcm.end(), 16000 + rng() % 8000, 0);  // 1-1.5 s between sentences
    ++used;
  }
  return used == prompts ? pcm : std::vector<int16_t>{};
}

HttpResult Upload(TestServer& s, const std::string& body, const std::string& type,
                  const std::string& query = "?persona_id=seoa",
                  const std::string& user = "alice") {
  Headers h = s.Auth(user);
  if (!type.empty()) h.emplace_back("Content-Type", type);
  return Http("POST", s.Url("/api/analyze" + query), body, h, kAnalysisTimeout);
}

std::string ErrorCode(const HttpResult& r) { return r.JsonBody()["error"]["code"].asString(); }

// Streams `pcm` (16 kHz) to a live session at real time, as a microphone would, and returns
// the session's report.
Json::Value StreamLive(TestServer& s, const std::vector<int16_t>& pcm) {
  WsHub hub;
  const std::string id = s.CreateSession("bob");
  auto ws = s.Join(hub, "practice", id, "bob");
  EXPECT_EQ(ws->state(), WsClient::State::kOpen);
  ws->SendText(R"({"type":"start","media":"pcm","sample_rate":16000,"echo":"client"})");
  EXPECT_TRUE(ws->ReceiveType("started"));
  constexpr size_t kFrame = 1600;  // 100 ms
  auto next = std::chrono::steady_clock::now();
  for (size_t off = 0; off < pcm.size(); off += kFrame) {
    const size_t n = std::min(kFrame, pcm.size() - off);
    ws->SendBinary("\x02" + std::string(reinterpret_cast<const char*>(pcm.data() + off), n * 2));
    next += 100ms;
    std::this_thread::sleep_until(next);
  }
  ws->SendText(R"({"type":"stop"})");
  EXPECT_TRUE(ws->ReceiveType("stopped", 20s));
  EXPECT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("bob"), 60s).status,
            200);
  return Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("bob")).JsonBody();
}

std::string UserText(const Json::Value& report) {
  std::string text;
  for (const auto& turn : report["transcript"])
    if (turn["role"].asString() == "user") text += turn["text"].asString() + " ";
  return text;
}

TEST(Analyze, WavUploadIsAnEndedSessionWithTheReportStreamingItLiveGives) {
  const std::vector<int16_t> pcm = Monologue(4);
  ASSERT_FALSE(pcm.empty()) << "asterisk-core-sounds-en is not installed";
  const double seconds = static_cast<double>(pcm.size()) / 16000;
  TestServer s;
  const HttpResult r = Upload(s, speech::EncodeWav(pcm, 16000), "audio/wav");
  ASSERT_EQ(r.status, 201) << r.body;
  const Json::Value doc = r.JsonBody();
  const std::string id = doc["session_id"].asString();
  EXPECT_EQ(r.Header("location"), "/api/sessions/" + id);
  EXPECT_EQ(doc["state"], "ended");
  EXPECT_EQ(doc["source"], "upload");
  EXPECT_EQ(doc["end_reason"], "recording_analyzed");
  EXPECT_NEAR(doc["duration_s"].asDouble(), seconds, 0.1);  // the media's, not the analysis's

  // The stored report is the one in the answer, and reads like a session's.
  const Json::Value report =
      Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
  EXPECT_EQ(report["session_id"], id);
  EXPECT_EQ(report["metrics"], doc["report"]["metrics"]);
  EXPECT_NEAR(report["duration_s"].asDouble(), seconds, 0.1);
  EXPECT_EQ(report["metrics"]["turns"].asInt(), 4) << core::ToJson(report["transcript"]);
  EXPECT_TRUE(report["metrics"]["speaking_rate_wpm"].isNumeric());
  EXPECT_TRUE(report["metrics"]["pitch_hz"]["mean"].isNumeric());
  EXPECT_EQ(report["metrics"]["recording"]["container"], "wav");
  EXPECT_EQ(report["metrics"]["speech"]["refused"].asInt(), 0);  // nothing shed to keep up
  EXPECT_TRUE(report["feedback"]["tone"].isInt()) << core::ToJson(report["feedback"]);
  for (const auto& turn : report["transcript"])
    EXPECT_EQ(turn["role"], "user") << "a recording is not answered";
  EXPECT_EQ(Http("GET", s.Url("/api/sessions/" + id + "/report.html"), "", s.Auth("alice")).status,
            200);
  const Json::Value listed =
      Http("GET", s.Url("/api/sessions"), "", s.Auth("alice")).JsonBody()["sessions"];
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["source"], "upload");

  // The same speech through a live session, at real time.
  const Json::Value live = StreamLive(s, pcm);
  EXPECT_EQ(live["metrics"]["turns"], report["metrics"]["turns"]);
  EXPECT_LT(testing::WordErrorRate(UserText(live), UserText(report)), 0.1)
      << "live: " << UserText(live) << "\nupload: " << UserText(report);
  EXPECT_NEAR(report["metrics"]["speech"]["speech_s"].asDouble(),
              live["metrics"]["speech"]["speech_s"].asDouble(), 0.3);
  EXPECT_NEAR(report["metrics"]["pitch_hz"]["mean"].asDouble(),
              live["metrics"]["pitch_hz"]["mean"].asDouble(), 3);
  EXPECT_NEAR(report["metrics"]["speaking_rate_wpm"].asDouble(),
              live["metrics"]["speaking_rate_wpm"].asDouble(), 10);
  EXPECT_EQ(report["metrics"]["filler_words"], live["metrics"]["filler_words"]);
}

TEST(Analyze, WebmUploadDecodesEveryFrameAndMatchesStreamingTheSameFile) {
  const std::string webm = CommittedWebm();
  ASSERT_GT(webm.size(), 1000u);
  TestServer s;
  const HttpResult r = Upload(s, webm, "video/webm;codecs=vp8,opus");
  ASSERT_EQ(r.status, 201) << r.body;
  const Json::Value report = r.JsonBody()["report"];
  const Json::Value& media = report["metrics"]["media"];
  EXPECT_EQ(media["bytes_received"].asUInt64(), webm.size());
  EXPECT_EQ(media["decode_errors"].asInt(), 0);
  EXPECT_NEAR(media["audio_seconds"].asDouble(), 5.7, 0.3);
  EXPECT_GT(media["video_frames"].asInt(), 40);
  // As long as its longest track (the video runs a little past the audio).
  EXPECT_GE(report["duration_s"].asDouble(), media["audio_seconds"].asDouble() - 0.05);
  EXPECT_LT(report["duration_s"].asDouble(), 6.5);
  EXPECT_EQ(report["metrics"]["recording"]["container"], "webm");
  // Every decoded frame went through dlib: none skipped to keep up.
  const Json::Value& vision = report["metrics"]["vision"];
  ASSERT_TRUE(vision.isObject()) << core::ToJson(report["metrics"]);
  EXPECT_EQ(vision["skipped_video_frames"].asInt(), 0);
  EXPECT_EQ(vision["server_frames"].asInt() + vision["late_frames"].asInt(),
            media["video_frames"].asInt())
      << core::ToJson(vision);

  // Streaming the same file live, at the pace it was recorded, decodes the same media.
  WsHub hub;
  const std::string id = s.CreateSession("alice");
  auto ws = s.Join(hub, "practice", id, "alice");
  ws->SendText(R"({"type":"start","media":"webm"})");
  ASSERT_TRUE(ws->ReceiveType("started"));
  const size_t per_100ms = webm.size() / 57;
  auto next = std::chrono::steady_clock::now();
  for (size_t off = 0; off < webm.size(); off += per_100ms) {
    ws->SendBinary("\x01" + webm.substr(off, per_100ms));
    next += 100ms;
    std::this_thread::sleep_until(next);
  }
  ws->SendText(R"({"type":"stop"})");
  ASSERT_TRUE(ws->ReceiveType("stopped", 20s));
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice"), 60s).status,
            200);
  const Json::Value live =
      Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
  EXPECT_NEAR(live["metrics"]["media"]["audio_seconds"].asDouble(),
              media["audio_seconds"].asDouble(), 0.05);
  EXPECT_EQ(live["metrics"]["media"]["video_frames"], media["video_frames"]);
  const Json::Value& live_vision = live["metrics"]["vision"];
  if (live_vision["face_frames"].asInt() > 0 && vision["face_frames"].asInt() > 0) {
    EXPECT_NEAR(live["metrics"]["face_visible_ratio"].asDouble(),
                report["metrics"]["face_visible_ratio"].asDouble(), 0.15);
  }
  EXPECT_EQ(vision["face_frames"].asInt() > 0, live_vision["face_frames"].asInt() > 0);
}

TEST(Analyze, BadUploadsGetClearErrorsAndLeaveNoSessionBehind) {
  TestServer s([](app::AppConfig& c) {
    c.server.max_upload_bytes = 512 * 1024;  // the committed WebM (387 KiB) fits
    c.uploads.max_duration_s = 3;
  });
  const std::vector<int16_t> second(16000, 100);
  std::vector<int16_t> four_seconds(4 * 16000, 100);
  const std::string wav = speech::EncodeWav(second, 16000);
  struct Case {
    std::string name, body, type, query;
    long status;
    std::string code;
  };
  const std::string webm = CommittedWebm();  // 5.7 s: over the 3 s limit
  const std::vector<Case> cases = {
      {"empty", "", "audio/wav", "?persona_id=seoa", 400, "empty_recording"},
      {"garbage as wav", std::string(4000, 'x'), "audio/wav", "?persona_id=seoa", 422,
       "undecodable_recording"},
      {"riff that is not audio", "RIFF\x10\0\0\0WAVEjunkjunkjunk", "audio/x-wav",
       "?persona_id=seoa", 422, "undecodable_recording"},
      {"garbage as webm", std::string(4000, 'x'), "video/webm", "?persona_id=seoa", 422,
       "undecodable_recording"},
      {"webm cut inside its header", webm.substr(0, 60), "video/webm", "?persona_id=seoa", 422,
       "undecodable_recording"},
      {"wav sent as webm", wav, "audio/webm", "?persona_id=seoa", 422, "undecodable_recording"},
      {"wrong type", wav, "text/plain", "?persona_id=seoa", 415, "unsupported_media_type"},
      {"no type", wav, "", "?persona_id=seoa", 415, "unsupported_media_type"},
      {"over the size limit", std::string(600 * 1024, '\0'), "audio/wav", "?persona_id=seoa", 413,
       "payload_too_large"},
      {"wav over the duration limit", speech::EncodeWav(four_seconds, 16000), "audio/wav",
       "?persona_id=seoa", 413, "recording_too_long"},
      {"webm over the duration limit", webm, "video/webm", "?persona_id=seoa", 413,
       "recording_too_long"},
      {"no persona", wav, "audio/wav", "", 422, "invalid_request"},
      {"unknown persona", wav, "audio/wav", "?persona_id=nobody", 422, "unknown_persona"},
  };
  for (const Case& c : cases) {
    const HttpResult r = Upload(s, c.body, c.type, c.query);
    EXPECT_EQ(r.status, c.status) << c.name << ": " << r.body;
    EXPECT_EQ(ErrorCode(r), c.code) << c.name << ": " << r.body;
    EXPECT_FALSE(r.JsonBody()["error"]["message"].asString().empty()) << c.name;
  }
  EXPECT_EQ(Http("GET", s.Url("/api/analyze"), "", s.Auth("alice")).status, 405);
  EXPECT_EQ(
      Http("POST", s.Url("/api/analyze?persona_id=seoa"), wav, {{"Content-Type", "audio/wav"}})
          .status,
      401);
  // None of them left a session, stored or in memory.
  const Json::Value listed = Http("GET", s.Url("/api/sessions"), "", s.Auth("alice")).JsonBody();
  EXPECT_EQ(listed["sessions"].size(), 0u) << core::ToJson(listed);
  EXPECT_EQ(s.app().sessions().CountInState(session::State::kLive), 0u);
  // And the server still analyses a good one.
  const HttpResult ok = Upload(s, wav, "audio/wav");
  EXPECT_EQ(ok.status, 201) << ok.body;
}

TEST(Analyze, AnAnalysisInProgressHoldsUpNoOtherRequest) {
  const std::vector<int16_t> one = Monologue(6);
  ASSERT_FALSE(one.empty()) << "asterisk-core-sounds-en is not installed";
  std::vector<int16_t> pcm;
  for (int i = 0; i < 3; ++i) pcm.insert(pcm.end(), one.begin(), one.end());
  TestServer s([](app::AppConfig& c) { c.workers.threads = 1; });  // one general worker only
  const std::string wav = speech::EncodeWav(pcm, 16000);
  auto upload = std::async(std::launch::async, [&] { return Upload(s, wav, "audio/wav"); });
  // The analysis has started once its session is live.
  for (int i = 0; i < 500 && s.app().sessions().CountInState(session::State::kLive) == 0; ++i)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(s.app().sessions().CountInState(session::State::kLive), 1u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Http("GET", s.Url("/health")).status, 200);
    EXPECT_EQ(Http("GET", s.Url("/api/sessions"), "", s.Auth("alice")).status, 200);
  }
  EXPECT_EQ(upload.wait_for(0ms), std::future_status::timeout)
      << "the other requests should have been answered while the analysis ran";
  const HttpResult r = upload.get();
  EXPECT_EQ(r.status, 201) << r.body;
}

}  // namespace
}  // namespace parley
