#include "shardtune/formats/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "shardtune/core/error.h"
#include "shardtune/core/files.h"

namespace shardtune {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxStringBytes = uint64_t{1} << 30;
constexpr int kMaxDims = 4;

uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

// Q4_K and Q5_K pack 8 six-bit scales and 8 six-bit mins into 12 bytes.
void scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

}  // namespace

// ------------------------------------------------------------ scalar formats

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    if (mant == 0) return bits_f32(sign);
    // Subnormal: value = mant * 2^-24.
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000 | (mant << 13));
  return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  const uint32_t abs = u & 0x7fffffff;
  if (abs > 0x7f800000) return static_cast<uint16_t>(sign | 0x7e00);  // NaN
  if (abs >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);  // rounds to inf
  if (abs < 0x38800000) {
    // Subnormal or zero in f16: round abs * 2^24 to an integer, ties to even.
    const float v = bits_f32(abs) * 16777216.0f;  // exact: scales by a power of two
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(v)));
  }
  // Normal: drop 13 mantissa bits, rounding to nearest even.
  const uint32_t rounded = abs + 0xfff + ((abs >> 13) & 1);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000) >> 13));
}

float bf16_to_f32(uint16_t h) { return bits_f32(static_cast<uint32_t>(h) << 16); }

uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((u >> 16) | 64);  // quiet NaN
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

std::string ggml_type_name(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kBF16: return "BF16";
    case GgmlType::kQ4_0: return "Q4_0";
    case GgmlType::kQ4_1: return "Q4_1";
    case GgmlType::kQ5_0: return "Q5_0";
    case GgmlType::kQ5_1: return "Q5_1";
    case GgmlType::kQ8_0: return "Q8_0";
    case GgmlType::kQ4_K: return "Q4_K";
    case GgmlType::kQ5_K: return "Q5_K";
    case GgmlType::kQ6_K: return "Q6_K";
  }
  // Types shardtune does not read, named as llama.cpp does where known.
  static const std::map<uint32_t, const char*> other = {
      {9, "Q8_1"}, {10, "Q2_K"}, {11, "Q3_K"}, {15, "Q8_K"}, {16, "IQ2_XXS"}, {17, "IQ2_XS"}, {18, "IQ3_XXS"},
      {19, "IQ1_S"}, {20, "IQ4_NL"}, {21, "IQ3_S"}, {22, "IQ2_S"}, {23, "IQ4_XS"}, {24, "I8"}, {25, "I16"},
      {26, "I32"}, {27, "I64"}, {28, "F64"}, {29, "IQ1_M"}, {34, "TQ1_0"}, {35, "TQ2_0"}, {39, "MXFP4"}};
  const auto it = other.find(type);
  return it != other.end() ? it->second : str_cat("type ", type);
}

bool ggml_type_supported(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32: case GgmlType::kF16: case GgmlType::kBF16: case GgmlType::kQ4_0: case GgmlType::kQ4_1:
    case GgmlType::kQ5_0: case GgmlType::kQ5_1: case GgmlType::kQ8_0: case GgmlType::kQ4_K: case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return true;
  }
  return false;
}

int64_t ggml_block_elements(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: case GgmlType::kF16: case GgmlType::kBF16: return 1;
    case GgmlType::kQ4_0: case GgmlType::kQ4_1: case GgmlType::kQ5_0: case GgmlType::kQ5_1: case GgmlType::kQ8_0:
      return 32;
    case GgmlType::kQ4_K: case GgmlType::kQ5_K: case GgmlType::kQ6_K: return 256;
  }
  throw Error(str_cat("ggml type ", static_cast<uint32_t>(type), " is not supported"));
}

