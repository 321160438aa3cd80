// A real WebSocket client on libwebsockets for tests and the load client: one WsHub owns an
// lws client context and its service thread; WsClient objects are blocking handles onto
// connections serviced by that thread.
#pragma once

#include <json/value.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace parley::testing {

using Headers = std::vector<std::pair<std::string, std::string>>;
using std::chrono::milliseconds;

struct WsMessage {
  bool binary = false;
  std::string data;
  std::chrono::steady_clock::time_point received;
};

class WsHub;

class WsClient {
 public:
  enum class State { kConnecting, kOpen, kFailed, kClosed };

  // Waits until the handshake finished; true when open.
  bool WaitOpen(milliseconds timeout = milliseconds(5000));
  State state() const;
  std::string failure() const;  // why the connection failed (handshake errors)

  // Stops (or resumes) reading from the socket, like a client that cannot keep up.
  void PauseReading(bool paused);
  void SendText(std::string text);
  void SendBinary(std::string bytes);
  void Close(uint16_t code = 1000);
  // Drops the connection without a close frame (the socket is shut down).
  void Drop();

  std::optional<WsMessage> Receive(milliseconds timeout = milliseconds(5000));
  // Next text message parsed as JSON; skips messages for which `skip` returns true.
  std::optional<Json::Value> ReceiveJson(
      milliseconds timeout = milliseconds(5000),
      const std::function<bool(const Json::Value&)>& skip = nullptr);
  // Next JSON message with this "type" (others are skipped).
  std::optional<Json::Value> ReceiveType(const std::string& type,
                                         milliseconds timeout = milliseconds(5000));
  // Close code the server sent (1006 when the connection dropped without a close frame);
  // nullopt when still open after `timeout`.
  std::optional<uint16_t> WaitClosed(milliseconds timeout = milliseconds(5000));
  std::string close_reason() const;
  // Called on the hub thread for each message (load client); Receive() then sees nothing.
  void SetOnMessage(std::function<void(const WsMessage&)> cb);

 private:
  friend class WsHub;
  friend struct WsHubImpl;
  void Request(const std::function<void()>& change);
  mutable std::mutex mu_;
  std::condition_variable cv_;
  State state_ = State::kConnecting;
  std::string failure_;
  std::deque<WsMessage> inbox_;
  std::optional<uint16_t> close_code_;
  std::string close_reason_;
  std::function<void(const WsMessage&)> on_message_;
  // Hub-thread state.
  void* wsi_ = nullptr;
  std::deque<std::pair<bool, std::string>> outbox_;
  std::optional<uint16_t> closing_;
  bool dropping_ = false;
  std::optional<bool> flow_change_;
  std::string rx_;
  bool rx_binary_ = false;
  std::string path_;
  Headers headers_;
  int port_ = 0;
  WsHub* hub_ = nullptr;
};

struct WsHubImpl;

class WsHub {
 public:
  WsHub();
  ~WsHub();
  WsHub(const WsHub&) = delete;
  WsHub& operator=(const WsHub&) = delete;

  // Starts connecting to ws://127.0.0.1:port<path>; use WaitOpen() on the result.
  // Extra handshake headers (Authorization, Origin...) are sent exactly as given.
  std::shared_ptr<WsClient> Connect(int port, const std::string& path, Headers headers = {});

 private:
  friend class WsClient;
  std::unique_ptr<WsHubImpl> impl_;
};

// ---- HTTP through libcurl -------------------------------------------------------------------

struct HttpResult {
  long status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // lower-case names
  std::string Header(const std::string& name) const;
  Json::Value JsonBody() const;  // null when the body is not JSON
};

// `timeout` bounds the whole request (a session's end waits up to 20 s for last transcripts).
HttpResult Http(const std::string& method, const std::string& url, const std::string& body = {},
                const Headers& headers = {},
                std::chrono::milliseconds timeout = std::chrono::milliseconds(15000));

}  // namespace parley::testing
