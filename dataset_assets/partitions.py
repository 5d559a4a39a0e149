"""The one partitions definition every snapshot asset shares: snapshot dates."""

import dagster as dg

snapshots = dg.DynamicPartitionsDefinition(name="snapshots")
