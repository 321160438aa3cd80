// Reports end to end: built when a session ends, stored, downloaded by their owner only, and
// never lost (MongoDB outages, SIGTERM, a killed process).
#include <gtest/gtest.h>
#include <mongoc/mongoc.h>
#include <signal.h>

#include <thread>

#include "tests/support/child.h"
#include "tests/support/fake_openai.h"
#include "tests/support/mongo_server.h"
#include "tests/support/storm.h"
#include "tests/support/test_server.h"

namespace parley::testing {
namespace {

using namespace std::chrono_literals;

int64_t CountIn(const std::string& uri, const std::string& db, const char* coll,
                const std::string& session_id = {}) {
  mongoc_init();
  mongoc_client_t* client = mongoc_client_new(uri.c_str());
  mongoc_collection_t* c = mongoc_client_get_collection(client, db.c_str(), coll);
  bson_t* filter =
      session_id.empty() ? bson_new() : BCON_NEW("session_id", BCON_UTF8(session_id.c_str()));
  bson_error_t e;
  const int64_t n = mongoc_collection_count_documents(c, filter, nullptr, nullptr, nullptr, &e);
  bson_destroy(filter);
  mongoc_collection_destroy(c);
  mongoc_client_destroy(client);
  return n;
}

// Waits (up to `limit`) until the server's spool of writes MongoDB has not taken is empty.
void WaitForEmptySpool(int port, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline &&
         Http("GET", "http://127.0.0.1:" + std::to_string(port) + "/health")
                 .JsonBody()["dependencies"]["store"]["spool_depth"]
                 .asInt() > 0)
    std::this_thread::sleep_for(100ms);
}

// A report as BuildReport leaves it before scoring, with the given metrics and feedback.
Json::Value Measured(const std::string& metrics, const std::string& feedback = "{}") {
  Json::Value r(Json::objectValue);
  r["session_id"] = "s1";
  r["duration_s"] = 300;
  r["metrics"] = *core::ParseJson(metrics);
  r["feedback"] = *core::ParseJson(feedback);
  return r;
}

TEST(Scores, WithoutTheirInputsScoresAreNullAndSayWhy) {
  Json::Value r = Measured(R"({"speech": {"speech_s": 2}, "turns": 1})",
                           R"({"concentration": 80, "posture": 90})");
  session::ScoreReport(&r);
  const Json::Value& fb = r["feedback"];
  for (const char* s : {"tone", "initiative", "likability"}) {
    EXPECT_FALSE(fb.isMember(s) && !fb[s].isNull()) << s;
    EXPECT_FALSE(fb["feedback_details"][s]["reason"].asString().empty()) << s;
  }
  // 0.25 of the total's weight was measured: too little for a total.
  EXPECT_TRUE(fb["total_score"].isNull());
  EXPECT_FALSE(fb["feedback_details"]["total_score"]["reason"].asString().empty());
  EXPECT_NE(fb["summary"].asString().find("Too little"), std::string::npos);
}

TEST(Scores, TheTotalIsOverTheScoresMeasuredAndNamesTheRest) {
  Json::Value r = Measured(
      R"({"speech": {"speech_s": 60, "pitch_std_semitones": 3}, "turns": 10,
          "speaking_rate_wpm": 150, "volume_db": {"mean": -20, "std": 3}, "filler_words": 0,
          "questions_asked": 3,
          "conversation": {"persona_turns": 10, "user_share_of_speech": 0.5,
                           "user_turns": {"opened": 5, "questions_about_persona": 2,
                                          "positive_words": 5, "negative_words": 0}}})");
  session::ScoreReport(&r);
  const Json::Value& fb = r["feedback"];
  EXPECT_EQ(fb["tone"].asInt(), 100);
  EXPECT_EQ(fb["initiative"].asInt(), 100);
  // No response latency or interruption count: likability is over its other two parts.
  EXPECT_EQ(fb["likability"].asInt(), 100);
  EXPECT_EQ(fb["feedback_details"]["likability"]["missing"].size(), 2u);
  EXPECT_EQ(fb["total_score"].asInt(), 100);
  EXPECT_EQ(fb["feedback_details"]["total_score"]["missing"].size(), 3u);  // the vision three
  // Nothing weak: the tips say what went well, with its number.
  ASSERT_FALSE(r["tips"].empty());
  EXPECT_NE(r["tips"][0].asString().find("3 in 10 turns"), std::string::npos)
      << core::ToJson(r["tips"]);

