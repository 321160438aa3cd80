// WebSocket load client: N connections each sending landmark-sized JSON frames at a fixed
// rate, plus one ping per connection per second to time the event round trip. Reports the
// server's received messages/s (from its /metrics), the server's CPU seconds per 10k
// messages (from /proc/<pid>/stat) and round-trip percentiles.
//
//   ws_load --spawn build/default/app/parley --connections 100 --rate 30 --duration 60
//   ws_load --port 8080 --pid $(pidof parley) --token $JWT ...
#include <fcntl.h>
#include <opus/opus.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "speech/speech.h"
#include "tests/support/audio_files.h"
#include "tests/support/face_generator.h"
#include "tests/support/flite_voice.h"
#include "tests/support/test_server.h"
#include "tests/support/webm_encoder.h"

namespace {

using namespace std::chrono_literals;
using parley::testing::Http;
using parley::testing::WsClient;
using parley::testing::WsHub;
using Clock = std::chrono::steady_clock;

// utime + stime of a process in seconds.
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15; ++i) {
    rest >> field;
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

long RssKib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

// Value of a sample line "<series> <value>" (not the # HELP / # TYPE lines); 0 when absent.
double MetricValue(const std::string& metrics, const std::string& series) {
  const auto at = metrics.find("\n" + series + " ");
  if (at == std::string::npos) return 0;
  return std::strtod(metrics.c_str() + at + series.size() + 2, nullptr);
}

// A MediaPipe-shaped frame of 478 points: about 11 KB of JSON.
std::string LandmarkFrame(std::mt19937& rng, double t_ms) {
  std::uniform_real_distribution<double> xy(0.3, 0.7), z(-0.08, 0.08);
  std::string s;
  s.reserve(12000);
  char buf[64];
  std::snprintf(buf, sizeof buf, "{\"t\":%.1f,\"width\":640,\"height\":480,\"landmarks\":[", t_ms);
  s += buf;
  for (int i = 0; i < 478; ++i) {
    std::snprintf(buf, sizeof buf, "%s[%.4f,%.4f,%.4f]", i ? "," : "", xy(rng), xy(rng), z(rng));
    s += buf;
  }
  s += "]}";
  return s;
}

struct Child {
  pid_t pid = -1;
  int port = 0;
};

Child Spawn(const std::string& binary, const std::string& secret, int connections,
            const std::vector<std::string>& extra_args) {
  int out[2];
  if (pipe(out) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);  // never outlive the load client
    const int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDOUT_FILENO);
    dup2(out[1], STDERR_FILENO);
    close(out[0]);
    close(out[1]);
    const std::string per_ip = std::to_string(connections + 16);
    std::vector<std::string> args = {binary,
                                     "--port",
                                     "0",
                                     "--bind",
                                     "127.0.0.1",
                                     "--max-connections-per-ip",
                                     per_ip,
                                     "--jwt-secret-key",
                                     secret,
                                     "--log-level",
                                     "info",
                                     "--data-dir",
                                     "/tmp/parley-bench-data"};
    // Every connection its session unless the run measures admission itself.
    if (std::find(extra_args.begin(), extra_args.end(), "--session-capacity") == extra_args.end() &&
        std::none_of(extra_args.begin(), extra_args.end(),
                     [](const std::string& a) { return a.starts_with("--session-capacity="); }))
      args.insert(args.end(), {"--session-capacity", per_ip});
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  close(out[1]);
  // The "parley listening" log line carries the port.
  FILE* f = fdopen(out[0], "r");
  char line[4096];
  Child c{pid, 0};
  while (fgets(line, sizeof line, f) != nullptr) {
    const auto v = parley::core::ParseJson(line);
    if (v && (*v)["msg"].asString() == "parley listening") {
      c.port = (*v)["port"].asInt();
      break;
    }
  }
  // Keep draining stderr so the server never blocks on a full pipe.
  std::thread([f] {
    char sink[4096];
    while (fgets(sink, sizeof sink, f) != nullptr) {
    }
    fclose(f);
  }).detach();
  return c;
}

void StopChild(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
}

// Each connection starts WebM media and streams `file` in real time, one message per
// timeslice (looping). Reports whether the server decodes in real time, and what it costs.
int RunMedia(std::vector<std::shared_ptr<WsClient>>& clients, const std::string& file,
             double file_seconds, int chunk_ms, int warmup_s, int duration_s,
             const std::string& base, pid_t pid, pid_t child) {
  std::ifstream in(file, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty() || file_seconds <= 0) {
    std::cerr << "ws_load: --media needs a readable file and --media-seconds\n";
    return 2;
  }
  for (auto& c : clients) c->SendText(R"({"type":"start","media":"webm"})");
  const size_t chunk = static_cast<size_t>(bytes.size() * chunk_ms / (file_seconds * 1000.0));
  const auto period = std::chrono::milliseconds(chunk_ms);
  const double rss_idle = pid > 0 ? RssKib(pid) / 1024.0 : 0;
  const auto start = Clock::now();
  const auto stop_at = start + std::chrono::seconds(warmup_s + duration_s);
  double audio_before = 0, cpu_before = 0;
  bool measuring = false;
  Clock::time_point measure_start;
  size_t offset = 0;
  for (uint64_t tick = 0; Clock::now() < stop_at; ++tick) {
    std::this_thread::sleep_until(start + period * tick);
    if (!measuring && Clock::now() >= start + std::chrono::seconds(warmup_s)) {
      audio_before =
          MetricValue(Http("GET", base + "/metrics").body, "parley_media_audio_seconds_total");
      cpu_before = pid > 0 ? CpuSeconds(pid) : 0;
      measure_start = Clock::now();
      measuring = true;
    }
    if (offset >= bytes.size()) break;  // the recording is over (make it longer than the run)
    const std::string piece = "\x01" + bytes.substr(offset, chunk);
    offset += chunk;
    for (auto& c : clients) c->SendBinary(piece);
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - measure_start).count();
  const double audio =
      MetricValue(Http("GET", base + "/metrics").body, "parley_media_audio_seconds_total") -
      audio_before;
  const double cpu = pid > 0 ? CpuSeconds(pid) - cpu_before : 0;
  const double rss = pid > 0 ? RssKib(pid) / 1024.0 : 0;
  const auto n = static_cast<double>(clients.size());
  Json::Value out(Json::objectValue);
  out["sessions"] = static_cast<Json::UInt64>(clients.size());
  out["media"] = file;
  out["measured_s"] = elapsed;
  out["realtime_ratio"] = audio / (n * elapsed);  // 1.0: every session decoded in real time
  out["server_cpu_cores"] = cpu / elapsed;
  out["cpu_per_session_percent"] = 100.0 * cpu / elapsed / n;
  out["server_rss_mib"] = rss;
  out["rss_per_session_mib"] = (rss - rss_idle) / n;
  std::cout << parley::core::ToJson(out) << std::endl;
  for (auto& c : clients) c->Close();
  for (auto& c : clients) c->WaitClosed(5s);
  StopChild(child);
  return 0;
}

// speech_end -> transcript.final per connection (a final carries its turn's t_end, the t of
// the speech_end it answers), for turns that ended inside the measured window.
class SpeechLog {
 public:
  struct Result {
    int ended = 0, finals = 0;
    std::vector<double> latency_ms;
    double speech_s = 0;  // turn durations of the finals
  };
  void set_window(Clock::time_point from, Clock::time_point to) {
    const std::lock_guard lock(mu_);
    from_ = from;
    to_ = to;
  }
  void OnMessage(size_t client, const parley::testing::WsMessage& m) {
    if (m.binary) return;
    const bool end = m.data.find("\"speech_end\"") != std::string::npos;
    const bool final = m.data.find("\"transcript.final\"") != std::string::npos;
    if (!end && !final) return;
    const auto v = parley::core::ParseJson(m.data);
    if (!v) return;
    const std::lock_guard lock(mu_);
    if (end) {
      if ((*v)["too_short"].asBool() || m.received < from_ || m.received > to_) return;
      ends_[{client, (*v)["t"].asInt64()}] = m.received;
      ++result_.ended;
      return;
    }
    const auto it = ends_.find({client, (*v)["t_end"].asInt64()});
    if (it == ends_.end()) return;
    result_.latency_ms.push_back(
        std::chrono::duration<double, std::milli>(m.received - it->second).count());
    result_.speech_s +=
        static_cast<double>((*v)["t_end"].asInt64() - (*v)["t_start"].asInt64()) / 1000;
    ++result_.finals;
    ends_.erase(it);
  }
  Result Summarize() const {
    const std::lock_guard lock(mu_);
    return result_;
  }

 private:
  mutable std::mutex mu_;
  Clock::time_point from_ = Clock::time_point::max(), to_{};
  std::map<std::pair<size_t, int64_t>, Clock::time_point> ends_;
  Result result_;
};

