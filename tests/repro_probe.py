"""Build programs from ONNX models and print what they hold, one JSON line per model: the program's
fingerprint (every op, attribute and constant) and the SHA-256 of its golden dump of the first
evaluation image(s) (every tensor's bytes). tests/test_reproducibility.py runs this script under
different BLAS kernels, numba targets, thread counts, NumPy SIMD levels and C-library variants and
requires every line to be equal.

    python tests/repro_probe.py MODEL:DATA:CALIB[:WBITS] ...   e.g. shipped:fashion-mnist:64 deit-tiny:photos:16
"""
import hashlib
import json
from pathlib import Path
import sys
import tempfile

import intsim.pipeline as ip
from intsim import golden
from intsim.execute import quantize_input


def probe(model, data_name, calib, wbits):
    graph = ip.load(None if model == "shipped" else model)
    c, h, w = graph.input_shape
    data = ip.open_data(data_name, image_size=h if h == w and c == 3 else 224)
    observers = ip.calibrate(graph, data.calibration(calib))
    program = ip.compile(graph, observers, ip.QuantConfig(wbits=wbits))
    images, _ = data.evaluation(1)
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dump"
        manifest = golden.dump(program, quantize_input(program, ip.to_model_input(images)), out, ("npy",), 1,
                               False, {"data": data_name})
        for name in sorted(manifest["tensors"]):
            for f in sorted(manifest["tensors"][name]["files"].values()):
                digest.update((out / f).read_bytes())
    return {"model": model, "wbits": wbits, "fingerprint": program.fingerprint(),
            "dump_sha256": digest.hexdigest(), "tensors": len(manifest["tensors"])}


def main(argv):
    for spec in argv:
        model, data_name, calib, *rest = spec.split(":")
        print(json.dumps(probe(model, data_name, int(calib), int(rest[0]) if rest else 8)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
