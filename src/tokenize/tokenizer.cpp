#include "shardtune/tokenize/tokenizer.h"

#include <sys/stat.h>

#include <cstdio>
#include <unordered_map>

#include "internal.h"
#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"
#include "shardtune/formats/gguf.h"
#include "shardtune/formats/gguf_llama.h"

namespace shardtune {

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& path);
std::unique_ptr<Tokenizer> load_gpt2_tokenizer(const std::string& dir);
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path);

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path) {
  const GgufFile file(path);
  const nlohmann::json j = gguf_tokenizer_json(file);
  return load_hf_tokenizer_json(j, gguf_tokenizer_config(file), path);
}

namespace detail {

size_t utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xe) return 3;
  if ((c >> 3) == 0x1e) return 4;
  return 1;
}

void split_added(std::string_view text, const std::vector<AddedToken>& added, bool with_special,
                 const std::function<void(std::string_view)>& on_text,
                 const std::function<void(const AddedToken&)>& on_token) {
  // Only positions whose byte starts some added token are checked: the
  // scan is linear in the text, whatever the number of added tokens.
  bool starts[256] = {};
  for (const auto& t : added) {
    if (!t.content.empty() && (with_special || !t.special)) starts[static_cast<unsigned char>(t.content[0])] = true;
  }
  size_t start = 0;  // start of pending text
  size_t i = 0;
  while (i < text.size()) {
    if (!starts[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    const AddedToken* best = nullptr;
    for (const auto& t : added) {
      if (t.special && !with_special) continue;
      if (t.content.empty() || text.compare(i, t.content.size(), t.content) != 0) continue;
      if (best == nullptr || t.content.size() > best->content.size()) best = &t;
    }
    if (best == nullptr) {
      ++i;
      continue;
    }
    size_t text_end = i;
    if (best->lstrip) {
      while (text_end > start && std::isspace(static_cast<unsigned char>(text[text_end - 1]))) --text_end;
    }
    if (text_end > start) on_text(text.substr(start, text_end - start));
    on_token(*best);
    i += best->content.size();
    if (best->rstrip) {
      while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    }
    start = i;
  }
  if (start < text.size()) on_text(text.substr(start));
}

}  // namespace detail

void check_utf8(std::string_view s, const std::string& what) {
  const size_t at = utf8_error_at(s);
  if (at != std::string_view::npos) throw InputError(str_cat(what, ": invalid UTF-8 at byte ", at));
}

void append_field(std::string& out, std::string_view field) {
  out += std::to_string(field.size());
  out += ':';
  out += field;
}

std::string Tokenizer::fingerprint() const {
  std::string all;
  append_field(all, rules_hash_);
  append_field(all, std::to_string(vocab_size()));
  for (int64_t id = 0; id < vocab_size(); ++id) {
    append_field(all, id_to_token(static_cast<int32_t>(id)));
    all += is_special(static_cast<int32_t>(id)) ? 'S' : 'n';
  }
  append_field(all, std::to_string(bos_));
  append_field(all, std::to_string(eos_));
  return "tok2:" + content_hash(all);
}

std::string content_hash(std::string_view bytes) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// ---------------------------------------------------------------- byte tokenizer

namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  ByteTokenizer() {
    const char* specials[] = {"<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 4; ++i) added_.push_back({specials[i], 256 + i, true, false, false});
    eos_ = 256;
    pad_ = 257;
    rules_hash_ = "byte";
  }

  std::vector<int32_t> encode(std::string_view text, bool parse_special) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size());
    detail::split_added(
        text, added_, parse_special,
        [&](std::string_view s) {
          for (unsigned char c : s) ids.push_back(c);
        },
        [&](const detail::AddedToken& t) { ids.push_back(t.id); });
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::string out;
    for (int32_t id : ids) {
      if (id >= 0 && id < 256) {
        out.push_back(static_cast<char>(id));
      } else if (id >= 256 && id < 260) {
        if (!skip_special) out += added_[static_cast<size_t>(id - 256)].content;
      } else {
        throw InputError(str_cat("byte tokenizer: id ", id, " is outside the vocabulary (260)"));
      }
    }
    return out;
  }

  int64_t vocab_size() const override { return 260; }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    for (const auto& t : added_) {
      if (t.content == token) return t.id;
    }
    if (token.size() == 1) return static_cast<unsigned char>(token[0]);
    return std::nullopt;
  }
  std::string id_to_token(int32_t id) const override {
    if (id >= 256 && id < 260) return added_[static_cast<size_t>(id - 256)].content;
    return std::string(1, static_cast<char>(id));
  }
  bool is_special(int32_t id) const override { return id >= 256; }

 private:
  std::vector<detail::AddedToken> added_;
};

