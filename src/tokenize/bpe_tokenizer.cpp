// BPE tokenizers in the Hugging Face tokenizer.json format, and GPT-2's
// vocab.json + merges.txt. The pipeline is HF's: added tokens are split off
// first; each remaining run is normalized (Prepend, Replace), pre-tokenized
// (Split by regex, ByteLevel, Metaspace) and each piece is merged by BPE.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "internal.h"
#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"
#include "shardtune/tokenize/tokenizer.h"

namespace shardtune {
namespace {

using detail::AddedToken;
using json = nlohmann::json;

const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const std::string kSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's word marker

// A compiled Unicode regex (PCRE2 with UTF and Unicode properties).
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
    if (code_ == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      throw InputError(str_cat(where, ": regex ", pattern, " does not compile at ", offset, ": ",
                               reinterpret_cast<const char*>(msg)));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT fails
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls f(start, end) for each match, left to right.
  template <class F>
  void for_each_match(std::string_view s, F&& f) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t pos = 0;
    while (pos <= s.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos,
                                 PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t b = ov[0], e = ov[1];
      if (e > b) f(b, e);
      pos = e > b ? e : e + (e < s.size() ? detail::utf8_len(static_cast<unsigned char>(s[e])) : 1);
    }
    pcre2_match_data_free(md);
  }

