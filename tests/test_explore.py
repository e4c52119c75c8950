"""explore.html in a real browser (Debian's chromium driven by Playwright): it loads from file:// with no
console error, its JavaScript decoders agree with PyTorch, dragging and the keyboard move z, choosing
attribute values draws their posterior, and it works for a mixture posterior with z > 2."""

import json

import pytest
import torch

from jmvae.browser import open_page
from jmvae.cli import main
from jmvae.explore import write_explorer
from jmvae.train import load_run

TINY = ["--steps", "40", "--hidden", "32", "--k", "20", "--n-per-query", "5", "--coherence-draws", "200"]


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    out = tmp_path_factory.mktemp("explore") / "jmvae"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    out = tmp_path_factory.mktemp("explore") / "mmvae"
    assert main(["train", "--model", "mmvae", "--z-dim", "3", "--out", str(out), *TINY]) == 0
    return out


def torch_decode(model, z):
    with torch.no_grad():
        logits = model.logits(torch.tensor([z], dtype=torch.float32))
    return {n: (l.sigmoid() if n in model.image_names else l.softmax(-1))[0] for n, l in logits.items()}


def test_founding_network_page_is_self_contained_and_under_5_mb(founding_data, tmp_path):
    from jmvae.models import build_model

    torch.manual_seed(0)
    model = build_model("jmvae", founding_data.modalities)  # the founding network: 512-512 MLPs
    page = write_explorer(model, founding_data, tmp_path / "e.html", "founding")
    text = page.read_text()
    assert page.stat().st_size < 5e6, page.stat().st_size
    assert "http://" not in text and "https://" not in text and "<script src" not in text


@pytest.mark.slow
def test_train_writes_the_explorer_and_the_report_links_it(run2):
    assert (run2 / "explore.html").is_file()
    assert 'href="explore.html"' in (run2 / "report.html").read_text()


@pytest.mark.slow
def test_page_in_a_real_browser(run2):
    _, data, model = load_run(run2)
    errors: list = []
    with open_page(run2 / "explore.html", errors=errors) as page:
        assert page.url.startswith("file://")
        # it opens on the first query, position=left: its ellipses, its draws, z at its mean; no empty box
        assert page.evaluate("() => window.jmvaeExplorer.queryIndex()") == 0
        assert page.evaluate("() => document.querySelector('#query select[name=position]').value") == "0"
        assert len(page.evaluate("() => window.jmvaeExplorer.ellipses()")) == 1
        assert page.evaluate("() => !document.getElementById('strip').hidden")
        with torch.no_grad():
            left = model.posterior(
                {"position": torch.tensor([data.attribute("position").index("left")])}
            ).mean[0]
        assert torch.allclose(
            torch.tensor(page.evaluate("() => window.jmvaeExplorer.getZ()")), left, atol=1e-4
        )
        for z in ([0.0, 0.0], [1.2, -0.7], [-2.5, 2.0], [0.3, 2.9]):
            js = page.evaluate("z => window.jmvaeExplorer.decode(z)", z)
            ref = torch_decode(model, z)
            assert (torch.tensor(js["image"]) - ref["x"]).abs().max() < 1e-2
            for a in data.attributes:
                assert (torch.tensor(js["attrs"][a.name]) - ref[a.name]).abs().max() < 1e-3, a.name
        # a drag over the plane moves z and changes the image
        before = page.evaluate("() => window.jmvaeExplorer.current().image")
        start = page.evaluate("() => window.jmvaeExplorer.toPage(-2, -2)")
        end = page.evaluate("() => window.jmvaeExplorer.toPage(2, 1.5)")
        page.mouse.move(*start)
        page.mouse.down()
        page.mouse.move(*end, steps=8)
        page.mouse.up()
        # the image is redrawn on the next animation frame: wait for it (a fixed wait may miss it, busy host)
        changed = (
            "b => Array.from(window.jmvaeExplorer.current().image).some((v, i) => Math.abs(v - b[i]) > 0.05)"
        )
        page.wait_for_function(changed, arg=before, timeout=10_000)
        z = page.evaluate("() => window.jmvaeExplorer.getZ()")
        assert abs(z[0] - 2) < 0.05 and abs(z[1] - 1.5) < 0.05, z
        after = page.evaluate("() => window.jmvaeExplorer.current().image")
        assert max(abs(a - b) for a, b in zip(before, after)) > 0.05
        # the keyboard moves z too
        page.focus("#plane")
        page.keyboard.press("ArrowLeft")
        page.wait_for_function("x => window.jmvaeExplorer.getZ()[0] < x", arg=z[0], timeout=10_000)
        # choosing digit=2 (position back to any) draws q(z | digit=2): its centre is that posterior's mean
        page.select_option("#query select[name=position]", label="any")
        page.select_option("#query select[name=digit]", label="2")
        drawn = page.evaluate("() => window.jmvaeExplorer.ellipses()")
        with torch.no_grad():
            q = model.posterior({"digit": torch.tensor([data.attribute("digit").index("2")])})
        assert len(drawn) == 1 and torch.allclose(torch.tensor(drawn[0]["centre"]), q.mean[0], atol=1e-4)
        assert page.evaluate("() => !document.getElementById('strip').hidden")
        # readable on a phone-sized window and a desktop one: nothing wider than the screen, no canvas taller
        # than the window (a hidden strip once stayed displayed, 1 pixel wide scaled to 10,882 px tall)
        for width, height in ((390, 844), (1280, 800)):
            page.set_viewport_size({"width": width, "height": height})
            assert page.evaluate("() => document.documentElement.scrollWidth") <= width
            boxes = page.evaluate(
                "() => [...document.querySelectorAll('canvas')].map(c => "
                "[c.id, c.getBoundingClientRect().width, c.getBoundingClientRect().height])"
            )
            assert all(0 < w <= width and 0 < h <= height for _, w, h in boxes), boxes
        page.select_option("#query select[name=digit]", label="any")  # no query: the strip is not shown
        assert page.evaluate("() => document.getElementById('strip').getBoundingClientRect().height") == 0
    assert errors == [], errors