bool is_dir(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer() {
  auto tok = std::make_unique<ByteTokenizer>();
  tok->set_name("byte");
  return tok;
}

namespace {

std::unique_ptr<Tokenizer> load_by_spec(const std::string& spec) {
  const size_t colon = spec.find(':');
  if (colon != std::string::npos && colon < 6) {
    const std::string kind = spec.substr(0, colon);
    const std::string path = spec.substr(colon + 1);
    if (kind == "hf") return load_hf_tokenizer(path);
    if (kind == "gpt2") return load_gpt2_tokenizer(path);
    if (kind == "sp") return load_sentencepiece_tokenizer(path);
    if (kind == "gguf") return load_gguf_tokenizer(path);
    throw InputError(str_cat("tokenizer '", spec, "': unknown kind '", kind,
                             "' (byte, hf:PATH, gpt2:DIR, sp:PATH, gguf:PATH)"));
  }
  if (ends_with(spec, ".json")) return load_hf_tokenizer(spec);
  if (ends_with(spec, ".model")) return load_sentencepiece_tokenizer(spec);
  if (ends_with(spec, ".gguf")) return load_gguf_tokenizer(spec);
  if (is_dir(spec)) {
    struct stat st {};
    if (stat((spec + "/tokenizer.json").c_str(), &st) == 0) return load_hf_tokenizer(spec + "/tokenizer.json");
    if (stat((spec + "/vocab.json").c_str(), &st) == 0) return load_gpt2_tokenizer(spec);
    if (stat((spec + "/tokenizer.model").c_str(), &st) == 0) {
      return load_sentencepiece_tokenizer(spec + "/tokenizer.model");
    }
  }
  throw InputError(str_cat("tokenizer '", spec,
                           "': not a tokenizer spec (byte, hf:tokenizer.json, gpt2:DIR, sp:x.model, gguf:x.gguf) "
                           "or a folder holding one"));
}

// The folder's name for a folder or a file with a generic name in one
// (tokenizer.json, tokenizer.model, vocab.json); else the file's.
std::string readable_name(const std::string& spec) {
  if (spec == "byte") return spec;
  std::string path = spec;
  if (const size_t colon = path.find(':'); colon != std::string::npos && colon < 6) path = path.substr(colon + 1);
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (is_dir(path) || base.rfind("tokenizer", 0) == 0 || base == "vocab.json") {
    const std::string dir = is_dir(path) ? path : (slash == std::string::npos ? "." : path.substr(0, slash));
    const size_t s2 = dir.rfind('/');
    return s2 == std::string::npos ? dir : dir.substr(s2 + 1);
  }
  return base;
}

}  // namespace

std::unique_ptr<Tokenizer> source_tokenizer(const std::string& model) {
  if (ends_with(model, ".gguf")) {
    if (GgufFile(model).find("tokenizer.ggml.model") == nullptr) return nullptr;
    return load_tokenizer(model);
  }
  for (const char* name : {"/tokenizer.json", "/vocab.json", "/tokenizer.model"}) {
    struct stat st {};
    if (stat((model + name).c_str(), &st) == 0) return load_tokenizer(model);
  }
  return nullptr;
}

void check_given_tokenizer(const Tokenizer& given, const std::string& spec, const std::string& model) {
  const auto own = source_tokenizer(model);
  if (own == nullptr || own->fingerprint() == given.fingerprint()) return;
  throw InputError(str_cat("--tokenizer ", spec, " (", given.name(), ", ", given.fingerprint(), ", vocabulary ",
                           given.vocab_size(), ") is not the tokenizer ", model, " carries (", own->name(), ", ",
                           own->fingerprint(), ", vocabulary ", own->vocab_size(),
                           "): its ids would mean other tokens to the model; drop --tokenizer"));
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec) {
  if (spec == "byte") return make_byte_tokenizer();
  auto tok = load_by_spec(spec);
  tok->set_name(readable_name(spec));
  return tok;
}

}  // namespace shardtune