 private:
  pcre2_code* code_ = nullptr;
};

// GPT-2's reversible map from bytes to printable characters.
struct ByteMap {
  std::string to_char[256];
  std::unordered_map<std::string, uint8_t> to_byte;
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      std::string u;
      if (cp < 0x80) {
        u.push_back(static_cast<char>(cp));
      } else {
        u.push_back(static_cast<char>(0xc0 | (cp >> 6)));
        u.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
      }
      to_char[b] = u;
      to_byte[u] = static_cast<uint8_t>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

struct PreStep {
  enum Kind { kSplit, kByteLevel, kMetaspace };
  explicit PreStep(Kind k) : kind(k) {}
  Kind kind;
  std::shared_ptr<Regex> regex;  // kSplit, kByteLevel with use_regex
  bool add_prefix_space = false;  // kByteLevel
  std::string prepend_scheme = "always";  // kMetaspace: always, first, never
  bool split = true;                      // kMetaspace
  // kSplit: what becomes of the matches (HF's SplitDelimiterBehavior), and
  // whether the pattern matches the pieces rather than the delimiters.
  enum Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous } behavior = kIsolated;
  bool invert = false;
};

struct NormStep {
  enum Kind { kPrepend, kReplace, kNfc, kNfkc } kind;
  std::string a, b;
};

// Unicode normalization (NFC, NFKC) through ICU.
std::string normalize_unicode(const std::string& s, bool compatibility) {
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* n =
      compatibility ? icu::Normalizer2::getNFKCInstance(err) : icu::Normalizer2::getNFCInstance(err);
  if (U_FAILURE(err)) throw Error(str_cat("ICU normalizer unavailable: ", u_errorName(err)));
  const icu::UnicodeString in = icu::UnicodeString::fromUTF8(s);
  if (n->isNormalized(in, err) && U_SUCCESS(err)) return s;
  err = U_ZERO_ERROR;
  const icu::UnicodeString out = n->normalize(in, err);
  if (U_FAILURE(err)) throw Error(str_cat("ICU normalization failed: ", u_errorName(err)));
  std::string utf8;
  out.toUTF8String(utf8);
  return utf8;
}

// The merge table: (left id, right id) -> (rank, merged id), open
// addressing with linear probing. The BPE inner loop is a lookup per
// adjacent pair, so this is where encoding spends its time.
class MergeTable {
 public:
  struct Merge {
    int32_t rank;
    int32_t id;
  };
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    slots_.assign(cap, Slot{kEmpty, {0, 0}});
    mask_ = cap - 1;
  }
  // Keeps the first merge of a pair (the lowest rank), as a map's emplace does.
  void insert(int32_t a, int32_t b, Merge m) {
    const uint64_t k = key(a, b);
    for (size_t i = hash(k);; i = (i + 1) & mask_) {
      if (slots_[i].key == k) return;
      if (slots_[i].key == kEmpty) {
        slots_[i] = Slot{k, m};
        return;
      }
    }
  }
  const Merge* find(int32_t a, int32_t b) const {
    if (slots_.empty()) return nullptr;
    const uint64_t k = key(a, b);
    for (size_t i = hash(k);; i = (i + 1) & mask_) {
      if (slots_[i].key == k) return &slots_[i].merge;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are below 2^24: no real key
  struct Slot {
    uint64_t key;
    Merge merge;
  };
  size_t hash(uint64_t k) const { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

class BpeTokenizer final : public Tokenizer {
 public:
  // Builds from parsed parts; `where` names the source in errors.
  BpeTokenizer(const std::string& where, std::unordered_map<std::string, int32_t> vocab,
               const std::vector<std::pair<std::string, std::string>>& merges, std::vector<AddedToken> added,
               std::vector<NormStep> norm, std::vector<PreStep> pre, bool byte_fallback, int32_t unk, bool fuse_unk,
               bool ignore_merges, bool strip_leading_space, bool decode_bytes)
      : vocab_(std::move(vocab)),
        added_(std::move(added)),
        norm_(std::move(norm)),
        pre_(std::move(pre)),
        byte_fallback_(byte_fallback),
        unk_(unk),
        fuse_unk_(fuse_unk),
        ignore_merges_(ignore_merges),
        strip_leading_space_(strip_leading_space),
        decode_bytes_(decode_bytes) {
    static std::atomic<uint64_t> instances{0};
    instance_ = ++instances;
    {
      std::string all;
      for (const auto& [a, b] : merges) {
        append_field(all, a);
        append_field(all, b);
      }
      rules_hash_ = str_cat("bpe:", content_hash(all));
    }
    int64_t size = 0;
    for (const auto& [tok, id] : vocab_) size = std::max<int64_t>(size, id + 1);
    for (const auto& t : added_) size = std::max<int64_t>(size, t.id + 1);
    id_to_token_.resize(static_cast<size_t>(size));
    for (const auto& [tok, id] : vocab_) id_to_token_[static_cast<size_t>(id)] = tok;
    special_.assign(static_cast<size_t>(size), false);
    for (const auto& t : added_) {
      id_to_token_[static_cast<size_t>(t.id)] = t.content;
      added_ids_[t.id] = &t - added_.data();
      if (t.special) special_[static_cast<size_t>(t.id)] = true;
    }
    merges_.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const auto& [a, b] = merges[rank];
      const auto ia = vocab_.find(a), ib = vocab_.find(b), im = vocab_.find(a + b);
      if (ia == vocab_.end() || ib == vocab_.end() || im == vocab_.end()) {
        throw InputError(str_cat(where, ": merge ", rank, " ('", a, "' '", b,
                                 "') uses or makes a token that is not in the vocabulary"));
      }
      merges_.insert(ia->second, ib->second, {static_cast<int32_t>(rank), im->second});
    }
    byte_level_ = false;
    for (const auto& p : pre_) byte_level_ = byte_level_ || p.kind == PreStep::kByteLevel;
    if (byte_fallback_) {
      for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", b);
        const auto it = vocab_.find(name);
        byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
      }
    }
  }

  void set_chat_template(std::string t) { chat_template_ = std::move(t); }
  void set_special_ids(int32_t bos, int32_t eos, int32_t pad) {
    bos_ = bos;
    eos_ = eos;
    pad_ = pad;
  }

  std::vector<int32_t> encode(std::string_view text, bool parse_special) const override {
    check_utf8(text, "encode");
    std::vector<int32_t> ids;
    bool first = true;
    detail::split_added(
        text, added_, parse_special,
        [&](std::string_view run) {
          encode_run(std::string(run), first && run.data() == text.data(), ids);
          first = false;
        },
        [&](const AddedToken& t) {
          ids.push_back(t.id);
          first = false;
        });
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::string out;
    std::string pending;  // model tokens not yet turned into bytes
    auto flush = [&] {
      if (byte_level_) {
        const ByteMap& m = byte_map();
        for (size_t i = 0; i < pending.size();) {
          const size_t n = detail::utf8_len(static_cast<unsigned char>(pending[i]));
          const auto it = m.to_byte.find(pending.substr(i, n));
          if (it != m.to_byte.end()) {
            out.push_back(static_cast<char>(it->second));
          } else {
            out.append(pending, i, n);
          }
          i += n;
        }
      } else {
        out += pending;
      }
      pending.clear();
    };
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size()) {
        throw InputError(str_cat("decode: id ", id, " is outside the vocabulary (", vocab_size(), ")"));
      }
      const std::string& tok = id_to_token_[static_cast<size_t>(id)];
      // With a ByteFallback decoder, <0xXX> is a byte (also when listed as an added token).
      if (decode_bytes_ && tok.size() == 6 && tok.compare(0, 3, "<0x") == 0 && tok[5] == '>') {
        pending.push_back(static_cast<char>(std::stoi(tok.substr(3, 2), nullptr, 16)));
        continue;
      }
      if (added_ids_.count(id) != 0) {
        if (skip_special && special_[static_cast<size_t>(id)]) continue;
        flush();
        out += tok;
        continue;
      }
      if (!byte_level_) {
        // SentencePiece-style pieces: the marker is a space.
        std::string t = tok;
        for (size_t p; (p = t.find(kSpace)) != std::string::npos;) t.replace(p, kSpace.size(), " ");
        pending += t;
        continue;
      }
      pending += tok;
    }
    flush();
    if (strip_leading_space_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    for (const auto& t : added_) {
      if (t.content == token) return t.id;
    }
    const auto it = vocab_.find(std::string(token));
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }
  std::string id_to_token(int32_t id) const override {
    ST_CHECK(id >= 0 && id < vocab_size(), "id ", id, " is outside the vocabulary");
    return id_to_token_[static_cast<size_t>(id)];
  }
  bool is_special(int32_t id) const override {
    return id >= 0 && id < vocab_size() && special_[static_cast<size_t>(id)];
  }

 private:
  // One run of text between added tokens: normalize, pre-tokenize, BPE.
  void encode_run(std::string s, bool at_text_start, std::vector<int32_t>& ids) const {
    for (const auto& n : norm_) {
      if (n.kind == NormStep::kPrepend) {
        s = n.a + s;
      } else if (n.kind == NormStep::kNfc || n.kind == NormStep::kNfkc) {
        s = normalize_unicode(s, n.kind == NormStep::kNfkc);
      } else {  // Replace (a non-empty pattern), in one pass: in place would be quadratic
        std::string out;
        out.reserve(s.size());
        size_t from = 0;
        for (size_t p; (p = s.find(n.a, from)) != std::string::npos; from = p + n.a.size()) {
          out.append(s, from, p - from);
          out += n.b;
        }
        out.append(s, from, std::string::npos);
        s = std::move(out);
      }
    }
    std::vector<std::string> pieces{std::move(s)};
    for (const auto& step : pre_) {
      std::vector<std::string> next;
      for (size_t i = 0; i < pieces.size(); ++i) pre_tokenize(step, pieces[i], at_text_start && i == 0, next);
      pieces = std::move(next);
    }
    for (const auto& p : pieces) bpe(p, ids);
  }

  void pre_tokenize(const PreStep& step, const std::string& piece, bool first, std::vector<std::string>& out) const {
    switch (step.kind) {
      case PreStep::kSplit: {
        // The piece as segments, each a match (of the delimiter) or not.
        struct Seg {
          size_t b, e;
          bool match;
        };
        std::vector<Seg> segs;
        size_t last = 0;
        step.regex->for_each_match(piece, [&](size_t b, size_t e) {
          if (b > last) segs.push_back({last, b, step.invert});
          segs.push_back({b, e, !step.invert});
          last = e;
        });
        if (last < piece.size()) segs.push_back({last, piece.size(), step.invert});
        std::vector<Seg> parts;
        bool prev_match = false;
        switch (step.behavior) {
          case PreStep::kIsolated:
            parts = segs;
            break;
          case PreStep::kRemoved:
            for (const Seg& g : segs) {
              if (!g.match) parts.push_back(g);
            }
            break;
          case PreStep::kMergedWithPrevious:  // a match joins the piece before it, unless that was a match
            for (const Seg& g : segs) {
              if (g.match && !prev_match && !parts.empty()) parts.back().e = g.e; else parts.push_back(g);
              prev_match = g.match;
            }
            break;
          case PreStep::kMergedWithNext:  // a match joins the piece after it, unless that is a match
            for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
              if (it->match && !prev_match && !parts.empty()) parts.back().b = it->b; else parts.push_back(*it);
              prev_match = it->match;
            }
            std::reverse(parts.begin(), parts.end());
            break;
          case PreStep::kContiguous:  // runs of matches, and runs of the rest, become one piece each
            for (size_t i = 0; i < segs.size(); ++i) {
              if (i > 0 && segs[i].match == prev_match) parts.back().e = segs[i].e; else parts.push_back(segs[i]);
              prev_match = segs[i].match;
            }
            break;
        }
        for (const Seg& g : parts) out.push_back(piece.substr(g.b, g.e - g.b));
        return;
      }
      case PreStep::kByteLevel: {
        std::string p = piece;
        if (step.add_prefix_space && (p.empty() || p[0] != ' ')) p = " " + p;
        std::vector<std::string> parts;
        if (step.regex) {
          step.regex->for_each_match(p, [&](size_t b, size_t e) { parts.push_back(p.substr(b, e - b)); });
        } else {
          parts.push_back(p);
        }
        const ByteMap& m = byte_map();
        for (const auto& part : parts) {
          std::string mapped;
          for (unsigned char c : part) mapped += m.to_char[c];
          out.push_back(std::move(mapped));
        }
        return;
      }
      case PreStep::kMetaspace: {
        std::string p;
        for (char c : piece) {
          if (c == ' ') p += kSpace; else p.push_back(c);
        }
        const bool prepend = step.prepend_scheme == "always" || (step.prepend_scheme == "first" && first);
        if (prepend && p.compare(0, kSpace.size(), kSpace) != 0) p = kSpace + p;
        if (!step.split) {
          out.push_back(std::move(p));
          return;
        }
        // Each marker starts a new piece (it stays with the word after it).
        size_t start = 0;
        for (size_t i = kSpace.size(); i < p.size();) {
          if (p.compare(i, kSpace.size(), kSpace) == 0) {
            out.push_back(p.substr(start, i - start));
            start = i;
            i += kSpace.size();
          } else {
            ++i;
          }
        }
        if (start < p.size()) out.push_back(p.substr(start));
        return;
      }
    }
  }

