"""The face package's exceptions (tree drawn in ``services/face/__init__.py``)."""

from __future__ import annotations

FETCH_HINT = "python main.py fetch --profile gpu"


class FaceDetectorError(RuntimeError):
    """A face detector cannot be built; the message says which file or setting and what to do."""


class DetectorWeightsError(FaceDetectorError):
    """The S3FD weights file is missing, corrupted or not the published checkpoint."""
