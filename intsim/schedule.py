"""When each tensor of a straight-line program dies, so that interpreters free it (bounded memory
on deep models): shared by the float interpreter and the integer executor."""


def last_uses(steps, inputs_of, keep=()):
    """{tensor: index of the last step reading it}; tensors in `keep` are never freed."""
    last = {}
    for i, step in enumerate(steps):
        for t in inputs_of(step):
            last[t] = i
    for t in keep:
        last[t] = len(steps)
    return last
