"""lrcn: human action recognition in video with a Long-term Recurrent Convolutional Network.

    import lrcn
    clf = lrcn.load("runs/run1")            # a checkpoint, a run folder or an exported .onnx
    clf.predict("clip.mp4").label

The API (api/) loads on first use (PEP 562), so `import lrcn` imports neither numpy nor PyAV
nor torch: a CLI start, `lrcn.__version__` and tools that only look stay fast."""
from .errors import ErrorKind, LrcnError

__version__ = "0.1.0"

# name -> where it lives; each is imported on first access (see __getattr__)
_API = ("load", "Classifier", "train", "Run", "synth", "check", "compare")
__all__ = ["__version__", *_API, "Prediction", "Timeline", "LrcnError", "ErrorKind"]


def __getattr__(name: str):
    if name in _API:
        from .api import Classifier, Run, check, compare, load, synth, train
        found = {"load": load, "Classifier": Classifier, "train": train, "Run": Run,
                 "synth": synth, "check": check, "compare": compare}
    elif name == "Prediction":
        from .inference.predict import Prediction
        found = {name: Prediction}
    elif name == "Timeline":
        from .inference.timeline import Timeline
        found = {name: Timeline}
    else:
        raise AttributeError(f"module 'lrcn' has no attribute {name!r}")
    globals().update(found)              # later look-ups do not come here again
    return found[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
