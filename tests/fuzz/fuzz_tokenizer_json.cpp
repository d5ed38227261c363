// Any bytes as a tokenizer.json: loading either succeeds (and then encoding
// and decoding a fixed text work) or throws InputError.
#include <cstdint>
#include <string>

#include "shardtune/core/error.h"
#include "shardtune/tokenize/tokenizer.h"
#include "../../src/tokenize/internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    auto tok = shardtune::load_hf_tokenizer_json(j, nlohmann::json(), "fuzz.json");
    const auto ids = tok->encode("Hello, world! 123 caf\xc3\xa9 <|endoftext|>\n  x", /*parse_special=*/true);
    (void)tok->decode(ids);
  } catch (const shardtune::InputError&) {
  }
  return 0;
}