// Human speech with natural pauses: the librivox recordings of pocketsphinx-testdata, 1-3 s
// of quiet room between them, in an order and with gaps of the connection's own.
std::vector<int16_t> SpeechTrack(uint32_t seed, double min_seconds) {
  const std::string dir = "/usr/share/pocketsphinx/test/data/librivox/";
  std::vector<std::vector<int16_t>> files;
  for (const char* id : {"0870", "0880", "0890", "0920", "0930"})
    files.push_back(
        parley::testing::DecodeTo16k(dir + "sense_and_sensibility_01_austen_64kb-" + id + ".wav"));
  std::mt19937 rng(seed);
  std::normal_distribution<double> hiss(0, 3);
  std::uniform_int_distribution<int> gap_ms(1000, 3000);
  std::vector<int16_t> track;
  for (size_t i = rng() % files.size(); track.size() < min_seconds * 16000; ++i) {
    for (int k = gap_ms(rng) * 16; k > 0; --k)
      track.push_back(static_cast<int16_t>(std::lround(hiss(rng))));
    const auto& f = files[i % files.size()];
    track.insert(track.end(), f.begin(), f.end());
  }
  return track;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1))];
}

// Each connection streams human speech as 16 kHz PCM in real time (100 ms messages). Reports
// speech_end -> transcript.final latency, whether recognition keeps up, CPU against the bare
// decoder on the same recordings, and memory per recogniser and per session.
int RunSpeech(std::vector<std::shared_ptr<WsClient>>& clients, int warmup_s, int duration_s,
              const std::string& base, pid_t pid, pid_t child, SpeechLog& log, bool partials) {
  const double rss_before = pid > 0 ? RssKib(pid) / 1024.0 : 0;
  std::vector<std::vector<int16_t>> tracks;
  for (size_t i = 0; i < clients.size(); ++i)
    tracks.push_back(SpeechTrack(static_cast<uint32_t>(i + 1), warmup_s + duration_s + 5));
  for (auto& c : clients) c->SendText(R"({"type":"start","media":"pcm","sample_rate":16000})");
  // The recognisers load with the first media session (the first at once, the rest in the
  // background): wait for all of them, then weigh them.
  int decoders = 0;
  for (int i = 0; i < 1200; ++i) {
    const auto asr = Http("GET", base + "/health").JsonBody()["dependencies"]["speech_recognition"];
    decoders = asr["decoders"].asInt();
    if (asr["status"].asString() == "ready" && asr["decoders_loaded"].asInt() == decoders) break;
    std::this_thread::sleep_for(100ms);
  }
  const double rss_loaded = pid > 0 ? RssKib(pid) / 1024.0 : 0;
  const auto start = Clock::now();
  const auto measure_from = start + std::chrono::seconds(warmup_s);
  const auto stop_at = measure_from + std::chrono::seconds(duration_s);
  log.set_window(measure_from, stop_at);
  double cpu_before = 0, asr_before = 0, asr_audio_before = 0;
  bool measuring = false;
  constexpr size_t kChunk = 1600;
  for (uint64_t tick = 0; Clock::now() < stop_at; ++tick) {
    std::this_thread::sleep_until(start + 100ms * tick);
    if (!measuring && Clock::now() >= measure_from) {
      cpu_before = pid > 0 ? CpuSeconds(pid) : 0;
      const std::string metrics = Http("GET", base + "/metrics").body;
      asr_before = MetricValue(metrics, "parley_asr_seconds_total{engine=\"pocketsphinx\"}");
      asr_audio_before =
          MetricValue(metrics, "parley_asr_audio_seconds_total{engine=\"pocketsphinx\"}");
      measuring = true;
    }
    for (size_t i = 0; i < clients.size(); ++i) {
      const auto& t = tracks[i];
      const size_t off = tick * kChunk;
      if (off + kChunk > t.size()) continue;
      clients[i]->SendBinary(
          "\x02" + std::string(reinterpret_cast<const char*>(t.data() + off), kChunk * 2));
    }
  }
  const double elapsed = static_cast<double>(duration_s);
  const double cpu = pid > 0 ? CpuSeconds(pid) - cpu_before : 0;
  // Let the last finals of the window arrive.
  std::this_thread::sleep_for(3s);
  const std::string metrics = Http("GET", base + "/metrics").body;
  const double asr =
      MetricValue(metrics, "parley_asr_seconds_total{engine=\"pocketsphinx\"}") - asr_before;
  const double asr_audio =
      MetricValue(metrics, "parley_asr_audio_seconds_total{engine=\"pocketsphinx\"}") -
      asr_audio_before;
  const double rss_end = pid > 0 ? RssKib(pid) / 1024.0 : 0;
  const auto result = log.Summarize();

  // The bare decoder on the same recordings, whole files, in this process (one core).
  std::string error;
  parley::speech::PocketSphinxConfig pc;
  pc.pool_size = 1;
  pc.partials = false;
  const auto pool = parley::speech::DecoderPool::Create(pc, &error);
  double bare_cpu = 0, bare_audio = 0;
  for (const char* id : {"0870", "0880", "0890", "0920", "0930"}) {
    const auto pcm = parley::testing::DecodeTo16k(
        "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-" +
        std::string(id) + ".wav");
    timespec a{}, b{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    if (pool) parley::speech::RecognizeUtterance(*pool, pcm, &error);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    bare_cpu += static_cast<double>(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    bare_audio += static_cast<double>(pcm.size()) / 16000;
  }
  const auto n = static_cast<double>(clients.size());
  Json::Value out(Json::objectValue);
  out["sessions"] = static_cast<Json::UInt64>(clients.size());
  out["partials"] = partials;
  out["measured_s"] = elapsed;
  out["turns_ended"] = result.ended;
  out["finals"] = result.finals;
  out["finals_missing"] = result.ended - result.finals;
  out["latency_ms_p50"] = Percentile(result.latency_ms, 0.5);
  out["latency_ms_p95"] = Percentile(result.latency_ms, 0.95);
  out["latency_ms_max"] = Percentile(result.latency_ms, 1.0);
  out["speech_s_finalised"] = result.speech_s;
  out["server_cpu_cores"] = cpu / elapsed;
  out["server_cpu_s_per_speech_s"] = result.speech_s > 0 ? cpu / result.speech_s : 0;
  out["asr_s_per_speech_s"] = result.speech_s > 0 ? asr / result.speech_s : 0;
  out["bare_decoder_cpu_s_per_speech_s"] = bare_audio > 0 ? bare_cpu / bare_audio : 0;
  // The server's recognisers per second of audio they decoded (turns with their pre-roll and
  // tail), against the bare decoder per second of the recordings: the same work, same footing.
  out["asr_cpu_s_per_audio_s"] = asr_audio > 0 ? asr / asr_audio : 0;
  out["asr_cpu_ratio_to_bare"] =
      asr_audio > 0 && bare_cpu > 0 ? (asr / asr_audio) / (bare_cpu / bare_audio) : 0;
  out["server_rss_mib"] = rss_end;
  out["rss_per_recogniser_mib"] = (rss_loaded - rss_before) / std::max(1, decoders);
  out["rss_per_session_mib"] = (rss_end - rss_loaded) / n;
  std::cout << parley::core::ToJson(out) << std::endl;
  for (auto& c : clients) c->Close();
  for (auto& c : clients) c->WaitClosed(5s);
  StopChild(child);
  return 0;
}

// A run's measured window: a warm-up, then `duration_s`; the server's CPU is read when the
// window opens (from a thread of its own, so that no client waits for it).
class MeasuredWindow {
 public:
  MeasuredWindow(int warmup_s, int duration_s, pid_t pid)
      : from(Clock::now() + std::chrono::seconds(warmup_s)),
        until(from + std::chrono::seconds(duration_s)),
        pid_(pid),
        meter_([this] {
          std::this_thread::sleep_until(from);
          cpu_at_from_ = pid_ > 0 ? CpuSeconds(pid_) : 0;
        }) {}
  ~MeasuredWindow() {
    if (meter_.joinable()) meter_.join();
  }
  // The server's CPU seconds since the window opened (waits for it to open).
  double ServerCpuSeconds() {
    if (meter_.joinable()) meter_.join();
    return pid_ > 0 ? CpuSeconds(pid_) - cpu_at_from_ : 0;
  }
  const Clock::time_point from, until;

 private:
  const pid_t pid_;
  double cpu_at_from_ = 0;
  std::thread meter_;
};

// Each session holds a spoken conversation: it speaks a human recording (librivox, real-time
// PCM, the microphone's silence around it), waits for the persona's reply to play out, then
// speaks the next. Voice-to-voice latency is measured on the client: the last voiced sample
// of the recording sent -> the first voice packet of the reply received. The server's own
// breakdown comes with the reply (ms after the turn's last voiced sample: final transcript,
// first text, first synthesized audio) and playback.start (first packet sent).
// With `echo_delay_ms` >= 0 each client is a speakerphone without echo cancellation: every voice
// packet it receives comes back into its microphone that much later, `echo_db` quieter, and
// any pause, barge-in cancel or speech start while it is silent is the persona interrupting
// itself.
// A full session (--webm, --landmark-fps): the microphone goes as WebM/Opus, as a browser's
// MediaRecorder sends it, and the client's face tracker sends landmark frames beside it.
struct FullSession {
  bool webm = false;
  int landmark_fps = 0;
  std::string base;  // the server's URL, for its per-stage CPU (/metrics)
  // People arrive one by one: session i connects and starts (its microphone, its greeting)
  // i * ramp_s / N seconds in, not all in the same instant. (A connection opened early and left
  // silent would be closed by the server's idle timeout before its person arrived.)
  double ramp_s = 0;
  int refused = 0;  // conversations the server refused at capacity (503)
  int refused_without_retry_after = 0;
  // Each person practises this long, then leaves (the session ends and its report is written)
  // and the next person takes the seat with a new session; 0: one session per seat for the run.
  double session_s = 0;
};

// How the conversations reach the server: session i's WebSocket, and (with session_s) a session
// ending and a new one being made for the next person in that seat.
struct Seats {
  std::vector<std::string> sessions;  // each seat's first session
  std::function<std::shared_ptr<WsClient>(size_t seat, const std::string& session)> connect;
  std::function<bool(const std::string& session)> end;
  std::function<std::optional<std::string>()> create;
};

// The server's CPU seconds by thread group (parley_thread_cpu_seconds).
std::map<std::string, double> ThreadCpu(const std::string& base) {
  std::map<std::string, double> out;
  std::istringstream in(Http("GET", base + "/metrics").body);
  const std::string prefix = "parley_thread_cpu_seconds{group=\"";
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) != 0) continue;
    const auto close = line.find('"', prefix.size());
    out[line.substr(prefix.size(), close - prefix.size())] = std::atof(line.c_str() + close + 3);
  }
  return out;
}

double OwnCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int RunConversation(const Seats& seats, int warmup_s, int duration_s, pid_t pid, pid_t child,
                    int echo_delay_ms, double echo_db, const FullSession& full) {
  std::vector<std::shared_ptr<WsClient>> clients(seats.sessions.size());
  // The face a tracker would send, cycled, as the page sends it: binary frames (0x03) of int16
  // coordinates; t is written in at send time.
  std::vector<std::string> face_frames;
  if (full.landmark_fps > 0) {
    parley::testing::GeneratorConfig g;
    g.seed = 5;
    g.duration_s = 20;
    g.no_face = false;
    for (const auto& f : parley::testing::GenerateSession(g).frames)
      face_frames.push_back(
          "\x03" + parley::vision::EncodeBinaryFrame(f, parley::vision::BinaryEncoding::kInt16));
  }
  std::map<std::string, double> stage_cpu_from;
  double own_cpu_from = 0;
  std::thread stage_meter;
  if (!full.base.empty())
    stage_meter = std::thread([&] {
      std::this_thread::sleep_until(Clock::now() + std::chrono::seconds(warmup_s));
      stage_cpu_from = ThreadCpu(full.base);
      own_cpu_from = OwnCpuSeconds();
    });
  std::atomic<int64_t> user_speech_samples{0};
  std::atomic<int> overloaded_turns{0}, overloaded_in_window{0};
  std::vector<std::vector<int16_t>> recordings;
  for (const char* id : {"0870", "0880", "0890", "0920", "0930"}) {
    auto pcm = parley::testing::DecodeTo16k(
        std::string(
            "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-") +
        id + ".wav");
    if (!pcm.empty()) recordings.push_back(std::move(pcm));
  }
  if (recordings.empty()) {
    std::cerr << "ws_load: --conversation needs pocketsphinx-testdata\n";
    return 2;
  }
  // Where each recording's voice ends: the last 10 ms over -40 dBFS.
  std::vector<size_t> last_voiced;
  for (const auto& r : recordings) {
    size_t last = 0;
    for (size_t off = 0; off + 160 <= r.size(); off += 160) {
      double e = 0;
      for (size_t i = off; i < off + 160; ++i) e += double(r[i]) * r[i];
      if (std::sqrt(e / 160) > 32768 * 0.01) last = off + 160;
    }
    last_voiced.push_back(last);
  }
  const double rss_before = pid > 0 ? RssKib(pid) / 1024.0 : 0;
  struct Round {
    double v2v_ms = -1, end_of_turn_ms = -1;
    Json::Value reply, start;
    bool measured = false;
    double at_s = 0;  // when the turn's voice ended, seconds into the measured window
  };
  std::mutex mu;
  std::vector<Round> rounds;
  int missing = 0;
  // Sessions that did not last the run: their connection failed to open, or the server closed it
  // (by close code). A soak or capacity figure with any of these is not of `sessions` sessions.
  int connect_failures = 0;
  std::map<uint16_t, int> closed_early;
  int sessions_ended = 0, end_failures = 0;  // seats handed to the next person (session_s)
  int persona_turns = 0, self_paused = 0, self_cancelled = 0, echo_speech_starts = 0;
  MeasuredWindow window(warmup_s, duration_s, pid);
  const auto measure_from = window.from, stop_at = window.until;
  std::vector<std::thread> talkers;
  for (size_t ci = 0; ci < clients.size(); ++ci) {
    talkers.emplace_back([&, ci] {
      std::this_thread::sleep_for(std::chrono::duration<double>(
          full.ramp_s * static_cast<double>(ci) / static_cast<double>(clients.size())));
      std::string session_id = seats.sessions[ci];
      for (;;) {  // a person per session, one after another in this seat
        const auto session_until =
            full.session_s > 0
                ? std::min(stop_at,
                           Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(full.session_s)))
                : stop_at;
        auto client = seats.connect(ci, session_id);
        {
          const std::lock_guard lock(mu);
          clients[ci] = client;
        }
        WsClient& ws = *client;
        if (!ws.WaitOpen(20s)) {
          std::cerr << ("ws_load: session " + std::to_string(ci) +
                        " did not connect: " + ws.failure() + "\n");
          const std::lock_guard lock(mu);
          ++connect_failures;
          return;
        }
        ws.SendText(full.webm ? R"({"type":"start","media":"webm"})"
                              : R"({"type":"start","media":"pcm","sample_rate":16000})");
        std::unique_ptr<parley::testing::WebmOpusEncoder> encoder;
        if (full.webm) encoder = std::make_unique<parley::testing::WebmOpusEncoder>();
        size_t face_index = ci * 37;
        auto tick = Clock::now();
        const auto t0 = tick;
        // The room: decoded voice packets waiting to reach the microphone (sample index -> value).
        std::map<int64_t, double> room;
        int64_t mic_samples = 0;
        std::unique_ptr<OpusDecoder, void (*)(OpusDecoder*)> decoder(nullptr, opus_decoder_destroy);
        if (echo_delay_ms >= 0) {
          int err = 0;
          decoder.reset(opus_decoder_create(48000, 1, &err));
        }
        const double echo_gain = std::pow(10.0, -echo_db / 20.0);
        std::vector<int16_t> decoded(5760);
        int64_t play_cursor = 0;  // microphone sample index where the speaker's queue ends
        const auto hear = [&](const parley::testing::WsMessage& m) {
          if (decoder && !m.binary && m.data.find("\"playback.cancelled\"") != std::string::npos) {
            // The page drops what it queued; what already left the speaker is still in the room.
            const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    m.received - t0 + std::chrono::milliseconds(echo_delay_ms))
                                    .count() *
                                16;
            room.erase(room.lower_bound(now), room.end());
            play_cursor = std::min(play_cursor, now);
            return;
          }
          if (!decoder || !m.binary || m.data.size() < 12 || m.data[0] != '\x10') return;
          const int got =
              opus_decode(decoder.get(), reinterpret_cast<const unsigned char*>(m.data.data() + 11),
                          static_cast<opus_int32>(m.data.size() - 11), decoded.data(), 5760, 0);
          // A player's jitter buffer: each packet plays right after the one before it, or, when it
          // comes late (the first of an utterance, or after the server paused), `echo_delay_ms`
          // after it arrived.
          const int64_t arrived = std::chrono::duration_cast<std::chrono::milliseconds>(
                                      m.received - t0 + std::chrono::milliseconds(echo_delay_ms))
                                      .count() *
                                  16;
          int64_t at = std::max(play_cursor, arrived);
          play_cursor = at + got / 3;
          for (int i = 0; i + 2 < got; i += 3, ++at)
            room[at] += echo_gain * (decoded[i] + decoded[i + 1] + decoded[i + 2]) / 3.0;
        };
        // A chunk of microphone audio: `pcm` (or silence) plus what the room brings back.
        const auto microphone = [&](const int16_t* pcm, size_t n) {
          std::vector<int16_t> out(1600, 0);
          if (pcm != nullptr) std::copy(pcm, pcm + n, out.begin());
          for (size_t i = 0; i < out.size(); ++i) {
            const auto it = room.find(mic_samples + static_cast<int64_t>(i));
            if (it != room.end())
              out[i] = static_cast<int16_t>(std::clamp(out[i] + it->second, -32768.0, 32767.0));
          }
          mic_samples += static_cast<int64_t>(out.size());
          room.erase(room.begin(), room.lower_bound(mic_samples));
          if (encoder) {
            const std::string webm = encoder->Encode(out);
            return webm.empty() ? std::string() : "\x01" + webm;
          }
          return "\x02" + std::string(reinterpret_cast<const char*>(out.data()), out.size() * 2);
        };
        const auto silence = [&] { return microphone(nullptr, 0); };
        // The client's own speech, as microphone sample ranges. A speech onset the server reports
        // is the client's own when it falls inside one (the server's `t` is session time, and the
        // microphone's sample 0 is the `started` event's `t`); otherwise it is the persona's echo.
        std::vector<std::pair<int64_t, int64_t>> own_speech;
        int64_t stream_zero_ms = -1;
        bool onset_is_echo = false;
        const auto self_interruption = [&](const std::string& t,
                                           const parley::testing::WsMessage& m) {
          if (echo_delay_ms < 0 || m.binary) return;
          if (t == "started") {
            const auto v = parley::core::ParseJson(m.data);
            if (v) stream_zero_ms = (*v)["t"].asInt64();
            return;
          }
          if (t == "speech_start") {
            const auto v = parley::core::ParseJson(m.data);
            const int64_t at =
                v && stream_zero_ms >= 0 ? ((*v)["t"].asInt64() - stream_zero_ms) * 16 : 0;
            onset_is_echo = std::none_of(own_speech.begin(), own_speech.end(), [&](const auto& r) {
              return at >= r.first - 16 * 100 && (r.second < 0 || at < r.second + 16 * 100);
            });
          }
          if (!onset_is_echo) return;
          const std::lock_guard lock(mu);
          if (t == "playback.paused") ++self_paused;
          if (t == "playback.cancelled") ++self_cancelled;
          if (t == "speech_start") ++echo_speech_starts;
        };
        // Sends one 100 ms chunk per tick; meanwhile reads what came. Returns true when `seen`
        // says so; false at `give_up` or when the connection closed (`closed` is then set).
        bool closed = false;
        const auto pump = [&](const std::function<bool(const parley::testing::WsMessage&)>& seen,
                              const std::function<std::string()>& next_chunk,
                              Clock::time_point give_up) {
          for (;;) {
            // A closed connection answers Receive at once: without this the loop would spin.
            if (const auto st = ws.state();
                st == WsClient::State::kClosed || st == WsClient::State::kFailed) {
              closed = true;
              return false;
            }
            if (Clock::now() >= tick) {
              std::string chunk = next_chunk();
              if (!chunk.empty()) ws.SendBinary(std::move(chunk));
              // The tracker's frames of these 100 ms (t: ms since the stream started).
              const int per_tick = full.landmark_fps / 10;
              for (int k = 0; k < per_tick && !face_frames.empty(); ++k) {
                const double t_ms = std::chrono::duration<double, std::milli>(tick - t0).count() +
                                    100.0 * k / per_tick;
                std::string frame = face_frames[face_index++ % face_frames.size()];
                std::memcpy(frame.data() + 1 + 4, &t_ms,
                            sizeof t_ms);  // f64 t after "PLM" + version
                ws.SendBinary(std::move(frame));
              }
              tick += 100ms;
            }
            const auto wait = std::max(Clock::now(), std::min(tick, give_up)) - Clock::now();
            auto m = ws.Receive(std::chrono::duration_cast<std::chrono::milliseconds>(wait) + 1ms);
            if (m) hear(*m);
            if (m && seen(*m)) return true;
            if (Clock::now() >= give_up) return false;
          }
        };
        const auto type_of = [](const parley::testing::WsMessage& m) {
          if (m.binary) return std::string("packet");
          const auto v = parley::core::ParseJson(m.data);
          return v ? (*v)["type"].asString() : std::string();
        };
        // The greeting plays first.
        pump(
            [&](const auto& m) {
              const std::string t = type_of(m);
              self_interruption(t, m);
              return t == "playback.end";
            },
            silence, Clock::now() + 30s);
        for (size_t turn = ci; !closed && Clock::now() < session_until; ++turn) {
          const auto& rec = recordings[turn % recordings.size()];
          const size_t voiced_end = last_voiced[turn % recordings.size()];
          size_t off = 0;
          Clock::time_point voiced_sent{};
          own_speech.emplace_back(mic_samples, -1);
          const auto speak = [&] {
            if (off >= rec.size()) {
              if (own_speech.back().second < 0) own_speech.back().second = mic_samples;
              return silence();
            }
            const size_t n = std::min<size_t>(1600, rec.size() - off);
            if (Clock::now() >= measure_from && Clock::now() < stop_at)
              user_speech_samples += static_cast<int64_t>(n);
            std::string chunk = microphone(rec.data() + off, n);
            off += n;
            // The chunk holding the last voiced sample leaves now (as a microphone's would, once
            // its 100 ms were recorded).
            if (off >= voiced_end && voiced_sent == Clock::time_point{}) voiced_sent = Clock::now();
            return chunk;
          };
          Round r;
          Clock::time_point speech_end_at{};
          bool got_packet = false;
          const bool answered = pump(
              [&](const auto& m) {
                const std::string t = type_of(m);
                if (t == "speech_end" && off >= voiced_end && speech_end_at == Clock::time_point{})
                  speech_end_at = Clock::now();
                if (t == "packet" && voiced_sent != Clock::time_point{} && !got_packet) {
                  got_packet = true;
                  r.v2v_ms =
                      std::chrono::duration<double, std::milli>(m.received - voiced_sent).count();
                }
                if (t == "reply") r.reply = *parley::core::ParseJson(m.data);
                if (t == "error" && m.data.find("asr_overloaded") != std::string::npos) {
                  ++overloaded_turns;
                  if (m.received >= measure_from && m.received < stop_at) ++overloaded_in_window;
                }
                if (t == "playback.start") r.start = *parley::core::ParseJson(m.data);
                self_interruption(t, m);
                return t == "playback.end" && got_packet;
              },
              speak, Clock::now() + std::chrono::milliseconds(rec.size() / 16) + 20s);
          if (speech_end_at != Clock::time_point{} && voiced_sent != Clock::time_point{})
            r.end_of_turn_ms =
                std::chrono::duration<double, std::milli>(speech_end_at - voiced_sent).count();
          r.measured = voiced_sent >= measure_from && voiced_sent < stop_at;
          r.at_s = std::chrono::duration<double>(voiced_sent - measure_from).count();
          const std::lock_guard lock(mu);
          if (!answered && r.measured && !closed) ++missing;
          if (answered && r.measured) ++persona_turns;
          if (answered) rounds.push_back(std::move(r));
          // A breath before the next turn.
          pump([](const auto&) { return false; }, silence, Clock::now() + 400ms);
        }
        if (closed) {
          const uint16_t code = ws.WaitClosed(0ms).value_or(1006);
          std::cerr << ("ws_load: session " + std::to_string(ci) +
                        " closed by the server before the run ended (" + std::to_string(code) +
                        " " + ws.close_reason() + ")\n");
          const std::lock_guard lock(mu);
          ++closed_early[code];
          return;
        }
        if (full.session_s <= 0 || Clock::now() >= stop_at) return;
        // The person leaves: the session ends (its report is built and stored), the next arrives.
        ws.Close();
        ws.WaitClosed(5s);
        const bool ended = seats.end(session_id);
        auto next = seats.create();
        const std::lock_guard lock(mu);
        ++(ended ? sessions_ended : end_failures);
        if (!next) {
          ++connect_failures;
          return;
        }
        session_id = std::move(*next);
      }
    });
  }
  for (auto& t : talkers) t.join();
  const double cpu = window.ServerCpuSeconds();
  const double rss_end = pid > 0 ? RssKib(pid) / 1024.0 : 0;
  std::map<std::string, double> stage_cpu_to;
  double own_cpu = 0;
  if (stage_meter.joinable()) {
    stage_meter.join();
    stage_cpu_to = ThreadCpu(full.base);
    own_cpu = OwnCpuSeconds() - own_cpu_from;
  }
  std::vector<double> v2v, eot, transcript, first_text, first_audio, server_first_packet;
  for (const auto& r : rounds) {
    if (!r.measured) continue;
    v2v.push_back(r.v2v_ms);
    if (r.end_of_turn_ms >= 0) eot.push_back(r.end_of_turn_ms);
    const Json::Value& l = r.reply["latency_ms"];
    if (l["transcript"].isNumeric()) transcript.push_back(l["transcript"].asDouble());
    if (l["first_text"].isNumeric()) first_text.push_back(l["first_text"].asDouble());
    if (l["first_audio"].isNumeric()) first_audio.push_back(l["first_audio"].asDouble());
    if (r.start["reply_latency_ms"].isNumeric())
      server_first_packet.push_back(r.start["reply_latency_ms"].asDouble());
  }
  const auto pct = [](std::vector<double> v, double p) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
  };
  Json::Value out(Json::objectValue);
  out["sessions"] = static_cast<Json::UInt64>(clients.size());
  out["measured_s"] = duration_s;
  out["turns_answered"] = static_cast<Json::UInt64>(v2v.size());
  out["turns_missing_reply"] = missing;
  out["connect_failures"] = connect_failures;
  if (full.session_s > 0) {
    out["session_s"] = full.session_s;
    out["sessions_ended"] = sessions_ended;
    out["session_end_failures"] = end_failures;
  }
  Json::Value& early = out["closed_early_by_code"];
  early = Json::Value(Json::objectValue);
  for (const auto& [code, n] : closed_early) early[std::to_string(code)] = n;
  out["refused_at_capacity"] = full.refused;
  out["refused_without_retry_after"] = full.refused_without_retry_after;
  out["asr_overloaded_errors"] = overloaded_in_window.load();
  out["asr_overloaded_errors_in_warmup"] = overloaded_turns.load() - overloaded_in_window.load();
  out["media"] = full.webm ? "webm" : "pcm";
  out["landmark_fps"] = full.landmark_fps;
  // The share of the window the users were talking (the rest: the persona, pauses).
  out["user_talk_ratio"] = clients.empty() ? 0.0
                                           : static_cast<double>(user_speech_samples.load()) /
                                                 16000.0 /
                                                 (static_cast<double>(clients.size()) * duration_s);
  if (!stage_cpu_to.empty()) {
    // Per session, in cores (CPU seconds per second), by what the server's threads do.
    Json::Value& by = out["server_cores_per_session_by_stage"];
    for (const auto& [group, to] : stage_cpu_to) {
      const double d = to - stage_cpu_from[group];
      if (d > 0.0005 * duration_s)
        by[group] = d / duration_s / static_cast<double>(clients.size());
    }
    out["load_client_cores"] = own_cpu / duration_s;
  }
  if (echo_delay_ms >= 0) {
    Json::Value& e = out["echo"];
    e["delay_ms"] = echo_delay_ms;
    e["attenuation_db"] = echo_db;
    e["persona_turns"] = persona_turns;
    e["self_paused"] = self_paused;
    e["self_cancelled"] = self_cancelled;
    e["speech_starts_while_silent"] = echo_speech_starts;
  }
  out["voice_to_voice_ms"]["p50"] = pct(v2v, 0.5);
  out["voice_to_voice_ms"]["p95"] = pct(v2v, 0.95);
  // The window in quarters: latencies that climb as a long run goes on show here (a soak).
  Json::Value& quarters = out["voice_to_voice_ms_by_quarter"];
  quarters = Json::Value(Json::arrayValue);
  for (int q = 0; q < 4; ++q) {
    std::vector<double> in_quarter;
    for (const auto& r : rounds)
      if (r.measured && static_cast<int>(r.at_s * 4 / duration_s) == q)
        in_quarter.push_back(r.v2v_ms);
    Json::Value slice(Json::objectValue);
    slice["turns"] = static_cast<Json::UInt64>(in_quarter.size());
    slice["p50"] = pct(in_quarter, 0.5);
    slice["p95"] = pct(in_quarter, 0.95);
    quarters.append(slice);
  }
  Json::Value& b = out["breakdown_median_ms"];  // after the turn's last voiced sample
  b["end_of_turn_seen_by_client"] = pct(eot, 0.5);
  b["final_transcript"] = pct(transcript, 0.5);
  b["first_reply_text"] = pct(first_text, 0.5);
  b["first_sentence_synthesized"] = pct(first_audio, 0.5);
  b["first_packet_sent"] = pct(server_first_packet, 0.5);
  Json::Value& b95 = out["breakdown_p95_ms"];
  b95["end_of_turn_seen_by_client"] = pct(eot, 0.95);
  b95["final_transcript"] = pct(transcript, 0.95);
  b95["first_reply_text"] = pct(first_text, 0.95);
  b95["first_sentence_synthesized"] = pct(first_audio, 0.95);
  b95["first_packet_sent"] = pct(server_first_packet, 0.95);
  out["server_cpu_cores"] = cpu / duration_s;
  out["server_cpu_s_per_conversation_minute"] =
      clients.empty() ? 0.0 : cpu / (static_cast<double>(clients.size()) * duration_s / 60.0);
  out["server_rss_mib"] = rss_end;
  out["rss_per_session_mib"] = clients.empty() ? 0.0 : (rss_end - rss_before) / clients.size();
  std::cout << parley::core::ToJson(out) << std::endl;
  for (auto& c : clients)
    if (c) c->Close();
  StopChild(child);
  return 0;
}

