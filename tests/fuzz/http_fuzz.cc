// What an HTTP client sends first: the request head the front door judges before lws sees it,
// and the decoded path the static file server maps into the web root. The head gets a verdict
// with one of the documented statuses; a path never resolves outside the web root (a temporary
// root holding files, a directory and symlinks pointing out of it).
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "signaling/front_door.h"
#include "signaling/signaling.h"
#include "tests/fuzz/fuzz.h"

using namespace parley;
namespace fs = std::filesystem;

namespace {

struct WebRoot {
  WebRoot() {
    base = fs::temp_directory_path() / ("parley-fuzz-web-" + std::to_string(getpid()));
    fs::create_directories(base / "root" / "dir");
    fs::create_directories(base / "outside");
    std::ofstream(base / "root" / "index.html") << "index";
    std::ofstream(base / "root" / "app.js") << "app";
    std::ofstream(base / "root" / "dir" / "index.html") << "dir";
    std::ofstream(base / "root" / ".secret") << "hidden";
    std::ofstream(base / "outside" / "secret.txt") << "outside";
    std::error_code ec;
    fs::create_symlink(base / "outside", base / "root" / "out", ec);
    fs::create_symlink(base / "outside" / "secret.txt", base / "root" / "s.txt", ec);
    root = fs::canonical(base / "root").string();
  }
  ~WebRoot() {
    std::error_code ec;
    fs::remove_all(base, ec);
  }
  fs::path base;
  std::string root;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const WebRoot web;
  static const signaling::StaticFiles files(web.root);
  fuzz::FuzzInput in(data, size);
  const uint8_t mode = in.Byte();
  const std::string_view bytes = in.Rest();
  if (mode & 1) {
    const auto resolved = files.Resolve(bytes);
    if (resolved) {
      PARLEY_FUZZ_CHECK(resolved->compare(0, web.root.size() + 1, web.root + "/") == 0);
      PARLEY_FUZZ_CHECK(resolved->find("/.secret") == std::string::npos);
    }
    return 0;
  }
  // As the front door calls it: the head up to its blank line once one has arrived.
  signaling::FrontDoorLimits limits;
  const size_t end = bytes.find("\r\n\r\n");
  const bool complete = end != std::string_view::npos;
  const std::string_view head = complete ? bytes.substr(0, end + 4) : bytes;
  const signaling::HeadVerdict verdict = signaling::JudgeRequestHead(head, complete, limits);
  PARLEY_FUZZ_CHECK(verdict.status == 0 || verdict.status == 400 || verdict.status == 414 ||
                    verdict.status == 431);
  PARLEY_FUZZ_CHECK((verdict.status == 0) == verdict.code.empty());
  if (verdict.status == 0 && complete) {
    PARLEY_FUZZ_CHECK(head.find('\0') == std::string_view::npos);
    PARLEY_FUZZ_CHECK(head.size() <= limits.max_head_bytes);
  }
  return 0;
}
