"""Usage errors (an unknown option, ``--epochs nan``, a missing ``--out``) as one line on stderr,
``error: ...`` naming the option and the bad value, exit 2: the same shape as every other error of
the CLI (nas_cli.errors.one_line), instead of click's usage box."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer 0.2x carries its own copy of click
    from typer._click import exceptions as _click_exceptions
except ImportError:  # older typer runs on click itself
    from click import exceptions as _click_exceptions

ClickException = _click_exceptions.ClickException
UsageError = _click_exceptions.UsageError
# click >= 8.2 raises this for a group called without a command: it prints the help, not an error
_NO_ARGS_IS_HELP = getattr(_click_exceptions, "NoArgsIsHelpError", ())

#: what a command's error handler (commands._common.user_errors) leaves to typer and click
PASS_THROUGH = tuple({typer.Exit, typer.Abort, ClickException, getattr(_click_exceptions, "Exit", typer.Exit),
                      getattr(_click_exceptions, "Abort", typer.Abort)})


def _given_value(param: Any, args: list[str]) -> str | None:
    """The text given for option ``param`` on the command line (its last occurrence), if any."""
    value = None
    opts = [o for o in getattr(param, "opts", ()) if o.startswith("-")]
    for i, arg in enumerate(args):
        for opt in opts:
            if arg == opt and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(opt + "="):
                value = arg[len(opt) + 1:]
    return value


def usage_line(e: Any, args: list[str] | None = None) -> str:
    """One line for a click usage error: its message (naming the bad value too; newer click does not),
    lower-cased first letter, where to find help."""
    message = " ".join(e.format_message().split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    value = _given_value(getattr(e, "param", None), args or [])
    if value is not None and repr(value) not in message and value not in message:
        message = message.replace("invalid value for", f"invalid value {value!r} for", 1) \
            if message.startswith("invalid value for") else f"{message} (got {value!r})"
    ctx = getattr(e, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return f"error: {message}{hint}"


class OneLineErrors(TyperGroup):
    """The root group: runs the command line as click would, but prints usage errors as one line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        args = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as e:  # type: ignore[misc]
            e.show()
            sys.exit(e.exit_code)
        except ClickException as e:
            typer.echo(usage_line(e, args) if isinstance(e, UsageError) else f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