// Barge-in: each session asks for a story, and 2 s into its voice (past the interruption
// policy's warm-up) plays one trial into its microphone, in turn: a person's speech (librivox),
// a 150 ms noise burst, a cough-like burst, Flite saying "yeah" and "okay", and a hummed "mhm"
// (tests/support/audio_files.h). Speech must
// pause the voice and then cancel it; the others may pause it but must let it resume and end.
// Times are from the trial's onset (the wall time of its first voiced sample, the microphone
// sending in real time) to the client receiving the pause, the cancel and the utterance's last
// packet.
int RunBargeIn(std::vector<std::shared_ptr<WsClient>>& clients, int warmup_s, int duration_s,
               pid_t pid, pid_t child) {
  struct Trial {
    std::string kind;
    std::vector<int16_t> pcm;
    bool speech = false;
  };
  std::vector<Trial> trials;
  trials.push_back({"speech",
                    parley::testing::DecodeTo16k("/usr/share/pocketsphinx/test/data/librivox/"
                                                 "sense_and_sensibility_01_austen_64kb-0880.wav"),
                    true});
  if (trials[0].pcm.empty()) {
    std::cerr << "ws_load: --barge-in needs pocketsphinx-testdata\n";
    return 2;
  }
  std::mt19937 rng(9);
  std::normal_distribution<double> loud(0, 6000);
  Trial burst{"noise_burst_150ms", std::vector<int16_t>(2400), false};
  for (auto& v : burst.pcm) v = static_cast<int16_t>(std::clamp(loud(rng), -32768.0, 32767.0));
  trials.push_back(burst);
  // A cough: a 250 ms noise burst, low-passed, with a fast attack and an exponential decay.
  Trial cough{"cough", std::vector<int16_t>(4000), false};
  double lp = 0;
  for (size_t i = 0; i < cough.pcm.size(); ++i) {
    lp += 0.25 * (loud(rng) * 2 - lp);
    const double envelope = std::min(1.0, i / 160.0) * std::exp(-static_cast<double>(i) / 1200.0);
    cough.pcm[i] = static_cast<int16_t>(std::clamp(lp * envelope, -32768.0, 32767.0));
  }
  trials.push_back(cough);
  for (const char* word : {"yeah", "okay"})
    trials.push_back({word, parley::testing::FliteSpeak("kal16", word), false});
  // Flite spells "mhm" out ("em aitch em"): a hummed one instead.
  trials.push_back({"mhm_hummed", parley::testing::HummedMhm(120, 1), false});
  const auto first_voiced = [](const std::vector<int16_t>& r) {
    for (size_t off = 0; off + 160 <= r.size(); off += 160) {
      double e = 0;
      for (size_t i = off; i < off + 160; ++i) e += double(r[i]) * r[i];
      if (std::sqrt(e / 160) > 32768 * 0.01) return off;
    }
    return size_t{0};
  };
  struct Outcome {
    size_t trial = 0;
    bool measured = false, too_short = false, paused = false, cancelled = false, resumed = false,
         ended = false;
    double pause_ms = -1, cancel_ms = -1, last_packet_ms = -1;
    std::string cancel_reason;
  };
  std::mutex mu;
  std::vector<Outcome> outcomes;
  MeasuredWindow window(warmup_s, duration_s, pid);
  const auto measure_from = window.from, stop_at = window.until;
  std::vector<std::thread> talkers;
  for (size_t ci = 0; ci < clients.size(); ++ci) {
    talkers.emplace_back([&, ci] {
      WsClient& ws = *clients[ci];
      ws.SendText(R"({"type":"start","media":"pcm","sample_rate":16000})");
      auto tick = Clock::now();
      std::vector<int16_t> queued;  // what the microphone plays next
      size_t queued_at = 0;
      const auto type_of = [](const parley::testing::WsMessage& m) {
        if (m.binary) return std::string("packet");
        const auto v = parley::core::ParseJson(m.data);
        return v ? (*v)["type"].asString() : std::string();
      };
      // Sends one 20 ms chunk per tick (the queued trial, else silence), as a low-latency PCM
      // client does once its 20 ms are recorded, and reads what came; `sent` sees the queue
      // offset each chunk started at and when it left.
      const auto pump = [&](const std::function<bool(const parley::testing::WsMessage&,
                                                     const std::string&)>& seen,
                            Clock::time_point give_up,
                            const std::function<void(size_t, Clock::time_point)>& sent = nullptr) {
        for (;;) {
          if (Clock::now() >= tick) {
            std::string chunk(1 + 640, '\0');
            chunk[0] = '\x02';
            const size_t n = std::min<size_t>(320, queued.size() - queued_at);
            if (n > 0 && sent) sent(queued_at, Clock::now());
            std::memcpy(chunk.data() + 1, queued.data() + queued_at, n * 2);
            queued_at += n;
            ws.SendBinary(chunk);
            tick += 20ms;
          }
          const auto wait = std::max(Clock::now(), std::min(tick, give_up)) - Clock::now();
          auto m = ws.Receive(std::chrono::duration_cast<std::chrono::milliseconds>(wait) + 1ms);
          if (m && seen(*m, type_of(*m))) return true;
          if (Clock::now() >= give_up) return false;
        }
      };
      pump([](const auto&, const std::string& t) { return t == "playback.end"; },
           Clock::now() + 30s);  // the greeting
      for (size_t turn = ci; Clock::now() < stop_at; ++turn) {
        Outcome o;
        o.trial = turn % trials.size();
        const Trial& trial = trials[o.trial];
        ws.SendText(R"({"type":"say","text":"Tell me about a trip you took."})");
        int utterance = -1;
        pump(
            [&](const auto& m, const std::string& t) {
              if (t != "playback.start") return false;
              utterance = (*parley::core::ParseJson(m.data))["utterance"].asInt();
              return true;
            },
            Clock::now() + 20s);
        if (utterance < 0) break;
        bool ended = false;
        const auto watch_end = [&](const auto& m, const std::string& t) {
          if (t == "playback.end" &&
              (*parley::core::ParseJson(m.data))["utterance"].asInt() == utterance)
            ended = true;
          return ended;
        };
        pump(watch_end, Clock::now() + 2000ms);
        if (ended) {
          o.too_short = true;
          const std::lock_guard lock(mu);
          outcomes.push_back(o);
          continue;
        }
        queued = trial.pcm;
        queued_at = 0;
        const size_t voiced = first_voiced(trial.pcm);
        Clock::time_point onset{};
        const auto sent = [&](size_t offset, Clock::time_point at) {
          // The chunk left once recorded: its first sample was spoken 20 ms before.
          if (onset == Clock::time_point{} && voiced < offset + 320)
            onset = at - 20ms +
                    std::chrono::microseconds(
                        (static_cast<int64_t>(voiced) - static_cast<int64_t>(offset)) * 1000 / 16);
        };
        const auto since = [&](Clock::time_point t) {
          return std::chrono::duration<double, std::milli>(t - onset).count();
        };
        Clock::time_point last_packet{};
        pump(
            [&](const auto& m, const std::string& t) {
              if (t == "packet") {
                const auto b = [&](size_t k) { return static_cast<uint8_t>(m.data[k]); };
                if (m.data.size() > 11 && (b(9) << 8 | b(10)) == utterance)
                  last_packet = m.received;
                return false;
              }
              if (onset == Clock::time_point{}) return watch_end(m, t);
              if (t == "playback.paused" && !o.paused) {
                o.paused = true;
                o.pause_ms = since(m.received);
              }
              if (t == "playback.resumed") o.resumed = true;
              if (t == "playback.cancelled") {
                o.cancel_reason = (*parley::core::ParseJson(m.data))["reason"].asString();
                o.cancelled = true;
                o.cancel_ms = since(m.received);
                return true;
              }
              return watch_end(m, t);
            },
            Clock::now() + 40s, sent);
        o.ended = ended;
        if (onset != Clock::time_point{} && last_packet != Clock::time_point{})
          o.last_packet_ms = since(last_packet);
        o.measured = onset >= measure_from && onset < stop_at;
        // The user finishes what they were saying, and the answer to it plays out, before the
        // next trial.
        bool answered = false;
        const auto answer_end = [&](const auto&, const std::string& t) {
          answered = answered || t == "playback.end";
          return answered && queued_at >= queued.size();
        };
        pump(answer_end, Clock::now() + 30s);
        queued.clear();
        queued_at = 0;
        pump([](const auto&, const std::string&) { return false; }, Clock::now() + 500ms);
        const std::lock_guard lock(mu);
        outcomes.push_back(o);
      }
    });
  }
  for (auto& t : talkers) t.join();
  const double cpu = window.ServerCpuSeconds();
  Json::Value out(Json::objectValue);
  out["sessions"] = static_cast<Json::UInt64>(clients.size());
  out["measured_s"] = duration_s;
  std::vector<double> pause, cancel, last;
  Json::Value& by_kind = out["trials"];
  int too_short = 0;
  for (const auto& o : outcomes) {
    if (o.too_short) ++too_short;
    if (!o.measured) continue;
    const Trial& t = trials[o.trial];
    Json::Value& k = by_kind[t.kind];
    k["count"] = k["count"].asInt() + 1;
    k["paused"] = k["paused"].asInt() + (o.paused ? 1 : 0);
    k["cancelled"] = k["cancelled"].asInt() + (o.cancelled ? 1 : 0);
    if (o.cancelled)
      k["cancel_reasons"][o.cancel_reason] = k["cancel_reasons"][o.cancel_reason].asInt() + 1;
    k["resumed"] = k["resumed"].asInt() + (o.resumed ? 1 : 0);
    k["played_to_end"] = k["played_to_end"].asInt() + (o.ended ? 1 : 0);
    if (!t.speech) continue;
    if (o.pause_ms >= 0) pause.push_back(o.pause_ms);
    if (o.cancel_ms >= 0) cancel.push_back(o.cancel_ms);
    if (o.cancelled && o.last_packet_ms >= 0) last.push_back(o.last_packet_ms);
  }
  out["replies_too_short_for_a_trial"] = too_short;
  out["speech_onset_to_paused_ms"]["p50"] = Percentile(pause, 0.5);
  out["speech_onset_to_paused_ms"]["p95"] = Percentile(pause, 0.95);
  out["speech_onset_to_last_packet_ms"]["p50"] = Percentile(last, 0.5);
  out["speech_onset_to_last_packet_ms"]["p95"] = Percentile(last, 0.95);
  out["speech_onset_to_cancelled_ms"]["p50"] = Percentile(cancel, 0.5);
  out["speech_onset_to_cancelled_ms"]["p95"] = Percentile(cancel, 0.95);
  out["server_cpu_cores"] = cpu / duration_s;
  std::cout << parley::core::ToJson(out) << std::endl;
  for (auto& c : clients) c->Close();
  StopChild(child);
  return 0;
}

