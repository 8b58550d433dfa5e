"""`nas import ofa`: a Once-for-All pretrained supernet (PyTorch ``.pth``) as a `nas` training run.

The checkpoint is read without torch (:mod:`nas_cli.importing.torch_pickle`), its state dict mapped onto the
``mobilenetv3-imagenet`` space (:func:`search_spaces.mobilenetv3.imagenet_config`, Once-for-All's
own network), or for ``--net ofa_resnet50`` onto ``resnet-imagenet`` (:mod:`.ofa_resnet`), and written
as a run: ``config.json`` (ImageNet normalisation, the data if given),
``checkpoint/`` (the parameters, and OFA's BatchNorm running statistics as ``stats``),
``final.json`` (``largest``, ``smallest``), ``data.json`` and ``imported.json`` (the source). `nas
search`, `nas finetune` and `nas export subnet` then use it like any run.

The mapping (OFA -> nas), for every layer of ``OFAMobileNetV3``:

* conv weights (O, I, kh, kw) -> (kh, kw, I, O) for the stem, (I, O) for 1x1 convs, (kh, kw, C) for
  depthwise ones; ``nn.Linear`` (O, I) -> (I, O);
* ``BatchNorm2d`` weight/bias -> ``scale``/``bias``, running_mean/var -> the ``stats`` pytree
  (eps 1e-5 in both; ``num_batches_tracked`` is not used);
* the kernel transforms ``7to5_matrix`` / ``5to3_matrix`` -> ``tf5`` / ``tf3`` transposed: OFA applies
  ``F.linear(filter, M)`` = ``filter @ M.T`` to each channel's flattened centre crop, 7 -> 5 -> 3, and
  :func:`search_spaces.layers.centre_kernel` computes ``crop.T @ tf`` in the same order;
* the later blocks of a stage are stacked (``rest``), as :func:`init_supernet` lays them out.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import jax
import numpy as np

from nas_cli import runs
from nas_cli.config import TrainConfig
from nas_cli.data import DATA_INFO, dataset_info
from nas_cli.errors import UserError
from nas_cli.runs.identity import file_sha256
from nas_cli.runs.imported import IMPORTED, fixed_stats
from nas_cli.importing import ofa_resnet
from nas_cli.importing.ofa_keys import canonical_key
from nas_cli.importing.torch_pickle import read_pth
from predictors.files import atomic_write_json
from search_spaces import get_space
from search_spaces.layers import init_stats
from search_spaces.mobilenetv3 import IMAGENET_RESOLUTIONS

#: the space an OFA MobileNetV3 imports into
SPACE = "mobilenetv3-imagenet"
#: Once-for-All's published MobileNetV3 supernets (other widths parse too: your own OFA training)
PUBLISHED = ("ofa_mbv3_d234_e346_k357_w1.0", "ofa_mbv3_d234_e346_k357_w1.2", ofa_resnet.PUBLISHED)
_NET_RE = re.compile(r"^ofa_mbv3_d(\d+)_e(\d+)_k(\d+)_w(\d+(?:\.\d+)?)$")
#: the step a checkpoint of an imported run is saved as (no epoch trained here)
STEP = 0


@dataclasses.dataclass(frozen=True)
class OfaNet:
    """What a ``--net`` name says: OFA's depth, expand and kernel choices and width multiplier, and
    the space it imports into."""

    name: str
    depths: tuple[int, ...]
    expands: tuple[int, ...]
    kernels: tuple[int, ...]
    width_mult: float
    space: str = SPACE


def parse_net(name: str) -> OfaNet:
    """``ofa_mbv3_d234_e346_k357_w1.0`` or ``ofa_resnet50`` -> its choices.

    ``ofa_resnet50`` is OFA's published ``OFAResNets(depth_list=[0, 1, 2], expand_ratio_list=[0.2,
    0.25, 0.35], width_mult_list=[0.65, 0.8, 1.0])``; ``ofa_resnet50_w<m>`` the same with every width
    times ``m`` (see :func:`search_spaces.resnet.imagenet_config` for its channel rounding).

    Raises:
      UserError: another name, naming the known ones.
    """
    m = _NET_RE.match(str(name))
    if m:
        depths, expands, kernels = (tuple(int(c) for c in m.group(i)) for i in (1, 2, 3))
        width = float(m.group(4))
        if (depths, expands, kernels) == ((2, 3, 4), (3, 4, 6), (3, 5, 7)) and 0 < width <= 16:
            return OfaNet(str(name), depths, expands, kernels, width)
    m = ofa_resnet.NET_RE.match(str(name))
    if m:
        width = float(m.group(1)) if m.group(1) else 1.0
        if 0 < width <= 16:
            return OfaNet(str(name), (0, 1, 2), (20, 25, 35), (3,), width, ofa_resnet.SPACE)
    raise UserError(f"--net {name!r} is not an importable Once-for-All network; choose one of: "
                    f"{', '.join(PUBLISHED)} (ofa_mbv3_d234_e346_k357_w<width> and ofa_resnet50_w<width> "
                    "for other widths)")


def space_for(net: OfaNet, num_classes: int, resolutions=IMAGENET_RESOLUTIONS):
    return get_space(net.space, width_mult=net.width_mult, in_channels=3, num_classes=num_classes,
                     resolutions=tuple(resolutions))


def _state_dict(obj, path) -> dict[str, np.ndarray]:
    """The state dict of a loaded checkpoint: itself, or OFA's published ``{"state_dict": ...}``."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        raise UserError(f"checkpoint {path} holds no state dict (a dict of named tensors, or "
                        "{'state_dict': ...} as Once-for-All publishes them)")
    out = {}
    for key, value in obj.items():
        if key.endswith("num_batches_tracked"):
            continue
        if not isinstance(value, np.ndarray):
            raise UserError(f"checkpoint {path}: {key} is no tensor ({type(value).__name__})")
        out[canonical_key(key)] = value
    return out


