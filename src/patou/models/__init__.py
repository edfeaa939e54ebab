"""The models, ONNX inference only: cards (card.py), sessions (runtime.py), the detector, the crop
models (crop.py: the classifier and the re-identification embedder share its crop and input),
the roll-up of fine classes into patou's labels (rollup.py) and the registry of installable models.
Converting a publisher's checkpoint (torch) is patou/convert's job."""
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"  # the bundled .onnx models, their cards and tables
