// Static files from the web root. Reads happen on a worker thread (see Server).
#include <sys/stat.h>

#include <array>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "signaling/signaling.h"

namespace parley::signaling {
namespace {

constexpr size_t kMaxStaticFileBytes = 64 << 20;

std::string Canonical(const std::string& path) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) == nullptr) return {};
  return buf;
}

bool IsRegularFile(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
bool IsDirectory(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

std::string_view MimeTypeFor(std::string_view filename) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 22> kTypes{{
      {".html", "text/html; charset=utf-8"},
      {".htm", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".map", "application/json"},
      {".txt", "text/plain; charset=utf-8"},
      {".csv", "text/csv; charset=utf-8"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},
      {".gif", "image/gif"},
      {".ico", "image/x-icon"},
      {".webp", "image/webp"},
      {".wasm", "application/wasm"},
      {".woff2", "font/woff2"},
      {".webm", "video/webm"},
      {".wav", "audio/wav"},
      {".data", "application/octet-stream"},
      {".binarypb", "application/octet-stream"},
  }};
  const size_t dot = filename.rfind('.');
  const size_t slash = filename.rfind('/');
  if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash))
    return "application/octet-stream";
  std::string ext(filename.substr(dot));
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& [e, type] : kTypes) {
    if (e == ext) return type;
  }
  return "application/octet-stream";
}

StaticFiles::StaticFiles(std::string root) : root_(Canonical(root)) {}

std::optional<std::string> StaticFiles::Resolve(std::string_view path) const {
  if (root_.empty() || path.empty() || path.front() != '/') return std::nullopt;
  // The path is already percent-decoded: refuse anything that could step outside or confuse
  // a file system (dot segments, backslashes, NUL), before touching the disk.
  if (path.find('\0') != std::string_view::npos || path.find('\\') != std::string_view::npos)
    return std::nullopt;
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view seg = path.substr(start, end - start);
    if (seg == ".." || seg == "." || (!seg.empty() && seg.front() == '.' && seg != ".well-known"))
      return std::nullopt;  // also hides dotfiles such as .git
    start = end + 1;
  }
  std::string candidate = root_ + std::string(path);
  if (IsDirectory(candidate)) {
    if (candidate.back() != '/') candidate.push_back('/');
    candidate += "index.html";  // never a listing
  }
  // A symlink may still point outside: compare canonical paths.
  const std::string real = Canonical(candidate);
  if (real.empty() || real.compare(0, root_.size(), root_) != 0 ||
      (real.size() > root_.size() && real[root_.size()] != '/'))
    return std::nullopt;
  if (!IsRegularFile(real)) return std::nullopt;
  return real;
}

HttpResponse StaticFiles::Serve(std::string_view path, bool head_only) const {
  const auto file = Resolve(path);
  if (!file) return HttpResponse::Error(404, "not_found", "no such file");
  std::ifstream in(*file, std::ios::binary);
  if (!in) return HttpResponse::Error(404, "not_found", "no such file");
  in.seekg(0, std::ios::end);
  const auto size = static_cast<size_t>(in.tellg());
  if (size > kMaxStaticFileBytes)
    return HttpResponse::Error(500, "file_too_large", "static file exceeds the served size limit");
  HttpResponse r;
  r.status = 200;
  r.content_type = std::string(MimeTypeFor(*file));
  r.headers.emplace_back("cache-control", "no-cache");
  if (!head_only) {
    r.body.resize(size);
    in.seekg(0);
    in.read(r.body.data(), static_cast<std::streamsize>(size));
  }
  return r;
}

}  // namespace parley::signaling
