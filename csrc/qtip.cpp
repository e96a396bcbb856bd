// Every schema of the `qtip` namespace, in one place. Declared in C++ so that a process without Python
// (an AOTInductor runner) resolves them; kernels live in cpu/ and cuda/, fake kernels in qtip_ops/ops.py.
#include <torch/library.h>

TORCH_LIBRARY(qtip, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  m.def("rht(Tensor x, Tensor? signs, bool transpose=False, float scale=1.0) -> Tensor", tags);
  m.def("decode_states(Tensor states, str mode, int L, int V, Tensor? tlut=None) -> Tensor", tags);
  m.def("bitshift_decode(Tensor packed, int L, int K, int V, str mode, Tensor? tlut, int T=-1, "
        "bool tail_biting=True) -> Tensor",
        tags);
  m.def("viterbi_quantize(Tensor x, int L, int K, int V, str mode, Tensor? tlut, bool tail_biting=True) "
        "-> (Tensor packed, Tensor recon)",
        tags);
  m.def("gemv(Tensor x, Tensor packed, int m, int n, int L, int K, int V, str mode, Tensor? tlut) -> Tensor", tags);
}
