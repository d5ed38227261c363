// The decoder families of architecture.h between GGUF and Hugging Face
// layouts: the config, the tensor names, the rotary row permutation
// (gguf_arch.cpp), and the tokenizer (tokenizer.json + tokenizer_config.json
// <-> tokenizer.ggml.*, gguf_llama.cpp). torch-free; the torch side is
// shardtune/model/gguf_model.h.
//
// What is read is exactly what is implemented: an architecture, rope
// scaling, pre-tokenizer, tokenizer model or tensor shardtune cannot
// reproduce is refused by name (InputError naming the file and the key).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "shardtune/formats/gguf.h"
#include "shardtune/model/architecture.h"

namespace shardtune {

// The Hugging Face config.json that describes the GGUF file's model.
nlohmann::json gguf_hf_config(const GgufFile& file);

// A GGUF tensor's Hugging Face name under arch ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight"); empty for a name this mapping
// does not know.
std::string gguf_to_hf_name(const Architecture& arch, const std::string& gguf_name);
// The reverse; empty for an unknown name.
std::string hf_to_gguf_name(const Architecture& arch, const std::string& hf_name);

// llama.cpp's converter reorders the rows of llama's q_proj and k_proj
// (weights and biases) for its rotary kernel: within each head, rows
// (0, 1, ..., d/2-1 | d/2, ..., d-1) become interleaved pairs. Whether
// hf_name under arch is reordered, and the reorders both ways over a
// row-major [rows, cols] matrix (cols 1 for a bias).
bool gguf_rope_permuted(const Architecture& arch, const std::string& hf_name);
void gguf_unpermute_rows(float* data, int64_t rows, int64_t cols, int64_t heads);  // GGUF -> HF
void gguf_permute_rows(float* data, int64_t rows, int64_t cols, int64_t heads);    // HF -> GGUF

// Whether hf_name is a norm scale GGUF stores as 1 + w (gemma's).
bool gguf_norm_offset(const Architecture& arch, const std::string& hf_name);

// rope_freqs.weight for llama3 rope scaling, as llama.cpp's converter computes it.
std::vector<double> llama3_rope_factors(int64_t dim, double theta, double factor, double low_freq_factor,
                                        double high_freq_factor, double original_max_positions);

// tokenizer.json (Hugging Face tokenizers) and tokenizer_config.json (with
// the chat template and PreTrainedTokenizerFast, which keeps the
// pre-tokenizer as written) made from the file's tokenizer.ggml.* metadata.
// gpt2 models get llama.cpp's pre-tokenizer for tokenizer.ggml.pre (gpt-2,
// olmo, llama-bpe, dbrx, qwen2, gpt-4o, smollm, starcoder, default); llama
// (SentencePiece) models
// a byte-fallback BPE with merges ordered by the vocabulary's scores.
nlohmann::json gguf_tokenizer_json(const GgufFile& file);
nlohmann::json gguf_tokenizer_config(const GgufFile& file);

// tokenizer.ggml.pre for a tokenizer.json's pre-tokenizer, or throws
// InputError naming `where` when it matches none llama.cpp knows.
std::string gguf_pre_tokenizer_name(const nlohmann::json& tokenizer_json, const std::string& where);

// Adds tokenizer.ggml.* (and tokenizer.chat_template) metadata for a BPE
// tokenizer.json: byte-level ones as llama.cpp's gpt2 model (merges and the
// pre-tokenizer's name), byte-fallback ones over U+2581 words (Llama-2,
// Phi-3, Gemma) as its llama model (scores that keep the merge order, token
// types, add_space_prefix); bos/eos/pad and add_bos_token from
// tokenizer_config.json (may be null) and the model's config.json.
void add_gguf_tokenizer(GgufWriter& w, const nlohmann::json& tokenizer_json, const nlohmann::json& tokenizer_config,
                        const nlohmann::json& hf_config, const std::string& where);

}  // namespace shardtune