@pytest.mark.slow
def test_mixture_posterior_and_three_dimensional_latent(run3):
    _, data, model = load_run(run3)
    errors: list = []
    with open_page(run3 / "explore.html", errors=errors) as page:
        assert page.evaluate("() => document.querySelectorAll('#sliders input').length") == 1
        z = page.evaluate("() => window.jmvaeExplorer.getZ()")
        assert len(z) == 3
        js = page.evaluate("z => window.jmvaeExplorer.decode(z)", [0.5, -0.4, 0.8])
        assert (torch.tensor(js["image"]) - torch_decode(model, [0.5, -0.4, 0.8])["x"]).abs().max() < 1e-2
        page.select_option("#query select[name=position]", label="left")
        page.select_option("#query select[name=digit]", label="1")
        drawn = page.evaluate("() => window.jmvaeExplorer.ellipses()")
        assert len(drawn) == 2  # MMVAE: the mixture of the position and the digit expert
        page.evaluate("() => window.jmvaeExplorer.setZ([0.1, 0.2, 0.3])")
        back = page.evaluate("() => window.jmvaeExplorer.getZ()")
        assert max(abs(a - b) for a, b in zip(back, [0.1, 0.2, 0.3])) < 1e-5  # plane + slider span z
    assert errors == [], errors


@pytest.mark.slow
def test_explore_command_rewrites_the_page_and_saves_a_screenshot(run2, tmp_path, capsys):
    assert main(["explore", str(run2), "--out", str(tmp_path / "mine.html"), "--screenshot"]) == 0
    assert (tmp_path / "mine.html").is_file()
    png = run2 / "figures" / "explore.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["explore", str(run2), "--out", str(tmp_path / "x.txt")]) == 2
    assert "allowed: a .html file" in capsys.readouterr().err
    json.loads((run2 / "config.json").read_text())  # the run is untouched otherwise


@pytest.mark.slow
@pytest.mark.parametrize("name,z_dim", [("mmvae", 1), ("telbo", 5)])
def test_any_model_any_latent_size(founding_data, tmp_path, name, z_dim):
    """An untrained model is enough: the page must load and decode like PyTorch for a 1-D and a 5-D latent."""
    from jmvae.models import build_model

    torch.manual_seed(0)
    model = build_model(name, founding_data.modalities, z_dim=z_dim, hidden=32).eval()
    page_path = write_explorer(model, founding_data, tmp_path / "e.html", name)
    errors: list = []
    with open_page(page_path, errors=errors) as page:
        z = [0.3 * (i + 1) for i in range(z_dim)]
        js = page.evaluate("z => window.jmvaeExplorer.decode(z)", z)
        assert (torch.tensor(js["image"]) - torch_decode(model, z)["x"]).abs().max() < 1e-2
        assert page.evaluate("() => document.querySelectorAll('#sliders input').length") == max(0, z_dim - 2)
        page.select_option("#query select[name=position]", label="right")
        assert len(page.evaluate("() => window.jmvaeExplorer.ellipses()")) >= 1
        page.evaluate("z => window.jmvaeExplorer.setZ(z)", z)
        back = page.evaluate("() => window.jmvaeExplorer.getZ()")
        assert max(abs(a - b) for a, b in zip(back, z)) < 1e-4
    assert errors == [], errors


