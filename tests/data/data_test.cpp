// Data tests: HDF5 shards (round trip, files laid out by other writers, every
// bad-file case), the sampler's world-size independence, packing, the loader,
// and prep (bad lines, masks token by token, split, threads, atomicity).
#include <gtest/gtest.h>
#include <hdf5.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "shardtune/core/error.h"
#include "support/test_util.h"
#include "shardtune/data/dataset.h"
#include "shardtune/data/loader.h"
#include "shardtune/data/prep.h"
#include "shardtune/data/sampler.h"
#include "shardtune/data/token_shard.h"
#include "shardtune/tokenize/tokenizer.h"

namespace shardtune {
namespace {
namespace fs = std::filesystem;

std::string temp_dir(const std::string& name) { return testing::temp_dir("shardtune_data_test", name); }
using testing::input_error;

// Writes a shard with documents of given lengths; token t of the stream is t % mod.
void write_shard(const std::string& path, const std::vector<int64_t>& doc_lengths, int64_t vocab = 1000,
                 int64_t mod = 997, int64_t first = 0) {
  TokenShardWriter w(path, ShardAttrs{vocab, -1, 1, 0, "test:v1"}, true);
  int64_t t = first;
  for (int64_t len : doc_lengths) {
    std::vector<int32_t> ids;
    std::vector<uint8_t> mask;
    for (int64_t i = 0; i < len; ++i, ++t) {
      ids.push_back(static_cast<int32_t>(t % mod));
      mask.push_back(i % 3 != 0);
    }
    w.add(ids.data(), mask.data(), ids.size());
  }
  w.finish();
}

// ---------------------------------------------------------------- a raw HDF5 maker

struct RawDataset {
  std::string name;
  hid_t type;
  std::vector<int64_t> values;
  bool chunked_gzip = false;
};

void write_raw(const std::string& path, const std::vector<std::pair<std::string, int64_t>>& int_attrs,
               const std::string& format, const std::vector<RawDataset>& datasets) {
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  auto str_attr = [&](const char* name, const std::string& v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, v.size());
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, v.data());
    H5Aclose(a), H5Sclose(s), H5Tclose(t);
  };
  if (!format.empty()) str_attr("format", format);
  str_attr("tokenizer", "test:v1");
  for (const auto& [name, v] : int_attrs) {
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name.c_str(), H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a), H5Sclose(s);
  }
  for (const auto& d : datasets) {
    hsize_t n = d.values.size();
    hid_t s = H5Screate_simple(1, &n, nullptr);
    hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    if (d.chunked_gzip && n > 0) {
      hsize_t chunk = std::min<hsize_t>(n, 3);
      H5Pset_chunk(plist, 1, &chunk);
      H5Pset_deflate(plist, 6);
    }
    hid_t ds = H5Dcreate2(f, d.name.c_str(), d.type, s, H5P_DEFAULT, plist, H5P_DEFAULT);
    if (n > 0) H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, d.values.data());
    H5Dclose(ds), H5Pclose(plist), H5Sclose(s);
  }
  H5Fclose(f);
}

const std::vector<std::pair<std::string, int64_t>> kAttrs = {
    {"version", 1}, {"vocab_size", 50}, {"bos_id", -1}, {"eos_id", 2}, {"pad_id", 0}};

// ---------------------------------------------------------------- shards

TEST(TokenShard, RoundTripsTokensMasksAndOffsets) {
  const std::string d = temp_dir("roundtrip");
  for (int64_t vocab : {1000, 70000}) {
    const std::string p = d + "/s" + std::to_string(vocab) + ".h5";
    write_shard(p, {5, 0, 7}, vocab, vocab - 3);
    for (const auto& e : fs::directory_iterator(d)) EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos);
    TokenShardReader r(p);
    EXPECT_EQ(r.token_bits(), vocab <= 65536 ? 16 : 32);
    EXPECT_EQ(r.num_docs(), 3);
    EXPECT_EQ(r.num_tokens(), 12);
    EXPECT_EQ(r.doc_offsets(), (std::vector<int64_t>{0, 5, 5, 12}));
    std::vector<int32_t> t(12);
    std::vector<uint8_t> m(12);
    r.read_tokens(0, 12, t.data());
    r.read_mask(0, 12, m.data());
    for (int i = 0; i < 12; ++i) EXPECT_EQ(t[static_cast<size_t>(i)], i);
    EXPECT_EQ(m[0], 0);
    EXPECT_EQ(m[1], 1);
    EXPECT_EQ(r.attrs().tokenizer, "test:v1");
  }
}

