// The front door (see front_door.h): one epoll thread that accepts, reads each new connection's
// first request head, answers the heads lws would drop, and hands the rest on.
#include "signaling/front_door.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "core/core.h"

namespace parley::signaling {
namespace {

using Clock = std::chrono::steady_clock;

// After an answer the front door keeps reading (and throwing away) what the client still sends
// for this long before closing: closing with unread input makes the kernel reset the
// connection, which can destroy the answer before the client reads it.
constexpr auto kLinger = std::chrono::seconds(2);
constexpr size_t kReadChunk = 16 * 1024;

const char* ReasonPhrase(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 408:
      return "Request Timeout";
    case 414:
      return "URI Too Long";
    case 431:
      return "Request Header Fields Too Large";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

std::string Answer(const HeadVerdict& v) {
  Json::Value body(Json::objectValue);
  body["error"]["code"] = v.code;
  body["error"]["message"] = v.message;
  const std::string json = core::ToJson(body);
  std::string out = "HTTP/1.1 " + std::to_string(v.status) + " " + ReasonPhrase(v.status) +
                    "\r\nserver: parley\r\ncontent-type: application/json\r\ncontent-length: " +
                    std::to_string(json.size()) +
                    "\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n";
  return out + json;
}

HeadVerdict Refusal(int status, std::string code, std::string message) {
  return {status, std::move(code), std::move(message)};
}

}  // namespace

HeadVerdict JudgeRequestHead(std::string_view head, bool complete, const FrontDoorLimits& limits) {
  // Control bytes: lws fails on a NUL anywhere; any other control byte in a head is malformed
  // too (RFC 9110 §5.5), except the tab and the CR LF line ends.
  for (size_t i = 0; i < head.size(); ++i) {
    const auto c = static_cast<unsigned char>(head[i]);
    if (c == 0) return Refusal(400, "bad_request", "the request holds a NUL byte");
    if (c == '\r' && i + 1 < head.size() && head[i + 1] != '\n')
      return Refusal(400, "bad_request", "a CR not followed by LF in the request head");
    if ((c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7F)
      return Refusal(400, "bad_request", "a control character in the request head");
  }
  const size_t line_end = head.find("\r\n");
  const std::string_view line = head.substr(0, line_end);  // all of it when there is no CR LF yet
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  const std::string_view target = sp1 == std::string_view::npos
                                      ? std::string_view()
                                      : line.substr(sp1 + 1, sp2 == std::string_view::npos
                                                                 ? std::string_view::npos
                                                                 : sp2 - sp1 - 1);
  if (target.size() > limits.max_request_target)
    return Refusal(414, "uri_too_long",
                   "the request target is over " + std::to_string(limits.max_request_target) +
                       " bytes");
  if (head.size() > limits.max_head_bytes)
    return Refusal(431, "headers_too_large",
                   "the request head is over " + std::to_string(limits.max_head_bytes) + " bytes");
  if (!complete) return {};  // wait for the rest

  if (sp1 == 0 || sp1 == std::string_view::npos || sp2 == std::string_view::npos ||
      target.empty() || line.find(' ', sp2 + 1) != std::string_view::npos)
    return Refusal(400, "bad_request", "malformed request line");
  const std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0")
    return Refusal(400, "bad_request", "only HTTP/1.0 and HTTP/1.1 are served");
  for (size_t i = 0; i + 2 < target.size(); ++i) {
    if (target[i] == '%' && target[i + 1] == '0' && target[i + 2] == '0')
      return Refusal(400, "bad_request", "the request target holds an encoded NUL (%00)");
  }
  if (const size_t q = target.find('?'); q != std::string_view::npos && q + 1 < target.size()) {
    const std::string_view query = target.substr(q + 1);
    const auto params = 1 + std::count(query.begin(), query.end(), '&');
    if (params > limits.max_query_params)
      return Refusal(414, "uri_too_long",
                     "more than " + std::to_string(limits.max_query_params) +
                         " query parameters");
  }
  // Lines between the request line and the blank line.
  int lines = 0;
  for (size_t at = line_end + 2; at + 2 <= head.size();) {
    const size_t next = head.find("\r\n", at);
    if (next == std::string_view::npos || next == at) break;
    ++lines;
    at = next + 2;
  }
  if (lines > limits.max_header_lines)
    return Refusal(431, "headers_too_large",
                   "more than " + std::to_string(limits.max_header_lines) + " header lines");
  return {};
}

struct FrontDoor::Impl {
  struct Pending {
    size_t seen = 0;  // bytes of the head received so far
    Clock::time_point deadline;
    bool answered = false;  // lingering after an answer: input is read and thrown away
  };

  Impl(FrontDoorLimits l, Admit a, core::Metrics& m)
      : limits(l), admit(std::move(a)), metrics(m) {}

  bool Listen(const std::string& bind_address, int port, std::string* error) {
    const bool any = bind_address.empty() || bind_address == "0.0.0.0" || bind_address == "::";
    addrinfo hints{};
    hints.ai_family = any ? AF_INET6 : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    const std::string service = std::to_string(port);
    addrinfo* found = nullptr;
    int rc = getaddrinfo(any ? nullptr : bind_address.c_str(), service.c_str(), &hints, &found);
    if (rc != 0 && any) {  // no IPv6 here: every IPv4 address
      hints.ai_family = AF_INET;
      rc = getaddrinfo(nullptr, service.c_str(), &hints, &found);
    }
    if (rc != 0) {
      *error = std::string("cannot resolve the bind address: ") + gai_strerror(rc);
      return false;
    }
    std::string last = "no address";
    for (addrinfo* ai = found; ai != nullptr && listen_fd < 0; ai = ai->ai_next) {
      const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) continue;
      const int one = 1, zero = 0;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (ai->ai_family == AF_INET6 && any)  // IPv4 too, as lws did
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
      if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0) {
        listen_fd = fd;
      } else {
        last = std::strerror(errno);
        ::close(fd);
      }
    }
    freeaddrinfo(found);
    if (listen_fd < 0) {
      *error = "cannot listen on " + bind_address + ":" + service + ": " + last;
      return false;
    }
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    getsockname(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len);
    bound_port = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                                  : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_fd < 0 || wake_fd < 0) {
      *error = std::string("epoll: ") + std::strerror(errno);
      return false;
    }
    Watch(listen_fd);
    Watch(wake_fd);
    return true;
  }

