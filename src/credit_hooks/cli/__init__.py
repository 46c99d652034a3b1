"""``credits-admin``: the operator's command line.

Reads the same ``CREDITS_*`` settings as the proxy plugin, so it works on the
same database. Accounts are named ``KIND:EXTERNAL_ID`` (``user:alice``,
``team:acme``) or by their numeric id.
"""

from __future__ import annotations

import typer
from rich.markup import escape

from pricing.errors import CreditsError

from .accounts import account_app, key_app
from .catalog import catalog_app
from .common import err
from .maintenance import db_app, periods_app
from .money import audit, grant, usage

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Administer litellm-credits.")
app.add_typer(db_app, name="db")
app.add_typer(account_app, name="account")
app.add_typer(key_app, name="key")
app.add_typer(periods_app, name="periods")
app.add_typer(catalog_app, name="catalog")
app.command("grant")(grant)
app.command("usage")(usage)
app.command("audit")(audit)


def main() -> None:
    try:
        app()
    except CreditsError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise SystemExit(2) from None


__all__ = ["app", "main"]