TEST(TokenShard, ReadsOtherWritersLayouts) {
  const std::string d = temp_dir("layouts");
  // Contiguous, no mask, uint32 tokens.
  write_raw(d + "/a.h5", kAttrs, "shardtune.tokens",
            {{"tokens", H5T_STD_U32LE, {3, 4, 5}}, {"doc_offsets", H5T_STD_I64LE, {0, 3}}});
  TokenShardReader a(d + "/a.h5");
  EXPECT_FALSE(a.has_mask());
  EXPECT_EQ(a.validate_all(), 3);
  // Chunked and gzip-compressed, uint16 tokens and a mask.
  write_raw(d + "/b.h5", kAttrs, "shardtune.tokens",
            {{"tokens", H5T_STD_U16LE, {1, 2, 3, 4, 5, 6, 7}, true},
             {"doc_offsets", H5T_STD_I64LE, {0, 2, 7}, true},
             {"loss_mask", H5T_STD_U8LE, {0, 1, 1, 1, 0, 0, 1}, true}});
  TokenShardReader b(d + "/b.h5");
  EXPECT_EQ(b.validate_all(), 4);
  std::vector<int32_t> t(7);
  b.read_tokens(0, 7, t.data());
  EXPECT_EQ(t, (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7}));
}

TEST(TokenShard, EveryBadFileFailsWithItsPathAndReason) {
  const std::string d = temp_dir("bad");
  const std::string p = d + "/bad.h5";
  const RawDataset tokens{"tokens", H5T_STD_U16LE, {1, 2, 3}};
  const RawDataset offsets{"doc_offsets", H5T_STD_I64LE, {0, 3}};
  auto attrs_with = [](const std::string& k, int64_t v) {
    auto a = kAttrs;
    for (auto& kv : a) {
      if (kv.first == k) kv.second = v;
    }
    return a;
  };
  auto attrs_without = [](const std::string& k) {
    auto a = kAttrs;
    a.erase(std::remove_if(a.begin(), a.end(), [&](auto& kv) { return kv.first == k; }), a.end());
    return a;
  };
  struct Case {
    std::function<void()> make;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {[&] { write_raw(p, kAttrs, "other.format", {tokens, offsets}); },
       "attribute 'format' is \"other.format\", not \"shardtune.tokens\""},
      {[&] { write_raw(p, kAttrs, "", {tokens, offsets}); }, "attribute 'format' is missing"},
      {[&] { write_raw(p, attrs_with("version", 2), "shardtune.tokens", {tokens, offsets}); },
       "format version 2 is not supported"},
      {[&] { write_raw(p, attrs_without("vocab_size"), "shardtune.tokens", {tokens, offsets}); },
       "attribute 'vocab_size' is missing"},
      {[&] { write_raw(p, kAttrs, "shardtune.tokens", {offsets}); }, "dataset /tokens is missing"},
      {[&] { write_raw(p, kAttrs, "shardtune.tokens", {tokens}); }, "dataset /doc_offsets is missing"},
      {[&] { write_raw(p, kAttrs, "shardtune.tokens", {{"tokens", H5T_STD_I64LE, {1, 2, 3}}, offsets}); },
       "/tokens is int64, expected uint16 or uint32"},
      {[&] { write_raw(p, kAttrs, "shardtune.tokens", {tokens, {"doc_offsets", H5T_STD_I32LE, {0, 3}}}); },
       "/doc_offsets is int32, expected int64"},
      {[&] { write_raw(p, kAttrs, "shardtune.tokens", {tokens, {"doc_offsets", H5T_STD_I64LE, {0, 2, 1, 3}}}); },
       "/doc_offsets decreases at document 1"},
      {[&] { write_raw(p, kAttrs, "shardtune.tokens", {tokens, {"doc_offsets", H5T_STD_I64LE, {0, 5}}}); },
       "/doc_offsets ends at 5 but /tokens holds 3 tokens (out of range)"},
      {[&] { write_raw(p, kAttrs, "shardtune.tokens", {tokens, {"doc_offsets", H5T_STD_I64LE, {1, 3}}}); },
       "/doc_offsets[0] is 1, not 0"},
      {[&] {
         write_raw(p, kAttrs, "shardtune.tokens", {tokens, offsets, {"loss_mask", H5T_STD_U8LE, {1, 1}}});
       },
       "/loss_mask holds 2 values but /tokens holds 3"},
      {[&] { std::ofstream(p) << "not an hdf5 file"; }, "not an HDF5 file"},
  };
  for (const auto& c : cases) {
    fs::remove(p);
    c.make();
    const std::string e = input_error([&] { TokenShardReader r(p); });
    EXPECT_NE(e.find(p), std::string::npos) << e;
    EXPECT_NE(e.find(c.expect), std::string::npos) << "got: " << e << "\nwant: " << c.expect;
  }
  // A token id past the vocabulary: found when read.
  write_raw(p, kAttrs, "shardtune.tokens", {{"tokens", H5T_STD_U16LE, {1, 60, 3}}, offsets});
  TokenShardReader r(p);
  EXPECT_NE(input_error([&] { r.validate_all(); }).find("token id 60 at /tokens[1] is not below vocab_size 50"),
            std::string::npos);
  // A truncated file.
  write_shard(p, {5000});
  fs::resize_file(p, fs::file_size(p) / 2);
  const std::string e = input_error([&] {
    TokenShardReader t(p);
    t.validate_all();
  });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_FALSE(e.empty());
  EXPECT_NE(input_error([&] { TokenShardReader m(d + "/missing.h5"); }).find("no such file"), std::string::npos);
}

