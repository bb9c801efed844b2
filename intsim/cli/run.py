"""`intsim run`: quantize a model and run it integer-only on a data set, against float."""
import argparse
import json

from .. import pipeline as ip
from .args import add_model_args, add_quant_args, build_program, config_from_args


def main(argv):
    p = argparse.ArgumentParser(prog="intsim run", description="Post-training quantize an ONNX ViT, "
                                "run it integer-only, and compare it with float.")
    add_model_args(p)
    add_quant_args(p)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--save-program", default=None, help="write the integer program (PATH.json + PATH.npz)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    config = config_from_args(a)
    graph, data, program = build_program(a, config)
    if a.save_program:
        program.save(a.save_program)
    images, labels = data.evaluation(a.limit)
    report = ip.evaluate(graph, program, images, labels, batch=a.batch)
    report.update(model=graph.meta.get("path"), data=data.name, config=program.meta["config"])
    if a.json:
        print(json.dumps(report))
    else:
        print_report(report, data.name, a.calib)
    return 0


def print_report(report, data_name, calib):
    cfg = report["config"]
    print(f"model     {report['model']}")
    print(f"data      {data_name}: {report['images']} images, calibrated on {calib}")
    print(f"config    W{cfg['wbits']}A{cfg['abits']} residual {cfg['residual_bits']}b, gelu "
          f"{cfg['gelu']}, softmax {cfg['softmax']}, layernorm {cfg['layernorm']}")
    if report["float_top1"] is not None:
        print(f"float top-1    {100 * report['float_top1']:.2f} %")
        print(f"integer top-1  {100 * report['int_top1']:.2f} %")
    print(f"agreement      {100 * report['agreement']:.2f} %")
    print(f"logit SQNR     {report['logit_sqnr_db']:.2f} dB")
    print(f"speed          {report['images_per_s']:.1f} images/s (integer path)")
