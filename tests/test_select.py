"""`trainer select`: the K pool tweets of a brand to label next, on a tiny three-head
bundle exported by the real path (no mocks): NEXT is POOL's rows verbatim, of that brand
only, never one already labelled; random is seeded; bad input is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_adapt import HEADER, brand_tsv
from typer.testing import CliRunner

from edgemodel.bundle import ModelBundle
from trainer.cli import app as trainer_app
from trainer.tiny import build_tiny_bundle, tiny_classifier


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    model = tiny_classifier(seed=7, task_heads=True, related_head=True)
    root = tmp_path_factory.mktemp("select") / "b"
    return build_tiny_bundle(root, variants=("int8",), model=model, version="2.0.0")


def unlabelled(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        parts = line.split("\t")
        parts[3] = parts[4] = ""
        out.append("\t".join(parts))
    return out


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    acme = brand_tsv(tmp_path / "a.tsv", "Acme", n=60).read_text().splitlines()[1:]
    bolt = brand_tsv(tmp_path / "b.tsv", "Bolt", n=30, seed=2).read_text().splitlines()[1:]
    pool = tmp_path / "pool.tsv"
    pool.write_text("\n".join([HEADER, *unlabelled(acme[20:] + bolt)]) + "\n")
    done = tmp_path / "done.tsv"
    # DONE holds 20 labelled Acme tweets, 10 of them also (unlabelled) in the pool.
    done.write_text("\n".join([HEADER, *acme[10:30]]) + "\n")
    return pool, done


def invoke(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(trainer_app, ["select", *map(str, args)])
    return result.exit_code, result.output


def test_active_choice_is_of_the_brand_unlabelled_and_verbatim(bundle, files, tmp_path) -> None:
    pool, done = files
    out = tmp_path / "next.tsv"
    code, output = invoke(
        "--model", bundle.root, "--pool", pool, "--labelled", done, "--n", 12,
        "--out", out, "--entity", "acme",
    )  # fmt: skip
    assert code == 0, output
    assert "chose 12 of 30 unlabelled tweets" in output  # 40 Acme in pool, 10 already done
    lines = out.read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 13
    pool_lines = pool.read_text().splitlines()
    done_ids = {line.split("\t")[2] for line in done.read_text().splitlines()[1:]}
    assert len(set(lines[1:])) == 12
    for line in lines[1:]:
        assert line in pool_lines and line.split("\t")[1] == "Acme"
        assert line.split("\t")[2] not in done_ids


def test_random_is_seeded_and_differs_by_seed(bundle, files, tmp_path) -> None:
    pool, _ = files
    picks = []
    for seed in (1, 1, 2):
        out = tmp_path / f"r{seed}.tsv"
        code, output = invoke(
            "--model", bundle.root, "--pool", pool, "--n", 5, "--out", out,
            "--entity", "Bolt", "--strategy", "random", "--seed", seed,
        )  # fmt: skip
        assert code == 0, output
        picks.append(out.read_text())
    assert picks[0] == picks[1] and picks[0] != picks[2]


def test_bad_input_is_one_clear_error(bundle, files, tmp_path) -> None:
    pool, _ = files
    out = tmp_path / "next.tsv"
    code, output = invoke("--model", bundle.root, "--pool", pool, "--n", 3, "--out", out)
    assert code == 2 and "names 2 entities (Acme, Bolt); give --entity" in output
    code, output = invoke(
        "--model", bundle.root, "--pool", pool, "--n", 3, "--out", out, "--entity", "Kai"
    )
    assert code == 2 and "names no entity 'Kai'; it names Acme, Bolt" in output
    bad = tmp_path / "bad.tsv"
    bad.write_text(HEADER + "\nE1\tAcme\t1\tMAYBE\t\tsome text\n")
    code, output = invoke("--model", bundle.root, "--pool", bad, "--n", 3, "--out", out)
    assert code == 2 and "bad.tsv:2: filtering 'maybe'" in output
    code, output = invoke(
        "--model", bundle.root, "--pool", pool, "--n", 3, "--out", out, "--entity", "Acme",
        "--strategy", "clever",
    )  # fmt: skip
    assert code == 2 and "clever" in output
    assert not out.exists()
