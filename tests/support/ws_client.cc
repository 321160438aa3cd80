#include "tests/support/ws_client.h"

#include <curl/curl.h>
#include <libwebsockets.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "core/core.h"

namespace parley::testing {

struct WsHubImpl {
  lws_context* context = nullptr;
  lws_protocols protocols[2]{};
  std::thread thread;
  std::atomic<bool> stop{false};
  std::mutex mu;  // guards pending + context for cancel
  std::vector<std::shared_ptr<WsClient>> pending_connect;
  std::vector<WsClient*> pending_write;  // only dereferenced while listed in `active`
  // Hub thread only: keeps clients alive while lws knows their wsi.
  std::vector<std::shared_ptr<WsClient>> active;

  void Wake() {
    const std::lock_guard lock(mu);
    if (context != nullptr) lws_cancel_service(context);
  }

  static void Finish(WsClient* c, WsClient::State st, std::string failure = {}) {
    {
      const std::lock_guard lock(c->mu_);
      if (c->state_ == WsClient::State::kConnecting || c->state_ == WsClient::State::kOpen)
        c->state_ = st;
      if (!failure.empty()) c->failure_ = std::move(failure);
      if (st == WsClient::State::kClosed && !c->close_code_) c->close_code_ = 1006;
    }
    c->cv_.notify_all();
  }

  void Drop(WsClient* c) {
    c->wsi_ = nullptr;
    std::erase_if(active, [c](const auto& p) { return p.get() == c; });
  }

  static int Callback(lws* wsi, lws_callback_reasons reason, void* user, void* in, size_t len) {
    auto* c = static_cast<WsClient*>(user);
    WsHubImpl* self =
        wsi ? static_cast<WsHubImpl*>(lws_context_user(lws_get_context(wsi))) : nullptr;
    switch (reason) {
      case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        if (c == nullptr) return 0;
        auto** p = static_cast<unsigned char**>(in);
        unsigned char* end = *p + len;
        for (const auto& [k, v] : c->headers_) {
          const std::string name = k + ":";
          if (lws_add_http_header_by_name(wsi, reinterpret_cast<const unsigned char*>(name.c_str()),
                                          reinterpret_cast<const unsigned char*>(v.c_str()),
                                          static_cast<int>(v.size()), p, end))
            return -1;
        }
        return 0;
      }
      case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (c != nullptr) {
          Finish(c, WsClient::State::kOpen);
          bool queued = false;
          {
            const std::lock_guard lock(c->mu_);  // SendText may be adding on the test's thread
            queued = !c->outbox_.empty() || c->closing_;
          }
          if (queued) lws_callback_on_writable(wsi);
        }
        return 0;
      case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (c != nullptr) {
          Finish(c, WsClient::State::kFailed,
                 in != nullptr ? std::string(static_cast<const char*>(in),
                                             strnlen(static_cast<const char*>(in), len ? len : 256))
                               : "connection error");
          if (self) self->Drop(c);
        }
        return 0;
      case LWS_CALLBACK_CLIENT_RECEIVE: {
        if (c == nullptr) return 0;
        if (lws_is_first_fragment(wsi)) {
          c->rx_.clear();
          c->rx_binary_ = lws_frame_is_binary(wsi) != 0;
        }
        c->rx_.append(static_cast<const char*>(in), len);
        if (!lws_is_final_fragment(wsi)) return 0;
        WsMessage m{c->rx_binary_, std::move(c->rx_), std::chrono::steady_clock::now()};
        c->rx_.clear();
        std::function<void(const WsMessage&)> cb;
        {
          const std::lock_guard lock(c->mu_);
          cb = c->on_message_;
          if (!cb) c->inbox_.push_back(std::move(m));
        }
        if (cb) {
          cb(m);
        } else {
          c->cv_.notify_all();
        }
        return 0;
      }
      case LWS_CALLBACK_CLIENT_WRITEABLE: {
        if (c == nullptr) return 0;
        std::optional<std::pair<bool, std::string>> next;
        std::optional<uint16_t> closing;
        bool dropping = false;
        {
          const std::lock_guard lock(c->mu_);
          dropping = c->dropping_;
          if (!dropping && !c->outbox_.empty()) {
            next = std::move(c->outbox_.front());
            c->outbox_.pop_front();
          } else if (!dropping) {
            closing = c->closing_;
          }
        }
        if (dropping) {  // like a phone leaving coverage: the socket goes, no close frame
          shutdown(lws_get_socket_fd(wsi), SHUT_RDWR);
          return -1;
        }
        if (next) {
          std::vector<unsigned char> buf(LWS_PRE + next->second.size());
          std::memcpy(buf.data() + LWS_PRE, next->second.data(), next->second.size());
          const int n = lws_write(wsi, buf.data() + LWS_PRE, next->second.size(),
                                  next->first ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
          if (n < static_cast<int>(next->second.size())) return -1;
          lws_callback_on_writable(wsi);  // maybe more queued
          return 0;
        }
        if (closing) {
          lws_close_reason(wsi, static_cast<lws_close_status>(*closing), nullptr, 0);
          return -1;
        }
        return 0;
      }
      case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (c != nullptr) {
          const auto* b = static_cast<const unsigned char*>(in);
          const std::lock_guard lock(c->mu_);
          c->close_code_ = len >= 2 ? static_cast<uint16_t>((b[0] << 8) | b[1]) : uint16_t{1005};
          if (len > 2) c->close_reason_.assign(reinterpret_cast<const char*>(b + 2), len - 2);
        }
        return 0;
      case LWS_CALLBACK_CLIENT_CLOSED:
        if (c != nullptr) {
          Finish(c, WsClient::State::kClosed);
          if (self) self->Drop(c);
        }
        return 0;
      case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (self) self->Service();
        return 0;
      default:
        return 0;
    }
  }

