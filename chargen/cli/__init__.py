"""The command line: a thin layer over the library, one module per group of commands; each command checks its
options, calls one library function and shows what it returns."""
from . import exporting, generation, preparing, serving, tools, training  # noqa: F401 (each adds its commands to the group)
from .common import cli


def main() -> None:
    cli(prog_name="chargen")
