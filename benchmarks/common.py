"""Shared pieces of the benchmarks: the pixyz reference, the FLOP count, the matmul ceiling, the CPU's name
printed beside every speed figure and the one-line error for bad input.

The pixyz reference is written the way pixyz's own JMVAE example (examples/jmvae.ipynb) writes it: one
`Normal`/`Bernoulli`/`Categorical` subclass per network (fc1, fc2, then fc31/fc32 for loc/scale),
`ProductOfNormal` for q(z|y) = p(z) q(z|position) q(z|digit), `KullbackLeibler` terms, and the `VAE` model
(TELBO, which pixyz has no model class for, is a `Model` over `pixyz.losses` expressions). Its networks
are the founding experiment's, layer for layer the same as jmvae's (jmvae's 512 -> 2z head is pixyz's two
512 -> z heads; same shapes, same FLOPs), and `copy_weights` maps one onto the other.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import nn


def bad_input(message: str) -> NoReturn:
    """`<script>: error: <message>` on stderr and exit status 2, as jmvae's CLI does (the message names the
    bad value and what is allowed)."""
    print(f"{Path(sys.argv[0]).stem}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def cpu_model() -> str:
    """The CPU's name with its family, model and widest SIMD ("AMD EPYC" names several generations: family
    and model tell them apart, 25/1 Zen 3, 25/17 Zen 4); else what platform reports."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
        info = {
            k.strip(): v.strip()
            for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)
        }
        simd = next((f for f in ("avx512f", "avx2") if f in info.get("flags", "").split()), "no avx2")
        family, model = info.get("cpu family", "?"), info.get("model", "?")
        return f"{info['model name']} (family {family} model {model}, {simd})"
    except (OSError, KeyError):
        return platform.processor() or "unknown CPU"


def config_value(cls: type, setting: str, where: str) -> tuple[str, Any]:
    """FIELD=VALUE -> (field, value) of the dataclass `cls`, VALUE typed as the field is (true/false, an
    integer, a number, a JSON list of strings, null where None is allowed, else a string, bare or
    JSON-quoted); a bad one ends in `bad_input`, naming `where`."""
    key, _, value = setting.partition("=")
    kinds = {f.name: str(f.type) for f in fields(cls)}  # annotations are strings here: "int | None", ...
    if key not in kinds:
        bad_input(f"{where}: no {cls.__name__} field {key!r} (allowed: its fields, e.g. alpha, lr, z_dim)")
    kind, text = kinds[key], value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    try:
        if value == "null" and "None" in kind:
            return key, None
        if kind.startswith("list"):
            items = json.loads(value)
            if not (isinstance(items, list) and all(isinstance(i, str) for i in items)):
                raise ValueError(value)
            return key, items
        if "bool" in kind:
            return key, {"true": True, "false": False}[text]
        return key, int(text) if "int" in kind else float(text) if "float" in kind else text
    except (KeyError, ValueError):
        bad_input(f"{where}: {key}={value} (allowed: a value of the field's type, {kind})")


def run_main(main: Callable[[], None]) -> None:
    """Runs a benchmark's `main`, a jmvae UserError (a bad run folder, a setting out of range) ending in one
    line, as jmvae says it."""
    from jmvae.errors import UserError

    try:
        main()
    except UserError as e:
        bad_input(str(e))


X_DIM, Z_DIM, HIDDEN = 28 * 56, 2, 512
ATTRIBUTES = {"position": 2, "digit": 2}  # name -> number of classes, in jmvae's modality order


