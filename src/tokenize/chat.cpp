#include "shardtune/tokenize/chat.h"

#include <ctime>
#include <nlohmann/json.hpp>

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

// Builds a rendering as the reference tokenizes a rendered template: text
// between two special tokens is encoded as one piece (so a header's newline
// and the content after it merge as they do there), while each part of that
// text keeps its own mask: a token takes the mask of the part it ends in
// when encoded alone, i.e. the first token that differs from the encoding of
// the text before a part starts that part.
class Builder {
 public:
  explicit Builder(const Tokenizer& tok) : tok_(tok) {}

  void text(std::string_view t, uint8_t mask) {
    if (!t.empty()) parts_.push_back({std::string(t), mask});
  }
  void special(int32_t id, uint8_t mask) {
    flush();
    out_.ids.push_back(id);
    out_.mask.push_back(mask);
  }
  Tokenized finish() {
    flush();
    return std::move(out_);
  }

 private:
  void flush() {
    if (parts_.empty()) return;
    std::string all;
    for (const auto& p : parts_) all += p.first;
    const std::vector<int32_t> ids = tok_.encode(all);
    std::vector<uint8_t> mask(ids.size(), parts_[0].second);
    std::string before = parts_[0].first;
    for (size_t k = 1; k < parts_.size(); ++k) {
      const std::vector<int32_t> prefix = tok_.encode(before);
      size_t common = 0;
      while (common < prefix.size() && common < ids.size() && prefix[common] == ids[common]) ++common;
      std::fill(mask.begin() + static_cast<long>(std::min(common, ids.size())), mask.end(), parts_[k].second);
      before += parts_[k].first;
    }
    out_.ids.insert(out_.ids.end(), ids.begin(), ids.end());
    out_.mask.insert(out_.mask.end(), mask.begin(), mask.end());
    parts_.clear();
  }

  const Tokenizer& tok_;
  std::vector<std::pair<std::string, uint8_t>> parts_;
  Tokenized out_;
};

std::string plain_role(const std::string& role) {
  if (role == "system") return "System";
  if (role == "user") return "User";
  return "Assistant";
}

// Appends the header of a turn (masked 0 unless all).
void header(const Tokenizer& tok, ChatTemplate tmpl, const std::string& role, Builder& out, uint8_t mask) {
  switch (tmpl) {
    case ChatTemplate::kChatMl:
    case ChatTemplate::kQwen3:
      out.special(special(tok, "<|im_start|>", tmpl), mask);
      out.text(role + "\n", mask);
      break;
    case ChatTemplate::kLlama3:
      out.special(special(tok, "<|start_header_id|>", tmpl), mask);
      out.text(role, mask);
      out.special(special(tok, "<|end_header_id|>", tmpl), mask);
      out.text("\n\n", mask);
      break;
    case ChatTemplate::kGemma:
      out.special(special(tok, "<start_of_turn>", tmpl), mask);
      out.text((role == "assistant" ? std::string("model") : role) + "\n", mask);
      break;
    case ChatTemplate::kPhi3:
    case ChatTemplate::kPhi4: {
      const std::string marker = "<|" + role + "|>";
      out.special(special(tok, marker.c_str(), tmpl), mask);
      if (tmpl == ChatTemplate::kPhi3) out.text("\n", mask);
      break;
    }
    case ChatTemplate::kPlain:
      out.text(plain_role(role) + ": ", mask);
      break;
  }
}

// Qwen3's empty reasoning block: <think>\n\n</think>\n\n.
void empty_think(const Tokenizer& tok, Builder& out, uint8_t mask) {
  out.special(special(tok, "<think>", ChatTemplate::kQwen3), mask);
  out.text("\n\n", mask);
  out.special(special(tok, "</think>", ChatTemplate::kQwen3), mask);
  out.text("\n\n", mask);
}

