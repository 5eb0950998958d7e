"""Video in, video out: decode with PyAV (FFmpeg's libraries), stylize frames in batches, keep the audio.

PyAV is the maintained Python binding of FFmpeg; its wheels bundle the codecs, so nothing else has
to be installed. Frames are decoded in order, converted to float ``[3,H,W]`` in [0, 1], stylized
``batch`` at a time by a caller-supplied function, and encoded as H.264 (yuv420p, the profile every
player reads) at the input's frame rate. Audio packets are copied unchanged (no re-encode, no
quality loss) into the output when the input has an audio stream.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
from torch import Tensor

from ..errors import DataError
from ..files import atomic_write

__all__ = ["VIDEO_EXTENSIONS", "is_video", "VideoInfo", "probe_video", "read_frames", "stylize_video",
           "temporal_change"]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


def is_video(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _av():
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a dependency; a broken install says so
        raise DataError("video needs PyAV (pip install av)") from exc
    return av


@dataclass(frozen=True)
class VideoInfo:
    """A video's first video stream: frame count (as decoded), size, frame rate, audio presence."""

    frames: int
    width: int
    height: int
    rate: Fraction
    has_audio: bool


def _open(path: Path):
    av = _av()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise DataError(f"{str(path)!r}: cannot read it as a video ({exc})") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{str(path)!r}: has no video stream")
    return container


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Decode ``path`` once and report what it holds (frame count as actually decoded)."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return VideoInfo(frames, stream.codec_context.width, stream.codec_context.height,
                         Fraction(stream.average_rate or stream.guessed_rate or 25), bool(container.streams.audio))
    finally:
        container.close()


def _to_tensor(frame) -> Tensor:
    array = frame.to_ndarray(format="rgb24")
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def read_frames(path: str | os.PathLike[str]) -> Iterator[Tensor]:
    """The frames of ``path`` in order, each ``[3,H,W]`` float32 in [0, 1]."""
    container = _open(Path(path))
    try:
        for frame in container.decode(container.streams.video[0]):
            yield _to_tensor(frame)
    finally:
        container.close()


def _even(n: int) -> int:
    return max(2, n - n % 2)  # yuv420p halves chroma: H.264 needs even sides


def stylize_video(source: str | os.PathLike[str], target: str | os.PathLike[str],
                  stylize: Callable[[Tensor], Tensor], *, batch: int = 4,
                  size: Callable[[int, int], tuple[int, int]] | None = None,
                  progress: Callable[[int], None] | None = None, crf: int = 18) -> dict[str, object]:
    """Stylize every frame of ``source`` into an H.264 ``.mp4`` at ``target``, audio copied.

    Args:
        stylize: ``frames [n,3,H,W] -> [n,3,H,W]``, both in [0, 1].
        batch: frames per ``stylize`` call.
        size: ``(height, width) -> (height, width)`` the frames are resized to first (e.g. a shorter
            side); the result is rounded down to even sides for the encoder.
        progress: called with the number of frames finished so far.
        crf: x264 constant rate factor (18: visually lossless).

    Returns:
        ``{"frames", "width", "height", "audio"}`` of the written file.

    Raises:
        DataError: the source is not a readable video.
    """
    import torch.nn.functional as F

    av = _av()
    source, target = Path(source), Path(target)
    container = _open(source)
    written = {"frames": 0, "width": 0, "height": 0, "audio": False}

    def encode(tmp: str) -> None:
        vin = container.streams.video[0]
        ain = container.streams.audio[0] if container.streams.audio else None
        rate = Fraction(vin.average_rate or vin.guessed_rate or 25)
        # mp4 carries H.264 and AAC; other audio codecs are copied when the muxer takes them.
        output = av.open(tmp, mode="w", format="mp4")
        vout = None
        aout = output.add_stream_from_template(ain) if ain is not None else None
        pending: list[Tensor] = []
        done = 0

        def flush() -> None:
            nonlocal vout, done
            if not pending:
                return
            frames = torch.stack(pending)
            h, w = frames.shape[-2:]
            th, tw = size(h, w) if size is not None else (h, w)
            th, tw = _even(th), _even(tw)
            if (th, tw) != (h, w):
                frames = F.interpolate(frames, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
            result = stylize(frames).clamp(0, 1)
            if vout is None:
                vout = output.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=rate)
                vout.width, vout.height, vout.pix_fmt = tw, th, "yuv420p"
                vout.options = {"crf": str(crf)}
                written.update(width=tw, height=th)
            pixels = (result * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
            for array in pixels:
                for packet in vout.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                    output.mux(packet)
            done += len(pending)
            pending.clear()
            if progress is not None:
                progress(done)

        streams = [vin] + ([ain] if ain is not None else [])
        audio_packets = []
        for packet in container.demux(*streams):
            if packet.stream is vin:
                for frame in packet.decode():
                    pending.append(_to_tensor(frame))
                    if len(pending) >= batch:
                        flush()
            elif aout is not None and packet.dts is not None:
                # Audio is muxed after the first video packets exist (the video stream is created on
                # the first batch, and a muxer wants every stream before its header is written).
                packet.stream = aout
                audio_packets.append(packet)
                if vout is not None:
                    for held in audio_packets:
                        output.mux(held)
                    audio_packets.clear()
        flush()
        if vout is None:
            output.close()
            raise DataError(f"{str(source)!r}: holds no decodable video frames")
        for held in audio_packets:
            output.mux(held)
        for packet in vout.encode():
            output.mux(packet)
        output.close()
        written["frames"] = done
        written["audio"] = aout is not None

    try:
        atomic_write(target, encode)
    finally:
        container.close()
    return written


def temporal_change(frames: Tensor) -> float:
    """Mean absolute change between consecutive frames ``[T,3,H,W]`` in [0, 1] (0 for one frame)."""
    if frames.shape[0] < 2:
        return 0.0
    return float((frames[1:] - frames[:-1]).abs().mean())
