#include "shardtune/data/token_shard.h"

#include <hdf5.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "shardtune/core/error.h"
#include "shardtune/core/files.h"

namespace shardtune {
namespace fs = std::filesystem;
namespace {

constexpr hsize_t kChunk = 1 << 20;        // elements per HDF5 chunk
constexpr size_t kFlushTokens = 4 << 20;   // writer buffer
constexpr int64_t kReadBlock = 4 << 20;    // validate_all block

// HDF5 prints its error stack by default; shardtune reports errors itself.
void quiet_hdf5() {
  static const bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

// Closes an HDF5 handle when it goes out of scope.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    reset();
    id_ = o.id_;
    close_ = o.close_;
    o.id_ = -1;
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  void reset() {
    if (id_ >= 0 && close_ != nullptr) close_(id_);
    id_ = -1;
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

void write_int_attr(hid_t obj, const char* name, int64_t v) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(obj, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  H5Awrite(attr.get(), H5T_NATIVE_INT64, &v);
}

void write_string_attr(hid_t obj, const char* name, const std::string& v) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), std::max<size_t>(1, v.size()));
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  H5Awrite(attr.get(), type.get(), v.data());
}

Handle create_extendible(hid_t file, const char* name, hid_t type) {
  hsize_t dims = 0, max = H5S_UNLIMITED, chunk = kChunk;
  Handle space(H5Screate_simple(1, &dims, &max), H5Sclose);
  Handle plist(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_chunk(plist.get(), 1, &chunk);
  return Handle(H5Dcreate2(file, name, type, space.get(), H5P_DEFAULT, plist.get(), H5P_DEFAULT), H5Dclose);
}

void append(hid_t dset, hid_t mem_type, const void* data, size_t n, const std::string& path) {
  if (n == 0) return;
  Handle space(H5Dget_space(dset), H5Sclose);
  hsize_t old = 0;
  H5Sget_simple_extent_dims(space.get(), &old, nullptr);
  const hsize_t grown = old + n, count = n;
  if (H5Dset_extent(dset, &grown) < 0) throw Error(str_cat(path, ": cannot extend a dataset"));
  Handle file_space(H5Dget_space(dset), H5Sclose);
  H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &old, nullptr, &count, nullptr);
  Handle mem_space(H5Screate_simple(1, &count, nullptr), H5Sclose);
  if (H5Dwrite(dset, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, data) < 0) {
    throw Error(str_cat(path, ": write failed (disk full?)"));
  }
}

}  // namespace

// ---------------------------------------------------------------- writer

struct TokenShardWriter::Impl {
  Handle file, tokens, mask, offsets;
};

TokenShardWriter::TokenShardWriter(const std::string& path, const ShardAttrs& attrs, bool with_mask)
    : impl_(std::make_unique<Impl>()), path_(path), attrs_(attrs), with_mask_(with_mask) {
  quiet_hdf5();
  ST_CHECK(attrs.vocab_size > 0 && attrs.vocab_size <= (int64_t{1} << 32), "bad vocab_size ", attrs.vocab_size);
  tmp_ = create_temp_file(path);  // made here, so truncating it touches nothing else
  impl_->file = Handle(H5Fcreate(tmp_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  if (!impl_->file.ok()) {
    std::remove(tmp_.c_str());
    throw Error(str_cat(tmp_, ": cannot create"));
  }
  const hid_t f = impl_->file.get();
  write_string_attr(f, "format", "shardtune.tokens");
  write_int_attr(f, "version", 1);
  write_int_attr(f, "vocab_size", attrs.vocab_size);
  write_int_attr(f, "bos_id", attrs.bos_id);
  write_int_attr(f, "eos_id", attrs.eos_id);
  write_int_attr(f, "pad_id", attrs.pad_id);
  write_string_attr(f, "tokenizer", attrs.tokenizer);
  write_string_attr(f, "tokenizer_name", attrs.tokenizer_name);
  write_string_attr(f, "chat_format", attrs.chat_format);  // see set_shard_chat_format
  impl_->tokens = create_extendible(f, "tokens", attrs.vocab_size <= 65536 ? H5T_STD_U16LE : H5T_STD_U32LE);
  impl_->offsets = create_extendible(f, "doc_offsets", H5T_STD_I64LE);
  if (with_mask) impl_->mask = create_extendible(f, "loss_mask", H5T_STD_U8LE);
  pending_offsets_.push_back(0);
}

TokenShardWriter::~TokenShardWriter() {
  if (finished_) return;
  impl_.reset();
  std::remove(tmp_.c_str());
}

void TokenShardWriter::add(const int32_t* ids, const uint8_t* mask, size_t n) {
  ST_CHECK(!finished_, "add after finish");
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= attrs_.vocab_size) {
      throw InputError(str_cat(path_, ": token id ", ids[i], " is outside the vocabulary (size ",
                               attrs_.vocab_size, ")"));
    }
    pending_tokens_.push_back(static_cast<uint32_t>(ids[i]));
  }
  if (with_mask_) {
    if (mask != nullptr) {
      pending_mask_.insert(pending_mask_.end(), mask, mask + n);
    } else {
      pending_mask_.insert(pending_mask_.end(), n, 1);
    }
  }
  tokens_ += static_cast<int64_t>(n);
  pending_offsets_.push_back(tokens_);
  if (pending_tokens_.size() >= kFlushTokens) flush();
}

