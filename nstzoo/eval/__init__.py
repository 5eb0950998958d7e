"""Evaluation: test-set manifests, cosine retrieval in blocks, and the ALADIN-NST metrics.

``evaluate(embeddings, **manifest_arrays(read_manifest(folder)))`` gives style and content
mAP / IR-k per NST method and their mean.
"""

from .manifest import COLUMNS, MANIFEST_NAME, ManifestRow, manifest_arrays, read_manifest, write_manifest
from .metrics import average_precision_rows, evaluate, target_ranks
from .retrieval import CosineIndex, blocked_topk, exclusion_mask, l2_normalize, similarity_blocks

__all__ = [
    "COLUMNS",
    "MANIFEST_NAME",
    "ManifestRow",
    "read_manifest",
    "write_manifest",
    "manifest_arrays",
    "evaluate",
    "average_precision_rows",
    "target_ranks",
    "CosineIndex",
    "blocked_topk",
    "exclusion_mask",
    "l2_normalize",
    "similarity_blocks",
]
