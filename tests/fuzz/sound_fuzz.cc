// Uploaded sound files (POST /api/analyze, a remote TTS service's WAV): libsndfile reading
// from memory. A file decodes to a bounded amount of mono PCM at a positive rate, or is refused
// with a reason.
#include <string>
#include <vector>

#include "speech/speech.h"
#include "tests/fuzz/fuzz.h"

using namespace parley;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr double kMaxSeconds = 2;
  std::vector<int16_t> pcm;
  int rate = 0;
  std::string error;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (!speech::DecodeSound(bytes, &pcm, &rate, &error, kMaxSeconds)) {
    PARLEY_FUZZ_CHECK(!error.empty());
    return 0;
  }
  PARLEY_FUZZ_CHECK(rate > 0);
  PARLEY_FUZZ_CHECK(static_cast<double>(pcm.size()) <= kMaxSeconds * rate + 1);
  return 0;
}
