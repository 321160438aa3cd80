// Dialogue policy and engines without a server: turn-taking as a pure state machine, the SSE
// reader, sentence streaming, intimacy, safety, the offline persona engine on real persona
// files, and the LLM client against a real local OpenAI-compatible HTTP server.
#include "dialogue/dialogue.h"

#include <gtest/gtest.h>
#include <json/json.h>

#include <fstream>
#include <set>
#include <sstream>

#include "tests/support/fake_openai.h"

namespace parley::dialogue {
namespace {

using Kind = TurnTaking::Action::Kind;

PersonaProfile LoadPersona(const std::string& id) {
  std::ifstream in(std::string(PARLEY_SOURCE_DIR) + "/personas/" + id + ".json");
  Json::Value doc;
  in >> doc;
  return ProfileFromDocument(id, doc);
}

// ---- Turn-taking ------------------------------------------------------------------------------

TEST(TurnTaking, GreetsOnceWhenMediaStartsAndAnswersAFinishedTurn) {
  TurnTaking tt({});
  EXPECT_EQ(tt.Poll(0).kind, Kind::kNone);
  tt.OnMediaStarted(100);
  EXPECT_EQ(tt.Poll(100).kind, Kind::kGreet);
  EXPECT_EQ(tt.Poll(101).kind, Kind::kNone);  // thinking: nothing more until the reply is ready
  tt.OnReplyReady(200, /*spoken=*/true);
  tt.OnPersonaSpeechEnd(3000);
  tt.OnMediaStarted(3100);  // a restart of media does not greet again
  tt.OnUserSpeechStart(4000);
  tt.OnUserSpeechEnd(5000);
  EXPECT_EQ(tt.Poll(5000).kind, Kind::kNone);  // the transcript is not in yet
  tt.OnUserTurn("  hello there  ", 5100);
  const auto a = tt.Poll(5100);
  EXPECT_EQ(a.kind, Kind::kAnswer);
  EXPECT_EQ(a.text, "hello there");
}

TEST(TurnTaking, NeverAnswersWhileTheUserIsMidTurnAndJoinsTheirTurns) {
  TurnTaking tt({});
  tt.OnUserSpeechStart(0);
  tt.OnUserSpeechEnd(1000);
  tt.OnUserSpeechStart(1050);  // they go on before the first transcript arrives
  tt.OnUserTurn("I went hiking", 1100);
  EXPECT_EQ(tt.Poll(1100).kind, Kind::kNone);
  tt.OnUserSpeechEnd(2500);
  tt.OnUserTurn("with my sister", 2600);
  const auto a = tt.Poll(2600);
  EXPECT_EQ(a.kind, Kind::kAnswer);
  EXPECT_EQ(a.text, "I went hiking with my sister");
}

// A turn typed during the persona's reply, then spoken after it: the answer waits for the
// spoken part's transcript instead of answering the typed part alone the moment speech ends.
TEST(TurnTaking, WaitsForTheTranscriptOfSpeechThatJustEndedBeforeAnswering) {
  TurnTaking tt({});
  tt.OnUserTurn("I have a question", 0);
  ASSERT_EQ(tt.Poll(0).kind, Kind::kAnswer);
  tt.OnReplyReady(10, true);
  tt.OnPersonaSpeechEnd(2000);
  tt.OnUserTurn("so", 2100);  // pending
  tt.OnUserSpeechStart(2200);
  tt.OnUserSpeechEnd(4000, /*transcript_coming=*/true);
  EXPECT_EQ(tt.Poll(4000).kind, Kind::kNone);
  EXPECT_EQ(tt.NextDeadline(), 4000 + TurnTakingConfig{}.final_wait_ms);
  tt.OnTranscript(4300);
  tt.OnUserTurn("where do you live", 4300);
  const auto a = tt.Poll(4300);
  EXPECT_EQ(a.kind, Kind::kAnswer);
  EXPECT_EQ(a.text, "so where do you live");
}

// A transcript that never comes (the recogniser failed or was refused) holds nothing back for
// longer than the wait; one that comes without words releases it at once.
TEST(TurnTaking, ALostTranscriptHoldsTheAnswerBackOnlyForTheWait) {
  TurnTakingConfig c;
  c.final_wait_ms = 3000;
  TurnTaking tt(c);
  tt.OnUserTurn("hello", 0);
  tt.OnUserSpeechStart(0);
  tt.OnUserSpeechEnd(1000, true);
  EXPECT_EQ(tt.Poll(3999).kind, Kind::kNone);
  const auto a = tt.Poll(4000);
  EXPECT_EQ(a.kind, Kind::kAnswer);
  EXPECT_EQ(a.text, "hello");
  tt.OnReplyReady(4010, true);
  tt.OnPersonaSpeechEnd(6000);
  tt.OnUserTurn("and you", 6100);
  tt.OnUserSpeechStart(6100);
  tt.OnUserSpeechEnd(7000, true);
  EXPECT_EQ(tt.Poll(7000).kind, Kind::kNone);
  tt.OnTranscript(7200);  // a cough: no words, no turn
  EXPECT_EQ(tt.Poll(7200).text, "and you");
}

TEST(TurnTaking, NeverTalksOverItsOwnVoiceAndAnswersWhatCameMeanwhile) {
  TurnTaking tt({});
  tt.OnUserTurn("first", 0);
  ASSERT_EQ(tt.Poll(0).kind, Kind::kAnswer);
  tt.OnUserTurn("second", 50);  // typed while the reply is being made
  EXPECT_EQ(tt.Poll(60).kind, Kind::kNone);
  tt.OnReplyReady(100, true);
  EXPECT_EQ(tt.Poll(500).kind, Kind::kNone);  // still speaking
  tt.OnPersonaSpeechEnd(2000);
  const auto a = tt.Poll(2000);
  EXPECT_EQ(a.kind, Kind::kAnswer);
  EXPECT_EQ(a.text, "second");
}

TEST(TurnTaking, SpeaksUpAfterTheQuietTimeAtMostTwiceInARow) {
  TurnTakingConfig c;
  c.speak_up_after_ms = 8000;
  c.max_speak_ups = 2;
  TurnTaking tt(c);
  tt.OnMediaStarted(0);
  ASSERT_EQ(tt.Poll(0).kind, Kind::kGreet);
  tt.OnReplyReady(10, true);
  tt.OnPersonaSpeechEnd(2000);
  EXPECT_EQ(tt.NextDeadline(), 10000);
  EXPECT_EQ(tt.Poll(9999).kind, Kind::kNone);
  EXPECT_EQ(tt.Poll(10000).kind, Kind::kSpeakUp);
  tt.OnReplyReady(10010, true);
  tt.OnPersonaSpeechEnd(12000);
  EXPECT_EQ(tt.Poll(20000).kind, Kind::kSpeakUp);
  tt.OnReplyReady(20010, true);
  tt.OnPersonaSpeechEnd(22000);
  EXPECT_EQ(tt.Poll(60000).kind, Kind::kNone);  // two in a row: it waits for the user now
  EXPECT_FALSE(tt.NextDeadline().has_value());
  tt.OnUserTurn("sorry, I'm back", 61000);
  EXPECT_EQ(tt.Poll(61000).kind, Kind::kAnswer);
  tt.OnReplyReady(61010, true);
  tt.OnPersonaSpeechEnd(63000);
  EXPECT_EQ(tt.Poll(71000).kind, Kind::kSpeakUp);  // the count starts again
}

TEST(TurnTaking, AWordlessTurnIsNoTurnAndTheUserSpeakingFirstSkipsTheGreeting) {
  TurnTaking tt({});
  tt.OnMediaStarted(0);
  tt.OnUserTurn("   ", 10);
  tt.OnUserTurn("hi, I'm Alex", 20);
  const auto a = tt.Poll(20);
  EXPECT_EQ(a.kind, Kind::kAnswer);  // answered, not greeted over
  tt.OnReplyFailed(30);
  EXPECT_EQ(tt.Poll(40).kind, Kind::kNone);  // no greeting after the user has spoken
}

// ---- Interruptions -----------------------------------------------------------------------------

using Act = InterruptionPolicy::Action;

TEST(Interruption, SpeechOverThePersonaPausesAtOnceAndCancelsOnceAWordOfItIsHeard) {
  InterruptionPolicy p({});
  EXPECT_EQ(p.OnUserSpeechStart(0), Act::kNone);  // nobody to interrupt
  p.OnUserSpeechEnd(300);
  p.OnPersonaSpeechStart(1000);
  EXPECT_EQ(p.OnUserSpeechStart(3000), Act::kPause);
  EXPECT_EQ(p.OnUserSpeechProgress(400, 3400), Act::kNone);
  EXPECT_EQ(p.OnUserWords("wait", 3450), Act::kNone);          // one word, 0.45 s
  EXPECT_EQ(p.OnUserSpeechProgress(500, 3500), Act::kCancel);  // 0.5 s with a real word
  EXPECT_FALSE(p.persona_speaking());
  EXPECT_EQ(p.interruptions(), 1);
}

TEST(Interruption, SpeechLongerThanAnyBackchannelCancelsBeforeTheRecogniserSaysAWord) {
  InterruptionPolicy p({});
  p.OnPersonaSpeechStart(0);
  ASSERT_EQ(p.OnUserSpeechStart(3000), Act::kPause);
  EXPECT_EQ(p.OnUserSpeechProgress(900, 3900), Act::kNone);  // could still be a long "mhm"
  EXPECT_EQ(p.OnUserSpeechProgress(1000, 4000), Act::kCancel);
}

TEST(Interruption, AShortTurnIsDecidedByItsTranscriptOneRealWordCuts) {
  InterruptionPolicy p({});
  p.OnPersonaSpeechStart(0);
  ASSERT_EQ(p.OnUserSpeechStart(3000), Act::kPause);
  EXPECT_EQ(p.OnUserSpeechProgress(520, 3520), Act::kNone);
  EXPECT_EQ(p.OnUserSpeechEnd(4300, /*transcript_coming=*/true), Act::kNone);
  EXPECT_EQ(p.OnUserFinal("stop", 0.66, 4320), Act::kCancel);
  // The same word heard unsurely (an echo's residue, a hum heard as "but") does not.
  InterruptionPolicy unsure({});
  unsure.OnPersonaSpeechStart(0);
  ASSERT_EQ(unsure.OnUserSpeechStart(3000), Act::kPause);
  EXPECT_EQ(unsure.OnUserSpeechEnd(3400, true), Act::kNone);
  EXPECT_EQ(unsure.OnUserFinal("but", 0.43, 3420), Act::kNone);
  EXPECT_EQ(unsure.Poll(5000), Act::kResume);

  // A hummed "mhm" the recogniser hears as no word at all resumes; so does a final that is
  // later than the false-alarm timer, which waits for it.
  InterruptionPolicy q({});
  q.OnPersonaSpeechStart(0);
  ASSERT_EQ(q.OnUserSpeechStart(3000), Act::kPause);
  EXPECT_EQ(q.OnUserSpeechProgress(650, 3650), Act::kNone);
  EXPECT_EQ(q.OnUserSpeechEnd(4400, true), Act::kNone);
  EXPECT_EQ(q.NextDeadline(), 7400);  // the transcript's wait (4.4 + 3 s) is the later
  EXPECT_EQ(q.Poll(5000), Act::kNone);
  EXPECT_EQ(q.OnUserFinal("", 0.9, 5100), Act::kResume);  // 2 s after the pause: at once
  EXPECT_EQ(q.false_interruptions(), 1);

  // No transcript ever comes (the recogniser failed): the wait is bounded.
  InterruptionPolicy r({});
  r.OnPersonaSpeechStart(0);
  ASSERT_EQ(r.OnUserSpeechStart(3000), Act::kPause);
  EXPECT_EQ(r.OnUserSpeechEnd(3700, true), Act::kNone);
  EXPECT_EQ(r.Poll(6699), Act::kNone);
  EXPECT_EQ(r.Poll(6700), Act::kResume);
}

TEST(Interruption, RealWordsCancelSoonerThanTheDurationAndBackchannelsNever) {
  InterruptionPolicy p({});
  p.OnPersonaSpeechStart(0);
  ASSERT_EQ(p.OnUserSpeechStart(2000), Act::kPause);
  EXPECT_EQ(p.OnUserWords("wait", 2200), Act::kNone);
  EXPECT_EQ(p.OnUserWords("wait no", 2300), Act::kCancel);

  InterruptionPolicy q({});
  q.OnPersonaSpeechStart(0);
  ASSERT_EQ(q.OnUserSpeechStart(2000), Act::kPause);
  EXPECT_EQ(q.OnUserWords("mhm", 2300), Act::kNone);
  EXPECT_EQ(q.OnUserWords("yeah okay", 2700), Act::kNone);  // long, but all backchannel
  EXPECT_EQ(q.OnUserSpeechProgress(1200, 3200), Act::kNone);
  EXPECT_EQ(q.OnUserSpeechEnd(3300, true), Act::kNone);
  EXPECT_EQ(q.OnUserFinal("yeah okay", 0.9, 3310), Act::kNone);
  EXPECT_EQ(q.Poll(3999), Act::kNone);
  EXPECT_EQ(q.Poll(4000), Act::kResume);  // 2 s after the pause, no real word
  EXPECT_TRUE(q.persona_speaking());
  EXPECT_EQ(q.false_interruptions(), 1);
  EXPECT_EQ(q.interruptions(), 0);
}

TEST(Interruption, ACoughPausesThenThePersonaResumes) {
  InterruptionPolicy p({});
  p.OnPersonaSpeechStart(0);
  ASSERT_EQ(p.OnUserSpeechStart(2500), Act::kPause);
  EXPECT_EQ(p.OnUserSpeechProgress(150, 2650), Act::kNone);
  // The turn's trailing silence (the endpointer still "in speech") is not speech.
  EXPECT_EQ(p.OnUserSpeechProgress(150, 3040), Act::kNone);
  EXPECT_EQ(p.OnUserSpeechEnd(3050), Act::kNone);
  EXPECT_EQ(p.NextDeadline(), 4500);
  EXPECT_EQ(p.Poll(4500), Act::kResume);
  // A second one later is paused again.
  EXPECT_EQ(p.OnUserSpeechStart(6000), Act::kPause);
}

TEST(Interruption, TheFirstMomentsOfThePersonasVoiceNeedStrongerEvidence) {
  InterruptionPolicy p({});
  p.OnPersonaSpeechStart(0);
  ASSERT_EQ(p.OnUserSpeechStart(200), Act::kPause);
  EXPECT_EQ(p.OnUserSpeechProgress(500, 700), Act::kNone);  // not enough in the warm-up
  EXPECT_EQ(p.OnUserWords("no wait", 800), Act::kNone);     // two words: not enough either
  EXPECT_EQ(p.OnUserSpeechProgress(900, 1100), Act::kCancel);
  InterruptionPolicy one({});
  one.OnPersonaSpeechStart(0);
  ASSERT_EQ(one.OnUserSpeechStart(200), Act::kPause);
  EXPECT_EQ(one.OnUserSpeechEnd(700, true), Act::kNone);
  EXPECT_EQ(one.OnUserFinal("stop", 0.9, 720), Act::kNone);  // one word is not enough here
  EXPECT_EQ(one.OnUserSpeechStart(1000), Act::kNone);
  EXPECT_EQ(one.OnUserSpeechEnd(1500, true), Act::kNone);
  EXPECT_EQ(one.OnUserFinal("stop it", 0.9, 1520), Act::kCancel);  // the usual two are
  InterruptionPolicy q({});
  q.OnPersonaSpeechStart(0);
  ASSERT_EQ(q.OnUserSpeechStart(300), Act::kPause);
  EXPECT_EQ(q.OnUserWords("no wait stop", 500), Act::kCancel);  // three words
}

TEST(Interruption, ConfigProblemsAreNamed) {
  InterruptionConfig c;
  EXPECT_TRUE(c.Validate().empty());
  c.warmup_min_speech_ms = 100;
  EXPECT_FALSE(c.Validate().empty());
  c = {};
  c.backchannel_max_ms = 300;  // shorter than the interruption's speech
  EXPECT_FALSE(c.Validate().empty());
}

// ---- SSE and sentences --------------------------------------------------------------------------

TEST(SseParser, EventsAreTheSameWhereverTheStreamIsSplit) {
  const std::string body =
      ": keep-alive comment\r\n"
      "data: {\"a\":1}\r\n\r\n"
      "event: message\n"
      "data: line one\n"
      "data:line two\n\n"
      "data: [DONE]\r\r";
  const std::vector<std::string> want = {"{\"a\":1}", "line one\nline two", "[DONE]"};
  for (size_t cut = 1; cut < body.size(); ++cut) {
    for (size_t cut2 = cut; cut2 < body.size(); cut2 += 7) {
      SseParser p;
      std::vector<std::string> got;
      p.Feed(std::string_view(body).substr(0, cut), &got);
      p.Feed(std::string_view(body).substr(cut, cut2 - cut), &got);
      p.Feed(std::string_view(body).substr(cut2), &got);
      ASSERT_EQ(got, want) << "split at " << cut << " and " << cut2;
    }
  }
}

TEST(SentenceSplitter, YieldsEachSentenceAsSoonAsItIsComplete) {
  SentenceSplitter s;
  std::vector<std::string> out;
  for (const char* piece : {"Oh, I love", " that place! Have you", " tried the lemon cake",
                            "? It's", " about 3.5 dollars. Mr. Kim makes it"})
    s.Feed(piece, &out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0], "Oh, I love that place!");
  EXPECT_EQ(out[1], "Have you tried the lemon cake?");
  EXPECT_EQ(out[2], "It's about 3.5 dollars.");
  EXPECT_EQ(s.Flush().value_or(""), "Mr. Kim makes it");
  EXPECT_FALSE(s.Flush().has_value());
}

// ---- Intimacy and safety
// --------------------------------------------------------------------------

TEST(Intimacy, AQuestionInsideAnUnpunctuatedTranscriptIsStillAQuestionAboutThePersona) {
  EXPECT_TRUE(AnalyzeTurn("i am doing well thank you how was your weekend").about_persona);
  EXPECT_TRUE(AnalyzeTurn("that sounds lovely have you ever been hiking").about_persona);
  EXPECT_FALSE(AnalyzeTurn("i know what you mean it was a long week").question);
  EXPECT_FALSE(AnalyzeTurn("i went to work and then i went home").question);
}

TEST(Intimacy, EngagedTurnsRaiseItAndCurtOrNegativeOnesLowerIt) {
  IntimacyModel m(10);
  EXPECT_GT(m.Update(AnalyzeTurn("What do you love most about film photography?")), 0);
  EXPECT_GT(m.Update(AnalyzeTurn("I grew up near the mountains and I really love hiking there",
                                 /*smiled=*/true)),
            2);
  const int engaged = m.level();
  EXPECT_LT(m.Update(AnalyzeTurn("no")), 0);
  EXPECT_LT(m.Update(AnalyzeTurn("this is boring and I hate it")), 0);
  EXPECT_LT(m.level(), engaged);
  for (int i = 0; i < 200; ++i) m.Update(AnalyzeTurn("That's great, what do you like to do?"));
  EXPECT_EQ(m.level(), 100);
  for (int i = 0; i < 200; ++i) m.Update(AnalyzeTurn("bad"));
  EXPECT_EQ(m.level(), 0);
}

TEST(Safety, CrisisWordsStepOutOfRoleInEnglishAndKoreanWithoutFalseAlarms) {
  const auto hit = CheckSafety("Honestly some days I want to die");
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->category, "self_harm");
  EXPECT_NE(hit->message.find("988"), std::string::npos);
  EXPECT_EQ(CheckSafety("요즘 너무 힘들어서 죽고 싶어요")->category, "self_harm");
  EXPECT_EQ(CheckSafety("My stepfather hits me when he drinks")->category, "abuse");
  EXPECT_FALSE(CheckSafety("That movie was so funny I almost died laughing"));
  EXPECT_FALSE(CheckSafety("I killed it at my presentation today"));
}

