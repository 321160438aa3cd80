#include <gtest/gtest.h>
#include <jwt.h>

#include "signaling/signaling.h"
#include "tests/support/test_server.h"

namespace parley::signaling {
namespace {

AuthConfig Config() {
  AuthConfig a;
  a.jwt_secret_key = testing::kTestSecret;
  return a;
}

TEST(Jwt, AcceptsAValidTokenAndReturnsItsSubject) {
  const Identity id = VerifyBearerToken(Config(), testing::MintToken("user-42"));
  EXPECT_TRUE(id.authenticated) << id.error;
  EXPECT_EQ(id.user_id, "user-42");
}

TEST(Jwt, RejectsAnExpiredToken) {
  const Identity id = VerifyBearerToken(Config(), testing::MintToken("u", -3600));
  EXPECT_FALSE(id.authenticated);
  EXPECT_NE(id.error.find("expired"), std::string::npos);
}

TEST(Jwt, ToleratesSmallClockSkew) {
  EXPECT_TRUE(VerifyBearerToken(Config(), testing::MintToken("u", -5)).authenticated);
}

TEST(Jwt, RejectsATokenSignedWithAnotherKey) {
  const Identity id =
      VerifyBearerToken(Config(), testing::MintToken("u", 3600, "another-secret-0123456789"));
  EXPECT_FALSE(id.authenticated);
  EXPECT_FALSE(id.error.empty());
}

TEST(Jwt, RejectsATokenWithoutSub) {
  const Identity id = VerifyBearerToken(Config(), testing::MintToken(""));
  EXPECT_FALSE(id.authenticated);
  EXPECT_NE(id.error.find("sub"), std::string::npos);
}

TEST(Jwt, RejectsUnsignedAlgNoneTokens) {
  jwt_t* jwt = nullptr;
  ASSERT_EQ(jwt_new(&jwt), 0);
  jwt_add_grant(jwt, "sub", "mallory");
  jwt_add_grant_int(jwt, "exp", 4102444800);
  char* text = jwt_encode_str(jwt);  // alg none
  const std::string token = text;
  free(text);  // libjwt 1.10 allocates with malloc
  jwt_free(jwt);
  EXPECT_FALSE(VerifyBearerToken(Config(), token).authenticated);
}

TEST(Jwt, RejectsATamperedPayload) {
  std::string token = testing::MintToken("alice");
  const auto dot1 = token.find('.');
  const auto dot2 = token.find('.', dot1 + 1);
  // Swap the payload for one claiming another subject, keep the old signature.
  std::string other = testing::MintToken("bob");
  const auto o1 = other.find('.');
  const auto o2 = other.find('.', o1 + 1);
  token = token.substr(0, dot1 + 1) + other.substr(o1 + 1, o2 - o1 - 1) + token.substr(dot2);
  EXPECT_FALSE(VerifyBearerToken(Config(), token).authenticated);
}

TEST(Jwt, RejectsGarbageAndEmptyTokens) {
  EXPECT_FALSE(VerifyBearerToken(Config(), "not-a-token").authenticated);
  EXPECT_FALSE(VerifyBearerToken(Config(), "").authenticated);
  EXPECT_FALSE(VerifyBearerToken(Config(), std::string(10000, 'a')).authenticated);
}

TEST(Jwt, DevelopmentModeMapsEveryoneToTheLocalUser) {
  AuthConfig dev;
  const Identity id = VerifyBearerToken(dev, "");
  EXPECT_TRUE(id.authenticated);
  EXPECT_EQ(id.user_id, "local");
}

}  // namespace
}  // namespace parley::signaling
