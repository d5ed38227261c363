// Chat templates: a conversation to token ids plus a loss mask.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "shardtune/tokenize/tokenizer.h"

namespace shardtune {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
  bool train = true;  // an assistant turn with OpenAI's "weight": 0 is context, not a target
};

// One message of OpenAI's chat fine-tuning format, checked: `role` system,
// user or assistant; `content` a string or a list of {"type": "text",
// "text": ...} parts (joined); `weight` 0 or 1, on assistant messages only;
// no other key but `name`. Throws InputError starting with `where`.
ChatMessage parse_chat_message(const nlohmann::json& message, const std::string& where);

enum class ChatTemplate {
  kChatMl,  // <|im_start|>role\ncontent<|im_end|>\n (Qwen2, SmolLM2, ChatML)
  kQwen3,   // ChatML; the last assistant turn after the last user turn, and the
            // generation prompt, open with an empty <think>\n\n</think>\n\n
            // (Qwen3's template without reasoning: its non-thinking mode)
  kLlama3,  // <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>, content trimmed
  kGemma,   // <start_of_turn>user|model\ncontent<end_of_turn>\n, content trimmed, the
            // system text first in the first user turn, roles alternating
  kPhi3,    // <|role|>\ncontent<|end|>\n, EOS after a whole conversation (Phi-3, Phi-3.5)
  kPhi4,    // <|role|>content<|end|>, EOS after a whole conversation (Phi-4-mini)
  kPlain,   // Role: content\n, for tokenizers without chat tokens
};

// chatml, qwen3, llama3, gemma, phi3, phi4, plain
ChatTemplate parse_chat_template(const std::string& name);
const char* to_string(ChatTemplate t);

// A template and what its Jinja adds to the messages: a default system
// prompt (SmolLM2's ChatML), Llama 3.1+'s dated system preamble, whether a
// system message is allowed (Gemma 2's template refuses one).
struct ChatFormat {
  ChatTemplate kind = ChatTemplate::kChatMl;
  std::string default_system;
  std::string system_preamble;  // always a system turn, this text before the system message's
  bool system_allowed = true;
};

// The built-in template a tokenizer's Jinja chat template renders, with what
// it adds; nullopt when it is none shardtune renders. Throws InputError for
// a template of a known family that shardtune does not render (SmolLM3's,
// which writes today's date and a reasoning mode into its system turn).
std::optional<ChatFormat> recognize_chat_template(const std::string& jinja);

// What token shards record of the format their chat examples were rendered
// in: the template's name, and what its Jinja adds ("chatml", "chatml
// +system:<hash>" for SmolLM2's default system prompt, "llama3+preamble:<hash>").
std::string chat_format_id(const ChatFormat& format);

// The chat format to use: `name` (see parse_chat_template) when given; else
// the tokenizer's own template when it carries one (InputError naming the
// template when it is not one shardtune renders); else chatml.
ChatFormat resolve_chat_format(const Tokenizer& tok, const std::string& name);

// The messages as format's template presents them: its default system prompt
// or dated preamble added, content trimmed where the template trims it,
// Gemma's system text put first in the first user turn. Throws InputError
// for what the template refuses (Gemma: roles that do not alternate user,
// assistant, ...; a system message where it has none).
std::vector<ChatMessage> template_messages(const ChatFormat& format, std::vector<ChatMessage> messages);

struct Tokenized {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;  // 1 = a training target
};

// Renders messages (as template_messages gives them). The template's own
// markers are special tokens (they must be in the vocabulary); message
// content is encoded as plain text, so it can never produce a special token.
// The assistant's content and its end marker are targets (mask 1) unless
// train_on_all, which makes every token a target. BOS (if the tokenizer adds
// one) starts the sequence, masked 0.
Tokenized render_chat(const Tokenizer& tok, ChatTemplate tmpl, const std::vector<ChatMessage>& messages,
                      bool train_on_all = false);

// The prompt for generation: the messages, then the assistant's header.
std::vector<int32_t> render_generation_prompt(const Tokenizer& tok, ChatTemplate tmpl,
                                              const std::vector<ChatMessage>& messages);

// The id that ends an assistant turn under tmpl (<|im_end|>, <|eot_id|>,
// <end_of_turn>, <|end|>, or EOS for plain).
int32_t end_of_turn_id(const Tokenizer& tok, ChatTemplate tmpl);

}  // namespace shardtune