  void bpe(const std::string& word, std::vector<int32_t>& ids) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      const auto it = vocab_.find(word);
      if (it != vocab_.end()) {
        ids.push_back(it->second);
        return;
      }
    }
    // Words repeat: each thread keeps the ids of recent short words.
    constexpr size_t kCachedWordBytes = 256, kCacheWords = 16384;
    thread_local WordCache cache;
    const bool cacheable = word.size() <= kCachedWordBytes;
    if (cacheable) {
      if (cache.owner != instance_) {
        cache.words.clear();
        cache.owner = instance_;
      }
      const auto hit = cache.words.find(word);
      if (hit != cache.words.end()) {
        ids.insert(ids.end(), hit->second.begin(), hit->second.end());
        return;
      }
    }
    // A character outside the vocabulary: its bytes' tokens when every one
    // exists (byte fallback), else the unknown token, one for a run of them
    // with fuse_unk (as HF tokenizers and sentencepiece do).
    std::vector<int32_t> syms;
    bool last_unk = false;
    for (size_t i = 0; i < word.size();) {
      const size_t n = detail::utf8_len(static_cast<unsigned char>(word[i]));
      const auto it = vocab_.find(word.substr(i, n));
      bool unknown = false;
      if (it != vocab_.end()) {
        syms.push_back(it->second);
      } else if (byte_fallback_ && std::all_of(word.begin() + static_cast<long>(i),
                                               word.begin() + static_cast<long>(std::min(i + n, word.size())),
                                               [&](char c) { return byte_ids_[static_cast<unsigned char>(c)] >= 0; })) {
        for (size_t k = 0; k < n && i + k < word.size(); ++k) syms.push_back(byte_ids_[static_cast<unsigned char>(word[i + k])]);
      } else if (unk_ >= 0) {
        unknown = true;
        if (!(fuse_unk_ && last_unk)) syms.push_back(unk_);
      }
      last_unk = unknown;
      i += n;
    }
    merge(syms);
    ids.insert(ids.end(), syms.begin(), syms.end());
    if (cacheable) {
      if (cache.words.size() >= kCacheWords) cache.words.clear();
      cache.words.emplace(word, std::move(syms));
    }
  }

  // A thread's cache of words -> ids, for one tokenizer at a time (owner: an
  // instance number, never reused, so a new tokenizer at an old one's
  // address cannot read its entries).
  struct WordCache {
    uint64_t owner = 0;
    std::unordered_map<std::string, std::vector<int32_t>> words;
  };

  // Merges the adjacent pair of lowest rank (leftmost on ties) until none is
  // left, in O(n log n): the symbols form a linked list over their first
  // positions, and a min-heap holds candidate merges by (rank, position).
  // An entry is checked when it comes out (both symbols still there and
  // still the pair it was made for), since merging invalidates neighbours.
  void merge(std::vector<int32_t>& syms) const {
    const auto n = static_cast<int32_t>(syms.size());
    if (n < 2) return;
    struct Candidate {
      int32_t rank, pos, left, right, merged;  // left/right: the ids the pair was made of
      bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::vector<int32_t> next(static_cast<size_t>(n)), prev(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) {
      next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1;
      prev[static_cast<size_t>(i)] = i - 1;
    }
    std::vector<Candidate> heap;
    auto push = [&](int32_t pos) {
      const int32_t r = next[static_cast<size_t>(pos)];
      if (r < 0) return;
      const auto* m = merges_.find(syms[static_cast<size_t>(pos)], syms[static_cast<size_t>(r)]);
      if (m == nullptr) return;
      heap.push_back({m->rank, pos, syms[static_cast<size_t>(pos)], syms[static_cast<size_t>(r)], m->id});
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    };
    for (int32_t i = 0; i + 1 < n; ++i) push(i);
    constexpr int32_t kGone = -2;
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<>());
      const Candidate c = heap.back();
      heap.pop_back();
      const auto pos = static_cast<size_t>(c.pos);
      const int32_t r = next[pos];
      if (syms[pos] == kGone || r < 0 || syms[pos] != c.left || syms[static_cast<size_t>(r)] != c.right) continue;
      syms[pos] = c.merged;
      // Unlink r.
      const int32_t rr = next[static_cast<size_t>(r)];
      next[pos] = rr;
      if (rr >= 0) prev[static_cast<size_t>(rr)] = c.pos;
      syms[static_cast<size_t>(r)] = kGone;
      if (prev[pos] >= 0) push(prev[pos]);
      push(c.pos);
    }
    size_t out = 0;
    for (int32_t i = 0; i >= 0; i = next[static_cast<size_t>(i)]) syms[out++] = syms[static_cast<size_t>(i)];
    syms.resize(out);
  }

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> special_;
  MergeTable merges_;
  std::vector<AddedToken> added_;
  std::unordered_map<int32_t, size_t> added_ids_;
  std::vector<NormStep> norm_;
  std::vector<PreStep> pre_;
  bool byte_fallback_;
  int32_t unk_;
  bool fuse_unk_;
  bool ignore_merges_;
  bool strip_leading_space_;
  bool decode_bytes_;
  bool byte_level_ = false;
  int32_t byte_ids_[256] = {};
  uint64_t instance_ = 0;  // this tokenizer's number, for the word cache
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(str_cat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json parse_json(const std::string& text, const std::string& path) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw InputError(str_cat(path, ": not valid JSON: ", without_exception_tag(e.what())));
  }
}

