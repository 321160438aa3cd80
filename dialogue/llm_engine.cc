// Any OpenAI-compatible POST /v1/chat/completions with "stream": true (OpenAI, llama.cpp's
// server, Ollama, vLLM...): libcurl for HTTP, SseParser for the event stream, jsoncpp for the
// chunks. A request that fails before its first token is retried (429, 5xx, network); one that
// fails after it is a failure (its text so far was already streamed).
#include <curl/curl.h>
#include <json/json.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "core/core.h"
#include "core/curl_util.h"
#include "dialogue/dialogue.h"

namespace parley::dialogue {
namespace {

namespace http = core::http;
using Clock = std::chrono::steady_clock;

// One streamed request's state, shared with libcurl's callbacks.
struct Stream {
  const DeltaSink* on_delta = nullptr;
  ChatStreamReader reader;
  std::string text;   // the reply so far
  std::string error;  // set by an error object or a bad chunk
  std::string raw;    // a non-SSE body (an HTTP error's JSON), bounded
  bool first_token = false;
  bool done = false;       // [DONE] seen
  bool cancelled = false;  // the sink said stop
  Clock::time_point sent;
  int first_token_timeout_ms = 0;
  int total_timeout_ms = 0;
  long status = 0;
};

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* s = static_cast<Stream*>(user);
  const size_t bytes = size * n;
  if (s->status != 200) {  // an error body: keep some of it for the message
    if (s->raw.size() < 4096) s->raw.append(data, std::min(bytes, 4096 - s->raw.size()));
    return bytes;
  }
  std::vector<std::string> deltas;
  const bool ok = s->reader.Feed(std::string_view(data, bytes), &deltas, &s->error);
  for (const auto& delta : deltas) {
    s->first_token = true;
    s->text += delta;
    if (*s->on_delta && !(*s->on_delta)(delta)) {
      s->cancelled = true;
      return 0;
    }
  }
  s->done = s->reader.done();
  if (!ok) return 0;
  return bytes;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* s = static_cast<Stream*>(user);
  const std::string_view line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {  // a status line (also after a redirect or 100)
    const auto sp = line.find(' ');
    if (sp != std::string_view::npos) s->status = std::strtol(line.data() + sp + 1, nullptr, 10);
  }
  return size * n;
}

// libcurl's progress callback, used as a timer: the first token must come in time.
int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* s = static_cast<Stream*>(user);
  const auto elapsed =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - s->sent).count();
  if (!s->first_token && elapsed > s->first_token_timeout_ms) {
    s->error = "no first token from the dialogue service within " +
               std::to_string(s->first_token_timeout_ms) + " ms";
    return 1;
  }
  return 0;
}

const char* RoleName(Message::Role r) {
  switch (r) {
    case Message::Role::kSystem:
      return "system";
    case Message::Role::kUser:
      return "user";
    case Message::Role::kAssistant:
      return "assistant";
  }
  return "user";
}

}  // namespace

bool ChatStreamReader::Feed(std::string_view bytes, std::vector<std::string>* deltas,
                            std::string* error) {
  std::vector<std::string> events;
  sse_.Feed(bytes, &events);
  for (const auto& e : events) {
    if (e == "[DONE]") {
      done_ = true;
      continue;
    }
    const auto v = core::ParseJson(e);  // bounded depth, never throws
    if (!v || !v->isObject()) {
      *error = "the dialogue service sent a chunk that is not JSON";
      return false;
    }
    if (v->isMember("error")) {
      const Json::Value& err = (*v)["error"];
      *error = "the dialogue service reported an error: " +
               (err.isObject() && err["message"].isString() ? err["message"].asString()
                                                            : Json::FastWriter().write(err));
      return false;
    }
    // A service may send anything: reading a member of a non-object would throw.
    const Json::Value& choices = (*v)["choices"];
    if (!choices.isArray()) continue;
    for (const auto& choice : choices) {
      if (!choice.isObject() || !choice["delta"].isObject()) continue;
      const Json::Value& content = choice["delta"]["content"];
      if (content.isString() && !content.asString().empty()) deltas->push_back(content.asString());
    }
  }
  if (sse_.buffered() > (1U << 20)) {
    *error = "the dialogue service sent an event over 1 MiB";
    return false;
  }
  return true;
}