TEST(TokenShard, WriterRejectsIdsOutsideTheVocabularyAndLeavesNoFile) {
  const std::string p = temp_dir("writer") + "/w.h5";
  {
    TokenShardWriter w(p, ShardAttrs{10, -1, 1, 0, "t"}, false);
    const int32_t ids[] = {1, 10};
    EXPECT_NE(input_error([&] { w.add(ids, nullptr, 2); }).find("token id 10 is outside the vocabulary"),
              std::string::npos);
  }
  EXPECT_FALSE(fs::exists(p));
  EXPECT_TRUE(fs::is_empty(fs::path(p).parent_path()));  // nor its temporary
}

// ---------------------------------------------------------------- sampler

TEST(Sampler, EveryWorldSizeTakesTheSameSamplesPerStep) {
  const int64_t n = 1003, batch = 16;
  for (int step = 0; step < 130; ++step) {  // crosses two epoch boundaries
    std::multiset<int64_t> reference;
    for (int world : {1, 2, 4}) {
      Sampler s(n, batch, 42);
      std::vector<int64_t> global;
      for (int k = 0; k <= step; ++k) global = s.next_global_batch();
      std::multiset<int64_t> got;
      for (int r = 0; r < world; ++r) {
        for (int64_t id : Sampler::rank_slice(global, r, world)) got.insert(id);
      }
      if (world == 1) reference = got;
      ASSERT_EQ(got, reference) << "step " << step << " world " << world;
    }
  }
}

TEST(Sampler, NoSampleRepeatsInAnEpochAndEpochsDiffer) {
  Sampler s(1000, 10, 7);
  std::set<int64_t> seen;
  std::vector<int64_t> first_epoch;
  for (int k = 0; k < 100; ++k) {
    for (int64_t id : s.next_global_batch()) {
      EXPECT_TRUE(seen.insert(id).second) << id << " repeats";
      EXPECT_GE(id, 0);
      EXPECT_LT(id, 1000);
      first_epoch.push_back(id);
    }
  }
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_EQ(s.next_global_batch()[0], s.sample_at(1, 0));
  EXPECT_NE(s.sample_at(1, 0) * 1000 + s.sample_at(1, 1), first_epoch[0] * 1000 + first_epoch[1]);
}

TEST(Sampler, RestoredStateContinuesTheSameSequenceOnAnyWorldSize) {
  Sampler a(777, 12, 3);
  for (int k = 0; k < 70; ++k) a.next_global_batch();  // into the second epoch
  const SamplerState saved = a.state();
  Sampler b(777, 12, 3);
  b.restore(saved);
  for (int k = 0; k < 80; ++k) {
    const auto ga = a.next_global_batch();
    const auto gb = b.next_global_batch();
    ASSERT_EQ(ga, gb);
    // Saved with 2 ranks, resumed with 4: the concatenated slices are the same order.
    std::vector<int64_t> two, four;
    for (int r = 0; r < 2; ++r) {
      auto s = Sampler::rank_slice(ga, r, 2);
      two.insert(two.end(), s.begin(), s.end());
    }
    for (int r = 0; r < 4; ++r) {
      auto s = Sampler::rank_slice(gb, r, 4);
      four.insert(four.end(), s.begin(), s.end());
    }
    ASSERT_EQ(two, four);
  }
  EXPECT_THROW(Sampler(5, 8, 0), InputError);
  EXPECT_THROW(Sampler::rank_slice(std::vector<int64_t>(6), 0, 4), InputError);
}

