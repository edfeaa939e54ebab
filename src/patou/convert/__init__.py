"""Publishers' checkpoints into patou's ONNX + card: torch lives here, never in `models/` (which only runs ONNX)."""
