// A remote transcription service's answer (OpenAI verbose_json). Whatever it says, a parsed
// recognition has words with text, times ordered within a day of the utterance's start, and
// confidences in 0..1, which is what the session's timeline and report assume.
#include <string>

#include "speech/speech.h"
#include "tests/fuzz/fuzz.h"

using namespace parley;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  std::string error;
  const auto r = speech::ParseTranscription(body, &error);
  if (!r) {
    PARLEY_FUZZ_CHECK(!error.empty());
    return 0;
  }
  PARLEY_FUZZ_CHECK(r->confidence >= 0 && r->confidence <= 1);
  constexpr int64_t kDayMs = 24LL * 3600 * 1000;
  for (const auto& w : r->words) {
    PARLEY_FUZZ_CHECK(!w.text.empty());
    PARLEY_FUZZ_CHECK(w.t_start_ms >= 0 && w.t_start_ms <= w.t_end_ms && w.t_end_ms <= kDayMs);
    PARLEY_FUZZ_CHECK(w.confidence >= 0 && w.confidence <= 1);
  }
  return 0;
}
