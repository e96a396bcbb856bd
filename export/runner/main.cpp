// qtip_runner: runs an AOTInductor package of a QTIP-quantized decoder (python -m qtip_ops.export DIR model.pt2)
// with no Python in the process: libtorch from the pip torch plus libqtip_ops_cpu (the `qtip` op schemas and
// CPU kernels, linked so their static registrations run at start-up).
//
//   qtip_runner PACKAGE.pt2 IDS.txt [LOGITS.f32]
//
// IDS.txt: one sequence of token ids per line (whitespace-separated, every line the same length) -> input_ids
// (batch, seq) int64. Prints the logits' shape, the argmax token at every position and a checksum, and writes
// the logits (batch, seq, vocab) as raw little-endian float32 to LOGITS.f32 when given. Exit status 1 with a
// message on stderr on any failure.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

std::vector<std::vector<int64_t>> read_ids(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open ids file " + path);
  std::vector<std::vector<int64_t>> rows;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<int64_t> row;
    std::string tok;
    while (fields >> tok) {
      size_t used = 0;
      long long v = 0;
      try {
        v = std::stoll(tok, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != tok.size() || v < 0) throw std::runtime_error(path + ": not a token id: '" + tok + "'");
      row.push_back(v);
    }
    if (row.empty()) continue;
    if (!rows.empty() && row.size() != rows.front().size())
      throw std::runtime_error(path + ": every line must hold the same number of ids (" +
                               std::to_string(rows.front().size()) + "), line " + std::to_string(rows.size() + 1) +
                               " has " + std::to_string(row.size()));
    rows.push_back(std::move(row));
  }
  if (rows.empty()) throw std::runtime_error(path + ": no token ids");
  return rows;
}

void require_qtip_ops() {
  // The package calls the ops through the dispatcher by name: fail early and clearly if they are missing.
  for (const char* op : {"qtip::rht", "qtip::gemv"}) {
    if (!c10::Dispatcher::singleton().findSchema({op, ""}).has_value())
      throw std::runtime_error(std::string("operator ") + op +
                               " is not registered: libqtip_ops_cpu was not loaded into this process");
  }
}

int64_t meta_int(const std::unordered_map<std::string, std::string>& meta, const std::string& key, int64_t fallback) {
  auto it = meta.find(key);
  if (it == meta.end() || it->second == "dynamic") return fallback;
  return std::stoll(it->second);
}

// The same checks as qtip_ops.aoti.check_input_ids: AOTInductor does not bound-check token ids.
void check_ids(const std::unordered_map<std::string, std::string>& meta, const at::Tensor& ids) {
  const int64_t batch = ids.size(0), seq = ids.size(1);
  if (meta_int(meta, "qtip.batch", batch) != batch)
    throw std::runtime_error("this package was exported for batch " + meta.at("qtip.batch") + ", got " +
                             std::to_string(batch) + " sequences");
  if (meta_int(meta, "qtip.seq_len", seq) != seq)
    throw std::runtime_error("this package was exported for sequences of " + meta.at("qtip.seq_len") +
                             " tokens, got " + std::to_string(seq));
  const int64_t max_seq = meta_int(meta, "qtip.max_seq_len", seq);
  if (seq > max_seq)
    throw std::runtime_error("sequence length must be in [1, " + std::to_string(max_seq) + "], got " +
                             std::to_string(seq));
  const int64_t vocab = meta_int(meta, "qtip.vocab_size", -1), top = ids.max().item<int64_t>();
  if (vocab > 0 && top >= vocab)
    throw std::runtime_error("token ids must be in [0, " + std::to_string(vocab) + "), got " + std::to_string(top));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::cerr << "usage: " << argv[0] << " PACKAGE.pt2 IDS.txt [LOGITS.f32]\n";
    return 2;
  }
  try {
    require_qtip_ops();
    const std::string package = argv[1];
    auto rows = read_ids(argv[2]);
    const int64_t batch = static_cast<int64_t>(rows.size()), seq = static_cast<int64_t>(rows.front().size());
    at::Tensor ids = at::empty({batch, seq}, at::kLong);
    for (int64_t b = 0; b < batch; ++b)
      std::copy(rows[b].begin(), rows[b].end(), ids.data_ptr<int64_t>() + b * seq);

    setenv("AOTI_RUNTIME_CHECK_INPUTS", "1", /*overwrite=*/0);  // the package's own shape checks, too
    auto t0 = std::chrono::steady_clock::now();
    torch::inductor::AOTIModelPackageLoader loader(package);
    auto t1 = std::chrono::steady_clock::now();
    check_ids(loader.get_metadata(), ids);
    std::vector<at::Tensor> outputs = loader.run({ids});
    auto t2 = std::chrono::steady_clock::now();
    if (outputs.size() != 1) throw std::runtime_error("expected 1 output, got " + std::to_string(outputs.size()));
    at::Tensor logits = outputs[0].to(at::kFloat).contiguous();

    std::cout << "package: " << package << "\n";
    std::cout << "input_ids: " << batch << " x " << seq << "\n";
    std::cout << "logits: " << logits.sizes() << " float32\n";
    at::Tensor top = logits.argmax(-1);
    for (int64_t b = 0; b < batch; ++b) {
      std::cout << "argmax[" << b << "]:";
      for (int64_t s = 0; s < seq; ++s) std::cout << " " << top[b][s].item<int64_t>();
      std::cout << "\n";
    }
    const double sum = logits.to(at::kDouble).sum().item<double>();
    const double abs_sum = logits.to(at::kDouble).abs().sum().item<double>();
    std::printf("checksum: sum=%.6f abs_sum=%.6f\n", sum, abs_sum);
    std::printf("time: load %.1f ms, run %.1f ms\n", std::chrono::duration<double, std::milli>(t1 - t0).count(),
                std::chrono::duration<double, std::milli>(t2 - t1).count());
    if (argc == 4) {
      std::ofstream out(argv[3], std::ios::binary);
      out.write(reinterpret_cast<const char*>(logits.data_ptr<float>()),
                static_cast<std::streamsize>(logits.numel() * sizeof(float)));
      if (!out) throw std::runtime_error(std::string("cannot write ") + argv[3]);
      std::cout << "wrote " << argv[3] << " (" << logits.numel() * sizeof(float) << " bytes)\n";
    }
  } catch (const std::exception& err) {
    std::string msg = err.what();
    // c10::Error messages carry a C++ backtrace after the first lines; keep the message itself.
    auto cut = msg.find("\nException raised from");
    std::cerr << "qtip_runner: error: " << msg.substr(0, cut) << "\n";
    return 1;
  }
  return 0;
}
