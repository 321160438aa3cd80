// Upload analysis speed: a WAV of human speech (asterisk-core-sounds-en's prompts with a
// monologue's pauses, one speaker) of --seconds, POSTed to /api/analyze of a real server
// --repeat times; prints each run's wall time and times real time, then the median.
//   build/default/bench/upload_bench --seconds 300 --repeat 5
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <random>

#include "speech/speech.h"
#include "tests/support/audio_files.h"
#include "tests/support/recorded_turns.h"
#include "tests/support/test_server.h"

int main(int argc, char** argv) {
  CLI::App cli{"POST /api/analyze speed on a WAV of human speech"};
  double seconds = 300;
  int repeat = 5;
  std::string file;
  cli.add_option("--seconds", seconds, "Length of the generated speech WAV");
  cli.add_option("--repeat", repeat, "Uploads (the median is reported)");
  cli.add_option("--file", file, "Upload this WAV instead");
  CLI11_PARSE(cli, argc, argv);
  using namespace parley;
  std::string wav;
  double media_s = seconds;
  if (file.empty()) {
    std::vector<std::vector<int16_t>> prompts;
    for (const auto& [name, text] : testing::AsteriskTranscripts()) {
      auto pcm = testing::DecodeTo16k("/usr/share/asterisk/sounds/en/" + name + ".wav");
      if (pcm.size() > 16000) prompts.push_back(std::move(pcm));
      if (prompts.size() == 60) break;
    }
    if (prompts.empty()) {
      std::fprintf(stderr, "asterisk-core-sounds-en is not installed\n");
      return 1;
    }
    std::vector<int16_t> pcm;
    std::mt19937 rng(3);
    for (size_t i = 0; pcm.size() < seconds * 16000; ++i) {
      const auto& p = prompts[i % prompts.size()];
      pcm.insert(pcm.end(), p.begin(), p.end());
      pcm.insert(pcm.end(), 8000 + rng() % 16000, 0);
    }
    pcm.resize(static_cast<size_t>(seconds * 16000));
    wav = speech::EncodeWav(pcm, 16000);
  } else {
    std::ifstream in(file, std::ios::binary);
    wav.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  testing::TestServer server([](app::AppConfig& c) { c.server.max_upload_bytes = 512u << 20; });
  testing::Headers h = server.Auth("bench");
  h.emplace_back("Content-Type", "audio/wav");
  std::vector<double> walls, speeds;
  for (int i = 0; i < repeat; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = testing::Http("POST", server.Url("/api/analyze?persona_id=seoa"), wav, h,
                                 std::chrono::minutes(30));
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r.status != 201) {
      std::fprintf(stderr, "upload failed: %ld %s\n", r.status, r.body.c_str());
      return 1;
    }
    const Json::Value rep = r.JsonBody()["report"];
    media_s = rep["metrics"]["recording"]["media_s"].asDouble();
    walls.push_back(wall);
    speeds.push_back(media_s / wall);
    std::printf("run %d: %.1f s of speech in %.2f s = %.1fx real time (turns %d, words %d)\n",
                i + 1, media_s, wall, media_s / wall, rep["metrics"]["turns"].asInt(),
                rep["metrics"]["speech"]["words"].asInt());
  }
  std::sort(walls.begin(), walls.end());
  std::sort(speeds.begin(), speeds.end());
  std::printf("median: %.2f s wall, %.1fx real time over %d uploads of %.0f s\n",
              walls[walls.size() / 2], speeds[speeds.size() / 2], repeat, media_s);
  return 0;
}
