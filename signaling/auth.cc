// JWT verification through libjwt (HS256 only).
#include <jwt.h>

#include <cerrno>
#include <chrono>
#include <memory>

#include "signaling/signaling.h"

namespace parley::signaling {
namespace {

struct JwtFree {
  void operator()(jwt_t* j) const { jwt_free(j); }
};
using JwtPtr = std::unique_ptr<jwt_t, JwtFree>;

Identity Fail(std::string why) { return Identity{false, {}, std::move(why)}; }

// exp/nbf as an integer; nullopt when absent or not a number.
std::optional<long> NumericClaim(jwt_t* jwt, const char* name) {
  errno = 0;
  const long v = jwt_get_grant_int(jwt, name);
  if (errno != 0) return std::nullopt;
  return v;
}

}  // namespace

std::string AuthConfig::Validate() const {
  if (!jwt_secret_key.empty() && jwt_secret_key.size() < 16)
    return "JWT_SECRET_KEY must be at least 16 bytes (HS256 with a short key is guessable)";
  if (dev_user_id.empty()) return "the development user id must not be empty";
  if (clock_leeway_s < 0 || clock_leeway_s > 600) return "JWT clock leeway must be 0..600 s";
  return {};
}

Identity VerifyBearerToken(const AuthConfig& auth, std::string_view token) {
  if (auth.jwt_secret_key.empty()) return Identity{true, auth.dev_user_id, {}};
  if (token.empty()) return Fail("missing bearer token");
  if (token.size() > 8192) return Fail("token too long");
  const std::string text(token);
  jwt_t* raw = nullptr;
  const auto* key = reinterpret_cast<const unsigned char*>(auth.jwt_secret_key.data());
  if (jwt_decode(&raw, text.c_str(), key, static_cast<int>(auth.jwt_secret_key.size())) != 0 ||
      raw == nullptr) {
    return Fail("token is malformed or its signature does not verify");
  }
  const JwtPtr jwt(raw);
  // Refuse every algorithm but the one configured (no "none", no algorithm confusion).
  if (jwt_get_alg(jwt.get()) != JWT_ALG_HS256) return Fail("token must be signed with HS256");

  const long now = static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count());
  const auto exp = NumericClaim(jwt.get(), "exp");
  if (!exp) return Fail("token has no numeric exp claim");
  if (now > *exp + auth.clock_leeway_s) return Fail("token has expired");
  if (const auto nbf = NumericClaim(jwt.get(), "nbf"); nbf && now + auth.clock_leeway_s < *nbf)
    return Fail("token is not valid yet (nbf)");
  const char* sub = jwt_get_grant(jwt.get(), "sub");
  if (sub == nullptr || *sub == '\0') return Fail("token has no sub claim");
  if (std::string_view(sub).size() > 256) return Fail("token sub claim is too long");
  return Identity{true, sub, {}};
}

}  // namespace parley::signaling