  // Fillers, and fewer questions: lower scores, and tips that say so.
  Json::Value worse = r;
  worse["metrics"]["filler_words"] = 8;
  worse["metrics"]["questions_asked"] = 1;
  session::ScoreReport(&worse);
  EXPECT_LT(worse["feedback"]["tone"].asInt(), fb["tone"].asInt());
  EXPECT_LT(worse["feedback"]["initiative"].asInt(), fb["initiative"].asInt());
  const std::string tips = core::ToJson(worse["tips"]);
  EXPECT_NE(tips.find("You asked 1 question in 10 turns"), std::string::npos) << tips;
  EXPECT_NE(tips.find("8 filler words (8.0 per minute"), std::string::npos) << tips;
}

TEST(Report, EndingASessionStoresAFullReportOwnerCanDownload) {
  TestServer s;
  WsHub hub;
  const std::string id = s.CreateSession("alice", "daniel");
  auto ws = s.Join(hub, "practice", id, "alice");
  ASSERT_EQ(ws->state(), WsClient::State::kOpen);
  // Something an analyser would contribute, to see it land in the report.
  auto session = s.app().sessions().Find(id);
  ASSERT_TRUE(session);
  session->MergeReport(Json::Value(Json::objectValue));
  session->timeline().AddSample(1500, [] {
    Json::Value v(Json::objectValue);
    v["mic_level_db"] = -31.5;
    return v;
  }());
  session->timeline().AddTurn({"user", "hello there", 1200, 2100, Json::Value()});

  auto live = Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice"));
  EXPECT_EQ(live.status, 409);
  EXPECT_EQ(live.JsonBody()["error"]["code"].asString(), "report_not_ready");

  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  auto ended = ws->ReceiveType("session_ended");
  ASSERT_TRUE(ended);
  EXPECT_EQ((*ended)["report"].asString(), "/api/sessions/" + id + "/report");

  const auto r = Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice"));
  ASSERT_EQ(r.status, 200) << r.body;
  const auto report = r.JsonBody();
  EXPECT_EQ(report["session_id"].asString(), id);
  EXPECT_EQ(report["user_id"].asString(), "alice");
  EXPECT_EQ(report["persona_id"].asString(), "daniel");
  EXPECT_EQ(report["schema_version"].asInt(), 2);
  EXPECT_TRUE(report["started_at"].isString());
  EXPECT_TRUE(report["ended_at"].isString());
  EXPECT_TRUE(report["duration_s"].isDouble());
  // Nothing analysed this session: every score and metric is null and named, none invented.
  for (const char* f : {"likability", "initiative", "tone", "concentration", "gaze_stability",
                        "blinking", "posture", "expression", "expression_score", "total_score"})
    EXPECT_TRUE(report["feedback"][f].isNull()) << f;
  EXPECT_TRUE(report["feedback"]["summary"].isString());
  for (const char* f :
       {"blinks", "blink_rate_per_min", "gaze_on_screen_ratio", "head_pose_deg", "smile_ratio",
        "face_visible_ratio", "speaking_rate_wpm", "pitch_hz", "volume_db", "talk_ratio", "turns",
        "questions_asked", "filler_words", "longest_pause_s", "response_latency_s"})
    EXPECT_TRUE(report["metrics"].isMember(f) && report["metrics"][f].isNull()) << f;
  std::set<std::string> missing;
  for (const auto& m : report["not_measured"]) missing.insert(m.asString());
  EXPECT_TRUE(missing.count("feedback.total_score"));
  EXPECT_TRUE(missing.count("metrics.blinks"));
  ASSERT_EQ(report["transcript"].size(), 1u);
  EXPECT_EQ(report["transcript"][0]["text"].asString(), "hello there");
  EXPECT_EQ(report["transcript"][0]["t_start"].asInt(), 1200);
  ASSERT_EQ(report["timeline"].size(), 1u);
  EXPECT_EQ(report["timeline"][0]["t"].asInt(), 1);
  EXPECT_TRUE(report["tips"].isArray());

  const auto dl =
      Http("GET", s.Url("/api/sessions/" + id + "/report?download=1"), "", s.Auth("alice"));
  EXPECT_EQ(dl.status, 200);
  EXPECT_EQ(dl.Header("content-disposition"), "attachment; filename=parley-report-" + id + ".json");
  EXPECT_EQ(dl.body, r.body);
  // The session list (now read from the store) shows it ended.
  const auto list = Http("GET", s.Url("/api/sessions"), "", s.Auth("alice")).JsonBody();
  ASSERT_EQ(list["total"].asInt(), 1);
  EXPECT_EQ(list["sessions"][0]["state"].asString(), "ended");
}

