"""`chargen serve`: the OpenAI-compatible HTTP API (chargen/server.py) on uvicorn."""
from __future__ import annotations

import ipaddress
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import click

from ..errors import ChargenError, warn
from .common import cli, load_sampler, newest, step_precision_option

NEEDS_EXTRA = "chargen serve needs the serve extra: pip install 'chargen[serve]'"
GRACE_SECONDS = 3  # how long a stop waits for responses under way before it cancels them


@cli.command()
@click.option("--checkpoint", "-c", "checkpoints", multiple=True, type=click.Path(path_type=Path),
              help="Checkpoint folder, served as a model named by the folder; may be given several times  [default: newest under ./checkpoints/]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; 0.0.0.0 opens the API to other machines.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on; 0 picks a free one.")
@click.option("--api-key", envvar="CHARGEN_API_KEY", help="Ask every /v1 request for Authorization: Bearer KEY  [env: CHARGEN_API_KEY]")
@click.option("--max-tokens", type=int, default=4096, show_default=True, help="Most characters one choice may ask for.")
@click.option("--max-streams", type=int, default=256, show_default=True, help="Choices each model writes at once; more wait their turn.")
@step_precision_option
def serve(checkpoints: tuple[Path, ...], host: str, port: int, api_key: str | None, max_tokens: int, max_streams: int, precision: str) -> None:
    """Serve models over an OpenAI-compatible HTTP API, with a playground page at /.

    \b
      chargen serve -c checkpoints/war_and_peace
      chargen serve -c checkpoints/a -c checkpoints/b --port 9000
      CHARGEN_API_KEY=secret chargen serve --host 0.0.0.0
    \b
    Then, from any OpenAI client:
      openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-").completions.create(
          model="war_and_peace", prompt="Napoleon was", max_tokens=200)
    """
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise click.ClickException(NEEDS_EXTRA) from None
    from ..server import ServerSettings, make_app

    settings = ServerSettings(api_key=api_key, max_tokens=max_tokens, max_streams=max_streams)  # checked before anything is read
    folders = list(checkpoints) or [newest()]
    names = [folder.resolve().name for folder in folders]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ChargenError(f"two checkpoints have the folder name {twice[0]!r}: each model is named by its folder, so give folders of different names")
    models = {name: load_sampler(folder, precision) for name, folder in zip(names, folders)}
    listener = listen(host, port)
    tell_where(listener, models, settings.api_key is not None)
    app = make_app(models, settings)
    config = uvicorn.Config(app, lifespan="on", timeout_graceful_shutdown=GRACE_SECONDS)
    run_until_stopped(interrupting(uvicorn.Server)(config, app.state.api.interrupt), listener)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound and listening before uvicorn starts: a port in use is a one-line error, and port 0 a known port."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise ChargenError(f"cannot listen on {host}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ChargenError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None
    return sock


def tell_where(listener: socket.socket, models: dict[str, object], has_key: bool) -> None:
    """Where the API listens, and who can reach it: only this machine on loopback, else anyone, a key or not."""
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"chargen: serving {', '.join(models)} at http://{shown}:{port}/v1 (playground at http://{shown}:{port}/)", err=True)
    if is_loopback(host):
        click.echo("chargen: reachable only from this machine (--host 0.0.0.0 opens it to others)", err=True)
    elif has_key:
        click.echo("chargen: reachable from other machines; every /v1 request must bring the API key", err=True)
    else:
        warn("the API has no authentication and is reachable from other machines: anyone who can reach this port can use it (set --api-key or CHARGEN_API_KEY)")


def interrupting(base: type) -> type:
    """uvicorn's Server, which first ends the completions under way when it stops: each reader is told, rather than
    cut off once the grace period is over."""

    class Server(base):
        def __init__(self, config: object, interrupt: Callable[[], None]):
            super().__init__(config)
            self.interrupt = interrupt

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            self.interrupt()
            await super().shutdown(sockets=sockets)

    return Server


def run_until_stopped(server, listener: socket.socket) -> None:
    """Run uvicorn until Ctrl-C or SIGTERM, then return: a stop by signal is a clean exit 0.

    uvicorn handles both signals while it runs and, once stopped, raises the signal again for the handler it found;
    the handler found here only asks the server to stop, so a signal before uvicorn's own is not lost either.
    """
    stopping = lambda signum, frame: setattr(server, "should_exit", True)  # noqa: E731
    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[listener])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        listener.close()


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