Tokenized render(const Tokenizer& tok, ChatTemplate tmpl, const std::vector<ChatMessage>& messages,
                 bool train_on_all, bool generation_prompt) {
  Builder out(tok);
  const uint8_t scaffold = train_on_all ? 1 : 0;
  if (tok.bos_id() >= 0) out.special(tok.bos_id(), scaffold);
  size_t last_user = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role == "user") last_user = i;
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const uint8_t target = train_on_all || (m.role == "assistant" && m.train) ? 1 : 0;
    header(tok, tmpl, m.role, out, scaffold);
    std::string_view content = m.content;
    if (tmpl == ChatTemplate::kQwen3 && m.role == "assistant" && i > last_user && i + 1 == messages.size()) {
      empty_think(tok, out, scaffold);
      while (!content.empty() && content.front() == '\n') content.remove_prefix(1);  // the template's lstrip('\n')
    }
    out.text(content, target);
    out.special(end_of_turn_id(tok, tmpl), target);
    if (tmpl != ChatTemplate::kLlama3 && tmpl != ChatTemplate::kPhi4) out.text("\n", scaffold);
  }
  if (generation_prompt) {
    header(tok, tmpl, "assistant", out, 0);
    if (tmpl == ChatTemplate::kQwen3) empty_think(tok, out, 0);
  } else if ((tmpl == ChatTemplate::kPhi3 || tmpl == ChatTemplate::kPhi4) && !messages.empty()) {
    if (tok.eos_id() < 0) throw InputError(str_cat("chat template ", to_string(tmpl), " needs a tokenizer with an EOS token"));
    out.special(tok.eos_id(), scaffold);
  }
  return out.finish();
}

bool has(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

// Python's str.strip(), which Jinja's trim filter is: leading and trailing
// Unicode whitespace.
std::string trim(const std::string& s) {
  auto space_at = [&](size_t i, bool backwards) -> size_t {  // bytes of the whitespace character at/ending at i, or 0
    static const char* const kWide[] = {"\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80", "\xe2\x80\x80", "\xe2\x80\x81",
                                        "\xe2\x80\x82", "\xe2\x80\x83", "\xe2\x80\x84", "\xe2\x80\x85", "\xe2\x80\x86",
                                        "\xe2\x80\x87", "\xe2\x80\x88", "\xe2\x80\x89", "\xe2\x80\x8a", "\xe2\x80\xa8",
                                        "\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80"};
    const unsigned char c = static_cast<unsigned char>(backwards ? s[i - 1] : s[i]);
    if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
    for (const char* w : kWide) {
      const std::string ws = w;
      if (!backwards && s.compare(i, ws.size(), ws) == 0) return ws.size();
      if (backwards && i >= ws.size() && s.compare(i - ws.size(), ws.size(), ws) == 0) return ws.size();
    }
    return 0;
  };
  size_t b = 0, e = s.size();
  while (b < e) {
    const size_t n = space_at(b, false);
    if (n == 0) break;
    b += n;
  }
  while (e > b) {
    const size_t n = space_at(e, true);
    if (n == 0) break;
    e -= n;
  }
  return s.substr(b, e - b);
}

// Llama 3.1+'s date: the template's own fallback ("26 Jul 2024") unless it
// asks for today's (strftime_now, as transformers renders it).
std::string llama3_date(const std::string& jinja) {
  if (has(jinja, "strftime_now")) {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[32];
    std::strftime(buf, sizeof(buf), "%d %b %Y", &tm);
    return buf;
  }
  const std::string key = "set date_string = \"";
  const size_t b = jinja.find(key);
  const size_t e = b == std::string::npos ? b : jinja.find('"', b + key.size());
  if (e != std::string::npos) return jinja.substr(b + key.size(), e - b - key.size());
  throw InputError("the tokenizer's Llama-3 chat template writes 'Today Date' but names no date_string");
}

}  // namespace

