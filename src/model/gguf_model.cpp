#include "shardtune/model/gguf_model.h"

#include <filesystem>
#include <fstream>
#include <cmath>
#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"
#include "shardtune/formats/gguf_llama.h"
#include "shardtune/model/hf_checkpoint.h"
#include "shardtune/model/safetensors.h"

namespace shardtune {
namespace fs = std::filesystem;
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  if (!out) throw Error(str_cat(path, ": cannot write"));
}

nlohmann::json generation_config(const nlohmann::json& hf_config) {
  nlohmann::json g = {{"_from_model_config", true}};
  for (const char* k : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    if (hf_config.contains(k) && !hf_config[k].is_null()) g[k] = hf_config[k];
  }
  return g;
}

}  // namespace

bool is_gguf_path(const std::string& path) {
  return path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
}

GgmlType parse_gguf_type(const std::string& name) {
  if (name == "f32") return GgmlType::kF32;
  if (name == "f16") return GgmlType::kF16;
  if (name == "bf16") return GgmlType::kBF16;
  if (name == "q8_0") return GgmlType::kQ8_0;
  throw InputError(str_cat("--gguf-type: '", name, "' is not one of f32, f16, bf16, q8_0"));
}

ModelConfig gguf_model_config(const GgufFile& file) { return model_config_from_json(gguf_hf_config(file), file.path()); }

void load_gguf_weights(CausalLM& model, const GgufFile& file) {
  const ModelConfig& c = model.config();
  ST_CHECK(c.arch != nullptr, "load_gguf_weights: not a decoder model");
  const Architecture& a = *c.arch;
  const std::string arch = file.get_string("general.architecture");
  std::map<std::string, const GgufTensorInfo*> by_hf;
  for (const auto& t : file.tensors()) {
    // Read into the config (gguf_hf_config).
    if (t.name == "rope_freqs.weight" || t.name == "rope_factors_long.weight" || t.name == "rope_factors_short.weight") {
      continue;
    }
    const std::string hf = gguf_to_hf_name(a, t.name);
    if (hf.empty()) {
      throw InputError(str_cat(file.path(), ": unexpected tensor '", t.name, "' (not part of a ", arch, " model)"));
    }
    by_hf[hf] = &t;
  }
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    if (name.find(".lora_") != std::string::npos) continue;
    const auto it = by_hf.find(name);
    if (it == by_hf.end()) {
      throw InputError(str_cat(file.path(), ": tensor '", hf_to_gguf_name(a, name), "' (", name,
                               ") is missing; a model with this metadata has it"));
    }
    const GgufTensorInfo& t = *it->second;
    torch::Tensor& dst = item.value();
    if (t.shape() != dst.sizes().vec()) {
      throw InputError(str_cat(file.path(), ": tensor '", t.name, "' has shape ", shape_str(t.shape()),
                               ", the metadata implies ", shape_str(dst.sizes().vec())));
    }
    std::vector<float> v = file.dequantized(t);
    require_finite(v.data(), v.size(), file.path(), t.name);
    if (gguf_rope_permuted(a, name)) {
      const bool q = name.find("q_proj") != std::string::npos;
      const int64_t rows = t.shape()[0];
      const int64_t cols = t.shape().size() > 1 ? t.shape()[1] : 1;
      gguf_unpermute_rows(v.data(), rows, cols, q ? c.num_heads : c.num_kv_heads);
    }
    if (gguf_norm_offset(a, name)) {
      for (float& x : v) x -= 1.0f;  // GGUF stores gemma's 1 + w
    }
    dst.copy_(torch::from_blob(v.data(), dst.sizes(), torch::kFloat32));
    used.insert(name);
  }
  for (const auto& [hf, t] : by_hf) {
    if (used.count(hf) == 0 && !(c.tie_word_embeddings && hf == "lm_head.weight")) {
      throw InputError(str_cat(file.path(), ": unexpected tensor '", t->name, "' for this model"));
    }
  }
}

std::shared_ptr<CausalLM> load_gguf_model(const std::string& path, torch::Dtype dtype, torch::Device device) {
  const GgufFile file(path);
  auto model = make_causal_lm(gguf_model_config(file));
  load_gguf_weights(*model, file);
  model->to(device, dtype);
  model->eval();
  return model;
}

