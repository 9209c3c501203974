"""Readers of video anomaly archives in their original layouts, and decoding of one video to frames.

from memae.datasets import open_dataset, decode, Preprocess
records = open_dataset("auto", "/data/UCSD_Anomaly_Dataset.v1p2/UCSDped2", split="test")
frames = decode(records[0], Preprocess(size=(256, 256), color="gray"))
skipped = unlisted_files("/data/UCSD_Anomaly_Dataset.v1p2/UCSDped2", records)   # every other file, with a reason
"""

from memae.datasets.decode import Preprocess, VideoDecodeError, decode, iter_frames, probe
from memae.datasets.detect import DATASETS, READERS, detect_layout, open_dataset
from memae.datasets.listing import unlisted_files
from memae.datasets.masks import load_masks
from memae.datasets.records import Issue, MaskRef, VideoRecord

__all__ = [
    "DATASETS",
    "READERS",
    "Issue",
    "MaskRef",
    "Preprocess",
    "VideoDecodeError",
    "VideoRecord",
    "decode",
    "detect_layout",
    "iter_frames",
    "load_masks",
    "open_dataset",
    "probe",
    "unlisted_files",
]
