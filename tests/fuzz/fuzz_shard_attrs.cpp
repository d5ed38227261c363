// HDF5 token shards whose attributes, offsets, tokens and mask come from the
// fuzzer's bytes (the HDF5 container itself stays well formed: its own
// parser is not ours to fuzz): the reader either refuses the file with
// InputError or reads every token and mask byte within bounds.
#include <hdf5.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "shardtune/core/error.h"
#include "shardtune/data/token_shard.h"

namespace {

// Reads the fuzzer's bytes as a stream of values.
class Bytes {
 public:
  Bytes(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  template <class T>
  T take() {
    T v{};
    const size_t k = std::min(sizeof(T), n_ - i_);
    std::memcpy(&v, d_ + i_, k);
    i_ += k;
    return v;
  }
  size_t left() const { return n_ - i_; }

 private:
  const uint8_t* d_;
  size_t n_, i_ = 0;
};

void int_attr(hid_t f, const char* name, int64_t v) {
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a);
  H5Sclose(space);
}

void string_attr(hid_t f, const char* name, const std::string& v) {
  const hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, v.empty() ? 1 : v.size());
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t a = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, type, v.empty() ? "" : v.data());
  H5Aclose(a);
  H5Sclose(space);
  H5Tclose(type);
}

template <class T>
void dataset(hid_t f, const char* name, hid_t file_type, hid_t mem_type, const std::vector<T>& v) {
  const hsize_t n = v.size();
  const hid_t space = H5Screate_simple(1, &n, nullptr);
  const hid_t d = H5Dcreate2(f, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (n > 0) H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
  H5Dclose(d);
  H5Sclose(space);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/shardtune_fuzz_shard_" + std::to_string(::getpid()) + ".h5";
  Bytes b(data, size);
  const uint8_t flags = b.take<uint8_t>();
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) return 0;
  string_attr(f, "format", flags & 1 ? "shardtune.tokens" : "other");
  int_attr(f, "version", flags & 2 ? 1 : b.take<int8_t>());
  int_attr(f, "vocab_size", b.take<int64_t>());
  int_attr(f, "bos_id", b.take<int32_t>());
  int_attr(f, "eos_id", b.take<int32_t>());
  if (!(flags & 4)) int_attr(f, "pad_id", b.take<int32_t>());
  string_attr(f, "tokenizer", "fuzz");
  const size_t n_tokens = b.take<uint8_t>();
  const size_t n_offsets = b.take<uint8_t>() % 16;
  std::vector<int64_t> offsets;
  for (size_t i = 0; i < n_offsets; ++i) offsets.push_back(b.take<int16_t>());
  std::vector<uint32_t> tokens;
  for (size_t i = 0; i < n_tokens && b.left() > 0; ++i) tokens.push_back(b.take<uint16_t>());
  if (flags & 8) {
    std::vector<uint16_t> t16(tokens.begin(), tokens.end());
    dataset(f, "tokens", H5T_STD_U16LE, H5T_NATIVE_UINT16, t16);
  } else {
    dataset(f, "tokens", flags & 16 ? H5T_STD_I64LE : H5T_STD_U32LE, H5T_NATIVE_UINT32, tokens);
  }
  dataset(f, "doc_offsets", flags & 32 ? H5T_STD_I32LE : H5T_STD_I64LE, H5T_NATIVE_INT64, offsets);
  if (flags & 64) {
    std::vector<uint8_t> mask(flags & 128 ? tokens.size() : tokens.size() / 2 + 1);
    for (auto& m : mask) m = b.take<uint8_t>();
    dataset(f, "loss_mask", H5T_STD_U8LE, H5T_NATIVE_UINT8, mask);
  }
  H5Fclose(f);
  try {
    const shardtune::TokenShardReader r(path);
    r.validate_all();
    std::vector<int32_t> ids(static_cast<size_t>(r.num_tokens()));
    r.read_tokens(0, r.num_tokens(), ids.data());
    if (r.has_mask()) {
      std::vector<uint8_t> mask(static_cast<size_t>(r.num_tokens()));
      r.read_mask(0, r.num_tokens(), mask.data());
    }
  } catch (const shardtune::InputError&) {
  }
  return 0;
}
