"""Tokenizers: media batches to token sequences with timestamps, modality ids and targets.

Token rates of the defaults (tokens per second of media; a step is what ``tokens_per_step`` covers):

==========================================================  ==========  ============  ==========
tokenizer (defaults)                                        tokens/s    tokens/step   target_dim
==========================================================  ==========  ============  ==========
AudioTokenizer: 16 kHz, 10 ms hop, 80 mels, 4 frames/token  25          1 (0.04 s)    320
VideoTokenizer: 8 fps, 128 px, patch 16, tubelet 2, pool 4  256         64 (0.25 s)   96
VideoTokenizer at 64 px / 32 px (fast CPU runs)             64 / 16     16 / 4        96
VideoTokenizer with target_pool=1 (every pixel)             256         64 (0.25 s)   1536
AVTokenizer: audio at 5 frames/token (20/s) + video         276         69 (0.25 s)   400
==========================================================  ==========  ============  ==========

An hour of media is 90,000 audio tokens, 921,600 video tokens or 993,600 audio-visual tokens.
"""

from ttt_mm.tokenizers.audio import AudioTokenizer
from ttt_mm.tokenizers.av import AVTokenizer
from ttt_mm.tokenizers.base import AUDIO, FPS, FRAME_SIZE, SAMPLE_RATE, VIDEO, Decoding, Tokenizer, Tokens
from ttt_mm.tokenizers.video import VideoTokenizer


def default_step_seconds() -> dict[str, float]:
    """One token step of each stream under the default settings (the table above): the least of a file
    that a default model reads (what embed asks of it; training and evaluation ask more)."""
    return {"audio": AudioTokenizer().seconds_per_step, "video": VideoTokenizer().seconds_per_step}


__all__ = [
    "AUDIO",
    "FPS",
    "FRAME_SIZE",
    "SAMPLE_RATE",
    "VIDEO",
    "AVTokenizer",
    "AudioTokenizer",
    "Decoding",
    "Tokenizer",
    "Tokens",
    "VideoTokenizer",
    "default_step_seconds",
]