int64_t ggml_block_bytes(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return 4;
    case GgmlType::kF16: case GgmlType::kBF16: return 2;
    case GgmlType::kQ4_0: return 2 + 16;
    case GgmlType::kQ4_1: return 4 + 16;
    case GgmlType::kQ5_0: return 2 + 4 + 16;
    case GgmlType::kQ5_1: return 4 + 4 + 16;
    case GgmlType::kQ8_0: return 2 + 32;
    case GgmlType::kQ4_K: return 4 + 12 + 128;
    case GgmlType::kQ5_K: return 4 + 12 + 32 + 128;
    case GgmlType::kQ6_K: return 128 + 64 + 16 + 2;
  }
  throw Error(str_cat("ggml type ", static_cast<uint32_t>(type), " is not supported"));
}

int64_t ggml_row_bytes(GgmlType type, int64_t n) {
  const int64_t b = ggml_block_elements(type);
  ST_CHECK(n % b == 0, n, " elements are not whole ", ggml_type_name(static_cast<uint32_t>(type)), " blocks");
  return n / b * ggml_block_bytes(type);
}

void dequantize(GgmlType type, const uint8_t* src, int64_t n, float* y) {
  const int64_t nb = n / ggml_block_elements(type);
  const int64_t bs = ggml_block_bytes(type);
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(y, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) y[i] = f16_to_f32(rd16(src + 2 * i));
      return;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(rd16(src + 2 * i));
      return;
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
      for (int64_t i = 0; i < nb; ++i, y += 32) {
        const uint8_t* b = src + i * bs;
        const float d = f16_to_f32(rd16(b));
        const bool offset = type == GgmlType::kQ4_1;
        const float m = offset ? f16_to_f32(rd16(b + 2)) : 0.0f;
        const uint8_t* qs = b + (offset ? 4 : 2);
        for (int j = 0; j < 16; ++j) {
          const int lo = qs[j] & 0xF, hi = qs[j] >> 4;
          y[j] = offset ? lo * d + m : (lo - 8) * d;
          y[j + 16] = offset ? hi * d + m : (hi - 8) * d;
        }
      }
      return;
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
      for (int64_t i = 0; i < nb; ++i, y += 32) {
        const uint8_t* b = src + i * bs;
        const bool offset = type == GgmlType::kQ5_1;
        const float d = f16_to_f32(rd16(b));
        const float m = offset ? f16_to_f32(rd16(b + 2)) : 0.0f;
        const uint32_t qh = rd32(b + (offset ? 4 : 2));
        const uint8_t* qs = b + (offset ? 8 : 6);
        for (int j = 0; j < 16; ++j) {
          const int h0 = static_cast<int>(((qh >> j) << 4) & 0x10);
          const int h1 = static_cast<int>((qh >> (j + 12)) & 0x10);
          const int x0 = (qs[j] & 0xF) | h0, x1 = (qs[j] >> 4) | h1;
          y[j] = offset ? x0 * d + m : (x0 - 16) * d;
          y[j + 16] = offset ? x1 * d + m : (x1 - 16) * d;
        }
      }
      return;
    case GgmlType::kQ8_0:
      for (int64_t i = 0; i < nb; ++i, y += 32) {
        const uint8_t* b = src + i * bs;
        const float d = f16_to_f32(rd16(b));
        for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
      }
      return;
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
      for (int64_t i = 0; i < nb; ++i) {
        const uint8_t* b = src + i * bs;
        const bool five = type == GgmlType::kQ5_K;
        const float d = f16_to_f32(rd16(b));
        const float dmin = f16_to_f32(rd16(b + 2));
        const uint8_t* scales = b + 4;
        const uint8_t* qh = b + 16;  // Q5_K only
        const uint8_t* q = b + (five ? 48 : 16);
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < 256; j += 64, is += 2) {
          uint8_t sc, m;
          scale_min_k4(is, scales, &sc, &m);
          const float d1 = d * sc, m1 = dmin * m;
          scale_min_k4(is + 1, scales, &sc, &m);
          const float d2 = d * sc, m2 = dmin * m;
          for (int l = 0; l < 32; ++l) {
            const int h = five && (qh[l] & u1) ? 16 : 0;
            *y++ = d1 * static_cast<float>((q[l] & 0xF) + h) - m1;
          }
          for (int l = 0; l < 32; ++l) {
            const int h = five && (qh[l] & u2) ? 16 : 0;
            *y++ = d2 * static_cast<float>((q[l] >> 4) + h) - m2;
          }
          q += 32;
          u1 = static_cast<uint8_t>(u1 << 2);
          u2 = static_cast<uint8_t>(u2 << 2);
        }
      }
      return;
    case GgmlType::kQ6_K:
      for (int64_t i = 0; i < nb; ++i) {
        const uint8_t* b = src + i * bs;
        const uint8_t* ql = b;
        const uint8_t* qh = b + 128;
        const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
        const float d = f16_to_f32(rd16(b + 208));
        for (int half = 0; half < 2; ++half) {
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
          }
          y += 128;
          ql += 64;
          qh += 32;
          sc += 8;
        }
      }
      return;
  }
  throw Error(str_cat("dequantize: ggml type ", static_cast<uint32_t>(type), " is not supported"));
}

