// The torch-free GGUF core: scalar conversions, writer/reader round trip of
// every metadata type, quantize/dequantize, the rotary reorder, names, and
// bad files refused with the path and the reason.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "shardtune/core/error.h"
#include "shardtune/formats/gguf.h"
#include "shardtune/formats/gguf_llama.h"

using namespace shardtune;
namespace fs = std::filesystem;

namespace {

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("shardtune_gguf_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string error_of(const std::string& path) {
  try {
    GgufFile f(path);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Gguf, HalfConversionsRoundTripEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(f32_to_f16(f), h) << h;
    EXPECT_EQ(f32_to_bf16(bf16_to_f32(static_cast<uint16_t>(h))), h) << h;
  }
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);          // overflow to inf
  EXPECT_EQ(f32_to_f16(5.9604645e-8f), 0x0001);  // the smallest subnormal
  EXPECT_EQ(f32_to_f16(2.9802322e-8f), 0x0000);  // half of it: ties to even
  EXPECT_EQ(f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);  // tie rounds to even (down)
  EXPECT_EQ(f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);  // tie rounds to even (up)
}

TEST(Gguf, WriterReaderRoundTrip) {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add("u8", {GgufValueType::kUint8, GgufValueType::kUint8, 200});
  w.add("i8", {GgufValueType::kInt8, GgufValueType::kUint8, -100});
  w.add("u16", {GgufValueType::kUint16, GgufValueType::kUint8, 60000});
  w.add("i16", {GgufValueType::kInt16, GgufValueType::kUint8, -30000});
  w.add("i32", {GgufValueType::kInt32, GgufValueType::kUint8, -7});
  w.add("u64", {GgufValueType::kUint64, GgufValueType::kUint8, uint64_t{1} << 40});
  w.add("i64", {GgufValueType::kInt64, GgufValueType::kUint8, -(int64_t{1} << 40)});
  w.add("f64", {GgufValueType::kFloat64, GgufValueType::kUint8, 0.1});
  w.add_float32("f32", 0.5f);
  w.add_bool("b", true);
  w.add("strings", {GgufValueType::kArray, GgufValueType::kString, {"a", "b c", ""}});
  w.add("ints", {GgufValueType::kArray, GgufValueType::kInt32, {1, -2, 3}});
  std::vector<float> x(64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i));
  std::vector<uint8_t> q(static_cast<size_t>(ggml_row_bytes(GgmlType::kQ8_0, 64)));
  quantize(GgmlType::kQ8_0, x.data(), 64, q.data());
  w.add_tensor("q", {32, 2}, GgmlType::kQ8_0, q);
  std::vector<uint8_t> raw(12);
  quantize(GgmlType::kF32, x.data(), 3, raw.data());
  w.add_tensor("v", {3}, GgmlType::kF32, raw);
  const std::string path = temp_path("rt.gguf");
  w.write(path);

  const GgufFile f(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("u8"), 200);
  EXPECT_EQ(f.get_int("i8"), -100);
  EXPECT_EQ(f.get_int("u16"), 60000);
  EXPECT_EQ(f.get_int("i16"), -30000);
  EXPECT_EQ(f.get_int("i32"), -7);
  EXPECT_EQ(f.get_int("u64"), int64_t{1} << 40);
  EXPECT_EQ(f.get_int("i64"), -(int64_t{1} << 40));
  EXPECT_DOUBLE_EQ(f.get_float("f64", 0), 0.1);
  EXPECT_EQ(f.get_float("f32", 0), 0.5);
  EXPECT_TRUE(f.get_bool("b", false));
  EXPECT_EQ(f.find("strings")->value, nlohmann::json({"a", "b c", ""}));
  EXPECT_EQ(f.find("ints")->element_type, GgufValueType::kInt32);
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].shape(), (std::vector<int64_t>{2, 32}));
  const std::vector<float> y = f.dequantized(f.tensors()[0]);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1.0 / 127);
  EXPECT_EQ(f.dequantized(f.tensors()[1]), std::vector<float>(x.begin(), x.begin() + 3));
  EXPECT_THROW(f.get_string("u8"), InputError);
  EXPECT_THROW(f.get_int("missing"), InputError);
  EXPECT_EQ(f.get_int("missing", 5), 5);
}

TEST(Gguf, BadFilesAreRefusedWithPathAndReason) {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  std::vector<uint8_t> raw(4 * 64, 0);
  w.add_tensor("t", {64}, GgmlType::kF32, raw);
  const std::string good = temp_path("good.gguf");
  w.write(good);
  const std::string bytes = read_all(good);
  const std::string bad = temp_path("bad.gguf");

  write_all(bad, bytes.substr(0, bytes.size() - 10));
  EXPECT_NE(error_of(bad).find(bad + ": tensor 't'"), std::string::npos) << error_of(bad);
  EXPECT_NE(error_of(bad).find("runs past the end of the file"), std::string::npos);
  write_all(bad, bytes.substr(0, 30));
  EXPECT_NE(error_of(bad).find("truncated"), std::string::npos) << error_of(bad);
  write_all(bad, "GGML" + bytes.substr(4));
  EXPECT_NE(error_of(bad).find("not a GGUF file (magic 'GGML'"), std::string::npos) << error_of(bad);
  std::string v = bytes;
  v[4] = 1;
  write_all(bad, v);
  EXPECT_NE(error_of(bad).find("GGUF version 1 is not supported"), std::string::npos) << error_of(bad);
  // A string length far past the file.
  std::string s = bytes;
  s[24 + 7] = 0x7f;  // high byte of the first key's length
  write_all(bad, s);
  EXPECT_FALSE(error_of(bad).empty());
  EXPECT_NE(error_of(temp_path("absent.gguf")).find("cannot open"), std::string::npos);
}

