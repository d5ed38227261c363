// Helpers shared by the tokenizer implementations.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace shardtune::detail {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = true;
  bool lstrip = false;  // the match also takes the whitespace on its left
  bool rstrip = false;  // ... on its right
};

// Calls on_text for each run of text between added tokens and on_token for
// each added token, left to right (leftmost, then longest match). Only
// special tokens when with_special; non-special added tokens always.
void split_added(std::string_view text, const std::vector<AddedToken>& added, bool with_special,
                 const std::function<void(std::string_view)>& on_text,
                 const std::function<void(const AddedToken&)>& on_token);

// Length of the UTF-8 character starting at s[i] (1 for a stray byte).
size_t utf8_len(unsigned char lead);

}  // namespace shardtune::detail

namespace shardtune {
class Tokenizer;
// A tokenizer from a parsed tokenizer.json and tokenizer_config.json (null
// when there is none); `where` names the source in errors.
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const nlohmann::json& tokenizer, const nlohmann::json& config,
                                                  const std::string& where);
}  // namespace shardtune