void quantize(GgmlType type, const float* x, int64_t n, uint8_t* dst) {
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, x, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::kF16:
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = type == GgmlType::kF16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
        dst[2 * i] = static_cast<uint8_t>(h & 0xff);
        dst[2 * i + 1] = static_cast<uint8_t>(h >> 8);
      }
      return;
    case GgmlType::kQ8_0:
      ST_CHECK(n % 32 == 0, "Q8_0 needs whole blocks of 32");
      for (int64_t i = 0; i < n / 32; ++i, x += 32, dst += 34) {
        float amax = 0.0f;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t h = f32_to_f16(d);
        dst[0] = static_cast<uint8_t>(h & 0xff);
        dst[1] = static_cast<uint8_t>(h >> 8);
        for (int j = 0; j < 32; ++j) dst[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));
      }
      return;
    default:
      throw Error(str_cat("quantize: writing ", ggml_type_name(static_cast<uint32_t>(type)),
                          " is not supported (F32, F16, BF16, Q8_0)"));
  }
}

// ------------------------------------------------------------ reading

int64_t GgufTensorInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::vector<int64_t> GgufTensorInfo::shape() const { return {dims.rbegin(), dims.rend()}; }

namespace {

// Bounds-checked little-endian reads over the mapped file.
class Cursor {
 public:
  Cursor(const uint8_t* p, uint64_t size, const std::string& path) : p_(p), size_(size), path_(path) {}
  uint64_t pos() const { return pos_; }
  void need(uint64_t n, const char* what) const {
    if (n > size_ - pos_) {
      throw InputError(str_cat(path_, ": truncated: ", what, " at byte ", pos_, " runs past the end of the file (",
                               size_, " bytes)"));
    }
  }
  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const char* what) {
    const uint64_t n = read<uint64_t>(what);
    if (n > kMaxStringBytes) throw InputError(str_cat(path_, ": ", what, " at byte ", pos_ - 8, " claims ", n, " bytes"));
    need(n, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }
  uint64_t remaining() const { return size_ - pos_; }

 private:
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

const char* value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: return "uint8";
    case GgufValueType::kInt8: return "int8";
    case GgufValueType::kUint16: return "uint16";
    case GgufValueType::kInt16: return "int16";
    case GgufValueType::kUint32: return "uint32";
    case GgufValueType::kInt32: return "int32";
    case GgufValueType::kFloat32: return "float32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kUint64: return "uint64";
    case GgufValueType::kInt64: return "int64";
    case GgufValueType::kFloat64: return "float64";
  }
  return "?";
}

