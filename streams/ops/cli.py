"""`fallback`, the command line: options are parsed here, the work is done in
streams/ and analytics/.  Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console

from schemas.errors import ConfigError, FallbackError
from streams.config import FallbackConfig, load_config

USER_HELP = """model-fallback: tiered model fallback as a Kafka streaming pipeline.

Each request goes to the first eligible tier; an evaluation layer accepts the
answer or rejects it, and a rejected request falls through to the next tier.
Start with `fallback demo` (embedded broker and chDB, nothing to install).
"""

cli = typer.Typer(add_completion=False, no_args_is_help=True, help=USER_HELP)
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


def fail(message: str) -> NoReturn:
    """Bad user input: one line on stderr, exit code 2 (no traceback)."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2)


def json_option(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{option} is not valid JSON: {exc}")


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
    payload = (
        json_option(input_json, "--input")
        if input_json
        else {"messages": [{"role": "user", "content": prompt}]}
    )
    try:
        request = Request(
            request_id=request_id or str(uuid.uuid4()),
            tenant=tenant,
            input=payload,
            deadline_ms=deadline_ms,
            max_cost_usd=max_cost_usd,
            region=region,
            tags=tag or [],
            params=json_option(params_json, "--params") if params_json else {},
        )
    except ValidationError as exc:
        fail(
            "not a valid request: "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
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


TenantOption = Annotated[str | None, typer.Option(help="only this tenant's requests")]
TierOption = Annotated[
    str | None, typer.Option(help="only this tier (its attempts; the requests that reached it)")
]
UrlOption = Annotated[str, typer.Option(help="a running worker's web address")]


@cli.command()
def report(
    url: UrlOption = "http://127.0.0.1:6066",
    since_minutes: Annotated[float | None, typer.Option(help="only the last N minutes")] = None,
    tenant: TenantOption = None,
    tier: TierOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    config: Annotated[
        Path | None,
        typer.Option(help="read ClickHouse/chDB directly (no worker running) with this config"),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="also write the charts over time to this HTML file"),
    ] = None,
) -> None:
    """Fallback rates, latency, cost, triggers and circuit states."""
    from analytics.report import Report, build_report, render_report
    from analytics.series import ReportSeries, build_series

    series: ReportSeries | None = None
    if config is not None:
        settings = load(config, None)
        backend = open_store(settings)
        try:
            primary = settings.primary_tier
            built = build_report(
                backend, since=_since(since_minutes), tenant=tenant, tier=tier, primary=primary
            )
            if html is not None:
                series = build_series(
                    backend, _since(since_minutes), tenant, tier, primary_tier=primary
                )
        finally:
            backend.close()
    else:
        filters = {"since_minutes": since_minutes, "tenant": tenant, "tier": tier}
        params: dict[str, Any] = {key: value for key, value in filters.items() if value}
        built = Report.model_validate(_get_json(f"{url}/report/", params))
        if html is not None:
            series = ReportSeries.model_validate(_get_json(f"{url}/report/series/", params))
    if as_json:
        console.print_json(built.model_dump_json())
    else:
        render_report(built, console)
    if html is not None and series is not None:
        from analytics.report_html import write_html

        err_console.print(f"HTML report: {write_html(html, series, built)}")


def _get_json(url: str, params: dict[str, Any]) -> Any:
    """A worker page's JSON; exits with a clear message when the worker cannot answer."""
    try:
        response = httpx.get(url, params=params, timeout=60.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        err_console.print(f"[red]cannot get {url}:[/red] {exc}")
        raise typer.Exit(1) from None
    return response.json()


def open_store(settings: FallbackConfig) -> Any:
    """The configured analytics backend, or a one-line error (exit 1) when it cannot open.

    A chDB directory is held by the one process that opened it: while a worker
    runs, ask it over HTTP (`--url`) instead."""
    from analytics.backend import open_backend
    from analytics.errors import AnalyticsError, ChdbDirectoryHeld

    analytics = settings.analytics
    try:
        return open_backend(analytics)
    except ChdbDirectoryHeld:
        worker = f"http://{settings.worker.web_host}:{settings.worker.web_port}"
        err_console.print(
            f"[red]the chDB directory {analytics.chdb_path} is held by a running worker[/red]: "
            f"ask the worker instead, with --url {worker}"
        )
        raise typer.Exit(1) from None
    except AnalyticsError as exc:
        if analytics.backend == "chdb":
            err_console.print(f"[red]cannot open chDB at {analytics.chdb_path}:[/red] {exc}")
        else:
            err_console.print(f"[red]cannot reach ClickHouse at {analytics.url}:[/red] {exc}")
        raise typer.Exit(1) from None


@cli.command()
def sql(
    query: Annotated[str, typer.Argument(help='one SELECT, e.g. "SELECT count() FROM ..."')],
    url: UrlOption = "http://127.0.0.1:6066",
    config: Annotated[
        Path | None,
        typer.Option(help="query ClickHouse/chDB directly (no worker running) with this config"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="print CSV")] = False,
    max_rows: Annotated[int | None, typer.Option(help="at most this many rows")] = None,
    token_env: Annotated[
        str, typer.Option(help="environment variable holding the worker's /sql/ token")
    ] = "FALLBACK_SQL_TOKEN",
) -> None:
    """Read-only SQL against the analytics store; writes and DDL are refused."""
    import os

    from analytics.errors import AnalyticsError, SqlRefused
    from analytics.read_only_sql import SqlResult, render_sql_table, run_read_only, sql_result_csv

    if config is not None:
        settings = load(config, None)
        backend = open_store(settings)
        limits = settings.analytics.sql
        try:
            result = run_read_only(
                backend, query, max_rows=max_rows or limits.max_rows, timeout_s=limits.timeout_s
            )
        except SqlRefused as exc:
            err_console.print(f"[red]refused:[/red] {exc}")
            raise typer.Exit(2) from None
        except AnalyticsError as exc:
            err_console.print(f"[red]query failed:[/red] {exc}")
            raise typer.Exit(1) from None
        finally:
            backend.close()
    else:
        token = os.environ.get(token_env)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body: dict[str, Any] = {"sql": query, "max_rows": max_rows}
        try:
            response = httpx.post(f"{url}/sql/", json=body, headers=headers, timeout=330.0)
        except httpx.HTTPError as exc:
            err_console.print(f"[red]cannot reach the worker at {url}:[/red] {exc}")
            raise typer.Exit(1) from None
        if response.status_code != 200:
            try:
                error = response.json().get("error", response.text)
            except ValueError:
                error = response.text
            err_console.print(f"[red]{url}/sql/ answered {response.status_code}:[/red] {error}")
            raise typer.Exit(2 if response.status_code == 400 else 1)
        result = SqlResult.model_validate(response.json())
    if as_json:
        console.print_json(result.model_dump_json())
    elif as_csv:
        sys.stdout.write(sql_result_csv(result))
    else:
        render_sql_table(result, console)


def _since(minutes: float | None) -> Any:
    from datetime import UTC, datetime, timedelta

    return None if minutes is None else datetime.now(UTC) - timedelta(minutes=minutes)


@cli.command()
def demo(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="default: the bundled demo config"),
    ] = None,
    requests: Annotated[int, typer.Option(help="how many digit requests to send")] = 2000,
    rate: Annotated[float, typer.Option(help="requests per second")] = 50.0,
) -> None:
    """Start a broker and a worker, send digit requests, print the report and accuracy."""
    from streams.ops.demo import DEMO_CONFIG, run_demo

    settings = load(config or DEMO_CONFIG, None)
    raise typer.Exit(run_demo(settings, requests=requests, rate=rate, console=console))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
