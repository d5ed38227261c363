#include "shardtune/model/model_config.h"

#include <cmath>
#include <fstream>

#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"

namespace shardtune {
namespace {

// Reads key (or the first of several aliases) as an integer.
int64_t get_int(const nlohmann::json& j, std::initializer_list<const char*> keys,
                const std::string& where, int64_t fallback = -1) {
  for (const char* k : keys) {
    const auto it = j.find(k);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_number_integer()) {
      throw InputError(str_cat(where, ": ", k, ": expected an integer, got ", it->dump()));
    }
    return it->get<int64_t>();
  }
  if (fallback >= 0) return fallback;
  throw InputError(str_cat(where, ": missing key ", *keys.begin()));
}

double get_double(const nlohmann::json& j, const char* key, double fallback,
                  const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) {
    throw InputError(str_cat(where, ": ", key, ": expected a number, got ", it->dump()));
  }
  return it->get<double>();
}

bool get_bool(const nlohmann::json& j, const char* key, bool fallback, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    throw InputError(str_cat(where, ": ", key, ": expected true or false, got ", it->dump()));
  }
  return it->get<bool>();
}

}  // namespace

std::vector<int64_t> token_ids_from_json(const nlohmann::json& j, const char* key, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (it->is_number_integer()) return {it->get<int64_t>()};
  std::vector<int64_t> out;
  if (it->is_array()) {
    for (const auto& v : *it) {
      if (!v.is_number_integer()) break;
      out.push_back(v.get<int64_t>());
    }
    if (out.size() == it->size()) return out;
  }
  throw InputError(str_cat(where, ": ", key, ": expected a token id or a list of them, got ", capped(it->dump(), 200)));
}

namespace {

// Refuses key when its value is set and differs from the one the model implements.
void refuse_unless(const nlohmann::json& j, const char* key, const nlohmann::json& implemented,
                   const std::string& where, const char* why) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null() || *it == implemented) return;
  if (implemented.is_number() && it->is_number() && it->get<double>() == implemented.get<double>()) return;
  throw InputError(str_cat(where, ": ", key, " = ", capped(it->dump(), 200), " is not supported (", why, ")"));
}

// Sliding-window attention as transformers applies it: mistral windows every
// layer; qwen2 only when use_sliding_window, and then the layers its
// layer_types name (default: those from max_window_layers on); llama never.
void parse_sliding_window(const nlohmann::json& j, ModelConfig& c, const std::string& where) {
  const auto sw = j.find("sliding_window");
  if (sw == j.end() || sw->is_null() || c.model_type == "llama") return;
  if (!sw->is_number_integer() || sw->get<int64_t>() <= 0) {
    throw InputError(str_cat(where, ": sliding_window: expected a positive integer or null, got ", capped(sw->dump(), 200)));
  }
  if (c.model_type == "mistral") {
    c.sliding_window = sw->get<int64_t>();
    return;
  }
  // qwen2
  if (!get_bool(j, "use_sliding_window", false, where)) return;
  c.sliding_window = sw->get<int64_t>();
  const auto types = j.find("layer_types");
  if (types != j.end() && !types->is_null()) {
    if (!types->is_array() || static_cast<int64_t>(types->size()) != c.num_layers) {
      throw InputError(str_cat(where, ": layer_types: expected a list of ", c.num_layers, " entries"));
    }
    for (const auto& t : *types) {
      if (t != "full_attention" && t != "sliding_attention") {
        throw InputError(str_cat(where, ": layer_types: '", capped(t.dump(), 100),
                                 "' is not supported (full_attention, sliding_attention)"));
      }
      c.windowed_layers.push_back(t == "sliding_attention");
    }
    return;
  }
  const int64_t from = get_int(j, {"max_window_layers"}, where, c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) c.windowed_layers.push_back(i >= from);
}

}  // namespace

ModelConfig parse_model_config(const nlohmann::json& j, const std::string& where);

ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    return parse_model_config(j, where);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(str_cat(where, ": malformed config: ", without_exception_tag(e.what())));
  }
}

