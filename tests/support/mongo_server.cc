#include "tests/support/mongo_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <mongoc/mongoc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace parley::testing {
namespace {

int Listen(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 64) != 0) {
    close(fd);
    throw std::runtime_error("proxy: cannot listen on port " + std::to_string(port));
  }
  return fd;
}

int BoundPort(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

// host:port from mongodb://[user:pass@]host:port[/...]
std::pair<std::string, int> HostPort(const std::string& uri) {
  std::string rest = uri.substr(uri.find("://") + 3);
  if (const auto at = rest.find('@'); at != std::string::npos) rest = rest.substr(at + 1);
  rest = rest.substr(0, rest.find_first_of("/?,"));
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos) return {rest, 27017};
  return {rest.substr(0, colon), std::stoi(rest.substr(colon + 1))};
}

}  // namespace

// Byte-for-byte TCP forwarder with an on/off switch.
struct MongoServer::Proxy {
  std::string target_host;
  int target_port = 0;
  int listen_fd = -1;
  int port = 0;
  std::atomic<bool> running{false};
  std::atomic<bool> quit{false};
  std::thread thread;
  std::mutex mu;
  std::vector<std::pair<int, int>> pairs;  // client fd, upstream fd

  int Connect() const {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(target_host.c_str(), std::to_string(target_port).c_str(), &hints, &res) != 0)
      return -1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
    freeaddrinfo(res);
    return fd;
  }

  void Loop() {
    while (!quit) {
      std::vector<pollfd> fds;
      std::vector<std::pair<int, int>> snapshot;
      {
        const std::lock_guard lock(mu);
        if (listen_fd >= 0) fds.push_back({listen_fd, POLLIN, 0});
        snapshot = pairs;
      }
      for (auto& [a, b] : snapshot) {
        fds.push_back({a, POLLIN, 0});
        fds.push_back({b, POLLIN, 0});
      }
      poll(fds.data(), fds.size(), 50);
      const std::lock_guard lock(mu);
      for (const auto& p : fds) {
        if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
        if (p.fd == listen_fd) {
          const int c = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
          if (c < 0) continue;
          const int u = Connect();
          if (u < 0) {
            close(c);
            continue;
          }
          pairs.emplace_back(c, u);
          continue;
        }
        for (auto it = pairs.begin(); it != pairs.end(); ++it) {
          if (p.fd != it->first && p.fd != it->second) continue;
          const int to = p.fd == it->first ? it->second : it->first;
          char buf[65536];
          const ssize_t n = read(p.fd, buf, sizeof buf);
          bool ok = n > 0;
          for (ssize_t off = 0; ok && off < n;) {
            const ssize_t w = write(to, buf + off, static_cast<size_t>(n - off));
            if (w <= 0) ok = false;
            off += w;
          }
          if (!ok) {
            close(it->first);
            close(it->second);
            pairs.erase(it);
          }
          break;
        }
      }
    }
  }

  void Open(int want_port) {
    const std::lock_guard lock(mu);
    listen_fd = Listen(want_port);
    port = BoundPort(listen_fd);
  }
  void Cut() {
    const std::lock_guard lock(mu);
    if (listen_fd >= 0) close(listen_fd);
    listen_fd = -1;
    for (auto& [a, b] : pairs) {
      close(a);
      close(b);
    }
    pairs.clear();
  }
};

MongoServer::MongoServer() {
  signal(SIGPIPE, SIG_IGN);
  if (const char* uri = std::getenv("MONGODB_URI"); uri != nullptr && *uri != '\0') {
    external_uri_ = uri;
    proxy_ = std::make_unique<Proxy>();
    std::tie(proxy_->target_host, proxy_->target_port) = HostPort(external_uri_);
    proxy_->Open(0);
    port_ = proxy_->port;
    proxy_->thread = std::thread([p = proxy_.get()] { p->Loop(); });
    return;
  }
  StartJongodb(0);
}

MongoServer::~MongoServer() {
  if (proxy_) {
    proxy_->quit = true;
    proxy_->thread.join();
    proxy_->Cut();
  }
  StopJongodb();
}

std::string MongoServer::uri() const {
  return "mongodb://127.0.0.1:" + std::to_string(port_) + "/";
}

std::string MongoServer::NewDatabase(const std::string& hint) {
  static std::atomic<int> counter{0};
  std::string clean;
  for (char c : hint) clean.push_back(std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
  return "parley_t" + std::to_string(getpid()) + "_" + std::to_string(++counter) + "_" +
         clean.substr(0, 24);
}

void MongoServer::DropDatabase(const std::string& db) {
  if (!external() || !running_) return;
  mongoc_init();
  mongoc_client_t* client = mongoc_client_new(uri().c_str());
  mongoc_database_t* d = mongoc_client_get_database(client, db.c_str());
  bson_error_t e;
  mongoc_database_drop(d, &e);
  mongoc_database_destroy(d);
  mongoc_client_destroy(client);
}

void MongoServer::Stop() {
  if (!running_) return;
  running_ = false;
  if (proxy_) {
    proxy_->Cut();
  } else {
    StopJongodb();
  }
}

void MongoServer::Start() {
  if (running_) return;
  running_ = true;
  if (proxy_) {
    proxy_->Open(port_);
  } else {
    StartJongodb(port_);
  }
}

void MongoServer::StartJongodb(int port) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
    dup2(out[1], STDOUT_FILENO);
    const std::string arg = "--port=" + std::to_string(port);
    execl(PARLEY_JONGODB_BIN, PARLEY_JONGODB_BIN, arg.c_str(), nullptr);
    _exit(127);
  }
  close(out[1]);
  child_ = pid;
  // Wait for "JONGODB_URI=mongodb://127.0.0.1:<port>/test".
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (text.find('\n') == std::string::npos) {
    if (std::chrono::steady_clock::now() > deadline) break;
    pollfd p{out[0], POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      char buf[256];
      const ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
  }
  close(out[0]);
  const auto at = text.find("JONGODB_URI=");
  if (at == std::string::npos)
    throw std::runtime_error("jongodb did not start (" PARLEY_JONGODB_BIN "): " + text);
  const std::string uri = text.substr(at + 12, text.find('\n', at) - at - 12);
  port_ = HostPort(uri).second;
}

void MongoServer::StopJongodb() {
  if (child_ <= 0) return;
  kill(child_, SIGKILL);
  waitpid(child_, nullptr, 0);
  child_ = -1;
}

}  // namespace parley::testing