// ---- The offline persona engine
// -------------------------------------------------------------------

std::string Say(OfflineEngine& e, const PersonaProfile& p, const std::string& text, int intimacy,
                ReplyRequest::Kind kind = ReplyRequest::Kind::kAnswer) {
  ReplyRequest r;
  r.kind = kind;
  r.persona = &p;
  r.user_text = text;
  r.intimacy = intimacy;
  std::string streamed, error;
  const auto reply = e.Reply(
      r,
      [&](std::string_view d) {
        streamed += d;
        return true;
      },
      &error);
  EXPECT_TRUE(reply) << error;
  EXPECT_EQ(streamed, reply.value_or(""));
  return reply.value_or("");
}

std::vector<std::string> Sentences(const std::string& text) {
  SentenceSplitter s(1);
  std::vector<std::string> out;
  s.Feed(text, &out);
  if (auto rest = s.Flush()) out.push_back(*rest);
  return out;
}

// Sixty turns of a person's side of a conversation: small talk, questions, short answers.
const std::vector<std::string>& SixtyTurns() {
  static const std::vector<std::string> script = {"Hi!",
                                                  "I'm fine, thanks.",
                                                  "I work as a nurse at a big hospital.",
                                                  "It's tiring but I like it.",
                                                  "What do you do?",
                                                  "That sounds fun.",
                                                  "I like hiking on weekends.",
                                                  "Yes.",
                                                  "Where did you grow up?",
                                                  "I grew up in a small town.",
                                                  "My family still lives there.",
                                                  "I have two sisters.",
                                                  "We cook together when I visit.",
                                                  "What are your hobbies?",
                                                  "I love reading novels.",
                                                  "Mostly fantasy.",
                                                  "ok",
                                                  "Do you like coffee?",
                                                  "I drink tea mostly.",
                                                  "My cat likes to sit on my book when I read.",
                                                  "Haha.",
                                                  "Work has been stressful lately.",
                                                  "Lots of night shifts.",
                                                  "I try to go for walks.",
                                                  "What do you dislike?",
                                                  "Me too, that annoys me.",
                                                  "I went to a concert last week.",
                                                  "It was a jazz band.",
                                                  "I play a little piano.",
                                                  "Not very well.",
                                                  "What kind of person are you?",
                                                  "That's nice.",
                                                  "I'm planning a trip to Japan.",
                                                  "I want to see Kyoto.",
                                                  "Do you travel a lot?",
                                                  "I saw a great movie yesterday.",
                                                  "It was a drama about a family.",
                                                  "I cried a bit.",
                                                  "mm",
                                                  "I don't know.",
                                                  "How old are you?",
                                                  "I'm thirty.",
                                                  "I'm learning Spanish.",
                                                  "It's hard but fun.",
                                                  "My friend teaches me.",
                                                  "We met at university.",
                                                  "I studied biology.",
                                                  "Do you enjoy your job?",
                                                  "I like my job too.",
                                                  "Sometimes I play games to relax.",
                                                  "Mostly puzzle games.",
                                                  "Yeah.",
                                                  "The weather is nice today.",
                                                  "I might go to the park.",
                                                  "What's your name again?",
                                                  "Tell me about yourself.",
                                                  "That's really interesting.",
                                                  "Thank you.",
                                                  "I have to cook dinner soon.",
                                                  "Okay, bye!"};
  return script;
}

