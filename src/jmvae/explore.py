"""explore.html: the latent space of a run, to move through in a browser. One self-contained file.

The page needs no server and no network: the decoders' weights are embedded (float16, base64) and run in
plain JavaScript (MLPs and the conv image decoder; grey or colour images; a continuous attribute's mean), and
everything that needs an encoder is precomputed here: the test set's q(z|x) means (the points), each fitted
sampler's density on the plane, and for every attribute query (every subset of up to as many attributes as
MAX_QUERIES allows, which on the presets is all of them; every combination of classes, a continuous
attribute's slider at SLIDER_STEPS values) its posterior's components (centre and covariance on the plane, for
the 1 and 2 sigma ellipses) and a few draws from it (the strip of images). For z > 2 the plane is spanned by
the first two principal directions of the test embeddings, and sliders move along the others.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
import re
from pathlib import Path

import torch
from torch import nn

from .data.attributes import AttributeDataset, to_batch
from .errors import UserError
from .modalities import Attribute, Continuous
from .models import MultimodalVAE
from .models.mmvaeplus import PrivateDecoder
from .networks import ConvDecoder, PlacedDecoder, own_stream
from .runs import write_text
from .samplers import LatentSampler

EXPLORER = "explore.html"  # its name in a run directory
MAX_POINTS = 2000  # test points drawn on the plane
STRIP = 8  # images per query strip
SLIDER_STEPS = 11  # values a continuous attribute's slider offers, evenly over its training range
MAX_QUERIES = 1000  # precomputed queries: every one of up to as many attributes as fit (query_sizes)
MAX_SINGLE_QUERIES = 4 * MAX_QUERIES  # ... and of single attributes at most this many, whatever they hold
DENSITY_GRID = 64  # a fitted sampler's density on the plane: values at 64 x 64 points
TEMPLATE = Path(__file__).with_name("explore.html")


def half(a: torch.Tensor) -> str:
    """float16 little-endian bytes, base64."""
    return base64.b64encode(
        a.detach().cpu().to(torch.float16).contiguous().numpy().astype("<f2").tobytes()
    ).decode()


def shared_only(decoder: nn.Module) -> nn.Module:
    """A decoder of z alone: MMVAE+'s private latent held at its prior's mean."""
    return decoder.at_prior_mean() if isinstance(decoder, PrivateDecoder) else decoder


def decoder_ops(decoder: nn.Module, name: str) -> dict:
    """{"layers": ...} of a decoder; a PlacedDecoder's are its glyph's, with "placed": its offsets' MLP and
    background, the placement's sizes and (posed) its pose's MLP."""
    if not isinstance(decoder, PlacedDecoder):
        return {"layers": decoder_layers(decoder, name)}
    return {
        "layers": decoder_layers(decoder.glyph, name),
        "placed": {
            "where": decoder_layers(decoder.where, name),
            "background": [float(b) for b in decoder.background],
            "shape": list(decoder.shape),
            "glyph": list(decoder.glyph_shape),
            "offsets": list(decoder.offsets),
            "stride": decoder.stride,
        }
        | ({"pose": decoder_layers(decoder.pose, name)} if decoder.pose is not None else {}),
    }


def decoder_layers(decoder: nn.Module, name: str) -> list[dict]:
    """A decoder as the page's operations: each Linear as {out, in, w, b, relu} and each 2-D transposed
    convolution (the conv image decoder) as {op: "convT", ...}; the page runs these in JavaScript."""
    if isinstance(decoder, ConvDecoder):
        layers = [*decoder.fc, *decoder.net]
        h, w = decoder.grid[1:]
    else:
        layers = list(decoder) if isinstance(decoder, nn.Sequential) else [decoder]
        h = w = 0
    ops: list[dict] = []
    for m in layers:
        if isinstance(m, nn.Linear):
            ops.append(
                {
                    "out": m.out_features,
                    "in": m.in_features,
                    "w": half(m.weight),
                    "b": half(m.bias),
                    "relu": False,
                }
            )
        elif (
            isinstance(m, nn.ConvTranspose2d)
            and m.bias is not None
            and isinstance(m.padding, tuple)
            and m.stride[0] == m.stride[1]
            and m.padding[0] == m.padding[1]
        ):
            ops.append(
                {
                    "op": "convT",
                    "cin": m.in_channels,
                    "cout": m.out_channels,
                    "k": m.kernel_size[0],
                    "s": m.stride[0],
                    "p": m.padding[0],
                    "h": h,
                    "wd": w,
                    "w": half(m.weight),
                    "b": half(m.bias),
                    "relu": False,
                }
            )
            h, w = (
                (h - 1) * m.stride[0] - 2 * m.padding[0] + m.kernel_size[0],
                (w - 1) * m.stride[0] - 2 * m.padding[0] + m.kernel_size[0],
            )
        elif isinstance(m, nn.ReLU) and ops:
            ops[-1]["relu"] = True
        elif not isinstance(m, nn.Flatten):
            ops = []
            break
    if not ops:
        raise UserError(
            f"explore: the decoder of {name} is a {type(decoder).__name__} (allowed: an MLP of Linear and "
            "ReLU layers or jmvae's conv or placed decoder, which the page runs in JavaScript)"
        )
    return ops


def plane_of(model: MultimodalVAE, data: AttributeDataset, points: torch.Tensor) -> dict:
    """Origin, the two plane directions and the slider directions (rows of `basis`), with each slider's
    range."""
    d = model.z_dim
    if d <= 2:
        basis = torch.eye(d)
        origin = torch.zeros(d)
        spread = torch.ones(0)
    else:
        origin = points.mean(0)
        _, s, vt = torch.linalg.svd(points - origin, full_matrices=False)
        basis = vt
        spread = s[2:] / max(1, len(points) - 1) ** 0.5
    return {"origin": origin.tolist(), "basis": basis.tolist(), "slider_sd": spread.tolist()}


def choices(a: Attribute) -> tuple[list[str], torch.Tensor]:
    """What the query panel offers for an attribute: its classes, or for a continuous one SLIDER_STEPS values
    evenly over its training range (labels, and the values as the model takes them)."""
    if isinstance(a, Continuous):
        values = torch.linspace(a.low, a.high, SLIDER_STEPS)
        return [a.show(float(v)) for v in values], values
    return list(a.classes), a.level_values(torch.arange(len(a.classes)))


def query_sizes(counts: list[int], limit: int = MAX_QUERIES) -> int:
    """How many attributes a precomputed query may give: every query of up to that many fits in `limit`
    (at least 1). counts: each attribute's number of choices."""
    total, size = 0, 0
    for r in range(1, len(counts) + 1):
        total += sum(math.prod(c) for c in itertools.combinations(counts, r))
        if total > limit and r > 1:
            break
        size = r
    return size


