// PocketSphinx's search settings, chosen by measurement: word error rate against CPU per second
// of audio for each candidate, on the recorded speech the tests use (pocketsphinx-testdata's
// librivox sentences and asterisk-core-sounds-en's prompts, with their transcripts). Each file is
// decoded the way the server does it: a pooled decoder (live cepstral mean, the endpointer's
// lead-in), fed in 100 ms pieces as it is spoken, finished at the end. CPU is the decoding
// thread's own time, the median of --repeats runs; WER is over the whole corpus (total edits /
// total reference words).
//   asr_sweep [--prompts 60] [--repeats 3] [--search "-beam 1e-40" --search full ...]
#include <time.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "speech/speech.h"
#include "tests/support/audio_files.h"
#include "tests/support/recorded_turns.h"

namespace {

struct Clip {
  bool read_prose = false;  // a librivox sentence (wideband); else a telephone prompt
  std::string reference;
  std::vector<int16_t> pcm;
};

std::string Normalise(const std::string& text) {
  std::string out;
  for (char c : text)
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '\'' || c == ' ')
      out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return out;
}

std::vector<Clip> Corpus(size_t prompts) {
  std::vector<Clip> clips;
  std::ifstream in("/usr/share/pocketsphinx/test/data/librivox/transcription");
  std::string line;
  while (std::getline(in, line)) {
    const auto open = line.rfind('(');
    if (open == std::string::npos) continue;
    std::string text = line.substr(0, open);
    for (const std::string tag : {"<s>", "</s>"})
      if (const auto at = text.find(tag); at != std::string::npos) text.erase(at, tag.size());
    const std::string id = line.substr(open + 1, line.size() - open - 2);
    auto pcm = parley::testing::DecodeTo16k("/usr/share/pocketsphinx/test/data/librivox/" + id +
                                            ".wav");
    if (!pcm.empty()) clips.push_back({true, Normalise(text), std::move(pcm)});
  }
  size_t taken = 0;
  for (const auto& [name, transcript] : parley::testing::AsteriskTranscripts()) {
    if (taken >= prompts) break;
    if (transcript.find_first_of("0123456789[/") != std::string::npos ||
        parley::testing::SplitWords(Normalise(transcript)).size() < 3)
      continue;
    auto pcm = parley::testing::DecodeTo16k("/usr/share/asterisk/sounds/en/" + name + ".wav");
    if (pcm.empty()) continue;
    clips.push_back({false, Normalise(transcript), std::move(pcm)});
    ++taken;
  }
  return clips;
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

struct Result {
  double cpu_per_audio_s = 0;
  double wer = 0;                     // the whole corpus
  double wer_prose = 0, wer_prompts = 0;  // its two parts
};

bool Run(const std::string& search, const std::vector<Clip>& corpus, int repeats, bool verbose,
         Result* out) {
  parley::speech::PocketSphinxConfig config;
  config.pool_size = 1;
  config.search = search;
  config.lead_in_ms = parley::speech::EndpointConfig{}.pre_roll_ms;
  std::string error = config.Validate();
  if (!error.empty()) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return false;
  }
  const auto pool = parley::speech::DecoderPool::Create(config, &error);
  if (!pool) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return false;
  }
  double audio_s = 0;
  for (const auto& c : corpus) audio_s += static_cast<double>(c.pcm.size()) / 16000;
  std::vector<double> cpu;
  double edits[2] = {0, 0}, words[2] = {0, 0};
  for (int r = 0; r < repeats; ++r) {
    double spent = 0;
    edits[0] = edits[1] = words[0] = words[1] = 0;
    for (const auto& clip : corpus) {
      std::unique_ptr<parley::speech::RecognitionStream> stream;
      pool->Acquire([&](auto s) { stream = std::move(s); });  // free: called at once
      const double t0 = ThreadCpuSeconds();
      for (size_t off = 0; off < clip.pcm.size(); off += 1600) {
        const size_t n = std::min<size_t>(1600, clip.pcm.size() - off);
        stream->Feed(std::span<const int16_t>(clip.pcm.data() + off, n), &error);
      }
      const auto result = stream->Finish({}, &error);
      spent += ThreadCpuSeconds() - t0;
      const double n = static_cast<double>(parley::testing::SplitWords(clip.reference).size());
      edits[clip.read_prose ? 1 : 0] +=
          parley::testing::WordErrorRate(clip.reference, result ? result->text : "") * n;
      if (verbose && r == 0)
        std::printf("  ref: %s\n  hyp: %s\n", clip.reference.c_str(),
                    result ? result->text.c_str() : ("(" + error + ")").c_str());
      words[clip.read_prose ? 1 : 0] += n;
    }
    cpu.push_back(spent / audio_s);
  }
  std::sort(cpu.begin(), cpu.end());
  out->cpu_per_audio_s = cpu[cpu.size() / 2];
  out->wer = (edits[0] + edits[1]) / std::max(1.0, words[0] + words[1]);
  out->wer_prompts = edits[0] / std::max(1.0, words[0]);
  out->wer_prose = edits[1] / std::max(1.0, words[1]);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"PocketSphinx search settings: WER against CPU per audio second"};
  size_t prompts = 40;
  int repeats = 3;
  std::vector<std::string> searches = {
      "full",
      "fast",
      "-maxhmmpf 10000",
      "-maxhmmpf 5000",
      "-topn 2",
      "-ds 2",
      "-beam 1e-40 -pbeam 1e-40",
      "-beam 1e-30 -pbeam 1e-30 -wbeam 1e-20",
      "-pl_window 10",
      "-maxwpf 10",
      "-maxhmmpf 5000 -topn 2",
      "-maxhmmpf 5000 -topn 2 -maxwpf 10",
      "-beam 1e-40 -pbeam 1e-40 -topn 2 -maxwpf 10",
      "-beam 1e-40 -pbeam 1e-40 -maxwpf 10 -maxhmmpf 5000",
      "-maxwpf 10 -maxhmmpf 5000",
      "-maxwpf 5 -maxhmmpf 3000",
      "-pbeam 1e-40 -maxwpf 5 -maxhmmpf 3000",
  };
  cli.add_option("--prompts", prompts, "Asterisk prompts beside the librivox sentences")
      ->capture_default_str();
  cli.add_option("--repeats", repeats, "Runs per setting (CPU: the median)")->capture_default_str();
  cli.add_option("--search", searches, "Settings to try (repeat); presets fast, full");
  bool verbose = false;
  cli.add_flag("--verbose", verbose, "Print each clip's reference and hypothesis");
  CLI11_PARSE(cli, argc, argv);

  const auto corpus = Corpus(prompts);
  double audio_s = 0;
  size_t words = 0;
  for (const auto& c : corpus) {
    audio_s += static_cast<double>(c.pcm.size()) / 16000;
    words += parley::testing::SplitWords(c.reference).size();
  }
  if (corpus.size() < 5) {
    std::fprintf(stderr, "pocketsphinx-testdata or asterisk-core-sounds-en-wav is missing\n");
    return 1;
  }
  std::printf("corpus: %zu clips, %.1f s of speech, %zu words; %d runs each\n", corpus.size(),
              audio_s, words, repeats);
  std::printf("%-50s %9s %7s %9s %10s\n", "search", "cpu_s/s", "WER_%", "prose_%", "prompts_%");
  for (const auto& s : searches) {
    Result r;
    if (!Run(s, corpus, repeats, verbose, &r)) return 1;
    std::printf("%-50s %9.4f %7.2f %9.2f %10.2f\n", s.c_str(), r.cpu_per_audio_s, r.wer * 100,
                r.wer_prose * 100, r.wer_prompts * 100);
    std::fflush(stdout);
  }
  return 0;
}