def _expected(cfg) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every canonical OFA key of the network of ``cfg`` -> (where it goes, its OFA shape).

    Where: ``"p:<path>"`` / ``"s:<path>"`` into params / stats, path ``/``-separated, and a block of a
    stage's ``rest`` written ``stages/<s>/rest/<i>/...`` (stacked afterwards)."""
    e: dict[str, tuple[str, tuple[int, ...]]] = {}

    def bn(prefix, where, c):
        e[f"{prefix}.weight"] = (f"p:{where}/scale", (c,))
        e[f"{prefix}.bias"] = (f"p:{where}/bias", (c,))
        e[f"{prefix}.running_mean"] = (f"s:{where}/mean", (c,))
        e[f"{prefix}.running_var"] = (f"s:{where}/var", (c,))

    c0, c1 = cfg.stem_channels, cfg.first_channels
    e["first_conv.conv.weight"] = ("p:stem/w", (c0, cfg.in_channels, 3, 3))
    bn("first_conv.bn", "stem/bn", c0)
    e["blocks.0.conv.depth_conv.conv.weight"] = ("p:first/dw", (c0, 1, 3, 3))
    bn("blocks.0.conv.depth_conv.bn", "first/bn1", c0)
    e["blocks.0.conv.point_linear.conv.weight"] = ("p:first/proj", (c1, c0, 1, 1))
    bn("blocks.0.conv.point_linear.bn", "first/bn2", c1)
    kmax, emax = max(cfg.kernel_choices), max(cfg.expand_choices)
    ks = sorted(cfg.kernel_choices)
    for s in range(cfg.num_stages):
        for b in range(cfg.max_depth):
            cin, cout, _ = cfg.block_io(s, b)
            h = cin * emax
            where = f"stages/{s}/first" if b == 0 else f"stages/{s}/rest/{b - 1}"
            pre = f"blocks.{1 + s * cfg.max_depth + b}.conv"
            e[f"{pre}.inverted_bottleneck.conv.weight"] = (f"p:{where}/expand", (h, cin, 1, 1))
            bn(f"{pre}.inverted_bottleneck.bn", f"{where}/bn1", h)
            e[f"{pre}.depth_conv.conv.weight"] = (f"p:{where}/dw", (h, 1, kmax, kmax))
            for small, large in zip(ks[:-1], ks[1:]):
                e[f"{pre}.depth_conv.conv.{large}to{small}_matrix"] = (f"p:{where}/tf{small}", (small ** 2,) * 2)
            bn(f"{pre}.depth_conv.bn", f"{where}/bn2", h)
            if cfg.stage_se[s]:
                m = cfg.se_mid(h)
                e[f"{pre}.depth_conv.se.fc.reduce.weight"] = (f"p:{where}/se/rw", (m, h, 1, 1))
                e[f"{pre}.depth_conv.se.fc.reduce.bias"] = (f"p:{where}/se/rb", (m,))
                e[f"{pre}.depth_conv.se.fc.expand.weight"] = (f"p:{where}/se/ew", (h, m, 1, 1))
                e[f"{pre}.depth_conv.se.fc.expand.bias"] = (f"p:{where}/se/eb", (h,))
            e[f"{pre}.point_linear.conv.weight"] = (f"p:{where}/proj", (cout, h, 1, 1))
            bn(f"{pre}.point_linear.bn", f"{where}/bn3", cout)
    e["final_expand_layer.conv.weight"] = ("p:head/w", (cfg.head_channels, cfg.stage_channels[-1], 1, 1))
    bn("final_expand_layer.bn", "head/bn", cfg.head_channels)
    e["feature_mix_layer.conv.weight"] = ("p:feature/w", (cfg.feature_channels, cfg.head_channels, 1, 1))
    e["classifier.linear.weight"] = ("p:classifier/w", (cfg.num_classes, cfg.feature_channels))
    e["classifier.linear.bias"] = ("p:classifier/b", (cfg.num_classes,))
    return e