def queries(
    model: MultimodalVAE,
    data: AttributeDataset,
    plane: dict,
    device,
    generator: torch.Generator,
    max_given: int,
) -> list[dict]:
    """Every attribute query of up to `max_given` attributes (every combination of their choices): label,
    given choices, components on the plane (weight, centre, 2x2 covariance), the mean and a few draws."""
    origin = torch.tensor(plane["origin"])
    basis = torch.tensor(plane["basis"])[:2]  # (2 or 1, d)
    offered = {a.name: choices(a) for a in data.attributes}
    out: list[dict] = []
    for r in range(1, max_given + 1):
        for subset in itertools.combinations(data.attributes, r):
            for values in itertools.product(*(range(len(offered[a.name][0])) for a in subset)):
                if len(out) >= MAX_SINGLE_QUERIES:  # one attribute with very many values: the first ones
                    return out
                given = {a.name: offered[a.name][1][v : v + 1].to(device) for a, v in zip(subset, values)}
                q = model.posterior(given)
                weights, loc, scale = (t[0].cpu() for t in q.components())  # (K,), (K, d), (K, d)
                comps = []
                for w, m, s in zip(weights, loc, scale):
                    centre = torch.zeros(2)
                    cov = torch.zeros(2, 2)
                    k = len(basis)  # 1 for a 1-D latent: no vertical axis
                    centre[:k] = basis @ (m - origin)
                    cov[:k, :k] = basis @ torch.diag(s * s) @ basis.T
                    comps.append({"w": float(w), "c": centre.tolist(), "cov": cov.tolist()})
                torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
                draws = q.sample((STRIP,))[:, 0].cpu()
                out.append(
                    {
                        "label": ", ".join(
                            f"{a.name}={offered[a.name][0][v]}" for a, v in zip(subset, values)
                        ),
                        "given": {a.name: int(v) for a, v in zip(subset, values)},
                        "components": comps,
                        "mean": q.mean[0].cpu().tolist(),
                        "draws": draws.tolist(),
                    }
                )
    return out


def densities(samplers: dict[str, LatentSampler], plane: dict, extent: float) -> dict[str, list[float]]:
    """Each fitted sampler's density on the plane (the sliders at 0): DENSITY_GRID x DENSITY_GRID values,
    rows from the top (v = extent) down, columns from u = -extent, scaled so the largest is 1."""
    origin, basis = torch.tensor(plane["origin"]), torch.tensor(plane["basis"])[:2]
    centres = (torch.arange(DENSITY_GRID) + 0.5) / DENSITY_GRID * 2 * extent - extent
    v, u = torch.meshgrid(centres.flip(0), centres, indexing="ij")
    coef = torch.stack([u, v], -1).reshape(-1, 2)[:, : len(basis)]
    z = origin + coef @ basis
    out = {}
    for kind, sampler in samplers.items():
        log_p = sampler.log_prob(z.float()).double()
        p = (log_p - log_p.max()).exp()
        out[kind] = [round(float(x), 3) for x in p]
    return out