TEST(Report, DownloadsAsCsvTimelineAndPrintableHtmlWithEscapedText) {
  TestServer s;
  const std::string id = s.CreateSession("alice", "seoa");
  WsHub hub;
  auto ws = s.Join(hub, "practice", id, "alice");
  ASSERT_EQ(ws->state(), WsClient::State::kOpen);
  auto session = s.app().sessions().Find(id);
  for (int t = 0; t < 3; ++t) {
    Json::Value v(Json::objectValue);
    v["gaze_on_screen_ratio"] = 0.5 + 0.1 * t;
    if (t != 1) v["note"] = "a,\"b\"";
    session->timeline().AddSample(t * 1000 + 10, v);
  }
  session->timeline().AddTurn({"user", "<script>alert(1)</script>", 100, 900, Json::Value()});
  session->timeline().AddTurn({"assistant", "Well, how \"fun\" is that?", 1500, 3700,
                               *core::ParseJson(R"({"played_ms": 2200, "interrupted": true})")});
  session->timeline().AddTurn(
      {"user", "what do you do", 4000, 6000, *core::ParseJson(R"({"confidence": 0.87})")});
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);

  const auto csv =
      Http("GET", s.Url("/api/sessions/" + id + "/report.csv?download=1"), "", s.Auth("alice"));
  ASSERT_EQ(csv.status, 200) << csv.body;
  EXPECT_EQ(csv.Header("content-type"), "text/csv; charset=utf-8");
  EXPECT_EQ(csv.Header("content-disposition"), "attachment; filename=parley-report-" + id + ".csv");
  // The documented columns always, in order, and an extra one after them; a row for every
  // second up to the last turn, with the share of it each side spoke.
  EXPECT_EQ(csv.body,
            "t_s,gaze_on_screen_ratio,blink_rate_per_min,smile_ratio,face_visible_ratio,"
            "head_yaw_deg,head_pitch_deg,head_roll_deg,user_speaking_s,persona_speaking_s,note\r\n"
            "0,0.5,,,,,,,0.80,0.00,\"a,\"\"b\"\"\"\r\n"
            "1,0.6,,,,,,,0.00,0.50,\r\n"
            "2,0.7,,,,,,,0.00,1.00,\"a,\"\"b\"\"\"\r\n"
            "3,,,,,,,,0.00,0.70,\r\n"
            "4,,,,,,,,1.00,0.00,\r\n"
            "5,,,,,,,,1.00,0.00,\r\n");
  const auto turns =
      Http("GET", s.Url("/api/sessions/" + id + "/turns.csv?download=1"), "", s.Auth("alice"));
  ASSERT_EQ(turns.status, 200) << turns.body;
  EXPECT_EQ(turns.Header("content-disposition"),
            "attachment; filename=parley-turns-" + id + ".csv");
  EXPECT_EQ(turns.body,
            "turn,role,start_s,end_s,duration_s,words,words_per_min,question,interrupted,"
            "played_s,confidence,typed,text\r\n"
            "1,user,0.10,0.90,0.80,1,,0,,,,0,<script>alert(1)</script>\r\n"
            "2,persona,1.50,3.70,2.20,5,,,1,2.20,,0,\"Well, how \"\"fun\"\" is that?\"\r\n"
            "3,user,4.00,6.00,2.00,4,120,1,,,0.870,0,what do you do\r\n");
  EXPECT_EQ(Http("GET", s.Url("/api/sessions/" + id + "/turns.csv"), "", s.Auth("mallory")).status,
            404);

  const auto html = Http("GET", s.Url("/api/sessions/" + id + "/report.html"), "", s.Auth("alice"));
  ASSERT_EQ(html.status, 200);
  EXPECT_EQ(html.Header("content-type"), "text/html; charset=utf-8");
  EXPECT_NE(html.body.find(id), std::string::npos);
  EXPECT_NE(html.body.find("Seoa Lee"), std::string::npos);
  EXPECT_NE(html.body.find("<svg"), std::string::npos);  // the gaze chart
  EXPECT_NE(html.body.find("not measured"), std::string::npos);
  EXPECT_EQ(html.body.find("<script>"), std::string::npos);
  EXPECT_NE(html.body.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  // Words for people: no raw JSON, no snake_case keys, no long floats in the text.
  std::string text;  // the body's text, tags and the style sheet left out
  {
    const size_t body = html.body.find("<body>");
    bool in_tag = false;
    for (size_t i = body; i < html.body.size(); ++i) {
      if (html.body[i] == '<') in_tag = true;
      if (!in_tag) text.push_back(html.body[i]);
      if (html.body[i] == '>') in_tag = false;
    }
  }
  EXPECT_EQ(text.find("{\""), std::string::npos) << text;
  for (const char* key : {"gaze_on_screen_ratio", "not_measured", "speaking_rate_wpm", "_score"})
    EXPECT_EQ(text.find(key), std::string::npos) << key << " in: " << text;
  EXPECT_NE(text.find("Eyes on screen"), std::string::npos);
  EXPECT_NE(html.body.find("@page{size:A4"), std::string::npos);  // the print sheet
  EXPECT_EQ(html.body.find("src="), std::string::npos);           // nothing fetched
  EXPECT_EQ(html.body.find("<link"), std::string::npos);
  EXPECT_EQ(
      Http("GET", s.Url("/api/sessions/" + id + "/report.html"), "", s.Auth("mallory")).status,
      404);
}

