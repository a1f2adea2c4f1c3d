"""qtdog's training backend: DomainBed data -> ERM / QT-DoG training -> int8 conversion -> model repository.

Layout: ``data/`` (datasets, decoded cache, augmentation), ``models/`` (timm
backbones), ``quant/`` (LSQ), ``trainer.py`` (one member), ``convert/`` (int8
and ONNX), ``repository.py`` (model repository), ``pipeline.py`` (the whole
run), ``cli.py`` (``qtdog train``).
"""

import logging
import os

# OpenMP threads that spin while waiting make torch 5-50x slower whenever another process
# shares the cores (measured here: 0.24 s vs 1-11 s per Lite0 step on 2 busy cores).
# Must be set before torch loads; users can still override it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# torchao registers a deprecated pytree constant at import; its warning is noise for users.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
