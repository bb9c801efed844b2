"""Hadamard rotation of Linear inputs (docs/quantization.md Q8): the compiler's side. The K10
kernel itself is tested in test_hadamard.py."""
import numpy as np
import pytest

from intsim import metrics
from intsim import pipeline as ip
from intsim.arith import ArithSpecError, IntFormat
from intsim.errors import CompileError
from intsim.execute import Executable
from intsim.float_ref import run_float
from intsim.kernels import hadamard
from intsim.quantize import Observer, QuantConfig, quantization_error


@pytest.fixture(scope="module")
def fmnist():
    graph = ip.load()
    data = ip.open_data("fashion-mnist")
    images, _ = data.evaluation(limit=64)
    return graph, data.calibration(64), images


def rotated_linears(program):
    """{Linear op: the hadamard op whose output its input operand requantizes}."""
    by_output = {t: op for op in program.ops for t in op.outputs}
    out = {}
    for op in program.ops:
        if op.kind == "linear":
            req = by_output.get(op.inputs[0])
            src = by_output.get(req.inputs[0]) if req is not None and req.inputs else None
            if src is not None and src.kind == "hadamard":
                out[op.name] = src
    return out


@pytest.mark.slow
def test_rotation_is_chosen_somewhere_and_keeps_the_float_function(fmnist):
    graph, calib, images = fmnist
    x = ip.to_model_input(images)
    f = run_float(graph, x)
    obs = ip.calibrate(graph, calib, rotate=64)
    plain, rotated = (ip.compile(graph, obs, QuantConfig(rotate=r)) for r in (0, 64))
    assert rotated_linears(rotated) and not rotated_linears(plain)
    # a wrong weight rotation (or none) would leave the logits uncorrelated with the float ones
    assert metrics.sqnr_db(f, Executable(rotated).infer(x)) > 30
    assert metrics.sqnr_db(f, Executable(rotated).infer(x)) > metrics.sqnr_db(f, Executable(plain).infer(x)) - 1


def test_rotated_weights_are_the_rotated_float_weights(fmnist):
    """With minmax weight scales (no clipping) and rounding to nearest, every integer weight of a
    rotated Linear is W H / sqrt(B) rounded to its channel's LSB: within half an LSB."""
    graph, calib, _ = fmnist
    program = ip.compile(graph, ip.calibrate(graph, calib, rotate=64),
                         QuantConfig(rotate=64, weight_calib="minmax", weight_round="nearest"))
    checked = 0
    for name, had in rotated_linears(program).items():
        op = program.op(name)
        w = graph.node(name).params["weight"].astype(np.float64)
        want = hadamard.rotate_float(w, int(had.attrs["block"]))
        lsb = np.asarray(op.attrs["weight_scale"])[:, None]
        assert np.all(np.abs(op.consts["weight"] * lsb - want) <= 0.5 * lsb * (1 + 1e-9)), name
        checked += 1
    assert checked


def test_rotation_needs_the_rotated_statistics(fmnist):
    graph, calib, _ = fmnist
    with pytest.raises(CompileError, match="calibrate with rotate=64"):
        ip.compile(graph, ip.calibrate(graph, calib[:8], rotate=0), QuantConfig(rotate=64))


@pytest.mark.parametrize("bad", [3, 1, 2048, -4, 12])
def test_rotate_must_be_a_power_of_two_block(bad):
    with pytest.raises(ArithSpecError, match="rotate must be 0"):
        QuantConfig(rotate=bad)


def test_the_choice_measures_outliers_that_rotation_spreads():
    """quantization_error, the criterion of the choice: a Gaussian with rare massive values in random
    channels quantizes worse than its rotation; a plain Gaussian about as well (rotation gains nothing)."""
    r = np.random.default_rng(0)
    x = r.standard_normal((4096, 64)).astype(np.float32)
    spiky = x.copy()
    rows = r.choice(4096, 40, replace=False)
    spiky[rows, r.integers(0, 64, 40)] = 60.0
    fmt = IntFormat(8)

    def err(a):
        o = Observer("t")
        o.update(a)
        return quantization_error(o, fmt, o.scale(fmt, "mse-top"))
    assert err(hadamard.rotate_float(spiky, 64)) < 0.5 * err(spiky)
    assert err(hadamard.rotate_float(x, 64)) == pytest.approx(err(x), rel=0.25)


def test_the_choice_settled_early_is_the_choice_of_both_totals(fmnist):
    """rotation_wanted quantizes the second candidate's weight only when the first does not settle
    the comparison; its answer must be the one computing both totals gives, at W8 and at W4."""
    from intsim.compile import Builder
    from intsim.ops import input_transforms as it
    graph, calib, _ = fmnist
    obs = ip.calibrate(graph, calib, rotate=64)
    for wbits in (8, 4):
        b = Builder(graph, obs, QuantConfig(rotate=64, wbits=wbits))
        decided = 0
        for node in graph.nodes:
            if node.op != "Linear":
                continue
            block = hadamard.block_for(len(obs[node.inputs[0]].chan_absmax), 64)
            producer = graph.producer(node.inputs[0])
            f = it.equalization_factors(b, producer, rotation_aware=False) \
                if producer is not None and producer.op == "LayerNorm" else None
            w = node.params["weight"].astype(np.float64)
            plain = (obs[node.inputs[0]].divided(f), w * f[None, :], f) if f is not None else \
                (obs[node.inputs[0]], w, None)
            totals = [it.activation_error(b, o, w_, 8, f_) + it.weight_error(b, o, w_, b.cfg)
                      for o, w_, f_ in ((*it.rotated_operand(b, node, block), None), plain)]
            assert it.rotation_wanted(b, node) == (block if totals[0] < totals[1] else 0), (wbits, node.name)
            decided += 1
        assert decided == 17