nlohmann::json read_scalar(Cursor& c, GgufValueType t, const std::string& key, const std::string& path) {
  switch (t) {
    case GgufValueType::kUint8: return c.read<uint8_t>("value");
    case GgufValueType::kInt8: return c.read<int8_t>("value");
    case GgufValueType::kUint16: return c.read<uint16_t>("value");
    case GgufValueType::kInt16: return c.read<int16_t>("value");
    case GgufValueType::kUint32: return c.read<uint32_t>("value");
    case GgufValueType::kInt32: return c.read<int32_t>("value");
    case GgufValueType::kFloat32: return c.read<float>("value");
    case GgufValueType::kUint64: return c.read<uint64_t>("value");
    case GgufValueType::kInt64: return c.read<int64_t>("value");
    case GgufValueType::kFloat64: return c.read<double>("value");
    case GgufValueType::kBool: {
      const uint8_t b = c.read<uint8_t>("value");
      if (b > 1) throw InputError(str_cat(path, ": metadata '", key, "': bool value ", int{b}, " is not 0 or 1"));
      return b == 1;
    }
    case GgufValueType::kString: {
      std::string s = c.string("string value");
      return s;
    }
    case GgufValueType::kArray:
      break;
  }
  throw InputError(str_cat(path, ": metadata '", key, "': unknown value type ", static_cast<uint32_t>(t)));
}

// Smallest encoded size of one value of type t (to bound array counts).
uint64_t min_value_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kBool: return 1;
    case GgufValueType::kUint16: case GgufValueType::kInt16: return 2;
    case GgufValueType::kUint32: case GgufValueType::kInt32: case GgufValueType::kFloat32: return 4;
    default: return 8;
  }
}

}  // namespace