TEST(OfflineEngine, HoldsASixtyTurnConversationWithoutRepeatingALine) {
  const auto& script = SixtyTurns();
  ASSERT_EQ(script.size(), 60u);
  for (const char* id : {"seoa", "mina", "daniel"}) {
    const PersonaProfile p = LoadPersona(id);
    OfflineEngine engine(p, 7);
    std::set<std::string> said;
    IntimacyModel intimacy;
    said.insert(Sentences(Say(engine, p, "", intimacy.level(), ReplyRequest::Kind::kGreeting))[0]);
    for (const auto& turn : script) {
      intimacy.Update(AnalyzeTurn(turn));
      const std::string reply = Say(engine, p, turn, intimacy.level());
      ASSERT_FALSE(reply.empty()) << id << " after '" << turn << "'";
      for (const auto& sentence : Sentences(reply))
        EXPECT_TRUE(said.insert(sentence).second)
            << id << " repeated \"" << sentence << "\" after '" << turn << "'";
    }
  }
}

TEST(OfflineEngine, KeepsAnsweringAnHourLongConversationWithoutRepeatingARecentLine) {
  // 600 turns (about an hour and a half of practice): past every fresh line of every pool, the
  // persona still answers every turn, and a line comes back only after many others.
  for (const char* id : {"seoa", "mina", "daniel"}) {
    const PersonaProfile p = LoadPersona(id);
    OfflineEngine engine(p, 11);
    IntimacyModel intimacy;
    std::map<std::string, size_t> last_said;  // sentence -> its index in the session
    size_t index = 0, repeats = 0;
    Say(engine, p, "", intimacy.level(), ReplyRequest::Kind::kGreeting);
    for (size_t turn = 0; turn < 600; ++turn) {
      const std::string& said = SixtyTurns()[turn % 60];
      intimacy.Update(AnalyzeTurn(said));
      const std::string reply = Say(engine, p, said, intimacy.level());
      ASSERT_FALSE(reply.empty()) << id << " went quiet at turn " << turn << " ('" << said << "')";
      for (const auto& sentence : Sentences(reply)) {
        if (const auto it = last_said.find(sentence); it != last_said.end()) {
          ++repeats;
          EXPECT_GE(index - it->second, 40u)
              << id << " said \"" << sentence << "\" again at turn " << turn << ", "
              << index - it->second << " sentences after";
        }
        last_said[sentence] = index++;
      }
    }
    EXPECT_GT(repeats, 0u) << id << ": the run did not get past the fresh lines";
  }
}

