#!/usr/bin/env bash
# Decodes the fuzz corpus (or the files and folders given) with aecodec's C++ extension built under
# AddressSanitizer and UBSan; exits non-zero on any report or finding.
#   bench/sanitize.sh [FILE_OR_DIR...]    default: tests/data/fuzz/corpus tests/data/fuzz/regressions
# It builds in a scratch copy of the tracked files (their working-tree state), so this checkout's own
# extension is left as it is. Needs gcc with libasan/libubsan; Python itself is not instrumented, so
# libasan is preloaded and leak reports are off (the interpreter keeps memory until exit on purpose).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- "$repo/tests/data/fuzz/corpus" "$repo/tests/data/fuzz/regressions"
inputs=()
for path in "$@"; do inputs+=("$(realpath "$path")"); done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$repo" && git ls-files -z | xargs -0 tar -cf -) | tar -xf - -C "$work"
cd "$work"
AECODEC_SANITIZE=1 AECODEC_CUDA=0 AECODEC_REQUIRE_EXT=1 python setup.py -q build_ext --inplace >build.log 2>&1 ||
  { tail -30 build.log; exit 1; }
nm -D aecodec/_C*.so | grep __asan_report >/dev/null || { echo "the extension is not instrumented" >&2; exit 1; }
# libstdc++ too: the interpreter does not link it, and ASan's __cxa_throw interceptor needs it at start-up.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
PYTHONPATH="$work" python -c "import aecodec._native as n; assert n.HAS_EXT and n.__file__.startswith('$work'), n.__file__"
PYTHONPATH="$work" python -m bench.fuzz replay "${inputs[@]}"
