"""The GPU path in one command, for a session lent a device machine (README, "On a lent GPU machine"):

    device tool: run(command="python3 -m bench.device_check; python3 -m bench.device_train run --minutes 5",
                     carry=[".device-train"], timeout_s=590)

It builds the extension with its CUDA part (AECODEC_REQUIRE_EXT=1), runs the coder tests (the CUDA
ones must run, not skip), encodes a photo-like image on the GPU and on the CPU and decodes every file on
both (a decode that succeeds has reproduced the encoder's symbols exactly: the header's symbols CRC is
checked), compares the pixels, and times 4K encode and decode on each device. The wheels that
`bench.device_train pack` puts in .device-train/ bring compressai for the tests that need it. Results:
$OUT/device_check.json and the test log; on a machine without CUDA it checks what the CPU can.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.device_train import python_path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_native.py", "tests/test_coder.py", "tests/test_determinism.py"]


def timed(function, repeats: int) -> tuple[object, float]:
    """function()'s result and its median wall time over `repeats` runs after one warm-up."""
    result = function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def cross_check(width: int, height: int, quality: float, repeats: int) -> dict:
    """Encode on each device, decode each file on each device: same symbols (or a DecodeError), pixels
    within a level; the wall times of each."""
    import numpy as np
    import torch

    import aecodec

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import natural_like

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    image = natural_like(height, width)
    files, report = {}, {"size": f"{width}x{height}", "quality": quality, "devices": devices, "encode_s": {}, "decode_s": {}}
    for device in devices:
        files[device], report["encode_s"][device] = timed(
            lambda: aecodec.encode(image, quality, mode="learned", device=device), repeats)
    report["bytes"] = {device: len(data) for device, data in files.items()}
    report["same_bytes"] = len({bytes(data) for data in files.values()}) == 1
    worst = 0
    for encoder, data in files.items():
        decoded = {}
        for decoder in devices:
            decoded[decoder], seconds = timed(
                lambda: aecodec.decode(data, device=decoder, precision="float32", output="numpy"), repeats)
            if encoder == decoder:
                report["decode_s"][decoder] = seconds
        reference = decoded["cpu"].astype(np.int16)
        worst = max(worst, *(int(np.abs(pixels.astype(np.int16) - reference).max()) for pixels in decoded.values()))
    report["max_pixel_difference_between_decoders"] = worst
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.device_check", description=__doc__.splitlines()[0])
    parser.add_argument("--no-build", action="store_true", help="use the extension as built")
    parser.add_argument("--size", default="3840x2160", help="image size for the timed encode/decode")
    parser.add_argument("--quality", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", help="folder for the results (default: $OUT, else the current folder)")
    args = parser.parse_args(argv)
    results = Path(args.results or os.environ.get("OUT") or ".")
    results.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=python_path(ROOT / ".device-train"))
    report = {}
    if not args.no_build:
        env.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
        build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=ROOT,
                               env=dict(env, AECODEC_REQUIRE_EXT="1"), capture_output=True, text=True)
        report["build"] = {"returncode": build.returncode, "tail": build.stderr[-2000:]}
        if build.returncode:
            print(build.stdout[-3000:], build.stderr[-3000:])
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", *TESTS], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    (results / "device_tests.log").write_text(tests.stdout + tests.stderr)
    report["tests"] = {"returncode": tests.returncode, "summary": tests.stdout.strip().splitlines()[-1:]}
    width, height = (int(v) for v in args.size.split("x"))
    sys.path[:0] = env["PYTHONPATH"].split(os.pathsep)  # compressai from the wheels, for this process too
    report["cross"] = cross_check(width, height, args.quality, args.repeats)
    import torch

    report["torch"] = torch.__version__
    report["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    report["cuda_tests_skipped"] = "no CUDA device" in tests.stdout
    (results / "device_check.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    if tests.returncode or report.get("build", {}).get("returncode") or (report["gpu"] and report["cuda_tests_skipped"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