// One ended session of `user` whose analysers measured `concentration` and a voice with
// `fillers` filler words in a minute of speech.
std::string EndedSessionWith(TestServer& s, WsHub& hub, const std::string& user, int concentration,
                             int fillers) {
  const std::string id = s.CreateSession(user, "daniel");
  auto ws = s.Join(hub, "landmarks", id, user);  // live, with no analyser writing over the patch
  EXPECT_EQ(ws->state(), WsClient::State::kOpen);
  s.app().sessions().Find(id)->MergeReport(*core::ParseJson(
      R"({"feedback": {"concentration": )" + std::to_string(concentration) +
      R"(, "posture": 90}, "metrics": {"speech": {"speech_s": 60, "pitch_std_semitones": 3},
          "speaking_rate_wpm": 150, "volume_db": {"mean": -20, "std": 3},
          "gaze_on_screen_ratio": 0.8, "filler_words": )" +
      std::to_string(fillers) + "}}"));
  EXPECT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth(user)).status, 200);
  std::this_thread::sleep_for(5ms);  // distinct creation times: the listing's order
  return id;
}

// A fake LLM that rewrites the facts it is sent with `rewrite` (the templates' text in, the
// answer's JSON out) and a server that uses it.
struct RewritingLlm {
  explicit RewritingLlm(std::function<std::string(const Json::Value& facts)> rewrite)
      : fake([rewrite](int, const Json::Value& request) {
          const auto facts = core::ParseJson(request["messages"][1]["content"].asString());
          return testing::FakeOpenAi::Chat{200, {testing::FakeOpenAi::StreamBody(rewrite(*facts))}};
        }),
        server([this](app::AppConfig& c) { c.conversation.llm.base_url = fake.url(); }) {}
  testing::FakeOpenAi fake;
  TestServer server;
};

std::string Rewritten(const Json::Value& facts, const std::string& tip_prefix) {
  Json::Value out(Json::objectValue);
  out["summary"] = "In short: " + facts["summary"].asString();
  for (const auto& tip : facts["tips"]) out["tips"].append(tip_prefix + tip.asString());
  return "```json\n" + core::ToJson(out) + "\n```";
}

TEST(Report, WithAnLlmTheSummaryAndTipsAreRewordedFromTheSameNumbers) {
  RewritingLlm llm([](const Json::Value& facts) { return Rewritten(facts, "Here is one: "); });
  TestServer& s = llm.server;
  WsHub hub;
  const std::string id = EndedSessionWith(s, hub, "alice", 70, 6);
  const Json::Value r =
      Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
  ASSERT_EQ(llm.fake.chat_requests().size(), 1u);
  // The model was given the templates' text and the session's numbers.
  const auto facts =
      core::ParseJson(llm.fake.chat_requests()[0]["messages"][1]["content"].asString());
  ASSERT_TRUE(facts);
  EXPECT_EQ((*facts)["scores"]["concentration"].asInt(), 70);
  EXPECT_EQ((*facts)["tips"].size(), r["tips"].size());
  EXPECT_EQ(r["feedback"]["summary_by"], "llm") << core::ToJson(r["feedback"]);
  EXPECT_EQ(r["feedback"]["summary"].asString(), "In short: " + (*facts)["summary"].asString());
  ASSERT_GE(r["tips"].size(), 1u);
  for (Json::ArrayIndex i = 0; i < r["tips"].size(); ++i)
    EXPECT_EQ(r["tips"][i].asString(), "Here is one: " + (*facts)["tips"][i].asString());
}

