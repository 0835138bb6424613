"""Running the embedded server: validate the configuration, start the processes, serve HTTP."""

from __future__ import annotations

import importlib.util
import logging
import signal
import time

import uvicorn

from sloserve.core.scheduler import SchedulerContext, create_scheduler
from sloserve.perf import get_model, preset_names
from sloserve.routing.base import ROUTERS, create_router
from sloserve.runtime.config import ServerConfig, servable_policies, simulator_only_policies
from sloserve.runtime.front import FrontEnd
from sloserve.runtime.http_server import build_app
from sloserve.runtime.launcher import ProcessGroup
from sloserve.runtime.limits import ConnectionReaper
from sloserve.runtime.reqlog import configure_logging
from sloserve.runtime.tokenizer import load_tokenizer

log = logging.getLogger("sloserve.server")


class ConfigError(ValueError):
    """A launch option is wrong; the message says which and what the choices are."""


class StartupError(RuntimeError):
    """The processes or the HTTP server did not come up."""


class FatalError(StartupError):
    """The server gave up while serving (its child processes kept failing): exit code 1."""


def validate(cfg: ServerConfig) -> None:
    """Fail before any process starts: unknown model, policy, router or option."""
    if cfg.model not in preset_names():
        raise ConfigError(f"unknown --model {cfg.model!r}; choose from: {', '.join(preset_names())}")
    if cfg.policy not in servable_policies():
        served = ", ".join(servable_policies())
        if cfg.policy in simulator_only_policies():
            # One replica runs one scheduler; a prefill/decode split needs KV hand-off between
            # replicas, which only the simulator models.
            raise ConfigError(
                f"--policy {cfg.policy} is a disaggregated prefill/decode policy that only the "
                f"simulator models (python -m sloserve.sim run --policy distserve); "
                f"the server supports: {served}"
            )
        raise ConfigError(f"unknown --policy {cfg.policy!r}; the server supports: {served}")
    if cfg.router not in ROUTERS.names():
        raise ConfigError(f"unknown --router {cfg.router!r}; registered routers: {', '.join(ROUTERS.names())}")
    if cfg.ray_address is not None and importlib.util.find_spec("ray") is None:
        raise ConfigError("--ray-address needs Ray: pip install -e .[ray]")
    try:
        ctx = SchedulerContext(
            perf=get_model(cfg.model),
            kv_capacity_tokens=cfg.kv_tokens,
            block_size_tokens=cfg.block_size,
            max_seq_len_tokens=cfg.max_seq_len,
        )
        create_scheduler(cfg.policy, ctx, cfg.policy_options())
        create_router(cfg.router, cfg.router_options(), cfg.seed)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


class _DrainingServer(uvicorn.Server):
    """uvicorn, plus: the first SIGTERM/SIGINT starts the front's drain."""

    def __init__(self, config: uvicorn.Config, drain, drain_timeout_s: float) -> None:
        super().__init__(config)
        self._drain = drain
        self._drain_timeout_s = drain_timeout_s
        self._reaper: ConnectionReaper | None = None

    def handle_exit(self, sig, frame) -> None:
        self._drain(self._drain_timeout_s)
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        # uvicorn ticks every 0.1 s; once a second close connections idle or stuck in their headers
        if counter % 10 == 0 and self._reaper is not None:
            self._reaper.sweep(self.server_state.connections, time.monotonic())
        return await super().on_tick(counter)

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:  # the port is bound (uvicorn exits on a bind failure before this)
            cfg = self.config
            log.info("ready: serving http://%s:%d (engine SIMULATED)", cfg.host, cfg.port)


def process_group(cfg: ServerConfig, epoch: float) -> ProcessGroup:
    """Schedulers as local processes, or (--ray-address) as Ray actors on the cluster's nodes."""
    if cfg.ray_address is None:
        return ProcessGroup(cfg, epoch)
    from sloserve.runtime.ray_group import RayProcessGroup  # Ray is an optional extra

    try:
        return RayProcessGroup(cfg, epoch)
    except ConnectionError as exc:
        raise ConfigError(f"--ray-address {cfg.ray_address}: {exc}") from None


def serve(cfg: ServerConfig) -> None:
    """Blocks until SIGTERM/SIGINT; leaves no child process or socket behind."""
    validate(cfg)
    configure_logging(cfg.log_level, cfg.log_format)
    try:
        tokenizer = load_tokenizer(cfg.tokenizer_path)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"--tokenizer-path {cfg.tokenizer_path}: {exc}") from None
    perf = get_model(cfg.model)
    epoch = time.monotonic()
    procs = process_group(cfg, epoch)
    log.info(
        "backend=embedded engine=SIMULATED (step times from batch-time model %s x %g, synthetic tokens) "
        "policy=%s router=%s dp=%d kv_tokens=%d tokenizer=%s",
        cfg.model,
        cfg.time_scale,
        cfg.policy,
        cfg.router,
        cfg.dp_size,
        cfg.kv_tokens,
        tokenizer.name,
    )
    procs.start()
    try:
        app, drain = build_app(lambda: FrontEnd(cfg, tokenizer, perf, procs, epoch), procs.stop, cfg)
        # In-flight requests get drain_timeout_s to finish, then a proper abort; uvicorn's own
        # graceful timeout is only the backstop for connections that still hang after that.
        # log_config=None: uvicorn's lines go through the root logger's format (text or JSON)
        config = uvicorn.Config(
            app,
            host=cfg.host,
            port=cfg.port,
            loop="uvloop",
            log_level=cfg.log_level.lower(),
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(cfg.drain_timeout_s) + 3,
            timeout_keep_alive=max(int(cfg.timeout_keep_alive), 1),
            http="h11",
            h11_max_incomplete_event_size=cfg.max_header_bytes,
            limit_concurrency=cfg.max_connections,
            server_header=False,
        )
        # uvicorn re-raises the signal that stopped it once it has shut down; with these
        # handlers that re-raise only logs, so the cleanup below runs and the exit code is 0.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: log.info("signal %d: shut down", signum))
        server = _DrainingServer(config, drain, cfg.drain_timeout_s)
        server._reaper = ConnectionReaper(cfg.timeout_keep_alive)
        server.run()
    finally:
        procs.stop()
    if not drain.started():
        raise StartupError("the server did not start (see the log above)")
    if drain.fatal():
        raise FatalError(drain.fatal())
