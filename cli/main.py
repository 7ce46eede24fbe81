"""``flowpath``: the command line.

Layering: the CLI may import anything; it parses arguments, calls the
library (or the daemon, over its control socket) and renders.  Command groups live in their
own modules (``cli.dpctl``, ``cli.switchdev_cmd``, ``cli.ofctl``).

Errors: every ``FlowpathError`` and every click usage error prints exactly
one line ``flowpath: error: ...`` on stderr and exits non-zero; nothing
prints a traceback (an unexpected exception is reported as an internal
error in one line too, with the traceback only at ``--log-level debug``).

Exit codes: 0 ok, 1 flowpath error (bad input, kernel refusal, missing
device), 2 usage error, 70 internal error, 130 interrupted.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from cli import logsetup
from dpif.errors import FlowpathError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def error_line(message: str) -> None:
    click.echo(f"flowpath: error: {_one_line(message)}", err=True)


class FlowpathGroup(click.Group):
    """A group whose ``main`` maps every error to one stderr line + exit code.

    ``CliRunner.invoke`` calls ``main`` too, so tests see what users see.
    """

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        debug = False
        try:
            rv = super().main(args, prog_name or "flowpath", complete_var,
                              standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.UsageError as e:
            hint = ""
            if e.ctx is not None:
                hint = f" (try '{e.ctx.command_path} --help')"
            error_line(e.format_message() + hint)
            sys.exit(EXIT_USAGE)
        except click.ClickException as e:
            error_line(e.format_message())
            sys.exit(e.exit_code or EXIT_ERROR)
        except click.exceptions.Abort:
            error_line("aborted")
            sys.exit(EXIT_INTERRUPTED)
        except KeyboardInterrupt:
            error_line("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except FlowpathError as e:
            error_line(str(e))
            sys.exit(EXIT_ERROR)
        except BrokenPipeError:
            sys.exit(EXIT_ERROR)
        except Exception as e:  # noqa: BLE001 - the one place that catches everything
            debug = _DEBUG[0]
            if debug:
                traceback.print_exc()
            error_line(f"internal error: {type(e).__name__}: {e}")
            sys.exit(EXIT_INTERNAL)
        if isinstance(rv, int) and not isinstance(rv, bool):
            sys.exit(rv)
        sys.exit(0)


_DEBUG = [False]


@click.group(cls=FlowpathGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", type=click.Choice(sorted(logsetup.LEVELS, key=lambda n: logsetup.LEVELS[n])),
              default="warning", show_default=True, help="Log events at this level and above "
              "go to stderr.")
@click.option("--log-json", is_flag=True, help="Log events as JSON lines (stderr).")
@click.version_option(package_name="flowpath", prog_name="flowpath")
def cli(log_level: str, log_json: bool) -> None:
    """flowpath: OpenFlow-style tables -> megaflows -> tc flower offload.

    'flowpath daemon run --config FILE' serves a bridge; ofctl add-flow/
    dump-flows/monitor, dpctl dump-flows and daemon status talk to it over
    its control socket.  The other commands work on the library and the
    kernel directly.  Every listing takes --json.
    """
    _DEBUG[0] = log_level == "debug"
    logsetup.configure(json=log_json, level=log_level)


def _register() -> None:
    from cli.daemon_cmd import daemon
    from cli.dpctl import dpctl
    from cli.ofctl import ofctl
    from cli.ofctl_live import COMMANDS as OFCTL_LIVE
    from cli.switchdev_cmd import switchdev
    cli.add_command(dpctl)
    cli.add_command(switchdev)
    for cmd in OFCTL_LIVE:
        ofctl.add_command(cmd)
    cli.add_command(ofctl)
    cli.add_command(daemon)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``flowpath = cli.main:main``)."""
    cli.main(args=argv, prog_name="flowpath")


if __name__ == "__main__":  # pragma: no cover
    main()
