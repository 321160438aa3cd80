// The client's WebSocket messages (docs/protocol.md) read into typed values: the one place where
// a text or binary frame from /ws/practice or /ws/landmarks becomes something the session
// understands, or a refusal with the protocol's error code. What needs the session's state
// (was media started? which media?) is left to the caller.
//
// Threads: pure, any thread. Exposed for tests and fuzzing (tests/fuzz/client_message_fuzz.cc).
#pragma once

#include <json/value.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "session/session.h"

namespace parley::app {

inline constexpr int kProtocolVersion = 1;
// A text message on /ws/landmarks up to this size is checked for a control "type"; larger
// ones are always landmark frames (docs/protocol.md).
inline constexpr size_t kMaxControlMessageBytes = 4096;

// Binary frame kinds (first byte of a binary WebSocket message), see docs/protocol.md.
enum class FrameKind : uint8_t {
  kWebm = 0x01,
  kPcm = 0x02,
  kLandmarks = 0x03,
  kOpus = 0x10,    // server -> client
  kPcmOut = 0x11,  // server -> client
};

enum class Endpoint { kPractice, kLandmarks };

namespace client {
struct Hello {
  int protocol = 0;  // as asked; 0 when "protocol" is not an integer
};
struct Ping {
  Json::Value id;  // echoed in the pong; null when absent
};
struct Start {
  session::StartParams params;
};
struct Stop {};
struct Say {
  std::string text;
};
struct PlaybackPosition {
  int utterance = 0;
  int64_t played_ms = 0;
};
// A landmark frame, still to be parsed by vision (its own parser and limits).
struct Landmarks {
  session::Conversation::LandmarkFormat format;
  std::string_view bytes;  // into the message
};
// A WebM or PCM chunk, payload after the kind byte.
struct Media {
  bool pcm = false;
  std::string_view bytes;  // into the message
};
struct Refusal {
  std::string code, message;
};
}  // namespace client

using ClientMessage =
    std::variant<client::Hello, client::Ping, client::Start, client::Stop, client::Say,
                 client::PlaybackPosition, client::Landmarks, client::Media, client::Refusal>;

// Reads one WebSocket message received on `endpoint`. The views in the result point into
// `data`.
ClientMessage ReadClientMessage(Endpoint endpoint, bool binary, std::string_view data);

}  // namespace parley::app
