#include "shardtune/formats/gguf_llama.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <functional>
#include <tuple>
#include <unordered_map>

#include "shardtune/core/error.h"

namespace shardtune {
namespace {

using json = nlohmann::json;

// llama.cpp's token types (tokenizer.ggml.token_type).
enum TokenType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// llama.cpp's pre-tokenizer regexes, one Split each, as tokenizer.json writes them.
const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

json split(const std::string& regex) {
  return {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}};
}
json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

// The tokenizer.json pre_tokenizer for a tokenizer.ggml.pre name, as
// llama.cpp splits text for it; null when the name is not one shardtune knows.
json pre_tokenizer_for(const std::string& pre) {
  if (pre == "gpt-2" || pre == "gpt2") return byte_level(true);
  if (pre == "smollm" || pre == "starcoder") {
    return {{"type", "Sequence"},
            {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
  }
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    return {{"type", "Sequence"}, {"pretokenizers", {split(kLlama3Regex), byte_level(false)}}};
  }
  if (pre == "qwen2") return {{"type", "Sequence"}, {"pretokenizers", {split(kQwen2Regex), byte_level(false)}}};
  if (pre == "default") {
    return {{"type", "Sequence"},
            {"pretokenizers",
             {split(R"([\p{P}\$\+<=>\^~\|]+)"), split(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))"),
              split(R"(\p{N}+)"), split("[0-9][0-9][0-9]"), byte_level(false)}}};
  }
  return nullptr;
}

const char* kKnownPre = "gpt-2, llama-bpe, qwen2, smollm, starcoder, default";

std::string token_text(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return "";
}

// The file's tokens as stored: a non-empty array of strings.
const nlohmann::json& token_array(const GgufFile& f) {
  const GgufValue* v = f.find("tokenizer.ggml.tokens");
  if (v == nullptr) throw InputError(str_cat(f.path(), ": metadata 'tokenizer.ggml.tokens' is missing (no tokenizer)"));
  if (v->type != GgufValueType::kArray || v->element_type != GgufValueType::kString || v->value.empty()) {
    throw InputError(str_cat(f.path(), ": metadata 'tokenizer.ggml.tokens' is not a non-empty array of strings"));
  }
  return v->value;
}

// The file's tokens, checked: unique.
std::vector<std::string> gguf_tokens(const GgufFile& f) {
  std::vector<std::string> tokens = token_array(f).get<std::vector<std::string>>();
  std::unordered_map<std::string, size_t> seen;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto [it, fresh] = seen.emplace(tokens[i], i);
    if (!fresh) {
      throw InputError(str_cat(f.path(), ": tokenizer.ggml.tokens holds '", tokens[i].substr(0, 100), "' twice (ids ",
                               it->second, " and ", i, ")"));
    }
  }
  return tokens;
}

std::vector<int64_t> gguf_int_array(const GgufFile& f, const std::string& key, size_t n, int64_t fallback) {
  const GgufValue* v = f.find(key);
  if (v == nullptr) return std::vector<int64_t>(n, fallback);
  if (v->type != GgufValueType::kArray || v->value.size() != n) {
    throw InputError(str_cat(f.path(), ": metadata '", key, "' must be an array of ", n, " values (one per token)"));
  }
  std::vector<int64_t> out;
  for (const auto& e : v->value) {
    if (!e.is_number_integer()) throw InputError(str_cat(f.path(), ": metadata '", key, "' holds a non-integer"));
    out.push_back(e.get<int64_t>());
  }
  return out;
}

int64_t token_id(const GgufFile& f, const std::string& key, size_t n) {
  const int64_t id = f.get_int(key, -1);
  if (id != -1 && (id < 0 || id >= static_cast<int64_t>(n))) {
    throw InputError(str_cat(f.path(), ": metadata '", key, "' = ", id, " is outside the vocabulary (", n, ")"));
  }
  return id;
}

}  // namespace

// ------------------------------------------------------------ tokenizer