def _to_nas(where: str, a: np.ndarray) -> np.ndarray:
    """An OFA tensor in the layout ``where`` holds it (module docstring)."""
    leaf = where.rsplit("/", 1)[1]
    if where == "p:stem/w":
        return a.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
    if leaf == "dw":
        return a[:, 0].transpose(1, 2, 0)  # (C, 1, k, k) -> (k, k, C)
    if a.ndim == 4:
        return a[:, :, 0, 0].T  # 1x1 conv (O, I, 1, 1) -> (I, O)
    if a.ndim == 2:
        return a.T  # nn.Linear (O, I) -> (I, O); a kernel transform M -> M.T
    return a


def _set(tree: dict, path: list[str], value) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def _stack_stages(tree: dict, num_stages: int) -> None:
    """``stages/<s>/{first, rest/<i>}`` dicts -> a list of ``{"first", "rest"}`` with ``rest`` stacked."""
    stages = []
    for s in range(num_stages):
        st = tree["stages"][str(s)]
        rest = [st["rest"][str(i)] for i in range(len(st["rest"]))]
        stages.append({"first": st["first"], "rest": jax.tree.map(lambda *a: np.stack(a), *rest)})
    tree["stages"] = stages


def convert(state: dict[str, np.ndarray], cfg, net_name: str, path) -> tuple[dict, dict]:
    """(params, BatchNorm stats) of the space of ``cfg`` from an OFA state dict (canonical keys).

    Raises:
      UserError: a key missing or left over, or a shape that is not the network's, naming the key.
    """
    resnet = getattr(cfg, "ofa_imagenet", False)
    expected = ofa_resnet.expected(cfg) if resnet else _expected(cfg)
    to_nas = ofa_resnet.to_nas if resnet else _to_nas
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        what = (f"lacks {len(missing)} of its tensors (first: {missing[0]})" if missing
                else f"has {len(extra)} tensors it does not have (first: {extra[0]})")
        raise UserError(f"checkpoint {path} is not {net_name}: it {what}; is --net right?")
    params: dict = {}
    stats: dict = {}
    for key, (where, shape) in expected.items():
        a = state[key]
        if tuple(a.shape) != shape:
            raise UserError(f"checkpoint {path} is not {net_name}: {key} has shape {tuple(a.shape)}, the network's "
                            f"is {shape}; is --net right?")
        if not np.issubdtype(a.dtype, np.floating):
            raise UserError(f"checkpoint {path}: {key} is {a.dtype}, not floating point")
        if not np.all(np.isfinite(a)):
            raise UserError(f"checkpoint {path}: {key} holds non-finite values")
        kind, rel = where.split(":", 1)
        _set(params if kind == "p" else stats, rel.split("/"), np.asarray(to_nas(where, a), np.float32))
    _stack_stages(params, cfg.num_stages)
    _stack_stages(stats, cfg.num_stages)
    return params, stats


def _num_classes(state: dict[str, np.ndarray], path) -> int:
    w = state.get("classifier.linear.weight")
    if w is None or w.ndim != 2:
        raise UserError(f"checkpoint {path} has no classifier.linear.weight (N, features): it is not an "
                        "OFAMobileNetV3 or OFAResNets state dict")
    return int(w.shape[0])


