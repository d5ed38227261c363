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

// Which layers see a sliding window (architecture.h's WindowRule).
void parse_sliding_window(const nlohmann::json& j, const Architecture& a, ModelConfig& c, const std::string& where) {
  if (a.windows == WindowRule::kNone) return;
  const auto sw = j.find("sliding_window");
  if (sw == j.end() || sw->is_null()) {
    if (a.windows == WindowRule::kLayerPattern) {
      throw InputError(str_cat(where, ": sliding_window is missing (", a.model_type, " windows its sliding layers)"));
    }
    return;
  }
  if (!sw->is_number_integer() || sw->get<int64_t>() <= 0) {
    throw InputError(str_cat(where, ": sliding_window: expected a positive integer or null, got ", capped(sw->dump(), 200)));
  }
  if (a.windows == WindowRule::kEveryLayer) {
    c.sliding_window = sw->get<int64_t>();
    return;
  }
  if (a.windows == WindowRule::kWhenEnabled && !get_bool(j, "use_sliding_window", false, where)) return;
  c.sliding_window = sw->get<int64_t>();
  const auto types = j.find("layer_types");
  if (types != j.end() && !types->is_null()) {
    if (!types->is_array() || static_cast<int64_t>(types->size()) != c.num_layers) {
      throw InputError(str_cat(where, ": layer_types: expected a list of ", c.num_layers, " entries"));
    }
    for (const auto& lt : *types) {
      if (lt != "full_attention" && lt != "sliding_attention") {
        throw InputError(str_cat(where, ": layer_types: '", capped(lt.dump(), 100),
                                 "' is not supported (full_attention, sliding_attention)"));
      }
      c.windowed_layers.push_back(lt == "sliding_attention");
    }
    return;
  }
  if (a.windows == WindowRule::kLayerPattern) {
    const int64_t pattern = get_int(j, {"sliding_window_pattern"}, where, a.window_pattern);
    if (pattern <= 0) throw InputError(str_cat(where, ": sliding_window_pattern must be positive"));
    for (int64_t i = 0; i < c.num_layers; ++i) c.windowed_layers.push_back((i + 1) % pattern != 0);
    return;
  }
  const int64_t from = get_int(j, {"max_window_layers"}, where, c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) c.windowed_layers.push_back(i >= from);
}

std::vector<double> get_doubles(const nlohmann::json& j, const char* key, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_array()) throw InputError(str_cat(where, ": ", key, ": expected a list of numbers"));
  std::vector<double> out;
  for (const auto& v : *it) {
    if (!v.is_number()) throw InputError(str_cat(where, ": ", key, ": expected a list of numbers"));
    out.push_back(v.get<double>());
  }
  return out;
}

