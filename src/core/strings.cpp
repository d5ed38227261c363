#include "shardtune/core/strings.h"

#include <filesystem>

#include "shardtune/core/error.h"

#include <algorithm>
#include <cstdio>

namespace shardtune {

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      parts.emplace_back(s.substr(start));
      return parts;
    }
    parts.emplace_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += sep;
    out += parts[i];
  }
  return out;
}

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

size_t edit_distance(std::string_view a, std::string_view b) {
  // Optimal string alignment: insertions, deletions, substitutions and
  // transpositions of neighbours ("trian" -> "train") cost one each.
  // Three rows; row[j] = distance(a[0:i], b[0:j]).
  std::vector<size_t> before(b.size() + 1), prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) cur[j] = std::min(cur[j], before[j - 2] + 1);
    }
    std::swap(before, prev);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string capped(std::string_view s, size_t max) {
  if (s.size() <= max) return std::string(s);
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) --n;  // not inside a character
  return std::string(s.substr(0, n)) + "... (" + std::to_string(s.size()) + " bytes)";
}

std::string without_exception_tag(std::string_view what) {
  if (!what.empty() && what[0] == '[') {
    const size_t end = what.find("] ");
    if (end != std::string_view::npos) what.remove_prefix(end + 2);
  }
  // nlohmann::json built with JSON_DIAGNOSTICS puts the value's JSON pointer
  // first: "(/added_tokens/0/content) type must be ...". Written as a key
  // path: "added_tokens[0].content: type must be ...".
  if (what.size() > 2 && what[0] == '(' && what[1] == '/') {
    const size_t close = what.find(") ");
    if (close != std::string_view::npos) {
      std::string path;
      std::string_view pointer = what.substr(1, close - 1);
      while (!pointer.empty()) {
        pointer.remove_prefix(1);  // the '/'
        const size_t next = std::min(pointer.find('/'), pointer.size());
        std::string token;
        for (size_t i = 0; i < next; ++i) {
          if (pointer[i] == '~' && i + 1 < next) {
            token += pointer[i + 1] == '1' ? '/' : '~';
            ++i;
          } else {
            token += pointer[i];
          }
        }
        const bool index = !token.empty() && token.find_first_not_of("0123456789") == std::string::npos;
        path += index ? "[" + token + "]" : (path.empty() ? "" : ".") + token;
        pointer.remove_prefix(next);
      }
      return capped(path + ": " + std::string(what.substr(close + 2)));
    }
  }
  return capped(what);
}

std::string closest_match(std::string_view word, const std::vector<std::string>& candidates) {
  // A candidate that contains the word (or is contained in it) is the most
  // likely meaning: "check" -> "check_collectives". The shortest such wins.
  std::string best;
  if (word.size() >= 3) {
    for (const auto& c : candidates) {
      const bool contains =
          c.find(word) != std::string::npos || word.find(c) != std::string_view::npos;
      if (contains && (best.empty() || c.size() < best.size())) best = c;
    }
    if (!best.empty()) return best;
  }
  // Otherwise the nearest by edit distance, if near enough to be a typo.
  size_t best_distance = static_cast<size_t>(-1);
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  const size_t limit = std::max<size_t>(1, word.size() / 3);
  return best_distance <= limit ? best : std::string();
}

int64_t peak_host_memory_bytes() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  int64_t kib = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
  }
  std::fclose(f);
  return kib * 1024;
}

bool path_within(const std::filesystem::path& inner, const std::filesystem::path& outer) {
  auto i = inner.begin(), o = outer.begin();
  for (; o != outer.end(); ++o, ++i) {
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

void refuse_output_over_input(const std::string& output, const std::string& input, const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path out = fs::weakly_canonical(fs::absolute(output), ec);
  if (ec) return;
  const fs::path in = fs::weakly_canonical(fs::absolute(input), ec);
  if (ec) return;
  if (out == in) {
    throw InputError(str_cat(what, ": the output ", output, " is the input ", input, "; write elsewhere"));
  }
  if (path_within(out, in)) {
    throw InputError(str_cat(what, ": the output ", output, " is inside the input ", input, "; write elsewhere"));
  }
  if (path_within(in, out)) {
    throw InputError(str_cat(what, ": the output ", output, " holds the input ", input,
                             " (replacing it would delete the input); write elsewhere"));
  }
}

size_t utf8_error_at(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = n != 0 && i + n <= s.size();
    uint32_t cp = n <= 1 ? c : c & (0xff >> (n + 1));
    for (size_t k = 1; ok && k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc & 0xc0) == 0x80;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // No overlong forms, no surrogates, nothing past U+10FFFF.
    if (ok) {
      ok = !((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
             (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff);
    }
    if (!ok) return i;
    i += n;
  }
  return std::string_view::npos;
}

}  // namespace shardtune