ModelConfig parse_model_config(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw InputError(str_cat(where, ": expected a JSON object"));
  ModelConfig c;
  c.source = j;
  c.origin = where;
  const auto type = j.find("model_type");
  if (type == j.end() || !type->is_string()) throw InputError(str_cat(where, ": missing key model_type"));
  c.model_type = type->get<std::string>();
  if (c.model_type == "gpt2") {
    c.family = Family::kGpt2;
    c.vocab_size = get_int(j, {"vocab_size"}, where);
    c.hidden_size = get_int(j, {"n_embd", "hidden_size"}, where);
    c.num_layers = get_int(j, {"n_layer", "num_hidden_layers"}, where);
    c.num_heads = get_int(j, {"n_head", "num_attention_heads"}, where);
    c.num_kv_heads = c.num_heads;
    c.intermediate_size = get_int(j, {"n_inner"}, where, 4 * c.hidden_size);
    c.max_positions = get_int(j, {"n_positions", "max_position_embeddings"}, where);
    c.norm_eps = get_double(j, "layer_norm_epsilon", 1e-5, where);
    c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", true, where);
    c.attention_bias = c.attention_out_bias = c.mlp_bias = true;
    refuse_unless(j, "scale_attn_by_inverse_layer_idx", false, where, "scores scaled by 1/sqrt(head_dim) only");
    refuse_unless(j, "reorder_and_upcast_attn", false, where, "attention in the model's dtype");
    refuse_unless(j, "scale_attn_weights", true, where, "scores are scaled by 1/sqrt(head_dim)");
    refuse_unless(j, "add_cross_attention", false, where, "decoder-only");
    const auto act = j.find("activation_function");
    if (act != j.end() && act->is_string() && *act != "gelu_new" && *act != "gelu_pytorch_tanh") {
      throw InputError(str_cat(where, ": activation_function ", act->dump(),
                               " is not supported (gelu_new)"));
    }
  } else if (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2") {
    c.family = Family::kLlama;
    c.vocab_size = get_int(j, {"vocab_size"}, where);
    c.hidden_size = get_int(j, {"hidden_size"}, where);
    c.num_layers = get_int(j, {"num_hidden_layers"}, where);
    c.num_heads = get_int(j, {"num_attention_heads"}, where);
    c.num_kv_heads = get_int(j, {"num_key_value_heads"}, where, c.num_heads);
    c.intermediate_size = get_int(j, {"intermediate_size"}, where);
    c.max_positions = get_int(j, {"max_position_embeddings"}, where);
    c.norm_eps = get_double(j, "rms_norm_eps", 1e-6, where);
    // RoPE: transformers 4 writes rope_theta and rope_scaling; transformers 5
    // writes rope_parameters, which holds both.
    const auto params = j.find("rope_parameters");
    const bool v5 = params != j.end() && params->is_object();
    c.rope_theta = v5 ? get_double(*params, "rope_theta", 10000.0, where)
                      : get_double(j, "rope_theta", 10000.0, where);
    c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, where);
    if (c.model_type == "qwen2") {
      c.attention_bias = true;  // q, k, v carry biases; o does not
    } else {
      c.attention_bias = c.attention_out_bias = get_bool(j, "attention_bias", false, where);
    }
    c.mlp_bias = get_bool(j, "mlp_bias", false, where);
    const auto act = j.find("hidden_act");
    if (act != j.end() && act->is_string() && *act != "silu") {
      throw InputError(str_cat(where, ": hidden_act ", act->dump(), " is not supported (silu)"));
    }
    for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping"}) {
      refuse_unless(j, key, nullptr, where, "no soft-capping");
    }
    refuse_unless(j, "partial_rotary_factor", 1.0, where, "rotary embedding over the whole head");
    for (const char* key : {"use_qk_norm", "qk_layernorm", "use_qk_layernorm"}) refuse_unless(j, key, false, where, "no q/k norm");
    parse_sliding_window(j, c, where);
    const auto rs = v5 ? params : j.find("rope_scaling");
    if (rs != j.end() && !rs->is_null()) {
      const std::string kind = rs->value("rope_type", rs->value("type", std::string("?")));
      if (kind == "llama3") {
        c.rope_llama3 = true;
        c.rope_factor = get_double(*rs, "factor", 8.0, where);
        c.rope_low_freq_factor = get_double(*rs, "low_freq_factor", 1.0, where);
        c.rope_high_freq_factor = get_double(*rs, "high_freq_factor", 4.0, where);
        c.rope_original_max_positions =
            get_int(*rs, {"original_max_position_embeddings"}, where, 8192);
      } else if (kind != "default") {
        throw InputError(str_cat(where, ": rope_scaling type '", kind,
                                 "' is not supported (llama3, default)"));
      }
    }
  } else {
    throw InputError(str_cat(where, ": model_type '", c.model_type,
                             "' is not supported (gpt2, llama, mistral, qwen2)"));
  }
  c.head_dim = get_int(j, {"head_dim"}, where, c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  const auto bos = token_ids_from_json(j, "bos_token_id", where);
  c.bos_token_id = bos.empty() ? -1 : bos[0];
  c.eos_token_ids = token_ids_from_json(j, "eos_token_id", where);
  validate(c, where);
  return c;
}

