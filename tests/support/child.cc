#include "tests/support/child.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

#include "core/core.h"

namespace parley::testing {

Child::Child(std::vector<std::string> args, std::vector<std::string> env) {
  int out[2];
  if (pipe(out) != 0) throw std::runtime_error("pipe");
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(out[1], STDOUT_FILENO);
    dup2(out[1], STDERR_FILENO);
    close(out[0]);
    close(out[1]);
    for (auto& e : env) putenv(e.data());
    std::vector<char*> argv{const_cast<char*>(PARLEY_BINARY)};
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(PARLEY_BINARY, argv.data());
    _exit(127);
  }
  close(out[1]);
  fd_ = out[0];
  fcntl(fd_, F_SETFL, O_NONBLOCK);
}

Child::~Child() {
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  close(fd_);
}

bool Child::WaitFor(const std::string& needle, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (output_.find(needle) == std::string::npos) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    Pump(50);
  }
  return true;
}

std::optional<int> Child::Wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    Pump(20);
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      Pump(0);
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
  }
  return std::nullopt;
}

void Child::Signal(int sig) { kill(pid_, sig); }

int Child::Port() {
  if (!WaitFor("parley listening")) return 0;
  const auto at = output_.find("parley listening");
  WaitFor("\n", std::chrono::milliseconds(2000));
  const auto line_start = output_.rfind('\n', at);
  const size_t begin = line_start == std::string::npos ? 0 : line_start + 1;
  const auto line_end = output_.find('\n', at);
  const auto v = core::ParseJson(output_.substr(begin, line_end - begin));
  return v ? (*v)["port"].asInt() : 0;
}

void Child::Pump(int wait_ms) {
  pollfd p{fd_, POLLIN, 0};
  poll(&p, 1, wait_ms);
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd_, buf, sizeof buf);
    if (n <= 0) break;
    output_.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace parley::testing
