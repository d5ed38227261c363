// Any bytes as a JSONL input to `shardtune prep` (chat, prompt/completion
// and text lines, auto-detected) with the byte tokenizer: prep either writes
// its shards or throws InputError naming file:line; the shards it writes
// pass the reader's full validation.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "shardtune/core/error.h"
#include "shardtune/data/prep.h"
#include "shardtune/data/token_shard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = "/tmp/shardtune_fuzz_jsonl_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string input = dir + "/in.jsonl";
  FILE* f = std::fopen(input.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  shardtune::PrepOptions o;
  o.inputs = {input};
  o.output = dir + "/out";
  o.val_fraction = 0.5;
  o.threads = 1;
  o.chat_template = size % 2 ? "chatml" : "plain";
  try {
    const auto summary = shardtune::run_prep(o);
    for (const auto& shard : summary.files) shardtune::TokenShardReader(shard).validate_all();
  } catch (const shardtune::InputError&) {
  }
  return 0;
}