void validate(const ModelConfig& c, const std::string& where) {
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) throw InputError(str_cat(where, ": ", what));
  };
  need(c.vocab_size > 0, "vocab_size must be positive");
  need(c.hidden_size > 0 && c.num_layers > 0 && c.num_heads > 0,
       "hidden_size, num_layers and num_heads must be positive");
  need(c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
       str_cat("num_key_value_heads (", c.num_kv_heads, ") must divide num_attention_heads (",
               c.num_heads, ")"));
  need(c.head_dim > 0 && c.head_dim % 2 == 0, "head_dim must be positive and even");
  need(c.family != Family::kGpt2 || c.hidden_size % c.num_heads == 0,
       "n_head must divide n_embd");
  need(c.intermediate_size > 0 && c.max_positions > 0,
       "intermediate_size and max_position_embeddings must be positive");
  need(std::isfinite(c.norm_eps) && c.norm_eps >= 0,
       str_cat(c.family == Family::kGpt2 ? "layer_norm_epsilon " : "rms_norm_eps ", c.norm_eps,
               " must be a finite number >= 0"));
  need(c.family == Family::kGpt2 || (std::isfinite(c.rope_theta) && c.rope_theta > 0),
       str_cat("rope_theta ", c.rope_theta, " must be a finite number > 0"));
  // Sizes past these are no model anyone trains: a typo or a corrupt file,
  // caught before anything is allocated from them.
  need(c.vocab_size <= (int64_t{1} << 24), str_cat("vocab_size ", c.vocab_size, " is larger than 16,777,216"));
  need(c.hidden_size <= (int64_t{1} << 17) && c.intermediate_size <= (int64_t{1} << 20) && c.head_dim <= 4096,
       str_cat("hidden_size ", c.hidden_size, ", intermediate_size ", c.intermediate_size, " or head_dim ", c.head_dim,
               " is beyond any model (limits 131072, 1048576, 4096)"));
  need(c.num_layers <= 4096 && c.num_heads <= 4096, str_cat("num_layers ", c.num_layers, " or num_heads ", c.num_heads,
                                                            " is beyond any model (limit 4096)"));
  need(c.max_positions <= (int64_t{1} << 24), str_cat("max_position_embeddings ", c.max_positions,
                                                     " is larger than 16,777,216"));
}

ModelConfig load_model_config(const std::string& dir) {
  const bool is_file = dir.size() >= 5 && dir.compare(dir.size() - 5, 5, ".json") == 0;
  const std::string path = is_file ? dir : dir + "/config.json";
  std::ifstream in(path);
  if (!in) throw InputError(str_cat(path, ": cannot open (is ", dir, " a Hugging Face model folder?)"));
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    throw InputError(str_cat(path, ": not valid JSON: ", without_exception_tag(e.what())));
  }
  return model_config_from_json(j, path);
}

