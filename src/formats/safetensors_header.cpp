#include "shardtune/formats/safetensors_header.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>

#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"

namespace shardtune {
namespace {

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

SafetensorsHeader parse_safetensors_header(const char* file, uint64_t size, const std::string& path) {
  auto bad = [&](const std::string& what) { return InputError(str_cat(path, ": ", what)); };
  if (size < 8) throw bad(str_cat("the file is ", size, " bytes, too short for the 8-byte header length"));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(file[i]);
  if (header_len > size - 8) {
    throw bad(str_cat("the header says it is ", header_len, " bytes but only ", size - 8,
                      " bytes follow the length field (truncated file?)"));
  }
  if (header_len > kMaxHeaderBytes) throw bad(str_cat("header of ", header_len, " bytes is too large"));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(file + 8, file + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    throw bad(str_cat("the header is not valid JSON: ", without_exception_tag(e.what())));
  }
  if (!header.is_object()) throw bad("the header is not a JSON object");
  SafetensorsHeader out;
  out.data_offset = 8 + header_len;
  out.data_size = size - out.data_offset;

  for (const auto& item : header.items()) {
    const std::string& name = item.key();
    const nlohmann::json& info = item.value();
    if (name == "__metadata__") {
      if (!info.is_object()) throw bad("__metadata__ is not an object");
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string()) throw bad(str_cat("__metadata__.", capped(k), " is not a string"));
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    auto bad_tensor = [&](const std::string& what) {
      return InputError(str_cat(path, ": tensor '", capped(name), "': ", what));
    };
    if (!info.is_object()) throw bad_tensor("its header entry is not an object");
    SafetensorsHeaderEntry e;
    e.name = name;
    const auto dt = info.find("dtype");
    if (dt == info.end() || !dt->is_string()) throw bad_tensor("dtype is missing or not a string");
    const auto it = std::find_if(std::begin(kSafetensorsDtypes), std::end(kSafetensorsDtypes),
                                 [&](const SafetensorsDtype& d) { return d.name == dt->get<std::string>(); });
    if (it == std::end(kSafetensorsDtypes)) {
      throw bad_tensor(str_cat("dtype ", capped(dt->get<std::string>()),
                               " is not supported (F32, BF16, F16, F64, I64, I32, U8, BOOL)"));
    }
    e.dtype = it->name;
    const auto shape = info.find("shape");
    if (shape == info.end() || !shape->is_array()) throw bad_tensor("shape is missing or not a list");
    // The size in bytes, checked as it grows so that no product wraps
    // around; the byte range check below then compares it with the file.
    constexpr uint64_t kMaxBytes = uint64_t{1} << 62;
    uint64_t bytes = it->bytes;
    bool zero = false;
    for (const auto& d : *shape) {
      if (!d.is_number_integer() || (d.is_number_unsigned() && d.get<uint64_t>() > kMaxBytes) ||
          d.get<int64_t>() < 0) {
        throw bad_tensor(str_cat("shape ", capped(shape->dump()), " has a dimension that is not a size"));
      }
      const auto n = static_cast<uint64_t>(d.get<int64_t>());
      e.shape.push_back(static_cast<int64_t>(n));
      if (n == 0) zero = true;
      if (zero) continue;
      if (bytes > kMaxBytes / n) {
        throw bad_tensor(str_cat("shape ", capped(shape->dump()), " is larger than any file can hold"));
      }
      bytes *= n;
    }
    if (zero) bytes = 0;
    const auto offsets = info.find("data_offsets");
    if (offsets == info.end() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
      throw bad_tensor("data_offsets is not a pair of byte offsets");
    }
    e.begin = (*offsets)[0].get<uint64_t>();
    e.end = (*offsets)[1].get<uint64_t>();
    if (e.begin > e.end || e.end > out.data_size) {
      throw bad_tensor(str_cat("data_offsets [", e.begin, ", ", e.end, "] lie outside the ", out.data_size,
                               " data bytes (truncated file?)"));
    }
    if (e.end - e.begin != bytes) {
      throw bad_tensor(str_cat("holds ", e.end - e.begin, " bytes but shape ", shape_str(e.shape), " of ",
                               it->name, " needs ", bytes));
    }
    out.entries.push_back(std::move(e));
  }
  std::sort(out.entries.begin(), out.entries.end(),
            [](const SafetensorsHeaderEntry& a, const SafetensorsHeaderEntry& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < out.entries.size(); ++i) {
    if (out.entries[i].begin < out.entries[i - 1].end) {
      throw bad(str_cat("tensors '", capped(out.entries[i - 1].name), "' and '", capped(out.entries[i].name),
                        "' overlap in the data"));
    }
  }
  return out;
}

}  // namespace shardtune
