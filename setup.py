"""Builds the native extension aecodec._C; everything else is in pyproject.toml.

The extension is optional: if it fails to build, aecodec installs as pure Python and says so
(AECODEC_REQUIRE_EXT=1 turns that into an error). Switches: AECODEC_NO_EXT=1 skips it;
AECODEC_CUDA=auto|0|1 (auto: build the CUDA part when torch has CUDA and nvcc is found);
AECODEC_SANITIZE=1 builds the C++ with AddressSanitizer and UBSan (for bench/sanitize.sh, not for use).
Install with `pip install --no-build-isolation -e .`: this file imports the installed torch.
"""

import os
import shutil
import sys

from setuptools import setup

# torch derives CUDA_HOME from the nvcc on PATH; here that is a wrapper in /usr/local/bin, which
# compiles but cannot link (-lcudart is not in /usr/local/lib).
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"


def extensions_and_cmdclass():
    if os.environ.get("AECODEC_NO_EXT") == "1":
        return [], {}
    import torch
    from torch.utils import cpp_extension as ce

    cuda_switch = os.environ.get("AECODEC_CUDA", "auto")
    with_cuda = cuda_switch == "1" or (
        cuda_switch == "auto" and torch.version.cuda is not None and ce.CUDA_HOME is not None and shutil.which("nvcc") is not None
    )
    if with_cuda and not torch.cuda.is_available():
        # Without a visible GPU torch cannot pick an architecture (and crashes trying): build for Hopper.
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    sources = ["csrc/cpu.cpp", "csrc/bindings.cpp"]
    macros = []
    extra = {"cxx": ["-O3", "-g0"]}
    link = []
    if os.environ.get("AECODEC_SANITIZE") == "1":
        # -fno-wrapv undoes Python's -fwrapv, under which signed overflow is defined and UBSan ignores it.
        sanitizers = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
        extra["cxx"] = ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-wrapv", *sanitizers]
        link = sanitizers
    if with_cuda:
        sources.append("csrc/cuda.cu")
        macros.append(("AEC_WITH_CUDA", None))
        extra["nvcc"] = ["-O3"]
        ext = ce.CUDAExtension("aecodec._C", sources, define_macros=macros, extra_compile_args=extra,
                               extra_link_args=link)
    else:
        ext = ce.CppExtension("aecodec._C", sources, define_macros=macros, extra_compile_args=extra, extra_link_args=link)

    class BuildExt(ce.BuildExtension):
        """A failed build leaves a working pure-Python install (unless AECODEC_REQUIRE_EXT=1)."""

        failed = set()

        def build_extension(self, extension):
            try:
                super().build_extension(extension)
            except Exception as exc:
                if os.environ.get("AECODEC_REQUIRE_EXT") == "1":
                    raise
                self.failed.add(extension.name)
                print(f"aecodec: {extension.name} not built ({exc}); using the pure-Python coder", file=sys.stderr)

        def copy_extensions_to_source(self):  # the editable / --inplace path
            keep, self.extensions = self.extensions, [e for e in self.extensions if e.name not in self.failed]
            try:
                super().copy_extensions_to_source()
            finally:
                self.extensions = keep

    return [ext], {"build_ext": BuildExt}


ext_modules, cmdclass = extensions_and_cmdclass()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
