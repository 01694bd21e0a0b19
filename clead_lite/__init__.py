"""clead_lite — the helper package of the C-LEAD course (Ghosh, Kumar, Sur, arXiv 2510.27249).

Modules, each one job: `profiles` (smoke/quick/full), `data`, `models`, `attacks`, `losses`,
`evaluation`, `results` (the measured table), `checkpoints`, `training`, `embeddings`, `viz`, `checks`.
"""
from .profiles import get_device, get_profile, seed_everything

__version__ = "0.1.0"
__all__ = ["get_device", "get_profile", "seed_everything", "__version__"]
