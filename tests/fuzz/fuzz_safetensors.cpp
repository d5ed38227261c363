// Any bytes as a safetensors file: the header parser either succeeds or
// throws InputError; on success every tensor's byte range is read (its
// checksum computed), so a range the parser let through outside the bytes
// is an ASan finding. Anything else is a finding too.
#include <cstdint>
#include <cstring>
#include <memory>

#include "shardtune/core/crc32c.h"
#include "shardtune/core/error.h"
#include "shardtune/formats/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exact-sized copy: ASan sees any read past the end.
  auto bytes = std::make_unique<char[]>(size);
  if (size > 0) std::memcpy(bytes.get(), data, size);
  try {
    const auto header = shardtune::parse_safetensors_header(bytes.get(), size, "fuzz.safetensors");
    const char* data_section = bytes.get() + header.data_offset;
    for (const auto& e : header.entries) (void)shardtune::crc32c(data_section + e.begin, e.end - e.begin);
  } catch (const shardtune::InputError&) {
  }
  return 0;
}