// ---------------------------------------------------------------- dataset, loader

TEST(Dataset, PackStreamsAcrossShardsAndSftPacksWholeExamples) {
  const std::string d = temp_dir("dataset");
  write_shard(d + "/x-train-00000.h5", {4, 6});
  write_shard(d + "/x-train-00001.h5", {3, 9, 2}, 1000, 997, 10);
  const auto paths = find_shards(d + "/x", "train");
  ASSERT_EQ(paths.size(), 2u);

  TokenDataset pack(paths, DatasetOptions{4, PackMode::kPack, 1});
  EXPECT_EQ(pack.num_tokens(), 24);
  EXPECT_EQ(pack.num_samples(), (24 - 1) / 4);
  SampleRows p;
  pack.read_sample(2, p);  // tokens 8..12, crossing into shard 1
  EXPECT_EQ(p.inputs, (std::vector<int32_t>{8, 9, 10, 11}));
  // targets 9..12; token 10 starts shard 1's first document (mask 0 there)
  EXPECT_EQ(p.targets, (std::vector<int32_t>{9, kIgnoreIndex, 11, 12}));
  EXPECT_TRUE(p.documents.empty());

  TokenDataset sft(paths, DatasetOptions{6, PackMode::kSft, 2});
  // window 7: [4] + (6 doesn't fit) | [6] | [3] + (9 > 7) | [9 cut to 7] | [2]
  EXPECT_EQ(sft.num_samples(), 5);
  EXPECT_EQ(sft.truncated_examples(), 1);
  SampleRows s;
  sft.read_sample(0, s);
  EXPECT_EQ(s.rows, 1);
  EXPECT_EQ(s.seq_len, 6);
  EXPECT_EQ(s.inputs, (std::vector<int32_t>{0, 1, 2, 3, 0, 0}));  // padded with pad_id 0
  // masks of doc 0 are 0,1,1,0: the target of position 2 (token 3) is masked out
  EXPECT_EQ(s.targets, (std::vector<int32_t>{1, 2, kIgnoreIndex, kIgnoreIndex, kIgnoreIndex, kIgnoreIndex}));
}

