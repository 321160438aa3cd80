// POST /api/analyze?persona_id=ID: an uploaded recording (WAV or WebM) becomes an ended session
// whose report the live analysers wrote (docs/protocol.md "Uploaded recordings").
//
// The request is checked on the worker that received it (type, size, the file's own header;
// a WAV is decoded here, so a bad one is refused before any session exists); the analysis then
// runs on the uploads pool, which answers when the report is stored. An analysis keeps about a
// core busy for a fraction of the recording's length, so it never runs on the general pool:
// requests, health checks and session ends must not wait behind it.
#include <algorithm>
#include <cctype>
#include <cmath>

#include "app/app_impl.h"

namespace parley::app {
namespace {

using signaling::HttpRequest;
using signaling::HttpResponse;

constexpr const char* kRoute = "/api/analyze";
constexpr int kRetryAfterS = 30;

enum class Container { kWav, kWebm };

// The media type without parameters, lower case ("audio/webm;codecs=opus" -> "audio/webm").
std::string MediaType(const HttpRequest& req) {
  const auto it = req.headers.find("content-type");
  if (it == req.headers.end()) return {};
  std::string t = it->second.substr(0, it->second.find(';'));
  t.erase(std::remove_if(t.begin(), t.end(), [](unsigned char c) { return std::isspace(c); }),
          t.end());
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  return t;
}

std::optional<Container> ContainerOf(const std::string& type) {
  if (type == "audio/wav" || type == "audio/x-wav" || type == "audio/wave" ||
      type == "audio/vnd.wave")
    return Container::kWav;
  if (type == "audio/webm" || type == "video/webm") return Container::kWebm;
  return std::nullopt;
}

bool LooksLikeWav(std::string_view b) {
  return b.size() >= 12 && (b.substr(0, 4) == "RIFF" || b.substr(0, 4) == "RF64") &&
         b.substr(8, 4) == "WAVE";
}

bool LooksLikeWebm(std::string_view b) {  // an EBML header: 0x1A45DFA3
  return b.size() >= 4 && static_cast<uint8_t>(b[0]) == 0x1A &&
         static_cast<uint8_t>(b[1]) == 0x45 && static_cast<uint8_t>(b[2]) == 0xDF &&
         static_cast<uint8_t>(b[3]) == 0xA3;
}

HttpResponse Busy(std::string code, const std::string& message) {
  HttpResponse r = HttpResponse::Error(503, code, message);
  r.headers.emplace_back("retry-after", std::to_string(kRetryAfterS));
  return r;
}

}  // namespace

// What the analysis needs, checked: the caller, the persona and the media as the ingest takes
// it (WebM as uploaded; a WAV decoded to mono S16LE at its own rate).
struct App::Impl::Upload {
  std::string user_id, persona_id;
  session::StartParams params;
  std::string media;
  size_t bytes = 0;       // as uploaded
  std::string container;  // "wav" | "webm"
};

void App::Impl::Analyze(HttpRequest req, const Responder& respond) {
  const auto answer = [&](HttpResponse r) { respond(WithRoute(std::move(r), kRoute)); };
  if (req.method != "POST") return answer(MethodNotAllowed("POST"));
  if (!req.identity.authenticated) return answer(Unauthorized(req));
  const auto persona = req.query.find("persona_id");
  if (persona == req.query.end() || persona->second.empty())
    return answer(HttpResponse::Error(422, "invalid_request",
                                      "'persona_id' is required in the query string"));
  if (personas->Find(persona->second) == nullptr)
    return answer(HttpResponse::Error(
        422, "unknown_persona", "no persona '" + persona->second + "'; see GET /api/personas"));
  const std::string type = MediaType(req);
  const auto container = ContainerOf(type);
  if (!container)
    return answer(HttpResponse::Error(
        415, "unsupported_media_type",
        (type.empty() ? std::string("no Content-Type") : "Content-Type '" + type + "'") +
            ": send a recording as audio/wav or audio/webm (video/webm)"));
  if (req.body.empty())
    return answer(HttpResponse::Error(400, "empty_recording", "the request body is empty"));

  auto upload = std::make_shared<Upload>();
  upload->user_id = req.identity.user_id;
  upload->persona_id = persona->second;
  upload->bytes = req.body.size();
  const int max_s = config.uploads.max_duration_s;
  if (*container == Container::kWav) {
    upload->container = "wav";
    if (!LooksLikeWav(req.body))
      return answer(HttpResponse::Error(422, "undecodable_recording",
                                        "the body is not a WAV file (no RIFF/WAVE header)"));
    std::vector<int16_t> pcm;
    int rate = 0;
    std::string error;
    // One second past the limit is enough to know it is over.
    if (!speech::DecodeSound(req.body, &pcm, &rate, &error, max_s + 1.0))
      return answer(HttpResponse::Error(422, "undecodable_recording", error));
    if (pcm.empty())
      return answer(HttpResponse::Error(422, "undecodable_recording", "the WAV holds no audio"));
    if (rate < 8000 || rate > 48000)
      return answer(HttpResponse::Error(
          422, "undecodable_recording",
          "the WAV's sample rate is " + std::to_string(rate) + " Hz; 8000..48000 Hz is analysed"));
    if (pcm.size() > static_cast<size_t>(max_s) * static_cast<size_t>(rate))
      return answer(HttpResponse::Error(
          413, "recording_too_long",
          "the recording is longer than " + std::to_string(max_s) + " s (--max-upload-duration)"));
    upload->params.media = session::StartParams::Media::kPcm;
    upload->params.sample_rate = rate;
    upload->media.assign(reinterpret_cast<const char*>(pcm.data()), pcm.size() * 2);
  } else {
    upload->container = "webm";
    if (!LooksLikeWebm(req.body))
      return answer(HttpResponse::Error(422, "undecodable_recording",
                                        "the body is not a WebM file (no EBML header)"));
    upload->params.media = session::StartParams::Media::kWebm;
    upload->media = std::move(req.body);
  }
  const bool queued = uploads.TrySubmit([this, upload, respond] {
    HttpResponse r = shut_down.load()
                         ? HttpResponse::Error(503, "shutting_down", "the server is shutting down")
                         : RunAnalysis(*upload);
    respond(WithRoute(std::move(r), kRoute));
  });
  if (!queued)
    return answer(Busy("uploads_busy", "every analysis slot is taken; retry the upload shortly"));
}

HttpResponse App::Impl::RunAnalysis(const Upload& upload) {
  const auto s = registry.Create(upload.user_id, upload.persona_id, nullptr,
                                /*counts_toward_capacity=*/false);
  if (!s) return Busy("too_many_sessions", "the server holds its maximum number of sessions");
  if (!registry.BeginRecording(*s) || s->conversation() == nullptr) {
    Discard(*s);
    return HttpResponse::Error(500, "internal_error", "the analysis could not start");
  }
  const auto t0 = std::chrono::steady_clock::now();
  session::Conversation::RecordingLimits limits;
  limits.max_seconds = config.uploads.max_duration_s;
  limits.stall_timeout = std::chrono::seconds(config.uploads.stall_timeout_s);
  const auto outcome = s->conversation()->AnalyzeRecording(upload.params, upload.media, limits);
  const double analysis_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  using Status = session::Conversation::RecordingOutcome::Status;
  switch (outcome.status) {
    case Status::kAnalysed:
      break;
    case Status::kUndecodable:
      Discard(*s);
      return HttpResponse::Error(
          422, "undecodable_recording",
          "no audio or video could be decoded from the recording" +
              (outcome.error.empty() ? std::string() : ": " + outcome.error));
    case Status::kTooLong:
      Discard(*s);
      return HttpResponse::Error(413, "recording_too_long",
                                 "the recording is longer than " +
                                     std::to_string(config.uploads.max_duration_s) +
                                     " s (--max-upload-duration)");
    case Status::kStalled:
      Discard(*s);
      return Busy("analysis_stalled", "the analysis made no progress for " +
                                          std::to_string(config.uploads.stall_timeout_s) +
                                          " s; retry shortly");
    case Status::kEnded:
      Discard(*s);
      return HttpResponse::Error(503, "shutting_down", "the server is shutting down");
  }
  // What the report says about where its media came from.
  Json::Value patch(Json::objectValue);
  Json::Value& rec = patch["metrics"]["recording"];
  rec["container"] = upload.container;
  rec["bytes"] = static_cast<Json::UInt64>(upload.bytes);
  rec["media_s"] = outcome.media_s;
  rec["analysis_s"] = std::round(analysis_s * 1000) / 1000;
  rec["x_real_time"] = analysis_s > 0
                           ? Json::Value(std::round(outcome.media_s / analysis_s * 10) / 10)
                           : Json::Value();
  if (!outcome.error.empty()) rec["decode_error"] = outcome.error;
  s->MergeReport(patch);
  registry.End(*s, "recording_analyzed");  // the end hooks store the report on this thread
  log.Info("recording analysed", {{"session_id", s->id()},
                                  {"container", upload.container},
                                  {"media_s", outcome.media_s},
                                  {"analysis_s", analysis_s}});
  Json::Value doc = SessionDocument(s->Info());
  // The document the end hook stored; when the store is away (the report is spooled), the
  // same report built again from the session.
  Json::Value report;
  std::string why;
  if (store->Get(store::Collection::kReports, s->id(), &report, &why) != store::ReadStatus::kOk) {
    const personas::Persona* persona = personas->Find(s->persona_id());
    report = session::BuildReport(*s, persona != nullptr ? persona->doc["name"].asString() : "");
  }
  doc["report"] = report;
  HttpResponse r = HttpResponse::Json(201, store::ToPublicJson(doc));
  r.headers.emplace_back("location", "/api/sessions/" + s->id());
  return r;
}

void App::Impl::Discard(session::Session& s) {
  registry.End(s, "recording_failed");
  registry.Remove(s.id());
  std::string why;
  if (!store->Delete(store::Collection::kReports, s.id(), &why) ||
      !store->Delete(store::Collection::kSessions, s.id(), &why))
    log.Warn("a failed upload's session could not be deleted",
             {{"session_id", s.id()}, {"error", why}});
}

}  // namespace parley::app