GgufFile::GgufFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw InputError(str_cat(path, ": cannot open (", std::strerror(errno), ")"));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(str_cat(path, ": not a regular file"));
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ < 24) {
    ::close(fd);
    throw InputError(str_cat(path, ": truncated: ", size_, " bytes is shorter than a GGUF header"));
  }
  void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) throw InputError(str_cat(path, ": cannot map (", std::strerror(errno), ")"));
  map_ = static_cast<const uint8_t*>(m);
  try {
    Cursor c(map_, size_, path_);
    const uint32_t magic = c.read<uint32_t>("magic");
    if (magic != kMagic) {
      char shown[5] = {};
      std::memcpy(shown, map_, 4);
      for (int k = 0; k < 4; ++k) shown[k] = (shown[k] >= 32 && shown[k] < 127) ? shown[k] : '?';
      throw InputError(str_cat(path, ": not a GGUF file (magic '", shown, "', expected 'GGUF')"));
    }
    version_ = c.read<uint32_t>("version");
    if (version_ != 2 && version_ != 3) {
      throw InputError(str_cat(path, ": GGUF version ", version_, " is not supported (2, 3)"));
    }
    const uint64_t n_tensors = c.read<uint64_t>("tensor count");
    const uint64_t n_kv = c.read<uint64_t>("metadata count");
    // A key-value pair takes at least 8 + 4 + 1 bytes, a tensor info 8 + 4 + 8 + 4 + 8.
    if (n_kv > c.remaining() / 13 || n_tensors > c.remaining() / 32) {
      throw InputError(str_cat(path, ": truncated or corrupt: the header claims ", n_kv, " metadata entries and ",
                               n_tensors, " tensors, more than ", size_, " bytes can hold"));
    }
    for (uint64_t i = 0; i < n_kv; ++i) {
      std::string key = c.string("metadata key");
      GgufValue v;
      v.type = static_cast<GgufValueType>(c.read<uint32_t>("value type"));
      if (static_cast<uint32_t>(v.type) > 12) {
        throw InputError(str_cat(path, ": metadata '", key, "': unknown value type ", static_cast<uint32_t>(v.type)));
      }
      if (v.type == GgufValueType::kArray) {
        v.element_type = static_cast<GgufValueType>(c.read<uint32_t>("array type"));
        const uint64_t count = c.read<uint64_t>("array length");
        if (v.element_type == GgufValueType::kArray || static_cast<uint32_t>(v.element_type) > 12) {
          throw InputError(str_cat(path, ": metadata '", key, "': array element type ",
                                   static_cast<uint32_t>(v.element_type), " is not supported"));
        }
        if (count > c.remaining() / min_value_bytes(v.element_type)) {
          throw InputError(str_cat(path, ": truncated: metadata '", key, "' claims ", count, " elements"));
        }
        v.value = nlohmann::json::array();
        for (uint64_t k = 0; k < count; ++k) v.value.push_back(read_scalar(c, v.element_type, key, path_));
      } else {
        v.value = read_scalar(c, v.type, key, path_);
      }
      if (meta_index_.count(key) != 0) throw InputError(str_cat(path, ": metadata key '", key, "' appears twice"));
      meta_index_[key] = metadata_.size();
      metadata_.emplace_back(std::move(key), std::move(v));
    }
    if (const GgufValue* a = find("general.alignment")) {
      if (!a->value.is_number_unsigned() || a->value.get<uint64_t>() == 0 ||
          (a->value.get<uint64_t>() & (a->value.get<uint64_t>() - 1)) != 0 || a->value.get<uint64_t>() > 65536) {
        throw InputError(str_cat(path, ": general.alignment ", a->value.dump(), " is not a power of two"));
      }
      alignment_ = a->value.get<uint64_t>();
    }
    for (uint64_t i = 0; i < n_tensors; ++i) {
      GgufTensorInfo t;
      t.name = c.string("tensor name");
      const uint32_t n_dims = c.read<uint32_t>("tensor dimension count");
      if (n_dims == 0 || n_dims > kMaxDims) {
        throw InputError(str_cat(path, ": tensor '", t.name, "' has ", n_dims, " dimensions (1 to 4)"));
      }
      int64_t elements = 1;
      for (uint32_t d = 0; d < n_dims; ++d) {
        const uint64_t dim = c.read<uint64_t>("tensor dimension");
        if (dim == 0 || dim > (uint64_t{1} << 40) ||
            static_cast<uint64_t>(elements) > (uint64_t{1} << 42) / dim) {
          throw InputError(str_cat(path, ": tensor '", t.name, "' has an impossible dimension ", dim));
        }
        elements *= static_cast<int64_t>(dim);
        t.dims.push_back(static_cast<int64_t>(dim));
      }
      t.type = c.read<uint32_t>("tensor type");
      t.offset = c.read<uint64_t>("tensor offset");
      if (ggml_type_supported(t.type)) {
        const auto type = static_cast<GgmlType>(t.type);
        if (t.dims[0] % ggml_block_elements(type) != 0) {
          throw InputError(str_cat(path, ": tensor '", t.name, "': first dimension ", t.dims[0], " is not whole ",
                                   ggml_type_name(t.type), " blocks of ", ggml_block_elements(type)));
        }
        t.bytes = static_cast<uint64_t>(ggml_row_bytes(type, elements));
      }
      if (tensor_index_.count(t.name) != 0) throw InputError(str_cat(path, ": tensor '", t.name, "' appears twice"));
      tensor_index_[t.name] = tensors_.size();
      tensors_.push_back(std::move(t));
    }
    data_start_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
    for (const auto& t : tensors_) {
      if (t.offset % alignment_ != 0) {
        throw InputError(str_cat(path, ": tensor '", t.name, "' at offset ", t.offset, " is not aligned to ",
                                 alignment_, " bytes"));
      }
      if (data_start_ > size_ || t.offset > size_ - data_start_ || t.bytes > size_ - data_start_ - t.offset) {
        throw InputError(str_cat(path, ": tensor '", t.name, "' (", t.bytes, " bytes at data offset ", t.offset,
                                 ") runs past the end of the file (", size_, " bytes): truncated?"));
      }
    }
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(map_), size_);
    throw;
  }
}

