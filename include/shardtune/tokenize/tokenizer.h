// Tokenizers: text to token ids and back. torch-free.
//
//   byte                 256 byte tokens + a few special tokens; needs no file
//   hf:PATH              a Hugging Face tokenizer.json with a BPE model: byte-level
//                        (GPT-2, Llama-3, Qwen2 style: ByteLevel and/or Split regex
//                        pre-tokenizers) or Metaspace with byte fallback (Llama-2,
//                        Mistral style)
//   gpt2:DIR             GPT-2's vocab.json + merges.txt
//   sp:PATH              a SentencePiece .model (through libsentencepiece)
//   gguf:PATH            the tokenizer in a GGUF file's metadata (byte-level BPE
//                        with llama.cpp's pre-tokenizer, or SentencePiece-style)
//
// encode() tokenizes the text alone: it adds no BOS/EOS (callers do, with
// bos_id()/eos_id()). With parse_special, special tokens written in the text
// ("<|endoftext|>") become their ids; without it they are ordinary text.
// Byte-level tokenizers round-trip any valid UTF-8: decode(encode(s)) == s.
// Invalid UTF-8 input throws InputError naming the byte offset.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shardtune {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::vector<int32_t> encode(std::string_view text, bool parse_special = false) const = 0;
  // skip_special drops special tokens from the text.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;

  // One past the largest id.
  virtual int64_t vocab_size() const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::string id_to_token(int32_t id) const = 0;
  virtual bool is_special(int32_t id) const = 0;

  // -1 where the tokenizer has none.
  int32_t bos_id() const { return bos_; }
  int32_t eos_id() const { return eos_; }
  int32_t pad_id() const { return pad_; }

  // What the token shards record, so that data is never trained with a model
  // whose tokenizer did not make it: "tok2:" and a hash of the vocabulary
  // (every id's text and whether it is special), the rules that split text
  // into it (BPE merges in rank order; SentencePiece scores and piece
  // types), BOS and EOS. The same tokenizer read from tokenizer.json, a GGUF
  // file or tokenizer.model (for the SentencePiece engine) has the same
  // fingerprint; where it came from does not count.
  std::string fingerprint() const;
  // A readable name for messages: "byte", the model folder's name, or the
  // file's ("SmolLM2-135M-Instruct.Q4_1.gguf").
  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }

  // The chat template the tokenizer's files carry (a Jinja text, from
  // tokenizer_config.json or GGUF metadata); empty when none.
  const std::string& chat_template() const { return chat_template_; }

 protected:
  int32_t bos_ = -1, eos_ = -1, pad_ = -1;
  // What splits text into the vocabulary, for the fingerprint (set by each engine).
  std::string rules_hash_;
  std::string name_;
  std::string chat_template_;
};

// Loads a tokenizer from a spec (see above). A bare path is taken by its
// name: *.json -> hf, *.model -> sp, *.gguf -> gguf, a folder with
// tokenizer.json, vocab.json or tokenizer.model.
// Throws InputError naming the file and the problem.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec);

std::unique_ptr<Tokenizer> make_byte_tokenizer();

// The tokenizer a model carries: an HF folder's or a checkpoint's tokenizer
// files, a GGUF file's metadata; null when it has none.
std::unique_ptr<Tokenizer> source_tokenizer(const std::string& model);

// Refuses a tokenizer given (--tokenizer spec) in place of the one model
// carries when the two differ (their ids would mean other tokens), naming
// both; nothing when the model carries none.
void check_given_tokenizer(const Tokenizer& given, const std::string& spec, const std::string& model);

// Throws InputError if text is not valid UTF-8, naming the byte offset.
void check_utf8(std::string_view text, const std::string& what);

// 64-bit FNV-1a of bytes, as hex.
std::string content_hash(std::string_view bytes);

// Appends a length-prefixed field to a hash input, so that field boundaries
// count ("ab" + "c" differs from "a" + "bc").
void append_field(std::string& out, std::string_view field);

}  // namespace shardtune