TEST(OfflineEngine, AnswersQuestionsAboutThePersonaFromItsFile) {
  const PersonaProfile p = LoadPersona("seoa");
  OfflineEngine e(p);
  EXPECT_NE(Say(e, p, "What do you do for a living?", 10).find("marketing lead"),
            std::string::npos);
  const std::string hobbies = Say(e, p, "What do you do in your free time?", 10);
  EXPECT_TRUE(hobbies.find(p.hobbies[0]) != std::string::npos ||
              hobbies.find(p.hobbies[1]) != std::string::npos)
      << hobbies;
  EXPECT_NE(Say(e, p, "Where did you grow up?", 10).find("I grew up by the sea"),
            std::string::npos);
  EXPECT_NE(Say(e, p, "How old are you?", 10).find("28"), std::string::npos);
  EXPECT_NE(Say(e, p, "What's your name?", 10).find("Seoa"), std::string::npos);
  const PersonaProfile d = LoadPersona("daniel");
  OfflineEngine de(d);
  // His file speaks of him in the third person ("Has hired dozens..."): he speaks in the first.
  EXPECT_NE(Say(de, d, "Where are you from?", 10).find("I have hired dozens of engineers"),
            std::string::npos);
  EXPECT_NE(Say(de, d, "What do you do?", 10).find("interviewing for my team"), std::string::npos);
  // Something the user shares that the persona loves too.
  EXPECT_NE(Say(e, p, "Last weekend I went hiking with friends.", 10).find("hiking"),
            std::string::npos);
}

