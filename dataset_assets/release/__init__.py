"""Publishing snapshots: the Hugging Face Hub push (``hub.py``) and the snapshot checks it relies on."""

from dataset_assets.release.hub import PublishPlan, PublishResult, publish_snapshot

__all__ = ["PublishPlan", "PublishResult", "publish_snapshot"]
