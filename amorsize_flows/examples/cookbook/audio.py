"""Audio features: MFCCs of WAV clips, summarised over time (mean and spread of each band)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import soundfile

import amorsize_flows as amz

__all__ = ["SAMPLE_RATE", "featurize_clips", "mfcc_features", "write_clips"]

SAMPLE_RATE = 16_000
CLIP_SECONDS = 1.0
N_MFCC = 20


def write_clips(folder: str | Path, count: int) -> list[str]:
    """``count`` reproducible WAV clips in ``folder``: a chirp or a chord (by parity), with
    noise; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    times = np.arange(int(SAMPLE_RATE * CLIP_SECONDS)) / SAMPLE_RATE
    paths = []
    for index in range(count):
        rng = np.random.default_rng(index)
        base = float(rng.uniform(150, 600))
        if index % 2:
            sound = librosa.chirp(fmin=base, fmax=4 * base, sr=SAMPLE_RATE, duration=CLIP_SECONDS)
        else:
            sound = sum(np.sin(2 * np.pi * base * ratio * times) for ratio in (1, 1.25, 1.5)) / 3
        sound = sound + rng.normal(0, 0.05, times.size)
        path = folder / f"clip-{index:05d}.wav"
        soundfile.write(path, sound.astype(np.float32), SAMPLE_RATE)
        paths.append(str(path))
    return paths


def mfcc_features(path: str) -> np.ndarray:
    """Load one clip and describe it: the mean and standard deviation of each MFCC band."""
    sound, rate = soundfile.read(path, dtype="float32")
    bands = librosa.feature.mfcc(y=sound, sr=rate, n_mfcc=N_MFCC)
    return np.concatenate([bands.mean(axis=1), bands.std(axis=1)])


def featurize_clips(paths: Sequence[str], **options: Any) -> np.ndarray:
    """The stage: one row of 2 x N_MFCC features per clip, in the order of ``paths``."""
    return np.stack(amz.execute(mfcc_features, paths, **options))