TEST(Dataset, DocumentMaskNumbersDocumentsRestartsPositionsAndCutsTargetsAtBoundaries) {
  const std::string d = temp_dir("dataset_docs");
  {
    TokenShardWriter w(d + "/m-train-00000.h5", ShardAttrs{1000, -1, 1, 0, "test:v1"}, true);
    int32_t t = 0;
    for (int len : {3, 2, 4, 5}) {  // every token a target
      std::vector<int32_t> ids;
      for (int i = 0; i < len; ++i) ids.push_back(t++);
      const std::vector<uint8_t> mask(ids.size(), 1);
      w.add(ids.data(), mask.data(), ids.size());
    }
    w.finish();
  }
  const auto paths = find_shards(d + "/m", "train");
  const int32_t x = kIgnoreIndex;

  // sft, window 10: [3 2 4] + padding | [5]
  TokenDataset sft(paths, DatasetOptions{9, PackMode::kSft, 1, true});
  ASSERT_EQ(sft.num_samples(), 2);
  SampleRows s;
  sft.read_sample(0, s);
  EXPECT_EQ(s.inputs, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(s.documents, (std::vector<int32_t>{0, 0, 0, 1, 1, 2, 2, 2, 2}));
  EXPECT_EQ(s.positions, (std::vector<int32_t>{0, 1, 2, 0, 1, 0, 1, 2, 3}));
  // no target crosses into the next document or into padding
  EXPECT_EQ(s.targets, (std::vector<int32_t>{1, 2, x, 4, x, 6, 7, 8, x}));
  sft.read_sample(1, s);  // appended as a second row
  EXPECT_EQ(s.rows, 2);
  const SampleRows second = s.slice(1, 1);
  EXPECT_EQ(second.inputs, (std::vector<int32_t>{9, 10, 11, 12, 13, 0, 0, 0, 0}));
  EXPECT_EQ(second.documents, (std::vector<int32_t>{0, 0, 0, 0, 0, -1, -1, -1, -1}));
  EXPECT_EQ(second.positions, (std::vector<int32_t>{0, 1, 2, 3, 4, 0, 0, 0, 0}));
  EXPECT_EQ(second.targets, (std::vector<int32_t>{10, 11, 12, 13, x, x, x, x, x}));

  // The same windows unmasked: targets run on across documents.
  TokenDataset leaky(paths, DatasetOptions{9, PackMode::kSft, 1, false});
  SampleRows u;
  leaky.read_sample(0, u);
  EXPECT_TRUE(u.documents.empty() && u.positions.empty());
  EXPECT_EQ(u.targets, (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8, x}));

  // pack, seq 4: sample 1 holds tokens 4..8; token 4 ends document 1 (3..4).
  TokenDataset pack(paths, DatasetOptions{4, PackMode::kPack, 1, true});
  SampleRows p;
  pack.read_sample(1, p);
  EXPECT_EQ(p.inputs, (std::vector<int32_t>{4, 5, 6, 7}));
  EXPECT_EQ(p.documents, (std::vector<int32_t>{0, 1, 1, 1}));
  EXPECT_EQ(p.positions, (std::vector<int32_t>{0, 0, 1, 2}));
  EXPECT_EQ(p.targets, (std::vector<int32_t>{x, 6, 7, 8}));
  SampleRows p2;
  pack.read_sample(2, p2);  // tokens 8..12: the window's first document is cut and counts from 0
  EXPECT_EQ(p2.documents, (std::vector<int32_t>{0, 1, 1, 1}));
  EXPECT_EQ(p2.positions, (std::vector<int32_t>{0, 0, 1, 2}));
}

TEST(Loader, ServesThisRanksSlicesInOrderAndReportsConsumedState) {
  const std::string d = temp_dir("loader");
  write_shard(d + "/y-train-00000.h5", std::vector<int64_t>(50, 20));
  const auto paths = find_shards(d + "/y", "train");
  auto ds = std::make_shared<TokenDataset>(paths, DatasetOptions{8, PackMode::kPack, 4});
  Sampler reference(ds->num_samples(), 8, 11);
  std::vector<Batch> batches;
  {
    DataLoader loader(ds, Sampler(ds->num_samples(), 8, 11), 1, 2, 3);
    for (int step = 0; step < 20; ++step) {
      batches.push_back(loader.next());
      reference.next_global_batch();
      // What a checkpoint saves: the batches handed out, not those read ahead.
      EXPECT_EQ(loader.state().cursor, reference.state().cursor);
      EXPECT_EQ(loader.state().epoch, reference.state().epoch);
    }
  }
  // A dataset of its own: datasets are not shared between threads.
  TokenDataset direct(paths, DatasetOptions{8, PackMode::kPack, 4});
  Sampler again(ds->num_samples(), 8, 11);
  for (const Batch& b : batches) {
    const auto want = Sampler::rank_slice(again.next_global_batch(), 1, 2);
    ASSERT_EQ(b.samples, want);
    SampleRows rows;
    for (int64_t s : want) direct.read_sample(s, rows);
    EXPECT_EQ(b.inputs, rows.inputs);
    EXPECT_EQ(b.targets, rows.targets);
    EXPECT_EQ(b.rows, 4);
  }
}

TEST(Loader, ABadShardSurfacesOnNext) {
  const std::string d = temp_dir("loader_bad");
  write_raw(d + "/z-train-00000.h5", kAttrs, "shardtune.tokens",
            {{"tokens", H5T_STD_U16LE, {1, 2, 3, 99, 5, 6, 7, 8, 9}}, {"doc_offsets", H5T_STD_I64LE, {0, 9}}});
  auto ds = std::make_shared<TokenDataset>(find_shards(d + "/z", "train"), DatasetOptions{2, PackMode::kPack, 4});
  DataLoader loader(ds, Sampler(ds->num_samples(), 4, 0, /*shuffle=*/false), 0, 1);
  EXPECT_NE(input_error([&] { loader.next(); }).find("token id 99"), std::string::npos);
}

// ---------------------------------------------------------------- prep

std::string write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path);
  for (const auto& l : lines) out << l << "\n";
  return path;
}