std::shared_ptr<Regex> split_regex(const json& pattern, const std::string& where) {
  if (pattern.contains("Regex")) return std::make_shared<Regex>(pattern.at("Regex").get<std::string>(), where);
  if (pattern.contains("String")) {
    // A literal: escape it for PCRE2.
    return std::make_shared<Regex>("\\Q" + pattern.at("String").get<std::string>() + "\\E", where);
  }
  throw InputError(str_cat(where, ": Split pattern is neither Regex nor String"));
}

void parse_pre(const json& p, const std::string& where, std::vector<PreStep>& out) {
  if (p.is_null()) return;
  if (!p.is_object()) {
    throw InputError(str_cat(where, ": pre_tokenizer: expected an object with a type, got ", capped(p.dump(), 60)));
  }
  const std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (const auto& s : p.at("pretokenizers")) parse_pre(s, where, out);
  } else if (type == "ByteLevel") {
    PreStep s{PreStep::kByteLevel};
    s.add_prefix_space = p.value("add_prefix_space", false);
    if (p.value("use_regex", true)) s.regex = std::make_shared<Regex>(kGpt2Pattern, where);
    out.push_back(s);
  } else if (type == "Split") {
    PreStep s{PreStep::kSplit};
    const std::string behavior = p.value("behavior", "Isolated");
    if (behavior == "Isolated") {
      s.behavior = PreStep::kIsolated;
    } else if (behavior == "Removed") {
      s.behavior = PreStep::kRemoved;
    } else if (behavior == "MergedWithPrevious") {
      s.behavior = PreStep::kMergedWithPrevious;
    } else if (behavior == "MergedWithNext") {
      s.behavior = PreStep::kMergedWithNext;
    } else if (behavior == "Contiguous") {
      s.behavior = PreStep::kContiguous;
    } else {
      throw InputError(str_cat(where, ": Split behavior '", behavior,
                               "' is not one of Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous"));
    }
    s.invert = p.value("invert", false);
    s.regex = split_regex(p.at("pattern"), where);
    out.push_back(s);
  } else if (type == "Digits") {
    // Numbers isolated: each digit alone, or each run of digits.
    PreStep s{PreStep::kSplit};
    s.regex = std::make_shared<Regex>(p.value("individual_digits", false) ? "\\p{N}" : "\\p{N}+", where);
    out.push_back(s);
  } else if (type == "Metaspace") {
    PreStep s{PreStep::kMetaspace};
    if (p.value("replacement", kSpace) != kSpace) throw InputError(str_cat(where, ": Metaspace replacement must be U+2581"));
    s.prepend_scheme = p.contains("prepend_scheme") ? p.at("prepend_scheme").get<std::string>()
                                                    : (p.value("add_prefix_space", true) ? "always" : "never");
    s.split = p.value("split", true);
    out.push_back(s);
  } else {
    throw InputError(str_cat(where, ": pre_tokenizer type '", type,
                             "' is not supported (ByteLevel, Split, Digits, Metaspace, Sequence)"));
  }
}