nlohmann::json model_config_to_json(const ModelConfig& c, const std::string& torch_dtype) {
  nlohmann::json j = c.source.is_object() ? c.source : nlohmann::json::object();
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  if (c.family == Family::kGpt2) {
    j["architectures"] = {"GPT2LMHeadModel"};
    j["n_embd"] = c.hidden_size;
    j["n_layer"] = c.num_layers;
    j["n_head"] = c.num_heads;
    j["n_positions"] = c.max_positions;
    j["n_inner"] = c.intermediate_size;
    j["layer_norm_epsilon"] = c.norm_eps;
    j["activation_function"] = "gelu_new";
    j["tie_word_embeddings"] = c.tie_word_embeddings;
  } else {
    const char* arch = c.model_type == "qwen2"     ? "Qwen2ForCausalLM"
                       : c.model_type == "mistral" ? "MistralForCausalLM"
                                                   : "LlamaForCausalLM";
    j["architectures"] = {arch};
    j["hidden_size"] = c.hidden_size;
    j["num_hidden_layers"] = c.num_layers;
    j["num_attention_heads"] = c.num_heads;
    j["num_key_value_heads"] = c.num_kv_heads;
    j["head_dim"] = c.head_dim;
    j["intermediate_size"] = c.intermediate_size;
    j["max_position_embeddings"] = c.max_positions;
    j["rms_norm_eps"] = c.norm_eps;
    j["rope_theta"] = c.rope_theta;
    j["hidden_act"] = "silu";
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    if (c.model_type != "qwen2") j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = c.mlp_bias;
  }
  // null, not absent, for a tokenizer without one (absent means the family's default).
  if (!j.contains("bos_token_id")) j["bos_token_id"] = c.bos_token_id >= 0 ? nlohmann::json(c.bos_token_id) : nullptr;
  if (!j.contains("eos_token_id")) {
    j["eos_token_id"] = c.eos_token_ids.empty()       ? nlohmann::json(nullptr)
                        : c.eos_token_ids.size() == 1 ? nlohmann::json(c.eos_token_ids[0])
                                                      : nlohmann::json(c.eos_token_ids);
  }
  j["torch_dtype"] = torch_dtype;
  return j;
}

int64_t parameter_count(const ModelConfig& c) {
  const int64_t d = c.hidden_size;
  const int64_t q = c.num_heads * c.head_dim;
  const int64_t kv = c.num_kv_heads * c.head_dim;
  int64_t per_layer = 0;
  int64_t total = c.vocab_size * d;
  if (c.family == Family::kGpt2) {
    per_layer = d * 3 * d + 3 * d + d * d + d            // c_attn, c_proj
                + d * c.intermediate_size + c.intermediate_size  // c_fc
                + c.intermediate_size * d + d                // mlp c_proj
                + 4 * d;                                     // ln_1, ln_2
    total += c.max_positions * d + 2 * d;                    // wpe, ln_f
    if (!c.tie_word_embeddings) total += c.vocab_size * d;   // lm_head
  } else {
    per_layer = d * (q + 2 * kv) + q * d + 3 * d * c.intermediate_size + 2 * d;
    if (c.attention_bias) per_layer += q + 2 * kv;
    if (c.attention_out_bias) per_layer += d;
    if (c.mlp_bias) per_layer += 2 * c.intermediate_size + d;
    total += d;  // final norm
    if (!c.tie_word_embeddings) total += c.vocab_size * d;
  }
  return total + c.num_layers * per_layer;
}

double training_flops_per_token(const ModelConfig& c, int64_t seq_len) {
  // N counts the weights used in matrix products: every parameter but the
  // input embedding lookups (token, and GPT-2's positions). A tied embedding
  // is counted once, as the output projection it also is.
  double n = static_cast<double>(parameter_count(c));
  if (c.family == Family::kGpt2) n -= static_cast<double>(c.max_positions * c.hidden_size);
  if (!c.tie_word_embeddings) n -= static_cast<double>(c.vocab_size * c.hidden_size);
  const double attention = 12.0 * static_cast<double>(c.num_layers) *
                           static_cast<double>(seq_len) *
                           static_cast<double>(c.num_heads * c.head_dim);
  return 6.0 * n + attention;
}

}  // namespace shardtune
