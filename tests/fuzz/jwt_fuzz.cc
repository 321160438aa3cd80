// Bearer tokens. Raw bytes as a token, or fuzzed claims signed for real (libjwt) with the
// server's key, with another key, or with alg "none": only an HS256 token under the server's
// key with a future exp and a sub is ever accepted, and its user id is bounded.
#include <jwt.h>

#include <cstdlib>
#include <string>

#include "signaling/signaling.h"
#include "tests/fuzz/fuzz.h"

using namespace parley;

namespace {

constexpr std::string_view kKey = "fuzzing-secret-key-0123456789";
constexpr std::string_view kOtherKey = "another-secret-key-9876543210";

// The claims signed with `alg` under `key`; empty when libjwt refuses the claims.
std::string Sign(const std::string& claims, jwt_alg_t alg, std::string_view key) {
  jwt_t* jwt = nullptr;
  if (jwt_new(&jwt) != 0) return {};
  std::string token;
  const auto* k = reinterpret_cast<const unsigned char*>(key.data());
  if (jwt_add_grants_json(jwt, claims.c_str()) == 0 &&
      jwt_set_alg(jwt, alg, alg == JWT_ALG_NONE ? nullptr : k,
                  alg == JWT_ALG_NONE ? 0 : static_cast<int>(key.size())) == 0) {
    if (char* s = jwt_encode_str(jwt)) {
      token = s;
      free(s);  // libjwt 1.x allocates with malloc
    }
  }
  jwt_free(jwt);
  return token;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  signaling::AuthConfig auth;
  auth.jwt_secret_key = std::string(kKey);
  fuzz::FuzzInput in(data, size);
  const uint8_t mode = in.Byte() % 5;
  const std::string bytes(in.Rest());
  if (mode == 0) {
    const signaling::Identity id = signaling::VerifyBearerToken(auth, bytes);
    PARLEY_FUZZ_CHECK(id.authenticated != !id.error.empty());
    if (id.authenticated) PARLEY_FUZZ_CHECK(!id.user_id.empty() && id.user_id.size() <= 256);
    return 0;
  }
  if (bytes.find('\0') != std::string::npos) return 0;  // libjwt takes C strings
  const jwt_alg_t alg = mode == 3 ? JWT_ALG_NONE : mode == 4 ? JWT_ALG_HS512 : JWT_ALG_HS256;
  const std::string token = Sign(bytes, alg, mode == 2 ? kOtherKey : kKey);
  if (token.empty()) return 0;
  const signaling::Identity id = signaling::VerifyBearerToken(auth, token);
  PARLEY_FUZZ_CHECK(id.authenticated != !id.error.empty());
  if (mode != 1) PARLEY_FUZZ_CHECK(!id.authenticated);  // wrong key, none, HS512
  if (id.authenticated) PARLEY_FUZZ_CHECK(!id.user_id.empty() && id.user_id.size() <= 256);
  return 0;
}
