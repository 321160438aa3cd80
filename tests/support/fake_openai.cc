#include "tests/support/fake_openai.h"

#include <httplib.h>
#include <json/json.h>

#include <sstream>
#include <thread>

namespace parley::testing {

struct FakeOpenAi::Impl {
  ChatAnswer chat;
  SpeechAnswer speech;
  httplib::Server server;
  int port = 0;
  std::thread thread;
  mutable std::mutex mu;
  std::vector<Json::Value> chats, speeches;
  std::vector<std::string> auths;
};

namespace {

Json::Value ParseBody(const std::string& body) {
  Json::Value v;
  Json::CharReaderBuilder b;
  std::string err;
  std::istringstream in(body);
  Json::parseFromStream(b, in, &v, &err);
  return v;
}

std::string Compact(const Json::Value& v) {
  Json::StreamWriterBuilder w;
  w["indentation"] = "";
  return Json::writeString(w, v);
}

}  // namespace

FakeOpenAi::FakeOpenAi(ChatAnswer chat, SpeechAnswer speech) : impl_(std::make_unique<Impl>()) {
  impl_->chat = std::move(chat);
  impl_->speech = std::move(speech);
  Impl* im = impl_.get();
  im->server.Post(
      "/v1/chat/completions", [im](const httplib::Request& req, httplib::Response& res) {
        const Json::Value body = ParseBody(req.body);
        int index = 0;
        {
          const std::lock_guard lock(im->mu);
          index = static_cast<int>(im->chats.size());
          im->chats.push_back(body);
          im->auths.push_back(req.get_header_value("Authorization"));
        }
        auto script = std::make_shared<Chat>(im->chat(index, body));
        res.status = script->status;
        res.set_chunked_content_provider(
            script->content_type, [script](size_t, httplib::DataSink& sink) {
              std::this_thread::sleep_for(std::chrono::milliseconds(script->first_delay_ms));
              for (size_t i = 0; i < script->pieces.size(); ++i) {
                if (i > 0)
                  std::this_thread::sleep_for(std::chrono::milliseconds(script->piece_delay_ms));
                const std::string& p = script->pieces[i];
                if (!sink.write(p.data(), p.size())) return false;
              }
              sink.done();
              return true;
            });
      });
  im->server.Post("/v1/audio/speech", [im](const httplib::Request& req, httplib::Response& res) {
    const Json::Value body = ParseBody(req.body);
    int index = 0;
    {
      const std::lock_guard lock(im->mu);
      index = static_cast<int>(im->speeches.size());
      im->speeches.push_back(body);
      im->auths.push_back(req.get_header_value("Authorization"));
    }
    if (!im->speech) {
      res.status = 404;
      return;
    }
    const Speech s = im->speech(index, body);
    res.status = s.status;
    res.set_content(s.body, s.content_type);
  });
  im->port = im->server.bind_to_any_port("127.0.0.1");
  im->thread = std::thread([im] { im->server.listen_after_bind(); });
  while (!im->server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

FakeOpenAi::~FakeOpenAi() {
  impl_->server.stop();
  impl_->thread.join();
}

std::string FakeOpenAi::url() const {
  return "http://127.0.0.1:" + std::to_string(impl_->port) + "/v1";
}

std::vector<Json::Value> FakeOpenAi::chat_requests() const {
  const std::lock_guard lock(impl_->mu);
  return impl_->chats;
}

std::vector<Json::Value> FakeOpenAi::speech_requests() const {
  const std::lock_guard lock(impl_->mu);
  return impl_->speeches;
}

std::vector<std::string> FakeOpenAi::authorizations() const {
  const std::lock_guard lock(impl_->mu);
  return impl_->auths;
}

std::string FakeOpenAi::StreamBody(const std::string& reply, const std::string& model) {
  const auto chunk = [&](const Json::Value& delta, const Json::Value& finish) {
    Json::Value c(Json::objectValue);
    c["id"] = "chatcmpl-test";
    c["object"] = "chat.completion.chunk";
    c["created"] = 1733000000;
    c["model"] = model;
    Json::Value choice(Json::objectValue);
    choice["index"] = 0;
    choice["delta"] = delta;
    choice["logprobs"] = Json::Value();
    choice["finish_reason"] = finish;
    c["choices"].append(choice);
    return "data: " + Compact(c) + "\n\n";
  };
  Json::Value role(Json::objectValue);
  role["role"] = "assistant";
  role["content"] = "";
  std::string body = chunk(role, Json::Value());
  std::istringstream words(reply);
  bool first = true;
  for (std::string w; words >> w; first = false) {
    Json::Value d(Json::objectValue);
    d["content"] = first ? w : " " + w;
    body += chunk(d, Json::Value());
  }
  body += chunk(Json::Value(Json::objectValue), "stop");
  body += "data: [DONE]\n\n";
  return body;
}

std::vector<std::string> FakeOpenAi::Split(const std::string& body, size_t size) {
  std::vector<std::string> out;
  for (size_t off = 0; off < body.size(); off += size) out.push_back(body.substr(off, size));
  return out;
}

}  // namespace parley::testing