# -- the pixyz reference --------------------------------------------------------------------------------
def pixyz_reference(kind: str, lr: float = 1e-3):
    """(pixyz model, {name: distribution}) for kind "jmvae" or "telbo"; batches are {"x", "position", "digit"}
    with the attributes one-hot (as the example feeds `torch.eye(10)[y]`)."""
    from pixyz.distributions import Bernoulli, Categorical, Normal, ProductOfNormal
    from pixyz.losses import KullbackLeibler
    from pixyz.models import VAE, Model

    class Inference(Normal):  # q(z | cond_var): input -> 512 -> 512 -> (loc, scale)
        def __init__(self, cond_var, in_dim):
            super().__init__(cond_var=cond_var, var=["z"], name="q")
            self.fc1, self.fc2 = nn.Linear(in_dim, HIDDEN), nn.Linear(HIDDEN, HIDDEN)
            self.fc31, self.fc32 = nn.Linear(HIDDEN, Z_DIM), nn.Linear(HIDDEN, Z_DIM)

        def forward(self, **inputs):
            h = (
                inputs[self.cond_var[0]]
                if len(self.cond_var) == 1
                else torch.cat([inputs[v] for v in self.cond_var], 1)
            )
            h = F.relu(self.fc2(F.relu(self.fc1(h))))
            return {"loc": self.fc31(h), "scale": F.softplus(self.fc32(h))}

    class GeneratorX(Bernoulli):  # p(x|z): z -> 512 -> 512 -> 1568
        def __init__(self):
            super().__init__(cond_var=["z"], var=["x"], name="p")
            self.fc1, self.fc2, self.fc3 = (
                nn.Linear(Z_DIM, HIDDEN),
                nn.Linear(HIDDEN, HIDDEN),
                nn.Linear(HIDDEN, X_DIM),
            )

        def forward(self, z):
            return {"probs": torch.sigmoid(self.fc3(F.relu(self.fc2(F.relu(self.fc1(z))))))}

    class GeneratorY(Categorical):  # p(attribute|z): z -> 512 -> 512 -> classes
        def __init__(self, name, classes):
            super().__init__(cond_var=["z"], var=[name], name="p")
            self.fc1, self.fc2, self.fc3 = (
                nn.Linear(Z_DIM, HIDDEN),
                nn.Linear(HIDDEN, HIDDEN),
                nn.Linear(HIDDEN, classes),
            )

        def forward(self, z):
            return {"probs": F.softmax(self.fc3(F.relu(self.fc2(F.relu(self.fc1(z))))), dim=1)}

    prior = Normal(
        loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[Z_DIM], name="p_{prior}"
    )
    names = list(ATTRIBUTES)
    q = Inference(["x", *names], X_DIM + sum(ATTRIBUTES.values()))
    q_x = Inference(["x"], X_DIM)
    q_attr = {n: Inference([n], c) for n, c in ATTRIBUTES.items()}
    q_y = ProductOfNormal(list(q_attr.values()), name="q")  # p(z) q(z|position) q(z|digit)
    p_x = GeneratorX()
    p_attr = {n: GeneratorY(n, c) for n, c in ATTRIBUTES.items()}
    p_y = p_attr[names[0]] * p_attr[names[1]]
    p = p_x * p_y
    opt = dict(optimizer=torch.optim.Adam, optimizer_params={"lr": lr})
    if kind == "jmvae":
        regularizer = KullbackLeibler(q, prior) + KullbackLeibler(q, q_x) + KullbackLeibler(q, q_y)
        model = VAE(q, p, other_distributions=[q_x, q_y], regularizer=regularizer, **opt)
    elif kind == "telbo":
        elbo_xy = -p.log_prob().expectation(q) + KullbackLeibler(q, prior)
        elbo_x = -p_x.log_prob().expectation(q_x) + KullbackLeibler(q_x, prior)
        elbo_y = -p_y.log_prob().expectation(q_y) + KullbackLeibler(q_y, prior)
        model = Model(
            loss=(elbo_xy + elbo_x + elbo_y).mean(), distributions=[q, q_x, q_y, p_x, *p_attr.values()], **opt
        )
    else:
        raise ValueError(f"kind {kind} (allowed: jmvae, telbo)")
    return model, {
        "q": q,
        "q_x": q_x,
        **{f"q_{n}": d for n, d in q_attr.items()},
        "p_x": p_x,
        **{f"p_{n}": d for n, d in p_attr.items()},
    }


