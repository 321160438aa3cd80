// A real HTTP server (cpp-httplib) on an ephemeral port speaking the OpenAI API's exact shapes
// for the remote engines: POST /v1/chat/completions with "stream": true (server-sent events of
// chat.completion.chunk objects, then "data: [DONE]") and POST /v1/audio/speech (audio bytes).
// Each test scripts the answers, down to how the stream's bytes are split and paced.
#pragma once

#include <json/value.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace parley::testing {

class FakeOpenAi {
 public:
  // How one chat request is answered.
  struct Chat {
    int status = 200;
    std::vector<std::string> pieces;  // raw body bytes, each written (and flushed) on its own
    int first_delay_ms = 0;           // before the first piece
    int piece_delay_ms = 0;           // between pieces
    std::string content_type = "text/event-stream";
  };
  using ChatAnswer = std::function<Chat(int index, const Json::Value& request)>;
  // How one speech request is answered: status, content type, body.
  struct Speech {
    int status = 200;
    std::string content_type = "audio/wav";
    std::string body;
  };
  using SpeechAnswer = std::function<Speech(int index, const Json::Value& request)>;

  explicit FakeOpenAi(ChatAnswer chat, SpeechAnswer speech = nullptr);
  ~FakeOpenAi();
  std::string url() const;  // "http://127.0.0.1:<port>/v1"
  std::vector<Json::Value> chat_requests() const;
  std::vector<Json::Value> speech_requests() const;
  std::vector<std::string> authorizations() const;

  // The SSE body of a streamed reply: a role chunk, one content chunk per word (with its
  // space), a finish chunk, [DONE] — as OpenAI sends it.
  static std::string StreamBody(const std::string& reply, const std::string& model = "test-model");
  // `body` cut into pieces of `size` bytes (mid-line, mid-UTF-8: anywhere).
  static std::vector<std::string> Split(const std::string& body, size_t size);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace parley::testing
