"""Cost of refusing a decompression bomb, and of a huge JPEG through draft decoding (issue 10 item 6).

Each case runs in its own process so its peak RSS (VmHWM, reset by exec) is its own. Prints figures and,
from the same run, ratios to a plain real photo's decode (ratios survive a loaded machine better).

    python benchmarks/decode_bombs.py [--real ../shared/data/camtrap-real]
"""
from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

CHILD = r"""
import json, sys, time
from pathlib import Path
from patou.media import decode
from patou.record import ImageRecord
def hwm_kb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
p = Path(sys.argv[1])
base = hwm_kb()
t = time.perf_counter()
r = ImageRecord(path=p, root=p.parent, site=".")
img = decode(r)
dt = time.perf_counter() - t
peak = hwm_kb()
print(json.dumps({"s": dt, "peak_mb": peak / 1024, "extra_mb": (peak - base) / 1024,
                  "failure": r.failure, "decoded": list(img.size) if img is not None else None}))
"""


def bomb_png(path: Path, side: int) -> None:
    """A 2 MB-class PNG whose header declares side x side RGBA (rows of zeros compress to nothing)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z, row = zlib.compressobj(9), b"\0" * (1 + side * 4)  # streamed: never 2.3 GB in this process
    raw = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def measure(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/camtrap-real")
    a = ap.parse_args()
    from PIL import Image

    photo = a.real / "zamba-ena24-small/tests/assets/images/ena24_small/8831.jpg"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bomb = tmp / "bomb.png"
        bomb_png(bomb, 24000)
        big = tmp / "big.jpg"
        with Image.open(photo) as im:
            im.convert("RGB").resize((12000, 9000)).save(big, quality=85)
        cases = {"real photo (2048x1536 JPEG)": photo, f"bomb PNG 24000x24000 RGBA ({bomb.stat().st_size / 1e6:.1f} MB)": bomb,
                 f"108 MP JPEG ({big.stat().st_size / 1e6:.1f} MB)": big}
        results = {name: measure(p) for name, p in cases.items()}
    ref = results["real photo (2048x1536 JPEG)"]
    for name, r in results.items():
        print(f"{name}: {r['s'] * 1000:.0f} ms ({r['s'] / ref['s']:.2f}x the real photo), peak RSS "
              f"{r['peak_mb']:.0f} MB ({r['peak_mb'] / ref['peak_mb']:.2f}x; {r['extra_mb']:.0f} MB for the decode), decoded {r['decoded']}, "
              f"failure: {r['failure']}")


if __name__ == "__main__":
    main()
