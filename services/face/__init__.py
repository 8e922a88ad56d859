"""Face detection for avatar preparation (Wav2Lip and MuseTalk): one API, two detectors.

    detector = face_detector("auto", models_dir, device="auto")
    box = detector.largest_face(frame, color="bgr")   # FaceBox(x, y, w, h) or None

Errors::

    FaceDetectorError        unknown kind, or OpenCV's cascade is missing
      DetectorWeightsError   S3FD weights missing, corrupted, or not the published file
                             (the message names the file and ``python main.py fetch --profile gpu``)
"""

from services.face.boxes import Detection, FaceBox
from services.face.detector import (
    DETECTOR_KINDS,
    ColorOrder,
    DetectorKind,
    FaceDetector,
    HaarFaceDetector,
    S3fdFaceDetector,
    face_detector,
)
from services.face.errors import DetectorWeightsError, FaceDetectorError

__all__ = [
    "DETECTOR_KINDS",
    "ColorOrder",
    "Detection",
    "DetectorKind",
    "DetectorWeightsError",
    "FaceBox",
    "FaceDetector",
    "FaceDetectorError",
    "HaarFaceDetector",
    "S3fdFaceDetector",
    "face_detector",
]