  void Service() {
    std::vector<std::shared_ptr<WsClient>> connects;
    std::vector<WsClient*> writes;
    {
      const std::lock_guard lock(mu);
      connects.swap(pending_connect);
      writes.swap(pending_write);
    }
    for (auto& c : connects) {
      lws_client_connect_info info{};
      info.context = context;
      info.address = "127.0.0.1";
      info.port = c->port_;
      info.path = c->path_.c_str();
      info.host = "127.0.0.1";
      info.protocol = nullptr;
      info.local_protocol_name = "parley-test";
      info.userdata = c.get();
      info.pwsi = reinterpret_cast<lws**>(&c->wsi_);
      active.push_back(c);
      if (lws_client_connect_via_info(&info) == nullptr) {
        // CONNECTION_ERROR may already have fired and dropped it.
        Finish(c.get(), WsClient::State::kFailed, "lws_client_connect_via_info failed");
        Drop(c.get());
      }
    }
    for (WsClient* c : writes) {
      const bool alive =
          std::any_of(active.begin(), active.end(), [c](const auto& p) { return p.get() == c; });
      if (!alive || c->wsi_ == nullptr) continue;
      std::optional<bool> flow;
      {
        const std::lock_guard lock(c->mu_);
        flow.swap(c->flow_change_);
      }
      if (flow) lws_rx_flow_control(static_cast<lws*>(c->wsi_), *flow ? 0 : 1);
      lws_callback_on_writable(static_cast<lws*>(c->wsi_));
    }
  }
};

WsHub::WsHub() : impl_(std::make_unique<WsHubImpl>()) {
  lws_set_log_level(LLL_ERR, nullptr);
  impl_->protocols[0] = {"parley-test", &WsHubImpl::Callback, 0, 64 * 1024, 0, nullptr, 0};
  lws_context_creation_info info{};
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.protocols = impl_->protocols;
  info.user = impl_.get();
  info.fd_limit_per_thread = 4096;
  impl_->context = lws_create_context(&info);
  impl_->thread = std::thread([this] {
    while (!impl_->stop.load()) lws_service(impl_->context, 0);
  });
}

WsHub::~WsHub() {
  impl_->stop = true;
  impl_->Wake();
  impl_->thread.join();
  {
    const std::lock_guard lock(impl_->mu);
    lws_context_destroy(impl_->context);
    impl_->context = nullptr;
  }
  impl_->active.clear();
}

std::shared_ptr<WsClient> WsHub::Connect(int port, const std::string& path, Headers headers) {
  auto c = std::make_shared<WsClient>();
  c->port_ = port;
  c->path_ = path;
  c->headers_ = std::move(headers);
  c->hub_ = this;
  {
    const std::lock_guard lock(impl_->mu);
    impl_->pending_connect.push_back(c);
  }
  impl_->Wake();
  return c;
}

// ---- WsClient ---------------------------------------------------------------------------------

bool WsClient::WaitOpen(milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [this] { return state_ != State::kConnecting; });
  return state_ == State::kOpen;
}

