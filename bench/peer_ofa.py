"""Peer benchmark: nas's supernet training step against Once-for-All's own PyTorch model, same settings.

Prints one JSON line. OFA's side is ``ofa``'s ``OFAMobileNetV3`` (PyTorch, CPU) switched between subnets
with ``set_active_subnet``; nas's side is the library as ``nas train-supernet`` drives it
(nas_cli.training.supernet: make_trainer, TrainState, train_step) on the mobilenetv3 space. Both: width 1.0, 3 x R x R
inputs, 10 classes, batch B, AdamW (lr 3e-3, weight decay 1e-4) after clipping the global gradient norm
at 5, label smoothing 0.1 on the labels, and each pair of steps trains the same subnet (depth, kernel and
expand of every stage mapped one to one; OFA's stem stride is set to 1 as nas's is for 32 px inputs, so
both compute on the same feature-map sizes). Steps timed:

  smallest / middle / largest - one subnet on the labels, one update;
  sandwich - largest on the labels, then the smallest and 2 random subnets on its soft predictions
             (in-place distillation), the summed gradient applied once (nas's default recipe).

Step times are interleaved in one process (OFA then nas, the order alternating by repeat; repeat 0 is a
discarded warm-up; the random subnets of a sandwich step are the same for both), medians reported with
``step_ratios`` = nas / OFA. Peak memory (peak RSS from the kernel's rusage of the child) and warm-up
(process start to the end of the first sandwich step, imports and compilation included) come from
separate child processes, one per side, so neither sees the other's allocations. nas's child writes the
persistent XLA cache as ``nas train-supernet`` does (starting empty), and the timing process reads it.

Needs the ``bench`` extra (``pip install -e '.[bench]'``: torch and ofa).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types

T_START = time.perf_counter()  # a child's warm-up counts from here, before the frameworks are imported

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import numpy as np  # noqa: E402

SIZES = ("smallest", "middle", "largest")
STEPS = SIZES + ("sandwich",)
LR, WEIGHT_DECAY, LABEL_SMOOTHING, CLIP, NUM_RANDOM = 3e-3, 1e-4, 0.1, 5.0, 2


def map_count() -> int:
    """Memory mappings of this process (lines of /proc/self/maps), or -1 where there is no /proc."""
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:
        return -1


# --- the common subnets -------------------------------------------------------------------------
def nas_space(resolution: int, width_mult: float):
    from search_spaces import get_space

    opts = dict(in_channels=3, num_classes=10, resolutions=(resolution,))
    if width_mult != 1.0:
        opts["width_mult"] = width_mult
    return get_space("mobilenetv3", **opts)


def fixed_archs(space) -> dict:
    """smallest, middle (every stage at its middle depth, kernel and expand) and largest."""
    from search_spaces.mobilenetv3 import MobileNetV3Arch

    cfg = space.config
    mid = lambda xs: xs[len(xs) // 2]  # noqa: E731
    middle = MobileNetV3Arch(space.largest().resolution, tuple(
        ((mid(cfg.kernel_choices), mid(cfg.expand_choices)),) * mid(cfg.depth_choices) for _ in range(cfg.num_stages)))
    return {"smallest": space.smallest(), "middle": middle, "largest": space.largest()}


def sandwich_archs(space, rng: np.random.Generator) -> list:
    """The sandwich rule's subnets of one step: largest (the teacher), smallest, 2 random."""
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(NUM_RANDOM)]


def ofa_choice(arch, max_depth: int) -> dict:
    """``set_active_subnet`` arguments for the nas arch: per-block kernel and expand, per-stage depth.

    OFA's blocks are numbered stage by stage, ``max_depth`` slots each; a stage runs its first ``d``
    blocks, so the slots past the depth are never used (filled with the stage's last block's choice)."""
    ks, e = [], []
    for blocks in arch.stages:
        for b in range(max_depth):
            k, x = blocks[min(b, len(blocks) - 1)]
            ks.append(k)
            e.append(x)
    return {"ks": ks, "e": e, "d": list(arch.depths)}


