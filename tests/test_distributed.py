"""Training on 2 CPU ranks (gloo): one step is one single-process step, only rank 0 writes, a rank that dies
stops the job with one line from rank 0 and a good checkpoint, and the run resumes exactly (torchrun)."""

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

TINY = [
    "--hidden",
    "32",
    "--batch-size",
    "64",
    "--k",
    "20",
    "--n-per-query",
    "5",
    "--coherence-draws",
    "200",
    "--mnist",
    "bundled",
]
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(code: str, world: int = 2, timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """Run `code` in `world` processes joined as torchrun would join them (env://, loopback only); again on
    another port where the free one was taken (by the other test worker) before rank 0 listened on it."""
    for _ in range(3):
        out = launch_on(free_port(), code, world, timeout)
        if not any("address already in use" in r.stderr.lower() for r in out):
            break
    return out


def launch_on(port: int, code: str, world: int, timeout: int) -> list[subprocess.CompletedProcess]:
    procs = []
    for rank in range(world):
        env = os.environ | {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(code)],
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
        if "address already in use" in stderr.lower():  # rank 0 could not listen: the others would wait
            for other in procs:
                other.kill()
                other.communicate()
            break
    return out


def train_code(argv: list[str], die_in_epoch: int | None = None) -> str:
    patch = ""
    if die_in_epoch is not None:  # rank 1 dies in that epoch: its process ends without a word
        patch = f"""
            import jmvae.train
            t = sys.modules["jmvae.train"]      # the package exports the function train under that name
            real = t.train_steps
            calls = []
            def dying(*a, **k):
                calls.append(1)
                if os.environ["RANK"] == "1" and len(calls) == {die_in_epoch}:
                    os._exit(3)
                return real(*a, **k)
            t.train_steps = dying
        """
    return f"""
        import os, sys
        {textwrap.dedent(patch).replace(chr(10), chr(10) + "        ")}
        from jmvae.cli import main
        sys.exit(main({argv!r}))
    """


def history(run) -> list[dict]:
    return list(csv.DictReader(open(run / "history.csv")))


@pytest.mark.slow
def test_launch_moves_to_another_port_when_the_free_one_is_taken(monkeypatch):
    """The other test worker may take the free port before rank 0 listens on it: launch tries another."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = iter([busy.getsockname()[1], free_port()])
        monkeypatch.setattr(sys.modules[__name__], "free_port", lambda: next(ports))
        code = "import torch.distributed as d; d.init_process_group('gloo'); print(d.get_rank())"
        results = launch(code, timeout=120)
    assert [(r.returncode, r.stdout.strip()) for r in results] == [(0, "0"), (0, "1")]


@pytest.mark.slow
@pytest.mark.parametrize("shape, channels", [((4, 4), 1), ((32, 32), 3)])  # MLP; colour conv, channels-last
def test_one_step_on_two_ranks_is_one_single_process_step(tmp_path, shape, channels):
    """Same global batch, same noise (a function of each row's own posterior, so it does not depend on which
    rank holds the row): the gradients agree, and so do the weights after one Adam step within 1e-5. In
    float64: in float32 the sums' rounding depends on the BLAS kernel a host picks (MKL's AVX2 path put
    the conv gradients 6x outside rtol 1e-4), far above which the bugs this catches (a sum for a mean, a
    rank's rows lost) move the gradients."""
    code = f"""
        import os, sys, torch
        import torch.distributed as dist
        from jmvae.distributed import leave_if_not_main, teardown, wrap
        from jmvae.models import build_model
        from jmvae.modalities import Categorical, Image
        from jmvae.posteriors import Gaussian
        from jmvae.train import make_optimizer
        Gaussian.rsample = lambda self, shape=(): self.loc + self.scale * torch.sin(
            1e3 * self.loc + 1e2 * self.scale)
        mods = [Image("x", {shape}, {channels}), Categorical("position", ("l", "r")),
                Categorical("digit", ("1", "2"))]
        g = torch.Generator().manual_seed(0)
        batch = {{"x": torch.rand(8, mods[0].size, generator=g, dtype=torch.float64)}}
        batch["position"] = torch.randint(2, (8,), generator=g)
        batch["digit"] = torch.randint(2, (8,), generator=g)
        torch.manual_seed(0)
        model = build_model("telbo", mods, hidden=16).double()
        opt = make_optimizer(model, 1e-2)
        world = int(os.environ.get("WORLD_SIZE", 1))
        if world > 1:
            dist.init_process_group("gloo")
            rank = dist.get_rank()
            share = {{k: v[rank * 4:(rank + 1) * 4] for k, v in batch.items()}}
            ddp = wrap(model, torch.device("cpu"), unused=False)
            loss = ddp(share)[0]
        else:
            loss = model.loss(batch)[0]
        loss.backward()
        opt.step()
        if world == 1 or dist.get_rank() == 0:
            grads = {{n: q.grad for n, q in model.named_parameters()}}
            out = sys.argv[1] if len(sys.argv) > 1 else {str(tmp_path / "ddp.pt")!r}
            torch.save((model.state_dict(), grads), out)
        # as the trainer ends: rank 1 leaves by os._exit, rank 0 tears gloo down before exit (a plain
        # teardown on every rank aborted in native code about once in 40 runs, on CI and on an AMX Xeon)
        if world > 1:
            dist.barrier()
            leave_if_not_main()
            teardown()
    """
    results = launch(code)
    assert all(r.returncode == 0 for r in results), results[0].stderr + results[1].stderr
    single = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(tmp_path / "single.pt")],
        text=True,
        capture_output=True,
        env=os.environ | {"PYTHONPATH": SRC, "WORLD_SIZE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert single.returncode == 0, single.stderr
    (a, grad_a), (b, grad_b) = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "single.pt")
    assert a.keys() == b.keys() and grad_a.keys() == grad_b.keys()
    for k in grad_a:
        assert grad_a[k].dtype == torch.float64 and torch.allclose(
            grad_a[k], grad_b[k], rtol=1e-7, atol=1e-9
        ), k
    for k in a:
        off = (~torch.isclose(a[k], b[k], rtol=0, atol=1e-5)).sum()
        # Adam's first step is lr * sign(grad): in the conv model a gradient within rounding of 0 (1 of 32,768
        # decoder weights, in either layout) steps either way; the MLP's weights all agree
        assert off <= (a[k].numel() // 1000 if channels > 1 else 0), k


@pytest.mark.slow
def test_two_ranks_write_one_run_resume_exactly_and_survive_a_dying_rank(tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    argv = ["train", "--epochs", "4", "--seed", "0", *TINY]
    results = launch(train_code([*argv, "--out", str(straight)]))
    assert [r.returncode for r in results] == [0, 0], results[0].stderr[-2000:] + results[1].stderr[-2000:]
    assert "2 ranks (cpu), 32 rows each" in results[0].stdout and results[1].stdout == ""
    config = json.loads((straight / "config.json").read_text())
    assert config["ranks"] == 2 and config["train"]["batch_size"] == 64
    assert len(history(straight)) == 4 and (straight / "metrics.json").is_file()
    assert not [p for p in straight.rglob("*") if p.name.endswith(".tmp")]

    # rank 1 dies in epoch 3: rank 0 says so in one line and keeps the checkpoint of epoch 2
    results = launch(train_code([*argv, "--out", str(broken)], die_in_epoch=3))
    assert results[1].returncode == 3 and results[0].returncode == 2, results[0].stderr[-2000:]
    lines = results[0].stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jmvae: error: a rank stopped in epoch 3"), lines
    assert "last good checkpoint: epoch 2" in lines[0]
    assert len(history(broken)) == 2 and not (broken / "metrics.json").exists()

    # torchrun resumes it on 2 ranks: the same run as the uninterrupted one. Rank 1's interpreter aborts if it
    # gets to shut down (as gloo's teardown did now and then): torchrun would then kill rank 0 mid-evaluation
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import atexit, os\nif os.environ.get('RANK') == '1':\n    atexit.register(os.abort)\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "jmvae",
            "train",
            "--resume",
            "--out",
            str(broken),
            "--k",
            "20",
            "--n-per-query",
            "5",
            "--coherence-draws",
            "200",
        ],
        text=True,
        capture_output=True,
        timeout=300,
        env=os.environ | {"PYTHONPATH": f"{site}{os.pathsep}{SRC}", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["test_loss"] for r in history(broken)] == [r["test_loss"] for r in history(straight)]
    assert (broken / "metrics.json").is_file()


@pytest.mark.slow
def test_batch_that_does_not_split_evenly_is_refused_on_every_rank(tmp_path):
    results = launch(
        train_code(
            [
                "train",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "odd"),
                *TINY[:2],
                "--batch-size",
                "63",
                "--mnist",
                "bundled",
            ]
        )
    )
    for r in results:
        assert r.returncode == 2 and "batch-size 63 with 2 ranks" in r.stderr, r.stderr
    assert not (tmp_path / "odd").exists()


@pytest.mark.slow
@pytest.mark.parametrize("world", [1])
def test_resume_on_a_different_number_of_ranks(tmp_path, world):
    run = tmp_path / "r"
    results = launch(
        train_code(["train", "--epochs", "3", "--seed", "0", *TINY, "--out", str(run)], die_in_epoch=2)
    )
    assert results[0].returncode == 2 and len(history(run)) == 1
    from jmvae.cli import main

    assert (
        main(
            [
                "train",
                "--resume",
                "--out",
                str(run),
                "--k",
                "20",
                "--n-per-query",
                "5",
                "--coherence-draws",
                "200",
            ]
        )
        == 0
    )
    assert len(history(run)) == 3 and (run / "metrics.json").is_file()