TEST(Prep, BadLinesNameFileAndLineOrAreSkippedAndCounted) {
  const std::string d = temp_dir("prep_bad");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{not json", "not a JSON object"},
      {R"(["a list"])", "not a JSON object"},
      {R"({"messages": []})", "'messages' is empty"},
      {R"({"messages": [{"role": "bot", "content": "x"}]})", "message 0 has role 'bot'"},
      {R"({"messages": [{"role": "user", "content": 5}]})", "message 0 has a 'content' that is neither a string nor a list of text parts"},
      {R"({"messages": [{"role": "user", "content": "only a question"}]})", "no assistant message to train on"},
      {R"({"prompt": "p"})", "no 'completion' field"},
      {R"({"text": 3})", "'text' is not a string"},
      {R"({"other": 1})", "has none of the fields"},
  };
  const std::string good = R"({"text": "fine"})";
  int i = 0;
  for (const auto& [line, msg] : bad) {
    const std::string in = write_lines(d + "/in.jsonl", {good, line, good});
    PrepOptions o;
    o.inputs = {in};
    o.output = d + "/out" + std::to_string(i++);
    const std::string e = input_error([&] { run_prep(o); });
    EXPECT_NE(e.find(in + ":2: "), std::string::npos) << e;
    EXPECT_NE(e.find(msg), std::string::npos) << "got: " << e << "\nwant: " << msg;
    EXPECT_TRUE(find_shards(o.output, "train").empty()) << "a failed run left shards";
    o.skip_bad = true;
    const PrepSummary s = run_prep(o);
    EXPECT_EQ(s.skipped, 1);
    EXPECT_EQ(s.examples[0], 2);
    // A failing re-run with --overwrite loses nothing already saved.
    o.skip_bad = false;
    o.overwrite = true;
    EXPECT_FALSE(input_error([&] { run_prep(o); }).empty());
    ASSERT_EQ(find_shards(o.output, "train").size(), 1u);
    EXPECT_EQ(TokenShardReader(find_shards(o.output, "train")[0]).num_docs(), 2);
  }
}

TEST(Prep, MasksFollowTheFormatTokenByToken) {
  const std::string d = temp_dir("prep_mask");
  const std::string in = write_lines(d + "/in.jsonl", {
      R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})",
      R"({"prompt": "Q", "completion": "A"})",
      R"({"text": "T"})",
  });
  PrepOptions o;
  o.inputs = {in};
  o.output = d + "/m";
  run_prep(o);
  TokenShardReader r(d + "/m-train-00000.h5");
  ASSERT_EQ(r.num_docs(), 3);
  std::vector<int32_t> t(static_cast<size_t>(r.num_tokens()));
  std::vector<uint8_t> m(t.size());
  r.read_tokens(0, r.num_tokens(), t.data());
  r.read_mask(0, r.num_tokens(), m.data());
  auto tok = make_byte_tokenizer();
  // chat: <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n
  const std::string chat_mask = std::string(1 + 5 + 2 + 1 + 1, '0') + std::string(1 + 10, '0') + "111" + "0";
  // prompt_completion: Q A <eos> ; text: T <eos>
  const std::string expect = chat_mask + "011" + "11";
  std::string got;
  for (uint8_t v : m) got += static_cast<char>('0' + v);
  EXPECT_EQ(got, expect);
  std::vector<int32_t> pc(t.begin() + r.doc_offsets()[1], t.begin() + r.doc_offsets()[2]);
  EXPECT_EQ(tok->decode(pc), "QA<|endoftext|>");
}

TEST(Prep, SplitAndShardsAreDeterministicWhateverTheThreads) {
  const std::string d = temp_dir("prep_threads");
  std::vector<std::string> lines;
  for (int i = 0; i < 3000; ++i) lines.push_back(R"({"text": "example number )" + std::to_string(i) + R"("})");
  const std::string in = write_lines(d + "/in.jsonl", lines);
  std::vector<std::vector<int32_t>> contents;
  for (int threads : {1, 3}) {
    PrepOptions o;
    o.inputs = {in};
    o.output = d + "/t" + std::to_string(threads);
    o.threads = threads;
    o.val_fraction = 0.1;
    o.shard_tokens = 20000;
    const PrepSummary s = run_prep(o);
    EXPECT_GT(s.examples[1], 200);
    EXPECT_LT(s.examples[1], 400);
    EXPECT_GT(s.files.size(), 2u);
    std::vector<int32_t> all;
    for (const std::string split : {"train", "val"}) {
      for (const auto& f : find_shards(o.output, split)) {
        TokenShardReader r(f);
        EXPECT_LE(r.num_tokens(), 20000);
        std::vector<int32_t> t(static_cast<size_t>(r.num_tokens()));
        r.read_tokens(0, r.num_tokens(), t.data());
        all.insert(all.end(), t.begin(), t.end());
      }
    }
    contents.push_back(all);
  }
  EXPECT_EQ(contents[0], contents[1]);
}

