"""Where a file's bytes go beyond the model's own rate: tables and coder, lane framing, header.

    python -m bench.overhead --images DIR [--limit 24] [--qualities 1,2,4,7,10] [--weights FILE]

"model" is what training minimises: -log2 of the float model's likelihoods of the rounded latents
(y under h_s's float scales and means, z under the factorized prior). "coded" is the rANS words and
escapes actually written: over the model by the integer h_s, the scale table's discrete scales and the
16-bit CDFs. "lanes" is the lane framing (lane count, word counts, each lane's 4-byte final state),
"header" the container's fixed fields. Every share is of the model's bytes, summed over the images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import aecodec
from aecodec import format as aec_format
from aecodec import image as images
from aecodec.coder import split_stream
from aecodec.model import AECModel
from aecodec.network import STRIDE

CODED_STREAMS = ("z", "y")


def model_bytes(net, path: Path, quality: float) -> float:
    x = images.to_network(images.load(path).colour, STRIDE)
    with torch.inference_mode():
        likelihoods = net(x, torch.tensor([quality]))["likelihoods"].values()
        return sum(-lik.log2().sum().item() for lik in likelihoods) / 8


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--qualities", default="1,2,4,7,10")
    parser.add_argument("--weights", help="weights file (default: the shipped model)")
    args = parser.parse_args(argv)
    model = aecodec.load_model(args.weights)
    reference = AECModel.from_weights(model).eval()  # the training model: its likelihoods
    paths = sorted(Path(args.images).glob("*.png"))[: args.limit]
    if not paths:
        raise SystemExit(f"error: no .png images in {args.images}")

    print(f"{len(paths)} images, model {model.model_id.hex()}; shares are of the model's bytes\n")
    print("| quality | model bytes | coded | lanes | header | file bytes | file vs model |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for quality in map(float, args.qualities.split(",")):
        total = {"model": 0.0, "coded": 0, "lanes": 0, "header": 0, "file": 0}
        for path in paths:
            data = aecodec.encode(path, quality, weights=model)
            _, streams = aec_format.unpack(data)
            words = {name: 2 * int(split_stream(streams[name])[0].sum()) for name in CODED_STREAMS}
            total["model"] += model_bytes(reference, path, quality)
            total["coded"] += sum(words.values()) + len(streams["escapes"])
            total["lanes"] += sum(len(streams[name]) - words[name] for name in CODED_STREAMS)
            total["header"] += len(data) - sum(len(s) for s in streams.values())
            total["file"] += len(data)
        base = total["model"]
        shares = [f"{100 * (total['coded'] / base - 1):+.2f} %", f"{100 * total['lanes'] / base:.2f} %",
                  f"{100 * total['header'] / base:.2f} %"]
        print(f"| {quality:g} | {base:.0f} | {' | '.join(shares)} | {total['file']} | {100 * (total['file'] / base - 1):+.2f} % |")
        results[quality] = total
    return results


if __name__ == "__main__":
    main()
