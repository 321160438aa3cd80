// Personas: the characters a person practises with, one JSON file each in personas/.
// Loaded once at start-up and read-only afterwards, so any thread may read a catalog.
#pragma once

#include <json/value.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace parley::personas {

struct Persona {
  std::string id;   // file name without ".json"
  Json::Value doc;  // the whole validated document
};

class Catalog {
 public:
  // Loads every *.json in `dir`. nullopt with `error` naming the file and field on any problem:
  // a broken persona is a start-up error, never a silent omission.
  static std::optional<Catalog> Load(const std::string& dir, std::string* error);
  // Validates one persona document; empty when valid, else what is wrong.
  static std::string Validate(const Json::Value& doc);

  const Persona* Find(std::string_view id) const;
  const std::vector<Persona>& all() const { return personas_; }
  // The fields a listing shows (id, name, age, occupation, mbti, summary, tts voice).
  static Json::Value Summary(const Persona& p);
  // The speaking-style level for an intimacy 0..100 (formal at 0, casual at the top).
  static Json::Value StyleFor(const Persona& p, int intimacy);

 private:
  std::vector<Persona> personas_;  // sorted by id
};

}  // namespace parley::personas
