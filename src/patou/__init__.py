"""patou: camera-trap AI that runs offline on a CPU."""
__version__ = "0.1.0"


def run(*args, **kwargs):
    """Same as `patou run`; see `patou.api.run` for the options."""
    from .api import run as _run

    return _run(*args, **kwargs)
