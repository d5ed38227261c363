// safetensors files: a little-endian u64 header length, a JSON header naming
// each tensor's dtype, shape and byte range, then the raw data. Loading never
// executes anything from the file.
//
// The reader memory-maps the file and checks everything before any tensor is
// handed out: the header length against the file size, the JSON, each dtype,
// shape and byte range (inside the data, of the size the shape says, not
// overlapping another). Any problem throws InputError naming the file and,
// where there is one, the tensor.
#pragma once

#include <torch/types.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace shardtune {

struct SafetensorsEntry {
  std::string name;
  c10::ScalarType dtype = c10::ScalarType::Float;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte range in the data section
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Opens and validates path. Throws InputError.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The entry called name, or nullptr.
  const SafetensorsEntry* find(const std::string& name) const;

  // A CPU tensor viewing the mapped data (copy-on-write: writing to it never
  // changes the file). It keeps the mapping alive. Throws InputError for an
  // unknown name, or when the file's metadata holds a checksum for the
  // tensor ("crc32c:<name>") that its bytes do not match.
  torch::Tensor tensor(const std::string& name) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  const char* data_ = nullptr;  // start of the data section
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes the named tensors (any device, contiguous or not; F32, BF16, F16,
// F64, I64, I32, U8, BOOL) to path atomically: a temporary file in the same
// folder, renamed when complete. The metadata gains each tensor's CRC-32C
// ("crc32c:<name>": 8 hex digits), which SafetensorsFile::tensor checks.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Weights read from a file must be finite: throws InputError naming the file,
// the tensor, the first bad element's index and whether it is NaN or Inf.
// (On SmolLM2-135M the scan takes 0.015-0.05 s of a 1.5 s load; see the README.)
void require_finite(const torch::Tensor& t, const std::string& file, const std::string& tensor);
void require_finite(const float* v, size_t n, const std::string& file, const std::string& tensor);

// "F32", "BF16", ... for a dtype; throws for one safetensors cannot hold.
std::string safetensors_dtype_name(c10::ScalarType dtype);

}  // namespace shardtune