// An end that takes longer than lws's own request timeout (20 s; here a slow rewrite of the
// report's words) is still answered: the handler bounds its own time, lws does not cut it.
TEST(Report, AnEndSlowerThanTheServersRequestTimeoutIsStillAnswered) {
  testing::FakeOpenAi fake([](int, const Json::Value&) {
    testing::FakeOpenAi::Chat c;
    c.first_delay_ms = 23000;
    c.pieces = {testing::FakeOpenAi::StreamBody("{}")};
    return c;
  });
  TestServer s([&](app::AppConfig& c) {
    c.conversation.llm.base_url = fake.url();
    c.conversation.llm.first_token_timeout_ms = 40000;
    c.conversation.llm.total_timeout_ms = 60000;
  });
  WsHub hub;
  const std::string id = s.CreateSession("alice", "daniel");
  auto ws = s.Join(hub, "landmarks", id, "alice");
  s.app().sessions().Find(id)->MergeReport(*core::ParseJson(
      R"({"feedback": {"concentration": 70, "posture": 90}, "metrics": {"speech": {"speech_s": 60,
          "pitch_std_semitones": 3}, "speaking_rate_wpm": 150, "filler_words": 6}})"));
  const auto t0 = std::chrono::steady_clock::now();
  const auto end = Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice"), 90s);
  EXPECT_EQ(end.status, 200) << "after "
                             << std::chrono::duration_cast<std::chrono::seconds>(
                                    std::chrono::steady_clock::now() - t0)
                                    .count()
                             << " s: " << end.body;
  EXPECT_EQ(Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).status, 200);
  EXPECT_EQ(fake.chat_requests().size(), 1u) << "the rewrite was asked for";
}

TEST(Report, AnLlmRewriteThatInventsANumberOrFailsKeepsTheTemplates) {
  for (const std::string mode : {"invents", "drops_a_tip", "not_json", "http_500"}) {
    testing::FakeOpenAi fake([mode](int, const Json::Value& request) {
      if (mode == "http_500") return testing::FakeOpenAi::Chat{500, {"{}"}};
      const auto facts = core::ParseJson(request["messages"][1]["content"].asString());
      std::string answer;
      if (mode == "invents") answer = Rewritten(*facts, "Top speakers score 9731 here. ");
      if (mode == "drops_a_tip") {
        const std::string fenced = Rewritten(*facts, "");
        Json::Value out = *core::ParseJson(fenced.substr(8, fenced.size() - 12));
        out["tips"].resize(out["tips"].size() - 1);
        answer = core::ToJson(out);
      }
      if (mode == "not_json") answer = "Great session, keep it up!";
      return testing::FakeOpenAi::Chat{200, {testing::FakeOpenAi::StreamBody(answer)}};
    });
    TestServer s([&](app::AppConfig& c) {
      c.conversation.llm.base_url = fake.url();
      c.conversation.llm.retries = 0;
    });
    WsHub hub;
    const std::string id = EndedSessionWith(s, hub, "alice", 70, 6);
    const Json::Value r =
        Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).JsonBody();
    EXPECT_EQ(fake.chat_requests().size(), 1u) << mode;
    EXPECT_EQ(r["feedback"]["summary_by"], "templates") << mode;
    EXPECT_FALSE(r["feedback"]["summary_rewrite_error"].asString().empty()) << mode;
    EXPECT_EQ(r["feedback"]["summary"].asString().rfind("In short", 0), std::string::npos) << mode;
    for (const auto& tip : r["tips"])
      EXPECT_EQ(tip.asString().find("9731"), std::string::npos) << mode;
  }
}

