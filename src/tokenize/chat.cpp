#include "shardtune/tokenize/chat.h"

#include "shardtune/core/error.h"

namespace shardtune {
namespace {

int32_t special(const Tokenizer& tok, const char* name, ChatTemplate tmpl) {
  const auto id = tok.token_to_id(name);
  if (!id) {
    throw InputError(str_cat("chat template ", to_string(tmpl), " needs the token ", name,
                             ", which this tokenizer does not have (try chat_template: plain)"));
  }
  return *id;
}

void append(Tokenized& out, const std::vector<int32_t>& ids, uint8_t mask) {
  out.ids.insert(out.ids.end(), ids.begin(), ids.end());
  out.mask.insert(out.mask.end(), ids.size(), mask);
}

std::string plain_role(const std::string& role) {
  if (role == "system") return "System";
  if (role == "user") return "User";
  return "Assistant";
}

// Appends the header of a turn (masked 0 unless all).
void header(const Tokenizer& tok, ChatTemplate tmpl, const std::string& role, Tokenized& out, uint8_t mask) {
  switch (tmpl) {
    case ChatTemplate::kChatMl:
      append(out, {special(tok, "<|im_start|>", tmpl)}, mask);
      append(out, tok.encode(role + "\n"), mask);
      break;
    case ChatTemplate::kLlama3:
      append(out, {special(tok, "<|start_header_id|>", tmpl)}, mask);
      append(out, tok.encode(role), mask);
      append(out, {special(tok, "<|end_header_id|>", tmpl)}, mask);
      append(out, tok.encode("\n\n"), mask);
      break;
    case ChatTemplate::kPlain:
      append(out, tok.encode(plain_role(role) + ": "), mask);
      break;
  }
}

Tokenized render(const Tokenizer& tok, ChatTemplate tmpl, const std::vector<ChatMessage>& messages,
                 bool train_on_all, bool generation_prompt) {
  Tokenized out;
  if (tok.bos_id() >= 0) append(out, {tok.bos_id()}, train_on_all ? 1 : 0);
  for (const auto& m : messages) {
    const bool target = train_on_all || m.role == "assistant";
    header(tok, tmpl, m.role, out, train_on_all ? 1 : 0);
    append(out, tok.encode(m.content), target ? 1 : 0);
    append(out, {end_of_turn_id(tok, tmpl)}, target ? 1 : 0);
    if (tmpl == ChatTemplate::kChatMl || tmpl == ChatTemplate::kPlain) {
      append(out, tok.encode("\n"), train_on_all ? 1 : 0);
    }
  }
  if (generation_prompt) header(tok, tmpl, "assistant", out, 0);
  return out;
}

}  // namespace

ChatTemplate parse_chat_template(const std::string& name) {
  if (name == "chatml") return ChatTemplate::kChatMl;
  if (name == "llama3") return ChatTemplate::kLlama3;
  if (name == "plain") return ChatTemplate::kPlain;
  throw InputError(str_cat("chat template '", name, "' is not one of chatml, llama3, plain"));
}

const char* to_string(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kChatMl:
      return "chatml";
    case ChatTemplate::kLlama3:
      return "llama3";
    case ChatTemplate::kPlain:
      return "plain";
  }
  return "?";
}

std::optional<ChatFormat> recognize_chat_template(const std::string& jinja) {
  ChatFormat f;
  if (jinja.find("<|im_start|>") != std::string::npos && jinja.find("<|im_end|>") != std::string::npos) {
    f.kind = ChatTemplate::kChatMl;
    // A literal system turn written when the first message is not a system
    // one: '<|im_start|>system\n...<|im_end|>' (the newline as written in Jinja or real).
    if (jinja.find("messages[0]['role'] != 'system'") != std::string::npos) {
      for (const std::string head : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
        const size_t b = jinja.find(head);
        if (b == std::string::npos) continue;
        const size_t start = b + head.size();
        const size_t e = jinja.find("<|im_end|>", start);
        const std::string text = jinja.substr(start, e - start);
        if (e != std::string::npos && text.find_first_of("{}'\"") == std::string::npos) f.default_system = text;
        break;
      }
    }
    return f;
  }
  if (jinja.find("<|start_header_id|>") != std::string::npos && jinja.find("<|eot_id|>") != std::string::npos) {
    f.kind = ChatTemplate::kLlama3;
    return f;
  }
  return std::nullopt;
}

ChatFormat resolve_chat_format(const Tokenizer& tok, const std::string& name) {
  if (!name.empty()) return {parse_chat_template(name), ""};
  if (tok.chat_template().empty()) return {ChatTemplate::kChatMl, ""};
  const auto f = recognize_chat_template(tok.chat_template());
  if (!f) {
    throw InputError(str_cat("the tokenizer's chat template is not one shardtune renders (chatml, llama3); choose one "
                             "with --chat-template. It begins: ", tok.chat_template().substr(0, 200)));
  }
  return *f;
}

std::vector<ChatMessage> with_default_system(const ChatFormat& format, std::vector<ChatMessage> messages) {
  if (!format.default_system.empty() && (messages.empty() || messages[0].role != "system")) {
    messages.insert(messages.begin(), {"system", format.default_system});
  }
  return messages;
}

int32_t end_of_turn_id(const Tokenizer& tok, ChatTemplate tmpl) {
  if (tmpl == ChatTemplate::kChatMl) return special(tok, "<|im_end|>", tmpl);
  if (tmpl == ChatTemplate::kLlama3) return special(tok, "<|eot_id|>", tmpl);
  if (tok.eos_id() < 0) throw InputError("chat template plain needs a tokenizer with an EOS token");
  return tok.eos_id();
}

Tokenized render_chat(const Tokenizer& tok, ChatTemplate tmpl, const std::vector<ChatMessage>& messages,
                      bool train_on_all) {
  return render(tok, tmpl, messages, train_on_all, false);
}

std::vector<int32_t> render_generation_prompt(const Tokenizer& tok, ChatTemplate tmpl,
                                              const std::vector<ChatMessage>& messages) {
  return render(tok, tmpl, messages, false, true).ids;
}

}  // namespace shardtune
