// The offline persona engine: a rule-based conversationalist built from the persona file.
//
// A reply is composed of up to four sentences — an acknowledgement matched to what the user
// said (its sentiment), a link to the persona's own hobbies or likes when the user touches one,
// an answer when the user asked about the persona, and a question that keeps the conversation
// going (on the user's topic, or a new one). Every pool has formal, warm and casual wordings;
// the persona's style level for the current intimacy picks one. Pools are drawn without
// replacement and the engine moves to other topics when one is exhausted; once every fresh line
// is used (an hour-long session), the line said longest ago comes back, with at least
// kRepeatGap others said since, so the persona never goes quiet.
#include <algorithm>
#include <array>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "dialogue/dialogue.h"
#include "dialogue/text.h"

namespace parley::dialogue {
namespace {

using Pool = std::vector<std::string>;
using Styled = std::array<Pool, 3>;  // formal, warm, casual

const Styled kAckPositive = {{
    {"That sounds lovely.", "That is good to hear.", "How nice.",
     "That sounds like a good experience.", "I'm glad to hear that.",
     "That must have felt rewarding.", "That sounds very pleasant.",
     "It is nice to hear something good."},
    {"Oh, that sounds great!", "I love hearing that.", "That's really nice.", "That made me smile.",
     "Sounds like a good time!", "How fun!", "Oh, that's wonderful.", "That sounds so nice."},
    {"Ha, that's awesome!", "No way, that's so good!", "Okay, I love that.", "That's the best!",
     "Ooh, nice!", "Yes! That's great.", "Okay, that's amazing.", "Ha, love it."},
}};
const Styled kAckNegative = {{
    {"I'm sorry to hear that.", "That sounds difficult.", "That must have been hard.",
     "I understand, that can be tiring.", "Thank you for telling me that.",
     "That does not sound easy.", "I can see why that would weigh on you."},
    {"Oh no, that sounds rough.", "That sounds really hard, I'm sorry.",
     "I can imagine that was tiring.", "Ugh, I'm sorry you had to deal with that.",
     "That sounds like a lot.", "Oh, that's not fun at all."},
    {"Oh no, that's the worst.", "Ugh, that's rough, I'm sorry.", "Oof, that sounds exhausting.",
     "Aw, that sounds awful.", "Ugh, no, that's not fair.", "Oof, I feel that."},
}};
const Styled kAckNeutral = {{
    {"I see.", "I understand.", "That is interesting.", "Thank you for sharing that.",
     "That makes sense.", "I appreciate you telling me.", "That is good to know.",
     "I had not thought of it that way."},
    {"Oh, interesting.", "Ah, I see what you mean.", "That makes a lot of sense.",
     "Hm, I like that.", "Oh, okay!", "Oh, that's interesting to hear.", "Ah, got it."},
    {"Ha, okay.", "Oh really?", "Huh, fair enough.", "Got it, got it.", "Oh yeah?",
     "Ha, makes sense.", "Okay, okay."},
}};
const Styled kShort = {{
    {"Could you tell me a little more?", "I would love to hear a bit more about that.",
     "Would you say more about it?", "Please, go on if you like."},
    {"Oh? Tell me a bit more!", "Just that? I'm curious now.", "Go on, I'm listening.",
     "Hm, and then?"},
    {"Come on, give me more than that!", "That's it? Spill!", "Ha, a person of few words today.",
     "Okay, and?"},
}};
const Styled kSpeakUp = {{
    {"Please take your time.", "No rush at all.", "It's all right to think for a moment.",
     "We can take this slowly."},
    {"Take your time, there's no hurry.", "I'm still here whenever you're ready.",
     "It's okay if you need a moment.", "Hm, it got quiet for a second."},
    {"Hey, still with me?", "Ha, did I lose you?", "Okay, I'll fill the silence.", "Earth to you!"},
}};
const Styled kFarewell = {{
    {"It was a pleasure talking with you.", "Thank you for the conversation.",
     "I enjoyed our talk very much.", "Take care, and thank you for your time."},
    {"It was really nice talking with you.", "Thanks for chatting, I enjoyed this.",
     "Take care, okay?", "Let's talk again soon."},
    {"Aw, already? This was fun!", "Okay, bye for now, talk soon!", "See you, take care!",
     "This was great, let's do it again."},
}};
const Styled kThanks = {{
    {"You're very welcome.", "It's my pleasure.", "Not at all."},
    {"Of course, anytime!", "Aw, you're welcome.", "Happy to!"},
    {"Ha, anytime!", "No problem at all!", "Pfft, of course."},
}};
const Styled kHello = {{
    {"Hello again.", "It's nice to hear from you.", "Good to see you."},
    {"Hi there!", "Hey, good to hear from you.", "Hi! How's it going?"},
    {"Hey you!", "Hiii!", "Hey hey!"},
}};
const Styled kReflect = {{
    {"That's a good question. What do you think yourself?",
     "I think it depends on what matters most to you. Which way are you leaning?",
     "I am not sure there is one answer to that. How do you see it?"},
    {"Hm, good question! What does your gut say?",
     "I'd say go with whatever feels most like you. What feels right to you?",
     "Ooh, tough one. How do you feel about it?"},
    {"Ha, you're asking me? You first!", "Follow your gut, honestly. What's it saying?",
     "Okay, I have opinions, but I want yours first."},
}};
const Styled kReturn = {{
    {"And what about you?", "How about you?", "May I ask the same of you?",
     "I'd be interested to hear yours."},
    {"What about you?", "And you?", "How about you, though?", "Your turn!"},
    {"Okay, your turn!", "Come on, spill.", "Now you!", "What about you, hm?"},
}};

struct Topic {
  const char* id;
  std::vector<const char*> keywords;
  std::vector<const char*> follow_ups;
};

const std::vector<Topic>& Topics() {
  static const std::vector<Topic> kTopics = {
      {"work",
       {"job", "work", "working", "office", "boss", "colleague", "colleagues", "coworker",
        "coworkers", "meeting", "meetings", "project", "career", "company", "shift", "client"},
       {"What do you enjoy most about your work?", "How did you get into that line of work?",
        "What does a usual day at work look like for you?", "Is there a project you are proud of?",
        "How do you switch off after work?"}},
      {"study",
       {"school", "study", "studying", "class", "classes", "university", "college", "exam", "exams",
        "student", "homework", "course", "degree", "teacher"},
       {"What are you studying at the moment?", "Which class do you enjoy the most?",
        "What made you choose that subject?", "How do you usually prepare for exams?"}},
      {"family",
       {"family", "mom", "mother", "dad", "father", "sister", "brother", "parents", "kids",
        "children", "son", "daughter", "grandma", "grandmother", "grandpa", "husband", "wife"},
       {"Are you close with your family?", "What do you like doing together as a family?",
        "Who in your family are you most like?", "Do you get to see them often?"}},
      {"friends",
       {"friend", "friends", "buddy", "roommate", "neighbor", "neighbour"},
       {"How did you two meet?", "What do you usually do together?",
        "Do you have a friend you have known for a very long time?"}},
      {"travel",
       {"travel", "traveling", "travelling", "trip", "vacation", "abroad", "flight", "beach",
        "visited", "visit", "country", "journey", "island", "tour"},
       {"Where would you love to travel next?", "What was the best trip you have ever taken?",
        "Do you plan every detail or stay spontaneous when you travel?",
        "What did you like most about that place?"}},
      {"food",
       {"food", "cook", "cooking", "cooked", "eat", "ate", "dinner", "lunch", "breakfast",
        "restaurant", "coffee", "cafe", "pizza", "baking", "bake", "recipe", "tea", "noodles"},
       {"What is your favorite thing to cook?", "Is there a restaurant you keep going back to?",
        "What is the best meal you have had recently?",
        "Are you more of a coffee or a tea person?"}},
      {"music",
       {"music", "song", "songs", "concert", "band", "singing", "sing", "guitar", "piano",
        "playlist", "album", "listen", "listening"},
       {"What kind of music do you listen to most?", "Have you been to a good concert lately?",
        "Do you play an instrument yourself?", "Which song have you had on repeat recently?"}},
      {"screen",
       {"movie", "movies", "film", "films", "series", "show", "netflix", "watch", "watched",
        "drama", "cinema", "anime"},
       {"What was the last film that really stayed with you?",
        "Do you have a favorite series right now?",
        "Do you like watching things at home or at the cinema?"}},
      {"books",
       {"book", "books", "read", "reading", "novel", "author", "library"},
       {"What are you reading at the moment?", "Is there a book you would recommend to everyone?",
        "Do you prefer fiction or non-fiction?"}},
      {"sport",
       {"sport",      "sports",  "run",  "running",  "gym",      "football", "soccer",
        "basketball", "tennis",  "swim", "swimming", "yoga",     "hike",     "hiking",
        "exercise",   "workout", "bike", "cycling",  "climbing", "marathon"},
       {"How often do you get to do that?", "What got you started with it?",
        "Do you do it alone or with other people?", "Is there a sport you would like to try?"}},
      {"pets",
       {"dog", "dogs", "cat", "cats", "pet", "pets", "puppy", "kitten"},
       {"What is your pet's name?", "What is the funniest thing your pet has done?",
        "Have you always had animals around?"}},
      {"weekend",
       {"weekend", "weekends", "saturday", "sunday", "holiday", "holidays"},
       {"What does a perfect weekend look like for you?", "Did you do anything fun last weekend?",
        "Do you like busy weekends or quiet ones?"}},
      {"outdoors",
       {"weather", "rain", "sunny", "snow", "cold", "park", "nature", "sea", "mountain",
        "mountains", "garden", "walk", "walking"},
       {"Do you like spending time outdoors?", "What is your favorite season, and why?",
        "Is there a walk or a place outside you love?"}},
      {"stress",
       {"stressed", "stress", "tired", "busy", "exhausted", "anxious", "nervous", "overwhelmed",
        "deadline", "deadlines"},
       {"What usually helps you relax?", "Has it been a busy week?",
        "Is there something coming up that is on your mind?"}},
      {"games",
       {"game", "games", "gaming", "computer", "phone", "app", "coding", "programming", "code"},
       {"What kind of games do you enjoy?", "What got you interested in that?",
        "Is there something you are building or playing right now?"}},
      {"making",
       {"hobby", "hobbies", "photography", "photo", "photos", "drawing", "painting", "art", "craft",
        "pottery", "knitting", "gardening", "camera"},
       {"How did you discover that hobby?", "How much time do you get to spend on it?",
        "What is something you made that you are proud of?"}},
  };
  return kTopics;
}

const Pool kGeneral = {
    "What do you usually do to unwind?",
    "What is something that made you happy this week?",
    "If you had a free day tomorrow, how would you spend it?",
    "What is something you have always wanted to learn?",
    "What kind of place did you grow up in?",
    "Are you a morning person or a night person?",
    "What is a small thing that always cheers you up?",
    "What has been the highlight of your month so far?",
    "Is there a place in your city you love?",
    "What is the best advice anyone has given you?",
    "What are you looking forward to right now?",
    "Who has inspired you the most?",
    "What is a skill you are proud of?",
    "What would your friends say you are best at?",
    "What is the last thing that made you laugh?",
    "If you could live anywhere for a year, where would it be?",
    "What do you do when you need a bit of energy?",
    "Is there a tradition you really enjoy?",
    "What is something new you tried recently?",
    "What does a good day look like for you?",
};

// Persona questions the user may ask, and the words that give them away.
enum class Ask {
  kNone,
  kName,
  kAge,
  kJob,
  kHobbies,
  kLikes,
  kDislikes,
  kBackground,
  kPersonality,
  kHowAreYou,
  kAboutYou
};

Ask DetectAsk(const std::vector<std::string>& w, bool question) {
  using text::HasPhrase;
  if (HasPhrase(w, "how are you") || HasPhrase(w, "how is your day") ||
      HasPhrase(w, "how's your day") || HasPhrase(w, "how was your day") ||
      HasPhrase(w, "how have you been") || HasPhrase(w, "how are things"))
    return Ask::kHowAreYou;
  if (HasPhrase(w, "about yourself") || HasPhrase(w, "tell me about you") ||
      HasPhrase(w, "who are you"))
    return Ask::kAboutYou;
  if (!question) return Ask::kNone;
  const bool you = std::any_of(w.begin(), w.end(), [](const std::string& x) {
    return x == "you" || x == "your" || x == "yourself" || x == "you're";
  });
  if (!you) return Ask::kNone;
  if (HasPhrase(w, "your name") || HasPhrase(w, "call you")) return Ask::kName;
  if (HasPhrase(w, "how old") || HasPhrase(w, "your age")) return Ask::kAge;
  if (HasPhrase(w, "hobby") || HasPhrase(w, "hobbies") || HasPhrase(w, "free time") ||
      HasPhrase(w, "for fun") || HasPhrase(w, "spare time") || HasPhrase(w, "weekends") ||
      HasPhrase(w, "weekend"))
    return Ask::kHobbies;
  if (HasPhrase(w, "what do you do") || HasPhrase(w, "your job") || HasPhrase(w, "your work") ||
      HasPhrase(w, "do you work") || HasPhrase(w, "for a living") || HasPhrase(w, "occupation"))
    return Ask::kJob;
  if (HasPhrase(w, "grow up") || HasPhrase(w, "grew up") || HasPhrase(w, "where are you from") ||
      HasPhrase(w, "where do you live") || HasPhrase(w, "hometown") ||
      HasPhrase(w, "your background") || HasPhrase(w, "come from"))
    return Ask::kBackground;
  if (HasPhrase(w, "hate") || HasPhrase(w, "dislike") || HasPhrase(w, "annoys you") ||
      HasPhrase(w, "pet peeve") || HasPhrase(w, "don't like"))
    return Ask::kDislikes;
  if (HasPhrase(w, "do you like") || HasPhrase(w, "favorite") || HasPhrase(w, "favourite") ||
      HasPhrase(w, "do you love") || HasPhrase(w, "do you enjoy") || HasPhrase(w, "into"))
    return Ask::kLikes;
  if (HasPhrase(w, "kind of person") || HasPhrase(w, "describe yourself") ||
      HasPhrase(w, "your personality"))
    return Ask::kPersonality;
  return Ask::kNone;
}

// "Marketing lead at a small travel start-up" -> "a marketing lead at a small travel start-up";
// third-person words of the persona file in the first person.
std::string FirstPerson(std::string s) {
  const auto replace_word = [&](const std::string& from, const std::string& to) {
    for (size_t at = 0; (at = s.find(from, at)) != std::string::npos;) {
      const bool starts = at == 0 || s[at - 1] == ' ';
      const bool ends = at + from.size() == s.size() || s[at + from.size()] == ' ' ||
                        s[at + from.size()] == ',' || s[at + from.size()] == '.';
      if (starts && ends) {
        s.replace(at, from.size(), to);
        at += to.size();
      } else {
        at += from.size();
      }
    }
  };
  replace_word("his", "my");
  replace_word("her", "my");
  replace_word("he", "I");
  replace_word("she", "I");
  replace_word("himself", "myself");
  replace_word("herself", "myself");
  return s;
}

std::string LowerFirst(std::string s) {
  if (!s.empty() && s[0] >= 'A' && s[0] <= 'Z' && !(s.size() > 1 && s[1] >= 'A' && s[1] <= 'Z'))
    s[0] = static_cast<char>(s[0] - 'A' + 'a');
  return s;
}

std::string WithArticle(const std::string& noun_phrase) {
  const std::string lower = LowerFirst(noun_phrase);
  if (lower.rfind("a ", 0) == 0 || lower.rfind("an ", 0) == 0 || lower.rfind("the ", 0) == 0)
    return lower;
  const char c = lower.empty() ? 'x' : lower[0];
  return (std::string("aeiou").find(c) != std::string::npos ? "an " : "a ") + lower;
}

// A third-person verb in the first person: "plans" -> "plan", "wishes" -> "wish", "has" -> "have".
std::string FirstPersonVerb(const std::string& w) {
  if (w == "has") return "have";
  if (w == "is") return "am";
  if (w == "was") return "was";
  if (w == "does") return "do";
  if (w.size() <= 3 || w.back() != 's' || w[w.size() - 2] == 's' || w[w.size() - 2] == 'u')
    return w;
  if (w.size() > 4 && w.ends_with("ies")) return w.substr(0, w.size() - 3) + "y";
  for (const char* es : {"shes", "ches", "xes", "sses", "oes"})
    if (w.ends_with(es)) return w.substr(0, w.size() - 2);
  return w.substr(0, w.size() - 1);
}

// "Grew up by the sea, moved to the city, and now plans campaigns for trips she wishes she
// could take" -> "I grew up by the sea, moved to the city, and now plan campaigns for trips I
// wish I could take": the persona file's third person as the persona's own words. The verb
// that opens each clause (the text's start, after a comma, "and", "now", or a new "I") loses
// its third-person ending.
std::string BackgroundInFirstPerson(const std::string& background) {
  if (background.empty()) return {};
  std::istringstream in(FirstPerson(background));
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  bool clause_start = true;
  for (auto& w : words) {
    std::string bare = w;
    std::string tail;
    while (!bare.empty() && (bare.back() == ',' || bare.back() == '.' || bare.back() == ';')) {
      tail.insert(tail.begin(), bare.back());
      bare.pop_back();
    }
    const std::string lower = LowerFirst(bare);
    if (lower == "and" || lower == "now" || lower == "also" || lower == "still" ||
        lower == "then" || lower == "but" || bare == "I") {
      clause_start = true;
    } else if (clause_start) {
      bare = FirstPersonVerb(lower);
      clause_start = false;
    }
    w = bare + tail;
    if (!tail.empty() && tail.find(',') != std::string::npos) clause_start = true;
  }
  std::string out = "I";
  for (const auto& w : words) out += " " + w;
  return out;
}

std::string Capitalize(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

}  // namespace

struct OfflineEngine::State {
  // Sentences said before a line may come back: about seventy turns at three a turn, so the
  // first sixty turns of a session repeat nothing.
  static constexpr uint64_t kRepeatGap = 200;
  static constexpr uint64_t kFreshOnly = std::numeric_limits<uint64_t>::max();

