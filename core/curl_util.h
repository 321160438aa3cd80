// For modules that call HTTP services through libcurl (speech's remote engines, dialogue's LLM
// client): RAII for the handles, a bounded response body, the one-time global set-up. Header
// only; its users link libcurl themselves (core does not).
#pragma once

#include <curl/curl.h>

#include <memory>
#include <mutex>
#include <string>

namespace parley::core::http {

struct EasyDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct MimeDeleter {
  void operator()(curl_mime* m) const { curl_mime_free(m); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using Easy = std::unique_ptr<CURL, EasyDeleter>;
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

// A response body that refuses to grow past `limit` bytes (the transfer then fails).
struct BoundedBody {
  std::string bytes;
  size_t limit = 8U << 20;
  static size_t Write(char* data, size_t size, size_t n, void* user) {
    auto* body = static_cast<BoundedBody*>(user);
    if (body->bytes.size() + size * n > body->limit) return 0;
    body->bytes.append(data, size * n);
    return size * n;
  }
};

// libcurl's global set-up is not thread-safe in every build: once, before any request.
inline void InitCurl() {
  static std::once_flag ready;
  std::call_once(ready, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// "Authorization: Bearer <key>" and any extra headers; null when there are none.
inline Slist Headers(const std::string& api_key, std::initializer_list<const char*> extra = {}) {
  curl_slist* list = nullptr;
  if (!api_key.empty())
    list = curl_slist_append(list, ("Authorization: Bearer " + api_key).c_str());
  for (const char* h : extra) list = curl_slist_append(list, h);
  return Slist(list);
}

}  // namespace parley::core::http
