#include "app/client_message.h"

#include <cmath>
#include <cstdio>

#include "core/core.h"

namespace parley::app {
namespace {

using LandmarkFormat = session::Conversation::LandmarkFormat;

client::Refusal Refuse(std::string code, std::string message) {
  return client::Refusal{std::move(code), std::move(message)};
}

std::string KindHex(uint8_t kind) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", kind);
  return buf;
}

ClientMessage ReadStart(const Json::Value& msg) {
  session::StartParams params;
  const Json::Value& media = msg["media"];
  const std::string media_name = media.isString() ? media.asString() : "";
  if (media_name != "webm" && media_name != "pcm")
    return Refuse("bad_start", "\"media\" must be \"webm\" or \"pcm\"");
  params.media =
      media_name == "pcm" ? session::StartParams::Media::kPcm : session::StartParams::Media::kWebm;
  if (params.media == session::StartParams::Media::kPcm) {
    const Json::Value& rate = msg["sample_rate"];
    if (!rate.isInt() || rate.asInt() < 8000 || rate.asInt() > 48000)
      return Refuse("bad_start", "pcm needs an integer \"sample_rate\" of 8000..48000");
    params.sample_rate = rate.asInt();
  }
  const Json::Value& playback = msg["playback"];
  if (!playback.isNull() &&
      (!playback.isString() || (playback.asString() != "opus" && playback.asString() != "pcm")))
    return Refuse("bad_start", "\"playback\" must be \"opus\" or \"pcm\"");
  params.pcm_playback = playback.isString() && playback.asString() == "pcm";
  const Json::Value& echo = msg["echo"];
  if (!echo.isNull() &&
      (!echo.isString() || (echo.asString() != "client" && echo.asString() != "server")))
    return Refuse("bad_start",
                  "\"echo\" must be \"client\" (the microphone has no echo of the persona's "
                  "voice) or \"server\" (cancel it here)");
  if (echo.isString()) params.server_echo_cancel = echo.asString() == "server";
  return client::Start{params};
}

ClientMessage ReadControl(Endpoint endpoint, const Json::Value& msg) {
  const std::string type = msg["type"].asString();
  if (type == "hello") {
    const Json::Value& protocol = msg["protocol"];
    return client::Hello{protocol.isInt() ? protocol.asInt() : 0};
  }
  if (type == "ping") return client::Ping{msg.isMember("id") ? msg["id"] : Json::Value()};
  if (endpoint == Endpoint::kLandmarks)
    return Refuse("unknown_type",
                  "/ws/landmarks accepts landmark frames, hello and ping (got '" + type + "')");
  if (type == "start") return ReadStart(msg);
  if (type == "stop") return client::Stop{};
  if (type == "say") {
    const Json::Value& text = msg["text"];
    if (!text.isString()) return Refuse("bad_say", "\"say\" needs a string \"text\"");
    return client::Say{text.asString()};
  }
  if (type == "playback") {
    const Json::Value& utterance = msg["utterance"];
    const Json::Value& played = msg["played_ms"];
    if (!utterance.isInt() || !played.isNumeric() || !std::isfinite(played.asDouble()) ||
        played.asDouble() < 0 || played.asDouble() > 1e9)
      return Refuse("bad_playback",
                    "\"playback\" needs an integer \"utterance\" and a number \"played_ms\"");
    return client::PlaybackPosition{utterance.asInt(), static_cast<int64_t>(played.asDouble())};
  }
  return Refuse("unknown_type", "unknown message type '" + type + "'");
}

ClientMessage ReadBinary(Endpoint endpoint, std::string_view data) {
  if (data.empty()) return Refuse("empty_frame", "a binary frame needs at least its kind byte");
  const auto kind = static_cast<uint8_t>(data[0]);
  const std::string_view payload = data.substr(1);
  if (kind == static_cast<uint8_t>(FrameKind::kLandmarks))
    return client::Landmarks{LandmarkFormat::kBinary, payload};
  if (kind != static_cast<uint8_t>(FrameKind::kWebm) &&
      kind != static_cast<uint8_t>(FrameKind::kPcm))
    return Refuse("unknown_kind",
                  "binary kind " + KindHex(kind) + " is not a client-to-server kind");
  if (endpoint != Endpoint::kPractice)
    return Refuse("wrong_endpoint", "media frames go to /ws/practice");
  return client::Media{kind == static_cast<uint8_t>(FrameKind::kPcm), payload};
}

}  // namespace

ClientMessage ReadClientMessage(Endpoint endpoint, bool binary, std::string_view data) {
  if (binary) return ReadBinary(endpoint, data);
  // A large text message on /ws/landmarks is a frame: not worth a second full JSON parse.
  if (endpoint == Endpoint::kLandmarks && data.size() > kMaxControlMessageBytes)
    return client::Landmarks{LandmarkFormat::kJson, data};
  std::string parse_error;
  const auto msg = core::ParseJson(data, &parse_error);
  if (!msg) return Refuse("bad_json", "message is not valid JSON: " + parse_error);
  if (!msg->isObject()) return Refuse("bad_message", "a message must be a JSON object");
  const Json::Value& type = (*msg)["type"];
  if (endpoint == Endpoint::kLandmarks &&
      (type.isNull() || (type.isString() && type.asString() == "landmarks")))
    return client::Landmarks{LandmarkFormat::kJson, data};
  if (!type.isString()) return Refuse("bad_message", "a control message needs a string \"type\"");
  return ReadControl(endpoint, *msg);
}

}  // namespace parley::app
