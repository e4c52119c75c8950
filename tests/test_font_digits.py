"""benchmarks/font_digits.py: the unseen reader's digits are drawn as MNIST draws its own."""

import re
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from font_digits import find_fonts, font_digits  # noqa: E402

MPL_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def test_only_fonts_that_draw_ten_distinct_digits_are_used(tmp_path, capsys):
    for name in ("DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "cmex10.ttf", "STIXSizOneSymReg.ttf"):
        (tmp_path / name).write_bytes((MPL_FONTS / name).read_bytes())
    (tmp_path / "broken.ttf").write_bytes(b"not a font")
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "DejaVuSans.ttf").write_bytes((MPL_FONTS / "DejaVuSans.ttf").read_bytes())
    assert sorted(p.name for p in find_fonts([tmp_path])) == ["DejaVuSans.ttf", "DejaVuSerif-Bold.ttf"]
    with pytest.raises(SystemExit) as stop:
        find_fonts([tmp_path / "copy" / "none"])
    assert stop.value.code == 2
    assert re.fullmatch(r"\S+: error: no font under .*copy.* draws ten digits\n", capsys.readouterr().err)


def test_digits_are_written_as_mnist_writes_them(tmp_path):
    for name in ("DejaVuSans.ttf", "DejaVuSerif-Italic.ttf"):
        (tmp_path / name).write_bytes((MPL_FONTS / name).read_bytes())
    images, labels = font_digits(find_fonts([tmp_path]), copies=3, seed=0)
    assert images.shape == (60, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6] * 10
    for x in images:
        rows, cols = np.nonzero(x > 25)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 <= 22  # a 20x20 box, a pixel of blur either side
        cy, cx = ndimage.center_of_mass(x.astype(float))
        assert abs(cy - 14) < 1 and abs(cx - 14) < 1
        assert 0.04 < (x > 127).mean() < 0.4  # strokes, not a blob and not a hairline
    again, _ = font_digits(find_fonts([tmp_path]), copies=3, seed=0)
    assert np.array_equal(images, again)
