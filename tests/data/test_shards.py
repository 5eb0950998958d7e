"""Tar shards: the same images, names and batches as the folders; resumable writes; reads by index."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset
from PIL import Image

from nstzoo.cli import main
from nstzoo.data import shards as shards_module
from nstzoo.data.shards import (
    INDEX_NAME,
    PROGRESS_NAME,
    FolderSource,
    ShardSource,
    SourceStream,
    iter_indices,
    open_source,
    write_shards,
)
from nstzoo.data.steps import StepBatches, step_loader
from nstzoo.errors import DataError

H, W = 12, 20


def _rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Nine images of several formats and suffix cases, in a sub-folder too, plus a text file."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_rgb(0)).save(root / "a.png")
    Image.fromarray(_rgb(1)).save(root / "B.JPG", quality=90)  # upper-case suffix: member "....jpg"
    Image.fromarray(_rgb(2)[..., 0]).save(root / "gray.png")
    Image.fromarray(_rgb(3)).save(root / "c.jpeg", quality=90)
    Image.fromarray(_rgb(4)).save(root / "sub" / "d.webp", lossless=True)
    Image.fromarray(_rgb(5)).save(root / "sub" / "e.bmp")
    for i in range(3):
        Image.fromarray(_rgb(10 + i)).save(root / "sub" / f"f{i}.png")
    (root / "notes.txt").write_text("not an image")
    return root


def _tar_members(out: Path) -> list[str]:
    names: list[str] = []
    for tar in sorted(out.glob("shard-*.tar")):
        with tarfile.open(tar) as tf:
            names.extend(tf.getnames())
    return names


def _sources(folder: Path, out: Path, shard_size: int = 4) -> tuple[FolderSource, ShardSource]:
    write_shards([folder], out, shard_size)
    return FolderSource.from_folder(folder), ShardSource(out)


def test_shards_hold_the_folders_bytes_and_names_in_the_same_order(folder, tmp_path):
    out = tmp_path / "shards"
    summary = write_shards([folder], out, 4)
    assert (summary.images, summary.shards, summary.written_images, summary.already_complete) == (9, 3, 9, False)
    files, shards = FolderSource.from_folder(folder), ShardSource(out)
    assert len(shards) == len(files) == 9
    for i in range(len(files)):
        assert shards.name(i) == files.name(i)
        assert shards.read_bytes(i) == files.read_bytes(i)  # original bytes, never re-encoded
        assert torch.equal(shards.read(i), files.read(i))
    members = _tar_members(out)
    # B.JPG sorts first (list_images' order); the member keeps its own suffix, lower-cased.
    assert members[:4] == ["0000000000.jpg", "0000000000.json", "0000000001.json", "0000000001.png"]
    assert len(members) == 2 * 9 and len(set(members)) == len(members)
    meta = json.loads((out / INDEX_NAME).read_text())
    assert meta["wids_version"] == 1 and [s["url"] for s in meta["shardlist"]] == [
        "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert [s["nsamples"] for s in meta["shardlist"]] == [4, 4, 1]
    assert not (out / PROGRESS_NAME).exists()


def test_two_folders_are_sharded_one_after_the_other(folder, tmp_path):
    second = tmp_path / "more"
    second.mkdir()
    Image.fromarray(_rgb(20)).save(second / "z.png")
    out = tmp_path / "shards"
    write_shards([folder, second], out, 5)
    shards = ShardSource(out)
    assert len(shards) == 10 and shards.name(9) == str(second / "z.png")
    assert shards.name(0) == str(folder / "B.JPG")
    with pytest.raises(DataError, match="given twice"):
        write_shards([folder, folder], tmp_path / "again", 5)


def test_training_draws_the_same_batches_from_shards_and_folder(folder, tmp_path):
    files, shards = _sources(folder, tmp_path / "shards")
    shards.read(0)  # the parent holds an open shard before the workers fork: they must open their own
    kwargs = dict(batch_size=4, size=8, seed=3)
    from_files, from_shards = StepBatches(files, files, **kwargs), StepBatches(shards, shards, **kwargs)
    for step in (0, 1):
        a, b = from_files.batch(step), from_shards.batch(step)
        assert torch.equal(a["contents"], b["contents"]) and torch.equal(a["styles"], b["styles"])
        assert torch.equal(a["content_ids"], b["content_ids"])
    forked = list(step_loader(from_shards, 0, 2, workers=2))
    for step, batch in enumerate(forked):
        assert torch.equal(batch["contents"], from_files.batch(step)["contents"])


def _write_raw_shards(out: Path, samples: list[tuple[str, bytes]], shard_size: int) -> None:
    """Shards written straight with webdataset (as another tool would), with nstzoo's index and keys."""
    out.mkdir(parents=True, exist_ok=True)
    with webdataset.ShardWriter(str(out / "shard-%06d.tar"), maxcount=shard_size, verbose=0, encoder=False,
                                mtime=0) as writer:
        for i, (ext, data) in enumerate(samples):
            meta = json.dumps({"folder": "src", "path": f"img{i}.{ext}", "index": i}).encode()
            writer.write({"__key__": f"{i:010d}", ext: data, "json": meta})
    counts = [min(shard_size, len(samples) - s) for s in range(0, len(samples), shard_size)]
    (out / INDEX_NAME).write_text(json.dumps({
        "wids_version": 1, "nstzoo": {"key_digits": 10},
        "shardlist": [{"url": f"shard-{k:06d}.tar", "nsamples": n} for k, n in enumerate(counts)]}))


