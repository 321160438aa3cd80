// End-of-turn silence, chosen by measurement: how many recorded turns the endpointer cuts in two
// at each candidate end silence, against the latency that silence adds to every reply.
//
// The turns are continuous human speech a listener hears as one turn (tests/support/
// recorded_turns.h: every asterisk prompt, 1-9 sentences or clauses each, and the librivox
// sentences). A turn reported as more than one utterance was cut at a pause inside it: the
// persona would have answered mid-turn. The default is the shortest silence that cuts no more
// turns than waiting a full second does.
//   endpoint_sweep [--silences 150,200,...]
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "speech/speech.h"
#include "tests/support/recorded_turns.h"

int main(int argc, char** argv) {
  CLI::App cli{"End-of-turn silence sweep over recorded multi-clause turns"};
  std::vector<int> silences{150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800, 1000};
  cli.add_option("--silences", silences, "End silences to try, ms")->delimiter(',');
  CLI11_PARSE(cli, argc, argv);

  const auto turns = parley::testing::RecordedTurns(/*multi_clause_only=*/false);
  size_t multi = 0;
  double seconds = 0;
  for (const auto& t : turns) {
    multi += t.clauses > 1 ? 1 : 0;
    seconds += static_cast<double>(t.pcm.size()) / 16000;
  }
  if (multi == 0) {
    std::fprintf(stderr, "asterisk-core-sounds-en(-wav) or pocketsphinx-testdata is missing\n");
    return 1;
  }
  std::printf("turns: %zu, %zu with more than one clause, %.0f s of speech\n", turns.size(), multi,
              seconds);
  std::printf("%8s %6s %7s %7s %13s  %s\n", "end_ms", "cut", "cut_%", "missed", "multi_cut_%",
              "first cut (utterances)");
  for (int silence : silences) {
    parley::speech::EndpointConfig config;
    config.end_silence_ms = silence;
    int cut = 0, cut_multi = 0, missed = 0;
    std::string examples;
    for (size_t i = 0; i < turns.size(); ++i) {
      const int n =
          parley::testing::CountUtterances(turns[i].pcm, config, static_cast<uint32_t>(i));
      if (n < 0) {
        std::fprintf(stderr, "end silence %d ms is not a valid configuration\n", silence);
        return 1;
      }
      if (n == 0) ++missed;
      if (n > 1) {
        ++cut;
        cut_multi += turns[i].clauses > 1 ? 1 : 0;
        if (cut <= 3) examples += turns[i].name + " (" + std::to_string(n) + ") ";
      }
    }
    std::printf("%8d %6d %7.1f %7d %13.1f  %s\n", silence, cut,
                100.0 * cut / static_cast<double>(turns.size()), missed,
                100.0 * cut_multi / static_cast<double>(multi), examples.c_str());
  }
  return 0;
}