def test_a_decoder_the_page_cannot_run_is_one_line(founding_data, tmp_path):
    from torch import nn

    from jmvae.errors import UserError
    from jmvae.models import build_model

    class Odd(nn.Module):
        def forward(self, z):
            return z.new_zeros(*z.shape[:-1], 28 * 56)

    model = build_model("jmvae", founding_data.modalities, hidden=16, decoders={"x": Odd()})
    with pytest.raises(UserError, match="decoder of x is a Odd"):
        write_explorer(model, founding_data, tmp_path / "e.html", "odd")
    assert not (tmp_path / "e.html").exists()


@pytest.mark.slow
def test_a_run_name_cannot_put_script_into_the_page(run2, tmp_path):
    """`--name "__DATA__<img src=x onerror=alert(1)>"` ran script: the data placeholder was also replaced
    inside the escaped title. Neither the title nor the embedded JSON (a "</script>" in it) may run
    anything."""
    _, data, model = load_run(run2)
    title = "__DATA__<img src=x onerror=alert(1)></script><script>window.pwned = 1</script>__TITLE__ & <!--"
    page_path = write_explorer(model, data, tmp_path / "e.html", title)
    errors: list = []
    with open_page(page_path, errors=errors) as page:
        dialogs: list = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.wait_for_timeout(300)
        assert page.evaluate("() => window.pwned") is None and not dialogs
        assert page.evaluate("() => document.querySelectorAll('img').length") == 0
        assert page.evaluate("() => document.querySelector('h1').textContent") == title
        assert page.evaluate("() => JSON.parse(document.getElementById('data').textContent).title") == title
        assert page.title() == f"{title} · latent explorer"
    assert not errors, errors


def test_colour_conv_decoder_and_a_continuous_attribute_run_in_the_page(tmp_path):
    """A user's colour 32x32 data: the conv decoder and the continuous attribute's mean in JavaScript agree
    with PyTorch, and the page draws the colour image."""
    import numpy as np

    from jmvae.data.own import from_arrays
    from jmvae.models import build_model

    rng = np.random.default_rng(0)
    data = from_arrays(
        {
            "x": (rng.random((40, 32, 32, 3)) * 255).astype(np.uint8),
            "kind": np.array(["a", "b"] * 20),
            "amount": rng.normal(size=40),
        }
    )
    torch.manual_seed(0)
    model = build_model("jmvae", data.modalities, z_dim=3, hidden=32).eval()
    page_path = write_explorer(model, data, tmp_path / "e.html", "colour")
    errors: list = []
    with open_page(page_path, errors=errors) as page:
        z = [0.4, -0.7, 1.1]
        js = page.evaluate("z => window.jmvaeExplorer.decode(z)", z)
        with torch.no_grad():
            logits = model.logits(torch.tensor([z]))
        assert len(js["image"]) == 3 * 32 * 32
        assert (torch.tensor(js["image"]) - logits["x"][0].sigmoid()).abs().max() < 1e-2
        assert (torch.tensor(js["attrs"]["kind"]) - logits["kind"][0].softmax(-1)).abs().max() < 1e-3
        assert sum(js["attrs"]["amount"]) == 1  # the nearest level of the mean
        page.select_option("#query select[name=kind]", "")  # a continuous attribute is a slider
        page.check("#query input[aria-label='give amount']")
        page.fill("#query input[aria-label='amount value']", "9")
        assert len(page.evaluate("() => window.jmvaeExplorer.ellipses()")) >= 1
        asked = data.attribute("amount")
        value = asked.low + 9 * (asked.high - asked.low) / 10  # the 10th of 11 steps over the range
        assert page.text_content("#query output") == asked.show(value)
        index = page.evaluate("() => window.jmvaeExplorer.queryIndex()")
        with torch.no_grad():
            mean = model.posterior({"amount": torch.tensor([value])}).mean[0]
        assert (
            torch.tensor(page.evaluate("i => window.jmvaeExplorer.queryMean(i)", index)) - mean
        ).abs().max() < 1e-4
        pixel = page.evaluate(
            "() => Array.from(document.getElementById('image').getContext('2d')"
            ".getImageData(0, 0, 1, 1).data)"
        )
        assert pixel[3] == 255 and len(set(pixel[:3])) > 1  # a colour pixel, not grey
    assert errors == [], errors


