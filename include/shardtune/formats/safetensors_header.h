// The header of a safetensors file, parsed and checked without torch: a
// little-endian u64 length, then that many bytes of JSON naming each
// tensor's dtype, shape and byte range in the data section that follows,
// plus an optional "__metadata__" object of strings.
//
// parse_safetensors_header checks everything a reader needs before it hands
// out a tensor: the length against the bytes there are, the JSON, each
// dtype (one of kSafetensorsDtypes), each dimension, the element count
// against overflow, each byte range (inside the data, the size the shape
// says, not overlapping another). Any problem throws InputError naming path
// and, where there is one, the tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace shardtune {

// The dtypes shardtune reads and writes, with their element sizes.
struct SafetensorsDtype {
  const char* name;  // "F32", "BF16", ...
  uint32_t bytes;
};
inline constexpr SafetensorsDtype kSafetensorsDtypes[] = {
    {"F32", 4}, {"BF16", 2}, {"F16", 2}, {"F64", 8}, {"I64", 8}, {"I32", 4}, {"U8", 1}, {"BOOL", 1},
};

struct SafetensorsHeaderEntry {
  std::string name;
  std::string dtype;  // one of kSafetensorsDtypes' names
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte range in the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  uint64_t data_offset = 0;  // where the data section starts in the file
  uint64_t data_size = 0;
  std::vector<SafetensorsHeaderEntry> entries;  // by begin
  std::map<std::string, std::string> metadata;
};

// file: the whole file's bytes (size of them). Throws InputError.
SafetensorsHeader parse_safetensors_header(const char* file, uint64_t size, const std::string& path);

}  // namespace shardtune