TEST(OfflineEngine, ItsStyleShiftsFromFormalToCasualWithIntimacy) {
  const PersonaProfile p = LoadPersona("seoa");
  const std::vector<std::string> turns = {
      "I had a great day at work.",  "I baked bread this morning.",    "My train was late again.",
      "I watched a film yesterday.", "I started learning the guitar.", "We had pizza for lunch.",
      "My sister visited me.",       "It rained all day here."};
  const auto openers = [&](int intimacy) {
    OfflineEngine e(p, 3);
    std::set<std::string> first;
    int exclamations = 0;
    for (const auto& t : turns) {
      const std::string r = Say(e, p, t, intimacy);
      first.insert(Sentences(r)[0]);
      exclamations += static_cast<int>(std::count(r.begin(), r.end(), '!'));
    }
    return std::make_pair(first, exclamations);
  };
  const auto [formal, formal_bangs] = openers(0);
  const auto [casual, casual_bangs] = openers(90);
  for (const auto& s : formal) EXPECT_FALSE(casual.contains(s)) << s;
  EXPECT_GT(casual_bangs, formal_bangs);
  EXPECT_EQ(StyleFor(p, 0).name, "formal");
  EXPECT_EQ(StyleFor(p, 90).name, "casual");
  EXPECT_NE(BuildSystemPrompt(p, 90).find("casual"), std::string::npos);
  EXPECT_NE(BuildSystemPrompt(p, 0).find("Seoa Lee, 28"), std::string::npos);
}

