#include "shardtune/data/dataset.h"

#include <algorithm>

#include "shardtune/core/error.h"

namespace shardtune {

PackMode parse_pack_mode(const std::string& name) {
  if (name == "pack") return PackMode::kPack;
  if (name == "sft") return PackMode::kSft;
  throw InputError(str_cat("packing '", name, "' is not one of pack, sft"));
}

TokenDataset::TokenDataset(std::vector<std::string> paths, const DatasetOptions& options)
    : paths_(std::move(paths)), options_(options) {
  if (paths_.empty()) throw InputError("no token shards given");
  if (options.seq_len <= 0) throw InputError(str_cat("seq_len ", options.seq_len, " is not positive"));
  token_start_.push_back(0);
  doc_start_.push_back(0);
  doc_offsets_.push_back(0);
  for (size_t s = 0; s < paths_.size(); ++s) {
    TokenShardReader r(paths_[s]);
    if (s == 0) {
      attrs_ = r.attrs();
    } else if (r.attrs().tokenizer != attrs_.tokenizer || r.attrs().vocab_size != attrs_.vocab_size) {
      throw InputError(str_cat(paths_[s], ": made by tokenizer ", r.attrs().tokenizer, " (vocab ",
                               r.attrs().vocab_size, ") but ", paths_[0], " by ", attrs_.tokenizer, " (vocab ",
                               attrs_.vocab_size, ")"));
    }
    const int64_t base = total_tokens_;
    for (size_t d = 1; d < r.doc_offsets().size(); ++d) doc_offsets_.push_back(base + r.doc_offsets()[d]);
    total_tokens_ += r.num_tokens();
    token_start_.push_back(total_tokens_);
    doc_start_.push_back(doc_start_.back() + r.num_docs());
  }
  const int64_t window = options.seq_len + 1;
  if (options.mode == PackMode::kPack) {
    num_samples_ = total_tokens_ > options.seq_len ? (total_tokens_ - 1) / options.seq_len : 0;
  } else {
    if (attrs_.pad_id < 0) throw InputError(str_cat(paths_[0], ": sft packing needs a pad_id (the tokenizer has none)"));
    const int64_t docs = static_cast<int64_t>(doc_offsets_.size()) - 1;
    Window cur{0, 0};
    int64_t used = 0;
    for (int64_t d = 0; d < docs; ++d) {
      int64_t len = doc_offsets_[static_cast<size_t>(d + 1)] - doc_offsets_[static_cast<size_t>(d)];
      if (len == 0) continue;
      if (len > window) {
        ++truncated_;
        len = window;
      }
      if (used + len > window && cur.num_docs > 0) {
        windows_.push_back(cur);
        cur = Window{d, 0};
        used = 0;
      }
      if (cur.num_docs == 0) cur.first_doc = d;
      ++cur.num_docs;
      used += len;
    }
    if (cur.num_docs > 0) windows_.push_back(cur);
    num_samples_ = static_cast<int64_t>(windows_.size());
  }
}

const TokenShardReader& TokenDataset::reader(size_t shard) {
  for (auto it = open_.begin(); it != open_.end(); ++it) {
    if (it->first == shard) {
      open_.splice(open_.begin(), open_, it);
      return *open_.front().second;
    }
  }
  if (static_cast<int>(open_.size()) >= std::max(1, options_.max_open)) open_.pop_back();
  open_.emplace_front(shard, std::make_unique<TokenShardReader>(paths_[shard]));
  return *open_.front().second;
}

void TokenDataset::read_stream(int64_t begin, int64_t end, int32_t* tokens, uint8_t* mask) {
  // The first shard whose range holds `begin`.
  size_t s = static_cast<size_t>(std::upper_bound(token_start_.begin(), token_start_.end(), begin) -
                                 token_start_.begin()) - 1;
  while (begin < end) {
    const int64_t shard_end = token_start_[s + 1];
    const int64_t n = std::min(end, shard_end) - begin;
    if (n > 0) {
      const TokenShardReader& r = reader(s);
      r.read_tokens(begin - token_start_[s], n, tokens);
      r.read_mask(begin - token_start_[s], n, mask);
      tokens += n;
      mask += n;
      begin += n;
    }
    ++s;
  }
}

int64_t SampleRows::target_tokens() const {
  return static_cast<int64_t>(std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t != kIgnoreIndex; }));
}

