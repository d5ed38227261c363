// Token shards as fixed-size training samples: windows of seq_len + 1 tokens.
//
//   pack  (pretraining) the shards' tokens as one stream (documents already
//         end with EOS); sample i is tokens [i * seq_len, i * seq_len + seq_len + 1)
//   sft   whole examples packed greedily, in order, into windows; the rest of
//         a window is padding (pad id, never a target); an example longer than
//         a window is cut to it
//
// A sample's targets are its tokens shifted by one; a target whose loss mask
// is 0 (or that is padding) gets the ignore index -100.
//
// With document masking (sft's default, pack's option) a sample also says
// which document each position belongs to and its position in it, so the
// model lets no document see another and restarts positions at 0 (in pack
// mode the window's first, cut document counts from the window's start);
// the last token of a document then has no target.
//
// Shard files are opened when first read, at most max_open at a time.
// torch-free; not thread-safe (the loader reads from one thread).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "shardtune/data/token_shard.h"

namespace shardtune {

constexpr int32_t kIgnoreIndex = -100;

enum class PackMode { kPack, kSft };
PackMode parse_pack_mode(const std::string& name);  // pack, sft

struct DatasetOptions {
  int64_t seq_len = 1024;
  PackMode mode = PackMode::kPack;
  int max_open = 16;
  bool document_mask = false;
};

// Samples side by side: rows x seq_len, row-major.
struct SampleRows {
  int64_t rows = 0;
  int64_t seq_len = 0;
  std::vector<int32_t> inputs;
  std::vector<int32_t> targets;  // kIgnoreIndex where there is no target
  // With document masking, each position's document in its row (0, 1, ...;
  // -1 for padding) and its position in that document; empty otherwise.
  std::vector<int32_t> documents;
  std::vector<int32_t> positions;
  int64_t target_tokens() const;
  // Rows [first, first + count).
  SampleRows slice(int64_t first, int64_t count) const;
};

class TokenDataset {
 public:
  // Opens each shard once to read its counts and check that all agree on the
  // tokenizer; throws InputError naming the file on any problem.
  TokenDataset(std::vector<std::string> paths, const DatasetOptions& options);

  int64_t num_samples() const { return num_samples_; }
  int64_t num_tokens() const { return total_tokens_; }
  const ShardAttrs& attrs() const { return attrs_; }
  const DatasetOptions& options() const { return options_; }
  int64_t truncated_examples() const { return truncated_; }

  // Appends sample i as a row of `rows` (whose seq_len it sets).
  void read_sample(int64_t i, SampleRows& rows);

 private:
  struct Window {  // sft: a run of whole documents
    int64_t first_doc;  // global document index
    int64_t num_docs;
  };
  const TokenShardReader& reader(size_t shard);
  // Reads tokens and mask of the global token range [begin, end).
  void read_stream(int64_t begin, int64_t end, int32_t* tokens, uint8_t* mask);

  std::vector<std::string> paths_;
  DatasetOptions options_;
  ShardAttrs attrs_;
  std::vector<int64_t> token_start_;  // global offset of each shard's first token (+ total)
  std::vector<int64_t> doc_start_;    // global index of each shard's first document (+ total)
  std::vector<int64_t> doc_offsets_;  // global token offsets of all documents (+ total)
  std::vector<Window> windows_;
  int64_t total_tokens_ = 0;
  int64_t num_samples_ = 0;
  int64_t truncated_ = 0;
  std::list<std::pair<size_t, std::unique_ptr<TokenShardReader>>> open_;  // most recent first
  std::vector<int32_t> tok_buf_;
  std::vector<uint8_t> mask_buf_;
  std::vector<int32_t> doc_buf_;  // each window token's document (-1: padding)
};

}  // namespace shardtune
