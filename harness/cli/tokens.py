"""``edgefarm token``: the farm's API tokens, straight in its database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from harness.cli.render import console, out, tokens_table

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from sqlalchemy.orm import Session


def register(app: typer.Typer) -> None:
    token_app = typer.Typer(
        help="API tokens for the farm's API (stored hashed in the farm's database).",
        no_args_is_help=True,
    )
    token_app.command("create")(token_create)
    token_app.command("list")(token_list)
    token_app.command("revoke")(token_revoke)
    app.add_typer(token_app, name="token")


def _farm_session() -> AbstractContextManager[Session]:
    """A session on the farm's database (EDGEFARM_DATABASE_URL), committed on success."""
    from harness.db import make_engine, make_session_factory, session_scope

    return session_scope(make_session_factory(make_engine()))


def token_create(name: Annotated[str, typer.Argument(help="Who or what uses the token.")]) -> None:
    """Create a token and print it; it is shown this once only."""
    from harness.farm.tokens import create_token

    with _farm_session() as session:
        token = create_token(name, session=session)
    out.print(token, highlight=False, soft_wrap=True)
    console.print(f"token {name!r} created; it is not shown again", highlight=False)


def token_list() -> None:
    """List tokens by name (never the tokens themselves)."""
    from harness.farm.tokens import list_tokens

    with _farm_session() as session:
        rows = [(t.name, t.created_at, t.revoked_at) for t in list_tokens(session=session)]
    out.print(tokens_table(rows))


def token_revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke the token(s) called NAME."""
    from harness.farm.tokens import revoke_token

    with _farm_session() as session:
        count = revoke_token(name, session=session)
    console.print(f"revoked {count} token(s) named {name!r}", highlight=False)