GgufFile::~GgufFile() {
  if (map_ != nullptr) ::munmap(const_cast<uint8_t*>(map_), size_);
}

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = meta_index_.find(key);
  return it == meta_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) throw InputError(str_cat(path_, ": metadata '", key, "' is missing"));
  if (v->type != GgufValueType::kString) {
    throw InputError(str_cat(path_, ": metadata '", key, "' is a ", value_type_name(v->type), ", expected a string"));
  }
  return v->value.get<std::string>();
}

std::string GgufFile::get_string(const std::string& key, const std::string& fallback) const {
  return find(key) == nullptr ? fallback : get_string(key);
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) throw InputError(str_cat(path_, ": metadata '", key, "' is missing"));
  if (v->type == GgufValueType::kArray || !v->value.is_number_integer()) {
    throw InputError(str_cat(path_, ": metadata '", key, "' is a ", value_type_name(v->type), ", expected an integer"));
  }
  if (v->value.is_number_unsigned() && v->value.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    throw InputError(str_cat(path_, ": metadata '", key, "' = ", v->value.dump(), " is too large"));
  }
  return v->value.get<int64_t>();
}

int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
  return find(key) == nullptr ? fallback : get_int(key);
}

double GgufFile::get_float(const std::string& key, double fallback) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return fallback;
  if (v->type == GgufValueType::kArray || !v->value.is_number()) {
    throw InputError(str_cat(path_, ": metadata '", key, "' is a ", value_type_name(v->type), ", expected a number"));
  }
  const double d = v->value.get<double>();
  if (!std::isfinite(d)) throw InputError(str_cat(path_, ": metadata '", key, "' is not finite"));
  return d;
}

bool GgufFile::get_bool(const std::string& key, bool fallback) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return fallback;
  if (v->type != GgufValueType::kBool) {
    throw InputError(str_cat(path_, ": metadata '", key, "' is a ", value_type_name(v->type), ", expected a bool"));
  }
  return v->value.get<bool>();
}

const uint8_t* GgufFile::data(const GgufTensorInfo& t) const { return map_ + data_start_ + t.offset; }

std::vector<float> GgufFile::dequantized(const GgufTensorInfo& t) const {
  if (!ggml_type_supported(t.type)) {
    throw InputError(str_cat(path_, ": tensor '", t.name, "' has type ", ggml_type_name(t.type),
                             ", which shardtune does not read (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, "
                             "Q4_K, Q5_K, Q6_K)"));
  }
  std::vector<float> out(static_cast<size_t>(t.elements()));
  dequantize(static_cast<GgmlType>(t.type), data(t), t.elements(), out.data());
  return out;
}

// ------------------------------------------------------------ writing

void GgufWriter::add(const std::string& key, GgufValue value) {
  for (auto& kv : metadata_) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::add_string(const std::string& key, const std::string& v) {
  add(key, {GgufValueType::kString, GgufValueType::kUint32, v});
}
void GgufWriter::add_uint32(const std::string& key, uint32_t v) {
  add(key, {GgufValueType::kUint32, GgufValueType::kUint32, v});
}
void GgufWriter::add_float32(const std::string& key, float v) {
  add(key, {GgufValueType::kFloat32, GgufValueType::kUint32, v});
}
void GgufWriter::add_bool(const std::string& key, bool v) { add(key, {GgufValueType::kBool, GgufValueType::kUint32, v}); }

void GgufWriter::add_tensor(const std::string& name, std::vector<int64_t> dims, GgmlType type,
                            std::vector<uint8_t> bytes) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  ST_CHECK(static_cast<int64_t>(bytes.size()) == ggml_row_bytes(type, n), "tensor ", name, ": ", bytes.size(),
           " bytes for ", n, " elements of ", ggml_type_name(static_cast<uint32_t>(type)));
  tensors_.push_back({name, std::move(dims), type, std::move(bytes)});
}

