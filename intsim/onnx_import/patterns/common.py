"""What every matcher works with: the folded image path, the semantic nodes found so far, and
helpers to read constants, walk single-consumer chains and check data-movement chains by what
they do to a tensor of labels."""
import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from ...graph import Node
from ..errors import Broken, Miss, Upstream
from ..model import opset_of
from .registry import FALLBACKS

# Data-movement ops: one image-dependent data input (input 0), all other inputs constant.
LAYOUT = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Split", "Slice", "Gather")


def axes_of(n, values, pos):
    """Axes of node n, given as attribute (older opsets) or as its input `pos` (newer), whose value
    is values[pos]; None if absent."""
    if "axes" in n.attrs:
        return [int(a) for a in n.attrs["axes"]]
    if len(values) > pos and values[pos] is not None:
        return [int(a) for a in np.asarray(values[pos]).reshape(-1)]
    return None


class Matching:
    """The state of step 3: the folded image path (`f`), the semantic nodes emitted so far, which
    ONNX nodes they claim and which ONNX tensor each semantic tensor stands for."""

    def __init__(self, folded, opset_imports):
        self.f = folded
        self.live, self.const, self.shapes = folded.live, folded.const, folded.shapes
        self.producer, self.batch = folded.producer, folded.batch
        self.opset_imports = list(opset_imports)
        self.opset = opset_of(opset_imports)
        self.nodes, self.info, self.claimed = [], {}, set()
        self.sem_of = {folded.in_name: "%in"}     # ONNX tensor -> semantic tensor
        self.splits = {}                           # qkv ONNX tensor -> its QKVSplit node
        self.fallback_misses = {}                  # id(ONode) -> [(pattern, miss)] of its fallbacks
        self.generic = set()                       # id(ONode) of the nodes a fallback claimed

    # --- constants ------------------------------------------------------------------------------
    def c(self, t):
        """Constant value of tensor t; Broken if t depends on the image."""
        if not t or t in self.live or self.const.get(t) is None:
            raise Broken(f"tensor {t!r} is not a constant")
        return self.const[t]

    def scalar(self, t):
        v = self.c(t)
        if v.size != 1 or v.dtype.kind != "f":
            raise Broken(f"tensor {t!r} is not a float scalar (shape {v.shape}, {v.dtype})")
        return float(v.reshape(-1)[0])

    def batch_free(self, v, shape):
        """A constant broadcast over the batch as an array of `shape`, else Broken."""
        v = np.asarray(v)
        while v.ndim > len(shape):
            if v.shape[0] not in (1, self.batch) or not (v == v[:1]).all():
                raise Broken(f"a constant of shape {v.shape} that varies over the batch")
            v = v[0]
        if v.shape != tuple(shape):
            raise Broken(f"a constant of shape {v.shape} where {tuple(shape)} was expected")
        return v.copy()

    # --- the image path -------------------------------------------------------------------------
    def cons(self, t):
        return self.f.consumers.get(t, [])

    def sole(self, t, op=None):
        """The single image-path consumer of t (of an op in `op`), else Broken."""
        cs = self.cons(t)
        if len(cs) != 1 or t in self.f.out_names or (op is not None and cs[0].op not in op):
            found = ", ".join(repr(c) for c in cs) or "nothing"
            want = f"one {'/'.join(op)} node" if op else "one node"
            raise Broken(f"tensor {t!r} should be read by {want}, is read by {found}")
        return cs[0]

    def split_live(self, n):
        """(image-dependent input, constant input) of a binary node with exactly one of each."""
        a, b = n.inputs[0], n.inputs[1]
        if (a in self.live) == (b in self.live):
            raise Broken(f"{n!r} should combine the image path with a constant")
        return (a, b) if a in self.live else (b, a)

    def scalar_factor(self, n):
        """Mul/Div of an image-dependent tensor by a constant scalar: (its input, the factor)."""
        if n.op not in ("Mul", "Div") or len(n.inputs) != 2:
            raise Broken(f"{n!r} is not a Mul or Div by a scalar")
        x, k = self.split_live(n)
        v = self.scalar(k)
        if n.op == "Div":
            if k != n.inputs[1] or v == 0:
                raise Broken(f"{n!r} divides by the image path or by zero")
            v = 1.0 / v
        return x, v

    def sem(self, t):
        """The semantic tensor standing for ONNX tensor t; Upstream if no pattern produced it. A
        tensor made by a node that waits for its generic fallback (`lazy`) is matched now."""
        if t not in self.sem_of:
            self.try_fallbacks(self.producer.get(t))
        if t not in self.sem_of:
            made_by = self.producer.get(t)
            raise Upstream(f"its input {t!r} ({made_by!r}) is not the output of a recognised pattern")
        return self.sem_of[t]

    def lazy(self, n):
        """Whether node n waits to be matched by its generic fallback until a reader needs it: data
        movement and scalar Mul/Div, which a pattern anchored further on may still claim (the q, k, v
        split of an attention, the x / sqrt 2 of a GELU)."""
        if n.op in LAYOUT or n.op == "Pad":
            return True
        try:
            return n.op in ("Mul", "Div") and self.scalar_factor(n) is not None
        except Miss:
            return False

    def try_fallbacks(self, n):
        """Match node n by the generic fallbacks of its op (once): [] or the misses."""
        if n is None or id(n) in self.claimed:
            return []
        if id(n) not in self.fallback_misses:
            self.fallback_misses[id(n)] = []          # also guards against re-entry
            for pattern in FALLBACKS.get(n.op, ()):
                try:
                    pattern.fn(self, n)
                    self.generic.add(id(n))
                    break
                except Miss as e:
                    self.fallback_misses[id(n)].append((pattern, e))
                except (ValueError, TypeError, IndexError, KeyError) as e:   # odd constants/attributes
                    self.fallback_misses[id(n)].append((pattern, Broken(f"{type(e).__name__}: {e}")))
        return [] if id(n) in self.claimed else self.fallback_misses[id(n)]

    # --- per-sample shapes ----------------------------------------------------------------------
    def sem_shape(self, t):
        """The shape of one sample of ONNX tensor t: (B, ...) -> (...); a batch folded into the
        first axis, (B * k, ...) -> (k, ...) (Swin's windows); None when the first axis is neither
        (then the tensor is not sample-major)."""
        s = self.shapes[t]
        if not s or s[0] % self.batch or s[0] == 0:
            return None
        return tuple(s[1:]) if s[0] == self.batch else (s[0] // self.batch,) + tuple(s[1:])

    def sem_axis(self, t, axis):
        """The per-sample axis of ONNX axis `axis` of tensor t (None for the batch axis)."""
        s = self.shapes[t]
        a = int(axis) % len(s)
        if a == 0:
            return None
        return a - 1 if s[0] == self.batch else a

    def is_layout(self, n):
        return (n.op in LAYOUT and n.inputs[0] in self.live
                and all(t not in self.live for t in n.inputs[1:]))

    def chain_from(self, first):
        """The layout chain starting at node `first`, continued while each output has exactly one
        consumer that is a single-output layout node."""
        chain = [first]
        while True:
            t = chain[-1].outputs[0]
            cs = self.cons(t)
            if len(cs) != 1 or t in self.f.out_names or not self.is_layout(cs[0]) or len(cs[0].outputs) != 1:
                return chain
            chain.append(cs[0])

    def trace_back(self, t):
        """Walk from t back through layout nodes and scalar Mul/Div: (source, nodes, factor)."""
        nodes, factor = [], 1.0
        while t in self.producer:
            p = self.producer[t]
            if self.is_layout(p):
                nodes.append(p)
                t = p.inputs[0]
                continue
            try:
                t, f = self.scalar_factor(p)
            except Miss:
                break
            nodes.append(p)
            factor *= f
        return t, nodes, factor

    # --- data movement, checked on labels -------------------------------------------------------
    def run_layout(self, nodes, src, first=0):
        """Run layout nodes (scalar Mul/Div as identity) on a tensor of distinct labels (first,
        first + 1, ...) in place of src, with the ONNX reference evaluator: (labels, {tensor:
        labels it holds})."""
        label = np.arange(first, first + int(np.prod(self.shapes[src])), dtype=np.int64).reshape(self.shapes[src])
        protos, known = [], {src}
        for n in sorted(nodes, key=lambda n: n.index):
            data = self.split_live(n)[0] if n.op in ("Mul", "Div") else n.inputs[0]
            if data not in known:
                raise Broken(f"{n!r} does not continue the data movement from {src!r}")
            protos.append(helper.make_node("Identity", [data], n.outputs[:1]) if n.op in ("Mul", "Div")
                          else _rewired(n))
            known.update(t for t in n.outputs if t)
        return label, _run_on_labels(protos, src, label, self.const, known, self.opset_imports)

    def match_chain(self, chain, src, expected_of):
        """Longest prefix of `chain` whose effect on labels equals expected_of(labels), or None."""
        label, env = self.run_layout(chain, src)
        want = expected_of(label)
        for k in range(len(chain), 0, -1):
            got = env[chain[k - 1].outputs[0]]
            if got.shape == want.shape and np.array_equal(got, want):
                return chain[:k]
        return None

    # --- results --------------------------------------------------------------------------------
    def emit(self, op, inputs, n_out, claimed, outs_onnx, params=None, attrs=None, role=None, scope=None):
        """Record a semantic node: inputs are semantic tensor ids, outs_onnx the ONNX tensors its
        outputs stand for (None for outputs without one); `claimed` the ONNX nodes it explains."""
        taken = [n for n in claimed if id(n) in self.generic]
        if taken:
            raise Broken(f"{taken[0]!r} is already matched as a generic op")
        k = len(self.nodes)
        node = Node(op, f"%{k}", list(inputs), [f"%{k}:{i}" for i in range(n_out)], params or {}, attrs or {})
        self.nodes.append(node)
        self.info[node.name] = dict(role=role, scope=scope, onnx=[n.name for n in claimed])
        self.claimed.update(id(n) for n in claimed)
        for t, s in zip(outs_onnx, node.outputs):
            if t is not None:
                self.sem_of[t] = s
        return node


    def alias(self, t, src, claimed):
        """ONNX tensor t holds the same per-sample values as src (an identity reshape, a zero add):
        no semantic node, the claimed nodes are explained by src's semantic tensor."""
        sem = self.sem(src)
        self.claimed.update(id(n) for n in claimed)
        self.sem_of[t] = sem


def _rewired(n):
    """A copy of n's NodeProto reading its current (no-op-bypassed) inputs."""
    proto = onnx.NodeProto()
    proto.CopyFrom(n.proto)
    proto.input[:] = n.inputs
    return proto


def _run_on_labels(protos, src, label, const, known, opset_imports):
    """Evaluate the small graph `protos` on `label` in place of src: {tensor: value}."""
    inputs = {t for p in protos for t in p.input[1:] if t and t not in known}
    graph = helper.make_graph(
        protos, "labels", [helper.make_tensor_value_info(src, onnx.TensorProto.INT64, label.shape)],
        [helper.make_empty_tensor_value_info(t) for t in known if t != src],
        [numpy_helper.from_array(np.asarray(const[t]), t) for t in sorted(inputs)])
    outs = [t for t in known if t != src]
    try:
        evaluator = ReferenceEvaluator(helper.make_model(graph, opset_imports=opset_imports))
        values = evaluator.run(outs, {src: label})
    except Exception as e:
        raise Broken(f"the data movement from {src!r} fails on labels ({type(e).__name__}: {e})") from None
    return {src: label, **dict(zip(outs, values))}
