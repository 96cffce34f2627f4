"""Training on a Ray cluster: with CXR_RAY_ADDRESS set, a job manager's slots train each run they
claim as a Ray task, on whichever node of the cluster has room.

    CXR_RAY_ADDRESS=auto                 # the cluster this machine belongs to (`ray start` ran here)
    CXR_RAY_ADDRESS=10.0.0.5:6379        # the head node of a cluster
    CXR_RAY_CPUS_PER_RUN=2               # CPUs a run asks for on a cluster without GPUs (default 1)

The run store stays the queue, and the task trains its run the way a local worker does: the same
training process (`python -m core.workers.process`) started as a child of the Ray worker, the same
memory cap and peak-memory account, the same Stop file. So every node must see the runs folder, and
the project with its virtual environment, at the same paths as the machine that submits (a shared
file system); a node that cannot see the runs folder fails the run with a message saying so. The
code reaches the nodes by path: Ray workers get the project folder as PYTHONPATH (runtime_env).

Ray is imported only here, and this module only when CXR_RAY_ADDRESS is set.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Callable

from core.workers import ray_auth

ray_auth.use_token_when_available()  # before `import ray`: Ray reads RAY_AUTH_MODE once, at import
import ray  # noqa: E402
import ray.exceptions  # noqa: E402

from core.settings.paths import PROJECT_ROOT  # noqa: E402
from core.store.run_folder import Run  # noqa: E402
from core.store.runs import process_start

ADDRESS_VARIABLE = "CXR_RAY_ADDRESS"
CPUS_PER_RUN_VARIABLE = "CXR_RAY_CPUS_PER_RUN"
# How long a lost task's training process may take to record its own end (its parent watch polls every 0.5 s).
CHILD_WORD_S = 3.0
CONNECT_TIMEOUT_S = 5.0


def cpus_per_run() -> float:
    value = os.environ.get(CPUS_PER_RUN_VARIABLE, "").strip() or "1"
    try:
        cpus = float(value)
    except ValueError:
        cpus = 0
    if cpus <= 0:
        raise ValueError(f"{CPUS_PER_RUN_VARIABLE} must be a positive number of CPUs, not {value!r}")
    return cpus


# ----------------------------------------------------------------------------- on the submitting machine

class RayCluster:
    """A connection to the cluster at `address`, and the runs' resource requests on it. Each task
    trains its run with `train_in_new_process` (core.workers.manager's, passed by the manager)."""

    def __init__(self, address: str, train_in_new_process: Callable[..., dict]):
        self.address = address
        self.train_in_new_process = train_in_new_process
        self.cpus_per_run = cpus_per_run()
        connect(address)
        self.resources = ray.cluster_resources()
        self.nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        self.gpus = int(self.resources.get("GPU", 0))
        self.cpus = float(self.resources.get("CPU", 0))
        # One GPU per run where the cluster has GPUs; CPUs otherwise. A crashed task is not retried:
        # its run ends failed with the reason and can be resumed, never trained twice unasked.
        request = {"num_gpus": 1} if self.gpus else {"num_cpus": self.cpus_per_run}
        self._task = ray.remote(train_on_node).options(max_retries=0, **request)

    def capacity(self) -> int:
        """How many runs the cluster trains at once: its GPUs, else its CPUs / CPUs per run."""
        return max(1, self.gpus if self.gpus else int(self.cpus // self.cpus_per_run))

    def describe(self) -> str:
        per_run = "1 GPU" if self.gpus else f"{self.cpus_per_run:g} CPU"
        return (f"the Ray cluster at {self.address}: {self.nodes} node(s), {self.cpus:g} CPUs, {self.gpus} GPUs; "
                f"{per_run} per run")

    def submit(self, run: Run, cap_mb: int) -> "RayTraining":
        return RayTraining(self._task.remote(str(run.path), cap_mb, self.train_in_new_process), run)


class RayTraining:
    """One run's task on the cluster: wait for its outcome, or kill it."""

    def __init__(self, ref, run: Run):
        self.ref = ref
        self.run = run

    def outcome(self) -> dict:
        """What the task returned: how its process ended (manager.ProcessEnd) and node; or error (the node could
        not train it). Raises TrainingLost when the task itself died."""
        try:
            return ray.get(self.ref)
        except ray.exceptions.RayError as exc:
            raise TrainingLost(lost_reason(exc, self.run.status().get("node"))) from exc

    def kill(self) -> None:
        ray.cancel(self.ref, force=True)


class TrainingLost(RuntimeError):
    """The Ray task training a run died (its worker or node, or Ray cancelled it)."""


def connect(address: str) -> None:
    """Join the cluster as a driver (once per process). Its workers import the project from its path."""
    check_reachable(address)
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}},
                 namespace="cxr-lab", log_to_driver=False, logging_level="WARNING", configure_logging=False)
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
        raise ConnectionError(f"{ADDRESS_VARIABLE}={address}: no Ray cluster could be reached there ({exc}). "
                              f"Start one with `ray start --head`, or unset {ADDRESS_VARIABLE} to train "
                              "in local processes") from exc