def pixyz_batch(split: dict[str, torch.Tensor], idx) -> dict[str, torch.Tensor]:
    """Rows idx as a pixyz batch: the image as floats in [0, 1] (like jmvae's to_batch), attributes
    one-hot."""
    return {
        "x": split["x"][idx].float().div_(255),
        **{n: F.one_hot(split[n][idx], c).float() for n, c in ATTRIBUTES.items()},
    }


@torch.no_grad()
def copy_weights(jm, dists: dict, to: str) -> None:
    """Copy weights between a jmvae model and the pixyz reference's networks (to="pixyz" or "jmvae")."""
    pairs = []  # (jmvae Linear, pixyz Linear, rows of the jmvae weight)
    joint, q = (
        jm.joint_encoder,
        dists["q"],
    )  # jmvae splits q(z|x,y)'s first layer: image + one row table per attribute
    if to == "pixyz":
        weight, bias = joint.first_layer()
        q.fc1.weight.copy_(weight), q.fc1.bias.copy_(bias)
    else:
        joint.set_first_layer(q.fc1.weight, q.fc1.bias)
    pairs += [
        (joint.body[1], q.fc2, None),
        (joint.head, q.fc31, slice(0, Z_DIM)),
        (joint.head, q.fc32, slice(Z_DIM, 2 * Z_DIM)),
    ]
    for key, enc in {"q_x": jm.encoders["x"], **{f"q_{n}": jm.encoders[n] for n in ATTRIBUTES}}.items():
        d = dists[key]
        pairs += [
            (enc.body[0], d.fc1, None),
            (enc.body[2], d.fc2, None),
            (enc.head, d.fc31, slice(0, Z_DIM)),
            (enc.head, d.fc32, slice(Z_DIM, 2 * Z_DIM)),
        ]
    for name in ["x", *ATTRIBUTES]:
        dec, d = jm.decoders[name], dists[f"p_{name}"]
        pairs += [(dec[0], d.fc1, None), (dec[2], d.fc2, None), (dec[4], d.fc3, None)]
    for a, b, rows in pairs:
        rows = rows or slice(None)
        for jw, pw in ((a.weight[rows], b.weight), (a.bias[rows], b.bias)):
            pw.copy_(jw) if to == "pixyz" else jw.copy_(pw)


