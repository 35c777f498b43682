"""Dask distributed behind the ``concurrent.futures.Executor`` interface (imported only when asked for).

``DaskExecutor(scheduler="tcp://HOST:PORT")`` connects to a running scheduler
(``dask scheduler`` and ``dask worker`` started by a cluster job, a cloud pool,
another machine); ``DaskExecutor(cluster="local")`` starts a LocalCluster of
worker processes on this machine, bound to 127.0.0.1. The ``distributed``
package is the optional extra ``aeqprop[dask]``; it is imported when such an
executor is made, never by ``import aeqprop``.

Workers must have aeqprop (the same version) installed; they need no access to
the runs folder. A worker that dies has its tasks rescheduled by the Dask
scheduler; the sweep loop submits again what Dask gives up on.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from types import ModuleType
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from aeqprop.errors import ConfigurationError

if TYPE_CHECKING:
    from distributed import LocalCluster

P = ParamSpec("P")
T = TypeVar("T")


def _distributed() -> ModuleType:
    try:
        import distributed
    except ImportError:
        raise ConfigurationError(
            "--scheduler and --cluster need Dask's distributed package; install it with `pip install aeqprop[dask]`"
        ) from None
    return distributed


class DaskExecutor(Executor):
    """An Executor on a Dask cluster: an existing scheduler at ``scheduler`` (tcp://HOST:PORT), or a
    LocalCluster of ``workers`` single-threaded worker processes (``cluster="local"``).

    ``dashboard``: the dashboard address of the LocalCluster, or None where it has none.
    ``timeout``: seconds to wait for the scheduler to answer.
    """

    def __init__(
        self,
        scheduler: str | None = None,
        cluster: str | None = None,
        workers: int | None = None,
        timeout: float = 10.0,
    ):
        distributed = _distributed()
        self.cluster = None
        self.dashboard: str | None = None
        if (scheduler is None) == (cluster is None):
            raise ConfigurationError("give either --scheduler tcp://HOST:PORT or --cluster local, not both")
        if cluster is not None:
            if cluster != "local":
                raise ConfigurationError(
                    f"--cluster {cluster!r}: only 'local' is known; for another cluster start "
                    "its scheduler and give --scheduler tcp://HOST:PORT"
                )
            self.cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                silence_logs=40,
            )
            self.dashboard = _dashboard(self.cluster)
            address = self.cluster.scheduler_address
        else:
            assert scheduler is not None  # exactly one of the two, checked above
            if not scheduler.startswith(("tcp://", "tls://", "inproc://", "ws://", "wss://", "ucx://")):
                raise ConfigurationError(f"--scheduler {scheduler!r}: give the scheduler's address as tcp://HOST:PORT")
            address = scheduler
        try:
            self.client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except OSError as exc:
            if self.cluster is not None:
                self.cluster.close()
            raise ConfigurationError(
                f"--scheduler {address}: no Dask scheduler answered ({exc}); "
                "start one with `dask scheduler` or check the address"
            ) from None
        self.address = address
        self._executor = self.client.get_executor(pure=False)

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._executor.shutdown(wait=wait and not cancel_futures)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def terminate(self) -> None:
        """Cancel every task of this sweep and disconnect (a LocalCluster is closed)."""
        self.shutdown(wait=False, cancel_futures=True)


def _dashboard(cluster: LocalCluster) -> str | None:
    try:
        return cluster.dashboard_link if "dashboard" in cluster.scheduler_info.get("services", {}) else None
    except (KeyError, AttributeError):
        return None
