#include "shardtune/config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <type_traits>

#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"

namespace shardtune {
namespace {

// Where each value came from, for error messages: a file (with the node's
// line) or a command-line override (by key path).
struct Origins {
  std::string file;
  std::map<std::string, std::string> overrides;  // key path -> "key=value"

  std::string where(const std::string& path, const YAML::Node& node) const {
    // An override of a key below path made path what it is ("a.b.c=1" turns
    // a.b into a section).
    for (const auto& [key, text] : overrides) {
      if (key.size() > path.size() && key.compare(0, path.size(), path) == 0 &&
          key[path.size()] == '.') {
        return str_cat("override '", text, "'");
      }
    }
    // An override of a section covers the keys below it.
    for (std::string p = path;;) {
      auto it = overrides.find(p);
      if (it != overrides.end()) return str_cat("override '", it->second, "'");
      size_t dot = p.rfind('.');
      if (dot == std::string::npos) break;
      p.resize(dot);
    }
    const YAML::Mark mark = node.Mark();
    if (mark.line >= 0) return str_cat(file, ":", mark.line + 1);
    return file;
  }
};

[[noreturn]] void fail(const std::string& where, const std::string& path, const std::string& what) {
  throw InputError(str_cat(where, ": ", path, ": ", what));
}

std::string describe_node(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Scalar:
      return str_cat("\"", node.Scalar(), "\"");
    default:
      return "an undefined value";
  }
}

// "expected <...>" texts for each value kind and rule.
std::string with_article(const std::string& noun) {
  const bool vowel = !noun.empty() && std::string("aeiou").find(noun[0]) != std::string::npos;
  return str_cat(vowel ? "an " : "a ", noun);
}
std::string expected(const AnyValue&, const std::string& kind) { return with_article(kind); }
std::string expected(const Positive&, const std::string& kind) {
  return str_cat("a positive ", kind);
}
std::string expected(const NonNegative&, const std::string& kind) {
  return str_cat("a non-negative ", kind);
}
std::string expected(const OneOf& rule, const std::string&) {
  return str_cat("one of ", join(rule.choices, ", "));
}
std::string expected(const SwitchOrPath&, const std::string&) { return "true, false or a folder"; }
std::string expected(const InRange& rule, const std::string& kind) {
  return str_cat(with_article(kind), " from ", rule.lo, " to ", rule.hi);
}

template <class T>
bool satisfies(const AnyValue&, const T&) {
  return true;
}
template <class T>
bool satisfies(const Positive&, const T& v) {
  return v > 0;
}
template <class T>
bool satisfies(const NonNegative&, const T& v) {
  return v >= 0;
}
template <class T>
bool satisfies(const InRange& rule, const T& v) {
  return static_cast<double>(v) >= rule.lo && static_cast<double>(v) <= rule.hi;
}
bool satisfies(const SwitchOrPath&, const std::string& v) {
  if (v == "true" || v == "false") return true;
  std::string lower = v;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* b : {"true", "false", "yes", "no", "on", "off", "y", "n"}) {
    if (lower == b) return false;  // a boolean spelled otherwise: not taken for a folder's name
  }
  return !v.empty();
}
bool satisfies(const OneOf& rule, const std::string& v) {
  return std::find(rule.choices.begin(), rule.choices.end(), v) != rule.choices.end();
}

// Converts a scalar node; returns false when it is not of the type.
bool convert(const YAML::Node& node, int64_t& out) {
  if (!node.IsScalar()) return false;
  const std::string& s = node.Scalar();
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno == ERANGE) return false;
  out = v;
  return true;
}
bool convert(const YAML::Node& node, double& out) {
  if (!node.IsScalar()) return false;
  const std::string& s = node.Scalar();
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v)) return false;
  out = v;
  return true;
}
bool convert(const YAML::Node& node, bool& out) {
  if (!node.IsScalar()) return false;
  const std::string& s = node.Scalar();
  if (s == "true" || s == "True" || s == "TRUE") {
    out = true;
  } else if (s == "false" || s == "False" || s == "FALSE") {
    out = false;
  } else {
    return false;
  }
  return true;
}
bool convert(const YAML::Node& node, std::string& out) {
  if (!node.IsScalar()) return false;
  out = node.Scalar();
  return true;
}

// A list of strings: a YAML sequence of scalars, or one scalar (a list of one).
bool convert(const YAML::Node& node, std::vector<std::string>& out) {
  out.clear();
  if (node.IsNull()) return true;
  if (node.IsScalar()) {
    out.push_back(node.Scalar());
    return true;
  }
  if (!node.IsSequence()) return false;
  for (const auto& item : node) {
    if (!item.IsScalar()) return false;
    out.push_back(item.Scalar());
  }
  return true;
}