# --- OFA (PyTorch) ------------------------------------------------------------------------------
class OFASide:
    def __init__(self, space, width_mult: float, images: np.ndarray, labels: np.ndarray, threads: int):
        import torch
        import torch.nn.functional as F
        from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3

        torch.manual_seed(0)
        torch.set_num_threads(threads)
        cfg = space.config
        self.torch, self.F, self.max_depth = torch, F, cfg.max_depth
        self.net = OFAMobileNetV3(n_classes=cfg.num_classes, dropout_rate=0.0, width_mult=width_mult,
                                  ks_list=list(cfg.kernel_choices), expand_ratio_list=list(cfg.expand_choices),
                                  depth_list=list(cfg.depth_choices))
        # OFA's stem has stride 2 for ImageNet; nas's has stride 1 for 32 px inputs: the same maps here.
        self.net.first_conv.conv.stride = (cfg.stem_stride,) * 2
        self.net.first_conv.stride = cfg.stem_stride
        self.net.train()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        x = images.astype(np.float32) / 255.0
        x = (x - x.mean()) / x.std()
        self.x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # (B, C, H, W)
        self.y = torch.from_numpy(labels.astype(np.int64))
        self.params = sum(p.numel() for p in self.net.parameters())

    def step(self, archs) -> float:
        """One update over ``archs`` (the first on the labels, the rest distilled from it)."""
        torch, F = self.torch, self.F
        self.opt.zero_grad(set_to_none=True)
        soft, total = None, 0.0
        for i, arch in enumerate(archs):
            self.net.set_active_subnet(**ofa_choice(arch, self.max_depth))
            logits = self.net(self.x)
            if soft is None:
                loss = F.cross_entropy(logits, self.y, label_smoothing=LABEL_SMOOTHING)
                if len(archs) > 1:
                    soft = F.softmax(logits.detach(), dim=-1)
            else:
                loss = torch.sum(-soft * F.log_softmax(logits, dim=-1), dim=-1).mean()
            (loss / len(archs)).backward()  # nas scales the summed gradient by 1/len(archs)
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), CLIP)
        self.opt.step()
        return total / len(archs)


# --- nas (JAX) ------------------------------------------------------------------------------------
class NasSide:
    def __init__(self, space, images: np.ndarray, labels: np.ndarray):
        import jax

        from nas_cli.config import TrainConfig
        from nas_cli.training.supernet import TrainState, make_optimizer, make_trainer, train_step

        self.jax, self.train_step = jax, train_step
        cfg = TrainConfig(space="mobilenetv3", dataset="npz", batch_size=len(labels), lr=LR,
                          weight_decay=WEIGHT_DECAY, label_smoothing=LABEL_SMOOTHING, kernels="xla")
        # make_trainer reads only the data set's normalisation; the same one as OFA's side
        x = images.astype(np.float32) / 255.0
        self.net = make_trainer(cfg, space, types.SimpleNamespace(mean=float(x.mean()), std=float(x.std())))
        params = space.init_supernet(jax.random.key(0))
        self.state = TrainState.create(params, make_optimizer(cfg, 1000))
        self.batch = (jax.device_put(images), jax.device_put(labels.astype(np.int32)))
        self.params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))

    def step(self, archs) -> float:
        self.state, metrics = self.train_step(self.state, self.net, archs, self.batch)
        return float(metrics["loss"])  # waits for the step (and its update) to finish

    def sync(self):
        self.jax.block_until_ready(self.state.params)


def warm_nas(side: NasSide, space) -> None:
    """Compile every program the timed steps use: each (stage, kernel, expand) variant, with and without
    distillation, as a subnet of a sandwich step, the one-subnet steps and a whole sandwich step."""
    import itertools

    from search_spaces.mobilenetv3 import MobileNetV3Arch

    cfg = space.config
    r = space.largest().resolution
    for k, e in itertools.product(cfg.kernel_choices, cfg.expand_choices):
        uniform = MobileNetV3Arch(r, tuple(((k, e),) * cfg.max_depth for _ in range(cfg.num_stages)))
        side.step([space.largest(), uniform])
    for arch in fixed_archs(space).values():
        side.step([arch])
    # a step of the timed sandwich's length: the mean of its 4 losses is a program of its own (jitted
    # over a list of 4 scalars), which the 1- and 2-subnet steps above did not compile; traced with
    # jax_log_compiles as the one recompile of the first complete run's timing (bench/RESULTS.md)
    side.step(sandwich_archs(space, np.random.default_rng(2)))


# --- child processes: memory and warm-up ------------------------------------------------------------
def child(args) -> dict:
    """One side alone in this process: the first sandwich step (warm-up), then every timed step once."""
    space = nas_space(args.resolution, args.width_mult)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.resolution, args.resolution, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.batch)
    out = {"side": args.child}
    if args.child == "ofa":
        side = OFASide(space, args.width_mult, images, labels, args.threads)
        side.step(sandwich_archs(space, rng))
    else:
        from kernels.tests.compilations import count_compilations

        side = NasSide(space, images, labels)
        with count_compilations() as compiled:
            side.step(sandwich_archs(space, rng))
        out["compiled_first_step"] = compiled.n
    out["warmup_s"] = round(time.perf_counter() - T_START, 3)
    for arch in fixed_archs(space).values():
        side.step([arch])
    side.step(sandwich_archs(space, rng))
    out["maps"] = map_count()
    return out


