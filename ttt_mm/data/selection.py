"""Which clips a reader can use, from the dataset index's records (`ttt_mm.data.index`): the streams
the config reads (a video config takes files with a video stream, an audio config files with an audio
stream), `ReadSpec.missing_audio` for videos without sound, digital silence, and spans that fit their
files. `index_clips` indexes the clips' files and selects them, saying what a user should know of the
files kept; it is what training, embedding and evaluation call before they open any file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ttt_mm.data.datasets import ReadSpec, clip_span
from ttt_mm.data.decode import MediaError, MediaInfo
from ttt_mm.data.decode.audio import AUDIO_CACHE_SAMPLES
from ttt_mm.data.decode.backends import FROM_START
from ttt_mm.data.index import PROBE_TIMEOUT, index_files, media_info, usable
from ttt_mm.data.skiplist import SILENT_TRACK
from ttt_mm.data.sources import ClipInfo
from ttt_mm.data.synthetic import SyntheticClip
from ttt_mm.messages import first_of, one_line

log = logging.getLogger(__name__)

UNEVEN_END_S = 1.0
"""How far apart a file's audio and video may end, when both are read, without a warning: the
clip is cut where the first one ends."""
PAST_END_SLACK_S = 0.5
"""How far a clip's stated end may lie past its file's end without a warning (a length rounded up,
streams that end a frame apart)."""


@dataclass
class Selection:
    """Clips a reader can use (each with its file's `MediaInfo`), and the rest with their reasons."""

    clips: list[ClipInfo]
    rejected: dict[str, str]  # clip name (a span's own trouble: its `ClipInfo.segment`) -> reason
    silent: dict[str, str]  # videos read with a silent track -> why (no audio stream, or its audio's trouble)

    def reason_of(self, clip: ClipInfo) -> str | None:
        """Why ``clip`` (one of those selected from) was left out, by its span or its whole file; None if kept."""
        return self.rejected.get(clip.segment) or self.rejected.get(clip.name)


# Why training and evaluation (`ReadSpec.skip_silent`), when they read only audio, leave out a file
# whose audio is all zeros (often a placeholder track): it holds nothing to model, and copying the
# last step predicts it perfectly, so every ratio to that baseline is meaningless. Runs that read
# audio and video treat such a track as no sound (`ReadSpec.missing_audio`: left out, or read as
# the silence it is), and embedding keeps it (silence has an embedding).
SILENT_AUDIO = "the audio is digital silence (nothing to model or score when only audio is read)"


def select(clips: Sequence[ClipInfo], records: dict[str, dict], spec: ReadSpec) -> Selection:
    """The clips whose files have the streams ``spec`` reads (see `ReadSpec.missing_audio`); with
    ``spec.skip_silent``, a file whose audio is digital silence is left out of audio-only reads
    (`SILENT_AUDIO`), and read with video it counts as a video without sound (`SILENT_TRACK`)."""
    kept, rejected, silent = [], {}, {}
    past_end = []  # (segment, where its file ends): a manifest's end beyond the file (a typo, or another file)
    reads = " and ".join(spec.modalities)
    for clip in clips:
        if isinstance(clip.media, SyntheticClip):
            kept.append(clip)
            continue
        record = records[os.path.abspath(clip.media)]
        if record.get("error"):
            rejected[clip.name] = record["error"]
            continue
        mute = spec.skip_silent and "audio" in spec.modalities and usable(record, "audio") and record.get("silent")
        if mute and spec.modalities == ("audio",):
            rejected[clip.name] = SILENT_AUDIO
            continue
        if mute and usable(record, "video"):  # read with video: a video without sound (a broken video says so)
            record = record | {"audio_error": SILENT_TRACK}
        missing = [s for s in spec.modalities if not usable(record, s)]
        if missing == ["audio"] and spec.missing_audio == "silence" and "video" in spec.modalities:
            silent[clip.name] = record.get("audio_error") or "no audio stream"
        elif missing:
            stream = missing[0]
            hint = f"the model reads {reads}"
            if stream == "audio" and "video" in spec.modalities:
                hint += f"; data.missing_audio={spec.missing_audio}"
            rejected[clip.name] = f"{record.get(f'{stream}_error') or f'no {stream} stream'} ({hint})"
            continue
        clip = replace(clip, info=media_info(record))
        try:
            _, end = clip_span(clip, spec)
        except MediaError as exc:  # this span of the file is too short: its other spans may not be
            rejected[clip.segment] = exc.reason
            continue
        if clip.end is not None and clip.end > end + PAST_END_SLACK_S:
            past_end.append((clip.segment, end))
        kept.append(clip)
    if past_end:
        (name, end), n = past_end[0], len(past_end)
        log.warning(
            "clips that end past their file's end, read to it: %d (the first: %s; the file ends at %.3f s)",
            n,
            name,
            end,
        )
    return Selection(kept, rejected, silent)


def _warn_uneven_ends(clips: Sequence[ClipInfo]) -> None:
    """One warning per file whose audio and video end more than `UNEVEN_END_S` apart: what is read of
    it stops where the first stream ends (`clip_span`), which a user reading a whole file should know."""
    both = [c for c in clips if c.info is not None and c.info.has_audio and c.info.has_video]
    cut = {c.name: c.info for c in both if c.end is None or c.end > min(c.info.audio_duration, c.info.video_duration)}
    for name, info in cut.items():
        gap = info.video_duration - info.audio_duration
        if abs(gap) > UNEVEN_END_S:
            first, other = ("audio", "video") if gap > 0 else ("video", "audio")
            log.warning(
                "%s: the %s ends %.3f s before the %s (at %.3f s of %.3f s): read to where both streams go",
                one_line(name),
                first,
                abs(gap),
                other,
                min(info.audio_duration, info.video_duration),
                max(info.audio_duration, info.video_duration),
            )


NAMED_AT_MOST = 5
"""How many files a warning names one by one; past this many it names the first ones and counts the rest."""


def _warn_read_from_start(clips: Sequence[ClipInfo]) -> None:
    """One warning for the videos whose frames are reached by decoding from their start (`FROM_START`):
    a window read out of order costs a decode of every frame before it, which re-encoding avoids."""
    paths = sorted({c.info.path for c in clips if c.info is not None and c.info.video_backend == FROM_START})
    if paths:
        log.warning(
            "%d %s whose seeks land on other pictures (an MPEG program or transport stream, or key frames that "
            "cannot start a decode) read by decoding from the first frame, so that a window read out of order "
            "decodes every frame before it: %s; re-encoding makes them seekable, e.g. ffmpeg -i in%s -c:v "
            "libx264 -c:a aac out.mp4",
            len(paths),
            "video" if len(paths) == 1 else "videos",
            first_of([one_line(p) for p in paths], NAMED_AT_MOST),
            os.path.splitext(paths[0])[1] or ".mp4",
        )


def _decoded_whole_past_the_cache(info: MediaInfo | None, sample_rate: int) -> bool:
    """Whether a file's audio is decoded whole (not a libsndfile format) to more samples than
    `decode.audio.AUDIO_CACHE_SAMPLES`, so that reading another file's audio between two of its
    windows decodes it all again."""
    if info is None or not info.has_audio or info.audio_backend == "soundfile" or not info.audio_duration:
        return False
    return info.audio_duration * sample_rate > AUDIO_CACHE_SAMPLES


def index_clips(
    clips: Sequence[ClipInfo],
    spec: ReadSpec,
    cache_dir: str | os.PathLike | None = None,
    jobs: int | None = None,
    timeout: float = PROBE_TIMEOUT,
    say: bool = True,
) -> Selection:
    """Index the clips' files (probing new ones in subprocesses) and keep those a reader can use; with
    ``say``, log how the kept ones are read (`say_how_read`). This is what training, embedding and
    evaluation call before they open any file.
    """
    files = [c.media for c in clips if not isinstance(c.media, SyntheticClip)]
    records, _ = index_files(files, cache_dir, jobs, timeout)
    selection = select(clips, records, spec)
    if say:
        say_how_read(selection, spec, selection.clips)
    return selection


def say_how_read(selection: Selection, spec: ReadSpec, clips: Sequence[ClipInfo]) -> None:
    """Log how ``clips`` (of ``selection``: those a run reads) are read where it is not plainly.

    One line per video read with a silent track, saying why: a warning when the file has sound that
    cannot be read (the model hears silence where there was sound); a warning per file whose audio or
    video decodes well short of the length the file states (truncated, or a corrupt middle that ends the
    decoder's reading): it is read as far as it goes; a warning per file whose audio has gaps read as
    silence, and per file read with both streams that end over `UNEVEN_END_S` apart (what is read stops
    where the first ends); one for the videos read from their start, and one per file with stretches of
    video that no frame covers; one per file that ends in zero bytes (`decode.errors.ZEROED_TAIL_BYTES`);
    one for the files with more than one audio stream (the first is read).
    """
    names = {c.name for c in clips}
    for name, info in {c.name: c.info for c in clips if c.info is not None and c.info.zeroed_tail}.items():
        read = [d for stream in spec.modalities if (d := getattr(info, f"{stream}_duration"))]
        log.warning(
            "%s: its last %d bytes are zeros (space a download or copy set aside and did not fill?): read as far "
            "as its data goes, %.3f s",
            one_line(name),
            info.zeroed_tail,
            min(read, default=info.duration),  # (of the streams read: what is read ends where the first does)
        )
    for name, why in selection.silent.items():
        if name not in names:
            continue
        level = logging.INFO if why in ("no audio stream", SILENT_TRACK) else logging.WARNING
        log.log(level, "%s: %s: read with a silent track", one_line(name), why)  # (data.missing_audio=silence)
    for stream in spec.modalities:
        short = {c.name: c.info for c in clips if c.info is not None and getattr(c.info, f"{stream}_stated")}
        for name, info in short.items():
            log.warning(
                "%s: the %s decodes to %.3f s of the %.3f s the file states (truncated or corrupt): read as far as "
                "it goes",
                one_line(name),
                stream,
                getattr(info, f"{stream}_duration"),
                getattr(info, f"{stream}_stated"),
            )
    if "video" in spec.modalities:
        _warn_read_from_start(clips)
        for name, info in {c.name: c.info for c in clips if c.info is not None and c.info.video_gaps}.items():
            log.warning(
                "%s: %.3f s inside the video has no frames (packets lost, a recording that skipped, or timestamps "
                "that jump): the picture before each gap shows through it",
                one_line(name),
                info.video_gaps,
            )
    if "audio" in spec.modalities:
        whole = {c.name: c.info for c in clips if _decoded_whole_past_the_cache(c.info, spec.sample_rate)}
        if whole:
            (name, info), n = next(iter(whole.items())), len(whole)
            log.warning(
                "files whose compressed audio is longer than the decoded track a process keeps, so that it is "
                "decoded whole again whenever another file's audio was read in between: %d (the first: %s, "
                "%.0f min); extract such audio to FLAC (ffmpeg -i in -vn out.flac), which is read by seeking",
                n,
                one_line(name),
                info.audio_duration / 60,
            )
        if "video" in spec.modalities:
            _warn_uneven_ends(clips)
        tracks = {c.name: c.info.audio_streams for c in clips if c.info is not None and c.info.audio_streams}
        if tracks:  # (one line: a film collection's every file may have its dubs)
            first, streams = next(iter(tracks.items()))
            log.warning(
                "files with more than one audio stream, of which the first is read (another language, a "
                "commentary?): %d (the first: %s, %d streams)",
                len(tracks),
                one_line(first),
                streams,
            )
        gapped = {c.name: c.info for c in clips if c.info is not None and c.info.audio_gaps}
        for name, info in gapped.items():  # (once per file, however many of its spans are used)
            log.warning(
                "%s: %.3f s inside the audio is missing (packets the decoder could not read, or a gap in its "
                "timestamps): read as silence in place",
                one_line(name),
                info.audio_gaps,
            )