// One rope_parameters (transformers 5) or rope_scaling (transformers 4)
// object; theta is the base when the object does not hold one.
RopeSpec parse_rope(const nlohmann::json* rs, double theta, const nlohmann::json& top, const ModelConfig& c,
                    const std::string& where) {
  RopeSpec r;
  r.theta = theta;
  if (rs == nullptr || rs->is_null()) return r;
  if (!rs->is_object()) throw InputError(str_cat(where, ": rope_scaling: expected an object or null"));
  r.theta = get_double(*rs, "rope_theta", theta, where);
  const bool named = rs->contains("rope_type") || rs->contains("type");
  if (!named && (rs->contains("factor") || rs->contains("short_factor"))) {
    throw InputError(str_cat(where, ": rope_scaling has a factor but no rope_type (default, linear, llama3, longrope)"));
  }
  const std::string kind = rs->value("rope_type", rs->value("type", std::string("default")));
  if (kind == "default") return r;
  if (kind == "linear") {
    r.kind = RopeSpec::Kind::kLinear;
    r.factor = get_double(*rs, "factor", 1.0, where);
    return r;
  }
  if (kind == "llama3") {
    r.kind = RopeSpec::Kind::kLlama3;
    r.factor = get_double(*rs, "factor", 8.0, where);
    r.low_freq_factor = get_double(*rs, "low_freq_factor", 1.0, where);
    r.high_freq_factor = get_double(*rs, "high_freq_factor", 4.0, where);
    r.original_max_positions = get_int(*rs, {"original_max_position_embeddings"}, where, 8192);
    return r;
  }
  if (kind == "longrope") {
    if (!c.arch->longrope) {
      throw InputError(str_cat(where, ": rope_scaling type 'longrope' is not supported for ", c.model_type, " (phi3 only)"));
    }
    r.kind = RopeSpec::Kind::kLongrope;
    r.short_factor = get_doubles(*rs, "short_factor", where);
    r.long_factor = get_doubles(*rs, "long_factor", where);
    r.original_max_positions = rs->contains("original_max_position_embeddings")
                                   ? get_int(*rs, {"original_max_position_embeddings"}, where)
                                   : get_int(top, {"original_max_position_embeddings"}, where);
    if (r.original_max_positions <= 0) throw InputError(str_cat(where, ": original_max_position_embeddings must be positive"));
    const double factor = get_double(*rs, "factor", static_cast<double>(c.max_positions) /
                                                        static_cast<double>(r.original_max_positions), where);
    const auto af = rs->find("attention_factor");
    if (af != rs->end() && !af->is_null()) {
      r.attention_factor = get_double(*rs, "attention_factor", 1.0, where);
    } else {
      r.attention_factor = factor <= 1.0 ? 1.0
                                         : std::sqrt(1.0 + std::log(factor) /
                                                               std::log(static_cast<double>(r.original_max_positions)));
    }
    for (const auto* fs : {&r.short_factor, &r.long_factor}) {
      for (double v : *fs) {
        if (!(v > 0 && std::isfinite(v))) {
          throw InputError(str_cat(where, ": longrope short_factor and long_factor must be positive numbers, got ", v));
        }
      }
    }
    if (!(r.attention_factor > 0 && std::isfinite(r.attention_factor))) {
      throw InputError(str_cat(where, ": longrope attention_factor must be a positive number"));
    }
    const size_t half = static_cast<size_t>(rotary_dim(c) / 2);
    if (r.short_factor.size() != half || r.long_factor.size() != half) {
      throw InputError(str_cat(where, ": longrope short_factor and long_factor must hold ", half,
                               " numbers each (rotary dimensions / 2), got ", r.short_factor.size(), " and ",
                               r.long_factor.size()));
    }
    return r;
  }
  throw InputError(str_cat(where, ": rope_scaling type '", kind, "' is not supported (default, linear, llama3, longrope)"));
}

// The rotary embeddings: transformers 5's rope_parameters (one object, or
// one per layer type), or transformers 4's rope_theta + rope_scaling (and
// gemma3's rope_local_base_freq for its sliding layers).
void parse_ropes(const nlohmann::json& j, ModelConfig& c, const std::string& where) {
  const auto params = j.find("rope_parameters");
  const bool v5 = params != j.end() && params->is_object();
  double partial = get_double(j, "partial_rotary_factor", 1.0, where);
  if (v5 && params->contains("partial_rotary_factor")) partial = get_double(*params, "partial_rotary_factor", 1.0, where);
  if (partial != 1.0) {
    if (!c.arch->partial_rotary) {
      throw InputError(str_cat(where, ": partial_rotary_factor = ", partial, " is not supported for ", c.model_type,
                               " (rotary embedding over the whole head)"));
    }
    if (!(partial > 0.0 && partial < 1.0)) throw InputError(str_cat(where, ": partial_rotary_factor must be in (0, 1]"));
    c.rotary_dim = static_cast<int64_t>(static_cast<double>(c.head_dim) * partial);
    if (c.rotary_dim <= 0 || c.rotary_dim % 2 != 0) {
      throw InputError(str_cat(where, ": partial_rotary_factor ", partial, " gives ", c.rotary_dim,
                               " rotary dimensions of ", c.head_dim, "; they must be positive and even"));
    }
  }
  const double theta0 = c.arch->rope_theta_default;
  const bool local = c.arch->local_rope;
  if (v5 && (params->contains("full_attention") || params->contains("sliding_attention"))) {
    const auto full = params->find("full_attention");
    const auto sliding = params->find("sliding_attention");
    c.rope = parse_rope(full == params->end() ? nullptr : &*full, theta0, j, c, where + ": rope_parameters.full_attention");
    if (sliding != params->end()) {
      c.rope_local = parse_rope(&*sliding, 10000.0, j, c, where + ": rope_parameters.sliding_attention");
      c.local_rope = !(c.rope_local == c.rope);
    }
  } else if (v5) {
    c.rope = parse_rope(&*params, theta0, j, c, where);
  } else {
    const auto rs = j.find("rope_scaling");
    c.rope = parse_rope(rs == j.end() ? nullptr : &*rs, get_double(j, "rope_theta", theta0, where), j, c, where);
    if (local) {
      c.rope_local.theta = get_double(j, "rope_local_base_freq", 10000.0, where);
      c.local_rope = !(c.rope_local == c.rope);
    }
  }
  if (c.local_rope && !local) {
    throw InputError(str_cat(where, ": rope_parameters per layer type are not supported for ", c.model_type));
  }
}

