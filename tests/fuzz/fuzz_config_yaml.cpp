// Any bytes as a YAML config: parsing either gives a config or throws
// InputError naming the file.
#include <cstdint>
#include <string>

#include "shardtune/config/config.h"
#include "shardtune/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)shardtune::parse_config(text, "fuzz.yaml", {});
  } catch (const shardtune::InputError&) {
  }
  return 0;
}