@torch.no_grad()
def explorer_data(
    model: MultimodalVAE,
    data: AttributeDataset,
    title: str,
    seed: int = 0,
    samplers: dict[str, LatentSampler] | None = None,
) -> dict:
    with own_stream(model):  # the draws reseed torch; the caller's random state stays as it was
        return _explorer_data(model, data, title, seed, samplers or {})


def _explorer_data(
    model: MultimodalVAE, data: AttributeDataset, title: str, seed: int, samplers: dict[str, LatentSampler]
) -> dict:
    model.eval()
    device = next(model.parameters()).device
    n = data.n_test
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:MAX_POINTS].sort().values
    batch = to_batch(data.test, idx, device)
    means = model.posterior({x: batch[x] for x in data.image_names}).mean.cpu()
    plane = plane_of(model, data, means)
    basis = torch.tensor(plane["basis"])
    coords = (means - torch.tensor(plane["origin"])) @ basis[:2].T
    if coords.shape[1] == 1:
        coords = torch.cat([coords, torch.zeros_like(coords)], 1)
    extent = max(3.0, float(coords.abs().max()) * 1.05)
    max_given = query_sizes([len(choices(a)[0]) for a in data.attributes])
    likelihoods = {m.name: m.likelihood for m in data.images}  # the page shows each image's mean of p(x|z)
    return {
        "title": title,
        "z_dim": model.z_dim,
        "images": [{"name": m.name, "shape": list(m.shape), "channels": m.channels} for m in data.images],
        "attributes": [
            {"name": a.name, "classes": list(a.classes), "kind": a.kind, "choices": choices(a)[0]}
            | (
                {"mean": a.mean, "std": a.std, "low": a.low, "high": a.high}
                if isinstance(a, Continuous)
                else {}
            )
            for a in data.attributes
        ],
        "max_given": max_given,
        "plane": plane,
        "extent": extent,
        "points": {
            "xy": [[round(float(u), 4) for u in p] for p in coords],
            "values": {a.name: a.to_levels(batch[a.name]).cpu().tolist() for a in data.attributes},
        },
        "queries": queries(model, data, plane, device, g, max_given),
        "decoders": {
            name: {
                **decoder_ops(shared_only(model.decoders[name]), name),
                "kind": "image" if name in data.image_names else data.attribute(name).kind,
                **({"likelihood": likelihoods[name]} if name in likelihoods else {}),
            }
            for name in model.names
        },
        "objective": model.describe(),
        "densities": {"grid": DENSITY_GRID, "kinds": densities(samplers, plane, extent)},
    }


def script_json(payload: str) -> str:
    """JSON that cannot end or alter the <script> element holding it: <, > and & inside strings as \\u escapes
    (the only places they occur in JSON), which JSON.parse reads back unchanged."""
    return payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def fill(template: str, values: dict[str, str]) -> str:
    """The template with each placeholder replaced, in one pass over the template alone: text put in is never
    scanned for placeholders (a title holding "__DATA__" stays text)."""
    return re.sub("|".join(map(re.escape, values)), lambda m: values[m.group(0)], template)


def write_explorer(
    model: MultimodalVAE,
    data: AttributeDataset,
    out: Path,
    title: str,
    seed: int = 0,
    samplers: dict[str, LatentSampler] | None = None,
) -> Path:
    """Write the explorer page to `out` (atomically); with fitted samplers, their densities on the plane."""
    payload = json.dumps(explorer_data(model, data, title, seed, samplers), separators=(",", ":"))
    write_text(
        Path(out),
        fill(TEMPLATE.read_text(), {"__TITLE__": html.escape(title), "__DATA__": script_json(payload)}),
    )
    return Path(out)


def screenshot(page_path: Path, png: Path, width: int = 1280, height: int = 800) -> Path:
    """A PNG of the page in Chromium (Playwright with the system browser); UserError where neither is
    installed."""
    from .browser import open_page

    with open_page(page_path, width, height) as page:
        last = page.evaluate("() => document.querySelectorAll('#query select').length") - 1
        page.select_option(f"#query select >> nth={last}", index=2)  # the last attribute's second value
        page.evaluate(
            "() => "
            "window.jmvaeExplorer.setZ(window.jmvaeExplorer.queryMean(window.jmvaeExplorer.queryIndex()))"
        )
        png.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(png))
    return png


__all__ = ["EXPLORER", "write_explorer", "explorer_data", "screenshot"]
