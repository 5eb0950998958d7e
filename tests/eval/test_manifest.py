"""The test-set manifest (nstzoo.eval.manifest): round trip, and every way a manifest can be wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nstzoo.errors import DataError
from nstzoo.eval import ManifestRow, evaluate, manifest_arrays, read_manifest, write_manifest

HEADER = "path,role,method,style_id,content_id\n"


def rows_2x2(methods=("sanet",)) -> list[ManifestRow]:
    rows = [ManifestRow(f"style/s{s}.png", "style", style_id=f"s{s}") for s in range(2)]
    rows += [ManifestRow(f"content/c{c}.png", "content", content_id=f"c{c}") for c in range(2)]
    rows += [
        ManifestRow(f"{m}/s{s}_c{c}.png", "stylized", m, f"s{s}", f"c{c}")
        for m in methods
        for s in range(2)
        for c in range(2)
    ]
    return rows


def touch_images(folder: Path, rows) -> None:
    for r in rows:
        (folder / r.path).parent.mkdir(parents=True, exist_ok=True)
        (folder / r.path).write_bytes(b"")


def write_text(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.csv").write_text(body, encoding="utf-8")
    return folder


def test_round_trip(tmp_path):
    rows = rows_2x2(methods=("sanet", "pama"))
    touch_images(tmp_path, rows)
    path = write_manifest(tmp_path, rows)
    assert path == tmp_path / "manifest.csv"
    assert path.read_text().splitlines()[0] == HEADER.strip()
    assert read_manifest(tmp_path) == rows
    # no temporary file is left behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["manifest.csv"]


def test_columns_in_any_order_bom_blank_lines_and_extra_columns(tmp_path):
    body = (
        "\ufeffrole,content_id,style_id,path,method,note\n"
        "style,,s0,style/s0.png,,a note\n"
        "\n"
        "content,c0,,content/c0.png,,\n"
        "stylized,c0,s0,\"x/with, comma.png\",neat,\n"
    )
    rows = read_manifest(write_text(tmp_path, body), check_files=False)
    assert rows == [
        ManifestRow("style/s0.png", "style", style_id="s0"),
        ManifestRow("content/c0.png", "content", content_id="c0"),
        ManifestRow("x/with, comma.png", "stylized", "neat", "s0", "c0"),
    ]


def test_arrays_feed_evaluate(tmp_path):
    rows = rows_2x2(methods=("sanet", "pama"))
    arrays = manifest_arrays(rows)
    assert list(arrays) == ["role", "method", "style_id", "content_id"]
    assert arrays["role"].tolist() == [r.role for r in rows]
    assert arrays["style_id"][2] == "" and arrays["content_id"][0] == ""
    emb = np.random.default_rng(0).normal(size=(len(rows), 8))
    out = evaluate(emb, **arrays)
    assert sorted(out["methods"]) == ["pama", "sanet"]
    assert out["methods"]["sanet"]["n_queries"] == 4


def test_write_rejects_invalid_rows_and_keeps_the_old_manifest(tmp_path):
    rows = rows_2x2()
    write_manifest(tmp_path, rows)
    before = (tmp_path / "manifest.csv").read_text()
    with pytest.raises(DataError, match="unknown role 'painting'"):
        write_manifest(tmp_path, rows + [ManifestRow("p.png", "painting")])
    assert (tmp_path / "manifest.csv").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]


GOOD = "style/s0.png,style,,s0,\ncontent/c0.png,content,,,c0\n"


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("path,role,method,style_id\n" + GOOD, r"line 1: missing column 'content_id'"),
        (HEADER + GOOD + "a.png,painting,neat,s0,c0\n", r"line 4: unknown role 'painting'"),
        (HEADER + GOOD + "a.png,stylized,neat,,c0\n", r"line 4: stylized row 'a.png' has an empty style_id"),
        (HEADER + GOOD + "a.png,stylized,,s0,c0\n", r"line 4: stylized row 'a.png' has an empty method"),
        (HEADER + GOOD + "a.png,stylized,neat,s0,c0\na.png,stylized,pama,s0,c0\n", r"line 5: duplicate path 'a.png' \(first at .*line 4\)"),
        (HEADER + GOOD + "a.png,stylized,neat,s0,c0\nb.png,stylized,neat,s0,c0\n", r"line 5: method 'neat' stylizes style 's0' with content 'c0' twice"),
        (HEADER + GOOD + "a.png,stylized,neat,s9,c0\n", r"line 4: style_id 's9' has no style row"),
        (HEADER + GOOD + "s1.png,style,,s0,\na.png,stylized,neat,s0,c0\n", r"line 4: style_id 's0' has a second style image"),
        (HEADER + "style/s0.png,style,,s0,c0\n" + "content/c0.png,content,,,c0\n", r"line 2: style row .* must leave content_id empty, got 'c0'"),
        (HEADER + "style/s0.png,style,neat,s0,\n", r"line 2: style row .* must leave method empty"),
        (HEADER + GOOD + "../a.png,stylized,neat,s0,c0\n", r"line 4: path '../a.png' leaves the test-set folder"),
        (HEADER + GOOD + "/abs/a.png,stylized,neat,s0,c0\n", r"line 4: path '/abs/a.png' is absolute"),
        (HEADER + GOOD + "a.png,stylized,neat,s0,c0,extra\n", r"line 4: 6 fields, the header has 5"),
        (HEADER + GOOD + "a.png,stylized\n", r"line 4: 2 fields, the header has 5"),
        (HEADER + GOOD, r"no stylized rows"),
        (HEADER, r"no rows"),
    ],
)
def test_read_errors_name_file_line_and_value(tmp_path, body, pattern):
    folder = write_text(tmp_path / "ts", body)
    with pytest.raises(DataError, match=pattern) as info:
        read_manifest(folder, check_files=False)
    assert str(folder / "manifest.csv") in str(info.value)


def test_missing_image_is_reported_only_when_checked(tmp_path):
    rows = rows_2x2()
    touch_images(tmp_path, rows[:-1])
    write_manifest(tmp_path, rows)
    with pytest.raises(DataError, match=r"line 9: image 'sanet/s1_c1.png' does not exist"):
        read_manifest(tmp_path)
    assert read_manifest(tmp_path, check_files=False) == rows


def test_missing_manifest(tmp_path):
    with pytest.raises(DataError, match="no manifest.csv") as info:
        read_manifest(tmp_path)
    assert "nstzoo testset build" in str(info.value)