// Short media sessions one after another (create, connect, start, stream a recording as fast
// as the server takes it, end), each kind and ending in turn; the server's descriptors, memory
// and live pipelines from its /metrics at the start, after a warm-up and at each quarter.
// A per-session leak grows these linearly.
int RunSoak(int sessions, const std::string& webm_file, const std::string& base, int port,
            const parley::testing::Headers& auth, pid_t child) {
  std::ifstream in(webm_file, std::ios::binary);
  const std::string webm((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (webm.empty()) {
    std::cerr << "ws_load: --soak needs a readable --media WebM\n";
    return 2;
  }
  std::string pcm(32000 * 3, '\0');  // 3 s at 16 kHz of a 220 Hz tone
  for (size_t i = 0; i < pcm.size() / 2; ++i) {
    const auto v = static_cast<int16_t>(6000 * std::sin(2 * M_PI * 220 * i / 16000.0));
    std::memcpy(pcm.data() + 2 * i, &v, 2);
  }
  const auto checkpoint = [&](int done) {
    const std::string m = Http("GET", base + "/metrics").body;
    Json::Value row(Json::objectValue);
    row["sessions_done"] = done;
    row["open_fds"] = MetricValue(m, "process_open_fds");
    row["rss_mib"] = MetricValue(m, "process_resident_memory_bytes") / (1 << 20);
    row["ingest_pipelines_alive"] = MetricValue(m, "parley_media_pipelines{kind=\"ingest\"}");
    row["sessions_in_memory"] = MetricValue(m, "parley_sessions{state=\"ended\"}") +
                                MetricValue(m, "parley_sessions{state=\"live\"}");
    std::cout << parley::core::ToJson(row) << std::endl;
  };
  WsHub hub;
  const auto t0 = Clock::now();
  int failures = 0;
  checkpoint(0);
  for (int i = 0; i < sessions; ++i) {
    const auto r = Http("POST", base + "/api/sessions", R"({"persona_id":"seoa"})", auth);
    if (r.status != 201) {
      std::cerr << "ws_load: cannot create a session: " << r.status << " " << r.body << "\n";
      return 1;
    }
    const std::string id = r.JsonBody()["session_id"].asString();
    auto ws = hub.Connect(port, "/ws/practice?session=" + id, auth);
    if (!ws->WaitOpen(10s)) {
      ++failures;
      continue;
    }
    const bool use_pcm = i % 3 == 2;  // two WebM A/V sessions, then one PCM session
    ws->SendText(use_pcm ? R"({"type":"start","media":"pcm","sample_rate":16000})"
                         : R"({"type":"start","media":"webm"})");
    ws->ReceiveType("started", 10s);
    const std::string& bytes = use_pcm ? pcm : webm;
    // Every other session ends mid-stream without a stop.
    const bool stop_first = (i / 3) % 2 == 0;
    const size_t upto = stop_first ? bytes.size() : bytes.size() / 2;
    for (size_t off = 0; off < upto; off += 16000)
      ws->SendBinary((use_pcm ? "\x02" : "\x01") +
                     bytes.substr(off, std::min<size_t>(16000, upto - off)));
    if (stop_first) {
      ws->SendText(R"({"type":"stop"})");
      ws->ReceiveType("stopped", 20s);
    }
    const auto end = Http("POST", base + "/api/sessions/" + id + "/end", "", auth, 60s);
    if (end.status != 200) ++failures;
    ws->WaitClosed(5s);
    const int done = i + 1;
    if (done == std::min(10, sessions) || done % std::max(1, sessions / 4) == 0 || done == sessions)
      checkpoint(done);
  }
  Json::Value out(Json::objectValue);
  out["sessions"] = sessions;
  out["failures"] = failures;
  out["seconds"] = std::chrono::duration<double>(Clock::now() - t0).count();
  std::cout << parley::core::ToJson(out) << std::endl;
  StopChild(child);
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string spawn;
  int port = 0;
  int pid_arg = 0;
  int connections = 100;
  double rate = 30;
  int duration_s = 60;
  int warmup_s = 3;
  int hubs = 2;
  std::string token;
  std::string secret = parley::testing::kTestSecret;
  std::string endpoint = "landmarks";
  std::string media_file;
  double media_seconds = 0;
  int chunk_ms = 250;
  bool faces = false;
  bool no_sessions = false;
  bool binary_frames = false;

  CLI::App cli{"Parley WebSocket load client"};
  cli.add_option("--spawn", spawn, "Path of a parley binary to start on a free port");
  cli.add_option("--port", port, "Port of a running parley (instead of --spawn)");
  cli.add_option("--pid", pid_arg, "PID of the running parley, for CPU figures");
  cli.add_option("--token", token, "Bearer token for a running parley (default: minted)");
  cli.add_option("--secret", secret, "JWT secret used to mint tokens")->capture_default_str();
  cli.add_option("--connections,-n", connections, "Connections")->capture_default_str();
  cli.add_option("--rate", rate, "Frames per second per connection")->capture_default_str();
  cli.add_option("--duration", duration_s, "Measured seconds")->capture_default_str();
  cli.add_option("--warmup", warmup_s, "Seconds before measuring")->capture_default_str();
  cli.add_option("--hubs", hubs, "Client service threads")->capture_default_str();
  cli.add_option("--endpoint", endpoint, "landmarks or practice")->capture_default_str();
  cli.add_option("--media", media_file,
                 "Stream this WebM at real time on /ws/practice instead of landmark frames");
  cli.add_option("--media-seconds", media_seconds, "Duration of the --media file in seconds");
  cli.add_option("--chunk-ms", chunk_ms, "MediaRecorder timeslice: one message per this many ms")
      ->capture_default_str();
  cli.add_flag("--faces", faces,
               "Send synthetic faces (one session per connection, t = send time) and measure "
               "the latency of the server's scores messages");
  cli.add_flag("--binary", binary_frames,
               "With --faces: send binary landmark frames (kind 0x03, float32) instead of JSON");
  bool speech = false;
  cli.add_flag("--speech", speech,
               "Each connection streams human speech (librivox, 1-3 s pauses) as PCM in real "
               "time; reports speech_end -> transcript.final latency. The spawned server takes "
               "PARLEY_ASR_* from the environment (e.g. PARLEY_ASR_PARTIALS=false)");
  cli.add_flag("--no-sessions", no_sessions,
               "Connect straight to /ws/<endpoint> without creating sessions (another server, "
               "e.g. bench/python_seed); frames per CPU second then count frames sent");
  int echo_delay_ms = -1;
  double echo_db = 6;
  cli.add_option("--echo-delay-ms", echo_delay_ms,
                 "With --conversation: each client plays the persona's voice back into its "
                 "microphone this much later (a speakerphone) and counts self-interruptions");
  cli.add_option("--echo-db", echo_db, "How much quieter the echo comes back (dB)");
  bool conversation = false;
  bool barge_in = false;
  cli.add_flag("--barge-in", barge_in,
               "Each session asks for a story and talks over it (speech, noise, a cough, "
               "backchannels): barge-in reaction times and false cancels");
  cli.add_flag("--conversation", conversation,
               "Each connection holds a spoken conversation with the persona (librivox turns as "
               "real-time PCM, waiting for each reply's voice); reports voice-to-voice latency "
               "with the server's breakdown, CPU per conversation-minute and memory per session");
  bool webm_audio = false;
  cli.add_flag("--webm", webm_audio,
               "With --conversation: the microphone as WebM/Opus (a browser's MediaRecorder) "
               "instead of PCM");
  int landmark_fps = 0;
  cli.add_option("--landmark-fps", landmark_fps,
                 "With --conversation: each session's face tracker also sends this many landmark "
                 "frames per second (30: the page's face mesh)");
  double session_minutes = 0;
  cli.add_option("--session-minutes", session_minutes,
                 "With --conversation: each person practises this long, then the session ends "
                 "(its report is written) and a new one takes the seat (0: one for the run)");
  double ramp_s = 0;
  cli.add_option("--ramp", ramp_s,
                 "With --conversation: sessions start one by one over this many seconds (people "
                 "arriving), not all at once")
      ->capture_default_str();
  int soak = 0;
  cli.add_option("--soak", soak,
                 "Run this many short media sessions back to back (--media WebM; every third "
                 "PCM; ended with and without stop) and report the server's open descriptors, "
                 "memory and live pipelines as they go");
  std::vector<std::string> server_args;
  cli.add_option("--server-arg", server_args,
                 "Extra argument for the spawned server (repeat: --server-arg=--asr=false)");
  CLI11_PARSE(cli, argc, argv);

  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);
  signal(SIGPIPE, SIG_IGN);

  Child child;
  if (!spawn.empty()) {
    child = Spawn(spawn, secret, connections, server_args);
    if (child.port == 0) {
      std::cerr << "ws_load: the spawned server did not start\n";
      return 1;
    }
    port = child.port;
    pid_arg = child.pid;
  }
  if (port == 0) {
    std::cerr << "ws_load: give --spawn or --port\n";
    return 2;
  }
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  if (token.empty()) token = parley::testing::MintToken("bench", 24 * 3600, secret);
  const parley::testing::Headers auth = {{"Authorization", "Bearer " + token}};
  if (soak > 0) return RunSoak(soak, media_file, base, port, auth, child.pid);

  // One session per 50 landmark connections (several trackers per practice session); one
  // session per connection when streaming media.
  const int per_session =
      media_file.empty() && !faces && !speech && !conversation && !barge_in ? 50 : 1;
  if (!media_file.empty() || speech || conversation || barge_in) endpoint = "practice";
  SpeechLog speech_log;
  std::vector<std::string> sessions;
  // Conversations past the server's capacity are refused (503 at_capacity with Retry-After):
  // counted, and the rest go on, as a load balancer would send them elsewhere.
  int refused = 0, refused_without_retry_after = 0;
  for (int i = 0; !no_sessions && i < (connections + per_session - 1) / per_session; ++i) {
    const auto r = Http("POST", base + "/api/sessions", R"({"persona_id":"seoa"})", auth);
    if (conversation && r.status == 503 &&
        r.JsonBody()["error"]["code"].asString() == "at_capacity") {
      ++refused;
      if (r.Header("retry-after").empty()) ++refused_without_retry_after;
      continue;
    }
    if (r.status != 201) {
      std::cerr << "ws_load: cannot create a session: " << r.status << " " << r.body << "\n";
      return 1;
    }
    sessions.push_back(r.JsonBody()["session_id"].asString());
  }
  if (refused > 0) {
    std::cerr << "ws_load: " << refused << " of " << connections
              << " conversations refused at capacity\n";
    connections -= refused;
  }

  std::vector<std::unique_ptr<WsHub>> hub_list;
  for (int i = 0; i < std::max(1, hubs); ++i) hub_list.push_back(std::make_unique<WsHub>());
  if (conversation && no_sessions) {
    std::cerr << "ws_load: --conversation needs sessions (drop --no-sessions)\n";
    return 2;
  }
  if (conversation) {
    // Each conversation connects when its person arrives (--ramp), not all up front.
    Seats seats;
    seats.sessions = sessions;
    seats.connect = [&](size_t seat, const std::string& session) {
      return hub_list[seat % hub_list.size()]->Connect(port, "/ws/practice?session=" + session,
                                                       auth);
    };
    seats.end = [&](const std::string& session) {
      const auto r = Http("POST", base + "/api/sessions/" + session + "/end", "{}", auth);
      if (r.status != 200)
        std::cerr << ("ws_load: ending " + session + ": " + std::to_string(r.status) + " " +
                      r.body + "\n");
      return r.status == 200;
    };
    seats.create = [&]() -> std::optional<std::string> {
      const auto r = Http("POST", base + "/api/sessions", R"({"persona_id":"seoa"})", auth);
      if (r.status == 201) return r.JsonBody()["session_id"].asString();
      std::cerr << ("ws_load: a new session: " + std::to_string(r.status) + " " + r.body + "\n");
      return std::nullopt;
    };
    FullSession full{webm_audio, landmark_fps, base, ramp_s, refused, refused_without_retry_after};
    full.session_s = session_minutes * 60;
    return RunConversation(seats, warmup_s, duration_s, pid_arg, child.pid, echo_delay_ms, echo_db,
                           full);
  }
  std::mutex rtt_mu;
  std::vector<double> rtts_ms;
  std::vector<double> scores_ms;  // scores latency: arrival - send time of the frame it covers
  const auto start = Clock::now();
  std::atomic<bool> measuring{false};
  std::atomic<uint64_t> received{0};
  std::vector<std::shared_ptr<WsClient>> clients;
  for (int i = 0; i < connections; ++i) {
    auto c = hub_list[static_cast<size_t>(i) % hub_list.size()]->Connect(
        port,
        no_sessions
            ? "/ws/" + endpoint
            : "/ws/" + endpoint + "?session=" + sessions[static_cast<size_t>(i / per_session)],
        auth);
    if (!barge_in)
      c->SetOnMessage([&, i](const parley::testing::WsMessage& m) {
        ++received;
        if (speech) {
          speech_log.OnMessage(static_cast<size_t>(i), m);
          return;
        }
        if (faces && !m.binary && measuring && m.data.find("\"scores\"") != std::string::npos) {
          const auto v = parley::core::ParseJson(m.data);
          if (v && (*v)["frame_t"].isNumeric()) {
            const double now_ms =
                std::chrono::duration<double, std::milli>(Clock::now() - start).count();
            const std::lock_guard lock(rtt_mu);
            scores_ms.push_back(now_ms - (*v)["frame_t"].asDouble());
          }
          return;
        }
        if (m.binary || m.data.find("\"pong\"") == std::string::npos) return;
        const auto v = parley::core::ParseJson(m.data);
        if (!v || !(*v)["id"].isInt64()) return;
        const double sent_us = static_cast<double>((*v)["id"].asInt64());
        const double now_us = static_cast<double>(
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch())
                .count());
        if (measuring) {
          const std::lock_guard lock(rtt_mu);
          rtts_ms.push_back((now_us - sent_us) / 1000.0);
        }
      });
    clients.push_back(std::move(c));
  }
  int open = 0;
  for (auto& c : clients) open += c->WaitOpen(20s) ? 1 : 0;
  if (open != connections) {
    std::cerr << "ws_load: only " << open << " of " << connections << " connections opened\n";
    return 1;
  }

  if (barge_in) return RunBargeIn(clients, warmup_s, duration_s, pid_arg, child.pid);
  if (speech) {
    const char* partials = std::getenv("PARLEY_ASR_PARTIALS");
    return RunSpeech(clients, warmup_s, duration_s, base, pid_arg, child.pid, speech_log,
                     partials == nullptr || std::string(partials) != "false");
  }
  if (!media_file.empty()) {
    return RunMedia(clients, media_file, media_seconds, chunk_ms, warmup_s, duration_s, base,
                    pid_arg, child.pid);
  }

  std::mt19937 rng(42);
  std::vector<std::string> frames;
  if (faces) {
    // Everything after "t": a 20 s synthetic person, cycled; t is added at send time.
    parley::testing::GeneratorConfig g;
    g.seed = 11;
    g.duration_s = 20;
    g.no_face = false;
    for (const auto& f : parley::testing::GenerateSession(g).frames) {
      if (binary_frames) {
        frames.push_back("\x03" + parley::vision::EncodeBinaryFrame(f));
        continue;
      }
      std::string body = ",\"width\":640,\"height\":480,\"landmarks\":[";
      char buf[64];
      for (size_t i = 0; i < f.points.size(); ++i) {
        std::snprintf(buf, sizeof buf, "%s[%.5f,%.5f,%.5f]", i ? "," : "", f.points[i].x,
                      f.points[i].y, f.points[i].z);
        body += buf;
      }
      frames.push_back(body + "]}");
    }
  } else {
    for (int i = 0; i < 16; ++i) frames.push_back(LandmarkFrame(rng, i * 33.3));
  }
  const size_t frame_bytes = frames[0].size();
  const std::string series_analysed = "parley_landmark_frames_total{outcome=\"analysed\"}";
  const std::string series_dropped = "parley_landmark_frames_total{outcome=\"rejected\"}";
  double analysed_before = 0, dropped_before = 0;

  const std::string series_in =
      "parley_ws_messages_total{endpoint=\"" + endpoint + "\",direction=\"in\"}";
  double msgs_before = 0, cpu_before = 0;
  Clock::time_point measure_start;
  const auto period = std::chrono::duration<double>(1.0 / rate);
  const auto stop_at = start + std::chrono::seconds(warmup_s + duration_s);
  uint64_t tick = 0;
  uint64_t sent = 0;
  uint64_t sent_measured = 0;
  while (Clock::now() < stop_at) {
    const auto next =
        start + std::chrono::duration_cast<Clock::duration>(period * static_cast<double>(tick));
    std::this_thread::sleep_until(next);
    if (!measuring && Clock::now() >= start + std::chrono::seconds(warmup_s)) {
      const std::string m = Http("GET", base + "/metrics").body;
      msgs_before = MetricValue(m, series_in);
      analysed_before = MetricValue(m, series_analysed);
      dropped_before = MetricValue(m, series_dropped);
      cpu_before = pid_arg > 0 ? CpuSeconds(pid_arg) : 0;
      measure_start = Clock::now();
      measuring = true;
    }
    const bool ping_tick = tick % static_cast<uint64_t>(std::max(1.0, rate)) == 0;
    char t_field[48];
    const double now_t =
        std::round(std::chrono::duration<double, std::milli>(Clock::now() - start).count() * 10) /
        10;
    std::snprintf(t_field, sizeof t_field, "{\"t\":%.1f", now_t);
    for (size_t i = 0; i < clients.size(); ++i) {
      if (measuring) ++sent_measured;
      if (faces && binary_frames) {
        std::string frame = frames[(tick + i * 37) % frames.size()];
        std::memcpy(frame.data() + 1 + 4, &now_t, sizeof now_t);  // f64 t after "PLM" + version
        clients[i]->SendBinary(std::move(frame));
      } else if (faces) {
        clients[i]->SendText(t_field + frames[(tick + i * 37) % frames.size()]);
      } else
        clients[i]->SendText(frames[tick % frames.size()]);
      ++sent;
      if (ping_tick) {
        const auto us =
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch())
                .count();
        clients[i]->SendText("{\"type\":\"ping\",\"id\":" + std::to_string(us) + "}");
      }
    }
    ++tick;
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - measure_start).count();
  const std::string metrics_after = Http("GET", base + "/metrics").body;
  const double msgs_after = MetricValue(metrics_after, series_in);
  const double analysed = MetricValue(metrics_after, series_analysed) - analysed_before;
  const double dropped = MetricValue(metrics_after, series_dropped) - dropped_before;
  const double cpu_after = pid_arg > 0 ? CpuSeconds(pid_arg) : 0;
  const long rss = pid_arg > 0 ? RssKib(pid_arg) : 0;
  measuring = false;

  std::vector<double> r, sc;
  {
    const std::lock_guard lock(rtt_mu);
    r = rtts_ms;
    sc = scores_ms;
  }
  std::sort(sc.begin(), sc.end());
  std::sort(r.begin(), r.end());
  auto pct = [&](double p) {
    return r.empty()
               ? 0.0
               : r[std::min(r.size() - 1, static_cast<size_t>(p * static_cast<double>(r.size())))];
  };
  const double msgs = msgs_after - msgs_before;
  const double cpu = cpu_after - cpu_before;
  Json::Value out(Json::objectValue);
  out["connections"] = connections;
  out["rate_per_connection"] = rate;
  out["frame_bytes"] = static_cast<Json::UInt64>(frame_bytes);
  out["measured_s"] = elapsed;
  out["offered_msgs_per_s"] = connections * (rate + 1.0);
  out["server_msgs_per_s"] = msgs / elapsed;
  out["server_cpu_s_per_10k_msgs"] = msgs > 0 ? cpu / msgs * 10000.0 : 0.0;
  out["server_cpu_cores"] = cpu / elapsed;
  out["server_rss_mib"] = static_cast<double>(rss) / 1024.0;
  out["rtt_samples"] = static_cast<Json::UInt64>(r.size());
  out["rtt_p50_ms"] = pct(0.50);
  out["rtt_p99_ms"] = pct(0.99);
  out["rtt_max_ms"] = r.empty() ? 0.0 : r.back();
  if (faces) {
    const auto spct = [&](double p) {
      return sc.empty() ? 0.0
                        : sc[std::min(sc.size() - 1,
                                      static_cast<size_t>(p * static_cast<double>(sc.size())))];
    };
    out["frames_analysed_per_s"] = analysed / elapsed;
    out["frames_rejected_per_s"] = dropped / elapsed;
    const double frames_done = no_sessions ? static_cast<double>(sent_measured) : analysed;
    out["server_cpu_s_per_10k_frames"] = frames_done > 0 ? cpu / frames_done * 10000.0 : 0.0;
    out["frames_per_cpu_s"] = cpu > 0 ? frames_done / cpu : 0.0;
    out["scores_samples"] = static_cast<Json::UInt64>(sc.size());
    out["scores_p50_ms"] = spct(0.50);
    out["scores_p99_ms"] = spct(0.99);
    out["scores_max_ms"] = sc.empty() ? 0.0 : sc.back();
  }
  std::cout << parley::core::ToJson(out) << std::endl;

  for (auto& c : clients) c->Close();
  for (auto& c : clients) c->WaitClosed(5s);
  StopChild(child.pid);
  return 0;
}
