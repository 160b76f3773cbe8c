"""Ray plumbing: the optional import, the cluster the run joins or starts, and the pool of collector actors."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
from pathlib import Path

from drl.errors import UserError

INSTALL_HINT = 'pip install "ray>=2.9" (or pip install -e ".[ray]")'


def require_ray(address: str | None = None):
    """The ``ray`` module, or a one-line ``UserError`` saying how to install it. ``address``: the cluster the run
    will join (Ray reads its authentication mode when it is first imported)."""
    if address:
        _use_token_if_available()
    try:
        import ray
    except ImportError:
        raise UserError(
            f"distributed.collectors > 0 needs Ray, which is not installed; {INSTALL_HINT}, or set "
            "distributed.collectors=0 for single-process training"
        ) from None
    return ray


def cause(exc: BaseException) -> str:
    """The original error inside a Ray exception (the last ``SomeError: message`` line of its traceback)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if re.match(r"^\s*[\w.]+(Error|Exception|Exit): ", ln)]
    return (lines[-1] if lines else str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)[:300]


PROBE_TIMEOUT_S = 5.0  # per address tried: connecting, then the first bytes of the answer
# an HTTP/2 client's opening (the preface and an empty SETTINGS frame): a gRPC server (Ray's GCS, Ray Client)
# answers with a SETTINGS frame of its own
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _split(host_port: str) -> tuple[str, int] | None:
    """``"host:port"`` / ``"[v6]:port"`` -> ``(host, port)``; None for anything else (Ray reports it itself)."""
    host, sep, port = host_port.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        return None
    return host, int(port)


