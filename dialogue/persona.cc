// The persona's profile, speaking style, system prompt; intimacy; safety.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <sstream>

#include "dialogue/dialogue.h"
#include "dialogue/text.h"

namespace parley::dialogue {
namespace {

std::vector<std::string> Strings(const Json::Value& v) {
  std::vector<std::string> out;
  if (!v.isArray()) return out;
  for (const auto& e : v)
    if (e.isString() && !e.asString().empty()) out.push_back(e.asString());
  return out;
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += i + 1 == items.size() ? (items.size() > 2 ? ", and " : " and ") : ", ";
    out += items[i];
  }
  return out;
}

}  // namespace

PersonaProfile ProfileFromDocument(const std::string& id, const Json::Value& doc) {
  PersonaProfile p;
  p.id = id;
  p.name = doc["name"].asString();
  p.gender = doc["gender"].asString();
  p.occupation = doc["occupation"].asString();
  p.summary = doc["summary"].asString();
  p.background = doc["background"].asString();
  p.greeting = doc["greeting"].asString();
  if (doc["language"].isString()) p.language = doc["language"].asString();
  p.age = doc["age"].asInt();
  p.personality = Strings(doc["personality"]);
  p.hobbies = Strings(doc["hobbies"]);
  p.likes = Strings(doc["likes"]);
  p.dislikes = Strings(doc["dislikes"]);
  for (const auto& level : doc["speaking_style"]["levels"]) {
    StyleLevel s;
    s.min_intimacy = level["min_intimacy"].asInt();
    s.name = level["name"].asString();
    s.description = level["description"].asString();
    s.examples = Strings(level["examples"]);
    p.styles.push_back(std::move(s));
  }
  if (p.styles.empty()) p.styles.push_back({0, "formal", "Polite and clear.", {}});
  const Json::Value& lines = doc["lines"];
  p.extra_acknowledge = Strings(lines["acknowledge"]);
  p.extra_follow_up = Strings(lines["follow_up"]);
  p.extra_speak_up = Strings(lines["speak_up"]);
  p.extra_farewell = Strings(lines["farewell"]);
  p.voice = doc["tts"]["voice"].asString();
  p.rate = doc["tts"]["rate"].isNumeric() ? doc["tts"]["rate"].asDouble() : 1.0;
  return p;
}

const StyleLevel& StyleFor(const PersonaProfile& p, int intimacy, size_t* index) {
  size_t chosen = 0;
  for (size_t i = 0; i < p.styles.size(); ++i)
    if (intimacy >= p.styles[i].min_intimacy) chosen = i;
  if (index != nullptr) *index = chosen;
  return p.styles[chosen];
}

std::string BuildSystemPrompt(const PersonaProfile& p, int intimacy) {
  const StyleLevel& style = StyleFor(p, intimacy);
  std::ostringstream s;
  s << "You are " << p.name << ", " << p.age << ", " << p.occupation << ". " << p.summary << "\n";
  if (!p.personality.empty()) s << "Personality: " << Join(p.personality) << ".\n";
  if (!p.hobbies.empty()) s << "Hobbies: " << Join(p.hobbies) << ".\n";
  if (!p.likes.empty()) s << "You like " << Join(p.likes) << ".\n";
  if (!p.dislikes.empty()) s << "You dislike " << Join(p.dislikes) << ".\n";
  if (!p.background.empty()) s << "Background: " << p.background << "\n";
  s << "The person you are talking with is practising conversation with you, live, by voice. "
       "Stay in character. Answer in one to three short spoken sentences, no lists, no "
       "emoji, no stage directions; ask a follow-up question now and then.\n";
  s << "Intimacy so far: " << intimacy << " of 100. Speaking style now: " << style.name << " — "
    << style.description << "\n";
  if (!style.examples.empty()) {
    s << "Examples of this style:";
    for (const auto& e : style.examples) s << " \"" << e << "\"";
    s << "\n";
  }
  return s.str();
}

// ---- Intimacy --------------------------------------------------------------------------------

