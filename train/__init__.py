"""qtdog's training backend: DomainBed data -> ERM / QT-DoG training -> int8 conversion -> model repository.

Layout: ``data/`` (datasets, decoded cache, augmentation), ``models/`` (timm
backbones), ``quant/`` (LSQ), ``trainer.py`` (one member), ``convert/`` (int8
and ONNX), ``repository.py`` (model repository), ``pipeline.py`` (the whole
run), ``cli.py`` (``qtdog train``).
"""

import logging

# torchao registers a deprecated pytree constant at import; its warning is noise for users.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
