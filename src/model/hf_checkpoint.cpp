#include "shardtune/model/hf_checkpoint.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "shardtune/core/error.h"
#include "shardtune/core/files.h"
#include "shardtune/core/strings.h"
#include "shardtune/model/gguf_model.h"
#include "shardtune/model/safetensors.h"

namespace shardtune {
namespace fs = std::filesystem;
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_lora(const std::string& name) {
  return ends_with(name, ".lora_A") || ends_with(name, ".lora_B");
}

// GPT-2 keeps these weights in Conv1D layout, [in, out].
bool is_conv1d(const ModelConfig& c, const std::string& name) {
  return c.family == Family::kGpt2 &&
         (ends_with(name, ".c_attn.weight") || ends_with(name, ".c_proj.weight") ||
          ends_with(name, ".c_fc.weight"));
}

// Tensors HF checkpoints may hold that are not parameters.
bool ignorable(const ModelConfig& c, const std::string& name) {
  return ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias") ||
         ends_with(name, ".rotary_emb.inv_freq") ||
         (c.tie_word_embeddings && name == "lm_head.weight");
}

std::string shape_str(c10::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// The safetensors files of a model folder and which holds which tensor.
struct WeightFiles {
  std::map<std::string, std::unique_ptr<SafetensorsFile>> files;  // by path
  std::map<std::string, SafetensorsFile*> by_name;
};

WeightFiles open_weights(const std::string& dir) {
  WeightFiles w;
  const std::string index_path = dir + "/model.safetensors.index.json";
  const std::string single = dir + "/model.safetensors";
  std::vector<std::string> paths;
  if (fs::exists(index_path)) {
    std::ifstream in(index_path);
    nlohmann::json index;
    try {
      in >> index;
    } catch (const nlohmann::json::exception& e) {
      throw InputError(str_cat(index_path, ": not valid JSON: ", without_exception_tag(e.what())));
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
      throw InputError(str_cat(index_path, ": no weight_map object"));
    }
    std::map<std::string, std::string> map;
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos) {
        throw InputError(str_cat(index_path, ": weight_map entry for '", name, "' is not a file name"));
      }
      map[name] = dir + "/" + file.get<std::string>();
    }
    for (const auto& [name, path] : map) {
      auto it = w.files.find(path);
      if (it == w.files.end()) it = w.files.emplace(path, std::make_unique<SafetensorsFile>(path)).first;
      if (it->second->find(name) == nullptr) {
        throw InputError(str_cat(path, ": has no tensor '", name, "' though ", index_path, " says it does"));
      }
      w.by_name[name] = it->second.get();
    }
    return w;
  }
  if (!fs::exists(single)) {
    throw InputError(str_cat(dir, ": no model.safetensors or model.safetensors.index.json "
                                  "(only safetensors weights are read)"));
  }
  auto file = std::make_unique<SafetensorsFile>(single);
  for (const auto& e : file->entries()) w.by_name[e.name] = file.get();
  w.files.emplace(single, std::move(file));
  return w;
}

void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  if (!out) throw Error(str_cat(path, ": cannot write"));
}

std::string torch_dtype_name(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kFloat16:
      return "float16";
    default:
      return "float32";
  }
}

// Makes a fresh temporary folder beside dir; rename it to dir when complete.
std::string begin_folder(const std::string& dir, bool overwrite) {
  if (fs::exists(dir) && !overwrite) {
    throw InputError(str_cat(dir, ": exists already (overwrite to replace it)"));
  }
  const fs::path parent = fs::path(dir).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  return create_temp_dir(dir);
}

// Puts tmp in dir's place (an old dir deleted only once the new one is in place).
void finish_folder(const std::string& tmp, const std::string& dir) { replace_with_temp(tmp, dir); }

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> hf_state_dict(CausalLM& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : model.named_parameters()) {
    if (is_lora(item.key())) continue;
    torch::Tensor t = item.value().detach();
    if (is_conv1d(model.config(), item.key())) t = t.t().contiguous();
    out.emplace_back(item.key(), t);
  }
  return out;
}

void load_hf_weights(CausalLM& model, const std::string& dir) {
  const ModelConfig& config = model.config();
  WeightFiles w = open_weights(dir);
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    if (is_lora(name)) continue;
    const auto it = w.by_name.find(name);
    if (it == w.by_name.end()) {
      throw InputError(str_cat(dir, ": tensor '", name, "' is missing (a ", config.model_type,
                               " model with this config.json has it)"));
    }
    torch::Tensor src = it->second->tensor(name);
    torch::Tensor& dst = item.value();
    const bool conv = is_conv1d(config, name);
    const std::vector<int64_t> want =
        conv ? std::vector<int64_t>(dst.sizes().rbegin(), dst.sizes().rend()) : dst.sizes().vec();
    if (src.sizes().vec() != want) {
      throw InputError(str_cat(it->second->path(), ": tensor '", name, "' has shape ",
                               shape_str(src.sizes()), ", config.json implies ", shape_str(want)));
    }
    if (!src.is_floating_point()) {
      throw InputError(str_cat(it->second->path(), ": tensor '", name, "' is ",
                               c10::toString(src.scalar_type()), ", not a floating-point type"));
    }
    require_finite(src, it->second->path(), name);
    dst.copy_(conv ? src.t() : src);
    used.insert(name);
  }
  for (const auto& [name, file] : w.by_name) {
    if (used.count(name) == 0 && !ignorable(config, name)) {
      throw InputError(str_cat(file->path(), ": unexpected tensor '", name, "' (not part of a ",
                               config.model_type, " model with this config.json)"));
    }
  }
}

