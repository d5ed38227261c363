// SentencePiece .model files through libsentencepiece.
#include <sentencepiece_processor.h>

#include <fstream>
#include <sstream>

#include "internal.h"
#include "shardtune/core/error.h"
#include "shardtune/tokenize/tokenizer.h"

namespace shardtune {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw InputError(str_cat(path, ": cannot open"));
    std::stringstream bytes;
    bytes << in.rdbuf();
    const auto status = sp_.LoadFromSerializedProto(bytes.str());
    if (!status.ok()) throw InputError(str_cat(path, ": not a SentencePiece model: ", status.ToString()));
    {
      std::string all;
      for (int i = 0; i < sp_.GetPieceSize(); ++i) {
        append_field(all, std::to_string(sp_.GetScore(i)));
        all += sp_.IsControl(i) ? 'c' : sp_.IsUnknown(i) ? 'u' : sp_.IsByte(i) ? 'b' : sp_.IsUnused(i) ? 'x' : 'n';
      }
      rules_hash_ = "sp:" + content_hash(all);
    }
    bos_ = sp_.bos_id();
    eos_ = sp_.eos_id();
    pad_ = sp_.pad_id();
    // Control pieces (<s>, </s>, ...) can be written in text with parse_special.
    for (int i = 0; i < sp_.GetPieceSize(); ++i) {
      if (sp_.IsControl(i)) specials_.push_back({sp_.IdToPiece(i), i, true, false, false});
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool parse_special) const override {
    check_utf8(text, "encode");
    std::vector<int32_t> ids;
    detail::split_added(
        text, specials_, parse_special,
        [&](std::string_view run) {
          std::vector<int> piece_ids;
          const auto status = sp_.Encode(run, &piece_ids);
          if (!status.ok()) throw Error(str_cat("sentencepiece: ", status.ToString()));
          ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
        },
        [&](const detail::AddedToken& t) { ids.push_back(t.id); });
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::vector<int> keep;
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size()) {
        throw InputError(str_cat("decode: id ", id, " is outside the vocabulary (", vocab_size(), ")"));
      }
      if (!(skip_special && sp_.IsControl(id))) keep.push_back(id);
    }
    std::string out;
    const auto status = sp_.Decode(keep, &out);
    if (!status.ok()) throw Error(str_cat("sentencepiece: ", status.ToString()));
    return out;
  }

  int64_t vocab_size() const override { return sp_.GetPieceSize(); }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    const int id = sp_.PieceToId(token);
    if (id == sp_.unk_id() && token != sp_.IdToPiece(id)) return std::nullopt;
    return id;
  }
  std::string id_to_token(int32_t id) const override { return sp_.IdToPiece(id); }
  bool is_special(int32_t id) const override { return sp_.IsControl(id); }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  std::vector<detail::AddedToken> specials_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

}  // namespace shardtune
