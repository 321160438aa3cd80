// Internal to dialogue/: small text helpers for the rule-based parts (ASCII case folding, words,
// question and sentiment cues).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace parley::dialogue::text {

// ASCII letters lowered; other bytes (UTF-8 included) unchanged.
std::string Lower(std::string_view s);
// Lower-case words: letters, digits and inner apostrophes ("don't", "i'm").
std::vector<std::string> Words(std::string_view s);
// A "?" or an opening interrogative/auxiliary ("what", "do you"...).
bool IsQuestion(std::string_view raw, const std::vector<std::string>& words);
bool IsPositive(const std::string& word);
bool IsNegative(const std::string& word);
// `phrase` (lower case, words separated by single spaces) occurs in `words` as whole words.
bool HasPhrase(const std::vector<std::string>& words, std::string_view phrase);

}  // namespace parley::dialogue::text
