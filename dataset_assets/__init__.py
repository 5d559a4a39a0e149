"""dataset_assets: Postgres tables -> dated, verified parquet snapshots -> object store -> Hugging Face Hub."""

__version__ = "0.1.0"