const char* kind_of(const int64_t&) { return "integer"; }
const char* kind_of(const std::vector<std::string>&) { return "list of strings"; }
const char* kind_of(const double&) { return "number"; }
const char* kind_of(const bool&) { return "boolean (true or false)"; }
const char* kind_of(const std::string&) { return "string"; }

// Visitor that fills a config struct from a YAML mapping.
class Reader {
 public:
  Reader(const YAML::Node& node, std::string prefix, const Origins& origins)
      : node_(node), prefix_(std::move(prefix)), origins_(origins) {}

  template <class T, class Rule>
  void field(const char* key, T& value, const Rule& rule, const char* /*help*/) {
    known_.emplace_back(key);
    const YAML::Node child = node_[key];
    if (!child) return;  // absent: the default stays
    const std::string path = prefix_ + key;
    T parsed{};
    if (!convert(child, parsed) || !satisfies(rule, parsed)) {
      fail(origins_.where(path, child), path,
           str_cat("expected ", expected(rule, kind_of(parsed)), ", got ", describe_node(child)));
    }
    value = parsed;
  }

  template <class S>
  void section(const char* key, S& section) {
    known_.emplace_back(key);
    const YAML::Node child = node_[key];
    if (!child || child.IsNull()) return;
    const std::string path = prefix_ + key;
    if (!child.IsMap()) {
      fail(origins_.where(path, child), path,
           str_cat("expected a mapping of keys, got ", describe_node(child)));
    }
    Reader sub(child, path + ".", origins_);
    section.visit(sub);
    sub.reject_unknown_keys();
  }

  void reject_unknown_keys() const {
    std::vector<std::string> seen;
    for (const auto& kv : node_) {
      if (!kv.first.IsScalar()) {
        const std::string here = prefix_.empty() ? "<top level>" : prefix_.substr(0, prefix_.size() - 1);
        fail(origins_.where(prefix_, kv.first), here,
             str_cat("a key must be a plain name, got ", describe_node(kv.first)));
      }
      const std::string key = kv.first.as<std::string>();
      if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
        fail(origins_.where(prefix_ + key, kv.first), prefix_ + key, "duplicate key (it appears twice in this mapping)");
      }
      seen.push_back(key);
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      const std::string path = prefix_ + key;
      std::string message = "unknown key";
      std::string suggestion = closest_match(key, known_);
      if (!suggestion.empty()) message += str_cat(" (did you mean '", prefix_, suggestion, "'?)");
      message += str_cat("; known keys here: ", join(known_, ", "));
      fail(origins_.where(path, kv.first), path, message);
    }
  }

 private:
  const YAML::Node node_;
  const std::string prefix_;
  const Origins& origins_;
  std::vector<std::string> known_;
};

// Visitor that writes a config struct as YAML.
class Writer {
 public:
  explicit Writer(YAML::Emitter& out) : out_(out) {}

  template <class T, class Rule>
  void field(const char* key, const T& value, const Rule&, const char* help) {
    out_ << YAML::Key << key << YAML::Value;
    if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      out_ << YAML::Flow << YAML::BeginSeq;
      for (const auto& item : value) out_ << item;
      out_ << YAML::EndSeq;
    } else {
      out_ << value;
    }
    out_ << YAML::Comment(help);
  }

  template <class S>
  void section(const char* key, S& section) {
    out_ << YAML::Key << key << YAML::Value << YAML::BeginMap;
    section.visit(*this);
    out_ << YAML::EndMap;
  }

 private:
  YAML::Emitter& out_;
};

bool is_identifier(const std::string& s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

// Sets key.path=value in the tree rooted at root.
void apply_override(YAML::Node& root, const std::string& text, Origins& origins) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos) {
    throw InputError(str_cat("override '", text, "': expected key.path=value"));
  }
  const std::string path(trim(std::string_view(text).substr(0, eq)));
  const std::string value_text(trim(std::string_view(text).substr(eq + 1)));
  const std::vector<std::string> keys = split(path, '.');
  for (const auto& k : keys) {
    if (!is_identifier(k)) {
      throw InputError(str_cat("override '", text, "': '", path,
                               "' is not a key path (expected names joined by '.')"));
    }
  }
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::Exception& e) {
    throw InputError(str_cat("override '", text, "': the value is not valid YAML: ", e.msg));
  }
  YAML::Node cur = root;
  for (size_t i = 0; i + 1 < keys.size(); ++i) {
    YAML::Node next = cur[keys[i]];
    if (!next || next.IsNull()) {
      cur[keys[i]] = YAML::Node(YAML::NodeType::Map);
      next = cur[keys[i]];
    } else if (!next.IsMap()) {
      const std::string prefix = join({keys.begin(), keys.begin() + static_cast<long>(i) + 1}, ".");
      throw InputError(str_cat("override '", text, "': ", prefix, " is not a section"));
    }
    cur.reset(next);  // rebind; operator= would copy the value into cur
  }
  cur[keys.back()] = value;
  origins.overrides[path] = text;
}

