// Scores of a generated answer against a reference answer, each in [0, 1],
// for `shardtune eval --generate`. torch-free.
//
//   exact       the two equal after trimming whitespace at both ends
//   normalized  equal as words: lowercased, split on whitespace
//   json_valid  the answer parses as JSON
//   json_equal  both parse and are the same value (object key order free)
//   json_fields the share of the reference object's top-level keys whose
//               values the answer object has equal (0 when either is not an object)
//   token_f1    SQuAD's F1 of the answer's and reference's bags of words
//               (lowercase, ASCII punctuation and the articles a/an/the removed;
//               1 when both are empty)
//   rouge_l     ROUGE-L F1 over rouge_score's tokens (lowercase ASCII letters
//               and digits; anything else separates)
//   chrf        chrF (character 1- to 6-grams, whitespace removed, beta 2,
//               effective-order averaging), as sacrebleu's sentence_chrf / 100
//   regex       the answer contains a match of a user's regular expression
//               (PCRE2, Unicode)
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace shardtune {

const std::vector<std::string>& text_metric_names();  // the list above, in order

// Every metric of answer vs reference; `regex` only when a pattern is given.
class TextScorer {
 public:
  // Throws InputError when the pattern does not compile.
  explicit TextScorer(const std::string& regex = "");
  ~TextScorer();
  std::map<std::string, double> score(std::string_view answer, std::string_view reference) const;
  bool has_regex() const { return regex_ != nullptr; }

 private:
  struct Regex;
  std::unique_ptr<Regex> regex_;
};

double exact_match(std::string_view answer, std::string_view reference);
double normalized_match(std::string_view answer, std::string_view reference);
double json_valid(std::string_view answer);
double json_equal(std::string_view answer, std::string_view reference);
double json_fields(std::string_view answer, std::string_view reference);
double token_f1(std::string_view answer, std::string_view reference);
double rouge_l(std::string_view answer, std::string_view reference);
double chrf(std::string_view answer, std::string_view reference);

// The mean of values and its 95% percentile-bootstrap interval (`rounds`
// resamples of the examples with a fixed seed).
struct Interval {
  double mean = 0, low = 0, high = 0;
};
Interval bootstrap_mean(const std::vector<double>& values, int rounds = 2000, uint64_t seed = 1);
// The mean of b - a over paired examples and its interval (the same resamples for both).
Interval bootstrap_difference(const std::vector<double>& a, const std::vector<double>& b, int rounds = 2000,
                              uint64_t seed = 1);

}  // namespace shardtune