namespace {

class Out {
 public:
  explicit Out(std::ofstream& f) : f_(f) {}
  template <class T>
  void put(T v) {
    f_.write(reinterpret_cast<const char*>(&v), sizeof(T));
    pos_ += sizeof(T);
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    f_.write(s.data(), static_cast<std::streamsize>(s.size()));
    pos_ += s.size();
  }
  void bytes(const uint8_t* p, size_t n) {
    f_.write(reinterpret_cast<const char*>(p), static_cast<std::streamsize>(n));
    pos_ += n;
  }
  void pad(uint64_t alignment) {
    while (pos_ % alignment != 0) put<uint8_t>(0);
  }
  uint64_t pos() const { return pos_; }

 private:
  std::ofstream& f_;
  uint64_t pos_ = 0;
};

void write_scalar(Out& o, GgufValueType t, const nlohmann::json& v) {
  switch (t) {
    case GgufValueType::kUint8: o.put(v.get<uint8_t>()); return;
    case GgufValueType::kInt8: o.put(v.get<int8_t>()); return;
    case GgufValueType::kUint16: o.put(v.get<uint16_t>()); return;
    case GgufValueType::kInt16: o.put(v.get<int16_t>()); return;
    case GgufValueType::kUint32: o.put(v.get<uint32_t>()); return;
    case GgufValueType::kInt32: o.put(v.get<int32_t>()); return;
    case GgufValueType::kFloat32: o.put(v.get<float>()); return;
    case GgufValueType::kUint64: o.put(v.get<uint64_t>()); return;
    case GgufValueType::kInt64: o.put(v.get<int64_t>()); return;
    case GgufValueType::kFloat64: o.put(v.get<double>()); return;
    case GgufValueType::kBool: o.put<uint8_t>(v.get<bool>() ? 1 : 0); return;
    case GgufValueType::kString: o.str(v.get<std::string>()); return;
    case GgufValueType::kArray: break;
  }
  throw Error("GGUF writer: nested arrays are not supported");
}

}  // namespace

void GgufWriter::write(const std::string& path) const {
  uint64_t alignment = 32;
  for (const auto& [k, v] : metadata_) {
    if (k == "general.alignment") alignment = v.value.get<uint64_t>();
  }
  const std::string tmp = create_temp_file(path);
  try {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(str_cat(tmp, ": cannot write"));
    Out o(f);
    o.put<uint32_t>(kMagic);
    o.put<uint32_t>(3);
    o.put<uint64_t>(tensors_.size());
    o.put<uint64_t>(metadata_.size());
    for (const auto& [key, v] : metadata_) {
      o.str(key);
      o.put<uint32_t>(static_cast<uint32_t>(v.type));
      if (v.type == GgufValueType::kArray) {
        o.put<uint32_t>(static_cast<uint32_t>(v.element_type));
        o.put<uint64_t>(v.value.size());
        for (const auto& e : v.value) write_scalar(o, v.element_type, e);
      } else {
        write_scalar(o, v.type, v.value);
      }
    }
    uint64_t offset = 0;
    for (const auto& t : tensors_) {
      o.str(t.name);
      o.put<uint32_t>(static_cast<uint32_t>(t.dims.size()));
      for (int64_t d : t.dims) o.put<uint64_t>(static_cast<uint64_t>(d));
      o.put<uint32_t>(static_cast<uint32_t>(t.type));
      o.put<uint64_t>(offset);
      offset += (t.bytes.size() + alignment - 1) / alignment * alignment;
    }
    o.pad(alignment);
    for (const auto& t : tensors_) {
      o.bytes(t.bytes.data(), t.bytes.size());
      o.pad(alignment);
    }
    f.flush();
    if (!f) throw Error(str_cat(tmp, ": write failed (disk full?)"));
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);  // nothing partial left behind
    throw;
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace shardtune
