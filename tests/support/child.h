// A child `parley` process whose stdout+stderr (the JSON-lines log) are captured.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace parley::testing {

class Child {
 public:
  // Runs the parley binary with `args`; `env` entries ("NAME=value") are added.
  explicit Child(std::vector<std::string> args, std::vector<std::string> env = {});
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Reads output until `needle` appears or the timeout passes.
  bool WaitFor(const std::string& needle,
               std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));
  // Exit code (128+signal when killed), or nullopt if still running after `timeout`.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  void Signal(int sig);
  const std::string& output() const { return output_; }
  // The port from the "parley listening" log line (0 when it never came).
  int Port();

 private:
  void Pump(int wait_ms);
  pid_t pid_ = -1;
  int fd_ = -1;
  bool exited_ = false;
  std::string output_;
};

}  // namespace parley::testing
