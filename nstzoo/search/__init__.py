"""Style search: faiss indexes of image collections embedded with an exported style encoder.

``StyleIndex`` builds (resumably, in batches), extends, and queries an INDEX folder by image or
moodboard; ``ann`` chooses and runs the faiss index; ``store`` is the on-disk layout; ``html``
renders a result page. See the README section "Search by style".
"""

from .ann import AUTO_FLAT_MAX, KINDS, IndexPlan, VectorIndex, plan_index
from .index import AddReport, EncoderMismatchError, Hit, SearchIndexError, SearchResult, StyleIndex

__all__ = ["StyleIndex", "AddReport", "SearchResult", "Hit", "SearchIndexError", "EncoderMismatchError",
           "IndexPlan", "VectorIndex", "plan_index", "KINDS", "AUTO_FLAT_MAX"]
