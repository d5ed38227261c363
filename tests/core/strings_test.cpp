#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "shardtune/core/crc32c.h"

#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"

namespace shardtune {
namespace {

TEST(Strings, SplitKeepsEmptyPieces) {
  EXPECT_EQ(split("a.b.c", '.'), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(split("a..b", '.'), (std::vector<std::string>{"a", "", "b"}));
  EXPECT_EQ(split("", '.'), (std::vector<std::string>{""}));
}

TEST(Strings, JoinAndTrim) {
  EXPECT_EQ(join({"x", "y", "z"}, ", "), "x, y, z");
  EXPECT_EQ(join({}, ", "), "");
  EXPECT_EQ(trim("  a b \t\n"), "a b");
  EXPECT_EQ(trim(" \t "), "");
}

TEST(Strings, EditDistance) {
  EXPECT_EQ(edit_distance("", ""), 0u);
  EXPECT_EQ(edit_distance("lr", "lr"), 0u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("timeout", "timeout_s"), 2u);
}

TEST(Strings, ClosestMatchSuggestsOnlyPlausibleTypos) {
  const std::vector<std::string> keys{"backend", "timeout_s", "check_collectives"};
  EXPECT_EQ(closest_match("backnd", keys), "backend");
  EXPECT_EQ(closest_match("timeout", keys), "timeout_s");
  EXPECT_EQ(closest_match("check", keys), "check_collectives");
  EXPECT_EQ(closest_match("zzzzzz", keys), "");
  EXPECT_EQ(closest_match("x", {}), "");
}

TEST(Check, ThrowsWithExpressionAndLocation) {
  try {
    int x = 3;
    ST_CHECK(x == 4, "x was ", x);
    FAIL() << "no throw";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("x was 3"), std::string::npos) << what;
    EXPECT_NE(what.find("x == 4"), std::string::npos) << what;
    EXPECT_NE(what.find("strings_test.cpp:"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace shardtune

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(shardtune::crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(shardtune::crc32c("", 0), 0u);
  std::string zeros(32, '\0');
  EXPECT_EQ(shardtune::crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
  // Continuing a checksum equals one pass over the whole.
  const std::string s = "The quick brown fox jumps over the lazy dog";
  EXPECT_EQ(shardtune::crc32c(s.data() + 10, s.size() - 10, shardtune::crc32c(s.data(), 10)),
            shardtune::crc32c(s.data(), s.size()));
  EXPECT_EQ(shardtune::crc32c_hex(0xE3069283u), "e3069283");
}

TEST(Strings, TranspositionIsOneEditAndCappingKeepsCharacters) {
  EXPECT_EQ(shardtune::closest_match("trian", {"train", "data", "eval"}), "train");
  EXPECT_EQ(shardtune::closest_match("setps", {"steps", "seed"}), "steps");
  EXPECT_EQ(shardtune::capped("short"), "short");
  const std::string euro = "\xe2\x82\xac";  // 3 bytes
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += euro;
  EXPECT_EQ(shardtune::capped(long_text, 10), euro + euro + euro + "... (300 bytes)");
  EXPECT_EQ(shardtune::without_exception_tag("[json.exception.type_error.302] type must be string"),
            "type must be string");
  // The JSON pointer of a JSON_DIAGNOSTICS build becomes a key path.
  EXPECT_EQ(shardtune::without_exception_tag(
                "[json.exception.type_error.302] (/added_tokens/0/content) type must be string, but is number"),
            "added_tokens[0].content: type must be string, but is number");
  EXPECT_EQ(shardtune::without_exception_tag("[json.exception.out_of_range.403] (/model/a~1b~0c/12) key 'x' not found"),
            "model.a/b~c[12]: key 'x' not found");
  EXPECT_EQ(shardtune::without_exception_tag("[json.exception.type_error.302] () type must be string"),
            "() type must be string");
}

TEST(Strings, JsonErrorsNameTheKeyPath) {
  // Built with JSON_DIAGNOSTICS (as everything in shardtune is): the error
  // names where the value is.
  const auto j = nlohmann::json::parse(R"({"model": {"merges": [["a", 7]]}})");
  try {
    (void)j.at("model").at("merges").at(0).at(1).get<std::string>();
    FAIL() << "no error";
  } catch (const nlohmann::json::exception& e) {
    EXPECT_EQ(shardtune::without_exception_tag(e.what()), "model.merges[0][1]: type must be string, but is number");
  }
}
