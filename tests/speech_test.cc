// Speech: voice activity and end of turn on real human prompts joined with known silences, and
// the shared PocketSphinx decoder pool against the bare decoder on the same recordings.
#include "speech/speech.h"

#include <gtest/gtest.h>
#include <pocketsphinx.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "tests/support/audio_files.h"

namespace parley::testing {
namespace {

constexpr int kRate = speech::kSampleRate;

// First and last 10 ms step louder than -40 dBFS: where the studio prompt's speech is.
std::pair<size_t, size_t> SpeechExtent(const std::vector<int16_t>& pcm) {
  const size_t step = kRate / 100;
  size_t first = pcm.size(), last = 0;
  for (size_t i = 0; i + step <= pcm.size(); i += step) {
    double energy = 0;
    for (size_t k = i; k < i + step; ++k) energy += double(pcm[k]) * pcm[k];
    const double dbfs = 10 * std::log10(energy / step / (32768.0 * 32768.0) + 1e-12);
    if (dbfs > -40) {
      first = std::min(first, i);
      last = i + step;
    }
  }
  return {first, last};
}

const char* const kPrompts[] = {"/usr/share/asterisk/sounds/en/hello-world.wav",
                                "/usr/share/asterisk/sounds/en/all-circuits-busy-now.wav",
                                "/usr/share/asterisk/sounds/en/agent-loginok.wav"};

TEST(Endpointing, TurnBoundariesOfJoinedPromptsAreWithin100Ms) {
  // Silence 1.0 s | prompt | 0.9 s | prompt | 1.3 s | prompt | 1.2 s, prompts trimmed to speech.
  const int gaps_ms[] = {1000, 900, 1300, 1200};
  std::vector<int16_t> audio;
  std::vector<std::pair<int64_t, int64_t>> truth;
  std::mt19937 rng(3);
  std::normal_distribution<double> hiss(0, 3);  // a quiet room, not digital zero
  const auto silence = [&](int ms) {
    for (int i = 0; i < ms * kRate / 1000; ++i)
      audio.push_back(static_cast<int16_t>(std::lround(hiss(rng))));
  };
  for (int p = 0; p < 3; ++p) {
    silence(gaps_ms[p]);
    const auto pcm = DecodeTo16k(kPrompts[p]);
    ASSERT_GT(pcm.size(), 8000u) << "asterisk-core-sounds-en-wav is not installed";
    const auto [a, b] = SpeechExtent(pcm);
    const int64_t start = static_cast<int64_t>(audio.size()) * 1000 / kRate;
    audio.insert(audio.end(), pcm.begin() + static_cast<long>(a),
                 pcm.begin() + static_cast<long>(b));
    truth.push_back({start, static_cast<int64_t>(audio.size()) * 1000 / kRate});
  }
  silence(gaps_ms[3]);

  std::string error;
  auto ep = speech::Endpointer::Create({}, &error);
  ASSERT_TRUE(ep) << error;
  std::vector<speech::EndpointEvent> events;
  for (size_t i = 0; i < audio.size(); i += 320)  // 20 ms frames, as the media pipeline sends
    ep->Feed(static_cast<int64_t>(i) * 1000 / kRate,
             std::span<const int16_t>(audio).subspan(i, std::min<size_t>(320, audio.size() - i)),
             &events);
  ep->Flush(&events);
  std::vector<int64_t> starts, ends;
  std::vector<size_t> lengths;
  for (const auto& e : events) {
    if (e.kind == speech::EndpointEvent::Kind::kSpeechStart) starts.push_back(e.t_ms);
    if (e.kind == speech::EndpointEvent::Kind::kSpeechEnd && e.utterance) {
      ends.push_back(e.t_ms);
      lengths.push_back(e.utterance->audio.size());
    }
  }
  ASSERT_EQ(starts.size(), 3u);
  ASSERT_EQ(ends.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(starts[i], truth[i].first, 100) << "utterance " << i;
    EXPECT_NEAR(ends[i], truth[i].second, 100) << "utterance " << i;
    // The utterance audio covers the speech (plus pre-roll and hangover).
    EXPECT_GE(lengths[i], static_cast<size_t>((truth[i].second - truth[i].first) * kRate / 1000));
  }
}

TEST(Endpointing, ShortClicksAreNotUtterances) {
  std::string error;
  auto ep = speech::Endpointer::Create({}, &error);
  ASSERT_TRUE(ep) << error;
  std::vector<int16_t> audio(kRate * 2, 0);
  // A 60 ms burst of a loud 300 Hz tone in the middle.
  for (int i = kRate; i < kRate + kRate * 6 / 100; ++i)
    audio[static_cast<size_t>(i)] =
        static_cast<int16_t>(12000 * std::sin(2 * M_PI * 300 * i / kRate));
  std::vector<speech::EndpointEvent> events;
  ep->Feed(0, audio, &events);
  ep->Flush(&events);
  for (const auto& e : events) EXPECT_FALSE(e.utterance.has_value());
}

// ---- Recognition --------------------------------------------------------------------------

std::map<std::string, std::string> LibrivoxTranscripts() {
  std::ifstream in("/usr/share/pocketsphinx/test/data/librivox/transcription");
  std::map<std::string, std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    const auto open = line.rfind('(');
    if (open == std::string::npos) continue;
    std::string text = line.substr(0, open);
    for (const char* tag : {"<s>", "</s>"}) {
      const auto at = text.find(tag);
      if (at != std::string::npos) text.erase(at, std::strlen(tag));
    }
    out[line.substr(open + 1, line.size() - open - 2)] = text;
  }
  return out;
}

// Asterisk's prompts with their transcripts (asterisk-core-sounds-en): one-sentence prompts of
// three words or more, no digits or sound effects; lower case, punctuation removed.
std::vector<std::pair<std::string, std::string>> AsteriskPrompts(size_t count) {
  std::vector<std::pair<std::string, std::string>> out;
  FILE* f = popen("zcat /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz", "r");
  if (f == nullptr) return out;
  char line[4096];
  while (out.size() < count && std::fgets(line, sizeof line, f) != nullptr) {
    std::string l(line);
    const auto colon = l.find(": ");
    if (l.empty() || l[0] == ';' || colon == std::string::npos) continue;
    const std::string name = l.substr(0, colon);
    std::string text;
    bool ok = true;
    int sentences = 0;
    for (char c : l.substr(colon + 2)) {
      if (std::isdigit(static_cast<unsigned char>(c)) || c == '[' || c == '/') ok = false;
      if (c == '.' || c == '?' || c == '!') ++sentences;
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '\'' || c == ' ')
        text.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
    const std::string wav = "/usr/share/asterisk/sounds/en/" + name + ".wav";
    if (!ok || sentences != 1 || std::count(text.begin(), text.end(), ' ') < 2 ||
        !std::ifstream(wav).good())
      continue;
    out.emplace_back(wav, text);
  }
  pclose(f);
  return out;
}

std::vector<std::string> Words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> w;
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

// Word error rate: word-level edit distance / reference length.
double Wer(const std::string& reference, const std::string& hypothesis) {
  const auto r = Words(reference), h = Words(hypothesis);
  std::vector<std::vector<size_t>> d(r.size() + 1, std::vector<size_t>(h.size() + 1));
  for (size_t i = 0; i <= r.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= h.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= r.size(); ++i)
    for (size_t j = 1; j <= h.size(); ++j)
      d[i][j] = std::min(
          {d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (r[i - 1] == h[j - 1] ? 0 : 1)});
  return r.empty() ? 0 : static_cast<double>(d[r.size()][h.size()]) / r.size();
}

// The bare decoder, as PocketSphinx's own examples use it (same model and CMN setting).
std::string DecodeDirectly(const std::vector<int16_t>& pcm) {
  const speech::PocketSphinxConfig c;
  cmd_ln_t* config = cmd_ln_init(nullptr, ps_args(), TRUE, "-hmm", c.model_dir.c_str(), "-lm",
                                 c.language_model.c_str(), "-dict", c.dictionary.c_str(), "-cmn",
                                 "batch", "-logfn", "/dev/null", nullptr);
  ps_decoder_t* ps = ps_init(config);
  ps_start_utt(ps);
  ps_process_raw(ps, pcm.data(), pcm.size(), FALSE, TRUE);
  ps_end_utt(ps);
  int32 score = 0;
  const char* hyp = ps_get_hyp(ps, &score);
  std::string text = hyp != nullptr ? hyp : "";
  ps_free(ps);
  cmd_ln_free_r(config);
  return text;
}

TEST(DecoderPool, RecognisesHumanSpeechExactlyLikeTheBareDecoder) {
  std::string error;
  auto pool = speech::DecoderPool::Create({}, &error);
  ASSERT_TRUE(pool) << error;
  const auto transcripts = LibrivoxTranscripts();
  ASSERT_GE(transcripts.size(), 3u) << "pocketsphinx-testdata is not installed";
  double wer_pool = 0, wer_direct = 0;
  int n = 0;
  for (const auto& [id, reference] : transcripts) {
    const auto pcm = DecodeTo16k("/usr/share/pocketsphinx/test/data/librivox/" + id + ".wav");
    ASSERT_GT(pcm.size(), 16000u) << id;
    const auto r = pool->Recognize(pcm, std::chrono::seconds(30), &error);
    ASSERT_TRUE(r) << error;
    const std::string direct = DecodeDirectly(pcm);
    EXPECT_EQ(r->text, direct) << id;
    wer_pool += Wer(reference, r->text);
    wer_direct += Wer(reference, direct);
    ++n;
    // Words carry times inside the utterance and confidences.
    ASSERT_FALSE(r->words.empty()) << id;
    EXPECT_LE(r->words.back().t_end_ms, static_cast<int64_t>(pcm.size()) * 1000 / kRate + 20);
    for (size_t i = 1; i < r->words.size(); ++i)
      EXPECT_GE(r->words[i].t_start_ms, r->words[i - 1].t_start_ms);
    EXPECT_GT(r->confidence, 0.0);
    EXPECT_LE(r->confidence, 1.0);
  }
  std::printf("librivox (%d files): WER pool %.3f, bare decoder %.3f\n", n, wer_pool / n,
              wer_direct / n);
  EXPECT_LT(wer_pool / n, 0.5);  // PocketSphinx's generic English model on audiobook speech
}

TEST(DecoderPool, CallersQueueForABusyDecoderAndGiveUpAfterTheirWait) {
  speech::PocketSphinxConfig config;
  config.pool_size = 1;
  std::string error;
  auto pool = speech::DecoderPool::Create(config, &error);
  ASSERT_TRUE(pool) << error;
  const auto pcm = DecodeTo16k(
      "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav");
  ASSERT_FALSE(pcm.empty());
  std::optional<speech::Recognition> a, b;
  std::string ea, eb;
  std::thread t1([&] { a = pool->Recognize(pcm, std::chrono::seconds(60), &ea); });
  while (pool->busy() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // The one decoder is busy: a caller with no patience is refused...
  std::string busy_error;
  EXPECT_FALSE(pool->Recognize(pcm, std::chrono::milliseconds(0), &busy_error));
  EXPECT_NE(busy_error.find("busy"), std::string::npos);
  // ...and a patient one waits its turn.
  std::thread t2([&] { b = pool->Recognize(pcm, std::chrono::seconds(60), &eb); });
  t1.join();
  t2.join();
  ASSERT_TRUE(a) << ea;
  ASSERT_TRUE(b) << eb;
  EXPECT_EQ(a->text, b->text);
}

}  // namespace
}  // namespace parley::testing

