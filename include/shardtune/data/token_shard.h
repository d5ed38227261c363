// HDF5 token shards, format version 1 (see the design brief):
//   attrs  format = "shardtune.tokens", version = 1, vocab_size, bos_id,
//          eos_id, pad_id, tokenizer
//   /tokens       1-D uint16 (vocab <= 65536) or uint32: all documents, concatenated
//   /doc_offsets  1-D int64, docs + 1 entries: document d is tokens[off[d], off[d+1])
//   /loss_mask    1-D uint8, as long as /tokens, optional (absent = all 1)
//
// torch-free. A reader or writer is used by one thread; separate readers may
// run on separate threads (the train and eval loaders) because the HDF5 build
// is thread-safe (Debian's is; CMake checks H5_HAVE_THREADSAFE).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace shardtune {

struct ShardAttrs {
  int64_t vocab_size = 0;
  int64_t bos_id = -1;
  int64_t eos_id = -1;
  int64_t pad_id = -1;
  std::string tokenizer;       // Tokenizer::fingerprint() of the tokenizer that made it
  std::string tokenizer_name;  // its readable name (Tokenizer::name()); "" in older shards
  std::string chat_format;     // the chat format chat examples were rendered in (chat_format_id); "" for none
};

// Sets the chat_format attribute of a finished shard (prep knows whether any
// example was a chat only once all are read).
void set_shard_chat_format(const std::string& path, const std::string& chat_format);

// Writes one shard. Everything goes to a temporary file beside path (its own,
// created exclusively); finish() renames it to path, so a reader never sees a
// partial shard. Dropping an unfinished writer deletes the temporary file.
class TokenShardWriter {
 public:
  TokenShardWriter(const std::string& path, const ShardAttrs& attrs, bool with_mask);
  ~TokenShardWriter();
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  // Appends one document; mask may be null (all targets) when the shard has
  // no mask. Throws InputError for an id outside the vocabulary.
  void add(const int32_t* ids, const uint8_t* mask, size_t n);
  int64_t tokens() const { return tokens_; }
  int64_t docs() const { return static_cast<int64_t>(offsets_written_ + pending_offsets_.size()) - 1; }
  // Closes the shard and renames it to path; with place false it stays under
  // its temporary name, for the caller to move. Returns where it is.
  std::string finish(bool place = true);

 private:
  void flush();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
  std::string tmp_;
  ShardAttrs attrs_;
  bool with_mask_;
  bool finished_ = false;
  int64_t tokens_ = 0;
  size_t offsets_written_ = 0;
  std::vector<uint32_t> pending_tokens_;
  std::vector<uint8_t> pending_mask_;
  std::vector<int64_t> pending_offsets_;
};

// Reads and validates a shard. The constructor checks the attributes, the
// datasets' presence, ranks, types and lengths, and that doc_offsets start at
// 0, never decrease and end at the token count; token ids are checked against
// vocab_size as they are read (validate_all() reads everything). Any problem
// throws InputError naming the path and what is wrong.
class TokenShardReader {
 public:
  explicit TokenShardReader(const std::string& path);
  ~TokenShardReader();
  TokenShardReader(const TokenShardReader&) = delete;
  TokenShardReader& operator=(const TokenShardReader&) = delete;

  const std::string& path() const { return path_; }
  const ShardAttrs& attrs() const { return attrs_; }
  int64_t num_tokens() const { return num_tokens_; }
  int64_t num_docs() const { return static_cast<int64_t>(doc_offsets_.size()) - 1; }
  bool has_mask() const { return has_mask_; }
  int token_bits() const { return token_bits_; }  // 16 or 32
  const std::vector<int64_t>& doc_offsets() const { return doc_offsets_; }

  void read_tokens(int64_t offset, int64_t count, int32_t* out) const;
  // 1 everywhere when the shard has no mask.
  void read_mask(int64_t offset, int64_t count, uint8_t* out) const;
  // Reads every token (checking ids) and returns the number of masked-in tokens.
  int64_t validate_all() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
  std::string tmp_;
  ShardAttrs attrs_;
  int64_t num_tokens_ = 0;
  bool has_mask_ = false;
  int token_bits_ = 32;
  std::vector<int64_t> doc_offsets_;
};

// The shard files <prefix>-<split>-NNNNN.h5 that exist, in order.
std::vector<std::string> find_shards(const std::string& prefix, const std::string& split);

}  // namespace shardtune