def run_child(side: str, args, cache: str) -> dict:
    """The child's JSON and its peak RSS (MiB), from the kernel's rusage of that one child (wait4).

    nas's child writes its programs to the persistent XLA cache ``cache`` (empty before it, so its
    warm-up compiles everything), as ``nas train-supernet`` does; the timing process then loads them."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", side, "--batch", str(args.batch),
           "--resolution", str(args.resolution), "--width-mult", str(args.width_mult), "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": os.path.dirname(_HERE), "JAX_COMPILATION_CACHE_DIR": cache,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.3"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"the {side} child exited {proc.returncode}:\n{err.read()[-3000:]}")
        result = json.loads(out.read().strip().splitlines()[-1])
    result["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)  # ru_maxrss is in KiB on Linux
    return result


# --- the benchmark ------------------------------------------------------------------------------------
def run(args) -> dict:
    cache = tempfile.mkdtemp(prefix="peer-ofa-xla-")
    try:
        return _run(args, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _run(args, cache: str) -> dict:
    children = {side: run_child(side, args, cache) for side in ("ofa", "nas")}

    import jax
    import torch

    from kernels.tests.compilations import count_compilations

    jax.config.update("jax_compilation_cache_dir", cache)  # the nas child's programs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)

    space = nas_space(args.resolution, args.width_mult)
    archs = fixed_archs(space)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.resolution, args.resolution, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.batch)
    ofa = OFASide(space, args.width_mult, images, labels, args.threads)
    nas = NasSide(space, images, labels)
    t0 = time.perf_counter()
    with count_compilations() as compiled:
        warm_nas(nas, space)
    nas_warm_s = time.perf_counter() - t0
    maps_after_warmup = map_count()

    times = {side: {s: [] for s in STEPS} for side in ("ofa", "nas")}
    step_rng = np.random.default_rng(1)
    with count_compilations() as recompiled:
        for rep in range(args.repeats + 1):  # repeat 0 is a discarded warm-up
            plan = {s: [archs[s]] for s in SIZES}
            plan["sandwich"] = sandwich_archs(space, step_rng)
            for s, step_archs in plan.items():
                order = (("ofa", ofa), ("nas", nas)) if rep % 2 == 0 else (("nas", nas), ("ofa", ofa))
                for name, side in order:
                    t = time.perf_counter()
                    side.step(step_archs)
                    if rep:
                        times[name][s].append((time.perf_counter() - t) * 1e3)
            if args.verbose:
                print(f"repeat {rep}: " + ", ".join(
                    f"{s} {times['nas'][s][-1]:.0f}/{times['ofa'][s][-1]:.0f} ms" for s in STEPS if times['nas'][s]),
                      file=sys.stderr, flush=True)
    med = {side: {s: round(statistics.median(v), 2) for s, v in t.items()} for side, t in times.items()}
    return {
        "command": " ".join([os.path.relpath(sys.argv[0], os.path.dirname(_HERE))] + sys.argv[1:]),
        "setting": {"space": "mobilenetv3", "width_mult": args.width_mult, "resolution": args.resolution,
                    "batch": args.batch, "classes": 10, "optimizer": f"AdamW lr {LR} wd {WEIGHT_DECAY}, clip {CLIP}",
                    "sandwich": f"largest + smallest + {NUM_RANDOM} random, in-place distillation"},
        "archs": {k: space.encode(a) for k, a in archs.items()},
        "repeats": args.repeats,
        "step_ratios": {s: round(med["nas"][s] / med["ofa"][s], 3) for s in STEPS},
        "memory_ratio": round(children["nas"]["peak_rss_mib"] / children["ofa"]["peak_rss_mib"], 3),
        "warmup_ratio": round(children["nas"]["warmup_s"] / children["ofa"]["warmup_s"], 3),
        "step_ms": med,
        "peak_rss_mib": {k: c["peak_rss_mib"] for k, c in children.items()},
        "warmup_s": {k: c["warmup_s"] for k, c in children.items()},
        "params": {"ofa": ofa.params, "nas": nas.params},
        "nas_compiled_programs_after_warmup": compiled.n,
        "nas_compiled_first_sandwich_step": children["nas"]["compiled_first_step"],
        "nas_recompiles_during_timing": recompiled.n,
        "nas_warmup_in_timing_process_s": round(nas_warm_s, 2),  # with the nas child's persistent cache
        "memory_maps_after_warmup": {"timing_process": maps_after_warmup,
                                     "ofa_child": children["ofa"]["maps"], "nas_child": children["nas"]["maps"]},
        "threads": {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
                    "xla_cpu": "all cores (XLA's default)", "cpu_count": os.cpu_count()},
        "versions": {"torch": torch.__version__, "jax": jax.__version__, "python": sys.version.split()[0]},
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "peak_rss_mib_timing_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="PyTorch's threads [default: cores]")
    p.add_argument("--verbose", action="store_true", help="progress on stderr")
    p.add_argument("--child", choices=["ofa", "nas"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.batch, args.resolution, args.repeats, args.threads) < 1:
        p.error("--batch, --resolution, --repeats and --threads must be >= 1")
    try:
        import ofa  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        p.error(f"needs torch and ofa (pip install -e '.[bench]'): {e}")
    print(json.dumps(child(args) if args.child else run(args)), flush=True)


if __name__ == "__main__":
    main()