TEST(Progress, ListsEndedSessionsOldestFirstWithATrendPerScore) {
  TestServer s;
  WsHub hub;
  std::vector<std::string> ids;
  for (const auto& [concentration, fillers] : {std::pair{60, 8}, {70, 4}, {85, 0}})
    ids.push_back(EndedSessionWith(s, hub, "alice", concentration, fillers));
  EndedSessionWith(s, hub, "bob", 10, 20);
  s.CreateSession("alice");  // not ended: no report, not in the progress

  const auto r = Http("GET", s.Url("/api/progress"), "", s.Auth("alice"));
  ASSERT_EQ(r.status, 200) << r.body;
  const Json::Value p = r.JsonBody();
  ASSERT_EQ(p["sessions"].size(), 3u) << r.body;
  EXPECT_EQ(p["total"].asInt(), 3);
  for (int i = 0; i < 3; ++i) {
    const Json::Value& session = p["sessions"][i];
    EXPECT_EQ(session["session_id"].asString(), ids[i]);
    EXPECT_EQ(session["persona_name"].asString(), "Daniel Park");
    EXPECT_TRUE(session["ended_at"].isString());
    EXPECT_FALSE(session.isMember("timeline"));
    EXPECT_DOUBLE_EQ(session["measures"]["speaking_rate_wpm"].asDouble(), 150);
    EXPECT_TRUE(session["scores"]["likability"].isNull());  // no conversation in these
  }
  EXPECT_EQ(p["sessions"][0]["scores"]["concentration"].asInt(), 60);
  EXPECT_DOUBLE_EQ(p["sessions"][0]["measures"]["filler_words_per_min"].asDouble(), 8);
  const Json::Value& c = p["trends"]["concentration"];
  EXPECT_EQ(c["sessions"].asInt(), 3);
  EXPECT_EQ(c["latest"].asInt(), 85);
  EXPECT_EQ(c["best"].asInt(), 85);
  EXPECT_EQ(c["first"].asInt(), 60);
  EXPECT_DOUBLE_EQ(c["slope_per_session"].asDouble(), 12.5);  // least squares over 60, 70, 85
  EXPECT_EQ(c["direction"].asString(), "improving");
  // Fewer fillers each time: the voice's score rose too, and so did the total.
  const Json::Value& tone = p["trends"]["tone"];
  EXPECT_LT(p["sessions"][0]["scores"]["tone"].asInt(), p["sessions"][2]["scores"]["tone"].asInt());
  EXPECT_EQ(tone["direction"].asString(), "improving");
  EXPECT_EQ(p["trends"]["total_score"]["direction"].asString(), "improving");
  EXPECT_EQ(p["trends"]["posture"]["direction"].asString(), "steady");
  EXPECT_EQ(p["trends"]["likability"]["sessions"].asInt(), 0);
  EXPECT_TRUE(p["trends"]["likability"]["direction"].isNull());

  // The trend is over the last `window` sessions: 70 -> 85.
  const auto last2 = Http("GET", s.Url("/api/progress?window=2"), "", s.Auth("alice")).JsonBody();
  EXPECT_DOUBLE_EQ(last2["trends"]["concentration"]["slope_per_session"].asDouble(), 15);
  // `limit` keeps the latest sessions, still oldest first.
  const auto latest = Http("GET", s.Url("/api/progress?limit=2"), "", s.Auth("alice")).JsonBody();
  ASSERT_EQ(latest["sessions"].size(), 2u);
  EXPECT_EQ(latest["sessions"][0]["session_id"].asString(), ids[1]);
  EXPECT_EQ(latest["total"].asInt(), 3);

  const auto bob = Http("GET", s.Url("/api/progress"), "", s.Auth("bob")).JsonBody();
  ASSERT_EQ(bob["sessions"].size(), 1u);
  EXPECT_EQ(bob["trends"]["concentration"]["sessions"].asInt(), 1);
  EXPECT_TRUE(bob["trends"]["concentration"]["slope_per_session"].isNull());  // one is no trend
  EXPECT_EQ(Http("GET", s.Url("/api/progress"), "", s.Auth("carol")).JsonBody()["sessions"].size(),
            0u);
}

TEST(Progress, RejectsBadQueriesAndAnonymousCallers) {
  TestServer s;
  for (const char* q :
       {"limit=0", "limit=101", "limit=x", "window=1", "window=", "limit=5&window=9999"}) {
    const auto r = Http("GET", s.Url(std::string("/api/progress?") + q), "", s.Auth("alice"));
    EXPECT_EQ(r.status, 400) << q;
    EXPECT_EQ(r.JsonBody()["error"]["code"].asString(), "invalid_query") << q;
  }
  EXPECT_EQ(Http("GET", s.Url("/api/progress")).status, 401);
  EXPECT_EQ(Http("POST", s.Url("/api/progress"), "", s.Auth("alice")).status, 405);
}

TEST(Report, AnotherUserCanNeitherReadNorDeleteIt) {
  TestServer s;
  const std::string id = s.CreateSession("alice");
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/report"}, {"GET", "/report?download=1"}, {"DELETE", ""}, {"GET", ""}}) {
    const auto r = Http(method, s.Url("/api/sessions/" + id + path), "", s.Auth("mallory"));
    EXPECT_EQ(r.status, 404) << method << " " << path;
  }
  EXPECT_EQ(Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).status, 200);
}

TEST(Report, DeleteRemovesSessionAndReport) {
  TestServer s;
  const std::string id = s.CreateSession("alice");
  ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  ASSERT_EQ(Http("DELETE", s.Url("/api/sessions/" + id), "", s.Auth("alice")).status, 204);
  EXPECT_EQ(Http("GET", s.Url("/api/sessions/" + id + "/report"), "", s.Auth("alice")).status, 404);
  EXPECT_EQ(Http("GET", s.Url("/api/sessions/" + id), "", s.Auth("alice")).status, 404);
  Json::Value d;
  std::string error;
  EXPECT_EQ(s.app().store().Get(store::Collection::kReports, id, &d, &error),
            store::ReadStatus::kNotFound);
}

