"""`intsim run`: quantize a model and run it integer-only on a data set, against float."""
import json
from pathlib import Path

from .. import pipeline as ip
from ..errors import IntsimError
from ..experiment.cost import program_cost
from ..kernels import gemm
from ..quantize import QuantConfig
from .args import (Parser, add_model_args, add_program_arg, add_quant_args, build_program,
                   config_from_args, count, data_image_size, load_program_front, refuse_program_options,
                   writable_file)


def main(argv):
    p = Parser(prog="intsim run", description="Post-training quantize an ONNX ViT, "
                                "run it integer-only, and compare it with float.")
    add_model_args(p)
    add_quant_args(p)
    add_program_arg(p)
    p.add_argument("--limit", type=count(1), default=None, help="evaluate only the first N images")
    p.add_argument("--batch", type=count(1), default=100, help="images per batch (default 100)")
    p.add_argument("--save-program", default=None, help="write the integer program (PATH.json + PATH.npz)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--engine", default="auto", choices=gemm.ENGINES,
                   help="integer GEMM engine of the fast path (spec K1.5; default auto: the fastest exact "
                        "one here); every engine gives the same integers")
    a = p.parse_args(argv)
    if a.program:
        refuse_program_options(p, argv)
    config = None if a.program else config_from_args(a)
    if a.save_program:
        writable_file(a.save_program, "--save-program")
    if a.program:
        graph, data, program, n_calib = load_program_front(a)
    else:
        graph = ip.load(a.model)
        data = ip.open_data(a.data, image_size=data_image_size(graph.input_shape))
    images, labels = data.evaluation(a.limit)
    check_batch_memory(graph, a.batch, len(images))
    if not a.json:                      # what is being run, before the work
        print_header(graph.meta.get("path"), data.name, len(images),
                     n_calib if a.program else min(a.calib, len(data.calib_images)),
                     program.meta["config"] if a.program else config.to_dict(), a.program)
    if not a.program:
        graph, data, program, n_calib = build_program(a, config, graph, data)
    if a.save_program:
        Path(a.save_program).parent.mkdir(parents=True, exist_ok=True)     # checked writable above
        program.save(a.save_program)
    report = ip.evaluate(graph, program, images, labels, batch=a.batch, engine=a.engine)
    report.update(model=graph.meta.get("path"), data=data.name, config=program.meta["config"],
                  calibration_images=n_calib, engine=gemm.describe_engine(a.engine),
                  matmul_gbitops=program_cost(program)["matmul_mbops"] / 1e3)
    if a.program:
        report["program"] = a.program
    if a.json:
        print(json.dumps(report))
    else:
        print_results(report)
    return 0


def check_batch_memory(graph, batch, images):
    """--batch must fit in memory (with a fifth to spare): an error before any work, with the
    largest batch that fits."""
    n = min(batch, images)
    per_image, available = ip.peak_bytes_per_image(graph), ip.available_memory()
    if available and n * per_image > 0.8 * available:
        fits = max(1, int(0.8 * available // per_image))
        raise IntsimError(f"--batch {batch}: a batch of {n} images needs about {n * per_image / 2**30:.1f} GiB "
                          f"({per_image / 2**20:.1f} MiB per image where the model is widest), "
                          f"{available / 2**30:.1f} GiB are available; use --batch {fits} or less")


def weight_rounding(cfg):
    """How the report's configuration rounded its Linear weights (QuantConfig.gptq), the layers at
    another width (Q14) and, when grouped (Q13), the group size and multiplier width."""
    config = QuantConfig(**cfg)
    group = (f", groups of {config.weight_group} (u{config.group_scale_bits} multipliers)"
             if config.weight_group else "")
    widths = "".join(f", /{pattern}/ at {bits} bits" for pattern, bits in config.layer_wbits.items())
    if config.qk_wbits:
        widths += f", query / key layers at {config.qk_wbits} bits"
    damp = f" (damping {config.gptq_damp:g})" if config.gptq_damp else ""
    return ("gptq" + damp if config.gptq else "nearest") + widths + group


def print_header(model, data_name, n_images, calib, cfg, program=None):
    """The model, data and configuration lines, printed before the work starts."""
    print(f"model     {model}")
    calibrated = f"calibrated on {calib}" if calib is not None else "calibration not recorded"
    if program:
        calibrated += f" (program {program})"
    print(f"data      {data_name}: {n_images} images, {calibrated}")
    rotate = cfg.get("rotate", 0)
    print(f"config    W{cfg['wbits']}A{cfg['abits']} residual {cfg['residual_bits']}b, gelu "
          f"{cfg['gelu']} (input {cfg.get('gelu_bits', cfg['abits'])}b), softmax {cfg['softmax']}, "
          f"layernorm {cfg['layernorm']}, rotation {f'blocks <= {rotate}' if rotate else 'off'}, "
          f"weights {weight_rounding(cfg)}", flush=True)


def print_results(report):
    several = len(report["outputs"]) > 1
    for out in report["outputs"]:
        if several:
            print(f"output {out['name']} (N, {', '.join(map(str, out['shape']))}), "
                  f"{'class vector' if out['kind'] == 'class' else 'tensor'}")
        print_output(out, "  " if several else "")
    print(f"speed          {report['images_per_s']:.1f} images/s (integer path, matmul engine "
          f"{report['engine']})")
    if report.get("matmul_gbitops") is not None:
        print(f"matmul cost    {report['matmul_gbitops']:.2f} Gbit-op per image (MACs x operand bits x "
              f"weight bits)")


def print_output(out, indent):
    """One output's comparison: top-1 and agreement only for a class vector."""
    if out["kind"] == "class":
        if out["float_top1"] is not None:
            print(f"{indent}float top-1    {100 * out['float_top1']:.2f} %")
            print(f"{indent}integer top-1  {100 * out['int_top1']:.2f} %")
        print(f"{indent}agreement      {100 * out['agreement']:.2f} %")
        print(f"{indent}logit SQNR     {out['sqnr_db']:.2f} dB")
    else:
        print(f"{indent}SQNR           {out['sqnr_db']:.2f} dB")
        print(f"{indent}Pearson r      {out['pearson']:.5f}")
        print(f"{indent}max abs error  {out['max_abs_error']:.4g}")
