"""The Python API, lrcn's front door: what the `lrcn` commands do, called from Python (a
notebook, a script, a service) with typed, keyword-only settings. Each function calls the
library function its command calls, so the two cannot drift.

    clf = lrcn.load("runs/run1")                      # lrcn predict RUN VIDEO
    clf.predict("clip.avi", top_k=3)                  # a path, a (T, H, W, 3) uint8 array,
    clf.predict(capture)                              # frames, or a cv2.VideoCapture
    clf.timeline("long.mp4", out="long.timeline")     # lrcn predict RUN VIDEO --timeline
    run = lrcn.train("data", epochs=10, out="runs/run1")   # lrcn train
    run.report["accuracy"]; run.evaluate(views=3)     # lrcn evaluate
    run.export()                                      # lrcn export

Nothing heavy (numpy, PyAV, torch) is imported before it is used.
"""
from .classify import Classifier, load, model_frames
from .runs import Run, check, compare, default_run_folder, synth, train

__all__ = ["load", "Classifier", "model_frames", "train", "Run", "synth", "check", "compare",
           "default_run_folder"]
