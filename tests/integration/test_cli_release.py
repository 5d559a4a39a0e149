"""The command line does the whole job: seed -> export -> card -> release against a real Postgres and the local
Hub (``hub_server``), a rerun that skips every step, a failing blocking check that stops the release before the
push, the card of a released date refused, and a date registered for the Dagster CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

from platform_helpers import assert_one_sentence_error, run_cli

from dataset_assets.storage.release_state import is_published, publication
from dataset_assets.storage.stores import LocalStore

REPO = "test-org/cli-release"
FIRST, SECOND = "2026-01-05", "2026-01-06"
NO_ENV = {"DATASET_ASSETS_HF_REPO": "", "DATASET_ASSETS_WEBHOOK_URL": "", "DATASET_ASSETS_SOURCE_URI": "",
          "DATASET_ASSETS_STORE_URL": ""}


def steps(proc) -> dict[str, list[str]]:
    """The progress lines of ``card``/``release`` on stderr, by step."""
    out: dict[str, list[str]] = {}
    for line in proc.stderr.splitlines():
        name, _, text = line.partition(" ")
        if name in ("export", "checks", "card", "push"):
            out.setdefault(name, []).append(text.strip())
    return out


def test_seed_export_card_release_and_a_rerun_that_skips_every_step(fresh_db, hub_server, tmp_path):
    uri = fresh_db("clirel")
    store_dir = tmp_path / "store"
    store = LocalStore(store_dir)
    src, dst = ["--source", uri], ["--store", str(store_dir)]
    outputs: list[str] = []

    def cli(*args):
        proc = run_cli(*args, env=NO_ENV)
        outputs.extend([proc.stdout, proc.stderr])
        return proc

    seeded = cli("seed", "--rows", "400", *src, "--replace-tables-destroying-data")
    assert seeded.returncode == 0, seeded.stderr
    exported = cli("export", "--snapshot", FIRST, *src, *dst)
    assert exported.returncode == 0, exported.stderr
    rows = {r["table"]: r["rows"] for r in json.loads(exported.stdout)}
    assert set(rows) == {"image", "audio"}

    card = cli("card", "--snapshot", FIRST, *dst)
    assert card.returncode == 0, card.stderr
    assert steps(card)["card"][0].startswith("rendered (no card yet)")
    assert card.stdout.strip().endswith(f"{FIRST}/README.md") and store.exists(f"snapshots/{FIRST}/README.md")
    card_again = cli("card", "--snapshot", FIRST, *dst)
    assert card_again.returncode == 0 and steps(card_again)["card"][0].startswith("skipped"), card_again.stderr

    released = cli("release", "--snapshot", FIRST, *src, *dst, "--repo", REPO, "--no-gate")
    assert released.returncode == 0, released.stderr
    s = steps(released)
    assert s["export"][0].startswith("skipped: image, audio complete, read in one Postgres snapshot"), s
    assert s["checks"][0].startswith("11 blocking checks passed"), s
    assert s["card"][0].startswith("skipped"), s
    assert s["push"][0].startswith(f"to {REPO}"), s
    head = hub_server.head(REPO)
    assert f"commit {head}" in released.stdout and f"tag    snapshot-{FIRST}" in released.stdout
    assert f'load_dataset("{REPO}", "image", revision="snapshot-{FIRST}")' in released.stdout
    assert re.search(rf"^  total +{sum(rows.values()):,} rows", released.stdout, re.M), released.stdout
    assert publication(store, FIRST)["commit"] == head

    # a rerun: every step skipped, the tag verified, nothing sent
    commits = hub_server.counters["commit"]
    again = cli("release", "--snapshot", FIRST, *dst, "--repo", REPO)
    assert again.returncode == 0, again.stderr
    s = steps(again)
    assert all(s[name][0].startswith("skipped") for name in ("export", "checks", "card", "push")), s
    assert f"released as snapshot-{FIRST} at {head[:12]}" in s["push"][0] and "(verified)" in s["push"][0]
    assert hub_server.counters["commit"] == commits and hub_server.head(REPO) == head
    assert "upload nothing sent (already released)" in again.stdout

    # a released date: its card is refused
    refused = cli("card", "--snapshot", FIRST, *dst)
    assert_one_sentence_error(refused, f"Snapshot {FIRST} was published to {REPO} and is immutable")

    # the whole job from nothing: export in one Postgres snapshot, checks, card, push
    second = cli("release", "--snapshot", SECOND, *src, *dst, "--repo", REPO, "--no-gate")
    assert second.returncode == 0, second.stderr
    s = steps(second)
    assert s["export"][0].startswith("image, audio in one Postgres snapshot (image, audio not complete)"), s
    assert any(line.startswith("image: ") and " rows, " in line for line in s["export"]), s
    assert s["card"][0].startswith("rendered (no card yet)"), s
    assert is_published(store, SECOND) and f"tag    snapshot-{SECOND}" in second.stdout
    assert "upload added " in second.stdout

    assert all(hub_server.token not in text for text in outputs)


def test_a_failing_blocking_check_stops_the_release(seeded_uri, hub_server, tmp_path):
    store_dir = tmp_path / "store"
    store = LocalStore(store_dir)
    exported = run_cli("export", "--snapshot", FIRST, "--source", seeded_uri, "--store", str(store_dir), env=NO_ENV)
    assert exported.returncode == 0, exported.stderr
    shard = sorted(Path(store.local_path(f"snapshots/{FIRST}/audio")).glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    shard.unlink()  # a new file: never a hard-linked one
    shard.write_bytes(bytes(data))

    p = run_cli("release", "--snapshot", FIRST, "--source", seeded_uri, "--store", str(store_dir), "--repo", REPO,
                env=NO_ENV)
    assert_one_sentence_error(p, "The blocking check checksums_verify failed for table audio of snapshot",
                              "nothing was pushed")
    assert steps(p)["export"][0].startswith("skipped"), p.stderr
    assert "card" not in steps(p) and "push" not in steps(p) and p.stdout == ""
    assert hub_server.counters["create_repo"] == 0 and hub_server.counters["commit"] == 0
    assert not is_published(store, FIRST) and not store.exists(f"snapshots/{FIRST}/README.md")
