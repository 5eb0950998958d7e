"""StyleIndex through its Python API: retrieval, encoder identity, resume after a kill, bad files, add."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from nstzoo.errors import DataError
from nstzoo.eval.manifest import read_manifest
from nstzoo.search import EncoderMismatchError, StyleIndex
from nstzoo.search.store import ITEMS, VECTORS, Store

REPO = Path(__file__).resolve().parents[2]


def test_flat_index_returns_each_querys_style_family(testset_dir, weights, tmp_path):
    index = StyleIndex.build(weights, [testset_dir], tmp_path / "index", batch_size=8)
    rows = read_manifest(testset_dir)
    assert len(index) == len(rows) == 76 and index.plan.kind == "flat"  # auto: small collection -> exact
    style_of = {str(testset_dir / r.path): r.style_id for r in rows if r.style_id}
    vectors = np.asarray(index.vectors(), np.float32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)

    # Each stylized image queries the rest; its family is the 5 other stylizations of its style plus
    # the style image itself: 6 of 75 candidates, so a random ranking puts one in the top 5 for ~35 %
    # of queries with a precision of 8 %. This random-init toy encoder measures 100 % and 71 %.
    k, found, precision, queries = 5, 0, 0.0, [r for r in rows if r.role == "stylized"]
    for r in queries:
        result = index.search([testset_dir / r.path], k=k, exclude_same_file=True)
        assert result.excluded == 1 and len(result.hits) == k
        assert str(testset_dir / r.path) not in [h.path for h in result.hits]
        scores = [h.score for h in result.hits]
        assert scores == sorted(scores, reverse=True)
        same = [style_of.get(h.path) == r.style_id for h in result.hits]
        found += any(same)
        precision += sum(same) / k
    assert found / len(queries) >= 0.9
    assert precision / len(queries) >= 0.5

    # A moodboard is the renormalised mean of the unit embeddings of its images.
    board = [testset_dir / rows[0].path, testset_dir / rows[1].path]
    result = index.search(board, k=3)
    emb = index.embed_images(board)
    mean = emb.mean(0) / np.linalg.norm(emb.mean(0))
    exact = vectors @ mean
    assert [h.id for h in result.hits] == list(np.argsort(-exact, kind="stable")[:3])
    np.testing.assert_allclose([h.score for h in result.hits], np.sort(exact)[::-1][:3], atol=1e-5)


def test_other_encoder_is_refused(images, weights, other_weights, tmp_path):
    index = StyleIndex.build(weights, [images], tmp_path / "index")
    query = next((images / "style").glob("*.png"))
    with pytest.raises(EncoderMismatchError, match="not comparable") as err:
        index.search([query], weights=other_weights)
    assert str(weights) in err.value.hint
    with pytest.raises(EncoderMismatchError):
        StyleIndex.build(other_weights, [images], tmp_path / "index")
    with pytest.raises(EncoderMismatchError):
        StyleIndex.open(tmp_path / "index").add([images], weights=other_weights)
    # The identity is the weights digest, not the file name: a copy is the same encoder.
    copy = shutil.copy(weights, tmp_path / "copy.safetensors")
    assert index.search([query], k=2, weights=copy).hits
    # ... and changed weights under the recorded path are refused too.
    shutil.copy(other_weights, weights)
    with pytest.raises(EncoderMismatchError):
        StyleIndex.open(tmp_path / "index").search([query])


class Killed(Exception):
    """Stands in for SIGKILL at a chosen point of the build."""


def _content(index_dir: Path) -> tuple[list[str], np.ndarray, int]:
    index = StyleIndex.open(index_dir)
    return index.store.all_paths(), np.asarray(index.vectors(), np.float32), index.info()["indexed"]


def test_killed_build_resumes_without_duplicates(testset_dir, weights, tmp_path, monkeypatch):
    build = dict(batch_size=4, checkpoint_every=8)
    StyleIndex.build(weights, [testset_dir], tmp_path / "reference", **build)
    out = tmp_path / "index"

    # 1. killed in the middle of a checkpoint interval: the uncommitted batches are lost, nothing else
    calls = []

    def progress(n):
        calls.append(n)
        if len(calls) == 7:  # 7 batches of 4 = 28 images: 3 commits of 8 done, 4 images uncommitted
            raise Killed

    with pytest.raises(Killed):
        StyleIndex.build(weights, [testset_dir], out, progress=progress, **build)
    assert len(StyleIndex.open(out)) == 24 and not (out / "index.faiss").exists()

    # 2. killed between writing a batch's vectors and committing its rows: the torn tail is cut off
    def torn_commit(self, vectors, items, skipped):
        with open(self.root / VECTORS, "ab") as fh:
            fh.write(np.asarray(vectors, np.float16).tobytes())
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(Store, "commit", torn_commit)
        with pytest.raises(Killed):
            StyleIndex.build(weights, [testset_dir], out, **build)
    assert (out / VECTORS).stat().st_size > 24 * 16 * 2
    assert len(StyleIndex.open(out)) == 24 and (out / VECTORS).stat().st_size == 24 * 16 * 2

    # 3. resume: the same command again
    resumed = StyleIndex.build(weights, [testset_dir], out, **build)
    report = resumed.last_report
    assert (report.present, report.added, report.count, report.resumed) == (24, 52, 76, True)
    paths, vectors, indexed = _content(out)
    ref_paths, ref_vectors, ref_indexed = _content(tmp_path / "reference")
    assert paths == ref_paths and len(set(paths)) == 76 and indexed == ref_indexed == 76
    np.testing.assert_allclose(vectors, ref_vectors, atol=1e-3)
    query = testset_dir / read_manifest(testset_dir)[0].path
    assert ([h.path for h in resumed.search([query], k=10).hits]
            == [h.path for h in StyleIndex.open(tmp_path / "reference").search([query], k=10).hits])


_SLOW_BUILD = textwrap.dedent("""
    import sys, time
    from tests.learner.helpers import ToyEncoder, install_toy_registry
    install_toy_registry()
    forward = ToyEncoder.forward
    ToyEncoder.forward = lambda *a, **kw: (time.sleep(0.1), forward(*a, **kw))[1]  # time to be killed
    from nstzoo.cli import main
    main(sys.argv[1:])