// The no_rope_layers of smollm3: 1 = the layer has a rotary embedding.
void parse_rope_layers(const nlohmann::json& j, ModelConfig& c, const std::string& where) {
  if (!c.arch->no_rope_layers) {
    refuse_unless(j, "no_rope_layers", nullptr, where, "every layer has a rotary embedding");
    return;
  }
  const auto it = j.find("no_rope_layers");
  if (it == j.end() || it->is_null()) {
    const int64_t every = get_int(j, {"no_rope_layer_interval"}, where, 4);
    if (every <= 0) throw InputError(str_cat(where, ": no_rope_layer_interval must be positive"));
    for (int64_t i = 0; i < c.num_layers; ++i) c.rope_layers.push_back((i + 1) % every != 0);
    return;
  }
  if (!it->is_array() || static_cast<int64_t>(it->size()) != c.num_layers) {
    throw InputError(str_cat(where, ": no_rope_layers: expected a list of ", c.num_layers, " entries (0 or 1)"));
  }
  for (const auto& v : *it) {
    if (!v.is_number_integer() || (v.get<int64_t>() != 0 && v.get<int64_t>() != 1)) {
      throw InputError(str_cat(where, ": no_rope_layers: expected 0 or 1, got ", capped(v.dump(), 50)));
    }
    c.rope_layers.push_back(v.get<int64_t>() == 1);
  }
}

void parse_decoder(const nlohmann::json& j, const Architecture& a, ModelConfig& c, const std::string& where) {
  c.family = Family::kLlama;
  c.arch = &a;
  c.vocab_size = get_int(j, {"vocab_size"}, where);
  c.hidden_size = get_int(j, {"hidden_size"}, where);
  c.num_layers = get_int(j, {"num_hidden_layers"}, where);
  c.num_heads = get_int(j, {"num_attention_heads"}, where);
  c.num_kv_heads = get_int(j, {"num_key_value_heads"}, where, c.num_heads);
  c.intermediate_size = get_int(j, {"intermediate_size"}, where);
  c.max_positions = get_int(j, {"max_position_embeddings"}, where);
  c.norm_eps = get_double(j, "rms_norm_eps", a.norm_eps_default, where);
  c.head_dim = get_int(j, {"head_dim"}, where, c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", a.tie_default, where);
  if (a.qkv_bias) {
    c.attention_bias = true;  // q, k, v carry biases; o does not
  } else if (a.attention_bias_key) {
    c.attention_bias = c.attention_out_bias = get_bool(j, "attention_bias", false, where);
  } else {
    refuse_unless(j, "attention_bias", false, where, str_cat(a.model_type, " has no attention biases").c_str());
  }
  if (a.mlp_bias_key) {
    c.mlp_bias = get_bool(j, "mlp_bias", false, where);
  } else {
    refuse_unless(j, "mlp_bias", false, where, str_cat(a.model_type, " has no MLP biases").c_str());
  }
  const char* act_name = a.activation == Activation::kSilu ? "silu" : "gelu_pytorch_tanh";
  const auto act = j.find(a.activation_key);
  if (act != j.end() && !act->is_null() && *act != act_name &&
      !(a.activation == Activation::kGeluTanh && *act == "gelu_new")) {
    throw InputError(str_cat(where, ": ", a.activation_key, " ", capped(act->dump(), 100), " is not supported (",
                             act_name, ")"));
  }
  if (a.gemma_attention) {
    // null: no cap; a number: the cap, which must be positive (0 would divide by zero).
    for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping"}) {
      const double cap = get_double(j, key, 0.0, where);
      if (j.contains(key) && !j[key].is_null() && !(cap > 0 && std::isfinite(cap))) {
        throw InputError(str_cat(where, ": ", key, " must be a positive number or null, got ", cap));
      }
    }
    c.attn_softcap = get_double(j, "attn_logit_softcapping", 0.0, where);
    c.final_softcap = get_double(j, "final_logit_softcapping", 0.0, where);
    const double scalar = get_double(j, "query_pre_attn_scalar", 256.0, where);
    if (!(scalar > 0) || !std::isfinite(scalar)) throw InputError(str_cat(where, ": query_pre_attn_scalar must be positive"));
    c.query_scale = 1.0 / std::sqrt(scalar);
    refuse_unless(j, "use_bidirectional_attention", false, where, "causal attention");
  } else {
    for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping"}) {
      refuse_unless(j, key, nullptr, where, "no soft-capping");
    }
  }
  if (a.qk_norm == QkNorm::kNone) {
    for (const char* key : {"use_qk_norm", "qk_layernorm", "use_qk_layernorm"}) {
      refuse_unless(j, key, false, where, "no q/k norm");
    }
  }
  parse_sliding_window(j, a, c, where);
  parse_ropes(j, c, where);
  parse_rope_layers(j, c, where);
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
  } else if (const Architecture* arch = find_architecture(c.model_type)) {
    parse_decoder(j, *arch, c, where);
  } else {
    throw InputError(str_cat(where, ": model_type '", c.model_type,
                             "' is not supported (", architecture_names(false), ")"));
  }
  if (c.family == Family::kGpt2) c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  const auto bos = token_ids_from_json(j, "bos_token_id", where);
  c.bos_token_id = bos.empty() ? -1 : bos[0];
  c.eos_token_ids = token_ids_from_json(j, "eos_token_id", where);
  validate(c, where);
  return c;
}