WsClient::State WsClient::state() const {
  const std::lock_guard lock(mu_);
  return state_;
}

std::string WsClient::failure() const {
  const std::lock_guard lock(mu_);
  return failure_;
}

std::string WsClient::close_reason() const {
  const std::lock_guard lock(mu_);
  return close_reason_;
}

void WsClient::SetOnMessage(std::function<void(const WsMessage&)> cb) {
  const std::lock_guard lock(mu_);
  on_message_ = std::move(cb);
}

// Runs `change` under the client's lock, then asks the hub thread to act on it.
void WsClient::Request(const std::function<void()>& change) {
  {
    const std::lock_guard lock(mu_);
    change();
  }
  {
    const std::lock_guard lock(hub_->impl_->mu);
    hub_->impl_->pending_write.push_back(this);
  }
  hub_->impl_->Wake();
}

void WsClient::SendText(std::string text) {
  Request([&] { outbox_.emplace_back(false, std::move(text)); });
}

void WsClient::SendBinary(std::string bytes) {
  Request([&] { outbox_.emplace_back(true, std::move(bytes)); });
}

void WsClient::PauseReading(bool paused) {
  Request([&] { flow_change_ = paused; });
}

void WsClient::Close(uint16_t code) {
  Request([&] { closing_ = code; });
}

void WsClient::Drop() {
  Request([&] { dropping_ = true; });
}

std::optional<WsMessage> WsClient::Receive(milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [this] {
    return !inbox_.empty() || state_ == State::kClosed || state_ == State::kFailed;
  });
  if (inbox_.empty()) return std::nullopt;
  WsMessage m = std::move(inbox_.front());
  inbox_.pop_front();
  return m;
}

std::optional<Json::Value> WsClient::ReceiveJson(
    milliseconds timeout, const std::function<bool(const Json::Value&)>& skip) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto m = Receive(left);
    if (!m) return std::nullopt;
    if (m->binary) continue;
    auto v = core::ParseJson(m->data);
    if (!v) continue;
    if (skip && skip(*v)) continue;
    return v;
  }
}

std::optional<Json::Value> WsClient::ReceiveType(const std::string& type, milliseconds timeout) {
  return ReceiveJson(timeout, [&](const Json::Value& v) { return v["type"].asString() != type; });
}

std::optional<uint16_t> WsClient::WaitClosed(milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout,
               [this] { return state_ == State::kClosed || state_ == State::kFailed; });
  if (state_ != State::kClosed && state_ != State::kFailed) return std::nullopt;
  return close_code_.value_or(1006);
}

// ---- HTTP -------------------------------------------------------------------------------------

std::string HttpResult::Header(const std::string& name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return {};
}

Json::Value HttpResult::JsonBody() const {
  auto v = core::ParseJson(body);
  return v ? *v : Json::Value();
}

namespace {
size_t WriteBody(char* ptr, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(ptr, size * n);
  return size * n;
}
size_t WriteHeader(char* ptr, size_t size, size_t n, void* user) {
  auto* r = static_cast<HttpResult*>(user);
  std::string line(ptr, size * n);
  const auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    r->headers.emplace_back(name, value);
  }
  return size * n;
}
}  // namespace

HttpResult Http(const std::string& method, const std::string& url, const std::string& body,
                const Headers& headers, std::chrono::milliseconds timeout) {
  HttpResult r;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return r;
  curl_slist* list = nullptr;
  for (const auto& [k, v] : headers) list = curl_slist_append(list, (k + ": " + v).c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "HEAD") curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  if (!body.empty() || method == "POST") {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &WriteBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &WriteHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L);  // send ../ unnormalised (traversal tests)
  if (curl_easy_perform(curl) == CURLE_OK)
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return r;
}

}  // namespace parley::testing
