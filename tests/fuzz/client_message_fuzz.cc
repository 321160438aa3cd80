// WebSocket messages from a client: the first byte picks the endpoint and text or binary, the
// rest is the message. Every message is read or refused with a code, and the error the client
// would get (which echoes the message's own values) is valid JSON.
#include <variant>

#include "app/client_message.h"
#include "core/core.h"
#include "tests/fuzz/fuzz.h"

using namespace parley;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  const uint8_t mode = in.Byte();
  const auto endpoint = (mode & 1) ? app::Endpoint::kLandmarks : app::Endpoint::kPractice;
  const bool binary = (mode & 2) != 0;
  const std::string_view message = in.Rest();
  const app::ClientMessage read = app::ReadClientMessage(endpoint, binary, message);
  const auto inside = [&](std::string_view v) {
    return v.empty() ||
           (v.data() >= message.data() && v.data() + v.size() <= message.data() + message.size());
  };
  if (const auto* refusal = std::get_if<app::client::Refusal>(&read)) {
    PARLEY_FUZZ_CHECK(!refusal->code.empty() && !refusal->message.empty());
    Json::Value error;
    error["type"] = "error";
    error["error"]["code"] = refusal->code;
    error["error"]["message"] = refusal->message;
    const std::string text = core::ToJson(error);
    PARLEY_FUZZ_CHECK(core::ParseJson(text).has_value());
  } else if (const auto* frame = std::get_if<app::client::Landmarks>(&read)) {
    PARLEY_FUZZ_CHECK(inside(frame->bytes));
  } else if (const auto* media = std::get_if<app::client::Media>(&read)) {
    PARLEY_FUZZ_CHECK(binary && endpoint == app::Endpoint::kPractice && inside(media->bytes));
  } else if (const auto* start = std::get_if<app::client::Start>(&read)) {
    PARLEY_FUZZ_CHECK(!binary && endpoint == app::Endpoint::kPractice);
    const auto& p = start->params;
    PARLEY_FUZZ_CHECK(p.media != session::StartParams::Media::kPcm ||
                      (p.sample_rate >= 8000 && p.sample_rate <= 48000));
  } else if (const auto* position = std::get_if<app::client::PlaybackPosition>(&read)) {
    PARLEY_FUZZ_CHECK(position->played_ms >= 0 && position->played_ms <= 1000000000);
  }
  return 0;
}
