"""Stylize your own images and videos: batching over pairs, controls, any resolution, video.

The engine behind ``nstzoo stylize`` (see :mod:`nstzoo.stylize.engine`). It knows no paper: it
drives any registered stylizer through ``forward`` or, when the stylizer declares controls,
``stylize_controlled`` (:attr:`nstzoo.specs.StylizerSpec.controls`).
"""

from .controls import ControlError, Controls, check_controls, parse_style_weights, preserve_color
from .engine import (DEFAULT_MAX_MEMORY, JobSummary, Stylizer, StylizeJob, output_name, parse_memory,
                     resolve_inputs, run_job)
from .tiling import seam_ratio, stylize_tiled, tile_starts
from .video import is_video, probe_video, read_frames, stylize_video, temporal_change

__all__ = ["ControlError", "Controls", "check_controls", "parse_style_weights", "preserve_color",
           "DEFAULT_MAX_MEMORY", "JobSummary", "Stylizer", "StylizeJob", "output_name", "parse_memory",
           "resolve_inputs", "run_job", "seam_ratio", "stylize_tiled", "tile_starts", "is_video", "probe_video",
           "read_frames", "stylize_video", "temporal_change"]
