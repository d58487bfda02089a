"""classicnets.memory: freed tensor memory stays in the process for reuse (glibc), and only there."""

import os
import platform
import subprocess
import sys
import textwrap
import types

import pytest
import torch

import classicnets.memory as memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="the setting exists only with glibc's malloc")


def run_fresh(code: str, keep: bool) -> list[str]:
    """``code`` in a new process (the setting is process-wide and lasts), kept or turned off."""
    env = dict(os.environ)
    env.pop(memory.ENV, None)
    if not keep:
        env[memory.ENV] = "0"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


IN_HEAP = """
    import torch
    from classicnets.memory import keep_freed_memory

    state = keep_freed_memory()
    block = torch.empty(7_500_000)  # 30 MB: mapped by glibc's default (nothing this large was freed yet)
    address = block.data_ptr()
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            low, high = (int(x, 16) for x in line.split()[0].split("-"))
            if low <= address < high:
                print(state, "heap")
                break
    else:
        print(state, "mapped")
"""


@pytest.mark.slow
@needs_glibc
def test_large_blocks_come_from_the_heap_when_kept_and_are_mapped_by_default():
    # glibc maps a block this large on its own and unmaps it when it is freed; kept, it is
    # carved from the heap, which is not given back. Which one happened is the block's address.
    # (A block above 32 MiB is mapped either way: see test_huge_blocks_stay_mapped.)
    assert run_fresh(IN_HEAP, keep=True) == ["kept", "heap"]
    assert run_fresh(IN_HEAP, keep=False) == ["off", "mapped"]


HUGE = IN_HEAP.replace("7_500_000", "25_000_000")  # 100 MB


@pytest.mark.slow
@needs_glibc
def test_huge_blocks_stay_mapped():
    # Kept on the heap, blocks of ever new large sizes fragmented it without bound (24 GB in a
    # fuzz test); above 32 MiB they are still handed back when freed.
    assert run_fresh(HUGE, keep=True) == ["kept", "mapped"]


REUSE = """
    import resource
    import torch
    from classicnets.memory import keep_freed_memory

    def step():  # what a training step does to its activations: allocate several, free them all
        tensors = [torch.empty(2_000_000).fill_(1.0) for _ in range(6)]  # 6 x 8 MB, every page touched
        del tensors

    state = keep_freed_memory()
    for _ in range(5):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    print(state, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.slow
@needs_glibc
def test_kept_memory_is_reused_without_page_faults():
    state, faults = run_fresh(REUSE, keep=True)
    # Memory given back to the kernel would fault in again: 11,718 pages of 4 KiB a step, 234k in all.
    assert state == "kept"
    assert int(faults) < 11_718, f"{faults} page faults in 20 steps: the freed blocks were not reused"


def test_the_environment_turns_it_off_and_the_answer_is_remembered(monkeypatch):
    monkeypatch.setattr(memory, "_state", None)
    monkeypatch.setenv(memory.ENV, "0")
    assert memory.keep_freed_memory() == "off"
    monkeypatch.delenv(memory.ENV)
    assert memory.keep_freed_memory() == "off"  # decided once per process, not undone behind the user's back


def test_elsewhere_than_glibc_it_does_nothing(monkeypatch):
    monkeypatch.setattr(memory, "_state", None)
    monkeypatch.delenv(memory.ENV, raising=False)
    monkeypatch.setattr(memory.platform, "system", lambda: "Darwin")
    called = []
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda *a: called.append(a))
    state = memory.keep_freed_memory()
    assert state.startswith("unavailable: Darwin") and not called


def test_a_refusing_mallopt_is_reported_not_raised(monkeypatch):
    libc = types.SimpleNamespace(mallopt=lambda param, value: 0)
    monkeypatch.setattr(memory, "_state", None)
    monkeypatch.delenv(memory.ENV, raising=False)
    monkeypatch.setattr(memory.platform, "system", lambda: "Linux")
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda *a: libc)
    assert memory.keep_freed_memory() == "unavailable: mallopt refused the thresholds"


@pytest.mark.slow
def test_train_the_commands_and_the_fast_path_apply_it(monkeypatch, tmp_path):
    import classicnets.cli as cli
    import classicnets.fast as fast
    import classicnets.train.loop as loop
    from classicnets import create_model
    from classicnets.train.loop import TrainConfig

    calls = []
    for module in (cli, fast, loop):
        monkeypatch.setattr(module, "keep_freed_memory", lambda m=module.__name__: calls.append(m) or "kept")
    loop.train(TrainConfig(model="lenet5", dataset="digits", epochs=1, train_limit=64, batch_size=32, quiet=True,
                           out=str(tmp_path / "run")))
    fast.optimize_for_inference(create_model("lenet5", num_classes=10), torch.randn(2, 1, 32, 32), backend="eager")
    assert cli.main(["models"]) == 0
    assert calls == ["classicnets.train.loop", "classicnets.fast", "classicnets.cli"]
