"""Cost in bits of the integer hyper-synthesis: file sizes with it vs with compressai's float h_s path.

    python -m bench.integer_cost --images DIR [--limit 6] [--qualities 1,4,8]

The float variant takes table indexes from compressai's build_indexes on float h_s outputs and means
rounded to the same 1/256 grid; everything else is identical, so the size difference is the price of
exactness (the float variant is not decodable across devices: that is the point of the integer one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import aecodec
from aecodec.model import AECModel


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--limit", type=int, default=6)
    parser.add_argument("--qualities", default="1,4,8")
    args = parser.parse_args(argv)
    model = aecodec.load_model()
    integer_hyper = model.latents.hyper
    reference = AECModel.from_weights(model).eval()  # compressai's float path

    def float_hyper(z_hat):
        with torch.no_grad():
            scales, means = reference.hyper_synthesis(z_hat)
        indexes = reference.gaussian_conditional.build_indexes(scales).long()
        return indexes, torch.floor(means.double() * 256).long()

    images = sorted(Path(args.images).glob("*.png"))[: args.limit]
    print("| quality | integer h_s bytes | float h_s bytes | cost |")
    print("|---|---|---|---|")
    for quality in map(float, args.qualities.split(",")):
        sizes = {"integer": 0, "float": 0}
        for path in images:
            for name, hyper in (("integer", integer_hyper), ("float", float_hyper)):
                model.latents.hyper = hyper
                sizes[name] += len(aecodec.encode(path, quality, weights=model))
        model.latents.hyper = integer_hyper
        cost = 100 * (sizes["integer"] / sizes["float"] - 1)
        print(f"| {quality:g} | {sizes['integer']} | {sizes['float']} | {cost:+.3f} % |")


if __name__ == "__main__":
    main()