TEST(OfflineEngine, WorksOnAMinimalPersonaFileAndSpeaksUpAfterSilence) {
  Json::Value doc;
  std::istringstream(R"({"name":"Ana","age":30,"gender":"female","language":"en",
    "occupation":"Baker","mbti":"ISFP","summary":"Kind.","personality":["kind","calm"],
    "hobbies":["baking"],"speaking_style":{"levels":[{"min_intimacy":0,"name":"formal",
    "description":"Polite.","examples":["Hello."]},{"min_intimacy":50,"name":"casual",
    "description":"Relaxed.","examples":["Hey!"]}]},"greeting":"Hello.",
    "tts":{"engine":"flite","voice":"slt"},
    "lines":{"speak_up":["Shall I tell you about my bakery?"]}})") >>
      doc;
  const PersonaProfile p = ProfileFromDocument("ana", doc);
  OfflineEngine e(p);
  EXPECT_EQ(Say(e, p, "", 0, ReplyRequest::Kind::kGreeting), "Hello.");
  std::set<std::string> said;
  for (int i = 0; i < 12; ++i) {
    const std::string r = Say(e, p, "", 0, ReplyRequest::Kind::kSpeakUp);
    EXPECT_NE(r.find('?'), std::string::npos) << r;  // it asks something
    EXPECT_TRUE(said.insert(r).second) << r;
  }
  EXPECT_EQ(Say(e, p, "What do you do?", 0).find("I work as a baker."), 0u);
}