// Documents of 20-90 kB: blocks end at 256 KiB, between documents, so 3
// threads share 2 MB of them; every document arrives whole and in order,
// from JSONL lines and from .txt paragraphs, and a bad line far into the
// input is named and leaves nothing behind.
TEST(Prep, LongDocumentsSpreadOverBlocksAndStayWhole) {
  const std::string d = temp_dir("prep_long");
  std::vector<std::string> docs, jsonl;
  std::string txt;
  for (int i = 0; i < 40; ++i) {
    std::string doc;
    const int lines = 200 + (i * 37) % 700;  // 20 to 90 kB
    for (int l = 0; l < lines; ++l) doc += (l ? "\n" : "") + str_cat("document ", i, " line ", l, " ", std::string(l % 80, 'x'));
    docs.push_back(doc);
    jsonl.push_back(nlohmann::json{{"text", doc}}.dump());
    txt += doc + "\n\n";
  }
  const std::string in_jsonl = write_lines(d + "/in.jsonl", jsonl);
  { std::ofstream(d + "/in.txt") << txt; }
  auto tok = load_tokenizer("byte");
  for (const std::string in : {in_jsonl, d + "/in.txt"}) {
    for (int threads : {1, 3}) {
      SCOPED_TRACE(in + " threads " + std::to_string(threads));
      PrepOptions o;
      o.inputs = {in};
      o.output = d + "/out" + std::to_string(threads);
      o.threads = threads;
      o.overwrite = true;
      const PrepSummary sum = run_prep(o);
      ASSERT_EQ(sum.examples[0], 40);
      TokenShardReader r(find_shards(o.output, "train").at(0));
      ASSERT_EQ(r.num_docs(), 40);
      std::vector<int32_t> t(static_cast<size_t>(r.num_tokens()));
      r.read_tokens(0, r.num_tokens(), t.data());
      for (size_t i = 0; i < docs.size(); ++i) {
        const std::vector<int32_t> one(t.begin() + r.doc_offsets()[i], t.begin() + r.doc_offsets()[i + 1]);
        EXPECT_EQ(tok->decode(one), docs[i] + "<|endoftext|>") << "document " << i;
      }
    }
  }
  jsonl[38] = "{not json";
  const std::string bad = write_lines(d + "/bad.jsonl", jsonl);
  PrepOptions o;
  o.inputs = {bad};
  o.output = d + "/bad";
  o.threads = 3;
  const std::string e = input_error([&] { run_prep(o); });
  EXPECT_NE(e.find(bad + ":39: "), std::string::npos) << e;
  EXPECT_TRUE(find_shards(o.output, "train").empty()) << "a failed run left shards";
}

TEST(Prep, RefusesExistingOutputUnlessOverwriteAndReadsPlainText) {
  const std::string d = temp_dir("prep_txt");
  {
    std::ofstream(d + "/book.txt") << "First paragraph,\nstill first.\n\nSecond one.\n\n\nThird.\n";
  }
  PrepOptions o;
  o.inputs = {d + "/book.txt"};
  o.output = d + "/b";
  const PrepSummary s = run_prep(o);
  EXPECT_EQ(s.examples[0], 3);
  EXPECT_NE(input_error([&] { run_prep(o); }).find("output exists"), std::string::npos);
  o.overwrite = true;
  EXPECT_EQ(run_prep(o).examples[0], 3);
  TokenShardReader r(d + "/b-train-00000.h5");
  std::vector<int32_t> t(static_cast<size_t>(r.doc_offsets()[1]));
  r.read_tokens(0, r.doc_offsets()[1], t.data());
  EXPECT_EQ(make_byte_tokenizer()->decode(t), "First paragraph,\nstill first.<|endoftext|>");
}

}  // namespace
}  // namespace shardtune
