"""`fallback`: the command line.  It parses options and calls into streams/ or analytics/."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from schemas.errors import ConfigError, FallbackError
from streams.config import FallbackConfig, load_config

cli = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
# Reports are wide tables: when piped (CI, `make demo | tee`), rich would assume 80 columns.
console = Console(width=None if Console().is_terminal else 160)
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config file", envvar="FALLBACK_CONFIG")
]
BootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        help="Kafka bootstrap servers, overriding kafka.bootstrap_servers",
        envvar="FALLBACK_BOOTSTRAP_SERVERS",
    ),
]


def load(config_path: Path, bootstrap: str | None) -> FallbackConfig:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        err_console.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None
    return config.with_bootstrap(bootstrap) if bootstrap else config


@cli.command()
def broker(
    port: Annotated[int, typer.Option(help="port to listen on (loopback)")] = 9092,
    host: str = "127.0.0.1",
) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, in memory) in the foreground."""
    from streams.ops.broker import start_broker

    embedded = start_broker(host, port)
    console.print(f"embedded broker on [bold]{embedded.bootstrap_servers}[/bold] (Ctrl-C stops)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        embedded.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()


@cli.command()
def worker(
    config: ConfigOption,
    bootstrap: BootstrapOption = None,
    loglevel: Annotated[str, typer.Option(help="debug|info|warning|error")] = "warning",
) -> None:
    """Run a pipeline worker (router, tier stages, evaluators, ClickHouse sink)."""
    from streams.ops.worker import run_worker

    settings = load(config, bootstrap)
    if settings.kafka.bootstrap_servers is None:
        err_console.print(
            "[red]kafka.bootstrap_servers is not set[/red]: pass --bootstrap, or run "
            "`fallback broker` and point at it"
        )
        raise typer.Exit(2)
    try:
        run_worker(settings, loglevel=loglevel)
    except FallbackError as exc:  # e.g. a quality check's callable cannot be imported
        err_console.print(f"[red]cannot start the worker:[/red] {exc}")
        raise typer.Exit(2) from None


@cli.command()
def gateway(
    config: ConfigOption,
    bootstrap: BootstrapOption = None,
    loglevel: Annotated[str, typer.Option(help="debug|info|warning|error")] = "warning",
) -> None:
    """Run the OpenAI-compatible HTTP gateway onto the pipeline (docs/gateway.md)."""
    import logging

    from rich.markup import escape

    from streams.gateway.server import build_gateway, run_gateway

    settings = load(config, bootstrap)
    logging.basicConfig(
        level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        app = build_gateway(settings)  # no gateway: section, a key's env var unset, ...
        assert settings.gateway is not None
        host, port = settings.gateway.host, settings.gateway.port
        err_console.print(f"gateway on [bold]http://{host}:{port}/v1[/bold] (Ctrl-C stops)")
        run_gateway(app, settings.gateway)
    except FallbackError as exc:
        err_console.print(f"[red]cannot start the gateway:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


@cli.command("check-config")
def check_config(config: ConfigOption) -> None:
    """Validate a config file and print the tiers in priority order."""
    settings = load(config, None)
    for rank, tier in enumerate(settings.tiers, 1):
        console.print(f"{rank}. {tier.name}: {tier.adapter.kind} timeout {tier.timeout_ms:.0f} ms")
    console.print("[green]config is valid[/green]")


@cli.command()
def send(
    config: ConfigOption,
    bootstrap: BootstrapOption = None,
    input_json: Annotated[
        str | None, typer.Option("--input", help='request input as JSON, e.g. {"prompt": "hi"}')
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="shortcut for a chat prompt")] = None,
    request_id: Annotated[str | None, typer.Option(help="default: a new UUID")] = None,
    tenant: str = "default",
    deadline_ms: int | None = None,
    max_cost_usd: float | None = None,
    region: str | None = None,
    tag: Annotated[list[str] | None, typer.Option(help="request tag (repeatable)")] = None,
    params_json: Annotated[
        str | None, typer.Option("--params", help='model params as JSON, e.g. {"max_tokens": 64}')
    ] = None,
    wait: Annotated[bool, typer.Option(help="wait for the response and print it")] = True,
    timeout_s: float = 30.0,
) -> None:
    """Produce one request; optionally wait for its response and print it."""
    from schemas.events import Request
    from streams.ops.client import FallbackClient

    settings = load(config, bootstrap)
    if input_json is None and prompt is None:
        err_console.print("[red]give --input JSON or --prompt TEXT[/red]")
        raise typer.Exit(2)
    payload: dict[str, Any] = (
        json.loads(input_json)
        if input_json
        else {"messages": [{"role": "user", "content": prompt}]}
    )
    request = Request(
        request_id=request_id or str(uuid.uuid4()),
        tenant=tenant,
        input=payload,
        deadline_ms=deadline_ms,
        max_cost_usd=max_cost_usd,
        region=region,
        tags=tag or [],
        params=json.loads(params_json) if params_json else {},
    )

    async def run() -> dict[str, Any] | None:
        async with FallbackClient(settings) as client:
            if wait:
                await client.listen_from_now()
            await client.send(request)
            await client.producer.flush()
            if not wait:
                return None
            found = await client.collect({request.request_id}, timeout_s)
            response = found.get(request.request_id)
            return None if response is None else response.model_dump(mode="json")

    result = asyncio.run(run())
    if not wait:
        console.print(f"sent {request.request_id}")
    elif result is None:
        err_console.print(f"[red]no response for {request.request_id} within {timeout_s}s[/red]")
        raise typer.Exit(1)
    else:
        console.print_json(json.dumps(result))


@cli.command()
def report(
    url: Annotated[
        str, typer.Option(help="a running worker's web address")
    ] = "http://127.0.0.1:6066",
    since_minutes: Annotated[float | None, typer.Option(help="only the last N minutes")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    config: Annotated[
        Path | None,
        typer.Option(help="read ClickHouse/chDB directly (no worker running) with this config"),
    ] = None,
) -> None:
    """Fallback rates, latency, cost, triggers and circuit states."""
    from analytics.report import Report, build_report, render_report

    if config is not None:
        from analytics.backend import open_backend

        settings = load(config, None)
        backend = open_backend(settings.analytics)
        try:
            built = build_report(backend, since=_since(since_minutes))
        finally:
            backend.close()
    else:
        params = {"since_minutes": since_minutes} if since_minutes else {}
        try:
            response = httpx.get(f"{url}/report/", params=params, timeout=60.0)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            err_console.print(f"[red]cannot get the report from {url}:[/red] {exc}")
            raise typer.Exit(1) from None
        built = Report.model_validate(response.json())
    if as_json:
        console.print_json(built.model_dump_json())
    else:
        render_report(built, console)


def _since(minutes: float | None) -> Any:
    from datetime import UTC, datetime, timedelta

    return None if minutes is None else datetime.now(UTC) - timedelta(minutes=minutes)


@cli.command()
def demo(
    config: Annotated[Path, typer.Option("--config", "-c")] = Path("examples/demo.yaml"),
    requests: Annotated[int, typer.Option(help="how many digit requests to send")] = 2000,
    rate: Annotated[float, typer.Option(help="requests per second")] = 50.0,
) -> None:
    """Start a broker and a worker, send digit requests, print the report and accuracy."""
    from streams.ops.demo import run_demo

    settings = load(config, None)
    raise typer.Exit(run_demo(settings, requests=requests, rate=rate, console=console))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