namespace {

// general.* and <arch>.* metadata for c, as llama.cpp reads them; a model
// whose math llama.cpp's architecture would not reproduce is refused by name.
void add_model_metadata(GgufWriter& w, const ModelConfig& c, const std::string& name, const std::string& where) {
  const Architecture& a = *c.arch;
  const std::string& arch = a.gguf_arch;
  auto refuse = [&](const std::string& what, const std::string& why) {
    throw InputError(str_cat(where, ": ", what, " is not written to GGUF (", why, ")"));
  };
  const std::string none = str_cat("llama.cpp's ", arch, " has none");
  if (!a.gguf_supported) {
    throw InputError(str_cat(where, ": a ", c.model_type, " model is not written to GGUF (", architecture_names(true),
                             ")"));
  }
  if (c.mlp_bias) refuse("mlp_bias", none);
  if (c.rotary_dim > 0 && c.rotary_dim != c.head_dim && !a.partial_rotary) refuse("a partial rotary embedding", none);
  const bool gemma2 = arch == "gemma2", gemma3 = arch == "gemma3";
  if (a.windows == WindowRule::kLayerPattern) {
    const bool big = (gemma2 && c.num_layers == 46) || (gemma3 && c.num_layers == 62);
    const double want = 1.0 / std::sqrt(static_cast<double>(big ? c.hidden_size / c.num_heads : c.head_dim));
    if (std::abs(c.query_scale - want) > 1e-12 * want) {
      refuse(str_cat("query_pre_attn_scalar ", 1.0 / (c.query_scale * c.query_scale)),
             str_cat("llama.cpp scales queries by 1/sqrt(", big ? "hidden_size / heads" : "head_dim", ")"));
    }
    const int64_t pattern = a.window_pattern;
    for (int64_t i = 0; i < c.num_layers; ++i) {
      if (layer_windowed(c, i) != ((i + 1) % pattern != 0)) {
        refuse("this sliding-window layer pattern",
               str_cat("llama.cpp's ", arch, " windows all layers but every ", pattern, "th"));
      }
    }
    if (gemma3 && (c.attn_softcap > 0 || c.final_softcap > 0)) refuse("soft-capping", none);
  } else if (c.sliding_window > 0 && a.windows != WindowRule::kEveryLayer) {
    refuse("sliding_window", none);
  }
  if (a.no_rope_layers) {
    for (int64_t i = 0; i < c.num_layers; ++i) {
      if (layer_has_rope(c, i) != ((i + 1) % 4 != 0)) {
        refuse("this no_rope_layers pattern", "llama.cpp's smollm3 leaves out the rotary embedding on every 4th layer");
      }
    }
  } else if (!c.rope_layers.empty()) {
    refuse("no_rope_layers", none);
  }
  const RopeSpec& r = c.rope;
  if (r.kind == RopeSpec::Kind::kLlama3 && !a.gguf_rope_freqs) refuse("llama3 rope scaling", none);
  if (r.kind == RopeSpec::Kind::kLinear && !gemma3) refuse("linear rope scaling", none);
  if (r.kind == RopeSpec::Kind::kLongrope && !a.longrope) refuse("longrope scaling", none);
  if (c.local_rope && (!gemma3 || c.rope_local.kind != RopeSpec::Kind::kDefault)) {
    refuse("this rotary embedding of the windowed layers", "llama.cpp's gemma3 gives them a base without scaling");
  }
  const std::string p = arch + ".";
  w.add_string("general.architecture", arch);
  w.add_string("general.type", "model");
  w.add_string("general.name", name);
  w.add_uint32(p + "block_count", static_cast<uint32_t>(c.num_layers));
  w.add_uint32(p + "context_length", static_cast<uint32_t>(c.max_positions));
  w.add_uint32(p + "embedding_length", static_cast<uint32_t>(c.hidden_size));
  w.add_uint32(p + "feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  w.add_uint32(p + "attention.head_count", static_cast<uint32_t>(c.num_heads));
  w.add_uint32(p + "attention.head_count_kv", static_cast<uint32_t>(c.num_kv_heads));
  w.add_float32(p + "rope.freq_base", static_cast<float>(r.theta));
  w.add_float32(p + "attention.layer_norm_rms_epsilon", static_cast<float>(c.norm_eps));
  // Always, as llama.cpp's converter writes them from config.json's head_dim
  // (readers that default it, transformers' for gemma, would guess 256).
  w.add_uint32(p + "attention.key_length", static_cast<uint32_t>(c.head_dim));
  w.add_uint32(p + "attention.value_length", static_cast<uint32_t>(c.head_dim));
  w.add_uint32(p + "vocab_size", static_cast<uint32_t>(c.vocab_size));
  w.add_uint32(p + "rope.dimension_count", static_cast<uint32_t>(rotary_dim(c)));
  if (a.windows == WindowRule::kLayerPattern) w.add_uint32(p + "attention.sliding_window", static_cast<uint32_t>(c.sliding_window));
  if (a.windows == WindowRule::kEveryLayer) {  // phi3: 0 for none, as llama.cpp's converter writes it
    w.add_uint32(p + "attention.sliding_window", static_cast<uint32_t>(std::max<int64_t>(c.sliding_window, 0)));
  }
  if (a.longrope) {
    const bool lr = r.kind == RopeSpec::Kind::kLongrope;
    w.add_uint32(p + "rope.scaling.original_context_length",
                 static_cast<uint32_t>(lr ? r.original_max_positions : c.max_positions));
    if (lr) w.add_float32(p + "rope.scaling.attn_factor", static_cast<float>(r.attention_factor));
  }
  if (gemma2) {
    if (c.attn_softcap > 0) w.add_float32(p + "attn_logit_softcapping", static_cast<float>(c.attn_softcap));
    if (c.final_softcap > 0) w.add_float32(p + "final_logit_softcapping", static_cast<float>(c.final_softcap));
  }
  if (gemma3) {
    w.add_float32(p + "rope.freq_base_swa", static_cast<float>(c.local_rope ? c.rope_local.theta : r.theta));
    if (r.kind == RopeSpec::Kind::kLinear) {
      w.add_string(p + "rope.scaling.type", "linear");
      w.add_float32(p + "rope.scaling.factor", static_cast<float>(r.factor));
    }
  }
}

}  // namespace

void save_gguf_model(CausalLM& model, const std::string& path, const nlohmann::json& tokenizer_json,
                     const nlohmann::json& tokenizer_config, const GgufExportOptions& o) {
  if (model.has_lora()) throw Error("save_gguf_model: the model has LoRA adapters; merge them first");
  if (fs::exists(path) && !o.overwrite) throw InputError(str_cat(path, ": exists already (--overwrite to replace it)"));
  const ModelConfig& c = model.config();
  if (c.family != Family::kLlama) {
    throw InputError(str_cat(path, ": a ", c.model_type, " model is not written to GGUF (", architecture_names(true),
                             ")"));
  }
  const Architecture& a = *c.arch;
  const nlohmann::json hf_config = model_config_to_json(c, "float32");
  GgufWriter w;
  add_model_metadata(w, c, o.name.empty() ? fs::path(path).stem().string() : o.name, path);
  const uint32_t file_type = o.type == GgmlType::kF32 ? 0 : o.type == GgmlType::kF16 ? 1 : o.type == GgmlType::kQ8_0 ? 7 : 32;
  w.add_uint32("general.file_type", file_type);
  if (o.type == GgmlType::kQ8_0) w.add_uint32("general.quantization_version", 2);
  add_gguf_tokenizer(w, tokenizer_json, tokenizer_config, hf_config, path);
  if (c.rope.kind == RopeSpec::Kind::kLlama3) {
    const RopeSpec& r = c.rope;
    const std::vector<double> f = llama3_rope_factors(c.head_dim, r.theta, r.factor, r.low_freq_factor,
                                                      r.high_freq_factor, static_cast<double>(r.original_max_positions));
    std::vector<float> v(f.begin(), f.end());
    std::vector<uint8_t> bytes(v.size() * sizeof(float));
    std::memcpy(bytes.data(), v.data(), bytes.size());
    w.add_tensor("rope_freqs.weight", {static_cast<int64_t>(v.size())}, GgmlType::kF32, std::move(bytes));
  }
  if (c.rope.kind == RopeSpec::Kind::kLongrope) {  // phi3's factor tensors, long then short as llama.cpp writes them
    for (const auto& [tname, factors] : {std::pair{"rope_factors_long.weight", &c.rope.long_factor},
                                         std::pair{"rope_factors_short.weight", &c.rope.short_factor}}) {
      std::vector<float> v(factors->begin(), factors->end());
      std::vector<uint8_t> bytes(v.size() * sizeof(float));
      std::memcpy(bytes.data(), v.data(), bytes.size());
      w.add_tensor(tname, {static_cast<int64_t>(v.size())}, GgmlType::kF32, std::move(bytes));
    }
  }
  for (auto& [name, tensor] : hf_state_dict(model)) {
    if (c.tie_word_embeddings && name == "lm_head.weight") continue;
    const std::string gname = hf_to_gguf_name(a, name);
    ST_CHECK(!gname.empty(), "no GGUF name for ", name);
    torch::Tensor t = tensor.to(torch::kCPU, torch::kFloat32).contiguous().clone();
    std::vector<int64_t> dims(t.sizes().rbegin(), t.sizes().rend());
    if (gguf_rope_permuted(a, name)) {
      const bool q = name.find("q_proj") != std::string::npos;
      gguf_permute_rows(t.data_ptr<float>(), t.size(0), t.dim() > 1 ? t.size(1) : 1, q ? c.num_heads : c.num_kv_heads);
    }
    if (gguf_norm_offset(a, name)) t.add_(1.0f);  // gemma's 1 + w, as llama.cpp's converter stores it
    GgmlType type = t.dim() == 1 ? GgmlType::kF32 : o.type;
    if (type == GgmlType::kQ8_0 && dims[0] % 32 != 0) type = GgmlType::kF16;  // rows not whole blocks
    std::vector<uint8_t> bytes(static_cast<size_t>(ggml_row_bytes(type, t.numel())));
    quantize(type, t.data_ptr<float>(), t.numel(), bytes.data());
    w.add_tensor(gname, std::move(dims), type, std::move(bytes));
  }
  if (!fs::path(path).parent_path().empty()) fs::create_directories(fs::path(path).parent_path());
  w.write(path);
}

bool write_tokenizer_files(const std::string& source, const std::string& folder) {
  if (source.empty()) return false;
  if (is_gguf_path(source)) {
    const GgufFile file(source);
    if (file.find("tokenizer.ggml.model") == nullptr) return false;
    write_json(folder + "/tokenizer.json", gguf_tokenizer_json(file));
    write_json(folder + "/tokenizer_config.json", gguf_tokenizer_config(file));
    write_json(folder + "/generation_config.json", generation_config(gguf_hf_config(file)));
    return true;
  }
  bool any = false;
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "generation_config.json", "vocab.json", "merges.txt", "tokenizer.model"}) {
    const fs::path from = fs::path(source) / name;
    if (!fs::is_regular_file(from)) continue;
    fs::copy_file(from, fs::path(folder) / name, fs::copy_options::overwrite_existing);
    any = true;
  }
  return any;
}