TEST(Report, EmbeddedStoreKeepsReportsAcrossRestarts) {
  TempDir data;
  std::string id;
  {
    TestServer s([&](app::AppConfig& c) { c.data_dir = data.path(); });
    id = s.CreateSession("alice");
    ASSERT_EQ(Http("POST", s.Url("/api/sessions/" + id + "/end"), "", s.Auth("alice")).status, 200);
  }
  TestServer again([&](app::AppConfig& c) { c.data_dir = data.path(); });
  const auto r = Http("GET", again.Url("/api/sessions/" + id + "/report"), "", again.Auth("alice"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(again.app().store().Health()["kind"].asString(), "file");
}

// ---- with MongoDB, through the real binary
// --------------------------------------------------------

class ReportMongoTest : public ::testing::Test {
 protected:
  std::vector<std::string> Env(const std::string& db) {
    return {"MONGODB_URI=" + mongo_.uri(), "DATABASE_NAME=" + db,
            std::string("JWT_SECRET_KEY=") + kTestSecret, "PARLEY_MONGO_TIMEOUT_MS=400",
            "PARLEY_SPOOL_REPLAY_MS=100"};
  }
  std::vector<std::string> Args(const std::string& data_dir) {
    return {
        "--port", "0", "--bind", "127.0.0.1", "--data-dir", data_dir, "--max-connections-per-ip",
        "256"};
  }
  std::string Base(int port) { return "http://127.0.0.1:" + std::to_string(port); }
  Headers Auth() { return {{"Authorization", "Bearer " + MintToken("alice")}}; }

  void TearDown() override {
    mongo_.Start();
    for (const auto& db : dbs_) mongo_.DropDatabase(db);
  }
  std::string NewDatabase(const std::string& hint) {
    dbs_.push_back(MongoServer::NewDatabase(hint));
    return dbs_.back();
  }

  MongoServer mongo_;
  TempDir data_;
  std::vector<std::string> dbs_;
};

TEST_F(ReportMongoTest, SigtermWithTwentyLiveSessionsStoresTwentyReports) {
  const std::string db = NewDatabase("sigterm20");
  Child parley(Args(data_.path()), Env(db));
  const int port = parley.Port();
  ASSERT_GT(port, 0) << parley.output();
  WsHub hub;
  std::vector<std::string> ids;
  std::vector<std::shared_ptr<WsClient>> clients;
  for (int i = 0; i < 20; ++i) {
    const auto r = Http("POST", Base(port) + "/api/sessions", R"({"persona_id":"mina"})", Auth());
    ASSERT_EQ(r.status, 201) << r.body;
    ids.push_back(r.JsonBody()["session_id"].asString());
    clients.push_back(hub.Connect(port, "/ws/practice?session=" + ids.back(), Auth()));
  }
  for (auto& c : clients) ASSERT_TRUE(c->WaitOpen()) << c->failure();
  parley.Signal(SIGTERM);
  ASSERT_EQ(parley.Wait(30s), 0) << parley.output();
  EXPECT_EQ(CountIn(mongo_.uri(), db, "reports"), 20);
  for (const auto& id : ids) EXPECT_EQ(CountIn(mongo_.uri(), db, "reports", id), 1) << id;
  EXPECT_EQ(CountIn(mongo_.uri(), db, "sessions"), 20);
}

// MongoDB cut for a minute while 20 live sessions (audio, a turn in progress) run and end,
// and 2 more are created and ended while it is away: every end is answered, every report is
// readable throughout (from the spool), and once MongoDB is back each of the 22 is stored
// exactly once with what its session heard (1 s of sound each).
TEST_F(ReportMongoTest, MongoCutForAMinuteWhileSessionsRunAndEndLosesAndDuplicatesNoReport) {
  const std::string db = NewDatabase("cut60");
  Child parley(Args(data_.path()), Env(db));
  const int port = parley.Port();
  ASSERT_GT(port, 0) << parley.output();
  WsHub hub;
  std::vector<std::string> ids;
  std::vector<std::shared_ptr<WsClient>> clients;
  for (int i = 0; i < 20; ++i) {
    const auto r = Http("POST", Base(port) + "/api/sessions", R"({"persona_id":"mina"})", Auth());
    ASSERT_EQ(r.status, 201) << r.body;
    ids.push_back(r.JsonBody()["session_id"].asString());
    clients.push_back(hub.Connect(port, "/ws/practice?session=" + ids.back(), Auth()));
  }
  // Half a second each time: 20 s of sound to recognise in all, not a burst that starves the
  // timing tests running beside this one.
  const std::string voiced = "\x02" + VoicedPcm(0.5);
  for (auto& c : clients) {
    ASSERT_TRUE(c->WaitOpen()) << c->failure();
    c->SendText(R"({"type":"start","media":"pcm","sample_rate":16000})");
    ASSERT_TRUE(c->ReceiveType("started", 10s));
    c->SendBinary(voiced);
  }
  const auto cut_at = std::chrono::steady_clock::now();
  mongo_.Stop();
  for (auto& c : clients) c->SendBinary(voiced);  // the sessions go on hearing
  std::this_thread::sleep_for(5s);
  for (int i = 0; i < 2; ++i) {  // new sessions while MongoDB is away
    const auto r = Http("POST", Base(port) + "/api/sessions", R"({"persona_id":"seoa"})", Auth());
    ASSERT_EQ(r.status, 201) << r.body;
    ids.push_back(r.JsonBody()["session_id"].asString());
  }
  for (const auto& id : ids) {
    const auto end = Http("POST", Base(port) + "/api/sessions/" + id + "/end", "", Auth(), 60s);
    ASSERT_EQ(end.status, 200) << id << " " << end.body << "\n" << parley.output();
    const auto report = Http("GET", Base(port) + "/api/sessions/" + id + "/report", "", Auth());
    EXPECT_EQ(report.status, 200) << id << " " << report.body;
  }
  const auto health = Http("GET", Base(port) + "/health").JsonBody();
  EXPECT_EQ(health["dependencies"]["store"]["status"].asString(), "degraded");
  EXPECT_GE(health["dependencies"]["store"]["spool_depth"].asInt(), 22);
  std::this_thread::sleep_until(cut_at + 60s);
  mongo_.Start();
  WaitForEmptySpool(port, 30s);
  EXPECT_EQ(Http("GET", Base(port) + "/health").JsonBody()["dependencies"]["store"]["status"],
            "ok");
  EXPECT_EQ(CountIn(mongo_.uri(), db, "reports"), 22);
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(CountIn(mongo_.uri(), db, "reports", ids[i]), 1) << ids[i];
    EXPECT_EQ(CountIn(mongo_.uri(), db, "sessions", ids[i]), 1) << ids[i];
    const auto r = Http("GET", Base(port) + "/api/sessions/" + ids[i] + "/report", "", Auth());
    ASSERT_EQ(r.status, 200) << r.body;
    if (i < 20) {
      EXPECT_NEAR(r.JsonBody()["metrics"]["media"]["audio_seconds"].asDouble(), 1.0, 0.3) << r.body;
    }
  }
}

TEST_F(ReportMongoTest, KilledWithANonEmptySpoolTheNextProcessReplaysIt) {
  const std::string db = NewDatabase("killspool");
  std::vector<std::string> ids;
  {
    Child parley(Args(data_.path()), Env(db));
    const int port = parley.Port();
    ASSERT_GT(port, 0) << parley.output();
    for (int i = 0; i < 6; ++i) {
      const auto r = Http("POST", Base(port) + "/api/sessions", R"({"persona_id":"seoa"})", Auth());
      ASSERT_EQ(r.status, 201) << r.body;
      ids.push_back(r.JsonBody()["session_id"].asString());
    }
    mongo_.Stop();
    for (const auto& id : ids) {
      const auto r = Http("POST", Base(port) + "/api/sessions/" + id + "/end", "", Auth());
      ASSERT_EQ(r.status, 200) << r.body;
      // While MongoDB is away the report is served from the spool.
      EXPECT_EQ(Http("GET", Base(port) + "/api/sessions/" + id + "/report", "", Auth()).status,
                200);
    }
    const auto health = Http("GET", Base(port) + "/health").JsonBody();
    EXPECT_EQ(health["dependencies"]["store"]["status"].asString(), "degraded");
    EXPECT_GE(health["dependencies"]["store"]["spool_depth"].asInt(), 12);
    parley.Signal(SIGKILL);
    parley.Wait(10s);
  }
  mongo_.Start();
  Child next(Args(data_.path()), Env(db));
  const int port = next.Port();
  ASSERT_GT(port, 0) << next.output();
  WaitForEmptySpool(port, 20s);
  for (const auto& id : ids) {
    EXPECT_EQ(CountIn(mongo_.uri(), db, "reports", id), 1) << id;
    const auto r = Http("GET", Base(port) + "/api/sessions/" + id + "/report", "", Auth());
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.JsonBody()["session_id"].asString(), id);
  }
}

}  // namespace
}  // namespace parley::testing
