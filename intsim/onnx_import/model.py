"""Step 1: read and check the ONNX file, find the image input and the output, decode the nodes."""
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import OnnxImportError
from .naming import scope_of


class ONode:
    """An ONNX node with decoded attributes, its position and its module scope (or None)."""
    __slots__ = ("proto", "name", "op", "inputs", "outputs", "attrs", "index", "scope")

    def __init__(self, proto, index):
        self.proto = proto
        self.name = proto.name or f"{proto.op_type}_{index}"
        self.op = proto.op_type if proto.domain in ("", "ai.onnx") else f"{proto.domain}.{proto.op_type}"
        self.inputs = list(proto.input)       # rewritten when no-op nodes are bypassed
        self.outputs = list(proto.output)
        self.attrs = {a.name: _attribute(a) for a in proto.attribute}
        self.index = index
        self.scope = scope_of(proto)

    def __repr__(self):
        return f"{self.op} node {self.name!r}"


def _attribute(a):
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    return v


def load_proto(src):
    """(ModelProto, source text) of a path or a ModelProto, checked by onnx.checker."""
    if isinstance(src, onnx.ModelProto):
        _check(src, "<ModelProto>", src)
        return src, "<ModelProto>"
    path = Path(os.fspath(src))
    if not path.is_file():
        raise OnnxImportError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        raise OnnxImportError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    _check(model, str(path), str(path))   # given a path, the checker reads the file itself
    return model, str(path)


def _check(model, source, what):
    if not model.graph.node or not model.opset_import:
        raise OnnxImportError(f"{source}: not an ONNX model (no graph nodes or no opset); is the file "
                              "corrupt or not ONNX?")
    try:
        onnx.checker.check_model(what)
    except Exception as e:
        raise OnnxImportError(f"{source}: the ONNX checker rejects the model: {e}") from None
    _check_initializers(model, source)


def _check_initializers(model, source):
    """A NaN in a weight is named with its initializer and first index (infinities are legitimate:
    attention masks fill with -inf)."""
    for t in model.graph.initializer:
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            v = numpy_helper.to_array(t)
            bad = np.isnan(v)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise OnnxImportError(f"{source}: initializer {t.name!r} holds {int(bad.sum())} NaN "
                                      f"value(s), the first at index {first}")


def opset_of(opset_imports):
    """The version of the default ONNX domain among a model's opset imports (0 if absent)."""
    return next((o.version for o in opset_imports if o.domain in ("", "ai.onnx")), 0)


def image_input(model, source):
    """(name, (C, H, W), batch or None, dtype) of the single image input."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise OnnxImportError(f"{source}: expected one image input, found {len(inputs)} "
                              f"({', '.join(i.name for i in inputs)})")
    inp = inputs[0]
    tt = inp.type.tensor_type
    if not inp.type.HasField("tensor_type") or tt.elem_type not in (onnx.TensorProto.FLOAT,
                                                                     onnx.TensorProto.DOUBLE):
        raise OnnxImportError(f"{source}: input {inp.name!r} must be a float or double tensor")
    if not tt.HasField("shape") or len(tt.shape.dim) != 4:
        rank = len(tt.shape.dim) if tt.HasField("shape") else "unknown"
        raise OnnxImportError(f"{source}: input {inp.name!r} has rank {rank}; a ViT takes images of "
                              "rank 4 (N, C, H, W)")
    dims = list(tt.shape.dim)
    for i, d in enumerate(dims[1:], start=1):
        if not d.HasField("dim_value") or d.dim_value <= 0:
            what = f"symbolic '{d.dim_param}'" if d.HasField("dim_param") else "unknown"
            raise OnnxImportError(f"{source}: input {inp.name!r} dimension {i} ({'NCHW'[i]}) is {what}; "
                                  "only the batch dimension (0) may be dynamic")
    batch = int(dims[0].dim_value) if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    chw = tuple(int(d.dim_value) for d in dims[1:])
    return inp.name, chw, batch, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)


def output_names(model, source):
    """The graph's output names, in order (one or several, each a distinct tensor)."""
    outs = [o.name for o in model.graph.output]
    if not outs or len(set(outs)) != len(outs):
        raise OnnxImportError(f"{source}: expected one or more distinct outputs, found {outs}")
    return outs