void convert_gguf_to_hf(const std::string& src, const std::string& dst, bool overwrite) {
  if (fs::exists(dst) && !overwrite) throw InputError(str_cat(dst, ": exists already (--overwrite to replace it)"));
  auto model = load_gguf_model(src);
  HfExportOptions o;
  o.overwrite = overwrite;
  o.tokenizer_from = src;
  save_hf_model(*model, dst, o);
}

void save_gguf_model(CausalLM& model, const std::string& path, const std::string& tokenizer_folder,
                     const GgufExportOptions& options) {
  const fs::path tok = fs::path(tokenizer_folder) / "tokenizer.json";
  if (!fs::is_regular_file(tok)) {
    throw InputError(str_cat(tokenizer_folder, ": has no tokenizer.json, which a GGUF file needs (byte-level BPE)"));
  }
  auto read = [](const fs::path& p) {
    std::ifstream in(p);
    try {
      return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw InputError(str_cat(p.string(), ": not valid JSON: ", without_exception_tag(e.what())));
    }
  };
  const fs::path cfg = fs::path(tokenizer_folder) / "tokenizer_config.json";
  save_gguf_model(model, path, read(tok), fs::exists(cfg) ? read(cfg) : nlohmann::json(), options);
}

void convert_hf_to_gguf(const std::string& src, const std::string& dst, const GgufExportOptions& options) {
  if (fs::exists(dst) && !options.overwrite) {
    throw InputError(str_cat(dst, ": exists already (--overwrite to replace it)"));
  }
  auto model = load_hf_model(src);
  save_gguf_model(*model, dst, src, options);
}

}  // namespace shardtune
