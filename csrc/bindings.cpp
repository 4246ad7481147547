// The only file that knows pybind11: exposes csrc/ops.h as aecodec._C.
#include <torch/csrc/utils/pybind.h>

#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "aecodec native coder: rANS lanes (CPU threads, CUDA decode) and fused symbol preparation";
  // A corrupt stream is the user's data, not our bug: it reaches Python as an aecodec.DecodeError.
  pybind11::register_exception<aec::CorruptStream>(m, "CorruptStreamError",
                                                   pybind11::module_::import("aecodec.errors").attr("DecodeError"));
  m.def("rans_encode", &aec::rans_encode, "Encode symbols into rANS lanes", pybind11::arg("symbols"),
        pybind11::arg("indexes"), pybind11::arg("cdfs"), pybind11::arg("lengths"), pybind11::arg("lanes"),
        pybind11::arg("threads"), pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("rans_decode", &aec::rans_decode, "Decode rANS lanes", pybind11::arg("payload"), pybind11::arg("lane_words"),
        pybind11::arg("indexes"), pybind11::arg("cdfs"), pybind11::arg("lengths"), pybind11::arg("lut"),
        pybind11::arg("threads"), pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("prepare_symbols", &aec::prepare_symbols, "Quantize around means and map to table symbols (CPU or CUDA)");
#ifdef AEC_WITH_CUDA
  m.def("rans_decode_cuda", &aec::rans_decode_cuda, "Decode rANS lanes on the GPU, one thread per lane");
  m.def("has_cuda", [] { return true; });
#else
  m.def("has_cuda", [] { return false; });
#endif
}
