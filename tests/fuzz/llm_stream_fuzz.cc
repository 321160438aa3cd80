// A chat-completion stream from an OpenAI-compatible dialogue service: SSE of JSON chunks.
// However the bytes are split across reads (the first two bytes seed the split), the events,
// the deltas, [DONE] and the failure are the same as when the body arrives in one piece.
#include <string>
#include <vector>

#include "dialogue/dialogue.h"
#include "tests/fuzz/fuzz.h"

using namespace parley;

namespace {

struct Outcome {
  std::vector<std::string> events, deltas;
  bool ok = true, done = false;
};

template <class Split>
Outcome Read(std::string_view body, Split next_size) {
  Outcome out;
  dialogue::SseParser sse;
  dialogue::ChatStreamReader reader;
  std::string error;
  for (size_t at = 0; at < body.size();) {
    const std::string_view piece = body.substr(at, next_size());
    at += piece.size();
    sse.Feed(piece, &out.events);
    if (out.ok) {
      out.ok = reader.Feed(piece, &out.deltas, &error);
      if (!out.ok) PARLEY_FUZZ_CHECK(!error.empty());
    }
  }
  out.done = reader.done();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  uint32_t state = (static_cast<uint32_t>(in.Byte()) << 8) | in.Byte();
  const std::string_view body = in.Rest();
  const Outcome whole = Read(body, [&] { return body.size(); });
  const Outcome split = Read(body, [&] {
    state = state * 1103515245U + 12345U;
    return static_cast<size_t>(1 + (state >> 16) % 17);
  });
  PARLEY_FUZZ_CHECK(whole.events == split.events);
  PARLEY_FUZZ_CHECK(whole.ok == split.ok);
  PARLEY_FUZZ_CHECK(whole.deltas == split.deltas);
  if (whole.ok) PARLEY_FUZZ_CHECK(whole.done == split.done);
  return 0;
}
