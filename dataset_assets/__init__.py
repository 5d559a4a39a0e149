"""dataset_assets: Postgres tables -> dated, verified parquet snapshots -> object store -> Hugging Face Hub."""

from dataset_assets.allocator import prefer_jemalloc, single_threaded_blas

__version__ = "0.1.0"

prefer_jemalloc()  # before anything of ours imports pyarrow (dataset_assets/allocator.py)
single_threaded_blas()  # and numpy
