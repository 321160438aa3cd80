// The front door: accepts connections and reads the head of each connection's first request
// before libwebsockets sees it, so that a request lws 4.1 cannot hold still gets an answer.
// lws closes such a connection without a word (its parser fails on a header block over its
// header space, more than ~90 URL fragments, a NUL byte); here it is answered 414/431/400 with
// the JSON error. The head is only peeked at (MSG_PEEK): a sound one is handed on unread
// (lws_adopt_socket_vhost) and lws reads the connection from its first byte. Requests after the first on a kept-alive connection go to
// lws directly (lws reads them; the front door sees only new connections).
//
// Internal to signaling. One thread (epoll); the admit callback runs on it and must not block.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace parley::core {
class Metrics;
}

namespace parley::signaling {

struct FrontDoorLimits {
  size_t max_request_target = 8 * 1024;  // 414 above
  size_t max_head_bytes = 32 * 1024;     // request line + headers; 431 above
  int max_query_params = 48;             // 414 above (lws holds ~90 fragments in all)
  int max_header_lines = 40;             // 431 above
  int head_timeout_s = 20;               // a head not complete by then: 408
  int max_pending = 1024;                // connections whose head is still coming; more: 503
};

class FrontDoor {
 public:
  // Called with an accepted socket whose first request head is sound and still unread. Takes
  // ownership of the fd.
  using Admit = std::function<void(int fd)>;

  FrontDoor(FrontDoorLimits limits, Admit admit, core::Metrics& metrics);
  ~FrontDoor();
  FrontDoor(const FrontDoor&) = delete;
  FrontDoor& operator=(const FrontDoor&) = delete;

  // Binds and listens ("0.0.0.0"/"::": every address, IPv6 and IPv4; port 0: any free port)
  // and starts the thread. False with `error` when the address cannot be bound.
  bool Start(const std::string& bind_address, int port, std::string* error);
  // Closes the listening socket and every connection still in the front door; joins.
  void Stop();
  int port() const { return port_.load(); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<int> port_{0};
};

// The verdict on a request head (exposed for tests and fuzzing): 0 when it may go on, else the
// HTTP status it gets, with the error code and message.
struct HeadVerdict {
  int status = 0;
  std::string code, message;
};
// `head` is the bytes up to and including the blank line ("\r\n\r\n"), or, when `complete` is
// false, everything received so far without one.
HeadVerdict JudgeRequestHead(std::string_view head, bool complete, const FrontDoorLimits& limits);

}  // namespace parley::signaling
