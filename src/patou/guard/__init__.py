"""`patou guard`: watch a field camera's incoming folder or live streams and fire a deterrent when the target comes.

    from patou.guard import guard, replay, status
    guard("/srv/camera/incoming", actions=["gpio:17:20"], db="/var/lib/patou/guard.sqlite")
    guard(streams=["pasture=rtsp://cam.local/stream1"], rules="pyrenees.toml")
"""
from .replay import replay
from .service import DEFAULT_GUARD_THRESHOLD, Guard
from .status import status

__all__ = ["DEFAULT_GUARD_THRESHOLD", "Guard", "guard", "replay", "status"]


def guard(watch=None, **options) -> None:
    """Run the guard until SIGINT/SIGTERM; options as `Guard` (the same as `patou guard`).

    From another thread, use `Guard(...).run()` and its `stop()` instead."""
    import signal
    import threading

    g = Guard(watch, **options)
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals can only be caught there
        previous = {s: signal.signal(s, lambda *_: g.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        g.run()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