""")


def _committed(index_dir: Path) -> int:
    try:
        with sqlite3.connect(f"file:{index_dir / ITEMS}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigkilled_build_process_resumes_to_the_same_index(testset_dir, weights, tmp_path):
    out = tmp_path / "index"
    args = ["index", "build", "--weights", str(weights), "--input", str(testset_dir), "--out", str(out),
            "--batch-size", "2", "--checkpoint-every", "4", "--workers", "0", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _committed(out) < 4:  # the first checkpoint is on disk
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the build never committed its first checkpoint"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = len(StyleIndex.open(out))
    assert 4 <= killed_at < 76

    resumed = StyleIndex.build(weights, [testset_dir], out, batch_size=8)
    assert (resumed.last_report.present, resumed.last_report.added) == (killed_at, 76 - killed_at)
    reference = StyleIndex.build(weights, [testset_dir], tmp_path / "reference", batch_size=8)
    paths, vectors, indexed = _content(out)
    assert paths == reference.store.all_paths() and indexed == 76
    np.testing.assert_allclose(vectors, np.asarray(reference.vectors(), np.float32), atol=1e-3)


def test_unreadable_images_are_skipped_and_counted_by_reason(images, weights, tmp_path):
    bad = images / "bad"
    bad.mkdir()
    good_png = next((images / "style").glob("*.png")).read_bytes()
    (bad / "empty.png").write_bytes(b"")
    (bad / "truncated.png").write_bytes(good_png[: len(good_png) // 3])
    (bad / "not-an-image.jpg").write_bytes(b"this is text, not a JPEG")
    index = StyleIndex.build(weights, [images], tmp_path / "index", batch_size=4)
    report = index.last_report
    assert (report.listed, report.added) == (15, 12)
    assert report.skipped == {"corrupt": 1, "empty": 1, "unsupported": 1}
    assert {Path(f["path"]).name: f["reason"] for f in report.skipped_files} == {
        "empty.png": "empty", "truncated.png": "corrupt", "not-an-image.jpg": "unsupported"}
    assert all(not p.startswith(str(bad)) for p in index.store.all_paths())
    assert index.info()["skipped"] == {"corrupt": 1, "empty": 1, "unsupported": 1}

    # Unreadable files are tried again on the next add; a repaired one is indexed and forgotten as bad.
    (bad / "truncated.png").write_bytes(good_png)
    report = index.add([images])
    assert (report.present, report.added, report.count) == (12, 1, 13)
    assert report.skipped == index.info()["skipped"] == {"empty": 1, "unsupported": 1}


def test_add_appends_new_images_and_keeps_ids(images, weights, tmp_path):
    from nstzoo.data.generate import generate_folder

    index = StyleIndex.build(weights, [images / "content"], tmp_path / "index")
    before = index.store.all_paths()
    more = tmp_path / "more"
    generate_folder("style", 5, 32, 7, more)  # another seed: new pictures, not copies
    report = index.add([images / "content", more])
    assert (report.present, report.added, report.count) == (6, 5, 11)
    assert index.store.all_paths()[:6] == before
    reopened = StyleIndex.open(tmp_path / "index")
    assert reopened.info()["indexed"] == 11
    newcomer = sorted(more.glob("*.png"))[2]
    top = reopened.search([newcomer], k=1).hits[0]
    assert top.path == str(newcomer) and top.score == pytest.approx(1.0, abs=1e-3)

    # Another kind re-indexes the stored vectors without embedding anything again.
    rebuilt = StyleIndex.build(weights, [images / "content", more], tmp_path / "index", kind="hnsw")
    assert rebuilt.last_report.added == 0 and rebuilt.plan.kind == "hnsw"
    assert StyleIndex.open(tmp_path / "index").search([newcomer], k=1).hits[0].path == str(newcomer)


def test_bad_index_folders_are_refused(images, weights, tmp_path):
    with pytest.raises(DataError, match="not a style index"):
        StyleIndex.open(tmp_path)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="refusing to write"):
        StyleIndex.build(weights, [images], tmp_path / "busy")
    with pytest.raises(DataError, match="needs at least 256 images"):
        StyleIndex.build(weights, [images], tmp_path / "ivf", kind="ivfpq")
    # the embeddings were kept: switching to a kind that fits needs no new embedding
    assert StyleIndex.build(weights, [images], tmp_path / "ivf", kind="flat").last_report.added == 0


def test_ivfpq_index_round_trip_with_exact_rerank(testset_dir, weights, tmp_path):
    # 4 copies of the 76 test-set images: enough for an IVF-PQ (>= 256) and a known answer per query
    folders = [shutil.copytree(testset_dir, tmp_path / f"copy{i}") for i in range(4)]
    index = StyleIndex.build(weights, folders, tmp_path / "index", kind="ivfpq", batch_size=64)
    assert len(index) == 304 and index.plan.kind == "ivfpq" and index.plan.nlist <= 304 // 39
    reopened = StyleIndex.open(tmp_path / "index")
    assert reopened.info()["indexed"] == 304 and reopened.plan == index.plan
    query = folders[0] / read_manifest(testset_dir)[7].path
    hits = reopened.search([query], k=4).hits
    # the rerank rescored the PQ shortlist with the stored vectors: the 4 copies, at cosine 1
    assert sorted(Path(h.path).relative_to(tmp_path).parts[0] for h in hits) == [f"copy{i}" for i in range(4)]
    assert all(h.score == pytest.approx(1.0, abs=2e-3) for h in hits)
