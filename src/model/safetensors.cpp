#include "shardtune/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "shardtune/core/crc32c.h"
#include "shardtune/core/error.h"

namespace shardtune {
namespace {
// Metadata key of a tensor's checksum: "crc32c:<tensor name>" -> 8 hex digits.
const std::string kChecksumPrefix = "crc32c:";
}  // namespace

namespace {

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

struct DtypeName {
  const char* name;
  c10::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {"F32", c10::ScalarType::Float}, {"BF16", c10::ScalarType::BFloat16},
    {"F16", c10::ScalarType::Half},  {"F64", c10::ScalarType::Double},
    {"I64", c10::ScalarType::Long},  {"I32", c10::ScalarType::Int},
    {"U8", c10::ScalarType::Byte},   {"BOOL", c10::ScalarType::Bool},
};

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

std::string safetensors_dtype_name(c10::ScalarType dtype) {
  for (const auto& d : kDtypes) {
    if (d.type == dtype) return d.name;
  }
  throw Error(str_cat("safetensors cannot hold dtype ", c10::toString(dtype)));
}

struct SafetensorsFile::Mapping {
  void* addr = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (addr != MAP_FAILED && size > 0) munmap(addr, size);
  }
};

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  auto bad = [&](const std::string& what) { return InputError(str_cat(path, ": ", what)); };
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw bad(str_cat("cannot open: ", std::strerror(errno)));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    throw bad(str_cat("cannot stat: ", std::strerror(errno)));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  mapping_ = std::make_shared<Mapping>();
  if (size > 0) {
    // Private and writable: tensors may be written to without touching the file.
    mapping_->addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    mapping_->size = size;
  }
  ::close(fd);
  if (size > 0 && mapping_->addr == MAP_FAILED) throw bad(str_cat("cannot map: ", std::strerror(errno)));

  if (size < 8) throw bad(str_cat("the file is ", size, " bytes, too short for the 8-byte header length"));
  const auto* base = static_cast<const char*>(mapping_->addr);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(base[i]);
  if (header_len > size - 8) {
    throw bad(str_cat("the header says it is ", header_len, " bytes but only ", size - 8,
                      " bytes follow the length field (truncated file?)"));
  }
  if (header_len > kMaxHeaderBytes) throw bad(str_cat("header of ", header_len, " bytes is too large"));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(base + 8, base + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    throw bad(str_cat("the header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) throw bad("the header is not a JSON object");
  data_ = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) throw bad("__metadata__ is not an object");
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string()) throw bad(str_cat("__metadata__.", k, " is not a string"));
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    auto bad_tensor = [&](const std::string& what) {
      return InputError(str_cat(path, ": tensor '", name, "': ", what));
    };
    if (!info.is_object()) throw bad_tensor("its header entry is not an object");
    SafetensorsEntry e;
    e.name = name;
    const auto dt = info.find("dtype");
    if (dt == info.end() || !dt->is_string()) throw bad_tensor("no dtype");
    const auto it = std::find_if(std::begin(kDtypes), std::end(kDtypes),
                                 [&](const DtypeName& d) { return d.name == dt->get<std::string>(); });
    if (it == std::end(kDtypes)) {
      throw bad_tensor(str_cat("dtype ", dt->get<std::string>(),
                               " is not supported (F32, BF16, F16, F64, I64, I32, U8, BOOL)"));
    }
    e.dtype = it->type;
    const auto shape = info.find("shape");
    if (shape == info.end() || !shape->is_array()) throw bad_tensor("no shape");
    uint64_t numel = 1;
    for (const auto& d : *shape) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) throw bad_tensor("shape has a bad dimension");
      e.shape.push_back(d.get<int64_t>());
      numel *= static_cast<uint64_t>(d.get<int64_t>());
    }
    const auto offsets = info.find("data_offsets");
    if (offsets == info.end() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
      throw bad_tensor("data_offsets is not a pair of byte offsets");
    }
    e.begin = (*offsets)[0].get<uint64_t>();
    e.end = (*offsets)[1].get<uint64_t>();
    if (e.begin > e.end || e.end > data_size) {
      throw bad_tensor(str_cat("data_offsets [", e.begin, ", ", e.end, "] lie outside the ",
                               data_size, " data bytes (truncated file?)"));
    }
    const uint64_t want = numel * c10::elementSize(e.dtype);
    if (e.end - e.begin != want) {
      throw bad_tensor(str_cat("holds ", e.end - e.begin, " bytes but shape ", shape_str(e.shape),
                               " of ", it->name, " needs ", want));
    }
    entries_.push_back(std::move(e));
  }
  std::sort(entries_.begin(), entries_.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < entries_.size(); ++i) {
    if (entries_[i].begin < entries_[i - 1].end) {
      throw bad(str_cat("tensors '", entries_[i - 1].name, "' and '", entries_[i].name,
                        "' overlap in the data"));
    }
  }
  for (size_t i = 0; i < entries_.size(); ++i) index_[entries_[i].name] = i;
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

torch::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  if (e == nullptr) throw InputError(str_cat(path_, ": no tensor '", name, "'"));
  // A file that carries a checksum for the tensor (shardtune writes one per
  // tensor) must match it: flipped bytes inside the data are caught here.
  const auto sum = metadata_.find(kChecksumPrefix + name);
  if (sum != metadata_.end()) {
    const std::string got = crc32c_hex(crc32c(data_ + e->begin, e->end - e->begin));
    if (got != sum->second) {
      throw InputError(str_cat(path_, ": tensor '", name, "' fails its checksum (crc32c ", got, ", the file says ",
                               sum->second.substr(0, 16), "): the data is corrupt"));
    }
  }
  auto keep = mapping_;
  return torch::from_blob(const_cast<char*>(data_) + e->begin, e->shape,
                          [keep](void*) {}, torch::TensorOptions().dtype(e->dtype));
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  std::map<std::string, std::string> meta = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    ST_CHECK(!header.contains(name), "save_safetensors: tensor '", name, "' given twice");
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    meta[kChecksumPrefix + name] = crc32c_hex(crc32c(c.data_ptr(), bytes));
    header[name] = {{"dtype", safetensors_dtype_name(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(c));
  }
  header["__metadata__"] = meta;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  const std::string tmp = path + ".tmp";
  try {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(str_cat(tmp, ": cannot write: ", std::strerror(errno)));
    uint64_t len = text.size();
    char le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<char>((len >> (8 * i)) & 0xff);
    out.write(le, 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& c : data) {
      out.write(static_cast<const char*>(c.data_ptr()),
                static_cast<std::streamsize>(c.numel() * c.element_size()));
    }
    out.flush();
    if (!out) throw Error(str_cat(tmp, ": write failed: ", std::strerror(errno)));
  } catch (...) {
    std::remove(tmp.c_str());  // nothing partial left behind
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw Error(str_cat(path, ": cannot rename from ", tmp, ": ", std::strerror(errno)));
  }
}

}  // namespace shardtune
