"""Individual re-identification (DESIGN.md "Re-identification"): which known animal is this?

The same verbs as `patou reid train | search | evaluate`:
    patou.reid.train(KNOWN_DIR, OUT)                       -> ModelCard (task: embedding)
    patou.reid.search(PHOTOS, gallery=KNOWN_DIR, out_dir=OUT, model=M)  -> summary; OUT/candidates.csv
    patou.reid.evaluate(DATA, OUT, model=M)                -> metrics dict
"""


def train(*args, **kwargs):
    """See `patou.reid.training.train` (needs torch)."""
    from .training import train as _train

    return _train(*args, **kwargs)


def search(photos, gallery, out_dir, **kwargs):
    """See `patou.reid.ranking.search`."""
    from .ranking import search as _search

    return _search(photos, gallery, out_dir, **kwargs)


def evaluate(*args, **kwargs):
    """See `patou.reid.evaluation.evaluate`."""
    from .evaluation import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
