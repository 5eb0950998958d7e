"""Retrieval metrics (nstzoo.eval.metrics) and blocked cosine search (nstzoo.eval.retrieval)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from nstzoo.errors import DataError
from nstzoo.eval import (
    CosineIndex,
    average_precision_rows,
    blocked_topk,
    evaluate,
    l2_normalize,
    target_ranks,
)


def grid(n_styles: int, n_contents: int, methods=("m",)):
    """Manifest columns of a full grid: every method stylizes every (style, content) pair,
    followed by the style images and then the content images."""
    role, method, style, content = [], [], [], []
    for m in methods:
        for s in range(n_styles):
            for c in range(n_contents):
                role.append("stylized"), method.append(m), style.append(f"s{s}"), content.append(f"c{c}")
    for s in range(n_styles):
        role.append("style"), method.append(""), style.append(f"s{s}"), content.append("")
    for c in range(n_contents):
        role.append("content"), method.append(""), style.append(""), content.append(f"c{c}")
    return role, method, style, content


def hand_embeddings(w_style: float, w_content: float, w_noise: float) -> np.ndarray:
    """2 styles x 2 contents in 5-D: stylized(s, c) = w_style e_s + w_content e_(2+c) + w_noise e_4;
    style image s = e_s; content image c = e_(2+c). Rows in the order of grid(2, 2)."""
    e = np.eye(5)
    stylized = [w_style * e[s] + w_content * e[2 + c] + w_noise * e[4] for s in range(2) for c in range(2)]
    return np.stack(stylized + [e[0], e[1], e[2], e[3]])


# ---------------------------------------------------------------- average precision, one row at a time


def test_average_precision_by_hand():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]], dtype=np.float32)
    positive = np.array([[True, False, True, False, True]])
    # positives at ranks 1, 3, 5: (1/1 + 2/3 + 3/5) / 3
    assert average_precision_rows(scores, positive)[0] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # removing the negative at rank 2 lifts the later positives to ranks 2 and 4
    valid = np.array([[True, False, True, True, True]])
    assert average_precision_rows(scores, positive, valid)[0] == pytest.approx((1 + 1 + 3 / 4) / 3)


def test_average_precision_ties_count_as_one_threshold():
    # a positive tied with a negative gets precision 1/2 (sklearn's convention), whatever the order
    for scores in ([0.9, 0.9, 0.5], [0.9, 0.9, 0.5][::-1]):
        positive = [False, True, True] if scores[0] == 0.9 else [True, True, False]
        ap = average_precision_rows(np.array([scores]), np.array([positive]))[0]
        assert ap == pytest.approx((1 / 2 + 2 / 3) / 2)


@pytest.mark.parametrize("tied", [False, True])
def test_average_precision_matches_sklearn_per_row(tied):
    rng = np.random.default_rng(1 + tied)
    scores = rng.normal(size=(12, 40)).astype(np.float32)
    if tied:  # few distinct values: many ties between positives and negatives
        scores = np.round(scores)
    positive = rng.random(scores.shape) < 0.25
    valid = rng.random(scores.shape) < 0.9
    positive[0] = False  # a row without positives has no AP
    ap = average_precision_rows(scores, positive, valid)
    assert np.isnan(ap[0])
    for i in range(1, len(scores)):
        v = valid[i]
        if positive[i][v].any():
            assert ap[i] == pytest.approx(average_precision_score(positive[i][v], scores[i][v]), abs=1e-12)


def test_target_rank_counts_ties_against_the_target():
    scores = np.array([[0.5, 0.7, 0.3]])
    assert target_ranks(np.array([0.5]), (scores, None))[0] == 3  # 0.7 and the tied 0.5
    competing = np.array([[True, False, True]])
    assert target_ranks(np.array([0.5]), (scores, competing))[0] == 2


# ---------------------------------------------------------------- evaluate: hand-built test sets


def test_evaluate_hand_built_two_methods():
    # method "a" is style-dominated, "b" content-dominated; both share one set of source images.
    # a: same style .889, same content .556, neither .444; style image .667, content image .333.
    a = hand_embeddings(2, 1, 2)[:4]
    # b: same content .889, same style .556, neither .444; style image .333, content image .667.
    b = hand_embeddings(1, 2, 2)[:4]
    sources = hand_embeddings(1, 1, 1)[4:]
    emb = np.concatenate([a, b, sources])
    out = evaluate(emb, *grid(2, 2, methods=("a", "b")), ks=(1, 2, 3), block=2)
    ma, mb = out["methods"]["a"], out["methods"]["b"]
    # a, style: the same-style image is ranked first -> AP 1; once it is removed, the style image
    # (.667) beats every other-style stylization (.556, .444) -> rank 1.
    assert ma["style"] == pytest.approx({"mAP": 100.0, "IR-1": 100.0, "IR-2": 100.0, "IR-3": 100.0})
    # a, content: the same-content image is second (after the same-style one) -> AP 1/2; the
    # content image (.333) comes after the same-style (.889) and the other (.444) -> rank 3.
    assert ma["content"] == pytest.approx({"mAP": 50.0, "IR-1": 0.0, "IR-2": 0.0, "IR-3": 100.0})
    assert mb["style"] == pytest.approx({"mAP": 50.0, "IR-1": 0.0, "IR-2": 0.0, "IR-3": 100.0})
    assert mb["content"] == pytest.approx({"mAP": 100.0, "IR-1": 100.0, "IR-2": 100.0, "IR-3": 100.0})
    assert ma["n_queries"] == mb["n_queries"] == 4
    assert out["mean"]["style"] == pytest.approx({"mAP": 75.0, "IR-1": 50.0, "IR-2": 50.0, "IR-3": 100.0})
    assert out["mean"]["content"] == pytest.approx({"mAP": 75.0, "IR-1": 50.0, "IR-2": 50.0, "IR-3": 100.0})
    assert out["mean"]["n_queries"] == 8


def test_ir_removes_the_other_same_style_stylizations():
    emb = hand_embeddings(2, 1, 2)
    stylized, styles = emb[:4], emb[4:6]
    corpus = np.concatenate([stylized, styles])
    style_of_query = np.array([0, 0, 1, 1])
    # without exclusion the same-style stylization (.889) beats the source style image (.667)
    _, ids = blocked_topk(stylized, corpus, 1, self_index=np.arange(4))
    assert ids[:, 0].tolist() == [1, 0, 3, 2]
    # excluding the query's style group (style images are in no group) leaves its style image on top
    groups = np.array([0, 0, 1, 1, -1, -1])
    _, ids = blocked_topk(stylized, corpus, 2, query_groups=style_of_query, corpus_groups=groups, block=3)
    assert ids[:, 0].tolist() == [4, 4, 5, 5]
    assert set(ids[:2].ravel()).isdisjoint({0, 1}) and set(ids[2:].ravel()).isdisjoint({2, 3})
    # the metric agrees
    assert evaluate(emb, *grid(2, 2), ks=(1,))["mean"]["style"]["IR-1"] == 100.0


# ---------------------------------------------------------------- evaluate vs brute force on random data


def brute_force(emb, n_styles, n_contents):
    """Reference metrics from the full similarity matrix and sklearn, for one method of grid()."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    n = n_styles * n_contents
    stylized, styles, contents = x[:n], x[n : n + n_styles], x[n + n_styles :]
    label = {"style": np.repeat(np.arange(n_styles), n_contents), "content": np.tile(np.arange(n_contents), n_styles)}
    src = {"style": styles, "content": contents}
    sim = stylized @ stylized.T
    out = {}
    for kind in ("style", "content"):
        aps, ranks = [], []
        for q in range(n):
            others = np.arange(n) != q
            aps.append(average_precision_score(label[kind][others] == label[kind][q], sim[q, others]))
            keep = label[kind] != label[kind][q]
            scores = np.concatenate([sim[q, keep], src[kind] @ stylized[q]])
            target = keep.sum() + label[kind][q]
            ranks.append(1 + int(np.flatnonzero(np.argsort(-scores) == target)[0]))
        ranks = np.array(ranks)
        out[kind] = {"mAP": 100 * np.mean(aps), **{f"IR-{k}": 100 * np.mean(ranks <= k) for k in (1, 5, 10)}}
    return out


