"""Train the shipped Fashion-MNIST ViT and export it in both ONNX forms.

    python models/train_fashion_mnist.py            # about 20 minutes on 2 cores

Writes models/fmnist_vit_legacy13.onnx, models/fmnist_vit_dynamo18.onnx and
models/fmnist_vit_training.json (settings, wall time, float test accuracy of the exported ONNX
measured with ONNX Runtime). Input: pixels / 255 in [0, 1], shape (N, 1, 28, 28), no mean/std
normalisation, so intsim's input quantizer (scale 1/255, unsigned 8-bit) is exact on raw pixels.
"""
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from intsim.data import load_fashion_mnist  # noqa: E402
from vit import CONFIGS, VisionTransformer, export_onnx  # noqa: E402

SETTINGS = dict(config="fmnist-vit", epochs=16, batch_size=128, max_lr=2e-3, weight_decay=0.05,
                label_smoothing=0.1, augment="random horizontal flip",
                optimizer="AdamW + OneCycleLR", seed=0, threads=1)


def augment(x, gen):
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def evaluate_onnx(path, images, labels):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    correct = 0
    for i in range(0, len(images), 500):
        x = images[i:i + 500].astype(np.float32) / 255.0
        correct += int((sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(1)
                        == labels[i:i + 500]).sum())
    return correct / len(images)


def main():
    # one thread: on a shared 2-core machine torch's two spinning threads lose more to contention
    # than they gain
    torch.set_num_threads(SETTINGS["threads"])
    torch.manual_seed(SETTINGS["seed"])
    gen = torch.Generator().manual_seed(SETTINGS["seed"])
    tr_x, tr_y = load_fashion_mnist("train")
    te_x, te_y = load_fashion_mnist("test")
    xtr = torch.from_numpy(tr_x.astype(np.float32) / 255.0)
    ytr = torch.from_numpy(tr_y)
    model = VisionTransformer(**CONFIGS[SETTINGS["config"]])
    opt = torch.optim.AdamW(model.parameters(), lr=SETTINGS["max_lr"],
                            weight_decay=SETTINGS["weight_decay"])
    steps = SETTINGS["epochs"] * (len(xtr) // SETTINGS["batch_size"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=SETTINGS["max_lr"], total_steps=steps)
    t0 = time.time()
    log = []
    for epoch in range(SETTINGS["epochs"]):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for b in range(len(xtr) // SETTINGS["batch_size"]):
            idx = perm[b * SETTINGS["batch_size"]:(b + 1) * SETTINGS["batch_size"]]
            loss = F.cross_entropy(model(augment(xtr[idx], gen)), ytr[idx],
                                   label_smoothing=SETTINGS["label_smoothing"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(torch.from_numpy(te_x[i:i + 1000].astype(np.float32) / 255.0))
                              .argmax(1) for i in range(0, len(te_x), 1000)])
        acc = float((pred.numpy() == te_y).mean())
        log.append(dict(epoch=epoch + 1, loss=total / (b + 1), test_top1=acc,
                        seconds=round(time.time() - t0, 1)))
        print(log[-1], flush=True)
    train_seconds = time.time() - t0
    outputs = {}
    for form, name in (("legacy", "fmnist_vit_legacy13.onnx"), ("dynamo", "fmnist_vit_dynamo18.onnx")):
        export_onnx(model, HERE / name, (1, 28, 28), form)
        outputs[name] = evaluate_onnx(HERE / name, te_x, te_y)
        print(name, "onnxruntime test top-1", outputs[name], flush=True)
    record = dict(settings=SETTINGS, model=CONFIGS[SETTINGS["config"]],
                  parameters=sum(p.numel() for p in model.parameters()),
                  train_seconds=round(train_seconds, 1), epochs=log,
                  onnx_test_top1=outputs, torch=torch.__version__, threads=torch.get_num_threads(),
                  machine=platform.machine(), python=platform.python_version())
    (HERE / "fmnist_vit_training.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