void parse_norm(const json& n, const std::string& where, std::vector<NormStep>& out) {
  if (n.is_null()) return;
  if (!n.is_object()) {
    throw InputError(str_cat(where, ": normalizer: expected an object with a type, got ", capped(n.dump(), 60)));
  }
  const std::string type = n.value("type", "");
  if (type == "Sequence") {
    for (const auto& s : n.at("normalizers")) parse_norm(s, where, out);
  } else if (type == "Prepend") {
    out.push_back({NormStep::kPrepend, n.at("prepend").get<std::string>(), ""});
  } else if (type == "NFC" || type == "NFKC") {
    out.push_back({type == "NFC" ? NormStep::kNfc : NormStep::kNfkc, "", ""});
  } else if (type == "Replace") {
    if (!n.at("pattern").contains("String") || n.at("pattern").at("String").get<std::string>().empty()) {
      throw InputError(str_cat(where, ": Replace normalizer needs a non-empty String pattern"));
    }
    out.push_back({NormStep::kReplace, n.at("pattern").at("String").get<std::string>(), n.at("content").get<std::string>()});
  } else {
    throw InputError(str_cat(where, ": normalizer type '", type,
                             "' is not supported (NFC, NFKC, Prepend, Replace, Sequence)"));
  }
}

// Whether the decoder has a step of this type.
bool decoder_has(const json& d, const std::string& type) {
  if (d.is_null()) return false;
  if (d.value("type", "") == type) return true;
  if (d.value("type", "") == "Sequence") {
    for (const auto& s : d.at("decoders")) {
      if (decoder_has(s, type)) return true;
    }
  }
  return false;
}