def read_supernet(checkpoint: str | Path, net: str, resolutions=IMAGENET_RESOLUTIONS):
    """(space, params, stats) of an OFA MobileNetV3 or ResNet checkpoint, checked against ``--net``."""
    ofa = parse_net(net)
    state = _state_dict(read_pth(checkpoint), checkpoint)
    space = space_for(ofa, _num_classes(state, checkpoint), resolutions)
    params, stats = convert(state, space.config, ofa.name, checkpoint)
    # same structure as the space's own (what the trainer, search and export restore into)
    target = jax.eval_shape(space.init_supernet, jax.random.key(0))
    if jax.tree.structure(target) != jax.tree.structure(params):
        raise AssertionError("imported params do not have the space's structure")
    assert jax.tree.structure(init_stats(target)) == jax.tree.structure(stats)
    return space, params, stats


def import_ofa(checkpoint: str | Path, net: str, out: str | Path, *, dataset: str = "folder",
               data_dir: str | None = None, resolutions=None, batch_size: int = 64, calib_images: int = 2000,
               seed: int = 0, log=print) -> dict:
    """Writes the run ``out`` from an OFA checkpoint; returns its final.json record.

    Without ``data_dir`` the run has no data: `nas export subnet` works on it (BatchNorm with OFA's
    running statistics, parity on synthetic images); search and fine-tuning ask for data.

    Raises:
      UserError: bad ``net``, checkpoint or data (one line), ``out`` already holding a run.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder to create")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty; choose a new folder")
    if data_dir is None and dataset != "folder":
        raise UserError(f"--dataset {dataset} needs --data-dir")
    resolutions = tuple(resolutions) if resolutions else IMAGENET_RESOLUTIONS
    ofa = parse_net(net)  # the cheap check first
    cfg = TrainConfig(space=ofa.space, dataset=dataset, data_dir=data_dir, epochs=1, batch_size=batch_size,
                      calib_images=max(calib_images, batch_size), seed=seed, resolutions=resolutions,
                      width_mult=parse_net(net).width_mult, normalize="imagenet",
                      image_size=max(resolutions) if dataset == "folder" else None)
    log(f"reading {checkpoint}")
    space, params, stats = read_supernet(checkpoint, net, resolutions)
    num_classes = space.config.num_classes
    data = None
    if data_dir is not None:
        data = runs.load_run_dataset(cfg)
        if data.num_classes != num_classes:
            raise UserError(f"--data-dir {data_dir} has {data.num_classes} classes; the checkpoint's classifier has "
                            f"{num_classes} (one folder per ImageNet class, in sorted order, for OFA's)")
        if data.image_shape[2] != 3:
            raise UserError(f"--data-dir {data_dir} holds grayscale images; Once-for-All's networks take RGB")
    class_names = list(data.class_names) if data is not None else [str(i) for i in range(num_classes)]

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / runs.CONFIG, cfg.to_json())
    runs.start_checksums(out)
    runs.save_checkpoint(out, {"params": params, "stats": stats}, STEP)
    record = {"net": parse_net(net).name, "checkpoint": str(Path(checkpoint).resolve()),
              "sha256": file_sha256(Path(checkpoint)), "space": space.name, "space_options": {
                  **dict(space.options), "resolutions": list(resolutions)},
              "class_names": class_names, "bn_stats": "checkpoint/0/stats (OFA's running statistics)",
              "data": data_dir}
    atomic_write_json(out / IMPORTED, record)
    if data is not None:
        atomic_write_json(out / DATA_INFO, dataset_info(data))
    else:
        atomic_write_json(out / DATA_INFO, {"dataset": None, "class_names": class_names, "num_classes": num_classes,
                                            "image_shape": [max(resolutions), max(resolutions), 3],
                                            "mean": [float(v) for v in fixed_stats(cfg, 3)[0]],
                                            "std": [float(v) for v in fixed_stats(cfg, 3)[1]]})
    final = {"largest": space.encode(space.largest()), "smallest": space.encode(space.smallest()), "epochs": 0,
             "class_names": class_names, "imported_from": record["net"]}
    atomic_write_json(out / runs.FINAL, final)
    log(f"imported {record['net']} ({num_classes} classes) into {out}: largest {final['largest']}")
    return final


def stored_stats(run: runs.Run) -> dict:
    """The BatchNorm running statistics an imported run holds (OFA's, of its largest network)."""
    target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), init_stats(run.params))
    state, _ = runs.restore_checkpoint(run.path, {"stats": target})
    return state["stats"]
