// GGUF files (llama.cpp's model format), versions 2 and 3: a header, typed
// metadata (key -> value), tensor infos, then the aligned tensor data.
// torch-free.
//
// GgufFile memory-maps a file and checks everything before any tensor is
// handed out: magic, version, counts against the file size, every string
// and array length, value and tensor types, dimensions, and each tensor's
// byte range (aligned, inside the file). Any problem throws InputError
// naming the file and what is wrong. GgufWriter writes a file atomically
// (a temporary beside it, renamed when complete).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace shardtune {

// Tensor data types (ggml's numbering). Dequantized: every one listed.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

// "F32", "Q4_K", ... ; "type N" for a number GgmlType does not list.
std::string ggml_type_name(uint32_t type);
// Whether shardtune reads tensors of this type.
bool ggml_type_supported(uint32_t type);
// Elements per block and bytes per block (F32: 1 and 4).
int64_t ggml_block_elements(GgmlType type);
int64_t ggml_block_bytes(GgmlType type);
// Bytes of n elements; n must be a multiple of the block size.
int64_t ggml_row_bytes(GgmlType type, int64_t n);

// Decodes n elements (a multiple of the block size) of src into dst.
void dequantize(GgmlType type, const uint8_t* src, int64_t n, float* dst);
// Encodes n elements into dst as type: F32, F16, BF16 or Q8_0, rounding as
// llama.cpp's reference quantizer does (Q8_0: scale amax/127 stored as f16,
// values rounded half away from zero; F16/BF16: round to nearest even).
void quantize(GgmlType type, const float* src, int64_t n, uint8_t* dst);

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

// Metadata value types (GGUF's numbering).
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// A metadata value: its GGUF type (and element type for arrays) and the
// value as JSON (numbers, booleans, strings, arrays of them), so a file
// read and written back keeps every type.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint32;
  GgufValueType element_type = GgufValueType::kUint32;  // arrays only
  nlohmann::json value;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] varies fastest
  uint32_t type = 0;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t bytes = 0;
  int64_t elements() const;
  // The shape in torch / Hugging Face order (dims reversed).
  std::vector<int64_t> shape() const;
};

class GgufFile {
 public:
  // Opens and validates path. Throws InputError naming path.
  explicit GgufFile(const std::string& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // In file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  // nullptr where absent.
  const GgufValue* find(const std::string& key) const;
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  // Typed reads: throw InputError naming the file and key when the key is
  // absent (without a fallback) or holds another kind of value.
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;

  // The tensor's bytes (inside the mapping; valid while this object lives).
  const uint8_t* data(const GgufTensorInfo& t) const;
  // The tensor as float32, in ggml order. Throws InputError for a type
  // shardtune does not read.
  std::vector<float> dequantized(const GgufTensorInfo& t) const;

 private:
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  const uint8_t* map_ = nullptr;
  uint64_t size_ = 0;
  uint64_t data_start_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t> meta_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Builds a GGUF file (version 3). Metadata and tensors go out in the order
// added; tensor data is aligned to general.alignment (default 32).
class GgufWriter {
 public:
  void add(const std::string& key, GgufValue value);
  void add_string(const std::string& key, const std::string& v);
  void add_uint32(const std::string& key, uint32_t v);
  void add_float32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  // ggml-ordered dims; bytes must hold exactly the tensor's encoded size.
  void add_tensor(const std::string& name, std::vector<int64_t> dims, GgmlType type, std::vector<uint8_t> bytes);

  // Writes everything to path through a temporary file renamed at the end.
  void write(const std::string& path) const;

 private:
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  struct Tensor {
    std::string name;
    std::vector<int64_t> dims;
    GgmlType type;
    std::vector<uint8_t> bytes;
  };
  std::vector<Tensor> tensors_;
};

}  // namespace shardtune