  PersonaProfile p;
  std::mt19937 rng;
  std::map<std::string, uint64_t> said;    // every sentence said this session -> when (spoken)
  uint64_t spoken = 0;                     // sentences said so far
  std::map<std::string, int> topic_turns;  // user topics talked about
  std::set<std::string> linked;            // persona hobbies/likes already brought up
  size_t next_hobby = 0, next_like = 0, next_dislike = 0;
  bool greeted = false;

  std::string Say(const std::string& s) {
    said[s] = ++spoken;
    return s;
  }
  // A sentence from `pool` not said yet (random order). With every one said: the one said
  // longest ago, when at least `repeat_gap` sentences came after it; otherwise empty.
  std::string Draw(const Pool& pool, uint64_t repeat_gap = kFreshOnly) {
    std::vector<const std::string*> fresh;
    for (const auto& s : pool)
      if (!said.contains(s)) fresh.push_back(&s);
    if (!fresh.empty()) return Say(*fresh[rng() % fresh.size()]);
    if (repeat_gap == kFreshOnly || pool.empty()) return {};
    const auto oldest = std::min_element(
        pool.begin(), pool.end(), [&](const auto& a, const auto& b) { return said[a] < said[b]; });
    return spoken - said[*oldest] >= repeat_gap ? Say(*oldest) : std::string();
  }
  // From the style's pool, then the neighbouring styles'; fresh lines first.
  std::string DrawStyled(const Styled& pools, size_t band, const Pool& extra = {}) {
    if (!extra.empty() && rng() % 3 == 0)
      if (std::string s = Draw(extra); !s.empty()) return s;
    for (const uint64_t gap : {kFreshOnly, kRepeatGap}) {
      for (size_t d = 0; d < 3; ++d) {
        for (const size_t b : {band + d, band - d}) {
          if (b < 3)
            if (std::string s = Draw(pools[b], gap); !s.empty()) return s;
        }
      }
      if (std::string s = Draw(extra, gap); !s.empty()) return s;
    }
    return {};
  }
  // A sentence that has not been said, or empty when it has.
  std::string Once(std::string s) {
    if (s.empty() || said.contains(s)) return {};
    return Say(s);
  }