// Whether the decoder strips the space the Metaspace marker put first.
bool decoder_strips_leading_space(const json& d) {
  if (d.is_null()) return false;
  const std::string type = d.value("type", "");
  if (type == "Metaspace") return d.value("prepend_scheme", std::string("always")) != "never" && d.value("add_prefix_space", true);
  if (type == "Strip") return d.value("start", 0) > 0;
  if (type == "Sequence") {
    for (const auto& s : d.at("decoders")) {
      if (decoder_strips_leading_space(s)) return true;
    }
  }
  return false;
}

// j[key] by reference (keeping its place in the document, which JSON errors
// name), or a null value when j is not an object or has no such key.
const json& member(const json& j, const char* key) {
  static const json null;
  if (!j.is_object()) return null;
  const auto it = j.find(key);
  return it == j.end() ? null : *it;
}

std::string token_content(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content")) return j.at("content").get<std::string>();
  return "";
}

// tokenizer_config.json, checked where it is read: the special tokens (a
// string, {"content": string, ...} or null), add_bos_token (a boolean) and
// chat_template (a string, or transformers' list of named templates, of
// which the one named "default" is taken). Throws InputError naming the file
// and key.
json checked_tokenizer_config(json cfg, const std::string& path) {
  if (!cfg.is_object()) throw InputError(str_cat(path, ": expected a JSON object, got ", capped(cfg.dump(), 60)));
  for (const char* key : {"bos_token", "eos_token", "pad_token", "unk_token"}) {
    const json& v = member(cfg, key);
    const bool ok = v.is_null() || v.is_string() ||
                    (v.is_object() && v.contains("content") && v.at("content").is_string());
    if (!ok) {
      throw InputError(str_cat(path, ": ", key, ": expected a token (a string or {\"content\": string}), got ",
                               capped(v.dump(), 60)));
    }
  }
  for (const char* key : {"add_bos_token", "add_eos_token"}) {
    const json& v = member(cfg, key);
    if (!v.is_null() && !v.is_boolean()) {
      throw InputError(str_cat(path, ": ", key, ": expected true or false, got ", capped(v.dump(), 60)));
    }
  }
  json& t = cfg["chat_template"];
  if (t.is_array()) {  // [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
    json chosen;
    std::vector<std::string> names;
    for (size_t i = 0; i < t.size(); ++i) {
      const json& e = t[i];
      if (!e.is_object() || !member(e, "name").is_string() || !member(e, "template").is_string()) {
        throw InputError(str_cat(path, ": chat_template[", i, "]: expected {\"name\": string, \"template\": string}"));
      }
      names.push_back(e.at("name").get<std::string>());
      if (names.back() == "default") chosen = e.at("template");
    }
    if (chosen.is_null()) {
      throw InputError(str_cat(path, ": chat_template: a list of named templates (", join(names, ", "),
                               ") without one named default; choose a template with --chat-template"));
    }
    t = chosen;
  } else if (!t.is_null() && !t.is_string()) {
    throw InputError(str_cat(path, ": chat_template: expected a string, got ", capped(t.dump(), 60)));
  }
  if (t.is_null()) cfg.erase("chat_template");
  return cfg;
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& path) {
  const std::string text = read_file(path);
  const json j = parse_json(text, path);
  json cfg;
  const std::string config_path = path.substr(0, path.rfind('/') + 1) + "tokenizer_config.json";
  std::ifstream cfg_in(config_path);
  if (cfg_in && path.find('/') != std::string::npos) {
    cfg = checked_tokenizer_config(parse_json(std::string(std::istreambuf_iterator<char>(cfg_in), {}), config_path),
                                   config_path);
  }
  return load_hf_tokenizer_json(j, cfg, path);
}

