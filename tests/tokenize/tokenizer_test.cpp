// Tokenizers against the reference libraries' ids (fixtures made by
// make_fixtures.py, path in SHARDTUNE_TOKENIZER_FIXTURES), plus the byte
// tokenizer, UTF-8 checks and chat templates.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "shardtune/core/error.h"
#include "shardtune/tokenize/chat.h"
#include "shardtune/tokenize/tokenizer.h"

namespace shardtune {
namespace {

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s;
  for (auto i : ids) s += std::to_string(i) + " ";
  return s;
}

TEST(TokenizerParity, IdsEqualTheReferenceLibrary) {
  const char* dir = std::getenv("SHARDTUNE_TOKENIZER_FIXTURES");
  if (dir == nullptr) GTEST_SKIP() << "SHARDTUNE_TOKENIZER_FIXTURES is not set (ctest sets it)";
  std::ifstream in(std::string(dir) + "/fixtures.json");
  ASSERT_TRUE(in) << dir;
  const auto fixtures = nlohmann::json::parse(in);
  int checked = 0;
  for (const auto& f : fixtures) {
    auto tok = load_tokenizer(f["spec"].get<std::string>());
    for (const auto& c : f["cases"]) {
      const std::string text = c["text"].get<std::string>();
      const auto want = c["ids"].get<std::vector<int32_t>>();
      const auto want_special = c["ids_special"].get<std::vector<int32_t>>();
      const auto got = tok->encode(text, /*parse_special=*/false);
      const auto got_special = tok->encode(text, /*parse_special=*/true);
      EXPECT_EQ(got, want) << f["name"] << " on \"" << text << "\"\n got: " << ids_str(got)
                           << "\nwant: " << ids_str(want);
      EXPECT_EQ(got_special, want_special) << f["name"] << " (specials parsed) on \"" << text << "\"";
      EXPECT_EQ(tok->decode(want), c["decoded"].get<std::string>()) << f["name"] << " decoding \"" << text << "\"";
      if (f["byte_level"].get<bool>()) {
        EXPECT_EQ(tok->decode(got), text) << f["name"] << ": decode(encode(s)) != s";
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(ByteTokenizer, RoundTripsAnyBytesAndParsesSpecialsOnRequest) {
  auto tok = make_byte_tokenizer();
  const std::string s = "héllo 👍\n\t<|endoftext|>";
  const auto plain = tok->encode(s);
  EXPECT_EQ(plain.size(), s.size());
  EXPECT_EQ(tok->decode(plain), s);
  const auto special = tok->encode(s, true);
  EXPECT_EQ(special.back(), tok->eos_id());
  EXPECT_EQ(tok->decode(special), s);
  EXPECT_EQ(tok->decode(special, /*skip_special=*/true), "héllo 👍\n\t");
  EXPECT_EQ(tok->vocab_size(), 260);
  EXPECT_THROW(tok->decode({300}), InputError);
}

TEST(Utf8, InvalidInputGetsAClearError) {
  auto tok = load_tokenizer("byte");
  EXPECT_NO_THROW(check_utf8("ok ✓", "x"));
  for (const std::string& bad : {std::string("a\xff"), std::string("\xc3"), std::string("\xe2\x82"),
                                std::string("\xc0\xaf"), std::string("\xed\xa0\x80")}) {
    try {
      check_utf8(bad, "line 3");
      FAIL() << "accepted invalid UTF-8";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("line 3: invalid UTF-8 at byte"), std::string::npos);
    }
  }
}

TEST(LoadTokenizer, BadSpecsAndFilesNameTheProblem) {
  auto msg = [](const std::string& spec) {
    try {
      load_tokenizer(spec);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(msg("wat:x").find("unknown kind 'wat'"), std::string::npos);
  EXPECT_NE(msg("hf:/nonexistent/tokenizer.json").find("cannot open"), std::string::npos);
  const std::string p = ::testing::TempDir() + "/bad_tokenizer.json";
  std::ofstream(p) << R"({"model": {"type": "WordPiece", "vocab": {}}})";
  EXPECT_NE(msg("hf:" + p).find("not a BPE model"), std::string::npos);
  std::ofstream(p) << "{";
  EXPECT_NE(msg("hf:" + p).find("not valid JSON"), std::string::npos);
}

// Masks of a ChatML conversation, token by token, with the byte tokenizer.
TEST(ChatTemplate, ChatMlMasksOnlyTheAssistantTurns) {
  auto tok = make_byte_tokenizer();
  const std::vector<ChatMessage> msgs = {
      {"system", "S"}, {"user", "Hi"}, {"assistant", "Yo"}, {"user", "?"}, {"assistant", "ok"}};
  const Tokenized t = render_chat(*tok, ChatTemplate::kChatMl, msgs);
  ASSERT_EQ(t.ids.size(), t.mask.size());
  const int32_t start = *tok->token_to_id("<|im_start|>");
  const int32_t end = *tok->token_to_id("<|im_end|>");
  // Rebuild the expected sequence by hand.
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  auto add = [&](const std::string& text, uint8_t m) {
    for (unsigned char c : text) {
      ids.push_back(c);
      mask.push_back(m);
    }
  };
  auto turn = [&](const std::string& role, const std::string& content) {
    const uint8_t m = role == "assistant";
    ids.push_back(start);
    mask.push_back(0);
    add(role + "\n", 0);
    add(content, m);
    ids.push_back(end);
    mask.push_back(m);
    add("\n", 0);
  };
  for (const auto& m : msgs) turn(m.role, m.content);
  EXPECT_EQ(t.ids, ids);
  EXPECT_EQ(t.mask, mask);
  // Content cannot smuggle in a special token.
  const Tokenized inj = render_chat(*tok, ChatTemplate::kChatMl, {{"user", "<|im_end|>"}});
  EXPECT_EQ(std::count(inj.ids.begin(), inj.ids.end(), end), 1);
  // train_on_all marks everything.
  const Tokenized all = render_chat(*tok, ChatTemplate::kChatMl, msgs, true);
  EXPECT_EQ(std::count(all.mask.begin(), all.mask.end(), 1), static_cast<long>(all.mask.size()));
}

TEST(ChatTemplate, Llama3NeedsItsTokensAndPlainWorksEverywhere) {
  auto tok = make_byte_tokenizer();
  try {
    render_chat(*tok, ChatTemplate::kLlama3, {{"user", "x"}});
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("needs the token <|start_header_id|>"), std::string::npos);
  }
  const Tokenized p = render_chat(*tok, ChatTemplate::kPlain, {{"user", "a"}, {"assistant", "b"}});
  EXPECT_EQ(tok->decode(p.ids), "User: a<|endoftext|>\nAssistant: b<|endoftext|>\n");
  const auto prompt = render_generation_prompt(*tok, ChatTemplate::kPlain, {{"user", "a"}});
  EXPECT_EQ(tok->decode(prompt), "User: a<|endoftext|>\nAssistant: ");
  EXPECT_THROW(parse_chat_template("alpaca"), InputError);
}

}  // namespace
}  // namespace shardtune
