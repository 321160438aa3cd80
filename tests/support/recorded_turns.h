// Recorded human turns for end-of-turn measurements: continuous speech that a listener hears
// as one turn, with the pauses people leave between clauses and sentences.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "speech/speech.h"

namespace parley::testing {

struct RecordedTurn {
  std::string name;
  int clauses = 1;           // punctuation-separated pieces of its transcript
  std::vector<int16_t> pcm;  // 16 kHz mono
};

// asterisk-core-sounds-en's prompts: (name, transcript as written), in the file's order; the
// recording is /usr/share/asterisk/sounds/en/<name>.wav. Empty when the package is missing.
std::vector<std::pair<std::string, std::string>> AsteriskTranscripts();

// Every prompt of asterisk-core-sounds-en (one speaker, 1-9 sentences or clauses each; sound
// effects left out) and the librivox sentences of pocketsphinx-testdata (another speaker, read
// prose). With `multi_clause_only`, only turns with a pause-bearing boundary in the text (and
// the librivox sentences, which have commas). Empty when the packages are missing.
std::vector<RecordedTurn> RecordedTurns(bool multi_clause_only);

// How many utterances an endpointer with `config` reports for `turn` framed by room noise at
// -60 dBFS (1 s before, the end silence plus 1.5 s after), fed in 20 ms frames as the media
// pipeline does. More than one: the turn was cut at a pause inside it.
int CountUtterances(const std::vector<int16_t>& turn, const speech::EndpointConfig& config,
                    uint32_t noise_seed);

}  // namespace parley::testing