json gguf_tokenizer_json(const GgufFile& f) {
  const std::string model = f.get_string("tokenizer.ggml.model", "");
  if (model.empty()) throw InputError(str_cat(f.path(), ": metadata 'tokenizer.ggml.model' is missing (no tokenizer)"));
  if (model != "gpt2" && model != "llama") {
    throw InputError(str_cat(f.path(), ": tokenizer.ggml.model '", model,
                             "' is not supported (gpt2: byte-level BPE; llama: SentencePiece)"));
  }
  const std::vector<std::string> tokens = gguf_tokens(f);
  const size_t n = tokens.size();
  const std::vector<int64_t> types = gguf_int_array(f, "tokenizer.ggml.token_type", n, kNormal);
  json vocab = json::object();
  json added = json::array();
  for (size_t i = 0; i < n; ++i) {
    vocab[tokens[i]] = i;
    const int64_t t = types[i];
    if (t < kNormal || t > kByte) throw InputError(str_cat(f.path(), ": token ", i, " has unknown token type ", t));
    if (t == kControl || t == kUserDefined || t == kUnknown) {
      added.push_back({{"id", i}, {"content", tokens[i]}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", t != kUserDefined}});
    }
  }
  json j = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added}};
  const int64_t bos = token_id(f, "tokenizer.ggml.bos_token_id", n);
  const bool add_bos = f.get_bool("tokenizer.ggml.add_bos_token", model == "llama");
  json post = nullptr;
  if (add_bos && bos >= 0) {
    const json bos_tok = {{"SpecialToken", {{"id", tokens[bos]}, {"type_id", 0}}}};
    post = {{"type", "TemplateProcessing"},
            {"single", {bos_tok, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"pair", {bos_tok, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, bos_tok,
                      {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
            {"special_tokens", {{tokens[bos], {{"id", tokens[bos]}, {"ids", {bos}}, {"tokens", {tokens[bos]}}}}}}};
  }
  if (model == "gpt2") {
    const std::string pre = f.get_string("tokenizer.ggml.pre", "default");
    json pre_tok = pre_tokenizer_for(pre);
    if (pre_tok.is_null()) {
      throw InputError(str_cat(f.path(), ": tokenizer.ggml.pre '", pre, "' is not supported (", kKnownPre, ")"));
    }
    const GgufValue* mv = f.find("tokenizer.ggml.merges");
    if (mv == nullptr || mv->type != GgufValueType::kArray || mv->element_type != GgufValueType::kString) {
      throw InputError(str_cat(f.path(), ": metadata 'tokenizer.ggml.merges' is missing or not an array of strings"));
    }
    json merges = json::array();
    for (const auto& m : mv->value) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ', 1);
      if (sp == std::string::npos) throw InputError(str_cat(f.path(), ": merge '", s.substr(0, 100), "' is not 'a b'"));
      merges.push_back({s.substr(0, sp), s.substr(sp + 1)});
    }
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = pre_tok;
    j["post_processor"] = post;
    j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
    const bool ignore_merges = pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3";
    j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                  {"ignore_merges", ignore_merges}, {"vocab", vocab}, {"merges", merges}};
    return j;
  }
  // SentencePiece (llama): merges from the scores, as a byte-fallback BPE: a
  // pair merges when both halves and the whole are tokens, earlier when the
  // whole scores higher.
  const GgufValue* sv = f.find("tokenizer.ggml.scores");
  if (sv == nullptr || sv->type != GgufValueType::kArray || sv->value.size() != n) {
    throw InputError(str_cat(f.path(), ": metadata 'tokenizer.ggml.scores' must hold one score per token"));
  }
  std::vector<double> scores;
  for (const auto& s : sv->value) scores.push_back(s.get<double>());
  std::unordered_map<std::string, int64_t> ids;
  for (size_t i = 0; i < n; ++i) {
    if (types[i] == kNormal) ids[tokens[i]] = static_cast<int64_t>(i);
  }
  struct M {
    double score;
    int64_t id, left_id;
    std::string a, b;
  };
  std::vector<M> ms;
  for (size_t i = 0; i < n; ++i) {
    if (types[i] != kNormal) continue;
    const std::string& t = tokens[i];
    for (size_t k = 1; k < t.size(); ++k) {
      if ((static_cast<unsigned char>(t[k]) & 0xc0) == 0x80) continue;  // not a character boundary
      const auto a = ids.find(t.substr(0, k)), b = ids.find(t.substr(k));
      if (a != ids.end() && b != ids.end()) ms.push_back({scores[i], static_cast<int64_t>(i), a->second, a->first, b->first});
    }
  }
  std::stable_sort(ms.begin(), ms.end(), [](const M& x, const M& y) {
    if (x.score != y.score) return x.score > y.score;
    return x.left_id < y.left_id;
  });
  json merges = json::array();
  for (const auto& m : ms) merges.push_back({m.a, m.b});
  const bool space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", true);
  json norm_steps = json::array();
  if (space_prefix) norm_steps.push_back({{"type", "Prepend"}, {"prepend", "\xe2\x96\x81"}});
  norm_steps.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xe2\x96\x81"}});
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", norm_steps}};
  j["pre_tokenizer"] = nullptr;
  j["post_processor"] = post;
  json dec = json::array({{{"type", "Replace"}, {"pattern", {{"String", "\xe2\x96\x81"}}}, {"content", " "}},
                          {{"type", "ByteFallback"}}, {{"type", "Fuse"}}});
  if (space_prefix) dec.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  j["decoder"] = {{"type", "Sequence"}, {"decoders", dec}};
  const int64_t unk = token_id(f, "tokenizer.ggml.unknown_token_id", n);
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", unk >= 0 ? json(tokens[unk]) : json(nullptr)},
                {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", true},
                {"byte_fallback", true}, {"ignore_merges", false}, {"vocab", vocab}, {"merges", merges}};
  return j;
}

json gguf_tokenizer_config(const GgufFile& f) {
  const json& tokens = token_array(f);  // gguf_tokenizer_json checks them in full
  const size_t n = tokens.size();
  json c = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"clean_up_tokenization_spaces", false}};
  const std::string model = f.get_string("tokenizer.ggml.model", "gpt2");
  c["add_bos_token"] = f.get_bool("tokenizer.ggml.add_bos_token", model == "llama");
  c["add_eos_token"] = f.get_bool("tokenizer.ggml.add_eos_token", false);
  for (const auto& [key, name] : std::vector<std::pair<std::string, std::string>>{
           {"tokenizer.ggml.bos_token_id", "bos_token"},
           {"tokenizer.ggml.eos_token_id", "eos_token"},
           {"tokenizer.ggml.unknown_token_id", "unk_token"},
           {"tokenizer.ggml.padding_token_id", "pad_token"}}) {
    const int64_t id = token_id(f, key, n);
    if (id >= 0) c[name] = tokens[static_cast<size_t>(id)].get<std::string>();
  }
  const std::string arch = f.get_string("general.architecture", "");
  if (!arch.empty()) {
    const int64_t ctx = f.get_int(arch + ".context_length", -1);
    if (ctx > 0) c["model_max_length"] = ctx;
  }
  const std::string tmpl = f.get_string("tokenizer.chat_template", "");
  if (!tmpl.empty()) c["chat_template"] = tmpl;
  return c;
}