TurnSignals AnalyzeTurn(std::string_view text, bool smiled) {
  TurnSignals s;
  const auto words = text::Words(text);
  s.words = static_cast<int>(words.size());
  s.smiled = smiled;
  s.question = text::IsQuestion(text, words);
  bool you = false, self = false;
  for (const auto& w : words) {
    if (w == "you" || w == "your" || w == "yours" || w == "yourself") you = true;
    if (w == "i" || w == "my" || w == "me" || w == "i'm" || w == "i've" || w == "myself")
      self = true;
    if (text::IsPositive(w)) ++s.positive_words;
    if (text::IsNegative(w)) ++s.negative_words;
  }
  s.about_persona = s.question && you;
  s.self_disclosure = self && s.words >= 6;
  return s;
}

// docs/scoring.md "Intimacy": engaged turns raise it, curt or negative ones lower it.
int IntimacyModel::Update(const TurnSignals& s) {
  int delta = 0;
  if (s.words <= 2) {
    delta -= 2;  // curt
  } else {
    delta += 1;  // a real turn
    if (s.words >= 8) delta += 1;
  }
  if (s.about_persona)
    delta += 3;
  else if (s.question)
    delta += 1;
  if (s.self_disclosure) delta += 2;
  delta += std::min(s.positive_words, 2);
  delta -= std::min(2 * s.negative_words, 4);
  if (s.smiled) delta += 1;
  const int before = level_;
  level_ = std::clamp(level_ + delta, 0, 100);
  return level_ - before;
}

// ---- Safety ----------------------------------------------------------------------------------

std::optional<SafetyHit> CheckSafety(std::string_view raw) {
  const std::string t = text::Lower(raw);
  struct Rule {
    const char* category;
    std::vector<const char*> phrases;
  };
  static const std::vector<Rule> kRules = {
      {"self_harm",
       {"kill myself",
        "killing myself",
        "suicide",
        "suicidal",
        "end my life",
        "ending my life",
        "want to die",
        "wanna die",
        "better off dead",
        "hurt myself",
        "hurting myself",
        "harm myself",
        "self harm",
        "self-harm",
        "cut myself",
        "cutting myself",
        "no reason to live",
        "자살",
        "죽고 싶",
        "죽고싶",
        "자해",
        "살기 싫"}},
      {"abuse",
       {"abuses me", "abused me", "abusing me", "being abused", "hits me", "beats me", "beat me up",
        "raped", "rape me", "molested", "touches me when", "학대", "때려요", "때린다", "성폭행"}},
      {"violence",
       {"kill him", "kill her", "kill them", "kill someone", "hurt someone", "shoot them",
        "bring a gun", "stab", "폭력", "죽여버"}},
  };
  for (const auto& rule : kRules) {
    for (const char* phrase : rule.phrases) {
      if (t.find(phrase) == std::string::npos) continue;
      SafetyHit hit;
      hit.category = rule.category;
      if (hit.category == "self_harm") {
        hit.message =
            "I want to step out of our practice for a moment, because what you said matters more. "
            "If you are thinking about hurting yourself, please reach out now to someone you "
            "trust or to a crisis line: in the US you can call or text 988, in Korea 109, and "
            "findahelpline.com lists lines in other countries. If you are in danger, call your "
            "local emergency number. You do not have to go through this alone.";
      } else if (hit.category == "abuse") {
        hit.message =
            "I'm stepping out of our practice for a moment. What you describe sounds serious, and "
            "it is not your fault. If you are not safe, please contact your local emergency "
            "number, or a support line for abuse (in the US, 1-800-799-7233; in Korea, 1366). "
            "Talking to someone you trust can help too.";
      } else {
        hit.message =
            "I'm going to pause our practice here. If someone may get hurt, please step away from "
            "the situation and contact your local emergency number. If these feelings are strong, "
            "a counsellor or a crisis line can help you through them.";
      }
      return hit;
    }
  }
  return std::nullopt;
}

}  // namespace parley::dialogue
