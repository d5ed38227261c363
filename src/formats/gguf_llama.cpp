#include "shardtune/formats/gguf_llama.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <functional>
#include <tuple>
#include <unordered_map>

#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"

namespace shardtune {
namespace {

using json = nlohmann::json;

// llama.cpp's token types (tokenizer.ggml.token_type).
enum TokenType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// llama.cpp's pre-tokenizer regexes, one Split each, as tokenizer.json writes them.
const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// GPT-4o's (o200k), which Phi-4-mini uses: cased words keep their capitals at the front.
const char* kGpt4oRegex =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
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
  if (pre == "gpt-2" || pre == "gpt2" || pre == "olmo") return byte_level(true);
  if (pre == "smollm" || pre == "starcoder") {
    return {{"type", "Sequence"},
            {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
  }
  // dbrx: GPT-4's (cl100k) split, as llama-bpe, without ignore_merges (OLMo 2's files say dbrx).
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3" || pre == "dbrx") {
    return {{"type", "Sequence"}, {"pretokenizers", {split(kLlama3Regex), byte_level(false)}}};
  }
  if (pre == "qwen2") return {{"type", "Sequence"}, {"pretokenizers", {split(kQwen2Regex), byte_level(false)}}};
  if (pre == "gpt-4o") return {{"type", "Sequence"}, {"pretokenizers", {split(kGpt4oRegex), byte_level(false)}}};
  if (pre == "default") {
    return {{"type", "Sequence"},
            {"pretokenizers",
             {split(R"([\p{P}\$\+<=>\^~\|]+)"), split(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))"),
              split(R"(\p{N}+)"), split("[0-9][0-9][0-9]"), byte_level(false)}}};
  }
  return nullptr;
}

const char* kKnownPre = "gpt-2, olmo, llama-bpe, dbrx, qwen2, gpt-4o, smollm, starcoder, default";

// The pre-tokenizers whose llama.cpp rules keep a word that is in the
// vocabulary whole (tokenizer.json's ignore_merges).
bool pre_ignores_merges(const std::string& pre) { return pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3"; }

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
  for (size_t i = 0; i < v->value.size(); ++i) {
    const std::string& t = v->value[i].get_ref<const std::string&>();
    if (const size_t at = utf8_error_at(t); at != std::string::npos) {
      throw InputError(str_cat(f.path(), ": metadata 'tokenizer.ggml.tokens': token ", i, " is not valid UTF-8 (byte ", at,
                               ")"));
    }
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
    const bool ignore_merges = pre_ignores_merges(pre);
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
  for (size_t i = 0; i < n; ++i) {
    const auto& s = sv->value[i];
    if (!s.is_number() || !std::isfinite(s.get<double>())) {
      throw InputError(str_cat(f.path(), ": metadata 'tokenizer.ggml.scores': element ", i, " (",
                               capped(s.dump(), 40), ") is not a finite number"));
    }
    scores.push_back(s.get<double>());
  }
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
  // Without the key, the token typed unknown (llama.cpp's default is id 0, which is that token in these files).
  int64_t unk = token_id(f, "tokenizer.ggml.unknown_token_id", n);
  for (size_t i = 0; unk < 0 && i < n; ++i) {
    if (types[i] == kUnknown) unk = static_cast<int64_t>(i);
  }
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
  const bool ignore_merges = tok.value("model", json::object()).value("ignore_merges", false);
  for (const char* name : {"gpt-2", "llama-bpe", "dbrx", "qwen2", "gpt-4o", "smollm", "default"}) {
    const std::string n = name;
    if ((n == "llama-bpe" || n == "dbrx") && pre_ignores_merges(n) != ignore_merges) continue;
    if (canonical(pre_tokenizer_for(name)) == want) return name;
  }
  throw InputError(str_cat(where, ": its pre_tokenizer matches none of llama.cpp's (", kKnownPre,
                           "), so GGUF could not say how to split text: ", want.dump().substr(0, 200)));
}

namespace {

bool is_byte_token(const std::string& t) {
  return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
         std::isxdigit(static_cast<unsigned char>(t[4]));
}

// For a SentencePiece-style tokenizer.json (byte-fallback BPE whose spaces
// become U+2581 in the normalizer or a Metaspace pre-tokenizer): whether a
// U+2581 goes before the text (llama.cpp's add_space_prefix). Throws when the
// layout is one llama.cpp's SentencePiece tokenizer would split otherwise.
bool spm_space_prefix(const json& tok, const std::string& where) {
  const std::string marker = "\xe2\x96\x81";
  std::vector<json> norms;
  std::function<void(const json&)> flat = [&](const json& n) {
    if (n.is_null()) return;
    if (n.value("type", "") == "Sequence") {
      for (const auto& x : n.at("normalizers")) flat(x);
    } else {
      norms.push_back(n);
    }
  };
  flat(tok.value("normalizer", json()));
  const json pre = tok.value("pre_tokenizer", json());
  const auto refuse = [&](const std::string& why) {
    return InputError(str_cat(where, ": this SentencePiece-style tokenizer cannot be written to GGUF: ", why));
  };
  const bool replaces = !norms.empty() && norms.back().value("type", "") == "Replace" &&
                        norms.back().value("pattern", json::object()).value("String", "") == " " &&
                        norms.back().value("content", "") == marker;
  if (replaces) {  // Llama-2 (Prepend + Replace) and Gemma (Replace) style
    bool prepend = false;
    for (size_t i = 0; i + 1 < norms.size(); ++i) {
      if (norms[i].value("type", "") == "Prepend" && norms[i].value("prepend", "") == marker && i == 0) {
        prepend = true;
      } else {
        throw refuse(str_cat("normalizer step ", norms[i].dump().substr(0, 120), " has no GGUF equivalent"));
      }
    }
    // Gemma's Split on " " after its normalizer has turned every space into U+2581: it splits nothing.
    const bool inert_split = pre.is_object() && pre.value("type", "") == "Split" &&
                             pre.value("pattern", json::object()).value("String", "") == " ";
    if (!pre.is_null() && !inert_split) throw refuse(str_cat("pre_tokenizer ", pre.dump().substr(0, 120), " after the normalizer"));
    return prepend;
  }
  if (norms.empty() && pre.is_object() && pre.value("type", "") == "Metaspace" && pre.value("replacement", marker) == marker) {
    const std::string scheme = pre.contains("prepend_scheme") ? pre["prepend_scheme"].get<std::string>()
                                                              : (pre.value("add_prefix_space", true) ? "always" : "never");
    return scheme != "never";
  }
  throw refuse("spaces do not become U+2581 by a Replace normalizer or a Metaspace pre-tokenizer");
}

}  // namespace

void add_gguf_tokenizer(GgufWriter& w, const json& tok, const json& cfg, const json& hf_config,
                        const std::string& where) {
  const json& model = tok.value("model", json());
  if (!model.is_object() || model.value("type", "") != "BPE" || !model.contains("vocab")) {
    throw InputError(str_cat(where, ": only BPE tokenizers are written to GGUF"));
  }
  // Byte-level BPE is llama.cpp's gpt2 model, with a pre-tokenizer name;
  // byte-fallback BPE over U+2581 words is its llama (SentencePiece) model.
  const bool spm = model.value("byte_fallback", false);
  std::string pre;
  bool space_prefix = false;
  if (spm) {
    space_prefix = spm_space_prefix(tok, where);
  } else {
    if (tok.value("pre_tokenizer", json()).dump().find("ByteLevel") == std::string::npos) {
      throw InputError(str_cat(where, ": a BPE tokenizer with neither ByteLevel nor byte_fallback has no GGUF equivalent"));
    }
    pre = gguf_pre_tokenizer_name(tok, where);
  }
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
  const std::string unk = model.value("unk_token", json()).is_string() ? model["unk_token"].get<std::string>() : "";
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
    if (a != added.end()) {
      types.push_back(it->second == unk ? kUnknown : a->second ? kControl : kUserDefined);
    } else if (spm && it->second == unk) {
      types.push_back(kUnknown);
    } else if (spm && is_byte_token(it->second)) {
      types.push_back(kByte);
    } else {
      types.push_back(kNormal);
    }
  }
  json merges = json::array();
  for (const auto& m : model.value("merges", json::array())) {
    merges.push_back(m.is_string() ? m.get<std::string>() : str_cat(m.at(0).get<std::string>(), " ", m.at(1).get<std::string>()));
  }
  if (spm) {
    // SentencePiece merges by score: a token made by the merge of rank r
    // scores -r, so llama.cpp (and the reader here) merge in the file's
    // order; tokens no merge makes score below every merge.
    std::unordered_map<std::string, int64_t> rank;
    for (size_t r = 0; r < merges.size(); ++r) {
      const std::string m = merges[r].get<std::string>();
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) throw InputError(str_cat(where, ": merge '", m.substr(0, 100), "' is not 'a b'"));
      rank.emplace(m.substr(0, sp) + m.substr(sp + 1), static_cast<int64_t>(r));  // the first merge that makes it
    }
    json scores = json::array();
    const double floor = -static_cast<double>(merges.size());
    for (int64_t i = 0; i < n; ++i) {
      const auto it = rank.find(tokens[static_cast<size_t>(i)].get<std::string>());
      scores.push_back(types[static_cast<size_t>(i)] != kNormal ? 0.0
                       : it != rank.end()                      ? -static_cast<double>(it->second)
                                                               : floor - static_cast<double>(i));
    }
    w.add_string("tokenizer.ggml.model", "llama");
    w.add("tokenizer.ggml.tokens", {GgufValueType::kArray, GgufValueType::kString, tokens});
    w.add("tokenizer.ggml.scores", {GgufValueType::kArray, GgufValueType::kFloat32, scores});
    w.add("tokenizer.ggml.token_type", {GgufValueType::kArray, GgufValueType::kInt32, types});
  } else {
    w.add_string("tokenizer.ggml.model", "gpt2");
    w.add_string("tokenizer.ggml.pre", pre);
    w.add("tokenizer.ggml.tokens", {GgufValueType::kArray, GgufValueType::kString, tokens});
    w.add("tokenizer.ggml.token_type", {GgufValueType::kArray, GgufValueType::kInt32, types});
    w.add("tokenizer.ggml.merges", {GgufValueType::kArray, GgufValueType::kString, merges});
  }
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
    if (id < 0 && name == "unk_token" && !unk.empty()) id = id_of(unk);
    if (id < 0 && !config_key.empty() && hf_config.contains(config_key)) id = first_id(hf_config[config_key]);
    if (id >= 0 && id < n) w.add_uint32(key, static_cast<uint32_t>(id));
  }
  w.add_bool("tokenizer.ggml.add_bos_token", c.value("add_bos_token", false));
  w.add_bool("tokenizer.ggml.add_space_prefix", space_prefix);
  if (c.contains("chat_template") && c["chat_template"].is_string()) {
    w.add_string("tokenizer.chat_template", c["chat_template"].get<std::string>());
  }
}

}  // namespace shardtune
