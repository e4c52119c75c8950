"""A user's own data: a folder in the ImageFolder layout, an .npz, arrays from Python; kinds inferred; empty
cells; colour images; bad data refused with one line; the export round trip against the preset."""

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from jmvae.cli import main
from jmvae.config import TrainConfig
from jmvae.data import own
from jmvae.data.attributes import load_dataset
from jmvae.errors import UserError
from jmvae.modalities import Binary, Categorical, Continuous
from jmvae.modalities import Image as ImageModality
from jmvae.models import MODELS, build_model
from jmvae.networks import low_precision
from jmvae.subsets import mark_observed
from jmvae.train import build, load_run, schema, schema_text, train

pytestmark = pytest.mark.usefixtures("quick_reader")  # conftest: the reader trained briefly


TINY = [
    "--hidden",
    "32",
    "--k",
    "3",
    "--n-per-query",
    "4",
    "--coherence-draws",
    "20",
    "--likelihood-examples",
    "5",
]


def write_folder(root, n=60, size=(32, 32), colour=True, missing=True, seed=0, layout="root", fmt="csv"):
    """A colour dataset: a square whose colour (categorical), brightness (continuous) and fill (binary)
    vary."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        colour_name = ["red", "green", "blue"][i % 3]
        level, filled = float(rng.uniform(0.3, 1.0)), bool(i % 2)
        img = np.zeros((*size, 3), np.uint8)
        c = {"red": 0, "green": 1, "blue": 2}[colour_name]
        img[4:-4, 4:-4, c] = int(255 * level) if filled else 0
        img[4:6, 4:-4, c] = int(255 * level)
        if not colour:
            img = img.max(-1, keepdims=True).repeat(3, -1)
        split = "" if layout == "root" else ("test/" if i % 5 == 0 else "train/")
        name = f"{split}img{i:03d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / name)
        row = {
            "file_name": name,
            "colour": colour_name,
            "brightness": f"{level:.3f}",
            "filled": str(filled).lower(),
        }
        if missing and i % 7 == 3:
            row["colour"] = ""
        if missing and i % 11 == 5:
            row["brightness"] = ""
        rows.append(row)
    if fmt == "csv":
        with open(root / "metadata.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        with open(root / "metadata.jsonl", "w") as f:
            for r in rows:
                typed = {
                    "file_name": r["file_name"],
                    "colour": r["colour"] or None,
                    "brightness": float(r["brightness"]) if r["brightness"] else None,
                    "filled": r["filled"] == "true",
                }
                f.write(json.dumps(typed) + "\n")
    return root


def test_kinds_are_inferred_from_the_values():
    assert own.infer_kind("a", ["true", "false", "TRUE"]) == "binary"
    assert own.infer_kind("a", ["0", "1", "1"]) == "binary"
    assert own.infer_kind("a", [True, False]) == "binary"
    assert own.infer_kind("a", ["1", "2", "3"]) == "categorical"
    assert own.infer_kind("a", ["red", "blue"]) == "categorical"
    assert own.infer_kind("a", ["0.5", "1.25", "3"]) == "continuous"
    assert own.infer_kind("a", [str(i) for i in range(40)]) == "continuous"  # many integers: a quantity
    assert own.infer_kind("a", ["1.0", "2.0", "3.0"]) == "continuous"  # written as real numbers
    assert (
        own.infer_kind("a", [1.0, 2.0, 3.0]) == "continuous"
        and own.infer_kind("a", [1, 2, 3]) == "categorical"
    )
    with pytest.raises(UserError, match="'abc' is text in a numeric column"):
        own.infer_kind("dose", ["0.5", "1.5", "abc", "2"])


def test_a_colour_folder_with_empty_cells_loads_with_its_schema(tmp_path):
    write_folder(tmp_path / "d")
    data = load_dataset(None, data=str(tmp_path / "d"), seed=0, test_fraction=0.25, progress=False)
    assert data.images[0].channels == 3 and data.images[0].shape == (32, 32)
    assert data.n_train == 45 and data.n_test == 15
    kinds = {a.name: type(a) for a in data.attributes}
    assert kinds == {"colour": Categorical, "brightness": Continuous, "filled": Binary}
    assert data.attribute("colour").classes == ("blue", "green", "red")
    both = {k: torch.cat([data.train[k], data.test[k]]) for k in data.train}
    assert int((both["colour"] == -1).sum()) == sum(
        1 for i in range(60) if i % 7 == 3
    )  # empty cells: not observed
    assert int(both["brightness"].isnan().sum()) == sum(1 for i in range(60) if i % 11 == 5)
    b = data.attribute("brightness")  # standardised on the training split
    seen = data.train["brightness"][~data.train["brightness"].isnan()]
    assert abs(float(seen.mean())) < 1e-5 and abs(float(seen.std(unbiased=False)) - 1) < 1e-4
    assert 0.3 <= b.mean <= 1.0
    # colour kept, channel-first: the red square's pixels are in channel 0
    img = data.train["x"][0].reshape(3, 32, 32)
    assert img.shape == (3, 32, 32) and int(img.sum()) > 0


def test_train_and_test_subfolders_and_jsonl_give_the_split_and_types(tmp_path):
    write_folder(tmp_path / "d", layout="split", fmt="jsonl")
    data = load_dataset(None, data=str(tmp_path / "d"), progress=False)
    assert data.n_test == 12 and data.n_train == 48
    assert isinstance(data.attribute("filled"), Binary) and isinstance(
        data.attribute("brightness"), Continuous
    )


def test_grey_images_are_one_channel_and_a_kind_can_be_overridden(tmp_path):
    write_folder(tmp_path / "d", colour=False, missing=False)
    data = load_dataset(
        None, data=str(tmp_path / "d"), attribute=["filled=categorical"], image_size="16", progress=False
    )
    assert data.images[0].channels == 1 and data.images[0].shape == (16, 16)
    assert type(data.attribute("filled")) is Categorical and data.attribute("filled").classes == (
        "false",
        "true",
    )


def bad(tmp_path, edit):
    root = write_folder(tmp_path / "d", n=12)
    edit(root)
    with pytest.raises(UserError) as e:
        load_dataset(None, data=str(root), progress=False)
    return str(e.value)


def rewrite(root, change):
    rows = list(csv.DictReader(open(root / "metadata.csv")))
    rows = change(rows)
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda r: (r / "img003.png").unlink(), "img003.png does not exist"),
        (lambda r: (r / "img004.png").write_bytes(b"not a png"), "img004.png cannot be read"),
        (lambda r: rewrite(r, lambda rows: rows + [dict(rows[0])]), "given twice"),
        (
            lambda r: rewrite(r, lambda rows: [dict(x, filled="true") for x in rows]),
            "column filled has a single value",
        ),
        (
            lambda r: rewrite(
                r, lambda rows: [dict(x, brightness="lots") if i == 2 else x for i, x in enumerate(rows)]
            ),
            "column brightness: 'lots'",
        ),
        (lambda r: Image.new("RGB", (20, 32)).save(r / "img005.png"), "images of different sizes"),
        (
            lambda r: rewrite(r, lambda rows: [{"file_name": x["file_name"]} for x in rows]),
            "no attribute columns",
        ),
        (lambda r: (r / "metadata.csv").unlink(), "has images but no metadata.csv"),
        (
            lambda r: rewrite(r, lambda rows: [{"name": x["file_name"], "c": x["colour"]} for x in rows]),
            "no file_name column",
        ),
        (
            lambda r: rewrite(
                r,
                lambda rows: [
                    dict(x, file_name="../escape.png") if i == 0 else x for i, x in enumerate(rows)
                ],
            ),
            "file_name ../escape.png",
        ),
        (
            lambda r: rewrite(
                r, lambda rows: [{"observed" if k == "colour" else k: v for k, v in x.items()} for x in rows]
            ),
            "column 'observed': not a usable attribute name",
        ),
        (
            lambda r: rewrite(
                r, lambda rows: [{"a=b" if k == "colour" else k: v for k, v in x.items()} for x in rows]
            ),
            "column 'a=b': not a usable attribute name",
        ),
        (
            lambda r: (
                (r / "metadata.csv").unlink()
                or (r / "metadata.jsonl").write_text(
                    '{"file_name": "img000.png", "c": [1, 2]}\n{"file_name": "img001.png", "c": "x"}\n'
                )
            ),
            "column c: a list value",
        ),
        (
            lambda r: (r / "metadata.csv").write_text(
                (r / "metadata.csv").read_text().replace("\n", ",oops\n", 2).replace(",oops", "", 1)
            ),
            "has more fields than the header",
        ),
        (
            lambda r: (r / "metadata.csv").write_text(
                (r / "metadata.csv").read_text().replace("filled", "colour", 1)
            ),
            "column colour named twice",
        ),
        (
            lambda r: (
                (r / "metadata.csv").unlink()
                or (r / "metadata.jsonl").write_text(
                    "".join(
                        f'{{"file_name": "img{i:03d}.png", "v": {10**400 if i == 1 else i / 3}}}\n'
                        for i in range(12)
                    )
                )
            ),
            "column v: a non-finite value",
        ),
    ],
)
def test_bad_data_is_one_line_naming_the_file_or_column(tmp_path, edit, says):
    assert says in bad(tmp_path, edit)


def test_an_empty_folder_and_a_missing_one_are_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jmvae: error:") and "does not exist" in err and not (tmp_path / "r").exists()
    assert (
        main(
            ["train", "--data", str(tmp_path / "empty"), "--preset", "mnist-a", "--out", str(tmp_path / "r")]
        )
        == 2
    )
    assert "--preset mnist-a with --data" in capsys.readouterr().err


def test_the_cache_is_keyed_by_the_files(tmp_path):
    root = write_folder(tmp_path / "d", n=12)
    a = load_dataset(None, data=str(root), progress=False)
    b = load_dataset(None, data=str(root), progress=False)  # from the cache
    assert torch.equal(a.train["x"], b.train["x"])
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(
        root / "img000.png"
    )  # a file changed: read again
    c = load_dataset(None, data=str(root), progress=False)
    assert a.options["files"] != c.options["files"]
    assert not torch.equal(
        torch.cat([a.train["x"], a.test["x"]]).sort(0).values,
        torch.cat([c.train["x"], c.test["x"]]).sort(0).values,
    )


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_trains_on_colour_data_with_empty_cells(tmp_path, model):
    write_folder(tmp_path / "d", n=40)
    data, m = train(
        TrainConfig(data=str(tmp_path / "d"), model=model, hidden=32, steps=3, batch_size=8),
        tmp_path / "run",
        progress=False,
        log=lambda *a: None,
    )
    assert all(torch.isfinite(p).all() for p in m.parameters())
    out = m.generate({"brightness": torch.tensor([0.5]), "filled": torch.tensor([1])}, 4)
    assert out["x"].shape == (4, 1, 3 * 32 * 32) and out["brightness"].dtype == torch.float32


@pytest.mark.slow
def test_a_run_on_own_data_generates_evaluates_and_reports(tmp_path, capsys):
    write_folder(tmp_path / "d", n=60)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "d"),
                "--out",
                str(run),
                "--steps",
                "4",
                "--batch-size",
                "16",
                *TINY,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "colour: categorical: blue, green, red" in out and "brightness: continuous" in out
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["attribute"] == ["colour=categorical", "brightness=continuous", "filled=binary"]
    assert config["data_card"]["colour"]["missing_train"] > 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["classifier_test_accuracy"]) == {"colour", "brightness", "filled"}
    assert "brightness" in metrics["classifier_value_error"] and "brightness" in metrics["value_error"]
    report = (run / "report.html").read_text()
    assert "<h2>Data</h2>" in report and "colour" in report and "missing (train)" in report
    assert (
        main(
            [
                "generate",
                str(run),
                "--given",
                "colour=red",
                "brightness=0.8",
                "filled=true",
                "--n",
                "5",
                "--out",
                str(tmp_path / "g.npz"),
            ]
        )
        == 0
    )
    g = np.load(tmp_path / "g.npz")
    assert g["images"].shape == (5, 32, 32, 3) and math.isclose(
        float(g["given_brightness"]), 0.8, rel_tol=1e-5
    )
    assert g["brightness"].shape == (5,) and 0 < float(g["brightness"].mean()) < 2  # in the data's units
    assert main(["generate", str(run), "--given", "filled=maybe", "--out", str(tmp_path / "g.png")]) == 2
    assert "filled=maybe (allowed: true or false" in capsys.readouterr().err
    assert main(["generate", str(run), "--given", "brightness=dim", "--out", str(tmp_path / "g.png")]) == 2
    assert "brightness=dim (allowed: a number" in capsys.readouterr().err
    assert main(["generate", str(run), "--given", "filled=1", "--out", str(tmp_path / "g.png")]) == 0
    assert main(["figures", str(run)]) == 0
    assert (run / "figures" / "generated_single.png").exists()
    cfg, data, model = load_run(run)  # rebuilt from config.json: the same data
    assert data.n_train == config["n_train"]


@pytest.mark.slow
def test_data_from_python_is_kept_in_the_run(tmp_path):
    from jmvae.evaluate import EvalConfig
    from jmvae.pipeline import fit

    rng = np.random.default_rng(0)
    images = rng.random((50, 12, 12)).astype(np.float32)
    arrays = {
        "pixels": images,
        "label": np.array(["a", "b"] * 25),
        "value": np.where(np.arange(50) % 9 == 0, np.nan, rng.normal(size=50)),
    }
    data = own.from_arrays(arrays)
    assert data.images[0].name == "pixels" and isinstance(data.attribute("value"), Continuous)
    metrics = fit(
        TrainConfig(hidden=16, steps=3, batch_size=8),
        tmp_path / "run",
        dataset=data,
        eval_cfg=EvalConfig(n_per_query=4, k=2, coherence_draws=10, likelihood_examples=4),
        log=lambda *a: None,
    )
    assert (tmp_path / "run" / "metrics.json").exists() and "correctness" in metrics
    _, again, _ = load_run(tmp_path / "run")  # from data.npz in the run: the exact tensors
    for k in data.train:
        assert torch.equal(data.train[k].nan_to_num(-9), again.train[k].nan_to_num(-9))


def test_an_npz_with_one_image_array_and_attribute_arrays(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(
        tmp_path / "d.npz",
        images=(rng.random((30, 8, 8, 3)) * 255).astype(np.uint8),
        flag=np.arange(30) % 2 == 0,
        kind=np.array(["x", "y", "z"] * 10),
    )
    data = load_dataset(None, data=str(tmp_path / "d.npz"), progress=False)
    assert data.images[0].channels == 3 and isinstance(data.attribute("flag"), Binary)
    np.savez(tmp_path / "bad.npz", a=np.zeros((3, 4, 4)), b=np.zeros((3, 4, 4)))
    with pytest.raises(UserError, match="no attribute arrays"):
        load_dataset(None, data=str(tmp_path / "bad.npz"), progress=False)
    np.savez(tmp_path / "uneven.npz", a=np.zeros((3, 4, 4)), b=np.zeros((4, 4, 4)), c=np.arange(3) % 2)
    with pytest.raises(UserError, match=r"image arrays of different lengths \(a 3, b 4"):
        load_dataset(None, data=str(tmp_path / "uneven.npz"), progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["position-digit", "mnist-a"])
def test_export_round_trip_trains_exactly_as_the_preset(tmp_path, capsys, monkeypatch, preset):
    """The general path loses nothing: an exported preset is the same data, bit for bit, and trains the
    same (MNIST-A at 10,000 renders, its conv networks included)."""
    from jmvae import classifier
    from jmvae.data import attributes

    monkeypatch.setattr(attributes, "MNIST_A_IMAGES", 10_000)
    monkeypatch.setattr(classifier, "CROP_STEPS", 30)
    source = ["--preset", preset, "--mnist", "bundled"]
    assert main(["data", "export", *source, str(tmp_path / "pd")]) == 0
    said = capsys.readouterr().out.split("jmvae train --data ")[1].split()[1:]  # the flags it prints
    assert said[0] == "--steps" and said[said.index("--z-dim") + 1] == (
        "2" if preset == "position-digit" else "10"
    )
    if preset == "mnist-a":  # its JMVAE: the posed decoder through conv3-light, 13 passes of 8,500 renders
        assert said[said.index("--image-decoder") + 1] == "posed" and said[1] == str(13 * (8500 // 128))
        assert said[said.index("--image-network") + 1] == "conv3-light"
        assert said[said.index("--placement-stride") + 1] == "2"
    short = [*TINY, "--steps", "4", "--precision", "float32", "--low-temperature", "1"]
    assert main(["train", *source, *short, "--out", str(tmp_path / "p")]) == 0
    assert main(["train", "--data", str(tmp_path / "pd"), *said, *short, "--out", str(tmp_path / "d")]) == 0
    config = [json.loads((tmp_path / r / "config.json").read_text()) for r in ("p", "d")]
    assert config[0]["data_fingerprint"] == config[1]["data_fingerprint"]

    def numbers(run):
        lines = (tmp_path / run / "history.csv").read_text().splitlines()
        return [line.split(",")[:2] + line.split(",")[3:] for line in lines]  # the seconds column left out

    assert len(numbers("p")) >= 2 and numbers("p") == numbers("d")
    assert main(["data", "export", *source, str(tmp_path / "pd")]) == 2


def test_a_hugging_face_style_dataset_object(tmp_path):
    """from_hf reads what a `datasets.Dataset` offers (column_names, a column by name; an Image feature gives
    PIL images); the optional package itself is not a dependency, so a stand-in with that interface is
    used."""

    class Stand_in:
        def __init__(self, columns):
            self.columns = columns
            self.column_names = list(columns)

        def __getitem__(self, name):
            return self.columns[name]

    rng = np.random.default_rng(0)
    pictures = [Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)) for _ in range(20)]
    data = own.from_hf(
        Stand_in(
            {
                "image": pictures,
                "label": ["cat", "dog"] * 10,
                "weight": [None if i == 3 else float(i) for i in range(20)],
            }
        )
    )
    assert data.images[0].channels == 3 and data.images[0].shape == (8, 8) and data.images[0].name == "image"
    assert isinstance(data.attribute("label"), Categorical) and isinstance(
        data.attribute("weight"), Continuous
    )
    both = torch.cat([data.train["weight"], data.test["weight"]])
    assert int(both.isnan().sum()) == 1
    masks = [Image.fromarray((rng.random((4, 6)) * 255).astype(np.uint8)) for _ in range(20)]
    two = own.from_hf(
        Stand_in({"image": pictures, "mask": masks, "label": ["cat", "dog"] * 10}),
        image_column=["image", "mask"],
    )
    assert [(m.name, m.shape, m.channels) for m in two.images] == [("image", (8, 8), 3), ("mask", (4, 6), 1)]
    assert [a.name for a in two.attributes] == ["label"]


def test_flags_as_floats_or_mixed_words_are_binary_and_a_comma_stays_in_a_value(tmp_path):
    rng = np.random.default_rng(0)
    data = own.from_arrays(
        {
            "x": rng.random((20, 8, 8)),
            "on": np.array([1.0, 0.0, np.nan, 1.0] * 5),
            "ok": np.array(["TRUE", "Yes", "false", "no"] * 5),
            "col": np.array(["red, dark", "blue"] * 10),
        }
    )
    assert isinstance(data.attribute("on"), Binary) and isinstance(data.attribute("ok"), Binary)
    assert int(torch.cat([data.train["on"], data.test["on"]]).eq(-1).sum()) == 5
    from jmvae.data.attributes import parse_assignments

    assert parse_assignments(data, ["col=red, dark,on=1"]) == {
        "col": data.attribute("col").index("red, dark"),
        "on": 1,
    }
    with pytest.raises(UserError, match="images of 2x8 pixels"):
        own.from_arrays({"x": rng.random((20, 2, 8)), "on": np.arange(20) % 2})


def test_sixteen_bit_grey_images_are_rescaled_not_clipped(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    rows = []
    for i in range(12):
        Image.fromarray(np.full((8, 8), 256 * 100 + i, np.uint16)).save(root / f"{i}.png")
        rows.append(f"{i}.png,{'ab'[i % 2]}")
    (root / "metadata.csv").write_text("file_name,k\n" + "\n".join(rows) + "\n")
    data = load_dataset(None, data=str(root), progress=False)
    assert data.images[0].channels == 1 and 95 <= int(data.train["x"].float().mean()) <= 105


# -- many attributes: nothing lists 2^n subsets or combinations ------------------------------------------
def many_attributes(n_attrs=40, n=80):
    rng = np.random.default_rng(0)
    arrays = {"images": (rng.random((n, 8, 8)) * 255).astype(np.uint8)}
    arrays |= {f"flag{i}": rng.integers(0, 2, n).astype(bool) for i in range(n_attrs)}
    return own.from_arrays(arrays | {"dose": rng.random(n) * 3})


def test_queried_subsets_are_all_for_few_attributes_and_a_bounded_sample_for_many():
    from jmvae.evaluate import MAX_QUERY_SUBSETS, query_subsets

    names = ["a", "b", "c", "d"]
    assert query_subsets(names) == [
        s for r in range(1, 5) for s in __import__("itertools").combinations(names, r)
    ]
    many = [f"n{i}" for i in range(40)]
    chosen = query_subsets(many)
    assert len(chosen) == 41 and len(set(chosen)) == 41  # every single one and all together: above the cap
    assert {s for s in chosen if len(s) == 1} == {(n,) for n in many} and tuple(many) in chosen
    twelve = [f"n{i}" for i in range(12)]
    some = query_subsets(twelve, seed=3)
    assert len(some) == MAX_QUERY_SUBSETS and len(set(some)) == MAX_QUERY_SUBSETS
    assert any(1 < len(s) < 12 for s in some) and some == sorted(
        some, key=lambda s: (len(s), [twelve.index(x) for x in s])
    )


def test_many_attributes_are_queried_within_the_budget_quickly():
    import time

    from jmvae.evaluate import MAX_QUERIES, queries
    from jmvae.explore import query_sizes
    from jmvae.figures import combinations

    data = many_attributes()
    t = time.perf_counter()
    qs = queries(data)
    assert 0 < len(qs) <= MAX_QUERIES and max(len(q) for q in qs) == 41
    shown = combinations(data.attributes)
    assert len(shown) == 20 and len(set(shown)) == 20
    assert (
        query_sizes([2] * 40 + [11]) == 1 and query_sizes([3, 4, 2, 11]) == 4
    )  # the tutorial's: all of them
    assert time.perf_counter() - t < 20


def test_objectives_over_every_subset_refuse_many_modalities_in_one_line(tmp_path):
    from jmvae.subsets import random_subsets

    data = many_attributes(n_attrs=14)
    with pytest.raises(UserError, match="16 modalities have 65,535 subsets.*at most 12"):
        train(
            TrainConfig(model="mopoe", hidden=16, steps=1, batch_size=8),
            tmp_path / "r",
            dataset=data,
            progress=False,
            log=lambda *a: None,
        )
    picks = random_subsets([str(i) for i in range(30)], 2000, torch.Generator().manual_seed(0))
    sizes = torch.tensor([len(p) for p in picks], dtype=torch.float)
    assert 2 <= sizes.min() and sizes.max() <= 29 and abs(float(sizes.mean()) - 15) < 0.5  # uniform: mean n/2
    _, m = train(
        TrainConfig(model="mvae", hidden=16, steps=2, batch_size=8),
        tmp_path / "m",
        dataset=data,
        progress=False,
        log=lambda *a: None,
    )
    assert all(torch.isfinite(p).all() for p in m.parameters())


def test_a_class_order_is_kept_and_a_wrong_listing_refused(tmp_path):
    write_folder(tmp_path / "d", n=30)
    order = "colour=categorical:red,green,blue"
    data = load_dataset(None, data=str(tmp_path / "d"), attribute=[order], progress=False)
    assert data.attribute("colour").classes == ("red", "green", "blue")
    assert own.attribute_flag(data.attribute("colour")) == order
    assert own.attribute_flag(data.attribute("filled")) == "filled=binary"
    for wrong, says in [
        ("colour=categorical:red,green", "does not list each value of the column once"),
        ("colour=categorical:red,green,blue,red", "does not list each value"),
        ("filled=binary:true,false", "NAME=categorical:A,B,C"),
        ("colour=categorical:red,,blue", "NAME=categorical:A,B,C"),
    ]:
        with pytest.raises(UserError, match=says):
            load_dataset(None, data=str(tmp_path / "d"), attribute=[wrong], progress=False)


@pytest.mark.parametrize(
    "side, asked, built", [(40, "conv4", "conv3"), (32, "conv4", "conv4"), (24, "conv3", "mlp")]
)
def test_the_schema_records_the_image_networks_a_run_built(side, asked, built):
    rng = np.random.default_rng(0)
    data = own.from_arrays({"x": rng.random((40, side, side, 3)), "on": np.arange(40) % 2})
    cfg = TrainConfig(data="arrays", image_network=asked, z_dim=2, hidden=16)
    data, model = build(cfg, quiet=True, dataset=data)
    assert schema(data)["images"]["x"]["network"] == built
    assert f"colour, {built} networks" in schema_text(data)
    deconvs = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(deconvs) == {"conv4": 4, "conv3": 3, "mlp": 0}[built]


def test_a_fully_observed_batch_of_partly_observed_data_trains_with_conv_networks():
    """A batch of a split with empty cells can hold none of them: the image ELBO of the unlabelled rows then
    decodes no rows, which a conv decoder must take (it raised on reshaping 0 rows)."""
    from jmvae.data.attributes import to_batch
    from jmvae.models import build_model
    from jmvae.train import observed_split

    rng = np.random.default_rng(0)
    colour = np.array(["red", "green", "blue"] * 8, dtype=object)
    colour[0] = None
    data = own.from_arrays(
        {"image": rng.integers(0, 255, (24, 32, 32, 3)).astype(np.uint8), "colour": colour}
    )
    split = observed_split(data.train, data)
    full = torch.nonzero(split["observed"].all(1)).squeeze(1)[:8]
    for name in MODELS:
        model = build_model(name, data.modalities, z_dim=2, hidden=16)
        loss, _ = model.loss(to_batch(split, full))
        assert torch.isfinite(loss), name


def test_conv_networks_are_channels_last_and_resume_exactly_also_from_a_former_layout(
    tmp_path, train_killed_at_step
):
    """Conv weights live in channels-last layout (the faster CPU step); a killed conv run resumes to the
    uninterrupted weights, also from a checkpoint whose tensors are in the former contiguous layout (the fused
    Adam kernel reads state and weight as flat memory, so an unmatched state would mix up elements)."""
    write_folder(tmp_path / "d", n=48, missing=False)
    cfg = TrainConfig(data=str(tmp_path / "d"), hidden=16, epochs=4, batch_size=8, seed=1)
    _, model = train(cfg, tmp_path / "straight", progress=False, log=lambda *a: None)
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert len(convs) == 9 and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)

    train_killed_at_step(cfg, tmp_path / "killed", 13)  # part way through the run
    ckpt_path = tmp_path / "killed" / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert 0 < ckpt["epoch"] < 4  # a checkpoint, then killed before the end
    former = tmp_path / "former"
    import shutil

    shutil.copytree(tmp_path / "killed", former)
    flat = 0
    for state in [ckpt["model"], *ckpt["optimizer"]["state"].values()]:
        for k, v in state.items():
            if torch.is_tensor(v) and v.dim() == 4:
                state[k], flat = v.contiguous(), flat + 1
    assert flat == 27  # every conv weight and both of its Adam moments were channels-last
    torch.save(ckpt, former / "checkpoint.pt")

    for run in (tmp_path / "killed", former):
        train(TrainConfig(), run, resume=True, progress=False, log=lambda *a: None)
    a, b, c = (
        torch.load(r / "model.pt", weights_only=True)
        for r in (tmp_path / "straight", tmp_path / "killed", former)
    )
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("precision", [None, torch.bfloat16])
@pytest.mark.parametrize("name", ["jmvae", "telbo"])
def test_a_shared_trunk_reads_the_images_once_and_gives_the_unshared_loss_and_summed_gradient(
    name, precision
):
    """--shared-trunk: q(z|x) reads each image through q(z|x,y)'s conv trunk, computed once a step; with the
    unshared model's trunks set equal, the loss is the same and each shared trunk's gradient is the sum of its
    two (two images, a batch with a missing label, float32 and bfloat16 products)."""
    images = [ImageModality(x, (32, 32), channels=c, network="conv3") for x, c in (("x", 3), ("m", 1))]
    mods = [*images, Categorical("c", ("a", "b", "c"))]
    torch.manual_seed(0)
    plain = build_model(name, mods, z_dim=4, hidden=16)
    for x, trunk in zip("xm", plain.joint_encoder.readers()):
        plain.encoders[x].body.load_state_dict(trunk.state_dict())
    shared = build_model(name, mods, z_dim=4, hidden=16, shared_trunk=True)
    assert [shared.encoders[x].body for x in "xm"] == shared.joint_encoder.readers()
    trunks = sum(p.numel() for t in plain.joint_encoder.readers() for p in t.parameters())
    assert sum(p.numel() for p in shared.parameters()) == sum(p.numel() for p in plain.parameters()) - trunks
    shared.load_state_dict(plain.state_dict())
    batch = {
        "x": torch.rand(6, 3 * 32 * 32),
        "m": torch.rand(6, 32 * 32),
        "c": torch.tensor([0, 1, 2, 0, -1, 2]),
    }
    batch = mark_observed(batch, mods)
    reads = []
    for trunk in shared.joint_encoder.readers():
        trunk.register_forward_hook(lambda *a: reads.append(1))
    losses = []
    for model in (plain, shared):
        torch.manual_seed(1)
        with low_precision(precision):
            loss, _ = model.loss(batch)
        loss.backward()
        losses.append(loss.detach())
    assert len(reads) == 2 and torch.allclose(losses[0], losses[1], rtol=1e-6)
    for x, joint, one in zip("xm", plain.joint_encoder.readers(), shared.joint_encoder.readers()):
        for a, b, s in zip(joint.parameters(), plain.encoders[x].body.parameters(), one.parameters()):
            # bfloat16: one backward pass of the summed gradient rounds differently from two (measured at most
            # 0.7%); a branch left out would be off by about half
            error = float((a.grad + b.grad - s.grad).norm() / s.grad.norm())
            assert error < (1e-5 if precision is None else 2e-2), (x, error)
    with pytest.raises(ValueError, match="shared_trunk with image x: its networks are the MLP"):
        build_model(name, [replace(images[0], network="mlp"), mods[2]], z_dim=4, hidden=16, shared_trunk=True)
    with pytest.raises(ValueError, match="shared_trunk with an encoder given for image m"):
        build_model(name, mods, z_dim=4, hidden=16, shared_trunk=True, encoders={"m": plain.encoders["m"]})


@pytest.mark.parametrize("decoder", ["placed", "posed"])
def test_a_placed_decoder_run_resumes_exactly_and_loads_and_unfit_images_are_refused(
    tmp_path, train_killed_at_step, capsys, decoder
):
    """--image-decoder placed (posed, its offsets every 2 pixels) on colour images with empty cells: a killed
    run resumes to the uninterrupted weights, loads with the decoder it trained, and an older run (no such
    field) keeps the conv decoder (offsets every 4 pixels); images it cannot draw are refused in one line,
    nothing written."""
    from jmvae.networks import PlacedDecoder
    from jmvae.report import data_card_section

    write_folder(tmp_path / "d", n=48)
    stride = 2 if decoder == "posed" else 4
    cfg = TrainConfig(
        data=str(tmp_path / "d"),
        hidden=16,
        epochs=3,
        batch_size=8,
        seed=2,
        image_decoder=decoder,
        placement_stride=stride,
    )
    train(cfg, tmp_path / "straight", progress=False, log=lambda *a: None)
    train_killed_at_step(cfg, tmp_path / "killed", 10)
    train(TrainConfig(), tmp_path / "killed", resume=True, progress=False, log=lambda *a: None)
    a, b = (torch.load(tmp_path / r / "model.pt", weights_only=True) for r in ("straight", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("decoders.x.where") for k in a)
    assert any(k.startswith("decoders.x.pose") for k in a) == (decoder == "posed")
    loaded, _, model = load_run(tmp_path / "killed")
    assert loaded.image_decoder == decoder and isinstance(model.decoders["x"], PlacedDecoder)
    assert (
        model.decoders["x"].stride == stride and model.decoders["x"].offsets == (32 // 2 // stride + 1,) * 2
    )
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["schema"]["images"]["x"]["decoder"] == decoder
    assert f"conv3 networks, {decoder} decoder)" in data_card_section(config)  # the report names it
    del config["train"]["image_decoder"], config["train"]["placement_stride"]
    older = TrainConfig.from_json(config["train"])
    assert older.image_decoder == "conv" and older.placement_stride == 4

    write_folder(tmp_path / "odd", n=12, size=(36, 36))
    capsys.readouterr()
    for flags, says in [
        (["--data", str(tmp_path / "odd")], f"--image-decoder {decoder} with image x of 36x36"),
        (
            ["--preset", "position-digit", "--mnist", "bundled"],
            f"--image-decoder {decoder} with image x of 28x56",
        ),
    ]:
        out = tmp_path / "refused"
        assert main(["train", *flags, "--image-decoder", decoder, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("jmvae: error:") and says in err and len(err.splitlines()) == 1, err
        assert not out.exists()


def test_a_shared_trunk_run_resumes_exactly_and_loads_and_mlp_images_are_refused(
    tmp_path, train_killed_at_step, capsys
):
    write_folder(tmp_path / "d", n=48, missing=False)
    cfg = TrainConfig(data=str(tmp_path / "d"), hidden=16, epochs=3, batch_size=8, seed=2, shared_trunk=True)
    train(cfg, tmp_path / "straight", progress=False, log=lambda *a: None)
    train_killed_at_step(cfg, tmp_path / "killed", 10)
    train(TrainConfig(), tmp_path / "killed", resume=True, progress=False, log=lambda *a: None)
    a, b = (torch.load(tmp_path / r / "model.pt", weights_only=True) for r in ("straight", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loaded, _, model = load_run(tmp_path / "killed")
    assert loaded.shared_trunk is True and model.encoders["x"].body is model.joint_encoder.image
    # a run recorded before the option trained without it
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    del config["train"]["shared_trunk"]
    assert TrainConfig.from_json(config["train"]).shared_trunk is False

    capsys.readouterr()
    for flags, says in [
        (["--preset", "position-digit"], "--shared-trunk with image x of 28x56, whose networks are the MLP"),
        (["--model", "mvae"], "--shared-trunk with model mvae"),
    ]:
        out = tmp_path / "refused"
        assert main(["train", *flags, "--mnist", "bundled", "--shared-trunk", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("jmvae: error:") and says in err and len(err.splitlines()) == 1, err
        assert not out.exists()
