#include <gtest/gtest.h>
#include <stdlib.h>

#include <sstream>

#include "app/app.h"

namespace parley::app {
namespace {

struct Parsed {
  std::variant<AppConfig, int> result;
  std::string out;
  std::string err;
};

Parsed Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "parley");
  std::ostringstream out, err;
  auto r = ParseCommandLine(static_cast<int>(args.size()), args.data(), out, err);
  return {std::move(r), out.str(), err.str()};
}

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : {"PORT", "MONGODB_URI", "DATABASE_NAME", "JWT_SECRET_KEY",
                          "ALLOWED_ORIGINS", "PARLEY_DATA_DIR", "PARLEY_LOG_LEVEL"})
      unsetenv(v);
  }
};

TEST_F(ConfigTest, DefaultsAreValidAndMatchTheContract) {
  const auto p = Parse({});
  ASSERT_TRUE(std::holds_alternative<AppConfig>(p.result)) << p.err;
  const auto& c = std::get<AppConfig>(p.result);
  EXPECT_EQ(c.server.port, 8080);
  EXPECT_EQ(c.server.max_message_bytes, 1u << 20);
  EXPECT_EQ(c.server.max_http_body_bytes, 1u << 20);
  EXPECT_GE(c.server.max_messages_per_s, 120);
  EXPECT_EQ(c.store.database, "parley");
  EXPECT_EQ(c.data_dir, "./data");
  EXPECT_TRUE(c.auth.jwt_secret_key.empty());
}

TEST_F(ConfigTest, EnvironmentFillsOptionsAndFlagsOverrideIt) {
  setenv("PORT", "9091", 1);
  setenv("DATABASE_NAME", "practice", 1);
  setenv("ALLOWED_ORIGINS", "https://a.example, https://b.example/", 1);
  auto p = Parse({});
  ASSERT_TRUE(std::holds_alternative<AppConfig>(p.result)) << p.err;
  auto c = std::get<AppConfig>(p.result);
  EXPECT_EQ(c.server.port, 9091);
  EXPECT_EQ(c.store.database, "practice");
  EXPECT_EQ(c.server.allowed_origins,
            (std::vector<std::string>{"https://a.example", "https://b.example"}));
  p = Parse({"--port", "7000"});
  ASSERT_TRUE(std::holds_alternative<AppConfig>(p.result)) << p.err;
  EXPECT_EQ(std::get<AppConfig>(p.result).server.port, 7000);
}

// Everyone in a full house may speak at once: unless set, the most decoders the pool grows to
// follows the session capacity, never below those loaded ahead nor past 64.
TEST_F(ConfigTest, TheDecodersAFullHouseNeedsFollowTheSessionCapacityUnlessSet) {
  const auto most = [](std::vector<const char*> args) {
    const auto p = Parse(std::move(args));
    EXPECT_TRUE(std::holds_alternative<AppConfig>(p.result)) << p.err;
    return std::holds_alternative<AppConfig>(p.result)
               ? std::get<AppConfig>(p.result).conversation.hearing.asr.max_pool_size
               : -1;
  };
  EXPECT_EQ(most({"--session-capacity", "30"}), 30);
  EXPECT_EQ(most({"--session-capacity", "4"}), 8);  // the 8 loaded ahead
  EXPECT_EQ(most({"--session-capacity", "4", "--asr-decoders", "2"}), 4);
  EXPECT_EQ(most({"--session-capacity", "500"}), 64);
  EXPECT_EQ(most({"--session-capacity", "30", "--asr-max-decoders", "12"}), 12);
  const auto p = Parse({"--asr-max-decoders", "65"});
  ASSERT_TRUE(std::holds_alternative<int>(p.result));
  EXPECT_EQ(std::get<int>(p.result), 2);
  EXPECT_NE(p.err.find("--asr-max-decoders"), std::string::npos) << p.err;
}

TEST_F(ConfigTest, RejectsOutOfRangePortWithExitCode2AndAClearMessage) {
  const auto p = Parse({"--port", "70000"});
  ASSERT_TRUE(std::holds_alternative<int>(p.result));
  EXPECT_EQ(std::get<int>(p.result), 2);
  EXPECT_NE(p.err.find("port must be 0..65535"), std::string::npos) << p.err;
}

