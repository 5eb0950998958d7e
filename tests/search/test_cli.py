"""`nstzoo index build|add` and `nstzoo search` as a user runs them, and the HTML page in Chromium."""

from __future__ import annotations

import json
import shutil

from tests.browser import render
from tests.test_cli_core import run


def test_build_add_search_json_and_html_page_renders_in_chromium(capsys, images, weights, tmp_path):
    index = tmp_path / "index"
    code, out, err = run(capsys, "index", "build", "--weights", str(weights), "--input", str(images / "content"),
                         "--out", str(index), "--workers", "0", "--device", "cpu", "--json")
    assert code == 0, err
    built = json.loads(out)
    assert (built["added"], built["count"], built["plan"]["kind"], built["skipped"]) == (6, 6, "flat", {})

    code, out, err = run(capsys, "index", "add", "--index", str(index), "--input", str(images / "content"),
                         "--input", str(images / "style"), "--workers", "0", "--json")
    assert code == 0, err
    assert (json.loads(out)["present"], json.loads(out)["added"], json.loads(out)["count"]) == (6, 6, 12)

    # A moodboard of two styles, one under a file name that needs escaping in HTML.
    styles = sorted((images / "style").glob("*.png"))
    odd = shutil.copy(styles[1], tmp_path / "odd <name> & co.png")
    page = tmp_path / "results.html"
    code, out, err = run(capsys, "search", "--index", str(index), "--query", str(styles[0]), "--query", str(odd),
                         "--k", "5", "--exclude-same-file", "--html", str(page), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["moodboard"] and result["excluded"] == 1 and len(result["hits"]) == 5
    assert str(styles[0]) not in [h["path"] for h in result["hits"]]  # --exclude-same-file
    assert [h["rank"] for h in result["hits"]] == [1, 2, 3, 4, 5]
    scores = [h["score"] for h in result["hits"]]
    assert scores == sorted(scores, reverse=True)

    rendered = render(page)
    assert rendered.sections == ["query", "results"]
    assert rendered.all_images_loaded, rendered.broken_images()
    assert len(rendered.images_in("query")) == 2 and len(rendered.images_in("results")) == 5
    assert all(i["src"].startswith("data:image/jpeg;base64,") for i in rendered.images)  # self-contained
    assert "Moodboard of 2 images" in rendered.headings
    assert "odd &lt;name&gt; &amp; co.png" in rendered.dom and "<name>" not in rendered.dom

    # Without --json: a table on stdout, messages on stderr.
    code, out, err = run(capsys, "search", "--index", str(index), "--query", str(styles[0]), "--k", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and lines[0].split() == ["1", "1.000", str(styles[0])]


def test_search_errors_exit_2_with_a_hint(capsys, images, weights, other_weights, tmp_path):
    code, _, err = run(capsys, "search", "--index", str(tmp_path), "--query", str(weights))
    assert code == 2 and "not a style index" in err and "nstzoo index build" in err

    index = tmp_path / "index"
    code, _, err = run(capsys, "index", "build", "--weights", str(weights), "--input", str(images),
                       "--out", str(index), "--workers", "0")
    assert code == 0, err
    query = str(next((images / "style").glob("*.png")))
    code, _, err = run(capsys, "search", "--index", str(index), "--query", query, "--weights", str(other_weights))
    assert code == 2 and "not comparable" in err and "hint:" in err
    code, _, err = run(capsys, "index", "build", "--weights", str(other_weights), "--input", str(images),
                       "--out", str(index))
    assert code == 2 and "not comparable" in err

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n")
    code, _, err = run(capsys, "search", "--index", str(index), "--query", str(broken))
    assert code == 2 and "query image" in err
    code, _, err = run(capsys, "index", "build", "--weights", str(weights), "--input", str(tmp_path / "nowhere"),
                       "--out", str(tmp_path / "i2"))
    assert code == 2 and "no such file or folder" in err
    code, _, err = run(capsys, "index", "build", "--weights", str(weights), "--input", str(images),
                       "--out", str(tmp_path / "i3"), "--kind", "lsh")
    assert code == 2 and "unknown index kind 'lsh'" in err