def check_reachable(address: str) -> None:
    """Fail at once, in plain words, where nothing listens at a host:port address (Ray itself would
    retry for minutes). 'auto' and ray:// addresses are left to Ray."""
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionError(f"{ADDRESS_VARIABLE}={address}: no Ray cluster answers there ({exc}). Start one "
                              f"with `ray start --head`, or unset {ADDRESS_VARIABLE} to train in local processes") \
            from exc


def lost_reason(exc: Exception, node: dict | None) -> str:
    """Why a run's Ray task died, in plain words naming the node."""
    where = f"on node {describe_node(node)}" if node else "on its node"
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    if isinstance(exc, ray.exceptions.OutOfMemoryError):
        return f"its Ray worker {where} was killed by Ray's memory monitor: the node ran out of memory"
    if isinstance(exc, ray.exceptions.WorkerCrashedError):
        return f"its Ray worker {where} died (killed, or out of memory): {first_line}"
    if isinstance(exc, ray.exceptions.NodeDiedError):
        return f"its Ray node died {where}: {first_line}"
    if isinstance(exc, ray.exceptions.TaskCancelledError):
        return f"its Ray task {where} was cancelled"
    if isinstance(exc, ray.exceptions.RayTaskError):
        return f"its Ray task {where} failed: {type(exc.cause).__name__}: {exc.cause}"
    return f"Ray lost its task {where}: {type(exc).__name__}: {first_line}"


def describe_node(node: dict) -> str:
    return f"{node.get('host')} ({node.get('ip')})" if node.get("ip") else str(node.get("host"))


# ----------------------------------------------------------------------------- on the node

def train_on_node(run_path: str, cap_mb: int, train_in_new_process: Callable[..., dict]) -> dict:
    """The Ray task: train one run of the shared store in a training process on this node, exactly
    as a local worker does (`train_in_new_process`, pickled by reference), and return how it ended."""
    node = this_node()
    problem = runs_folder_problem(Path(run_path), node)
    if problem:
        return {"error": problem, "node": node}
    run = Run(Path(run_path))

    def record_trainer(pid: int) -> None:  # before the process has its run: then only it writes the status
        run.update_status(node=node, trainer={"host": node["host"], "pid": pid, "pid_start": process_start(pid)})

    orphan_error = (f"its Ray worker on node {describe_node(node)} died (killed, or out of memory) "
                    "while it trained this run")
    return {**train_in_new_process(run, cap_mb, orphan_error, record_trainer), "node": node}


def this_node() -> dict:
    """The node and Ray worker running this task, as recorded in the run's status."""
    context = ray.get_runtime_context()
    return {"host": socket.gethostname(), "ip": ray.util.get_node_ip_address(),
            "ray_node_id": context.get_node_id(), "ray_worker_pid": os.getpid(), "backend": "ray"}


def runs_folder_problem(run_path: Path, node: dict) -> str | None:
    """Why this node cannot train the run in `run_path` (it must read and write the shared runs
    folder at the same path as the machine that submitted it), or None."""
    where = f"node {describe_node(node)}"
    root = run_path.parent
    if not (run_path / "config.json").is_file():
        return (f"{where} cannot see the runs folder {root}: every node must reach it at the same path "
                "(a shared file system mounted alike on every node)")
    if not os.access(run_path, os.W_OK):
        return f"{where} cannot write to the runs folder {root}: every node must be able to write there"
    return None


def wait_for_word(run: Run) -> dict:
    """The run's status once its training process has had time to record its own end (it does when
    its Ray worker dies under it), so that the run's state changes once."""
    deadline = time.monotonic() + CHILD_WORD_S
    while run.state() == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    return run.status()
