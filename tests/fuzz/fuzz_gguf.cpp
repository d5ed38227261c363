// Any bytes as a GGUF file: the reader, the model config and the tokenizer
// built from its metadata either succeed or throw InputError; anything else
// (a crash, a sanitizer report, another exception) is a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "shardtune/core/error.h"
#include "shardtune/formats/gguf.h"
#include "shardtune/formats/gguf_llama.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/shardtune_fuzz_gguf_" + std::to_string(::getpid()) + ".gguf";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    const shardtune::GgufFile file(path);
    for (const auto& t : file.tensors()) {
      if (shardtune::ggml_type_supported(t.type) && t.elements() <= (1 << 20)) (void)file.dequantized(t);
    }
    try {
      (void)shardtune::gguf_hf_config(file);
    } catch (const shardtune::InputError&) {
    }
    (void)shardtune::gguf_tokenizer_json(file);
    (void)shardtune::gguf_tokenizer_config(file);
  } catch (const shardtune::InputError&) {
  }
  return 0;
}