void TokenShardWriter::flush() {
  append(impl_->tokens.get(), H5T_NATIVE_UINT32, pending_tokens_.data(), pending_tokens_.size(), path_);
  if (with_mask_) append(impl_->mask.get(), H5T_NATIVE_UINT8, pending_mask_.data(), pending_mask_.size(), path_);
  append(impl_->offsets.get(), H5T_NATIVE_INT64, pending_offsets_.data(), pending_offsets_.size(), path_);
  offsets_written_ += pending_offsets_.size();
  pending_tokens_.clear();
  pending_mask_.clear();
  pending_offsets_.clear();
}

std::string TokenShardWriter::finish(bool place) {
  ST_CHECK(!finished_, "finish called twice");
  flush();
  if (H5Fflush(impl_->file.get(), H5F_SCOPE_GLOBAL) < 0) throw Error(str_cat(tmp_, ": flush failed"));
  impl_.reset();  // closes the file
  if (place && std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    throw Error(str_cat(path_, ": cannot rename the finished shard into place"));
  }
  finished_ = true;
  return place ? path_ : tmp_;
}

void set_shard_chat_format(const std::string& path, const std::string& chat_format) {
  quiet_hdf5();
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) throw Error(str_cat(path, ": cannot open to write"));
  if (H5Aexists(file.get(), "chat_format") > 0) H5Adelete(file.get(), "chat_format");
  write_string_attr(file.get(), "chat_format", chat_format);
  if (H5Fflush(file.get(), H5F_SCOPE_GLOBAL) < 0) throw Error(str_cat(path, ": flush failed"));
}

// ---------------------------------------------------------------- reader

struct TokenShardReader::Impl {
  Handle file, tokens, mask;
};

namespace {

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw InputError(str_cat(path, ": ", what));
}

int64_t read_int_attr(hid_t f, const char* name, const std::string& path) {
  if (H5Aexists(f, name) <= 0) bad(path, str_cat("attribute '", name, "' is missing"));
  Handle attr(H5Aopen(f, name, H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_INTEGER) bad(path, str_cat("attribute '", name, "' is not an integer"));
  int64_t v = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_INT64, &v) < 0) bad(path, str_cat("cannot read attribute '", name, "'"));
  return v;
}

std::string read_string_attr(hid_t f, const char* name, const std::string& path) {
  if (H5Aexists(f, name) <= 0) bad(path, str_cat("attribute '", name, "' is missing"));
  Handle attr(H5Aopen(f, name, H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING) bad(path, str_cat("attribute '", name, "' is not a string"));
  if (H5Tis_variable_str(type.get()) > 0) {
    char* s = nullptr;
    Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));  // h5py writes UTF-8
    if (H5Aread(attr.get(), mem.get(), &s) < 0) bad(path, str_cat("cannot read attribute '", name, "'"));
    std::string out = s ? s : "";
    H5free_memory(s);
    return out;
  }
  const size_t n = H5Tget_size(type.get());
  std::string out(n, '\0');
  if (H5Aread(attr.get(), type.get(), out.data()) < 0) bad(path, str_cat("cannot read attribute '", name, "'"));
  out.resize(std::strlen(out.c_str()));
  return out;
}