ChatMessage parse_chat_message(const nlohmann::json& m, const std::string& where) {
  if (!m.is_object()) throw InputError(str_cat(where, " is not an object"));
  for (const auto& [k, v] : m.items()) {
    if (k != "role" && k != "content" && k != "weight" && k != "name") {
      throw InputError(str_cat(where, " has the key '", k, "' (role, content, weight and name are read)"));
    }
  }
  ChatMessage out;
  out.role = m.contains("role") && m["role"].is_string() ? m["role"].get<std::string>() : "";
  if (out.role != "system" && out.role != "user" && out.role != "assistant") {
    throw InputError(str_cat(where, " has role '", out.role, "' (expected system, user or assistant)"));
  }
  const auto c = m.find("content");
  if (c == m.end()) throw InputError(str_cat(where, " has no 'content'"));
  if (c->is_string()) {
    out.content = c->get<std::string>();
  } else if (c->is_array()) {  // content parts: text only, joined
    for (size_t i = 0; i < c->size(); ++i) {
      const auto& p = (*c)[i];
      if (!p.is_object() || p.value("type", "") != "text" || !p.contains("text") || !p["text"].is_string()) {
        throw InputError(str_cat(where, " content part ", i, " is not {\"type\": \"text\", \"text\": ...}",
                                 p.is_object() && p.contains("type") ? str_cat(" (type ", p["type"].dump(), ")") : ""));
      }
      out.content += p["text"].get<std::string>();
    }
  } else {
    throw InputError(str_cat(where, " has a 'content' that is neither a string nor a list of text parts"));
  }
  if (const auto w = m.find("weight"); w != m.end()) {
    if (out.role != "assistant") throw InputError(str_cat(where, " has a 'weight', which only assistant messages take"));
    if (!w->is_number() || (w->get<double>() != 0.0 && w->get<double>() != 1.0)) {
      throw InputError(str_cat(where, " has weight ", w->dump(), " (0 or 1)"));
    }
    out.train = w->get<double>() == 1.0;
  }
  return out;
}

ChatTemplate parse_chat_template(const std::string& name) {
  for (ChatTemplate t : {ChatTemplate::kChatMl, ChatTemplate::kQwen3, ChatTemplate::kLlama3, ChatTemplate::kGemma,
                         ChatTemplate::kPhi3, ChatTemplate::kPhi4, ChatTemplate::kPlain}) {
    if (name == to_string(t)) return t;
  }
  throw InputError(str_cat("chat template '", name, "' is not one of chatml, qwen3, llama3, gemma, phi3, phi4, plain"));
}

const char* to_string(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kChatMl:
      return "chatml";
    case ChatTemplate::kQwen3:
      return "qwen3";
    case ChatTemplate::kLlama3:
      return "llama3";
    case ChatTemplate::kGemma:
      return "gemma";
    case ChatTemplate::kPhi3:
      return "phi3";
    case ChatTemplate::kPhi4:
      return "phi4";
    case ChatTemplate::kPlain:
      return "plain";
  }
  return "?";
}

