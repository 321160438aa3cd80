#include "tests/support/recorded_turns.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>

#include "tests/support/audio_files.h"

namespace parley::testing {
namespace {

constexpr int kRate = 16000;

int CountClauses(const std::string& text) {
  int clauses = 0;
  bool in_words = false;
  for (char c : text) {
    const bool mark = c == '.' || c == ',' || c == '?' || c == '!' || c == ';';
    if (mark && in_words) ++clauses;
    in_words = !mark && (in_words || std::isalnum(static_cast<unsigned char>(c)) != 0);
  }
  return std::max(1, clauses + (in_words ? 1 : 0));
}

}  // namespace

std::vector<std::pair<std::string, std::string>> AsteriskTranscripts() {
  std::vector<std::pair<std::string, std::string>> out;
  FILE* f =
      popen("zcat /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz 2>/dev/null", "r");
  if (f == nullptr) return out;
  char line[8192];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    std::string l(line);
    while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.pop_back();
    const auto colon = l.find(": ");
    if (l.empty() || l[0] == ';' || colon == std::string::npos) continue;
    out.emplace_back(l.substr(0, colon), l.substr(colon + 2));
  }
  pclose(f);
  return out;
}

std::vector<RecordedTurn> RecordedTurns(bool multi_clause_only) {
  std::vector<RecordedTurn> out;
  for (const auto& [name, text] : AsteriskTranscripts()) {
    // Sound effects and the silence/N files are not speech.
    if (text.find('[') != std::string::npos || name.rfind("silence/", 0) == 0) continue;
    RecordedTurn t{name, CountClauses(text), {}};
    if (multi_clause_only && t.clauses < 2) continue;
    t.pcm = DecodeTo16k("/usr/share/asterisk/sounds/en/" + name + ".wav");
    if (t.pcm.size() > kRate / 4) out.push_back(std::move(t));
  }
  std::ifstream ids("/usr/share/pocketsphinx/test/data/librivox/fileids");
  for (std::string id; std::getline(ids, id);) {
    if (id.empty()) continue;
    RecordedTurn t{id, 2, DecodeTo16k("/usr/share/pocketsphinx/test/data/librivox/" + id + ".wav")};
    if (!t.pcm.empty()) out.push_back(std::move(t));
  }
  return out;
}

int CountUtterances(const std::vector<int16_t>& turn, const speech::EndpointConfig& config,
                    uint32_t noise_seed) {
  std::mt19937 rng(noise_seed);
  std::normal_distribution<double> hiss(0.0, 32768.0 * 0.001);  // -60 dBFS
  std::vector<int16_t> audio;
  const auto noise = [&](int ms) {
    for (int i = 0; i < ms * kRate / 1000; ++i)
      audio.push_back(static_cast<int16_t>(std::lround(hiss(rng))));
  };
  noise(1000);
  for (int16_t s : turn)
    audio.push_back(
        static_cast<int16_t>(std::clamp<long>(s + std::lround(hiss(rng)), -32768, 32767)));
  noise(config.end_silence_ms + 1500);
  std::string error;
  auto ep = speech::Endpointer::Create(config, &error);
  if (!ep) return -1;
  std::vector<speech::EndpointEvent> events;
  for (size_t i = 0; i < audio.size(); i += 320)
    ep->Feed(static_cast<int64_t>(i) * 1000 / kRate,
             std::span<const int16_t>(audio).subspan(i, std::min<size_t>(320, audio.size() - i)),
             &events);
  ep->Flush(&events);
  return static_cast<int>(std::count_if(events.begin(), events.end(), [](const auto& e) {
    return e.kind == speech::EndpointEvent::Kind::kSpeechEnd && e.utterance.has_value();
  }));
}

}  // namespace parley::testing
