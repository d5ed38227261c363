// Chat templates: a conversation to token ids plus a loss mask.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "shardtune/tokenize/tokenizer.h"

namespace shardtune {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

enum class ChatTemplate {
  kChatMl,  // <|im_start|>role\ncontent<|im_end|>\n (Qwen, ChatML)
  kLlama3,  // <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
  kPlain,   // Role: content\n, for tokenizers without chat tokens
};

ChatTemplate parse_chat_template(const std::string& name);  // chatml, llama3, plain
const char* to_string(ChatTemplate t);

// A template and the system prompt it adds when a conversation has none
// (SmolLM2's ChatML template does; most add none).
struct ChatFormat {
  ChatTemplate kind = ChatTemplate::kChatMl;
  std::string default_system;
};

// The built-in template a tokenizer's Jinja chat template renders, with its
// default system prompt; nullopt when it is none shardtune renders.
std::optional<ChatFormat> recognize_chat_template(const std::string& jinja);

// The chat format to use: `name` (chatml, llama3, plain) when given; else
// the tokenizer's own template when it carries one (InputError naming the
// template when it is not one shardtune renders); else chatml.
ChatFormat resolve_chat_format(const Tokenizer& tok, const std::string& name);

// messages with format's default system prompt first, when they have no
// system message of their own.
std::vector<ChatMessage> with_default_system(const ChatFormat& format, std::vector<ChatMessage> messages);

struct Tokenized {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;  // 1 = a training target
};

// Renders messages. The template's own markers are special tokens (they must
// be in the vocabulary); message content is encoded as plain text, so it can
// never produce a special token. The assistant's content and its end marker
// are targets (mask 1) unless train_on_all, which makes every token a target.
// BOS (if the tokenizer has one) starts the sequence, masked 0.
Tokenized render_chat(const Tokenizer& tok, ChatTemplate tmpl, const std::vector<ChatMessage>& messages,
                      bool train_on_all = false);

// The prompt for generation: the messages, then the assistant's header.
std::vector<int32_t> render_generation_prompt(const Tokenizer& tok, ChatTemplate tmpl,
                                              const std::vector<ChatMessage>& messages);

// The id that ends an assistant turn under tmpl (<|im_end|>, <|eot_id|>, or EOS).
int32_t end_of_turn_id(const Tokenizer& tok, ChatTemplate tmpl);

}  // namespace shardtune
