// Schemas of the fastgp ops, defined once; kernels are registered per device
// in cpu/ and cuda/, fake kernels and autograd in fastgp/ops.py.
#include <Python.h>
#include <torch/library.h>

// An empty Python module: importing fastgp._C only has to load this library
// so that the static registrations below run (no pybind11 needed).
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(fastgp, m) {
  // alpha * real + (1 - alpha) * fake with one alpha per sample (alpha: (B,)).
  m.def("interpolate(Tensor real, Tensor fake, Tensor alpha) -> Tensor");
  // Per-sample L2 norm over all non-batch dims of all grads, times inv_scale,
  // and the penalty weight * reduce_i phi(n_i). Returns (penalty, norms).
  m.def(
      "penalty_forward(Tensor[] grads, Tensor? inv_scale, float weight, float center, "
      "float power, bool one_sided, int reduction) -> (Tensor, Tensor)");
  // d penalty / d grads given d loss / d penalty and the forward's norms.
  m.def(
      "penalty_backward(Tensor grad_out, Tensor[] grads, Tensor norms, Tensor? inv_scale, "
      "float weight, float center, float power, bool one_sided, int reduction) -> Tensor[]");
}