def _endpoints(address: str) -> list[tuple[str, int]]:
    """Where ``ray.init(address=...)`` will connect: the address as written and as Ray rewrites it (``auto`` or
    ``RAY_ADDRESS`` looked up, localhost replaced by this node's IP; a ``ray://`` Ray Client address as it is).
    Empty when there is nothing to probe (no cluster recorded for ``auto``, an odd form): ``ray.init`` then fails
    quickly with its own error."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or address
    if "://" in address:
        endpoint = _split(address.partition("://")[2].split("/")[0])
        return [endpoint] if endpoint else []
    found = [_split(address)] if address != "auto" else []
    try:
        from ray._private import services

        canonical = services.canonicalize_bootstrap_address(address)
    except Exception:  # noqa: BLE001 - a private helper that may change: probe the address as written
        canonical = None
    if canonical:
        found.append(_split(canonical))
    return list(dict.fromkeys(f for f in found if f))


def _speaks_grpc(sock: socket.socket) -> bool:
    """Whether the server on ``sock`` answers an HTTP/2 opening with a SETTINGS frame (gRPC runs on HTTP/2)."""
    sock.sendall(_HTTP2_PREFACE)
    head = b""
    while len(head) < 9:
        data = sock.recv(9 - len(head))
        if not data:
            break
        head += data
    return len(head) == 9 and head[3] == 0x04


def probe(address: str) -> None:
    """Fail fast, with a one-line ``UserError``, where ``ray.init(address=...)`` would retry for minutes: nothing
    accepts connections at the address, or what does is not a gRPC server (not Ray's GCS). Each address is given
    ``PROBE_TIMEOUT_S`` seconds; where any one answers as Ray's does, ``ray.init`` goes ahead. With
    ``RAY_USE_TLS`` the answer is TLS, so only the connection is checked."""
    endpoints = _endpoints(address)
    if not endpoints:
        return
    tls = os.environ.get("RAY_USE_TLS", "0").strip().lower() in ("1", "true")
    refused, silent = [], []
    for host, port in endpoints:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as sock:
                try:
                    if tls or _speaks_grpc(sock):
                        return
                except OSError:  # reset or no answer in time
                    pass
                silent.append(where)
        except OSError as exc:
            reason = exc.strerror or (
                f"no answer in {PROBE_TIMEOUT_S:g} s" if isinstance(exc, TimeoutError) else type(exc).__name__
            )
            refused.append(f"{where}: {reason}")
    client = "://" in address
    start = (
        f"`ray start --head --ray-client-server-port={endpoints[0][1]}`"
        if client
        else f"`ray start --head --port={endpoints[0][1]}`"
    )
    if silent:
        what = "a Ray client server" if client else "a Ray cluster (its GCS)"
        verbs = "accepts connections but is" if len(silent) == 1 else "accept connections but are"
        raise UserError(
            f"cannot join the Ray cluster at distributed.address={address}: {' and '.join(silent)} "
            f"{verbs} not {what}; give the address `ray start --head` printed, start the cluster "
            f"there with {start}, or leave distributed.address unset to let drl start a local cluster"
        )
    raise UserError(
        f"cannot join the Ray cluster at distributed.address={address}: nothing listens there "
        f"({'; '.join(refused)}); start the cluster there with {start} (on that machine), or leave "
        "distributed.address unset to let drl start a local cluster"
    )


def _use_token_if_available() -> None:
    """Ray >= 2.59's ``ray start --head`` turns token authentication on and writes the token to
    ``~/.ray/auth_token``, but a driver joining by address only sends it with ``RAY_AUTH_MODE=token`` (Ray 2.60),
    read when ``ray`` is first imported. Where a token is at hand and the mode is not set, send it (a cluster
    without authentication accepts it too)."""
    import os

    if os.environ.get("RAY_AUTH_MODE"):
        return
    if (
        os.environ.get("RAY_AUTH_TOKEN")
        or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or (Path.home() / ".ray" / "auth_token").is_file()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


class Cluster:
    """Joins the cluster at ``distributed.address``, or starts a local one (shut down again by ``shutdown``)."""

    def __init__(self, dist, cpus_here: int):
        ray = require_ray(dist.address)
        self.started = False
        if ray.is_initialized():  # the caller (e.g. a test or notebook) connected already
            return
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="ERROR")
        if dist.address:
            probe(dist.address)  # ray.init would retry for minutes, printing every attempt
            try:
                ray.init(address=dist.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(
                    f"cannot join the Ray cluster at distributed.address={dist.address} ({cause(exc)}); "
                    "start it with `ray start --head` (with token authentication on, give this machine "
                    "its token in ~/.ray/auth_token or RAY_AUTH_TOKEN, and RAY_AUTH_MODE=token) or "
                    "leave distributed.address unset for a local cluster"
                ) from None
            cpus = int(ray.cluster_resources().get("CPU", 0))
            print(
                f"drl: joined the Ray cluster at {dist.address} ({len(ray.nodes())} node(s), {cpus} CPUs)", flush=True
            )
        else:
            need = math.ceil(dist.collectors * dist.collector_cpus) + 1  # + the learner (this process)
            ray.init(num_cpus=dist.num_cpus or max(cpus_here, need), **kwargs)
        self.started = True

    def shutdown(self) -> None:
        """Disconnect; a local cluster's processes (raylet, GCS, workers) exit with it."""
        if self.started:
            import ray

            self.started = False
            ray.shutdown()


class CollectorPool:
    """The collector actors and their queued ``collect`` calls (``distributed.inflight`` per collector), started
    when the learner has counted ``env_steps`` env steps (0, or a resumed run's)."""

    def __init__(self, cfg, run_dir: Path, env_steps: int = 0):
        import ray

        from drl.distributed.collector import remote_class

        dist = cfg.distributed
        self.count, self.inflight = dist.collectors, dist.inflight
        self.run_dir = Path(run_dir)
        actor = remote_class(dist)
        data = cfg.model_dump()
        self.actors = [actor.remote(data, i, self.count, env_steps) for i in range(self.count)]
        self.pending: dict = {}  # info ObjectRef -> (collector index, chunk ObjectRef)
        self.queued = [0] * self.count
        self.alive = [True] * self.count
        self.pids: list[int | None] = [None] * self.count
        try:
            self.infos = ray.get([a.info.remote() for a in self.actors])
        except ray.exceptions.RayError as exc:
            self.close()
            raise UserError(f"a collector could not start: {cause(exc)}") from None
        failed = [(i, info["error"]) for i, info in enumerate(self.infos) if "error" in info]
        if failed:
            self.close()
            raise UserError(f"collector {failed[0][0]} could not start: {failed[0][1]}")
        self.pids = [info["pid"] for info in self.infos]
        self.seeds = [info["seed"] for info in self.infos]
        self.write_pids()

    def write_pids(self) -> None:
        """``RUN_DIR/collectors.json``: each collector's process id (rewritten when Ray restarts one) and the seed it
        started with (one that Ray restarted plays from that seed plus its new process id)."""
        (self.run_dir / "collectors.json").write_text(
            json.dumps({"pids": self.pids, "alive": self.alive, "seeds": self.seeds}) + "\n"
        )

    def idle(self, i: int) -> int:
        return self.inflight - self.queued[i] if self.alive[i] else 0

    def submit(self, i: int, weights: list, version: int, explore: bool) -> None:
        info, chunk = self.actors[i].collect_split.options(num_returns=2).remote(weights, version, explore)
        self.pending[info] = (i, chunk)
        self.queued[i] += 1

    def poll(self, timeout: float) -> list:
        """``(ChunkInfo, chunk reference)`` of the chunks that are ready (in the order submitted), waiting up to
        ``timeout`` seconds for the first; only the small infos are fetched. A collector whose restarts are used
        up is dropped with a warning; when none is left, the run stops with an error."""
        import ray

        if not self.pending:
            return []
        ready, rest = ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        chunks, ready_refs = [], set(ready)
        for ref in [r for r in self.pending if r in ready_refs]:  # in submission order: a collector's in its order
            i, chunk_ref = self.pending.pop(ref)
            self.queued[i] -= 1
            try:
                chunks.append((ray.get(ref), chunk_ref))
            except ray.exceptions.RayTaskError as exc:  # an error inside collect(): the run stops
                self.close()
                raise UserError(f"collector {i} failed: {cause(exc)} (rerun with --debug for the traceback)") from exc
            except ray.exceptions.RayActorError as exc:
                if self.alive[i]:
                    self.alive[i] = False
                    self.write_pids()
                    print(f"drl: collector {i} is gone for good (restarts used up): {cause(exc)}", file=sys.stderr)
        if not any(self.alive):
            raise UserError("every collector died (distributed.max_restarts used up); see the collector errors above")
        return chunks

    def close(self) -> None:
        """Kill the actors (no restart); queued calls are dropped."""
        import ray

        for ref in self.pending:  # dropped first, so Ray does not retry them on the dying actors
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - already finished, or the cluster is gone
                pass
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - the cluster may be gone already (e.g. Ctrl-C reached it too)
                pass
        self.pending.clear()