namespace {
std::unique_ptr<Tokenizer> build_hf_tokenizer(const json& j, const json& cfg, const std::string& path);
}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const json& j, const json& cfg, const std::string& path) {
  try {
    return build_hf_tokenizer(j, cfg, path);
  } catch (const json::exception& e) {
    // A value of the wrong JSON type somewhere: the file, and the library's
    // words without its exception tag.
    throw InputError(str_cat(path, ": malformed tokenizer file: ", without_exception_tag(e.what())));
  }
}

namespace {
// Token ids are indices into tables: they must be small non-negative integers.
int32_t token_id_value(const json& v, const std::string& path, const std::string& what) {
  constexpr int64_t kMaxId = int64_t{1} << 24;
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= kMaxId) {
    throw InputError(str_cat(path, ": ", what, ": id ", capped(v.dump(), 40), " is not an integer in [0, ", kMaxId, ")"));
  }
  return static_cast<int32_t>(v.get<int64_t>());
}

std::unique_ptr<Tokenizer> build_hf_tokenizer(const json& j, const json& cfg, const std::string& path) {
  const json& model = member(j, "model");
  if (!model.is_object() || model.value("type", "BPE") != "BPE" || !model.contains("vocab")) {
    throw InputError(str_cat(path, ": the model is not a BPE model with a vocab (",
                             model.is_object() ? model.value("type", "?") : "none", ")"));
  }
  {
    const json& p = member(model, "continuing_subword_prefix");
    const json& s = member(model, "end_of_word_suffix");
    if ((p.is_string() && !p.get<std::string>().empty()) || (s.is_string() && !s.get<std::string>().empty())) {
      throw InputError(str_cat(path, ": subword prefixes and word suffixes are not supported"));
    }
  }
  std::unordered_map<std::string, int32_t> vocab;
  if (!model.at("vocab").is_object()) throw InputError(str_cat(path, ": model.vocab is not an object"));
  for (const auto& [tok, id] : model.at("vocab").items()) vocab[tok] = token_id_value(id, path, str_cat("model.vocab['", capped(tok, 60), "']"));
  std::vector<std::pair<std::string, std::string>> merges;
  const json& merge_list = member(model, "merges");
  if (!merge_list.is_null() && !merge_list.is_array()) {
    throw InputError(str_cat(path, ": model.merges: expected a list, got ", capped(merge_list.dump(), 60)));
  }
  const json& added_list = member(j, "added_tokens");
  if (!added_list.is_null() && !added_list.is_array()) {
    throw InputError(str_cat(path, ": added_tokens: expected a list, got ", capped(added_list.dump(), 60)));
  }
  for (const auto& m : merge_list) {
    if (m.is_string()) {  // "a b"
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos) throw InputError(str_cat(path, ": merge '", capped(s, 100), "' is not 'a b'"));
      merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else {  // ["a", "b"]
      merges.emplace_back(m.at(0).get<std::string>(), m.at(1).get<std::string>());
    }
  }
  std::vector<AddedToken> added;
  for (const auto& a : added_list) {
    added.push_back({a.at("content").get<std::string>(), token_id_value(a.at("id"), path, "added_tokens"),
                     a.value("special", false), a.value("lstrip", false), a.value("rstrip", false)});
  }
  std::vector<NormStep> norm;
  parse_norm(member(j, "normalizer"), path, norm);
  std::vector<PreStep> pre;
  parse_pre(member(j, "pre_tokenizer"), path, pre);
  int32_t unk = -1;
  if (model.contains("unk_token") && model.at("unk_token").is_string()) {
    const auto it = vocab.find(model.at("unk_token").get<std::string>());
    if (it != vocab.end()) unk = it->second;
  }
  auto tok = std::make_unique<BpeTokenizer>(path, std::move(vocab), merges, added, std::move(norm), std::move(pre),
                                            model.value("byte_fallback", false), unk, model.value("fuse_unk", false),
                                            model.value("ignore_merges", false),
                                            decoder_strips_leading_space(member(j, "decoder")),
                                            decoder_has(member(j, "decoder"), "ByteFallback"));

  // BOS: what the post-processor puts first; EOS and PAD by their usual
  // names. tokenizer_config.json beside the file, if any, has the last word.
  auto id_of = [&](const std::string& name) { return name.empty() ? -1 : tok->token_to_id(name).value_or(-1); };
  int32_t bos = -1, eos = -1, pad = -1;
  const json& post = member(j, "post_processor");
  auto first_special = [&](const json& p) {
    if (p.is_object() && p.value("type", "") == "TemplateProcessing" && p.contains("single") &&
        !p.at("single").empty() && p.at("single").at(0).contains("SpecialToken")) {
      bos = id_of(p.at("single").at(0).at("SpecialToken").at("id").get<std::string>());
    }
  };
  first_special(post);
  if (post.is_object() && post.value("type", "") == "Sequence") {
    for (const auto& p : post.at("processors")) first_special(p);
  }
  for (const char* name : {"<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>"}) {
    if (eos < 0) eos = id_of(name);
  }
  for (const char* name : {"<|pad|>", "<pad>", "<|finetune_right_pad_id|>"}) {
    if (pad < 0) pad = id_of(name);
  }
  if (cfg.is_object()) {
    if (cfg.contains("eos_token") && id_of(token_content(cfg.at("eos_token"))) >= 0) eos = id_of(token_content(cfg.at("eos_token")));
    if (cfg.contains("pad_token") && id_of(token_content(cfg.at("pad_token"))) >= 0) pad = id_of(token_content(cfg.at("pad_token")));
    if (cfg.value("add_bos_token", false) && cfg.contains("bos_token")) bos = id_of(token_content(cfg.at("bos_token")));
  }
  tok->set_special_ids(bos, eos, pad);
  if (cfg.is_object() && cfg.contains("chat_template") && cfg.at("chat_template").is_string()) {
    tok->set_chat_template(cfg.at("chat_template").get<std::string>());
  }
  return tok;
}

}  // namespace