def clustered(n_styles, n_contents, dim, seed, style_scale=1.0, content_scale=0.5):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n_styles, dim))
    c = rng.normal(size=(n_contents, dim))
    stylized = style_scale * np.repeat(s, n_contents, 0) + content_scale * np.tile(c, (n_styles, 1))
    stylized += rng.normal(size=stylized.shape)
    return np.concatenate([stylized, s + 0.5 * rng.normal(size=s.shape), c + 0.5 * rng.normal(size=c.shape)])


def test_evaluate_matches_brute_force_and_sklearn():
    emb = clustered(7, 5, 16, seed=0)
    got = evaluate(emb, *grid(7, 5))
    want = brute_force(emb, 7, 5)
    for kind in ("style", "content"):
        assert got["methods"]["m"][kind] == pytest.approx(want[kind], abs=1e-9)
    # the random set is neither trivial nor hopeless, so the comparison means something
    assert 0 < got["mean"]["style"]["mAP"] < 100 and 0 < got["mean"]["style"]["IR-1"] < 100
    assert got["mean"]["content"]["IR-1"] < 100


def test_block_size_does_not_change_results():
    emb = clustered(6, 4, 8, seed=3)
    args = grid(6, 4, methods=("p", "q"))
    emb = np.concatenate([clustered(6, 4, 8, seed=4)[:24], emb])
    results = [evaluate(emb, *args, block=b) for b in (1, 3, 1024)]
    assert results[0] == results[1] == results[2]


