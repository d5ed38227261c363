#include "shardtune/model/safetensors.h"

#include <cmath>
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
#include "shardtune/core/files.h"
#include "shardtune/formats/safetensors_header.h"

namespace shardtune {
namespace {
// Metadata key of a tensor's checksum: "crc32c:<tensor name>" -> 8 hex digits.
const std::string kChecksumPrefix = "crc32c:";
}  // namespace

namespace {

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

  const auto* base = static_cast<const char*>(mapping_->addr);
  SafetensorsHeader header = parse_safetensors_header(base, size, path);
  data_ = base + header.data_offset;
  metadata_ = std::move(header.metadata);
  for (auto& h : header.entries) {
    SafetensorsEntry e;
    e.name = std::move(h.name);
    const auto dt = std::find_if(std::begin(kDtypes), std::end(kDtypes),
                                 [&](const DtypeName& d) { return d.name == h.dtype; });
    ST_CHECK(dt != std::end(kDtypes), "safetensors dtype ", h.dtype, " has no torch type");
    e.dtype = dt->type;
    e.shape = std::move(h.shape);
    e.begin = h.begin;
    e.end = h.end;
    entries_.push_back(std::move(e));
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

namespace {
[[noreturn]] void non_finite(double value, int64_t index, const std::string& file, const std::string& tensor) {
  throw InputError(str_cat(file, ": tensor '", tensor, "' holds ", std::isnan(value) ? "NaN" : value > 0 ? "+Inf" : "-Inf",
                           " (element ", index, "): weights must be finite numbers"));
}
}  // namespace

void require_finite(const torch::Tensor& t, const std::string& file, const std::string& tensor) {
  if (!t.is_floating_point()) return;
  if (t.scalar_type() == torch::kFloat32 && t.is_contiguous() && t.device().is_cpu()) {
    require_finite(t.data_ptr<float>(), static_cast<size_t>(t.numel()), file, tensor);
    return;
  }
  if (torch::isfinite(t).all().item<bool>()) return;
  const torch::Tensor flat = t.reshape({-1});
  const int64_t i = torch::nonzero(torch::logical_not(torch::isfinite(flat)))[0][0].item<int64_t>();
  non_finite(flat[i].item<double>(), i, file, tensor);
}

void require_finite(const float* v, size_t n, const std::string& file, const std::string& tensor) {
  // NaN and Inf are the floats whose exponent bits are all set: an OR over
  // integer tests, which the compiler vectorizes.
  uint32_t any = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, v + i, sizeof(bits));
    any |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  if (any == 0) return;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(v[i])) non_finite(v[i], static_cast<int64_t>(i), file, tensor);
  }
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
  const std::string tmp = create_temp_file(path);
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