  void Watch(int fd, uint32_t events = EPOLLIN) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
  }

  void Run() {
    std::vector<epoll_event> events(64);
    for (;;) {
      const int n = epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()), 250);
      if (n < 0 && errno != EINTR) break;
      for (int i = 0; i < n; ++i) {
        const int fd = events[static_cast<size_t>(i)].data.fd;
        if (fd == wake_fd) return;
        if (fd == listen_fd) {
          AcceptAll();
        } else {
          OnReadable(fd);
        }
      }
      ExpireDeadlines();
    }
  }

  void AcceptAll() {
    for (;;) {
      const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or a transient error (EMFILE...): retried on the next event
      if (static_cast<int>(pending.size()) >= limits.max_pending) {
        Count(503);
        const std::string a = Answer(Refusal(503, "too_many_connections",
                                             "too many connections are still sending requests"));
        ::send(fd, a.data(), a.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        ::close(fd);
        continue;
      }
      pending[fd] = Pending{0, Clock::now() + std::chrono::seconds(limits.head_timeout_s)};
      Watch(fd, EPOLLIN | EPOLLET);  // edge-triggered: peeked bytes stay readable
    }
  }

  void OnReadable(int fd) {
    const auto it = pending.find(fd);
    if (it == pending.end()) return;
    Pending& p = it->second;
    if (p.answered) {  // lingering: read and throw away until the client closes
      char buf[kReadChunk];
      for (;;) {
        const ssize_t got = ::recv(fd, buf, sizeof buf, 0);
        if (got > 0) continue;
        if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) Drop(fd);
        return;
      }
    }
    // The head is only peeked at: lws reads the connection itself from its first byte (handing
    // bytes over with lws_adopt_socket_vhost_readbuf makes lws service the socket inside our
    // callback, which spins in lws 4.1 when part of a body came with the head).
    scratch.resize(limits.max_head_bytes + 1);
    const ssize_t got = ::recv(fd, scratch.data(), scratch.size(), MSG_PEEK);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      Drop(fd);  // the client went away
      return;
    }
    if (got < 0) return;
    p.seen = static_cast<size_t>(got);
    const std::string_view bytes(scratch.data(), p.seen);
    const size_t end = bytes.find("\r\n\r\n");
    const bool complete = end != std::string_view::npos;
    const HeadVerdict v =
        JudgeRequestHead(complete ? bytes.substr(0, end + 4) : bytes, complete, limits);
    if (v.status != 0) {
      Refuse(fd, p, v);
    } else if (complete) {
      epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
      pending.erase(it);
      admit(fd);
    }
  }

  void Refuse(int fd, Pending& p, const HeadVerdict& v) {
    Count(v.status);
    const std::string a = Answer(v);
    ::send(fd, a.data(), a.size(), MSG_NOSIGNAL | MSG_DONTWAIT);  // small: fits the buffer
    ::shutdown(fd, SHUT_WR);
    p.answered = true;
    p.deadline = Clock::now() + kLinger;
  }

  void ExpireDeadlines() {
    const auto now = Clock::now();
    std::vector<int> expired;
    for (auto& [fd, p] : pending)
      if (now >= p.deadline) expired.push_back(fd);
    for (const int fd : expired) {
      Pending& p = pending[fd];
      if (p.answered || p.seen == 0) {
        Drop(fd);  // lingered long enough, or an idle connection that never sent a byte
      } else {
        Refuse(fd, p, Refusal(408, "request_timeout",
                              "the request head did not arrive within " +
                                  std::to_string(limits.head_timeout_s) + " s"));
      }
    }
  }

  void Drop(int fd) {
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    pending.erase(fd);
  }

  void Count(int status) {
    metrics
        .GetCounter("parley_http_requests_total", "HTTP requests by route and status",
                    {{"route", "front_door"}, {"status", std::to_string(status)}})
        .Add();
  }

  void CloseAll() {
    for (auto& [fd, p] : pending) ::close(fd);
    pending.clear();
    for (int* fd : {&listen_fd, &epoll_fd, &wake_fd}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
  }

  FrontDoorLimits limits;
  Admit admit;
  core::Metrics& metrics;
  int listen_fd = -1, epoll_fd = -1, wake_fd = -1;
  int bound_port = 0;
  std::unordered_map<int, Pending> pending;  // the front door's thread only
  std::string scratch;                       // peeked heads
  std::thread thread;
};

FrontDoor::FrontDoor(FrontDoorLimits limits, Admit admit, core::Metrics& metrics)
    : impl_(std::make_unique<Impl>(limits, std::move(admit), metrics)) {}

FrontDoor::~FrontDoor() { Stop(); }

bool FrontDoor::Start(const std::string& bind_address, int port, std::string* error) {
  if (!impl_->Listen(bind_address, port, error)) {
    impl_->CloseAll();
    return false;
  }
  port_ = impl_->bound_port;
  impl_->thread = std::thread([this] { impl_->Run(); });
  return true;
}

void FrontDoor::Stop() {
  if (!impl_->thread.joinable()) {
    impl_->CloseAll();
    return;
  }
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(impl_->wake_fd, &one, sizeof one);
  impl_->thread.join();
  impl_->CloseAll();
}

}  // namespace parley::signaling