// ---- The LLM engine against a real local OpenAI-compatible server
// ---------------------------------

LlmConfig ConfigFor(const testing::FakeOpenAi& service) {
  LlmConfig c;
  c.base_url = service.url();
  c.api_key = "sk-test";
  c.model = "test-model";
  c.first_token_timeout_ms = 1500;
  c.total_timeout_ms = 5000;
  c.retry_backoff_ms = 10;
  return c;
}

struct Streamed {
  std::optional<std::string> reply;
  std::vector<std::string> deltas;
  std::string error;
};

Streamed Ask(LlmEngine& engine, const PersonaProfile& p, const std::string& text) {
  ReplyRequest r;
  r.persona = &p;
  r.user_text = text;
  r.intimacy = 20;
  r.history = {{Message::Role::kUser, "Hi"}, {Message::Role::kAssistant, "Hello!"}};
  Streamed s;
  s.reply = engine.Reply(
      r,
      [&](std::string_view d) {
        s.deltas.emplace_back(d);
        return true;
      },
      &s.error);
  return s;
}

TEST(LlmEngine, StreamsTheRepliesDeltasSplitAnywhereInTheApisExactShape) {
  const std::string reply = "Oh, I love that place! Have you tried the lemon cake?";
  testing::FakeOpenAi service([&](int, const Json::Value&) {
    testing::FakeOpenAi::Chat c;
    c.pieces = testing::FakeOpenAi::Split(testing::FakeOpenAi::StreamBody(reply), 7);
    c.piece_delay_ms = 1;
    return c;
  });
  std::string error;
  auto engine = LlmEngine::Create(ConfigFor(service), &error);
  ASSERT_TRUE(engine) << error;
  const PersonaProfile p = LoadPersona("seoa");
  const Streamed s = Ask(*engine, p, "I went to the new cafe downtown.");
  ASSERT_TRUE(s.reply) << s.error;
  EXPECT_EQ(*s.reply, reply);
  EXPECT_GT(s.deltas.size(), 5u);
  std::string joined;
  for (const auto& d : s.deltas) joined += d;
  EXPECT_EQ(joined, reply);
  const auto requests = service.chat_requests();
  ASSERT_EQ(requests.size(), 1u);
  const Json::Value& req = requests[0];
  EXPECT_TRUE(req["stream"].asBool());
  EXPECT_EQ(req["model"].asString(), "test-model");
  ASSERT_EQ(req["messages"].size(), 4u);
  EXPECT_EQ(req["messages"][0]["role"].asString(), "system");
  EXPECT_NE(req["messages"][0]["content"].asString().find("Seoa Lee"), std::string::npos);
  EXPECT_EQ(req["messages"][1]["role"].asString(), "user");
  EXPECT_EQ(req["messages"][2]["role"].asString(), "assistant");
  EXPECT_EQ(req["messages"][3]["content"].asString(), "I went to the new cafe downtown.");
  EXPECT_EQ(service.authorizations()[0], "Bearer sk-test");
}