  std::string FollowUp(const std::string& topic_id, uint64_t repeat_gap = kFreshOnly) {
    for (const auto& t : Topics()) {
      if (topic_id != t.id) continue;
      Pool pool(t.follow_ups.begin(), t.follow_ups.end());
      if (std::string s = Draw(pool, repeat_gap); !s.empty()) return s;
    }
    return {};
  }
  // A question on something not talked about much yet.
  std::string NewTopicQuestion() {
    Pool pool = kGeneral;
    pool.insert(pool.end(), p.extra_follow_up.begin(), p.extra_follow_up.end());
    // The persona's own example questions, when they stand on their own (not "tell me more").
    for (const auto& level : p.styles)
      for (const auto& e : level.examples) {
        const auto w = text::Words(e);
        if (!e.empty() && e.back() == '?' && !text::HasPhrase(w, "more") &&
            !text::HasPhrase(w, "that"))
          pool.push_back(e);
      }
    if (std::string s = Draw(pool); !s.empty()) return s;
    // Every opener used: the follow-ups of topics least talked about.
    std::vector<const Topic*> order;
    for (const auto& t : Topics()) order.push_back(&t);
    std::stable_sort(order.begin(), order.end(), [&](const Topic* a, const Topic* b) {
      return topic_turns[a->id] < topic_turns[b->id];
    });
    for (const Topic* t : order)
      if (std::string s = FollowUp(t->id); !s.empty()) return s;
    // Every question asked (an hour in): the one asked longest ago comes back.
    for (const Topic* t : order)
      pool.insert(pool.end(), t->follow_ups.begin(), t->follow_ups.end());
    return Draw(pool, 1);  // never the question just asked
  }