@pytest.mark.parametrize(
    "name, decoder",
    [("jmvae", "placed"), ("mmvaeplus", "placed"), ("jmvae", "posed"), ("mmvaeplus", "posed")],
)
def test_a_placed_decoder_runs_in_the_page_as_in_pytorch(tmp_path, name, decoder):
    """--image-decoder placed: the glyph, its offsets' softmax and the placement in JavaScript agree with
    PyTorch on colour 32x48 images; MMVAE+'s at its private latent's prior mean (w = 0); posed: the glyph
    turned, scaled and shifted (bilinear, as grid_sample) before it is laid at offsets every 2 pixels."""
    from dataclasses import replace

    import numpy as np

    from jmvae.data.own import from_arrays
    from jmvae.models import build_model

    rng = np.random.default_rng(0)
    data = from_arrays(
        {"x": (rng.random((40, 32, 48, 3)) * 255).astype(np.uint8), "kind": np.array(["a", "b"] * 20)}
    )
    data.images = [replace(im, decoder=decoder, stride=2 if decoder == "posed" else 4) for im in data.images]
    torch.manual_seed(0)
    model = build_model(name, data.modalities, z_dim=3, hidden=32).eval()
    with torch.no_grad():
        for p in model.decoders["x"].parameters():  # offsets' weights far from uniform, as after training,
            p.add_(torch.randn_like(p)).copy_(p.half().float())  # in the page's half precision
        if decoder == "posed":  # poses inside the glyph: turns of 0.76-0.86 rad, shifts up to 0.6 of it
            head = getattr(model.decoders["x"], "net", model.decoders["x"]).pose[-1]  # MMVAE+'s: in .net
            head.weight.mul_(0.03125)
            head.bias.copy_(torch.tensor([0.9, 0.3, 0.1, -0.2]).half().float())
    page_path = write_explorer(model, data, tmp_path / "e.html", "placed")
    errors: list = []
    with open_page(page_path, errors=errors) as page:
        for z in ([0.4, -0.7, 1.1], [-1.5, 0.2, 0.9]):
            js = page.evaluate("z => window.jmvaeExplorer.decode(z)", z)
            with torch.no_grad():
                zt = torch.tensor([z])
                if name == "mmvaeplus":
                    dec = model.decoders["x"]
                    logits = dec(zt, torch.zeros(1, dec.log_scale.numel()))[0]
                else:
                    logits = model.logits(zt)["x"][0]
            assert len(js["image"]) == 3 * 32 * 48
            assert (torch.tensor(js["image"]) - logits.sigmoid()).abs().max() < 1e-2
    assert errors == [], errors


def test_two_images_are_decoded_and_drawn_side_by_side(tmp_path):
    """Several images per example: each decoder runs in JavaScript as in PyTorch, and the canvas holds them
    side by side (a grey 8x8 beside a colour 32x32, one pixel apart)."""
    import numpy as np

    from jmvae.data.own import from_arrays
    from jmvae.models import build_model

    rng = np.random.default_rng(0)
    data = from_arrays(
        {
            "top": (rng.random((40, 8, 8)) * 255).astype(np.uint8),
            "side": (rng.random((40, 32, 32, 3)) * 255).astype(np.uint8),
            "kind": np.array(["a", "b"] * 20),
        }
    )
    torch.manual_seed(0)
    model = build_model("mvae", data.modalities, z_dim=2, hidden=32).eval()
    page_path = write_explorer(model, data, tmp_path / "e.html", "two views")
    errors: list = []
    with open_page(page_path, errors=errors) as page:
        js = page.evaluate("z => window.jmvaeExplorer.decode(z)", [0.3, -0.2])
        want = torch_decode(model, [0.3, -0.2])
        for name in ("top", "side"):
            assert (torch.tensor(js["images"][name]) - want[name]).abs().max() < 1e-2, name
        size = page.evaluate(
            "() => [document.getElementById('image').width, document.getElementById('image').height]"
        )
        assert size == [8 + 1 + 32, 32]
        right = page.evaluate(
            "() => Array.from(document.getElementById('image').getContext('2d')"
            ".getImageData(9, 0, 1, 1).data)"
        )
        current = page.evaluate("() => window.jmvaeExplorer.current().images.side")
        assert right[:3] == [
            round(255 * current[c * 32 * 32]) for c in range(3)
        ]  # side's first pixel at x = 9
    assert not errors, errors