# -- timed training steps ---------------------------------------------------------------------------------
def timed_steps(model, loss_of, split):
    """A function that runs one optimizer step of `model` per batch of row indices given it (the loss
    loss_of(split, rows), the trainer's own Adam) and returns the seconds taken, the losses summed on the
    device and read once at the end, as the trainer does."""
    from jmvae.train import make_optimizer  # the benchmarks put src/ on the path before importing this

    optimizer = make_optimizer(model, 1e-3)

    def run(indices) -> float:
        t0, total = time.perf_counter(), 0.0
        for idx in indices:
            loss = loss_of(split, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total = total + loss.detach()
        float(total)
        return time.perf_counter() - t0

    return run


# -- what one training step computes ----------------------------------------------------------------------
Layer = tuple[
    int, int, bool, int | None
]  # (in, out, whether its input needs a gradient, rows: None = the batch)


def step_layers(kind: str, own: bool = False) -> list[Layer]:
    """Every Linear layer of one training step.

    own=False: the founding architecture as written (and as pixyz runs it): every encoder and decoder on
    the whole batch. An encoder's first layer reads data, so autograd computes no gradient for its input;
    every decoder reads z, which does need one.
    own=True: the products jmvae's step actually runs: q(z|x,y)'s attribute columns are row lookups, not
    products, and each attribute encoder runs on its C classes (networks.JointEncoder, ClassEncoder).
    """

    def enc(i, rows=None):
        return [(i, HIDDEN, False, rows), (HIDDEN, HIDDEN, True, rows), (HIDDEN, 2 * Z_DIM, True, rows)]

    def dec(o):
        return [(Z_DIM, HIDDEN, True, None), (HIDDEN, HIDDEN, True, None), (HIDDEN, o, True, None)]

    attrs = list(ATTRIBUTES.values())
    joint_in = X_DIM if own else X_DIM + sum(attrs)
    layers = (
        enc(joint_in) + enc(X_DIM) + [l for c in attrs for l in enc(c, c if own else None)]
    )  # q(z|x,y), q(z|x), q(z|y_i)
    layers += dec(X_DIM) + [l for c in attrs for l in dec(c)]  # p(x,y|z), z ~ q(z|x,y)
    if kind == "telbo":
        layers += dec(X_DIM) + [l for c in attrs for l in dec(c)]  # p(x|z), z ~ q(z|x); p(y|z), z ~ q(z|y)
    elif kind != "jmvae":
        raise ValueError(f"kind {kind} (allowed: jmvae, telbo)")
    return layers


def flops_per_sample(layers: list[Layer], batch: int, executed: bool = False) -> float:
    """Matmul FLOPs of one training step per example: 2*in*out*rows per product, three products per layer.

    executed=True leaves out the input gradients autograd never computes (the encoders' first layers).
    """
    return sum(
        2 * i * o * (rows or batch) / batch * (3 if grad or not executed else 2)
        for i, o, grad, rows in layers
    )


class MatmulReplay:
    """One training step's matrix products as bare torch.mm into preallocated outputs, in the layouts
    nn.Linear's autograd uses: forward x @ W.t(), input gradient g @ W, weight gradient g.t() @ x.

    executed=False replays all three products of every layer (the issue's ceiling); executed=True only
    those autograd runs (no input gradient where the input needs none). Calling it with n replays n steps
    and returns the seconds taken, so a benchmark can interleave it with the training it is compared to.
    `dtype` is the products' precision (bfloat16: the ceiling of a step trained with --precision bfloat16).
    """

    def __init__(
        self, layers: list[Layer], batch: int, executed: bool = False, dtype: torch.dtype = torch.float32
    ):
        g = torch.Generator().manual_seed(0)
        self.products = []
        for i, o, grad, rows in layers:
            rows = rows or batch
            x, w, gout = (
                torch.rand(*shape, generator=g).to(dtype) for shape in ((rows, i), (o, i), (rows, o))
            )
            self.products.append((x, w.t(), torch.empty(rows, o, dtype=dtype)))
            if grad or not executed:
                self.products.append((gout, w, torch.empty(rows, i, dtype=dtype)))
            self.products.append((gout.t(), x, torch.empty(o, i, dtype=dtype)))
        self(2)  # warm up: first calls pay for page faults and thread start

    def __call__(self, steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            for a, b, out in self.products:
                torch.mm(a, b, out=out)
        return time.perf_counter() - t0


class ParameterTraffic:
    """What a step must move besides its products, replayed on parameters of the step's layers' shapes: with
    products in bfloat16, each float32 weight and bias cast to bfloat16 for the forward pass and its bfloat16
    gradient cast back (once per step: the least autocast can do), then the trainer's Adam (fused where it can
    be) over all of them. Memory-bound work that a matmul ceiling does not count; with float32 products, Adam
    only. Called like MatmulReplay: n steps, the seconds taken."""

    def __init__(self, layers: list[Layer], dtype: torch.dtype = torch.float32):
        shapes = [s for i, o, _, _ in layers for s in ((o, i), (o,))]
        from jmvae.train import make_optimizer  # the benchmarks put src/ on the path before importing this

        params = nn.ParameterList(nn.Parameter(torch.randn(*s) * 0.01) for s in shapes)
        self.casts = (
            [(p, torch.empty_like(p, dtype=dtype), torch.randn(*p.shape).to(dtype)) for p in params]
            if dtype != torch.float32
            else []
        )
        for p in params:
            p.grad = torch.zeros_like(p)
        self.optimizer = make_optimizer(params, lr=1e-3)  # the trainer's own Adam
        self(2)

    def __call__(self, steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            for p, low, grad in self.casts:
                low.copy_(p)  # the weight as the forward pass multiplies it
                p.grad.copy_(grad)  # its gradient back to float32
            self.optimizer.step()
        return time.perf_counter() - t0