std::unique_ptr<Tokenizer> load_gpt2_tokenizer(const std::string& dir) {
  const std::string vocab_path = dir + "/vocab.json";
  const std::string merges_path = dir + "/merges.txt";
  const std::string vocab_text = read_file(vocab_path);
  const std::string merges_text = read_file(merges_path);
  const json v = parse_json(vocab_text, vocab_path);
  std::unordered_map<std::string, int32_t> vocab;
  for (const auto& [tok, id] : v.items()) vocab[tok] = token_id_value(id, vocab_path, str_cat("'", capped(tok, 60), "'"));
  std::vector<std::pair<std::string, std::string>> merges;
  std::istringstream in(merges_text);
  std::string line;
  size_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos) throw InputError(str_cat(merges_path, ":", lineno, ": expected 'a b'"));
    merges.emplace_back(line.substr(0, sp), line.substr(sp + 1));
  }
  std::vector<AddedToken> added;
  const auto eot_it = vocab.find("<|endoftext|>");
  const int32_t eot = eot_it == vocab.end() ? -1 : eot_it->second;
  if (eot >= 0) added.push_back({"<|endoftext|>", eot, true, false, false});
  PreStep byte_level{PreStep::kByteLevel};
  byte_level.regex = std::make_shared<Regex>(kGpt2Pattern, vocab_path);
  auto tok = std::make_unique<BpeTokenizer>(vocab_path, std::move(vocab), merges, added, std::vector<NormStep>{},
                                            std::vector<PreStep>{byte_level}, false, -1, false, false, false, false);
  tok->set_special_ids(-1, eot, -1);
  return tok;
}

}  // namespace shardtune