def test_style_and_content_are_symmetric():
    # swapping what is called style and what is called content swaps the two metric families
    emb = clustered(5, 4, 8, seed=5)
    role, method, style, content = grid(5, 4)
    swapped_role = [{"style": "content", "content": "style"}.get(r, r) for r in role]
    a = evaluate(emb, role, method, style, content)["mean"]
    b = evaluate(emb, swapped_role, method, content, style)["mean"]
    assert a["style"] == b["content"] and a["content"] == b["style"]


def test_ties_do_not_crash():
    # every stylization of a style is the same vector: all within-style scores tie
    emb = clustered(4, 3, 8, seed=6, content_scale=0.0)
    emb[:12] = np.repeat(emb[:12:3], 3, axis=0)
    out = evaluate(emb, *grid(4, 3))
    assert out["mean"]["style"]["mAP"] == pytest.approx(100.0)
    assert all(np.isfinite(v) for v in out["mean"]["content"].values())


def test_accepts_integer_ids_and_unbalanced_methods():
    role, method, style, content = grid(3, 3, methods=("x",))
    emb = clustered(3, 3, 8, seed=7)
    keep = [i for i in range(len(role)) if i != 4]  # drop one stylization: unbalanced, still valid
    ids = {f"s{i}": i for i in range(3)} | {f"c{i}": 10 + i for i in range(3)} | {"": None}
    out = evaluate(
        emb[keep],
        [role[i] for i in keep],
        [method[i] for i in keep],
        [ids[style[i]] for i in keep],
        [ids[content[i]] for i in keep],
    )
    assert out["methods"]["x"]["n_queries"] == 8


# ---------------------------------------------------------------- bad input


def test_bad_input_is_a_clear_error():
    role, method, style, content = grid(2, 2)
    emb = clustered(2, 2, 4, seed=8)
    with pytest.raises(DataError, match="shape"):
        evaluate(emb[:-1], role, method, style, content)
    with pytest.raises(DataError, match="'painting'"):
        evaluate(emb, role[:-1] + ["painting"], method, style, content)
    with pytest.raises(DataError, match="s1.*no style image"):
        evaluate(emb[:-3], role[:-3], method[:-3], style[:-3], content[:-3])  # style image s1 dropped
    dup = list(style)
    dup[5] = "s0"
    with pytest.raises(DataError, match="s0.*more than one"):
        evaluate(emb, role, method, dup, content)
    no_method = ["" if i == 0 else m for i, m in enumerate(method)]
    with pytest.raises(DataError, match="row 0 has no method"):
        evaluate(emb, role, no_method, style, content)
    zero = emb.copy()
    zero[2] = 0
    with pytest.raises(DataError, match="row 2 is all zeros"):
        evaluate(zero, role, method, style, content)
    nan = emb.copy()
    nan[1, 0] = np.nan
    with pytest.raises(DataError, match="row 1 has a non-finite"):
        evaluate(nan, role, method, style, content)


# ---------------------------------------------------------------- faiss index


def test_faiss_index_agrees_with_blocked_search():
    rng = np.random.default_rng(9)
    corpus, queries = rng.normal(size=(50, 12)), rng.normal(size=(9, 12))
    scores, ids = CosineIndex(corpus).search(queries, 5)
    b_scores, b_ids = blocked_topk(queries, corpus, 5, block=4)
    assert (ids == b_ids).all()
    np.testing.assert_allclose(scores, b_scores, atol=1e-5)
    x = l2_normalize(corpus)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    # the query itself is excluded through self_index
    _, ids = blocked_topk(corpus[:9], corpus, 3, self_index=np.arange(9))
    assert not (ids == np.arange(9)[:, None]).any()


def test_row_order_does_not_matter():
    # a manifest may list rows in any order (methods interleaved, sources first)
    emb = np.concatenate([clustered(4, 3, 8, seed=10)[:12], clustered(4, 3, 8, seed=11)])
    columns = grid(4, 3, methods=("p", "q"))
    perm = np.random.default_rng(12).permutation(len(emb))
    shuffled = [[col[i] for i in perm] for col in columns]
    a, b = evaluate(emb[perm], *shuffled), evaluate(emb, *columns)
    assert sorted(a["methods"]) == ["p", "q"]
    # the same per-query values, averaged in another order: equal up to float summation round-off
    for key in ("p", "q"):
        for kind in ("style", "content"):
            assert a["methods"][key][kind] == pytest.approx(b["methods"][key][kind], rel=1e-12)
