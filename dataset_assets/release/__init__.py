"""A release: a snapshot date documented by its dataset card, published to the Hugging Face
Hub as one commit tagged ``snapshot-<date>``, and announced.

* ``card``     the dataset card (README.md): facts, front matter, sections, field docs, profile
* ``checks``   the blocking checks of a snapshot date (the Dagster checks and the CLI's ``release`` share them)
* ``snapshot`` what of a snapshot date is pushed (checked against the manifests)
* ``hub``      the push to the Hub (the only place "publish" is used)
* ``notify``   the webhook message
* ``release``  push, mark released, notify: the one sequence the CLI and the asset share

May import: ``storage``, ``errors``, ``settings``, ``tables``. Not ``source``, not Dagster.
"""

from dataset_assets.release.hub import PublishPlan, PublishResult, publish_snapshot

__all__ = ["PublishPlan", "PublishResult", "publish_snapshot"]
