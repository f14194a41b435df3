# Copyright (c) 2026 backurne developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``backurne-api``: serve the REST API with uvicorn, or manage tokens.

    backurne-api [--config PATH] [--listen HOST:PORT] [--tls-cert PEM --tls-key PEM]
                                                             serve (one process: jobs live in it)
    backurne-api --generate-token LABEL                      print a new token and its tokens-file line
    echo -n TOKEN | backurne-api --hash-token [--label L]    the tokens-file line of an existing token

A token is read from standard input, never from the command line (where ``ps`` and the shell
history would keep it), and is never logged.
"""

from __future__ import annotations

import argparse
import logging
import sys

from backurne_api import __version__
from backurne_api.auth import SCOPES, TokensFileError, generate_token, hash_token, valid_token_syntax


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); ValueError names the culprit."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"listen address {text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"listen address {text!r}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"listen address {text!r}: port {port} out of range")
    return host, port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backurne-api", description="backurne REST API")
    parser.add_argument("--config", help="configuration file (default: $BACKURNE_CONFIG or /etc/backurne/backurne.yml)")
    parser.add_argument("--listen", help="HOST:PORT to listen on (default: api.listen of the configuration)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (chain)")
    parser.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument(
        "--generate-token", metavar="LABEL", help="print a new random token and the line to add to the tokens file"
    )
    tokens.add_argument("--hash-token", action="store_true", help="read a token on stdin, print its tokens-file line")
    parser.add_argument("--label", default="", help="label of the --hash-token line (shown in logs)")
    parser.add_argument(
        "--scope",
        choices=SCOPES,
        default=None,
        help="scope= of the printed line: read (list, browse, download) or operate (also map, restore, "
        "hold); default: none written, which means operate",
    )
    parser.add_argument("--version", action="version", version=f"backurne-api {__version__}")
    return parser


def _line(token: str, label: str, scope: str | None = None) -> str:
    scope_field = f" scope={scope}" if scope else ""
    return f"{hash_token(token)}{scope_field} {label}".rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.generate_token is not None:
        token = generate_token()
        print(f"token (give it to the client; it is not stored anywhere): {token}")
        print(f"tokens file line: {_line(token, args.generate_token, args.scope)}")
        return 0
    if args.hash_token:
        token = sys.stdin.readline().strip()
        if not valid_token_syntax(token):
            print("backurne-api: --hash-token: expected one token (letters, digits, -._~+/) on stdin", file=sys.stderr)
            return 2
        print(_line(token, args.label, args.scope))
        return 0

    # Imported here: token management must work without the configuration or the web stack.
    import uvicorn

    from backurne_api.app import create_app
    from backurne_api.guards import DropQueryString
    from backurne_cli.config import ConfigError, load_config

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        host, port = parse_listen(args.listen or config.api.listen)
        app = create_app(config)
    except (ConfigError, TokensFileError, ValueError) as exc:
        print(f"backurne-api: {exc}", file=sys.stderr)
        return 2
    if config.api.anonymous:
        logging.getLogger("backurne_api").warning("api.anonymous is true: requests without a token are served")
    # uvicorn's access log writes the query string verbatim (a token put there by mistake would
    # stay in the log): off, backurne_api.access (guards.AccessLog) logs paths only. The filter
    # covers a --log-config that turns it back on.
    logging.getLogger("uvicorn.access").addFilter(DropQueryString())
    # One process: restore jobs and the in-progress guards live in it (no --workers).
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=args.log_level,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