// Opens a 1-D dataset and returns its length.
Handle open_1d(hid_t f, const char* name, const std::string& path, hsize_t& length) {
  if (H5Lexists(f, name, H5P_DEFAULT) <= 0) bad(path, str_cat("dataset /", name, " is missing"));
  Handle d(H5Dopen2(f, name, H5P_DEFAULT), H5Dclose);
  if (!d.ok()) bad(path, str_cat("cannot open dataset /", name));
  Handle space(H5Dget_space(d.get()), H5Sclose);
  if (H5Sget_simple_extent_ndims(space.get()) != 1) bad(path, str_cat("dataset /", name, " is not 1-D"));
  H5Sget_simple_extent_dims(space.get(), &length, nullptr);
  return d;
}

// "uint16", "int64", ... for messages.
std::string type_name(hid_t type) {
  if (H5Tget_class(type) == H5T_INTEGER) {
    return str_cat(H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int", H5Tget_size(type) * 8);
  }
  if (H5Tget_class(type) == H5T_FLOAT) return str_cat("float", H5Tget_size(type) * 8);
  return "a non-numeric type";
}

void read_range(hid_t dset, hid_t mem_type, int64_t offset, int64_t count, void* out, const std::string& path,
                const char* what) {
  if (count == 0) return;
  Handle file_space(H5Dget_space(dset), H5Sclose);
  const hsize_t start = static_cast<hsize_t>(offset), n = static_cast<hsize_t>(count);
  H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &n, nullptr);
  Handle mem_space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  if (H5Dread(dset, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, out) < 0) {
    bad(path, str_cat("cannot read ", what, " [", offset, ", ", offset + count, ") (truncated or corrupt file?)"));
  }
}

}  // namespace

TokenShardReader::TokenShardReader(const std::string& path) : impl_(std::make_unique<Impl>()), path_(path) {
  quiet_hdf5();
  if (!fs::exists(path)) bad(path, "no such file");
  if (H5Fis_hdf5(path.c_str()) <= 0) bad(path, "not an HDF5 file (or a truncated one)");
  impl_->file = Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!impl_->file.ok()) bad(path, "cannot open the HDF5 file (truncated or corrupt?)");
  const hid_t f = impl_->file.get();
  const std::string format = read_string_attr(f, "format", path);
  if (format != "shardtune.tokens") bad(path, str_cat("attribute 'format' is \"", format, "\", not \"shardtune.tokens\""));
  const int64_t version = read_int_attr(f, "version", path);
  if (version != 1) bad(path, str_cat("format version ", version, " is not supported (1)"));
  attrs_.vocab_size = read_int_attr(f, "vocab_size", path);
  if (attrs_.vocab_size <= 0) bad(path, str_cat("vocab_size ", attrs_.vocab_size, " is not positive"));
  attrs_.bos_id = read_int_attr(f, "bos_id", path);
  attrs_.eos_id = read_int_attr(f, "eos_id", path);
  attrs_.pad_id = read_int_attr(f, "pad_id", path);
  attrs_.tokenizer = read_string_attr(f, "tokenizer", path);
  // Written since the content fingerprint (tok2:); absent in older shards.
  if (H5Aexists(f, "tokenizer_name") > 0) attrs_.tokenizer_name = read_string_attr(f, "tokenizer_name", path);
  if (H5Aexists(f, "chat_format") > 0) attrs_.chat_format = read_string_attr(f, "chat_format", path);
  for (const auto& [name, v] : {std::pair<const char*, int64_t>{"bos_id", attrs_.bos_id},
                                {"eos_id", attrs_.eos_id}, {"pad_id", attrs_.pad_id}}) {
    if (v < -1 || v >= attrs_.vocab_size) bad(path, str_cat(name, " ", v, " is outside the vocabulary"));
  }

  hsize_t n_tokens = 0, n_offsets = 0, n_mask = 0;
  impl_->tokens = open_1d(f, "tokens", path, n_tokens);
  {
    Handle type(H5Dget_type(impl_->tokens.get()), H5Tclose);
    const bool ok = H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_sign(type.get()) == H5T_SGN_NONE &&
                    (H5Tget_size(type.get()) == 2 || H5Tget_size(type.get()) == 4);
    if (!ok) bad(path, str_cat("/tokens is ", type_name(type.get()), ", expected uint16 or uint32"));
    token_bits_ = static_cast<int>(H5Tget_size(type.get()) * 8);
  }
  num_tokens_ = static_cast<int64_t>(n_tokens);

  Handle offsets = open_1d(f, "doc_offsets", path, n_offsets);
  {
    Handle type(H5Dget_type(offsets.get()), H5Tclose);
    if (H5Tget_class(type.get()) != H5T_INTEGER || H5Tget_size(type.get()) != 8 ||
        H5Tget_sign(type.get()) != H5T_SGN_2) {
      bad(path, str_cat("/doc_offsets is ", type_name(type.get()), ", expected int64"));
    }
  }
  if (n_offsets < 1) bad(path, "/doc_offsets is empty (it holds docs + 1 entries)");
  doc_offsets_.resize(n_offsets);
  read_range(offsets.get(), H5T_NATIVE_INT64, 0, static_cast<int64_t>(n_offsets), doc_offsets_.data(), path,
             "/doc_offsets");
  if (doc_offsets_[0] != 0) bad(path, str_cat("/doc_offsets[0] is ", doc_offsets_[0], ", not 0"));
  for (size_t d = 1; d < doc_offsets_.size(); ++d) {
    if (doc_offsets_[d] < doc_offsets_[d - 1]) {
      bad(path, str_cat("/doc_offsets decreases at document ", d - 1, " (", doc_offsets_[d - 1], " then ",
                        doc_offsets_[d], ")"));
    }
  }
  if (doc_offsets_.back() != num_tokens_) {
    bad(path, str_cat("/doc_offsets ends at ", doc_offsets_.back(), " but /tokens holds ", num_tokens_,
                      " tokens (out of range)"));
  }

  if (H5Lexists(f, "loss_mask", H5P_DEFAULT) > 0) {
    impl_->mask = open_1d(f, "loss_mask", path, n_mask);
    Handle type(H5Dget_type(impl_->mask.get()), H5Tclose);
    if (H5Tget_class(type.get()) != H5T_INTEGER || H5Tget_size(type.get()) != 1) {
      bad(path, str_cat("/loss_mask is ", type_name(type.get()), ", expected uint8"));
    }
    if (n_mask != n_tokens) {
      bad(path, str_cat("/loss_mask holds ", n_mask, " values but /tokens holds ", n_tokens));
    }
    has_mask_ = true;
  }
}