std::shared_ptr<CausalLM> load_hf_model(const std::string& dir, torch::Dtype dtype,
                                        torch::Device device) {
  if (is_gguf_path(dir)) return load_gguf_model(dir, dtype, device);
  auto model = make_causal_lm(load_model_config(dir));
  load_hf_weights(*model, dir);  // on the CPU in float32, then moved
  model->to(device, dtype);
  model->eval();
  return model;
}

void write_hf_files(CausalLM& model, const std::string& folder, int64_t max_shard_bytes) {
  auto tensors = hf_state_dict(model);
  ST_CHECK(!tensors.empty(), "write_hf_files: the model has no parameters");
  const torch::Dtype dtype = tensors[0].second.scalar_type();
  write_json(folder + "/config.json", model_config_to_json(model.config(), torch_dtype_name(dtype)));

  // Shards of at most max_shard_bytes (a tensor larger than that goes alone).
  std::vector<std::vector<std::pair<std::string, torch::Tensor>>> shards(1);
  int64_t bytes = 0, total = 0;
  for (auto& t : tensors) {
    const int64_t n = t.second.numel() * t.second.element_size();
    if (bytes > 0 && bytes + n > max_shard_bytes) {
      shards.emplace_back();
      bytes = 0;
    }
    shards.back().push_back(t);
    bytes += n;
    total += n;
  }
  if (shards.size() == 1) {
    save_safetensors(folder + "/model.safetensors", shards[0]);
  } else {
    nlohmann::json map = nlohmann::json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      char name[64];
      std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      save_safetensors(folder + "/" + name, shards[i]);
      for (const auto& t : shards[i]) map[t.first] = name;
    }
    write_json(folder + "/model.safetensors.index.json",
               {{"metadata", {{"total_size", total}}}, {"weight_map", map}});
  }
}

void save_hf_model(CausalLM& model, const std::string& dir, const HfExportOptions& options) {
  if (model.has_lora()) {
    throw Error("save_hf_model: the model has LoRA adapters; merge them (or save the adapter)");
  }
  const std::string tmp = begin_folder(dir, options.overwrite);
  try {
    write_hf_files(model, tmp, options.max_shard_bytes);
    write_tokenizer_files(options.tokenizer_from, tmp);
  } catch (...) {
    fs::remove_all(tmp);  // nothing partial left behind
    throw;
  }
  finish_folder(tmp, dir);
}

void write_peft_files(CausalLM& model, const std::string& folder, const LoraSpec& spec,
                      const std::string& base_model) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : model.named_parameters()) {
    if (!is_lora(item.key())) continue;
    // model.layers.0.self_attn.q_proj.lora_A -> base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
    tensors.emplace_back(str_cat("base_model.model.", item.key(), ".weight"), item.value().detach());
  }
  if (tensors.empty()) throw Error("save_peft_adapter: the model has no LoRA adapters");
  nlohmann::json config = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"r", spec.rank},
      {"lora_alpha", spec.alpha},
      {"lora_dropout", spec.dropout},
      {"target_modules", spec.targets},
      {"bias", "none"},
      {"fan_in_fan_out", model.config().family == Family::kGpt2},  // GPT-2's Conv1D layers
      {"base_model_name_or_path", base_model},
      {"inference_mode", true},
  };
  write_json(folder + "/adapter_config.json", config);
  save_safetensors(folder + "/adapter_model.safetensors", tensors);
}

void save_peft_adapter(CausalLM& model, const std::string& dir, const LoraSpec& spec,
                       const std::string& base_model) {
  const std::string tmp = begin_folder(dir, /*overwrite=*/true);
  try {
    write_peft_files(model, tmp, spec, base_model);
  } catch (...) {
    fs::remove_all(tmp);  // nothing partial left behind
    throw;
  }
  finish_folder(tmp, dir);
}

LoraSpec load_peft_adapter(CausalLM& model, const std::string& dir) {
  const std::string config_path = dir + "/adapter_config.json";
  std::ifstream in(config_path);
  if (!in) throw InputError(str_cat(config_path, ": cannot open"));
  nlohmann::json j;
  LoraSpec spec;
  try {
    in >> j;
    if (j.value("peft_type", "") != "LORA") throw InputError(str_cat(config_path, ": peft_type is not LORA"));
    spec.rank = j.at("r").get<int64_t>();
    spec.alpha = j.at("lora_alpha").get<double>();
    spec.dropout = j.value("lora_dropout", 0.0);
    spec.targets = j.at("target_modules").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw InputError(str_cat(config_path, ": ", without_exception_tag(e.what())));
  }
  if (spec.rank <= 0) throw InputError(str_cat(config_path, ": r must be positive"));
  model.enable_lora(spec.targets, spec.rank, spec.alpha, spec.dropout);
  const SafetensorsFile file(dir + "/adapter_model.safetensors");
  torch::NoGradGuard no_grad;
  size_t used = 0;
  for (auto& item : model.named_parameters()) {
    if (!is_lora(item.key())) continue;
    const std::string name = str_cat("base_model.model.", item.key(), ".weight");
    if (file.find(name) == nullptr) throw InputError(str_cat(file.path(), ": tensor '", name, "' is missing"));
    const torch::Tensor src = file.tensor(name);
    if (src.sizes() != item.value().sizes()) {
      throw InputError(str_cat(file.path(), ": tensor '", name, "' has shape ", shape_str(src.sizes()),
                               ", adapter_config.json implies ", shape_str(item.value().sizes())));
    }
    require_finite(src, file.path(), name);
    item.value().copy_(src);
    ++used;
  }
  if (used != file.entries().size()) {
    throw InputError(str_cat(file.path(), ": ", file.entries().size() - used,
                             " tensor(s) match no adapted layer of this model"));
  }
  return spec;
}

}  // namespace shardtune