std::optional<ChatFormat> recognize_chat_template(const std::string& jinja) {
  ChatFormat f;
  if (has(jinja, "<|im_start|>") && has(jinja, "<|im_end|>")) {
    if (has(jinja, "reasoning_mode") || has(jinja, "Knowledge Cutoff Date")) {
      throw InputError("the tokenizer's chat template is SmolLM3's, which writes today's date and a reasoning mode "
                       "into its system turn; shardtune does not render it: choose --chat-template chatml (or "
                       "chat_template: chatml in the config) to train and chat without that system turn");
    }
    f.kind = has(jinja, "<think>") && has(jinja, "enable_thinking") ? ChatTemplate::kQwen3 : ChatTemplate::kChatMl;
    // A literal system turn written when the first message is not a system
    // one: '<|im_start|>system\n...<|im_end|>' (the newline as written in Jinja or real).
    if (has(jinja, "messages[0]['role'] != 'system'")) {
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
  if (has(jinja, "<|start_header_id|>") && has(jinja, "<|eot_id|>")) {
    f.kind = ChatTemplate::kLlama3;
    if (has(jinja, "Cutting Knowledge Date: December 2023")) {
      f.system_preamble = str_cat("Cutting Knowledge Date: December 2023\nToday Date: ", llama3_date(jinja), "\n\n");
    }
    return f;
  }
  if (has(jinja, "<start_of_turn>") && has(jinja, "<end_of_turn>")) {
    f.kind = ChatTemplate::kGemma;
    f.system_allowed = !has(jinja, "System role not supported");
    return f;
  }
  if (has(jinja, "<|assistant|>") && has(jinja, "<|end|>")) {
    // Phi-3 puts a newline after each role marker and after <|end|>; Phi-4-mini neither.
    f.kind = has(jinja, "<|end|>\\n") || has(jinja, "<|end|>\n") ? ChatTemplate::kPhi3 : ChatTemplate::kPhi4;
    return f;
  }
  return std::nullopt;
}

std::string chat_format_id(const ChatFormat& format) {
  std::string id = to_string(format.kind);
  if (!format.default_system.empty()) id += "+system:" + content_hash(format.default_system).substr(0, 8);
  if (!format.system_preamble.empty()) id += "+preamble:" + content_hash(format.system_preamble).substr(0, 8);
  if (!format.system_allowed) id += "+no-system";
  return id;
}

ChatFormat resolve_chat_format(const Tokenizer& tok, const std::string& name) {
  if (!name.empty()) return {parse_chat_template(name), "", "", true};
  if (tok.chat_template().empty()) return {ChatTemplate::kChatMl, "", "", true};
  const auto f = recognize_chat_template(tok.chat_template());
  if (!f) {
    throw InputError(str_cat("the tokenizer's chat template is not one shardtune renders (chatml, qwen3, llama3, gemma, "
                             "phi3, phi4); choose one with --chat-template. It begins: ",
                             tok.chat_template().substr(0, 200)));
  }
  return *f;
}

std::vector<ChatMessage> template_messages(const ChatFormat& format, std::vector<ChatMessage> messages) {
  const ChatTemplate kind = format.kind;
  const bool trims = kind == ChatTemplate::kLlama3 || kind == ChatTemplate::kGemma;
  const bool has_system = !messages.empty() && messages[0].role == "system";
  if (!format.system_preamble.empty()) {  // Llama 3.1+: always a system turn, the preamble first
    const std::string own = has_system ? trim(messages[0].content) : "";
    if (has_system) messages.erase(messages.begin());
    for (auto& m : messages) m.content = trim(m.content);
    messages.insert(messages.begin(), {"system", format.system_preamble + own});
    return messages;
  }
  if (!format.default_system.empty() && !has_system) messages.insert(messages.begin(), {"system", format.default_system});
  if (trims) {
    for (auto& m : messages) m.content = trim(m.content);
  }
  if (kind == ChatTemplate::kGemma) {
    std::string prefix;
    if (has_system) {
      if (!format.system_allowed) {
        throw InputError("this Gemma chat template has no system role (it refuses a system message)");
      }
      prefix = messages[0].content + "\n\n";
      messages.erase(messages.begin());
    }
    for (size_t i = 0; i < messages.size(); ++i) {
      if (messages[i].role != (i % 2 == 0 ? "user" : "assistant")) {
        throw InputError(str_cat("the Gemma chat template needs roles alternating user, assistant, ...; message ",
                                 i + (has_system ? 2 : 1), " is '", messages[i].role, "'"));
      }
    }
    if (has_system && !messages.empty()) messages[0].content = prefix + messages[0].content;
  }
  return messages;
}

int32_t end_of_turn_id(const Tokenizer& tok, ChatTemplate tmpl) {
  switch (tmpl) {
    case ChatTemplate::kChatMl:
    case ChatTemplate::kQwen3:
      return special(tok, "<|im_end|>", tmpl);
    case ChatTemplate::kLlama3:
      return special(tok, "<|eot_id|>", tmpl);
    case ChatTemplate::kGemma:
      return special(tok, "<end_of_turn>", tmpl);
    case ChatTemplate::kPhi3:
    case ChatTemplate::kPhi4:
      return special(tok, "<|end|>", tmpl);
    case ChatTemplate::kPlain:
      break;
  }
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
