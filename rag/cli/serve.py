"""Commands of the HTTP server: serve a root of stores, and manage its API keys."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from indexes.errors import RagError, require
from rag.cli.options import add_command, config_options
from rag.config import apply_overrides, load_config


def register(sub) -> None:
    sp = add_command(sub, "serve", "serve every store under a root folder over HTTP (OpenAI-compatible API + REST)",
                     _cmd_serve, store=False)
    sp.add_argument("--root", required=True, type=Path,
                    help="folder whose sub-folders are the collections (created if new)")
    sp.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need API keys)"
    )
    sp.add_argument("--port", type=int, default=8000)
    sp.add_argument("--db", metavar="postgresql://...",
                    help="keep collections, chats, keys and jobs in this PostgreSQL database, so replicas share them")
    sp.add_argument("--uri", metavar="http://HOST:PORT",
                    help="the Milvus server that keeps new collections' vectors (with --db)")
    config_options(sp, example="llm.name=extractive")
    sp.add_argument("--llm", help="LLM for answers (default: the config's)")
    sp.add_argument("--max-upload-mb", type=float, default=100.0, help="largest file accepted (default 100 MB)")
    sp.add_argument(
        "--cors", action="append", default=[], metavar="ORIGIN", help="allow browser calls from this origin"
    )
    sp.add_argument("--watch", action="append", default=[], metavar="NAME=FOLDER",
                    help="keep the collection NAME in step with FOLDER (created if new; repeatable)")

    sp = add_command(
        sub, "keys", "API keys of a server root: create (printed once), list, revoke", _cmd_keys, store=False
    )
    sp.add_argument("action", choices=["create", "list", "revoke"])
    sp.add_argument("key_id", nargs="?", help="revoke: the key's id (from `rag keys list`)")
    sp.add_argument("--root", required=True, type=Path)
    sp.add_argument("--db", metavar="postgresql://...", help="the keys of servers sharing this database")
    sp.add_argument("--name", default="", help="create: a label, e.g. who uses the key")
    sp.add_argument(
        "--scopes", default="read", help="create: read, ingest and/or admin, comma-separated (default read)"
    )
    sp.add_argument("--collections", default="", help="create: the only collections the key may use (default all)")


def _cmd_serve(args) -> int:
    from rag.serve.db import ServerDB
    from rag.serve.settings import ServeSettings, is_loopback

    uvicorn = require("uvicorn", "server")
    cfg = apply_overrides(
        load_config(args.config, []),
        list(args.overrides) + ([f"llm.name={args.llm}"] if args.llm else []) + ([f"db={args.db}"] if args.db else [])
        + (["index.backend=milvus", f"index.uri={args.uri}"] if args.uri else []),
    )
    args.root.mkdir(parents=True, exist_ok=True)
    if not is_loopback(args.host):
        db = ServerDB(args.root, cfg.db)
        has_keys = db.keys_enabled()
        db.close()
        if not has_keys:
            raise RagError(
                f"refusing to listen on {args.host} without API keys: create one with "
                f"`rag keys create --root {args.root} --scopes admin`, or serve on 127.0.0.1"
            )
    from rag.serve.app import create_app
    from rag.serve.folders import parse_bindings

    settings = ServeSettings(
        root=args.root,
        config=cfg,
        host=args.host,
        port=args.port,
        max_upload_mb=args.max_upload_mb,
        cors_origins=tuple(args.cors),
        watch=parse_bindings(args.watch),
    )
    app = create_app(settings)
    for name in ("rag.serve.access", "rag.serve.folders"):
        logging.getLogger(name).setLevel(logging.INFO)
    print(
        f"serving {args.root} on http://{args.host}:{args.port} (API docs at /docs, OpenAI base URL /v1)",
        file=sys.stderr,
    )
    # a streamed answer keeps its connection open: on SIGTERM, finish within a few seconds rather than wait for it
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    return 0


def _cmd_keys(args) -> int:
    from rag.serve.db import ServerDB
    from rag.serve.keys import create_key

    args.root.mkdir(parents=True, exist_ok=True)
    db = ServerDB(args.root, args.db)
    try:
        if args.action == "create":
            scopes = [x.strip() for x in args.scopes.split(",") if x.strip()]
            collections = [x.strip() for x in args.collections.split(",") if x.strip()]
            key_id, token = create_key(db, args.name, scopes, collections)
            print(token)
            print(
                f"key {key_id}: scopes {', '.join(scopes)}; collections {', '.join(collections) or 'all'}. "
                "The key is shown this once; it is stored hashed.",
                file=sys.stderr,
            )
        elif args.action == "list":
            for k in db.keys():
                state = "revoked" if k["revoked"] else "active"
                print(
                    f"{k['id']}  {state:7}  {','.join(k['scopes']):18} {','.join(k['collections']) or 'all':20} "
                    f"{k['name']}"
                )
        else:
            if not args.key_id:
                raise RagError("rag keys revoke needs the key's id: see `rag keys list`")
            if not db.revoke_key(args.key_id):
                raise RagError(f"no key {args.key_id!r}: see `rag keys list`")
            print(f"{args.key_id} revoked")
        return 0
    finally:
        db.close()