// A train key that contradicts another section: the key (nullptr when
// none) and what is wrong.
struct KeyProblem {
  const char* key = nullptr;
  std::string what;
};

KeyProblem checkpointing_problem(const Config& config) {
  const TrainSection& t = config.train;
  if (config.parallel.zero_stage != 3) return {};
  if (t.activation_checkpointing == "none") {
    return {"activation_checkpointing",
            "none is not available at parallel.zero_stage 3, which recomputes every block (it frees each block's "
            "parameters after its forward)"};
  }
  if (t.checkpoint_every != 1) {
    return {"checkpoint_every", str_cat(t.checkpoint_every,
                                        " is not available at parallel.zero_stage 3, which recomputes every block")};
  }
  return {};
}

Config resolve(YAML::Node root, Origins& origins, const std::vector<std::string>& overrides) {
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) {
    throw InputError(str_cat(origins.where("", root),
                             ": expected a mapping of sections at the top level, got ",
                             describe_node(root)));
  }
  for (const auto& o : overrides) apply_override(root, o, origins);
  Config config;
  Reader reader(root, "", origins);
  config.visit(reader);
  reader.reject_unknown_keys();
  // The random-init fields say nothing when the model comes from model.init
  // or model.config: given there, they would be dropped without a word.
  if (!config.model.init.empty() || !config.model.config.empty()) {
    const YAML::Node model = root["model"];
    const char* from = !config.model.init.empty() ? "model.init" : "model.config";
    for (const char* key : {"arch", "vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                            "intermediate_size", "max_positions", "tie_word_embeddings"}) {
      const YAML::Node node = model && model.IsMap() ? model[key] : YAML::Node();
      if (!node) continue;
      fail(origins.where(str_cat("model.", key), node), str_cat("model.", key),
           str_cat("has no effect with ", from, " set (the architecture comes from its config.json or GGUF metadata); "
                   "drop it, or clear ", from, " for a random init from these fields"));
    }
  }
  // Across sections: what ZeRO 3 cannot do, named where it was set.
  const KeyProblem p = checkpointing_problem(config);
  if (p.key != nullptr) {
    const YAML::Node train = root["train"];
    const YAML::Node node = train && train.IsMap() ? train[p.key] : YAML::Node();
    fail(origins.where(str_cat("train.", p.key), node ? node : root), str_cat("train.", p.key), p.what);
  }
  return config;
}

}  // namespace

int64_t checkpoint_every(const Config& config) {
  const KeyProblem p = checkpointing_problem(config);
  if (p.key != nullptr) throw InputError(str_cat("train.", p.key, ": ", p.what));
  if (config.parallel.zero_stage == 3) return 1;
  return config.train.activation_checkpointing == "blocks" ? config.train.checkpoint_every : 0;
}

int64_t accumulation_steps(const DataSection& d, int ranks) {
  if (d.global_batch % (d.micro_batch * ranks) != 0) {
    throw InputError(str_cat("data.global_batch ", d.global_batch, " is not a multiple of data.micro_batch (",
                             d.micro_batch, ") x ranks (", ranks, ")"));
  }
  return d.global_batch / (d.micro_batch * ranks);
}

Config parse_config(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides) {
  Origins origins{source_name, {}};
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw InputError(str_cat(source_name, ":", e.mark.line + 1, ":", e.mark.column + 1,
                             ": invalid YAML: ", e.msg));
  }
  try {
    return resolve(root, origins, overrides);
  } catch (const YAML::Exception& e) {  // a conversion yaml-cpp refuses: name the file and place
    throw InputError(str_cat(source_name, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec)) {
    throw InputError(str_cat(path, ": not a config file (a directory?)"));
  }
  std::ifstream in(path);
  if (!in) {
    throw InputError(str_cat(path, ": cannot open config file: ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path, overrides);
}

Config default_config(const std::vector<std::string>& overrides) {
  return parse_config("", "<defaults>", overrides);
}

std::string to_yaml(const Config& config) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  Writer writer(out);
  Config copy = config;  // visit() takes fields by reference; Writer only reads them
  copy.visit(writer);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

bool is_override(std::string_view arg) {
  return !arg.empty() && arg[0] != '-' && arg.find('=') != std::string_view::npos;
}

}  // namespace shardtune