SampleRows SampleRows::slice(int64_t first, int64_t count) const {
  ST_CHECK(first >= 0 && count >= 0 && first + count <= rows, "rows [", first, ", ", first + count, ") of ", rows);
  SampleRows out;
  out.rows = count;
  out.seq_len = seq_len;
  auto part = [&](const std::vector<int32_t>& v, std::vector<int32_t>& to) {
    if (v.empty()) return;
    const auto b = v.begin() + static_cast<long>(first * seq_len);
    to.assign(b, b + static_cast<long>(count * seq_len));
  };
  part(inputs, out.inputs);
  part(targets, out.targets);
  part(documents, out.documents);
  part(positions, out.positions);
  return out;
}

void TokenDataset::read_sample(int64_t i, SampleRows& out) {
  ST_CHECK(i >= 0 && i < num_samples_, "sample ", i, " is outside [0, ", num_samples_, ")");
  const int64_t seq = options_.seq_len;
  const int64_t window = seq + 1;
  tok_buf_.assign(static_cast<size_t>(window), static_cast<int32_t>(std::max<int64_t>(attrs_.pad_id, 0)));
  mask_buf_.assign(static_cast<size_t>(window), 0);
  doc_buf_.assign(static_cast<size_t>(window), -1);
  if (options_.mode == PackMode::kPack) {
    const int64_t begin = i * seq;
    read_stream(begin, begin + window, tok_buf_.data(), mask_buf_.data());
    if (options_.document_mask) {  // the documents that overlap the window, numbered from 0
      auto d = std::upper_bound(doc_offsets_.begin(), doc_offsets_.end(), begin) - 1;
      for (int32_t k = 0; *d < begin + window; ++d, ++k) {
        const int64_t from = std::max(*d, begin) - begin, to = std::min(*(d + 1), begin + window) - begin;
        std::fill(doc_buf_.begin() + from, doc_buf_.begin() + to, k);
      }
    }
  } else {
    const Window& w = windows_[static_cast<size_t>(i)];
    int64_t pos = 0;
    for (int64_t d = w.first_doc; d < w.first_doc + w.num_docs && pos < window; ++d) {
      const int64_t b = doc_offsets_[static_cast<size_t>(d)];
      const int64_t len = std::min(doc_offsets_[static_cast<size_t>(d + 1)] - b, window - pos);
      read_stream(b, b + len, tok_buf_.data() + pos, mask_buf_.data() + pos);
      std::fill(doc_buf_.begin() + pos, doc_buf_.begin() + pos + len, static_cast<int32_t>(d - w.first_doc));
      pos += len;
    }
  }
  out.seq_len = seq;
  ++out.rows;
  int32_t start = 0;  // where the current document began in the window
  for (int64_t t = 0; t < seq; ++t) {
    const size_t at = static_cast<size_t>(t);
    out.inputs.push_back(tok_buf_[at]);
    const bool crosses = options_.document_mask && doc_buf_[at + 1] != doc_buf_[at];
    out.targets.push_back(mask_buf_[at + 1] && !crosses ? tok_buf_[at + 1] : kIgnoreIndex);
    if (options_.document_mask) {
      if (t > 0 && doc_buf_[at] != doc_buf_[at - 1]) start = static_cast<int32_t>(t);
      out.documents.push_back(doc_buf_[at]);
      out.positions.push_back(doc_buf_[at] < 0 ? 0 : static_cast<int32_t>(t) - start);
    }
  }
}

}  // namespace shardtune