// ---- Through the real server
// ----------------------------------------------------------------------

#include "tests/support/test_server.h"

namespace parley::testing {
namespace {

using namespace std::chrono_literals;

TEST(HearingOverWebSocket, PcmSpeechIsSegmentedAndTranscribedAsWellAsByTheBareDecoder) {
  const auto transcripts = LibrivoxTranscripts();
  ASSERT_GE(transcripts.size(), 3u) << "pocketsphinx-testdata is not installed";
  // The recordings one after the other with 1.2 s of quiet room between them.
  std::vector<int16_t> audio;
  std::mt19937 rng(9);
  std::normal_distribution<double> hiss(0, 3);
  const auto silence = [&](int ms) {
    for (int i = 0; i < ms * kRate / 1000; ++i)
      audio.push_back(static_cast<int16_t>(std::lround(hiss(rng))));
  };
  // Audiobook speech (librivox) and telephone prompts (asterisk), each file decoded directly
  // by the bare decoder too; WER is over the whole corpus (total edits / total words), so a
  // prompt the endpointer splits in two is compared fairly.
  std::vector<std::pair<std::string, std::string>> corpus;
  for (const auto& [id, reference] : transcripts)
    corpus.emplace_back("/usr/share/pocketsphinx/test/data/librivox/" + id + ".wav", reference);
  const auto prompts = AsteriskPrompts(20);
  ASSERT_GE(prompts.size(), 10u) << "asterisk-core-sounds-en(-wav) is not installed";
  corpus.insert(corpus.end(), prompts.begin(), prompts.end());
  struct File {
    int64_t start_ms, end_ms;
    std::string reference, direct, server;
    bool librivox;
  };
  std::vector<File> files;
  for (const auto& [wav, reference] : corpus) {
    const auto pcm = DecodeTo16k(wav);
    ASSERT_GT(pcm.size(), 1600u) << wav;
    silence(1200);
    const int64_t start = static_cast<int64_t>(audio.size()) * 1000 / kRate;
    audio.insert(audio.end(), pcm.begin(), pcm.end());
    files.push_back({start, static_cast<int64_t>(audio.size()) * 1000 / kRate, reference,
                     DecodeDirectly(pcm), "", wav.find("librivox") != std::string::npos});
  }
  silence(1200);

  TestServer s;
  WsHub hub;
  const std::string id = s.CreateSession("alice");
  auto ws = s.Join(hub, "practice", id, "alice");
  ws->SendText(R"({"type":"start","media":"pcm","sample_rate":16000})");
  ASSERT_TRUE(ws->ReceiveType("started"));
  // 100 ms messages, paced at 8x real time (the endpointer runs on stream time).
  const auto t0 = std::chrono::steady_clock::now();
  const size_t chunk = kRate / 10;
  for (size_t off = 0, i = 0; off < audio.size(); off += chunk, ++i) {
    std::this_thread::sleep_until(t0 + i * 12500us);
    const size_t n = std::min(chunk, audio.size() - off);
    ws->SendBinary("\x02" + std::string(reinterpret_cast<const char*>(audio.data() + off), n * 2));
  }
  // Ending the session drains the media pipeline, ends a turn still open and waits for the
  // last transcripts before `session_ended`.
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  std::vector<Json::Value> finals;
  int starts = 0, ends = 0, too_short = 0;
  while (auto m = ws->ReceiveJson(30s)) {
    if ((*m)["type"] == "speech_start") ++starts;
    if ((*m)["type"] == "speech_end") {
      ++ends;
      too_short += (*m)["too_short"].asBool() ? 1 : 0;
    }
    if ((*m)["type"] == "transcript.final") finals.push_back(*m);
    if ((*m)["type"] == "session_ended") break;
  }
  // At least one turn per file (a prompt with a long pause may become two); every turn ended,
  // and every one long enough was transcribed.
  std::printf("turns %d, too short %d, transcripts %zu, files %zu\n", starts, too_short,
              finals.size(), files.size());
  EXPECT_GE(starts, static_cast<int>(files.size()));
  EXPECT_EQ(ends, starts);
  ASSERT_EQ(finals.size(), static_cast<size_t>(ends - too_short));
  // Two decoders work in parallel: transcripts may arrive out of order.
  std::sort(finals.begin(), finals.end(), [](const Json::Value& a, const Json::Value& b) {
    return a["t_start"].asInt64() < b["t_start"].asInt64();
  });
  int64_t previous_end = -1;
  for (const auto& f : finals) {
    EXPECT_GT(f["t_start"].asInt64(), previous_end);
    EXPECT_GT(f["t_end"].asInt64(), f["t_start"].asInt64());
    if (f["words"].size() > 0) {
      EXPECT_GE(f["words"][0]["t_start"].asInt64(), f["t_start"].asInt64() - 500);  // pre-roll
    }
    previous_end = f["t_end"].asInt64();
    // The file this turn belongs to (turns start inside a file's speech).
    for (auto& file : files)
      if (f["t_start"].asInt64() >= file.start_ms - 600 && f["t_start"].asInt64() < file.end_ms)
        file.server += " " + f["text"].asString();
  }
  // Corpus WER (total edits / total words) per set of recordings.
  const auto corpus_wer = [&](bool librivox, bool server) {
    double edits = 0, words = 0;
    for (const auto& file : files) {
      if (file.librivox != librivox) continue;
      const double n = static_cast<double>(Words(file.reference).size());
      edits += Wer(file.reference, server ? file.server : file.direct) * n;
      words += n;
    }
    return edits / words;
  };
  std::printf(
      "transcript WER, librivox (16 kHz audiobook): server %.3f, bare decoder %.3f; "
      "asterisk prompts (8 kHz telephone, resampled): server %.3f, bare decoder %.3f\n",
      corpus_wer(true, true), corpus_wer(true, false), corpus_wer(false, true),
      corpus_wer(false, false));
  // The recogniser's own material (16 kHz speech): the server path must match the bare decoder.
  EXPECT_LE(std::abs(corpus_wer(true, true) - corpus_wer(true, false)), 0.02);
  // Telephone prompts are far from the model (WER ~55%) and short, so cutting them into turns
  // costs more; bound the gap loosely.
  EXPECT_LE(corpus_wer(false, true) - corpus_wer(false, false), 0.08);

  EXPECT_EQ(Http("GET", s.Url("/health"))
                .JsonBody()["dependencies"]["speech_recognition"]["status"]
                .asString(),
            "ready");
  const Json::Value r =
      Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
  ASSERT_EQ(r["transcript"].size(),
            finals.size() - static_cast<size_t>(std::count_if(finals.begin(), finals.end(),
                                                              [](const Json::Value& f) {
                                                                return f["text"].asString().empty();
                                                              })));
  EXPECT_EQ(r["transcript"][0]["role"], "user");
  EXPECT_EQ(r["transcript"][0]["text"], finals[0]["text"]);
}

}  // namespace
}  // namespace parley::testing
