"""Which camera a video came from, read from its id, so that scores and thresholds can be kept per camera.

A camera's normal error depends on its view (a wide street errs more than a corridor), so an archive-wide threshold
is fairer per camera. The rules follow the layouts' ids:

- a folder of videos (`cam01/2024-05-01/08.mp4`): the first folder under the root that is not a train/test folder
  (a camera's footage is often filed by day below it; ids of older runs used "__" for "/");
- ShanghaiTech (`01_0014`, `01_001`): the scene number before the underscore;
- everything else (UCSD Ped1/Ped2, Avenue, one folder of frames): one camera, "".

    camera_of("cam02/night/0001.avi")   # 'cam02'
    camera_of("07_0009")                # '07'
"""

from __future__ import annotations

import re

TOP_CAMERA = "(top folder)"  # how reports name the camera of videos directly under --root, beside camera folders
_SPLIT_FOLDERS = {"train", "training", "test", "testing"}
_SCENE_ID = re.compile(r"^(\d{2})_\d+$")


def camera_of(video_id: str) -> str:
    """The camera of a video id ("" when the archive has one camera)."""
    path = video_id.replace("__", "/")
    if "/" in path:
        folders = [part for part in path.split("/")[:-1] if part.lower() not in _SPLIT_FOLDERS]
        return folders[0] if folders else ""
    scene = _SCENE_ID.match(video_id)
    return scene.group(1) if scene else ""


def camera_name(camera: str) -> str:
    """A camera as reports name it: its folder, or TOP_CAMERA for the videos directly under the root."""
    return camera or TOP_CAMERA