std::string gguf_pre_tokenizer_name(const json& tok, const std::string& where) {
  const json pre = tok.value("pre_tokenizer", json());
  // Compare ignoring fields that do not change how text is split.
  auto canonical = [](json p) {
    std::function<void(json&)> strip = [&](json& x) {
      if (x.is_object()) {
        x.erase("trim_offsets");
        x.erase("invert");
        if (x.value("type", "") == "Sequence" && x.contains("pretokenizers") && x["pretokenizers"].size() == 1) {
          json only = x["pretokenizers"][0];
          x = only;
          strip(x);
          return;
        }
        for (auto& [k, v] : x.items()) strip(v);
      } else if (x.is_array()) {
        for (auto& v : x) strip(v);
      }
    };
    strip(p);
    return p;
  };
  const json want = canonical(pre);
  for (const char* name : {"gpt-2", "llama-bpe", "qwen2", "smollm", "default"}) {
    if (canonical(pre_tokenizer_for(name)) == want) return name;
  }
  throw InputError(str_cat(where, ": its pre_tokenizer matches none of llama.cpp's (", kKnownPre,
                           "), so GGUF could not say how to split text: ", want.dump().substr(0, 200)));
}

void add_gguf_tokenizer(GgufWriter& w, const json& tok, const json& cfg, const json& hf_config,
                        const std::string& where) {
  const json& model = tok.value("model", json());
  if (!model.is_object() || model.value("type", "") != "BPE" || !model.contains("vocab")) {
    throw InputError(str_cat(where, ": only BPE tokenizers are written to GGUF"));
  }
  if (model.value("byte_fallback", false) || tok.value("pre_tokenizer", json()).dump().find("ByteLevel") == std::string::npos) {
    throw InputError(str_cat(where, ": only byte-level BPE tokenizers (GPT-2, Llama-3, Qwen2, SmolLM style) are "
                                    "written to GGUF; SentencePiece-style ones are not"));
  }
  const std::string pre = gguf_pre_tokenizer_name(tok, where);
  // Ids: the vocabulary, the added tokens, padded to the model's vocab_size.
  std::map<int64_t, std::string> by_id;
  for (const auto& [t, id] : model["vocab"].items()) by_id[id.get<int64_t>()] = t;
  std::map<int64_t, bool> added;  // id -> special
  for (const auto& a : tok.value("added_tokens", json::array())) {
    const int64_t id = a.at("id").get<int64_t>();
    by_id[id] = a.at("content").get<std::string>();
    added[id] = a.value("special", false);
  }
  int64_t n = by_id.empty() ? 0 : by_id.rbegin()->first + 1;
  n = std::max<int64_t>(n, hf_config.value("vocab_size", int64_t{0}));
  json tokens = json::array(), types = json::array();
  for (int64_t i = 0; i < n; ++i) {
    const auto it = by_id.find(i);
    if (it == by_id.end()) {
      tokens.push_back(str_cat("[PAD", i, "]"));
      types.push_back(kUnused);
      continue;
    }
    tokens.push_back(it->second);
    const auto a = added.find(i);
    types.push_back(a == added.end() ? kNormal : (a->second ? kControl : kUserDefined));
  }
  json merges = json::array();
  for (const auto& m : model.value("merges", json::array())) {
    merges.push_back(m.is_string() ? m.get<std::string>() : str_cat(m.at(0).get<std::string>(), " ", m.at(1).get<std::string>()));
  }
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", pre);
  w.add("tokenizer.ggml.tokens", {GgufValueType::kArray, GgufValueType::kString, tokens});
  w.add("tokenizer.ggml.token_type", {GgufValueType::kArray, GgufValueType::kInt32, types});
  w.add("tokenizer.ggml.merges", {GgufValueType::kArray, GgufValueType::kString, merges});
  auto id_of = [&](const std::string& t) -> int64_t {
    for (int64_t i = 0; i < n; ++i) {
      if (tokens[static_cast<size_t>(i)] == t) return i;
    }
    return -1;
  };
  auto first_id = [](const json& v) -> int64_t {
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
    return -1;
  };
  const json c = cfg.is_object() ? cfg : json::object();
  for (const auto& [name, key, config_key] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"bos_token", "tokenizer.ggml.bos_token_id", "bos_token_id"},
           {"eos_token", "tokenizer.ggml.eos_token_id", "eos_token_id"},
           {"unk_token", "tokenizer.ggml.unknown_token_id", ""},
           {"pad_token", "tokenizer.ggml.padding_token_id", "pad_token_id"}}) {
    int64_t id = c.contains(name) ? id_of(token_text(c[name])) : -1;
    if (id < 0 && !config_key.empty() && hf_config.contains(config_key)) id = first_id(hf_config[config_key]);
    if (id >= 0 && id < n) w.add_uint32(key, static_cast<uint32_t>(id));
  }
  w.add_bool("tokenizer.ggml.add_bos_token", c.value("add_bos_token", false));
  w.add_bool("tokenizer.ggml.add_space_prefix", false);
  if (c.contains("chat_template") && c["chat_template"].is_string()) {
    w.add_string("tokenizer.chat_template", c["chat_template"].get<std::string>());
  }
}

}  // namespace shardtune