TEST(Gguf, EveryTruncationIsAnErrorNeverACrash) {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add("tokens", {GgufValueType::kArray, GgufValueType::kString, {"x", "yy", "zzz"}});
  std::vector<uint8_t> raw(static_cast<size_t>(ggml_row_bytes(GgmlType::kQ8_0, 64)), 0);
  w.add_tensor("t", {32, 2}, GgmlType::kQ8_0, raw);
  const std::string good = temp_path("cut.gguf");
  w.write(good);
  const std::string bytes = read_all(good);
  const std::string bad = temp_path("cut_bad.gguf");
  // The tensor's 68 bytes end 28 bytes of alignment padding before the file does.
  for (size_t n = 0; n + 28 < bytes.size(); ++n) {
    write_all(bad, bytes.substr(0, n));
    EXPECT_FALSE(error_of(bad).empty()) << "cut at " << n;
  }
}

TEST(Gguf, RotaryReorderIsItsOwnInverseAndMatchesTheConverter) {
  // 2 heads of size 4, 3 columns: row r of head h in HF order is
  // (half, i); llama.cpp stores it at 2 i + half.
  std::vector<float> m(8 * 3);
  for (size_t i = 0; i < m.size(); ++i) m[i] = static_cast<float>(i);
  std::vector<float> p = m;
  gguf_permute_rows(p.data(), 8, 3, 2);
  // head 0 rows in HF order 0 1 2 3 -> GGUF order 0 2 1 3
  EXPECT_EQ(std::vector<float>(p.begin(), p.begin() + 12),
            (std::vector<float>{0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11}));
  gguf_unpermute_rows(p.data(), 8, 3, 2);
  EXPECT_EQ(p, m);
}

TEST(Gguf, TensorNames) {
  const Architecture& llama = *find_gguf_architecture("llama");
  EXPECT_EQ(gguf_to_hf_name(llama, "blk.12.attn_q.weight"), "model.layers.12.self_attn.q_proj.weight");
  EXPECT_EQ(gguf_to_hf_name(llama, "token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(gguf_to_hf_name(llama, "output.weight"), "lm_head.weight");
  EXPECT_EQ(gguf_to_hf_name(llama, "blk.x.attn_q.weight"), "");
  EXPECT_EQ(gguf_to_hf_name(llama, "blk.0.ffn_gate_exps.weight"), "");
  EXPECT_EQ(gguf_to_hf_name(llama, "blk.0.post_ffw_norm.weight"), "");  // not a llama tensor
  EXPECT_EQ(hf_to_gguf_name(llama, "model.layers.3.mlp.down_proj.weight"), "blk.3.ffn_down.weight");
  EXPECT_TRUE(gguf_rope_permuted(llama, "model.layers.0.self_attn.k_proj.weight"));
  EXPECT_FALSE(gguf_rope_permuted(llama, "model.layers.0.self_attn.v_proj.weight"));
  EXPECT_FALSE(gguf_rope_permuted(*find_gguf_architecture("qwen2"), "model.layers.0.self_attn.q_proj.weight"));
  // The other families' norm placements and fusions.
  const Architecture& gemma2 = *find_gguf_architecture("gemma2");
  EXPECT_EQ(gguf_to_hf_name(gemma2, "blk.1.ffn_norm.weight"), "model.layers.1.pre_feedforward_layernorm.weight");
  EXPECT_EQ(gguf_to_hf_name(gemma2, "blk.1.post_attention_norm.weight"), "model.layers.1.post_attention_layernorm.weight");
  EXPECT_TRUE(gguf_norm_offset(gemma2, "model.layers.1.post_feedforward_layernorm.weight"));
  EXPECT_FALSE(gguf_norm_offset(llama, "model.norm.weight"));
  const Architecture& olmo2 = *find_gguf_architecture("olmo2");
  EXPECT_EQ(gguf_to_hf_name(olmo2, "blk.0.attn_norm.weight"), "");  // olmo2 has no norm before attention
  EXPECT_EQ(hf_to_gguf_name(olmo2, "model.layers.0.self_attn.k_norm.weight"), "blk.0.attn_k_norm.weight");
  EXPECT_EQ(hf_to_gguf_name(*find_architecture("phi3"), "model.layers.2.mlp.gate_up_proj.weight"), "blk.2.ffn_up.weight");
  EXPECT_EQ(find_gguf_architecture("llama")->model_type, "llama");  // not mistral
  EXPECT_EQ(find_gguf_architecture("falcon"), nullptr);
}

TEST(Gguf, PreTokenizerNames) {
  const auto name = [](const char* j) { return gguf_pre_tokenizer_name(nlohmann::json::parse(j), "t.json"); };
  EXPECT_EQ(name(R"({"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}})"),
            "gpt-2");
  EXPECT_EQ(name(R"({"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},
               {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}]}})"),
            "smollm");
  EXPECT_THROW(name(R"({"pre_tokenizer":{"type":"Whitespace"}})"), InputError);
}