std::string LlmConfig::Validate() const {
  if (base_url.empty()) return {};
  if (base_url.rfind("http://", 0) != 0 && base_url.rfind("https://", 0) != 0)
    return "the dialogue service URL must start with http:// or https://";
  if (model.empty()) return "the dialogue model must be named";
  if (connect_timeout_ms < 100 || first_token_timeout_ms < 200 || total_timeout_ms < 1000 ||
      total_timeout_ms > 600'000)
    return "dialogue timeouts are out of range (connect >= 100 ms, first token >= 200 ms, "
           "total 1..600 s)";
  if (retries < 0 || retries > 5 || retry_backoff_ms < 0 || retry_backoff_ms > 10'000)
    return "dialogue retries must be 0..5 with a backoff of 0..10000 ms";
  if (max_tokens < 16 || max_tokens > 4096) return "dialogue max tokens must be 16..4096";
  if (temperature < 0 || temperature > 2) return "dialogue temperature must be 0..2";
  return {};
}

LlmEngine::LlmEngine(LlmConfig config) : config_(std::move(config)) {
  url_ = config_.base_url;
  while (!url_.empty() && url_.back() == '/') url_.pop_back();
  url_ += "/chat/completions";
}

std::unique_ptr<LlmEngine> LlmEngine::Create(const LlmConfig& config, std::string* error) {
  if (std::string why = config.Validate(); !why.empty()) {
    *error = why;
    return nullptr;
  }
  if (config.base_url.empty()) {
    *error = "no dialogue service is configured";
    return nullptr;
  }
  http::InitCurl();
  return std::unique_ptr<LlmEngine>(new LlmEngine(config));
}

std::vector<Message> LlmEngine::Messages(const ReplyRequest& r) {
  std::vector<Message> m;
  m.push_back({Message::Role::kSystem,
               r.persona != nullptr ? BuildSystemPrompt(*r.persona, r.intimacy) : ""});
  m.insert(m.end(), r.history.begin(), r.history.end());
  switch (r.kind) {
    case ReplyRequest::Kind::kAnswer:
      m.push_back({Message::Role::kUser, r.user_text});
      break;
    case ReplyRequest::Kind::kGreeting:
      m.push_back({Message::Role::kSystem,
                   "The person has just joined. Greet them in character"
                   " (your usual greeting: \"" +
                       (r.persona != nullptr ? r.persona->greeting : std::string()) + "\")."});
      break;
    case ReplyRequest::Kind::kSpeakUp:
      m.push_back({Message::Role::kSystem,
                   "The person has been quiet for a while. Gently pick the conversation up "
                   "again with one short question."});
      break;
  }
  return m;
}

std::optional<std::string> LlmEngine::Reply(const ReplyRequest& request, const DeltaSink& on_delta,
                                            std::string* error) {
  return StreamChat(Messages(request), config_.max_tokens, config_.temperature, on_delta, error);
}

std::optional<std::string> LlmEngine::Complete(const std::vector<Message>& messages, int max_tokens,
                                               double temperature, std::string* error) {
  const DeltaSink ignore = [](std::string_view) { return true; };
  return StreamChat(messages, max_tokens, temperature, ignore, error);
}

std::optional<std::string> LlmEngine::StreamChat(const std::vector<Message>& messages,
                                                 int max_tokens, double temperature,
                                                 const DeltaSink& on_delta, std::string* error) {
  Json::Value body(Json::objectValue);
  body["model"] = config_.model;
  body["stream"] = true;
  body["max_tokens"] = max_tokens;
  body["temperature"] = temperature;
  body["messages"] = Json::Value(Json::arrayValue);
  for (const auto& m : messages) {
    Json::Value j(Json::objectValue);
    j["role"] = RoleName(m.role);
    j["content"] = m.text;
    body["messages"].append(j);
  }
  Json::StreamWriterBuilder w;
  w["indentation"] = "";
  const std::string json = Json::writeString(w, body);

  for (int attempt = 0;; ++attempt) {
    Stream s;
    s.on_delta = &on_delta;
    s.sent = Clock::now();
    s.first_token_timeout_ms = config_.first_token_timeout_ms;
    http::Easy curl(curl_easy_init());
    if (!curl) {
      *error = "libcurl could not start a request";
      return std::nullopt;
    }
    CURL* c = curl.get();
    const http::Slist headers = http::Headers(
        config_.api_key, {"Content-Type: application/json", "Accept: text/event-stream"});
    curl_easy_setopt(c, CURLOPT_URL, url_.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, json.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(json.size()));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config_.connect_timeout_ms));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(config_.total_timeout_ms));
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &OnBody);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &OnHeader);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &s);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, &OnProgress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "parley");
    const CURLcode rc = curl_easy_perform(c);
    if (s.cancelled) {
      *error = "cancelled";
      return std::nullopt;
    }
    bool retryable = false;
    if (!s.error.empty()) {
      *error = s.error;
      retryable = !s.first_token && s.error.rfind("no first token", 0) != 0;
    } else if (rc != CURLE_OK) {
      *error = std::string("the dialogue service could not be reached: ") + curl_easy_strerror(rc);
      retryable = !s.first_token;
    } else if (s.status != 200) {
      *error = "the dialogue service answered HTTP " + std::to_string(s.status) + ": " +
               s.raw.substr(0, 200);
      retryable = s.status == 429 || s.status >= 500;
    } else if (!s.done && s.text.empty()) {
      *error = "the dialogue service ended the stream without a reply";
      retryable = true;
    } else if (s.text.find_first_not_of(" \t\r\n") == std::string::npos) {
      // [DONE] after chunks that held no text (or none it could read): a persona that says
      // nothing is no reply; the caller falls back.
      *error = "the dialogue service's answer had no text";
      retryable = true;
    } else {
      // A stream cut after some text, without [DONE]: keep what came only when it is whole.
      if (!s.done) {
        *error = "the dialogue service cut the stream short";
        return std::nullopt;
      }
      return s.text;
    }
    if (!retryable || attempt >= config_.retries) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(config_.retry_backoff_ms << attempt));
  }
}

}  // namespace parley::dialogue
