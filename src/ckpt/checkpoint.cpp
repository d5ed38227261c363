#include "shardtune/ckpt/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"
#include "shardtune/model/model_config.h"
#include "shardtune/model/safetensors.h"

namespace shardtune {
namespace fs = std::filesystem;
namespace {

constexpr const char* kFormat = "shardtune.checkpoint";
constexpr int kVersion = 1;

std::string optim_file(const std::string& ckpt, int rank) {
  char name[64];
  std::snprintf(name, sizeof(name), "optim/rank_%05d.safetensors", rank);
  return ckpt + "/" + name;
}

// step_N (no suffix): its step, else -1.
int64_t step_of(const std::string& name) {
  if (name.rfind("step_", 0) != 0 || name.size() == 5) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

[[noreturn]] void refuse(const std::string& path, const std::string& why) {
  throw InputError(str_cat("checkpoint ", path, " is unusable: ", why));
}

int64_t meta_int(const SafetensorsFile& f, const char* key) {
  const auto it = f.metadata().find(key);
  if (it == f.metadata().end()) throw InputError(str_cat(f.path(), ": metadata has no '", key, "'"));
  try {
    size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    if (used != it->second.size()) throw std::invalid_argument("trailing text");
    return v;
  } catch (const std::exception&) {
    throw InputError(str_cat(f.path(), ": metadata '", key, "' is not an integer: \"", it->second, "\""));
  }
}

// Flushes a file (or folder) to disk.
void sync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error(str_cat(path, ": cannot open to sync: ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw Error(str_cat(path, ": fsync failed: ", std::strerror(errno)));
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) throw Error(str_cat(path, ": cannot write"));
}

}  // namespace

std::string layout_signature(const std::vector<std::string>& names, const std::vector<int64_t>& numels) {
  // 64-bit FNV-1a over "name:numel;" in order.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const std::string& s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  for (size_t i = 0; i < names.size(); ++i) mix(str_cat(names[i], ":", i < numels.size() ? numels[i] : -1, ";"));
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016" PRIx64, h);
  return hex;
}

std::string checkpoint_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step_%08lld", static_cast<long long>(step));
  return name;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const int64_t step = step_of(name);
    if (step < 0 || entry.is_symlink() || !entry.is_directory()) continue;
    if (!fs::exists(entry.path() / "DONE")) continue;  // incomplete: never taken
    found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

std::string latest_checkpoint(const std::string& dir) {
  const auto all = list_checkpoints(dir);
  return all.empty() ? "" : all.back();
}

TrainerState read_trainer_state(const std::string& path) {
  const std::string file = path + "/trainer_state.json";
  std::ifstream in(file);
  if (!in) refuse(path, "trainer_state.json is missing");
  TrainerState s;
  try {
    nlohmann::json j;
    in >> j;
    if (j.value("format", "") != kFormat) refuse(path, "trainer_state.json is not a shardtune checkpoint state");
    if (j.at("version").get<int>() != kVersion) {
      refuse(path, str_cat("trainer_state.json has version ", j.at("version").get<int>(), ", this build reads ",
                           kVersion));
    }
    s.step = j.at("step").get<int64_t>();
    s.sampler.epoch = j.at("sampler").at("epoch").get<int64_t>();
    s.sampler.cursor = j.at("sampler").at("cursor").get<int64_t>();
    s.tokens_seen = j.at("tokens_seen").get<int64_t>();
    s.world_size = j.at("world_size").get<int64_t>();
    s.zero_stage = j.at("zero_stage").get<int64_t>();
    s.global_batch = j.at("global_batch").get<int64_t>();
    s.seed = j.at("seed").get<int64_t>();
    s.num_params = j.at("num_params").get<int64_t>();
    s.layout = j.at("layout").get<std::string>();
    s.lora = j.at("lora").get<bool>();
    s.config_yaml = j.at("config").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    refuse(path, str_cat("trainer_state.json: ", without_exception_tag(e.what())));
  }
  if (s.step < 0 || s.world_size < 1 || s.num_params < 1 || s.sampler.cursor < 0 || s.sampler.epoch < 0) {
    refuse(path, "trainer_state.json holds impossible values");
  }
  return s;
}

void write_trainer_state(const std::string& tmp, const TrainerState& s) {
  const nlohmann::json j = {
      {"format", kFormat},
      {"version", kVersion},
      {"step", s.step},
      {"sampler", {{"epoch", s.sampler.epoch}, {"cursor", s.sampler.cursor}}},
      {"tokens_seen", s.tokens_seen},
      {"world_size", s.world_size},
      {"zero_stage", s.zero_stage},
      {"global_batch", s.global_batch},
      {"seed", s.seed},
      {"num_params", s.num_params},
      {"layout", s.layout},
      {"lora", s.lora},
      {"config", s.config_yaml},
  };
  write_text(tmp + "/trainer_state.json", j.dump(2) + "\n");
}

// ---------------------------------------------------------------- reading

struct OptimStateReader::Piece {
  std::unique_ptr<SafetensorsFile> file;
  int64_t offset = 0, length = 0;
};

OptimStateReader::OptimStateReader(const std::string& path) {
  const TrainerState state = read_trainer_state(path);
  num_params_ = state.num_params;
  for (int r = 0; r < state.world_size; ++r) {
    const std::string file = optim_file(path, r);
    if (!fs::exists(file)) {
      refuse(path, str_cat("optim/", fs::path(file).filename().string(), " is missing (saved by ", state.world_size,
                           " ranks)"));
    }
    auto piece = std::make_unique<Piece>();
    try {
      piece->file = std::make_unique<SafetensorsFile>(file);
    } catch (const InputError& e) {
      refuse(path, e.what());
    }
    const SafetensorsFile& f = *piece->file;
    piece->offset = meta_int(f, "offset");
    piece->length = meta_int(f, "length");
    if (meta_int(f, "world_size") != state.world_size || meta_int(f, "rank") != r ||
        meta_int(f, "num_params") != state.num_params) {
      refuse(path, str_cat(file, ": its metadata (rank, world_size, num_params) disagrees with trainer_state.json"));
    }
    if (f.metadata().count("layout") == 0 || f.metadata().at("layout") != state.layout) {
      refuse(path, str_cat(file, ": parameter layout differs from trainer_state.json's"));
    }
    for (const char* name : {"master", "exp_avg", "exp_avg_sq"}) {
      const SafetensorsEntry* e = f.find(name);
      if (e == nullptr) refuse(path, str_cat(file, ": tensor '", name, "' is missing"));
      if (e->dtype != c10::ScalarType::Float || e->shape != std::vector<int64_t>{piece->length}) {
        refuse(path, str_cat(file, ": tensor '", name, "' is not float32 of length ", piece->length));
      }
    }
    pieces_.push_back(std::move(piece));
  }
  std::sort(pieces_.begin(), pieces_.end(), [](const auto& a, const auto& b) { return a->offset < b->offset; });
  // Invariant: the pieces tile [0, num_params) in order.
  int64_t at = 0;
  for (const auto& p : pieces_) {
    if (p->offset != at) refuse(path, str_cat("optimizer pieces leave a gap or overlap at flat offset ", at));
    at += p->length;
  }
  if (at != num_params_) {
    refuse(path, str_cat("optimizer pieces cover ", at, " of ", num_params_, " trainable elements"));
  }
}

OptimStateReader::~OptimStateReader() = default;

OptimStateReader::Range OptimStateReader::read(int64_t offset, int64_t length) const {
  ST_CHECK(offset >= 0 && length >= 0, "bad range");
  if (offset + length > num_params_) {
    throw InputError(str_cat("checkpoint holds ", num_params_, " trainable elements; [", offset, ", ",
                             offset + length, ") is past them"));
  }
  Range out;
  out.master = torch::empty({length}, torch::kFloat32);
  out.exp_avg = torch::empty({length}, torch::kFloat32);
  out.exp_avg_sq = torch::empty({length}, torch::kFloat32);
  for (const auto& p : pieces_) {
    const int64_t lo = std::max(offset, p->offset);
    const int64_t hi = std::min(offset + length, p->offset + p->length);
    if (hi <= lo) continue;
    for (const auto& [name, dst] : {std::pair<const char*, torch::Tensor*>{"master", &out.master},
                                    {"exp_avg", &out.exp_avg}, {"exp_avg_sq", &out.exp_avg_sq}}) {
      const torch::Tensor src = p->file->tensor(name).narrow(0, lo - p->offset, hi - lo);
      require_finite(src.contiguous(), p->file->path(), name);  // the weights and their moments alike
      dst->narrow(0, lo - offset, hi - lo).copy_(src);
    }
  }
  return out;
}

TrainerState validate_checkpoint(const std::string& path) {
  if (!fs::is_directory(path)) refuse(path, "no such folder");
  if (!fs::exists(path + "/DONE")) {
    refuse(path, "DONE is missing: the checkpoint was not completely written");
  }
  const TrainerState state = read_trainer_state(path);
  try {
    (void)load_model_config(path);
  } catch (const InputError& e) {
    refuse(path, e.what());
  }
  std::vector<std::string> weight_files;
  if (fs::exists(path + "/model.safetensors")) {
    weight_files.push_back(path + "/model.safetensors");
  } else if (fs::exists(path + "/model.safetensors.index.json")) {
    for (const auto& entry : fs::directory_iterator(path)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("model-", 0) == 0 && entry.path().extension() == ".safetensors") {
        weight_files.push_back(entry.path().string());
      }
    }
  } else {
    refuse(path, "model.safetensors is missing");
  }
  if (state.lora) weight_files.push_back(path + "/adapter_model.safetensors");
  for (const auto& f : weight_files) {
    if (!fs::exists(f)) refuse(path, str_cat(fs::path(f).filename().string(), " is missing"));
    try {
      SafetensorsFile check(f);
    } catch (const InputError& e) {
      refuse(path, e.what());
    }
  }
  OptimStateReader reader(path);  // checks the optimizer files
  return state;
}

// ---------------------------------------------------------------- writing

std::string checkpoint_tmp_path(const std::string& dir, int64_t step) {
  return dir + "/" + checkpoint_name(step) + ".tmp";
}

std::string begin_checkpoint(const std::string& dir, int64_t step) {
  const std::string tmp = checkpoint_tmp_path(dir, step);
  fs::remove_all(tmp);  // a crash's leftovers
  fs::create_directories(tmp + "/optim");
  return tmp;
}

void write_optim_piece(const std::string& tmp, int rank, int world, int64_t offset, const torch::Tensor& master,
                       const torch::Tensor& exp_avg, const torch::Tensor& exp_avg_sq, int64_t num_params,
                       const std::string& layout) {
  const std::map<std::string, std::string> meta = {
      {"format", kFormat},
      {"offset", std::to_string(offset)},
      {"length", std::to_string(master.numel())},
      {"rank", std::to_string(rank)},
      {"world_size", std::to_string(world)},
      {"num_params", std::to_string(num_params)},
      {"layout", layout},
  };
  save_safetensors(optim_file(tmp, rank),
                   {{"master", master.to(torch::kCPU)},
                    {"exp_avg", exp_avg.to(torch::kCPU)},
                    {"exp_avg_sq", exp_avg_sq.to(torch::kCPU)}},
                   meta);
}

void delete_checkpoint(const std::string& path, const std::function<void(const std::string&)>& mid_delete) {
  // Renamed first: from this instant no reader takes it (the name is no
  // step_N any more), whatever part of the removal a crash interrupts.
  const std::string doomed = path + ".deleting";
  fs::remove_all(doomed);
  fs::rename(path, doomed);
  sync_path(fs::path(path).parent_path().string());
  if (mid_delete) mid_delete(doomed);
  fs::remove_all(doomed);
}

std::vector<std::string> checkpoint_entries(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::string name = entry.path().filename().string();
    if (name == "latest" || name == "latest.tmp") {
      out.push_back(entry.path().string());
      continue;
    }
    for (const char* suffix : {".tmp", ".deleting"}) {
      if (ends_with(name, suffix)) name.resize(name.size() - std::strlen(suffix));
    }
    if (step_of(name) >= 0) out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string finish_checkpoint(const std::string& tmp, int64_t keep,
                              const std::function<void(const std::string&)>& mid_delete) {
  ST_CHECK(tmp.size() > 4 && tmp.compare(tmp.size() - 4, 4, ".tmp") == 0, "not a .tmp folder: ", tmp);
  const std::string final_path = tmp.substr(0, tmp.size() - 4);
  const fs::path dir = fs::path(final_path).parent_path();
  // Everything on disk before DONE says so.
  for (const auto& entry : fs::recursive_directory_iterator(tmp)) sync_path(entry.path().string());
  write_text(tmp + "/DONE", "");
  sync_path(tmp + "/DONE");
  sync_path(tmp);
  if (fs::exists(final_path)) fs::remove_all(final_path);  // a run redoing a step
  fs::rename(tmp, final_path);
  sync_path(dir.string());

  // latest -> step_N, replaced atomically.
  const fs::path link = dir / "latest";
  const fs::path link_tmp = dir / "latest.tmp";
  fs::remove(link_tmp);
  fs::create_directory_symlink(fs::path(final_path).filename(), link_tmp);
  fs::rename(link_tmp, link);

  // Prune: only checkpoints older than this one; keep - 1 of them stay.
  const int64_t step = step_of(fs::path(final_path).filename().string());
  std::vector<std::string> older;
  for (const auto& p : list_checkpoints(dir.string())) {
    if (step_of(fs::path(p).filename().string()) < step) older.push_back(p);
  }
  const size_t stay = static_cast<size_t>(std::max<int64_t>(keep - 1, 0));
  for (size_t i = 0; i + stay < older.size(); ++i) delete_checkpoint(older[i], mid_delete);
  // Leftovers of interrupted writes of earlier steps, and of deletions.
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::string name = entry.path().filename().string();
    if (!entry.is_directory() || entry.is_symlink()) continue;
    if (ends_with(name, ".deleting") && step_of(name.substr(0, name.size() - 9)) >= 0) {
      stale.push_back(entry.path());
      continue;
    }
    const bool is_tmp = ends_with(name, ".tmp");
    if (is_tmp) name.resize(name.size() - 4);
    const int64_t s = step_of(name);
    if (s >= 0 && s < step && (is_tmp || !fs::exists(entry.path() / "DONE"))) stale.push_back(entry.path());
  }
  for (const auto& p : stale) fs::remove_all(p);
  return final_path;
}

}  // namespace shardtune
