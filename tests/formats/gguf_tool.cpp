// Helper for tests/formats/gguf_parity.py: shardtune's side of the GGUF
// checks against the gguf package (llama.cpp's reader and quantizer), Hugging
// Face tokenizers and transformers.
//
//   gguf_tool dequant FILE.gguf OUT.safetensors        every tensor as float32 (torch order)
//   gguf_tool quantize TYPE IN.safetensors OUT.bin     tensor "x" encoded as f32|f16|bf16|q8_0
//   gguf_tool tokenize SPEC TEXTS.json OUT.json        ids of each text (parse_special off)
//   gguf_tool chat SPEC MESSAGES.json OUT.json         ids of a chat rendered with the tokenizer's template
//                                                      (the prompt for the assistant's reply)
//   gguf_tool chat-train SPEC MESSAGES.json OUT.json   {"ids", "mask"} of a whole chat, as prep renders it
//   gguf_tool write-tokenizer DIR OUT.gguf             a GGUF holding only DIR's tokenizer (tokenizer.json
//                                                      and tokenizer_config.json), as convert writes it
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "shardtune/core/error.h"
#include "shardtune/formats/gguf.h"
#include "shardtune/formats/gguf_llama.h"
#include "shardtune/model/gguf_model.h"
#include "shardtune/model/safetensors.h"
#include "shardtune/tokenize/chat.h"
#include "shardtune/tokenize/tokenizer.h"

using namespace shardtune;

namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

void write_json(const std::string& path, const nlohmann::json& j) { std::ofstream(path) << j.dump() << "\n"; }

int run(const std::vector<std::string>& a) {
  if (a.size() == 3 && a[0] == "dequant") {
    const GgufFile f(a[1]);
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& t : f.tensors()) {
      std::vector<float> v = f.dequantized(t);
      out.emplace_back(t.name, torch::from_blob(v.data(), t.shape(), torch::kFloat32).clone());
    }
    save_safetensors(a[2], out);
    return 0;
  }
  if (a.size() == 4 && a[0] == "quantize") {
    const GgmlType type = parse_gguf_type(a[1]);
    const SafetensorsFile in(a[2]);
    torch::Tensor x = in.tensor("x").to(torch::kFloat32).contiguous();
    std::vector<uint8_t> bytes(static_cast<size_t>(ggml_row_bytes(type, x.numel())));
    quantize(type, x.data_ptr<float>(), x.numel(), bytes.data());
    std::ofstream(a[3], std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                static_cast<std::streamsize>(bytes.size()));
    return 0;
  }
  if (a.size() == 2 && a[0] == "fingerprint") {
    std::printf("%s\n", load_tokenizer(a[1])->fingerprint().c_str());
    return 0;
  }
  if (a.size() == 4 && a[0] == "tokenize") {
    auto tok = load_tokenizer(a[1]);
    nlohmann::json out = nlohmann::json::array();
    for (const auto& text : read_json(a[2])) out.push_back(tok->encode(text.get<std::string>()));
    write_json(a[3], out);
    return 0;
  }
  if (a.size() == 4 && a[0] == "chat") {
    auto tok = load_tokenizer(a[1]);
    const ChatFormat format = resolve_chat_format(*tok, "");
    std::vector<ChatMessage> msgs;
    for (const auto& m : read_json(a[2])) msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    write_json(a[3], render_generation_prompt(*tok, format.kind, template_messages(format, msgs)));
    return 0;
  }
  if (a.size() == 4 && a[0] == "chat-train") {
    auto tok = load_tokenizer(a[1]);
    const ChatFormat format = resolve_chat_format(*tok, "");
    std::vector<ChatMessage> msgs;
    for (const auto& m : read_json(a[2])) msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    const Tokenized t = render_chat(*tok, format.kind, template_messages(format, msgs));
    write_json(a[3], {{"ids", t.ids}, {"mask", t.mask}});
    return 0;
  }
  if (a.size() == 3 && a[0] == "write-tokenizer") {
    const nlohmann::json cfg = read_json(a[1] + "/tokenizer_config.json");
    GgufWriter w;
    w.add_string("general.architecture", "llama");
    add_gguf_tokenizer(w, read_json(a[1] + "/tokenizer.json"), cfg, nlohmann::json::object(), a[1]);
    w.write(a[2]);
    return 0;
  }
  std::fprintf(stderr, "usage: gguf_tool dequant|quantize|tokenize|chat|chat-train|write-tokenizer ...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gguf_tool: %s\n", e.what());
    return 2;
  }
}
