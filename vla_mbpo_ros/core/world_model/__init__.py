"""UMM world model (Janus family): dynamics over multi-view images with text-coded action chunks, IVD,
and a Yes/No reward, in one model. ``UMMWorldModel`` implements the RL side's ``WorldModel`` interface.

The model, training and evaluation modules import transformers; they load on first attribute access so
that the codec and data helpers stay cheap to import.
"""

import os

# Read once when transformers / huggingface_hub are first imported: models load from local directories.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vla_mbpo_ros.core.world_model.codec import ActionCodec, ActionStats  # noqa: E402

_LAZY = {
    "UMMWorldModel": "vla_mbpo_ros.core.world_model.umm",
    "WorldModelConfig": "vla_mbpo_ros.core.world_model.configuration",
    "TinyArchConfig": "vla_mbpo_ros.core.world_model.configuration",
}

__all__ = ["ActionCodec", "ActionStats", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
