#include "shardtune/judge/text_metrics.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <unicode/uchar.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <random>
#include <unordered_map>

#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"

namespace shardtune {
namespace {

using json = nlohmann::json;

// Unicode code points of UTF-8 text (an invalid byte stands for itself).
std::vector<uint32_t> code_points(std::string_view s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (i + n > s.size() || n == 1) {
      out.push_back(c);
      ++i;
      continue;
    }
    uint32_t cp = c & (0xff >> (n + 1));
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
    out.push_back(cp);
    i += n;
  }
  return out;
}

// Python's str.isspace() over code points.
bool is_space(uint32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// Lowercase code points (ICU's simple mapping), as code points.
std::vector<uint32_t> lower(std::string_view s) {
  std::vector<uint32_t> c = code_points(s);
  for (auto& x : c) x = static_cast<uint32_t>(u_tolower(static_cast<UChar32>(x)));
  return c;
}

// Words: runs of code points between Unicode whitespace, keeping those keep() says.
template <class Keep>
std::vector<std::string> words(const std::vector<uint32_t>& cps, Keep keep) {
  std::vector<std::string> out;
  std::string word;
  for (uint32_t c : cps) {
    if (is_space(c)) {
      if (!word.empty()) out.push_back(word);
      word.clear();
    } else if (keep(c)) {
      append_utf8(word, c);
    }
  }
  if (!word.empty()) out.push_back(word);
  return out;
}

std::string_view trim_ascii(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

bool parse(std::string_view s, json& out) {
  try {
    out = json::parse(trim_ascii(s));
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

double f1_of(size_t common, size_t n_answer, size_t n_reference) {
  if (common == 0) return 0.0;
  const double p = static_cast<double>(common) / static_cast<double>(n_answer);
  const double r = static_cast<double>(common) / static_cast<double>(n_reference);
  return 2 * p * r / (p + r);
}

// SQuAD's normalize_answer (lowercase, ASCII punctuation removed, the
// articles removed), as words.
std::vector<std::string> squad_tokens(std::string_view s) {
  std::vector<std::string> out = words(lower(s), [](uint32_t c) { return !(c < 0x80 && std::ispunct(static_cast<int>(c))); });
  out.erase(std::remove_if(out.begin(), out.end(),
                           [](const std::string& w) { return w == "a" || w == "an" || w == "the"; }),
            out.end());
  return out;
}

// rouge_score's tokenizer: lowercase, anything but [a-z0-9] separates.
std::vector<std::string> rouge_tokens(std::string_view s) {
  std::vector<uint32_t> c = lower(s);
  for (auto& x : c) {
    if (!((x >= 'a' && x <= 'z') || (x >= '0' && x <= '9'))) x = ' ';
  }
  return words(c, [](uint32_t) { return true; });
}

}  // namespace

struct TextScorer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

const std::vector<std::string>& text_metric_names() {
  static const std::vector<std::string> n = {"exact",    "normalized", "json_valid", "json_equal", "json_fields",
                                             "token_f1", "rouge_l",    "chrf",       "regex"};
  return n;
}

double exact_match(std::string_view a, std::string_view r) { return trim_ascii(a) == trim_ascii(r) ? 1.0 : 0.0; }

double normalized_match(std::string_view a, std::string_view r) {
  return words(lower(a), [](uint32_t) { return true; }) == words(lower(r), [](uint32_t) { return true; }) ? 1.0 : 0.0;
}

double json_valid(std::string_view a) {
  json j;
  return parse(a, j) ? 1.0 : 0.0;
}

double json_equal(std::string_view a, std::string_view r) {
  json x, y;
  return parse(a, x) && parse(r, y) && x == y ? 1.0 : 0.0;
}

double json_fields(std::string_view a, std::string_view r) {
  json x, y;
  if (!parse(a, x) || !parse(r, y) || !x.is_object() || !y.is_object() || y.empty()) return 0.0;
  size_t same = 0;
  for (const auto& [k, v] : y.items()) {
    const auto it = x.find(k);
    if (it != x.end() && *it == v) ++same;
  }
  return static_cast<double>(same) / static_cast<double>(y.size());
}

double token_f1(std::string_view a, std::string_view r) {
  const auto x = squad_tokens(a), y = squad_tokens(r);
  if (x.empty() || y.empty()) return x == y ? 1.0 : 0.0;  // SQuAD: F1 is whether both are empty
  std::unordered_map<std::string, int64_t> count;
  for (const auto& w : y) ++count[w];
  size_t common = 0;
  for (const auto& w : x) {
    auto it = count.find(w);
    if (it != count.end() && it->second > 0) {
      --it->second;
      ++common;
    }
  }
  return f1_of(common, x.size(), y.size());
}

double rouge_l(std::string_view a, std::string_view r) {
  const auto x = rouge_tokens(a), y = rouge_tokens(r);
  if (x.empty() || y.empty()) return 0.0;
  std::vector<size_t> prev(x.size() + 1, 0), cur(x.size() + 1, 0);
  for (size_t i = 1; i <= y.size(); ++i) {
    for (size_t j = 1; j <= x.size(); ++j) {
      cur[j] = y[i - 1] == x[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  return f1_of(prev[x.size()], x.size(), y.size());
}

double chrf(std::string_view a, std::string_view r) {
  auto chars = [](std::string_view s) {
    std::vector<uint32_t> c = code_points(s);
    c.erase(std::remove_if(c.begin(), c.end(), is_space), c.end());
    return c;
  };
  const auto x = chars(a), y = chars(r);
  constexpr int kOrder = 6;
  constexpr double kBeta2 = 4.0;  // beta 2
  double avg_p = 0, avg_r = 0;
  int effective = 0;
  for (int n = 1; n <= kOrder; ++n) {
    auto grams = [&](const std::vector<uint32_t>& v) {
      std::map<std::vector<uint32_t>, int64_t> g;
      for (size_t i = 0; i + static_cast<size_t>(n) <= v.size(); ++i) ++g[{v.begin() + static_cast<long>(i), v.begin() + static_cast<long>(i) + n}];
      return g;
    };
    const auto gx = grams(x), gy = grams(y);
    int64_t n_hyp = 0, n_ref = 0, match = 0;
    for (const auto& [k, c] : gx) n_hyp += c;
    for (const auto& [k, c] : gy) {
      n_ref += c;
      const auto it = gx.find(k);
      if (it != gx.end()) match += std::min(c, it->second);
    }
    if (n_hyp > 0 && n_ref > 0) {
      avg_p += static_cast<double>(match) / static_cast<double>(n_hyp);
      avg_r += static_cast<double>(match) / static_cast<double>(n_ref);
      ++effective;
    }
  }
  if (effective == 0) return 0.0;
  avg_p /= effective;
  avg_r /= effective;
  if (avg_p + avg_r == 0) return 0.0;
  return (1 + kBeta2) * avg_p * avg_r / (kBeta2 * avg_p + avg_r);
}

TextScorer::TextScorer(const std::string& regex) {
  if (regex.empty()) return;
  int err = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(regex.data()), regex.size(), PCRE2_UTF | PCRE2_UCP,
                                   &err, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    throw InputError(str_cat("--regex ", regex, " does not compile at ", offset, ": ", reinterpret_cast<const char*>(msg)));
  }
  regex_ = std::make_unique<Regex>();
  regex_->code = code;
}

TextScorer::~TextScorer() = default;

std::map<std::string, double> TextScorer::score(std::string_view a, std::string_view r) const {
  std::map<std::string, double> m = {{"exact", exact_match(a, r)},     {"normalized", normalized_match(a, r)},
                                     {"json_valid", json_valid(a)},     {"json_equal", json_equal(a, r)},
                                     {"json_fields", json_fields(a, r)}, {"token_f1", token_f1(a, r)},
                                     {"rouge_l", rouge_l(a, r)},        {"chrf", chrf(a, r)}};
  if (regex_) {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(regex_->code, nullptr);
    const int rc = pcre2_match(regex_->code, reinterpret_cast<PCRE2_SPTR>(a.data()), a.size(), 0, 0, md, nullptr);
    pcre2_match_data_free(md);
    m["regex"] = rc >= 0 ? 1.0 : 0.0;
  }
  return m;
}

namespace {

Interval percentile_interval(std::vector<double> means, double mean) {
  std::sort(means.begin(), means.end());
  const auto at = [&](double q) {
    const size_t i = static_cast<size_t>(q * static_cast<double>(means.size() - 1) + 0.5);
    return means[std::min(i, means.size() - 1)];
  };
  return {mean, at(0.025), at(0.975)};
}

}  // namespace

Interval bootstrap_mean(const std::vector<double>& v, int rounds, uint64_t seed) {
  return bootstrap_difference(std::vector<double>(v.size(), 0.0), v, rounds, seed);
}

Interval bootstrap_difference(const std::vector<double>& a, const std::vector<double>& b, int rounds, uint64_t seed) {
  ST_CHECK(a.size() == b.size(), "bootstrap_difference: ", a.size(), " vs ", b.size(), " values");
  if (b.empty()) return {};
  const size_t n = b.size();
  double mean = 0;
  for (size_t i = 0; i < n; ++i) mean += b[i] - a[i];
  mean /= static_cast<double>(n);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, n - 1);
  std::vector<double> means(static_cast<size_t>(std::max(rounds, 1)));
  for (auto& m : means) {
    double s = 0;
    for (size_t i = 0; i < n; ++i) {
      const size_t k = pick(rng);
      s += b[k] - a[k];
    }
    m = s / static_cast<double>(n);
  }
  return percentile_interval(std::move(means), mean);
}

}  // namespace shardtune