bool RopeSpec::operator==(const RopeSpec& o) const {
  return kind == o.kind && theta == o.theta && factor == o.factor && low_freq_factor == o.low_freq_factor &&
         high_freq_factor == o.high_freq_factor && original_max_positions == o.original_max_positions &&
         short_factor == o.short_factor && long_factor == o.long_factor && attention_factor == o.attention_factor;
}

bool layer_windowed(const ModelConfig& c, int64_t layer) {
  if (c.sliding_window <= 0) return false;
  return c.windowed_layers.empty() || c.windowed_layers[static_cast<size_t>(layer)];
}

bool layer_has_rope(const ModelConfig& c, int64_t layer) {
  return c.rope_layers.empty() || c.rope_layers[static_cast<size_t>(layer)];
}

int64_t rotary_dim(const ModelConfig& c) { return c.rotary_dim > 0 ? c.rotary_dim : c.head_dim; }

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
  for (const RopeSpec* r : {&c.rope, &c.rope_local}) {
    need(c.family == Family::kGpt2 || (std::isfinite(r->theta) && r->theta > 0),
         str_cat("rope_theta ", r->theta, " must be a finite number > 0"));
    need(std::isfinite(r->factor) && r->factor > 0, str_cat("rope scaling factor ", r->factor, " must be > 0"));
    need(r->kind != RopeSpec::Kind::kLlama3 ||
             (r->original_max_positions > 0 && r->high_freq_factor != r->low_freq_factor),
         "llama3 rope scaling needs original_max_position_embeddings > 0 and high_freq_factor != low_freq_factor");
  }
  need(c.rotary_dim >= 0 && c.rotary_dim <= c.head_dim && c.rotary_dim % 2 == 0,
       str_cat("rotary dimensions ", c.rotary_dim, " must be even and at most head_dim ", c.head_dim));
  need(c.windowed_layers.empty() || static_cast<int64_t>(c.windowed_layers.size()) == c.num_layers,
       "the sliding-window layers must name every layer");
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
    const Architecture& a = *c.arch;
    j["architectures"] = {a.hf_class};
    j["hidden_size"] = c.hidden_size;
    j["num_hidden_layers"] = c.num_layers;
    j["num_attention_heads"] = c.num_heads;
    j["num_key_value_heads"] = c.num_kv_heads;
    j["head_dim"] = c.head_dim;
    j["intermediate_size"] = c.intermediate_size;
    j["max_position_embeddings"] = c.max_positions;
    j["rms_norm_eps"] = c.norm_eps;
    // A config read from a file keeps its rotary keys as written; one made
    // in code (a random init) has the default rotary embedding.
    if (!j.contains("rope_parameters") && !j.contains("rope_theta")) j["rope_theta"] = c.rope.theta;
    j[a.activation_key] = a.activation == Activation::kSilu ? "silu" : "gelu_pytorch_tanh";
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    if (a.attention_bias_key) j["attention_bias"] = c.attention_bias;
    if (a.mlp_bias_key) j["mlp_bias"] = c.mlp_bias;
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
    const Architecture& a = *c.arch;
    per_layer = d * (q + 2 * kv) + q * d + 3 * d * c.intermediate_size;
    per_layer += (a.norms == NormPlacement::kSandwich ? 4 : 2) * d;
    if (a.qk_norm == QkNorm::kPerHead) per_layer += 2 * c.head_dim;
    if (a.qk_norm == QkNorm::kFullWidth) per_layer += q + kv;
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