def _png(seed: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_a_corrupt_member_is_a_data_error_naming_it_and_is_skipped(tmp_path):
    out = tmp_path / "shards"
    _write_raw_shards(out, [("png", _png(0)), ("png", b"\x89PNG garbage, not an image"), ("png", _png(2)),
                            ("png", _png(3))], shard_size=2)
    source = ShardSource(out)
    with pytest.raises(DataError) as err:
        source.read(1)
    assert f"{out.resolve() / 'shard-000000.tar'}:0000000001.png" in err.value.message
    assert source.name(1) == "src/img1.png"
    items = list(SourceStream(source))
    assert [item["index"] for item in items] == [0, 1, 2, 3]
    assert [item["error"] is not None for item in items] == [False, True, False, False]
    # The training path skips it: another image is drawn in its place, and the skip is counted.
    batches = StepBatches(source, source, batch_size=2, size=8, seed=0)
    with pytest.warns(RuntimeWarning, match="0000000001.png"):
        sample = batches.load_sample((0, 0, 0, 1))
    assert sample["skipped"] and set(sample["skipped"]) == {"src/img1.png"} and sample["index"] != 1


def test_an_unreadable_source_file_keeps_its_index(folder, tmp_path, monkeypatch):
    real = shards_module._read_source

    def read(item):
        return (b"", "permission denied") if item.rel == "c.jpeg" else real(item)

    monkeypatch.setattr(shards_module, "_read_source", read)
    summary = write_shards([folder], tmp_path / "shards", 4)
    assert summary.unreadable == [str(folder / "c.jpeg")]
    files, shards = FolderSource.from_folder(folder), ShardSource(tmp_path / "shards")
    index = files.paths.index(folder / "c.jpeg")
    assert shards.name(index) == files.name(index) and len(shards) == len(files)
    with pytest.raises(DataError, match="empty"):
        shards.read(index)
    assert json.loads((tmp_path / "shards" / INDEX_NAME).read_text())["nstzoo"]["unreadable"] == summary.unreadable
    assert write_shards([folder], tmp_path / "shards", 4).unreadable == summary.unreadable  # reported again


def test_broken_shards_and_indexes_are_data_errors_naming_them(folder, tmp_path):
    out = tmp_path / "shards"
    write_shards([folder], out, 4)
    (out / "shard-000001.tar").write_bytes(b"\0" * 100)  # no tar header that parses: zero samples
    source = ShardSource(out)
    assert torch.is_tensor(source.read(0))
    with pytest.raises(DataError, match="shard-000001.tar"):
        source.read(5)
    assert source.name(5).endswith("shard-000001.tar[1]")  # never raises: callers name what they skip
    (out / "shard-000002.tar").unlink()
    with pytest.raises(DataError, match="cannot open shard .*shard-000002.tar"):
        source.read(8)
    with pytest.raises(IndexError):
        source.read(9)
    index = json.loads((out / INDEX_NAME).read_text())
    index["shardlist"][0]["nsamples"] = 3  # out of step with the files: reads must fail, not drift
    (out / INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(DataError, match="index does not match"):
        ShardSource(out).read(0)
    (out / INDEX_NAME).write_text('{"shardlist": []}')
    with pytest.raises(DataError, match="not a wids shard index") as err:
        ShardSource(out)
    assert str(out / INDEX_NAME) in err.value.message
    with pytest.raises(DataError, match="does not exist"):
        ShardSource(tmp_path / "nowhere")


class Interrupted(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_shards_without_duplicates(folder, tmp_path):
    whole = tmp_path / "a" / "shards"
    write_shards([folder], whole, 4)

    out = tmp_path / "b" / "shards"
    written = []

    def crash(n: int) -> None:
        written.append(n)
        if len(written) == 6:  # inside the second shard: the first is finished, the second half-written
            raise Interrupted

    with pytest.raises(Interrupted):
        write_shards([folder], out, 4, progress=crash)
    progress = json.loads((out / PROGRESS_NAME).read_text())
    assert [s["url"] for s in progress["shards"]] == ["shard-000000.tar"]
    assert not (out / INDEX_NAME).exists() and not (out / "shard-000001.tar").exists()
    # What a SIGKILL could leave behind as well: a partial file, and a shard finished but not recorded.
    (out / "shard-000001.tar.partial").write_bytes(b"half")
    (out / "shard-000002.tar").write_bytes(b"stale")

    summary = write_shards([folder], out, 4)
    assert (summary.resumed_from, summary.written_images, summary.written_shards) == (4, 5, 2)
    assert (out / INDEX_NAME).read_text() == (whole / INDEX_NAME).read_text()
    for tar in sorted(whole.glob("shard-*.tar")):
        assert (out / tar.name).read_bytes() == tar.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())
    keys = [name.split(".")[0] for name in _tar_members(out) if name.endswith(".json")]
    assert keys == [f"{i:010d}" for i in range(9)]
    again = write_shards([folder], out, 4)
    assert again.already_complete and again.written_images == 0 and again.images == 9


def test_out_folder_with_other_files_or_other_shards_is_refused(folder, tmp_path):
    out = tmp_path / "shards"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not shard files .*keep.txt") as err:
        write_shards([folder], out, 4)
    assert "--overwrite" in (err.value.hint or "")
    write_shards([folder], out, 4, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine" and len(ShardSource(out)) == 9
    with pytest.raises(DataError, match="another --shard-size"):
        write_shards([folder], out, 3)
    assert write_shards([folder], out, 3, overwrite=True).shards == 3


@pytest.fixture(scope="module")
def large_set(tmp_path_factory) -> Path:
    """20,000 tiny PNG samples in 100 shards (100,000 took about 14 s to write here; 20,000 about 3 s)."""
    out = tmp_path_factory.mktemp("large") / "shards"
    pngs = [_png(seed) for seed in range(16)]
    _write_raw_shards(out, [("png", pngs[i % 16]) for i in range(20_000)], shard_size=200)
    return out


def test_opening_a_large_shard_set_reads_its_index_only(large_set, monkeypatch):
    opened: list[str] = []
    real = shards_module.IndexedTarSamples

    def counting(*, path, **kwargs):
        opened.append(path)
        return real(path=path, **kwargs)

    def no_listing(*args, **kwargs):
        raise AssertionError("a shard folder was listed")

    monkeypatch.setattr(shards_module, "IndexedTarSamples", counting)
    monkeypatch.setattr(os, "scandir", no_listing)
    monkeypatch.setattr(os, "listdir", no_listing)
    source = open_source(large_set)
    assert isinstance(source, ShardSource) and len(source) == 20_000
    assert opened == [] and source.open_shards() == 0
    picks = random.Random(0).sample(range(20_000), 10)
    for index in picks:
        assert source.read(index).shape == (3, 8, 8)
        assert source.name(index) == f"src/img{index}.png"
    assert sorted(opened) == sorted({str(large_set.resolve() / f"shard-{i // 200:06d}.tar") for i in picks})


def test_at_most_max_open_shards_stay_open(large_set):
    source = ShardSource(large_set, max_open_shards=3)
    for index in range(0, 2000, 200):
        source.read_bytes(index)
    assert source.open_shards() == 3


def test_globs_brace_lists_and_tar_files_open_as_shard_sources(folder, tmp_path):
    out = tmp_path / "shards"
    write_shards([folder], out, 4)
    names = [ShardSource(out).name(i) for i in range(9)]
    for spec in (out / "shard-*.tar", f"{out}/shard-{{000000..000002}}.tar",
                 f"{out}/shard-000000.tar::{out}/shard-00000[12].tar", out / INDEX_NAME, out):
        source = open_source(spec)
        assert isinstance(source, ShardSource)
        assert [source.name(i) for i in range(len(source))] == names, spec
    assert len(open_source(out / "shard-000001.tar")) == 4
    assert isinstance(open_source(folder), FolderSource)
    for missing in (tmp_path / "nope", f"{tmp_path}/nope-*.tar"):
        with pytest.raises(DataError) as err:
            open_source(missing)
        assert str(missing) in err.value.message


def test_tars_from_other_tools_read_without_json_members(tmp_path):
    out = tmp_path / "foreign"
    out.mkdir()
    with webdataset.ShardWriter(str(out / "part-%03d.tar"), maxcount=2, verbose=0, encoder=False) as writer:
        for i in range(3):
            writer.write({"__key__": f"cats/cat{i}", "jpg": _jpeg(i), "cls": b"3"})
    source = open_source(f"{out}/part-*.tar")
    assert len(source) == 3 and source.read(2).shape == (3, 8, 8)
    assert source.name(2) == f"{out / 'part-001.tar'}:cats/cat2.jpg"


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_iter_indices_is_a_disjoint_cover_of_every_split():
    for n in range(0, 23):
        for world_size in range(1, 5):
            for num_workers in range(1, 5):
                parts = [list(iter_indices(n, rank, world_size, worker, num_workers))
                         for rank in range(world_size) for worker in range(num_workers)]
                flat = [i for part in parts for i in part]
                assert sorted(flat) == list(range(n)) and len(flat) == n, (n, world_size, num_workers)
                assert max(map(len, parts)) - min(map(len, parts)) <= 1
                assert all(part == list(range(part[0], part[0] + len(part))) for part in parts if part)
    for bad in ((5, 2, 2), (5, 0, 1, 1, 1), (5, 0, 1, 3, 3), (-1,)):
        with pytest.raises(ValueError):
            iter_indices(*bad)


def test_a_stream_over_forked_workers_reads_every_image_once(folder, tmp_path):
    _, shards = _sources(folder, tmp_path / "shards", shard_size=2)
    expected = {i: shards.read(i) for i in range(len(shards))}  # parent has shards open before the fork
    seen = []
    for rank in range(2):
        loader = torch.utils.data.DataLoader(SourceStream(shards, rank=rank, world_size=2), batch_size=None,
                                             num_workers=2, multiprocessing_context="fork")
        seen.extend(loader)
    assert sorted(item["index"] for item in seen) == list(range(len(shards)))
    for item in seen:
        assert item["error"] is None and torch.equal(item["image"], expected[item["index"]])
    copy = pickle.loads(pickle.dumps(shards))  # spawn-style workers get a copy without open handles
    assert copy.open_shards() == 0 and torch.equal(copy.read(3), expected[3])
    # A forked worker does not use the parent's open shards: it opens its own, on first read.
    assert shards.open_shards() == 5
    loader = torch.utils.data.DataLoader(OpenShardsSeen(shards), batch_size=None, num_workers=1,
                                         multiprocessing_context="fork")
    assert [tuple(pair) for pair in loader] == [(0, 1), (1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (3, 4), (4, 4),
                                                (4, 5)]


class OpenShardsSeen(torch.utils.data.Dataset):
    """``(shards open before, after)`` reading item ``i``, in the process that reads it."""

    def __init__(self, source: ShardSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[int, int]:
        before = self.source.open_shards()
        self.source.read(index)
        return before, self.source.open_shards()


def test_cli_shard_writes_shards_and_prints_a_json_summary(folder, tmp_path):
    out = tmp_path / "shards"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "nstzoo", "data", "shard", str(folder), "--out", str(out),
                             "--shard-size", "4", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["images"], summary["shards"], summary["written_images"]) == (9, 3, 9)
    assert summary["index"] == str(out / INDEX_NAME) and len(ShardSource(out)) == 9


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_shard_bad_input_exits_2_naming_it(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, message in ((tmp_path / "missing", "does not exist"), (empty, "no images")):
        code, out, err = run_cli(capsys, "data", "shard", str(folder), "--out", str(tmp_path / "out"))
        assert code == 2 and out == ""
        assert message in err and str(folder) in err
