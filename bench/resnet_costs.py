"""The resnet space's costs on this machine, as JSON: first compile of the calib/eval switch
programs, eval time, and the composed CPU trainer's gradient step against one fused jit of the
same subnet's math (smallest, middle, largest subnets).

    .venv/bin/python bench/resnet_costs.py --width-mult 0.5 --resolution 28 --batch 64

Run it without the persistent compilation cache (the default here) to time compiles cold.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from kernels.tests.compilations import Count, count_compilations
from search_spaces import get_space
from search_spaces.engine import subnet_loss
from search_spaces.layers import preprocess

MEAN, STD = 0.1, 0.3


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1e3, 1)


def _fused_grad(space, arch, images, labels):
    """jit(value_and_grad) of the subnet's whole forward at static shapes: what composing costs."""
    res = arch.resolution

    def loss_fn(p):
        return subnet_loss(space.subnet_apply(p, preprocess(images, res, MEAN, STD), arch), labels, None, False)

    return jax.jit(jax.value_and_grad(loss_fn))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--resolution", type=int, default=28)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    res = args.resolution
    space = get_space("resnet", width_mult=args.width_mult, in_channels=1, num_classes=10, resolutions=(res,))
    params = space.init_supernet(jax.random.key(0))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (args.batch, res, res, 1), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, (args.batch,)).astype(np.int32))
    calib = jax.jit(lambda p, im, a: space.supernet_apply(p, None, preprocess(im, res, MEAN, STD), a, mode="calib")[1])
    evaluate = jax.jit(lambda p, s, im, a: space.supernet_apply(p, s, preprocess(im, res, MEAN, STD), a, mode="eval"))

    largest, smallest = space.largest(), space.smallest()
    width = space.config.width_choices[1]
    middle = dataclasses.replace(largest, stem_width=width, stages=tuple(
        (width, (space.config.expand_choices[1],) * space.config.depth_choices(s)[1])
        for s in range(space.config.num_stages)))
    archs = {"smallest": smallest, "middle": middle, "largest": largest}

    out = {"width_mult": args.width_mult, "resolution": res, "batch": args.batch,
           "archs": {k: space.encode(a) for k, a in archs.items()}}
    arr = jnp.asarray(space.arch_arrays(largest))
    t = time.perf_counter()
    stats = jax.block_until_ready(calib(params, images, arr))
    out["calib_compile_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    jax.block_until_ready(evaluate(params, stats, images, arr))
    out["eval_compile_s"] = round(time.perf_counter() - t, 2)

    eval_recompiles = Count()

    def _eval_ms(fn, repeats):
        with count_compilations() as compiled:
            ms = _median_ms(fn, repeats)
        eval_recompiles.n += compiled.n
        return ms

    trainer = space.make_trainer(MEAN, STD, 0.0, "xla")
    zeros = jax.jit(lambda p: jax.tree.map(jnp.zeros_like, p))
    for name, arch in archs.items():
        arr = jnp.asarray(space.arch_arrays(arch))
        stats = calib(params, images, arr)

        def composed(arch=arch):
            return trainer.accumulate_grad(params, zeros(params), arch, images, labels)[2]

        fused = _fused_grad(space, arch, images, labels)
        t = time.perf_counter()
        jax.block_until_ready(composed())
        first = time.perf_counter() - t
        jax.block_until_ready(fused(params))
        out[name] = {
            "mmacs": round(space.flops(arch) / 1e6, 1),
            "eval_ms": _eval_ms(lambda: evaluate(params, stats, images, arr), args.repeats),
            "train_first_call_s": round(first, 2),
            "train_composed_ms": _median_ms(composed, args.repeats),
            "train_fused_static_ms": _median_ms(lambda: fused(params), args.repeats),
        }
    # one program serves every subnet: the eval calls after the first compile nothing
    out["eval_recompiles"] = eval_recompiles.n
    print(json.dumps(out))


if __name__ == "__main__":
    main()
