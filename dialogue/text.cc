#include "dialogue/text.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <sstream>

#include "dialogue/dialogue.h"

namespace parley::dialogue {
namespace text {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::vector<std::string> Words(std::string_view s) {
  std::vector<std::string> out;
  std::string cur;
  const auto flush = [&] {
    while (!cur.empty() && cur.back() == '\'') cur.pop_back();
    if (!cur.empty()) out.push_back(cur);
    cur.clear();
  };
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0 && u < 128) {
      cur.push_back(static_cast<char>(std::tolower(u)));
    } else if ((c == '\'' || static_cast<unsigned char>(c) == 0x92) && !cur.empty()) {
      cur.push_back('\'');
    } else {
      flush();
    }
  }
  flush();
  return out;
}

bool IsQuestion(std::string_view raw, const std::vector<std::string>& words) {
  if (raw.find('?') != std::string_view::npos) return true;
  if (words.empty()) return false;
  static const std::set<std::string> kOpeners = {
      "what",  "why",   "how",  "when", "where", "who",    "which", "whose",
      "do",    "does",  "did",  "are",  "is",    "was",    "were",  "can",
      "could", "would", "will", "have", "has",   "should", "shall"};
  if (kOpeners.contains(words[0])) return true;
  // "so what do you...", "and how about..."
  if (words.size() > 1 && (words[0] == "so" || words[0] == "and" || words[0] == "but") &&
      kOpeners.contains(words[1]))
    return true;
  // A recogniser's transcript has no sentence breaks: "thank you how was your weekend". A
  // question inside it still shows as an auxiliary before "you" ("have you", "do you") or a
  // question word before a verb ("how was", "what do").
  static const std::set<std::string> kAuxiliaries = {
      "do", "does", "did", "are", "were", "have", "can", "could", "would", "will", "should"};
  static const std::set<std::string> kWh = {"what", "why", "how", "when", "where", "who", "which"};
  static const std::set<std::string> kAfterWh = {"is",  "was",   "are", "were",  "do",   "does",
                                                 "did", "about", "can", "could", "would"};
  for (size_t i = 1; i + 1 < words.size(); ++i) {
    if (kAuxiliaries.contains(words[i]) && words[i + 1] == "you") return true;
    if (kWh.contains(words[i]) && kAfterWh.contains(words[i + 1])) return true;
  }
  return false;
}

bool IsPositive(const std::string& w) {
  static const std::set<std::string> kWords = {
      "love",    "loved",   "like",        "liked",     "enjoy",     "enjoyed",   "great",
      "good",    "nice",    "happy",       "glad",      "fun",       "wonderful", "amazing",
      "awesome", "excited", "exciting",    "beautiful", "fantastic", "favorite",  "favourite",
      "thanks",  "thank",   "interesting", "cool",      "lovely",    "delicious", "relaxing",
      "proud",   "best",    "perfect",     "laugh",     "smile"};
  return kWords.contains(w);
}

bool IsNegative(const std::string& w) {
  static const std::set<std::string> kWords = {
      "hate",      "hated",     "bad",      "awful",     "terrible",  "sad",        "angry",
      "upset",     "tired",     "boring",   "bored",     "annoying",  "annoyed",    "stressed",
      "stress",    "stressful", "worried",  "worry",     "lonely",    "sick",       "hard",
      "difficult", "worst",     "horrible", "miserable", "exhausted", "frustrated", "frustrating",
      "anxious",   "depressed", "afraid",   "scared"};
  return kWords.contains(w);
}

bool HasPhrase(const std::vector<std::string>& words, std::string_view phrase) {
  std::vector<std::string> p;
  std::istringstream in{std::string(phrase)};
  for (std::string w; in >> w;) p.push_back(w);
  if (p.empty() || p.size() > words.size()) return false;
  for (size_t i = 0; i + p.size() <= words.size(); ++i)
    if (std::equal(p.begin(), p.end(), words.begin() + static_cast<long>(i))) return true;
  return false;
}

}  // namespace text

// ---- SSE -------------------------------------------------------------------------------------

void SseParser::Feed(std::string_view bytes, std::vector<std::string>* events) {
  for (char c : bytes) {
    if (after_cr_) {
      after_cr_ = false;
      if (c == '\n') continue;  // the \n of a \r\n already ended the line
    }
    if (c != '\n' && c != '\r') {
      line_.push_back(c);
      continue;
    }
    after_cr_ = c == '\r';
    if (line_.empty()) {  // a blank line dispatches the event
      if (have_data_) events->push_back(data_);
      data_.clear();
      have_data_ = false;
      continue;
    }
    if (line_.front() != ':') {  // not a comment
      const auto colon = line_.find(':');
      const std::string field = line_.substr(0, colon);
      std::string value = colon == std::string::npos ? "" : line_.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.erase(0, 1);
      if (field == "data") {
        if (have_data_) data_.push_back('\n');
        data_ += value;
        have_data_ = true;
      }
    }
    line_.clear();
  }
}

// ---- Sentences --------------------------------------------------------------------------------

void SentenceSplitter::Feed(std::string_view text, std::vector<std::string>* sentences) {
  buffer_.append(text);
  size_t start = 0;
  for (size_t i = 0; i < buffer_.size(); ++i) {
    const char c = buffer_[i];
    const bool ellipsis = i + 2 < buffer_.size() && static_cast<unsigned char>(c) == 0xe2 &&
                          static_cast<unsigned char>(buffer_[i + 1]) == 0x80 &&
                          static_cast<unsigned char>(buffer_[i + 2]) == 0xa6;
    if (c != '.' && c != '!' && c != '?' && !ellipsis) continue;
    size_t end = ellipsis ? i + 3 : i + 1;
    while (end < buffer_.size() &&
           (buffer_[end] == '.' || buffer_[end] == '!' || buffer_[end] == '?' ||
            buffer_[end] == '"' || buffer_[end] == '\'' || buffer_[end] == ')'))
      ++end;
    if (end >= buffer_.size()) break;  // the next byte decides (a space, or "3.5")
    if (buffer_[end] != ' ' && buffer_[end] != '\n') continue;
    std::string sentence = buffer_.substr(start, end - start);
    const auto first = sentence.find_first_not_of(" \n");
    if (first == std::string::npos || sentence.size() - first < min_chars_) continue;
    sentences->push_back(sentence.substr(first));
    start = end;
    i = end - 1;
  }
  buffer_.erase(0, start);
}

std::optional<std::string> SentenceSplitter::Flush() {
  const auto first = buffer_.find_first_not_of(" \n");
  if (first == std::string::npos) {
    buffer_.clear();
    return std::nullopt;
  }
  const auto last = buffer_.find_last_not_of(" \n");
  std::string rest = buffer_.substr(first, last - first + 1);
  buffer_.clear();
  return rest;
}

}  // namespace parley::dialogue