TokenShardReader::~TokenShardReader() = default;

void TokenShardReader::read_tokens(int64_t offset, int64_t count, int32_t* out) const {
  ST_CHECK(offset >= 0 && count >= 0 && offset + count <= num_tokens_, path_, ": read [", offset, ", ",
           offset + count, ") past ", num_tokens_, " tokens");
  read_range(impl_->tokens.get(), H5T_NATIVE_INT32, offset, count, out, path_, "/tokens");
  for (int64_t i = 0; i < count; ++i) {
    if (out[i] < 0 || out[i] >= attrs_.vocab_size) {
      bad(path_, str_cat("token id ", static_cast<uint32_t>(out[i]), " at /tokens[", offset + i,
                         "] is not below vocab_size ", attrs_.vocab_size));
    }
  }
}

void TokenShardReader::read_mask(int64_t offset, int64_t count, uint8_t* out) const {
  ST_CHECK(offset >= 0 && count >= 0 && offset + count <= num_tokens_, "mask read out of range");
  if (!has_mask_) {
    std::fill(out, out + count, uint8_t{1});
    return;
  }
  read_range(impl_->mask.get(), H5T_NATIVE_UINT8, offset, count, out, path_, "/loss_mask");
}

int64_t TokenShardReader::validate_all() const {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  int64_t targets = 0;
  for (int64_t off = 0; off < num_tokens_; off += kReadBlock) {
    const int64_t n = std::min(kReadBlock, num_tokens_ - off);
    tokens.resize(static_cast<size_t>(n));
    mask.resize(static_cast<size_t>(n));
    read_tokens(off, n, tokens.data());
    read_mask(off, n, mask.data());
    for (uint8_t m : mask) targets += m != 0;
  }
  return targets;
}

std::vector<std::string> find_shards(const std::string& prefix, const std::string& split) {
  std::vector<std::string> out;
  for (int i = 0;; ++i) {
    char suffix[32];
    std::snprintf(suffix, sizeof(suffix), "-%s-%05d.h5", split.c_str(), i);
    const std::string p = prefix + suffix;
    if (!fs::exists(p)) break;
    out.push_back(p);
  }
  return out;
}

}  // namespace shardtune