TEST(LlmEngine, RetriesA429BeforeTheFirstTokenThenStreams) {
  testing::FakeOpenAi service([](int index, const Json::Value&) {
    testing::FakeOpenAi::Chat c;
    if (index == 0) {
      c.status = 429;
      c.content_type = "application/json";
      c.pieces = {R"({"error":{"message":"Rate limit reached","type":"requests"}})"};
      return c;
    }
    c.pieces = {testing::FakeOpenAi::StreamBody("Sure, tell me more.")};
    return c;
  });
  std::string error;
  auto engine = LlmEngine::Create(ConfigFor(service), &error);
  ASSERT_TRUE(engine) << error;
  const Streamed s = Ask(*engine, LoadPersona("mina"), "Can I tell you something?");
  ASSERT_TRUE(s.reply) << s.error;
  EXPECT_EQ(*s.reply, "Sure, tell me more.");
  EXPECT_EQ(service.chat_requests().size(), 2u);
}

TEST(LlmEngine, AnErrorObjectMidStreamIsAFailureNotAReply) {
  testing::FakeOpenAi service([](int, const Json::Value&) {
    testing::FakeOpenAi::Chat c;
    std::string body = testing::FakeOpenAi::StreamBody("This reply will be cut");
    body = body.substr(0, body.find("will"));
    body = body.substr(0, body.rfind("data:"));
    body += "data: {\"error\":{\"message\":\"model overloaded\",\"type\":\"server_error\"}}\n\n";
    c.pieces = {body};
    return c;
  });
  std::string error;
  auto engine = LlmEngine::Create(ConfigFor(service), &error);
  ASSERT_TRUE(engine) << error;
  const Streamed s = Ask(*engine, LoadPersona("mina"), "Hello");
  EXPECT_FALSE(s.reply);
  EXPECT_NE(s.error.find("model overloaded"), std::string::npos) << s.error;
  EXPECT_FALSE(s.deltas.empty());                 // the text before the error was streamed
  EXPECT_EQ(service.chat_requests().size(), 1u);  // not retried after the first token
}

// Found by tests/fuzz/llm_stream_fuzz: a chunk whose "choices" held a number threw from jsoncpp
// inside libcurl's callback and took the whole server down; a chunk nested 5,000 deep did too.
TEST(LlmEngine, ChunksOfAnyShapeAreReadOrRefusedNeverThrown) {
  testing::FakeOpenAi odd([](int, const Json::Value&) {
    testing::FakeOpenAi::Chat c;
    c.pieces = {
        "data: {\"choices\":[1,{\"delta\":\"x\"},{\"delta\":{\"content\":\"Still \"}}]}\n\n",
        "data: {\"choices\":\"none\"}\n\ndata: {\"choices\":[[]],\"x\":{}}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"here.\"}}]}\n\ndata: [DONE]\n\n"};
    return c;
  });
  std::string error;
  auto engine = LlmEngine::Create(ConfigFor(odd), &error);
  ASSERT_TRUE(engine) << error;
  const Streamed s = Ask(*engine, LoadPersona("mina"), "Hello");
  ASSERT_TRUE(s.reply) << s.error;
  EXPECT_EQ(*s.reply, "Still here.");

  testing::FakeOpenAi deep([](int, const Json::Value&) {
    testing::FakeOpenAi::Chat c;
    c.pieces = {"data: " + std::string(5000, '[') + "\n\n"};
    return c;
  });
  engine = LlmEngine::Create(ConfigFor(deep), &error);
  ASSERT_TRUE(engine) << error;
  const Streamed d = Ask(*engine, LoadPersona("mina"), "Hello");
  EXPECT_FALSE(d.reply);
  EXPECT_NE(d.error.find("not JSON"), std::string::npos) << d.error;
}

TEST(LlmEngine, ASlowFirstTokenTimesOutAndADeadPortFailsFast) {
  testing::FakeOpenAi service([](int, const Json::Value&) {
    testing::FakeOpenAi::Chat c;
    c.first_delay_ms = 3000;
    c.pieces = {testing::FakeOpenAi::StreamBody("too late")};
    return c;
  });
  auto config = ConfigFor(service);
  config.retries = 0;
  std::string error;
  auto engine = LlmEngine::Create(config, &error);
  ASSERT_TRUE(engine) << error;
  const auto t0 = std::chrono::steady_clock::now();
  Streamed s = Ask(*engine, LoadPersona("mina"), "Hello");
  EXPECT_FALSE(s.reply);
  EXPECT_NE(s.error.find("first token"), std::string::npos) << s.error;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(2900));

  config.base_url = "http://127.0.0.1:1/v1";
  auto dead = LlmEngine::Create(config, &error);
  ASSERT_TRUE(dead);
  s = Ask(*dead, LoadPersona("mina"), "Hello");
  EXPECT_FALSE(s.reply);
  EXPECT_NE(s.error.find("could not be reached"), std::string::npos) << s.error;
}

TEST(LlmEngine, ConfigProblemsAreNamed) {
  LlmConfig c;
  c.base_url = "ftp://example";
  EXPECT_NE(c.Validate().find("http"), std::string::npos);
  c.base_url = "http://localhost:8000/v1";
  c.first_token_timeout_ms = 10;
  EXPECT_NE(c.Validate().find("timeouts"), std::string::npos);
}

}  // namespace
}  // namespace parley::dialogue