TEST_F(ConfigTest, RejectsNonNumericValues) {
  const auto p = Parse({"--idle-timeout", "soon"});
  ASSERT_TRUE(std::holds_alternative<int>(p.result));
  EXPECT_EQ(std::get<int>(p.result), 2);
  EXPECT_NE(p.err.find("idle-timeout"), std::string::npos) << p.err;
}

TEST_F(ConfigTest, RejectsShortJwtSecretBadOriginsBadUriAndBadLogLevel) {
  setenv("JWT_SECRET_KEY", "short", 1);
  setenv("MONGODB_URI", "http://nope", 1);
  const auto p = Parse({"--allowed-origins", "example.com", "--log-level", "loud"});
  ASSERT_TRUE(std::holds_alternative<int>(p.result));
  EXPECT_EQ(std::get<int>(p.result), 2);
  EXPECT_NE(p.err.find("JWT_SECRET_KEY"), std::string::npos) << p.err;
  EXPECT_NE(p.err.find("example.com"), std::string::npos) << p.err;
  EXPECT_NE(p.err.find("MONGODB_URI"), std::string::npos) << p.err;
  EXPECT_NE(p.err.find("--log-level"), std::string::npos) << p.err;
  unsetenv("JWT_SECRET_KEY");
}

TEST_F(ConfigTest, RejectsAMessageRateBelowOne) {
  const auto p = Parse({"--max-messages-per-s", "0"});
  ASSERT_TRUE(std::holds_alternative<int>(p.result));
  EXPECT_EQ(std::get<int>(p.result), 2);
}

TEST_F(ConfigTest, AnyEndOfTurnSilenceInRangeIsAcceptedAndOutOfRangeIsNamed) {
  // The recogniser's kept tail follows a shorter end silence instead of refusing it.
  for (const char* ms : {"100", "250", "400", "5000"}) {
    const auto p = Parse({"--end-of-turn-ms", ms});
    ASSERT_TRUE(std::holds_alternative<AppConfig>(p.result)) << ms << ": " << p.err;
    EXPECT_EQ(std::get<AppConfig>(p.result).conversation.hearing.endpoint.end_silence_ms,
              std::atoi(ms));
  }
  const auto p = Parse({"--end-of-turn-ms", "50"});
  ASSERT_TRUE(std::holds_alternative<int>(p.result));
  EXPECT_EQ(std::get<int>(p.result), 2);
  EXPECT_NE(p.err.find("end-of-turn silence must be 100..5000 ms"), std::string::npos) << p.err;
}

TEST_F(ConfigTest, RejectsABadTranscriptionServiceUrlAndRetryCounts) {
  const auto p = Parse({"--asr-remote-url", "ftp://whisper.local/v1", "--asr-remote-retries", "9",
                        "--asr-threads", "0"});
  ASSERT_TRUE(std::holds_alternative<int>(p.result));
  EXPECT_EQ(std::get<int>(p.result), 2);
  EXPECT_NE(p.err.find("http:// or https://"), std::string::npos) << p.err;
  EXPECT_NE(p.err.find("--asr-threads"), std::string::npos) << p.err;
}

TEST_F(ConfigTest, TheTranscriptionServiceComesFromOpenAiEnvironmentNames) {
  setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1", 1);
  setenv("OPENAI_API_KEY", "sk-test", 1);
  const auto p = Parse({});
  unsetenv("OPENAI_BASE_URL");
  unsetenv("OPENAI_API_KEY");
  ASSERT_TRUE(std::holds_alternative<AppConfig>(p.result)) << p.err;
  const auto& c = std::get<AppConfig>(p.result);
  EXPECT_EQ(c.conversation.hearing.remote.base_url, "http://127.0.0.1:9/v1");
  EXPECT_EQ(c.conversation.hearing.remote.api_key, "sk-test");
}

TEST_F(ConfigTest, HelpListsEveryOptionWithItsEnvironmentName) {
  const auto p = Parse({"--help"});
  ASSERT_TRUE(std::holds_alternative<int>(p.result));
  EXPECT_EQ(std::get<int>(p.result), 0);
  for (const char* s :
       {"--port", "PORT", "MONGODB_URI", "DATABASE_NAME", "JWT_SECRET_KEY", "ALLOWED_ORIGINS",
        "PARLEY_DATA_DIR", "--max-message-kib", "--max-messages-per-s", "--idle-timeout",
        "--max-connections-per-ip", "--disconnect-grace", "--log-level"})
    EXPECT_NE(p.out.find(s), std::string::npos) << "help does not mention " << s;
}

}  // namespace
}  // namespace parley::app