  std::string Answer(Ask ask, size_t band) {
    const std::string first_name = p.name.substr(0, p.name.find(' '));
    switch (ask) {
      case Ask::kName:
        return Once(band == 0 ? "My name is " + p.name + "." : "I'm " + first_name + "!");
      case Ask::kAge:
        return Once(band == 2 ? "I'm " + std::to_string(p.age) + ", don't remind me!"
                              : "I'm " + std::to_string(p.age) + ".");
      case Ask::kJob:
        if (std::string s = Once("I work as " + WithArticle(FirstPerson(p.occupation)) + ".");
            !s.empty())
          return s;
        return Once("Work keeps me busy, as " + WithArticle(FirstPerson(p.occupation)) +
                    " there is always something new.");
      case Ask::kHobbies:
        for (size_t i = 0; i < p.hobbies.size(); ++i) {
          const std::string& h = p.hobbies[(next_hobby + i) % p.hobbies.size()];
          static const std::array<const char*, 3> kForms = {
              "In my free time I enjoy ", "I'm really into ", "Lately I spend a lot of time on "};
          for (const char* form : kForms) {
            if (std::string s = Once(form + h + "."); !s.empty()) {
              next_hobby = (next_hobby + i + 1) % p.hobbies.size();
              linked.insert(h);
              return s;
            }
          }
        }
        return {};
      case Ask::kLikes:
        for (size_t i = 0; i < p.likes.size(); ++i) {
          const std::string& l = p.likes[(next_like + i) % p.likes.size()];
          for (const char* form : {"I really like ", "Honestly, I love ", "I'm a big fan of "}) {
            if (std::string s = Once(form + l + "."); !s.empty()) {
              next_like = (next_like + i + 1) % p.likes.size();
              return s;
            }
          }
        }
        return Answer(Ask::kHobbies, band);
      case Ask::kDislikes:
        for (size_t i = 0; i < p.dislikes.size(); ++i) {
          const std::string& d = p.dislikes[(next_dislike + i) % p.dislikes.size()];
          for (const char* form :
               {"To be honest, I'm not a fan of ", "What gets to me is ", "I could do without "}) {
            if (std::string s = Once(form + d + "."); !s.empty()) {
              next_dislike = (next_dislike + i + 1) % p.dislikes.size();
              return s;
            }
          }
        }
        return {};
      case Ask::kBackground:
        if (std::string s = Once(BackgroundInFirstPerson(p.background)); !s.empty()) return s;
        return Once("I've told you my story already, I think. It's a simple one!");
      case Ask::kPersonality:
        if (p.personality.size() >= 2)
          return Once("People say I'm " + p.personality[0] + " and " + p.personality[1] + ".");
        return {};
      case Ask::kHowAreYou: {
        static const Styled kFine = {{
            {"I'm doing well, thank you for asking.", "I am fine, thank you.",
             "Quite well, thank you."},
            {"I'm good, thanks for asking!", "Pretty good today, thanks!", "I'm doing well!"},
            {"Great, now that we're talking.", "Ha, can't complain!", "Good, better now."},
        }};
        return DrawStyled(kFine, band);
      }
      case Ask::kAboutYou:
        if (std::string s = Once("Well, I'm " + first_name + ", " +
                                 WithArticle(FirstPerson(p.occupation)) + ".");
            !s.empty())
          return s;
        return Answer(Ask::kHobbies, band);
      case Ask::kNone:
        break;
    }
    return {};
  }
};

OfflineEngine::OfflineEngine(const PersonaProfile& persona, uint32_t seed)
    : state_(std::make_unique<State>()) {
  state_->p = persona;
  state_->rng.seed(seed);
}

OfflineEngine::~OfflineEngine() = default;

std::optional<std::string> OfflineEngine::Reply(const ReplyRequest& request,
                                                const DeltaSink& on_delta, std::string* error) {
  State& st = *state_;
  size_t level = 0;
  StyleFor(st.p, request.intimacy, &level);
  // Three wordings: the first level is formal, the last casual, the ones between warm.
  const size_t levels = st.p.styles.size();
  const size_t band = levels <= 1 ? 0 : level == 0 ? 0 : level + 1 >= levels ? 2 : 1;
  std::vector<std::string> parts;
  const auto add = [&](std::string s) {
    if (!s.empty()) parts.push_back(std::move(s));
  };

  if (request.kind == ReplyRequest::Kind::kGreeting) {
    if (!st.greeted) {
      st.greeted = true;
      add(st.Once(st.p.greeting));
    }
    if (parts.empty()) add(st.DrawStyled(kHello, band));
  } else if (request.kind == ReplyRequest::Kind::kSpeakUp) {
    add(st.DrawStyled(kSpeakUp, band, st.p.extra_speak_up));
    add(st.NewTopicQuestion());
  } else {
    const auto words = text::Words(request.user_text);
    const bool question = text::IsQuestion(request.user_text, words);
    const TurnSignals signals = AnalyzeTurn(request.user_text);
    const auto has = [&](std::initializer_list<const char*> phrases) {
      for (const char* ph : phrases)
        if (text::HasPhrase(words, ph)) return true;
      return false;
    };
    // The user's topics, in the order they appear.
    std::vector<std::string> topics;
    for (const auto& w : words)
      for (const auto& t : Topics())
        if (std::find(t.keywords.begin(), t.keywords.end(), w) != t.keywords.end() &&
            std::find(topics.begin(), topics.end(), t.id) == topics.end())
          topics.push_back(t.id);
    for (const auto& t : topics) ++st.topic_turns[t];

    if (has({"bye", "goodbye", "see you", "have to go", "gotta go", "good night"})) {
      add(st.DrawStyled(kFarewell, band, st.p.extra_farewell));
    } else {
      const Ask ask = DetectAsk(words, question);
      if (!words.empty() && (words[0] == "thanks" || words[0] == "thank") && words.size() <= 4)
        add(st.DrawStyled(kThanks, band));
      else if (words.size() <= 3 && has({"hi", "hello", "hey"}))
        add(st.DrawStyled(kHello, band));
      else if (ask == Ask::kNone && signals.words <= 2 && !question)
        add(st.DrawStyled(kShort, band));
      else if (ask == Ask::kNone && !question) {
        const Styled& ack = signals.negative_words > signals.positive_words   ? kAckNegative
                            : signals.positive_words > signals.negative_words ? kAckPositive
                                                                              : kAckNeutral;
        add(st.DrawStyled(ack, band, st.p.extra_acknowledge));
      }
      // Something the persona loves too.
      bool linked = false;
      for (const auto& item : [&] {
             std::vector<std::string> all = st.p.hobbies;
             all.insert(all.end(), st.p.likes.begin(), st.p.likes.end());
             return all;
           }()) {
        if (st.linked.contains(item)) continue;
        const auto item_words = text::Words(item);
        const bool shared = std::any_of(item_words.begin(), item_words.end(), [&](const auto& iw) {
          return iw.size() > 3 && std::find(words.begin(), words.end(), iw) != words.end();
        });
        if (!shared) continue;
        st.linked.insert(item);
        add(st.Once(band == 0 ? "I enjoy " + item + " myself." : "Oh, I love " + item + " too!"));
        linked = true;
        break;
      }
      if (ask != Ask::kNone) {
        // "Do you like X?" with X not among the persona's likes: it says so, then what it likes.
        if (ask == Ask::kLikes && !linked) {
          std::string a = st.Answer(ask, band);
          if (!a.empty()) add("Not especially, but " + LowerFirst(a));
        } else if (!(ask == Ask::kLikes && linked)) {
          add(st.Answer(ask, band));
        }
        add(st.DrawStyled(kReturn, band));
      } else if (question) {
        add(st.DrawStyled(kReflect, band));
      } else {
        // Keep the conversation going: the user's own topic first, then a new one.
        std::string q;
        for (const auto& t : topics)
          if (q.empty()) q = st.FollowUp(t);
        if (q.empty()) q = st.NewTopicQuestion();
        add(q);
      }
    }
  }
  if (parts.empty()) add(st.NewTopicQuestion());
  if (parts.empty()) {
    *error = "the offline engine has nothing left to say";
    return std::nullopt;
  }
  std::string reply;
  for (auto& p : parts) {
    if (!reply.empty()) reply += ' ';
    reply += Capitalize(p);
  }
  if (on_delta && !on_delta(reply)) {
    *error = "cancelled";
    return std::nullopt;
  }
  return reply;
}

}  // namespace parley::dialogue
