"""`nas import ofa --net ofa_resnet50`: parity with Once-for-All's own ``OFAResNets``, the run it writes,
bad input.

The default run checks a stored fixture (tests/fixtures/ofa/ofa_resnet50_w0.095.*, written by
tests/fixtures/make_ofa_resnet_fixture.py with torch and the ``ofa`` package: OFA-ResNet50 at width
0.095 with random float16 weights and BatchNorm statistics, and OFA's logits); the slow tests check
every subnet of it and one built live where torch and ofa are installed (skipped elsewhere).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from nas_cli import runs
from nas_cli.errors import UserError
from nas_cli.evaluation import SubnetEvaluator
from nas_cli.importing import import_ofa, parse_net, read_pth, read_supernet, stored_stats
from search_spaces import get_space
from search_spaces.layers import preprocess

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ofa"
NET = "ofa_resnet50_w0.095"
RESOLUTIONS = (32, 36)
MEAN, STD = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])
TOL = 1e-4  # max |diff| relative to the largest |logit|


def _rel(got, want) -> float:
    return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


def _check_parity(pth: Path, npz: Path, net: str, tmp_path: Path, resolutions=RESOLUTIONS, static: int = 1) -> int:
    """Imports ``pth`` and compares nas's logits with OFA's stored ones for the subnets at
    ``resolutions``: eval mode with OFA's running statistics (the supernet, and for the first
    ``static`` of them the standalone model that export writes), and after recalibration (nas's
    against OFA's ``set_running_statistics`` on the same images). Returns how many were compared."""
    exp = np.load(npz)
    out = tmp_path / "run"
    import_ofa(pth, net, out, resolutions=RESOLUTIONS, log=lambda m: None)
    run = runs.open_run(out, without_data=True)
    space, params = run.space, run.params
    stats = stored_stats(run)
    ev = SubnetEvaluator(space, MEAN, STD, batch_size=4)
    assert len(exp["archs"]) == 12 and len(exp["calib_archs"]) == 4
    compared = 0
    for arch_str, want in zip(exp["archs"], exp["logits"]):
        arch = space.decode(str(arch_str))
        if arch.resolution not in resolutions:
            continue
        images = exp[f"images_r{arch.resolution}"]
        assert _rel(ev.logits(params, stats, arch, images), want) <= TOL, str(arch_str)
        if compared < static:  # the standalone (exported) model computes the same
            model = space.extract(params, stats, arch)
            forward = jax.jit(lambda x, m=model: m(x))
            assert _rel(forward(preprocess(images, arch.resolution, MEAN, STD)), want) <= TOL, ("static", str(arch_str))
        compared += 1
    for i, (arch_str, want) in enumerate(zip(exp["calib_archs"], exp["calib_logits"])):
        arch = space.decode(str(arch_str))
        if arch.resolution not in resolutions:
            continue
        new = ev.calibrate(params, arch, exp[f"calib_{i}"])
        got = ev.logits(params, new, arch, exp[f"images_r{arch.resolution}"])
        assert _rel(got, want) <= TOL, ("recalibrated", str(arch_str))
        compared += 1
    return compared


@pytest.mark.slow
def test_parity_with_stored_ofa_resnet_fixture(tmp_path):
    """Logits of OFA's own network equal nas's on the imported weights at 36 px (one resolution's
    programs): 5 random subnets in eval mode with OFA's running statistics (one also through the
    standalone model), and the largest, the smallest and 2 random ones after recalibration."""
    assert _check_parity(FIXTURES / f"{NET}.pth", FIXTURES / f"{NET}.npz", NET, tmp_path, resolutions=(36,)) == 9


@pytest.mark.slow
def test_parity_with_stored_ofa_resnet_fixture_every_resolution(tmp_path):
    """The same for all 12 subnets (the largest and smallest at 32 px, 10 random at 32 and 36 px), 4
    recalibrated at 36 px, 3 through the standalone model."""
    assert _check_parity(FIXTURES / f"{NET}.pth", FIXTURES / f"{NET}.npz", NET, tmp_path, static=3) == 16


@pytest.mark.slow
def test_parity_with_live_ofa_resnet(tmp_path):
    """The same against Once-for-All's code run now (torch and ofa installed; else skipped)."""
    pytest.importorskip("torch")
    pytest.importorskip("ofa")
    sys.path.insert(0, str(FIXTURES.parent))
    try:
        import make_ofa_resnet_fixture
    finally:
        sys.path.pop(0)
    pth, npz, net = make_ofa_resnet_fixture.write(tmp_path / "fixture", width=0.095, seed=5)
    assert _check_parity(pth, npz, net, tmp_path) == 16


def test_published_network_shape():
    """``ofa_resnet50`` is OFA's published network: its widths (OFA's make_divisible of 64 and
    256-2048 times 0.65 / 0.8 / 1.0), the stem's middle widths (24, 24, 32: one gene value for the
    first two), the middle widths of its bottlenecks (round, then to 8) and 1000 classes."""
    net = parse_net("ofa_resnet50")
    assert (net.space, net.width_mult) == ("resnet-imagenet", 1.0)
    space = get_space("resnet-imagenet")
    cfg = space.config
    assert cfg.num_classes == 1000 and cfg.resolutions == tuple(range(128, 225, 4)) and cfg.divisor == 8
    assert [cfg.stem_width(w) for w in (65, 80, 100)] == [40, 48, 64]
    assert [cfg.stem_mid(w) for w in (65, 80, 100)] == [24, 24, 32] and cfg.stem_mid_choices() == (65, 100)
    assert [[cfg.stage_width(s, w) for w in (65, 80, 100)] for s in range(4)] == [
        [168, 208, 256], [336, 408, 512], [664, 816, 1024], [1328, 1640, 2048]]
    assert [cfg.mid(168, e) for e in (20, 25, 35)] == [32, 40, 56]
    assert [max(cfg.depth_choices(s)) for s in range(4)] == [4, 4, 6, 4]
    largest = space.largest()
    assert space.encode(largest).startswith("r224-m100.d1.w100-w100.e35.e35.e35.e35-")
    assert space.decode(space.encode(space.smallest())) == space.smallest()


def test_import_writes_a_run(tmp_path):
    out = tmp_path / "run"
    final = import_ofa(FIXTURES / f"{NET}.pth", NET, out, resolutions=RESOLUTIONS, log=lambda m: None)
    cfg = runs.read_config(out)
    assert cfg.space == "resnet-imagenet" and cfg.normalize == "imagenet" and cfg.width_mult == 0.095
    assert final["largest"].startswith("r36-m100.d1.w100-w100.e35") and final["smallest"].startswith("r32-m65.d0.w65")
    assert json.loads((out / "final.json").read_text())["largest"] == final["largest"]
    run = runs.open_run(out, without_data=True)
    # OFA's tensors, in nas's layout (the fixture stores them in float16; nas holds float32)
    sd = read_pth(FIXTURES / f"{NET}.pth")["state_dict"]
    assert sd["blocks.0.conv2.conv.conv.weight"].dtype == np.float16
    np.testing.assert_array_equal(run.params["stem_res"]["w"],
                                  sd["input_stem.1.conv.conv.conv.weight"].astype(np.float32).transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(run.params["stages"][1]["rest"]["conv3"][2],
                                  sd["blocks.7.conv3.conv.conv.weight"][:, :, 0, 0].T.astype(np.float32))
    np.testing.assert_array_equal(stored_stats(run)["stages"][3]["first"]["bn_down"]["var"],
                                  sd["blocks.14.downsample.bn.bn.running_var"].astype(np.float32))


def test_refuses_a_mismatched_checkpoint(tmp_path):
    # the w0.095 checkpoint is not the published (w1.0) network; a MobileNetV3 name is not a ResNet
    with pytest.raises(UserError, match=r"is not ofa_resnet50: input_stem.0.conv.weight has shape"):
        import_ofa(FIXTURES / f"{NET}.pth", "ofa_resnet50", tmp_path / "a", log=lambda m: None)
    with pytest.raises(UserError, match=r"is not ofa_mbv3_d234_e346_k357_w0.1: it lacks"):
        read_supernet(FIXTURES / f"{NET}.pth", "ofa_mbv3_d234_e346_k357_w0.1")
    assert not (tmp_path / "a").exists()
    with pytest.raises(UserError, match=r"--net 'ofa_resnet18'.*ofa_resnet50"):
        parse_net("ofa_resnet18")


def test_cli_import_bad_net_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from nas_cli.main import app

    result = CliRunner().invoke(app, ["import", "ofa", str(FIXTURES / f"{NET}.pth"), "--net", "ofa_resnet50_w0",
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and result.output.startswith("error: --net 'ofa_resnet50_w0'")


def test_pools_equal_pytorch():
    """The max-pool after OFA's stem and the ceil-mode average pool of its shortcuts, against
    PyTorch's on odd and even sides (torch installed; else skipped)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from search_spaces.resnet.space import avg_pool_ceil, max_pool

    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (2, 3), (5, 5), (6, 7), (9, 8)]:
        x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
        t = torch.from_numpy(x.transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(max_pool(x), F.max_pool2d(t, 3, 2, 1).numpy().transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(avg_pool_ceil(x, 2),
                                      F.avg_pool2d(t, 2, 2, 0, ceil_mode=True).numpy().transpose(0, 2, 3, 1))
