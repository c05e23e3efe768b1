"""Commands that put a store where people already work: ``mcp`` (the store as tools for an assistant or agent, over
stdio) and ``watch`` (keep a store in step with folders)."""

from __future__ import annotations

import sys

from rag.cli.options import add_command, config_of, store_options

_LLM_HELP = "LLM for the ask tool: preset, .gguf file, folder, http(s) endpoint, or 'extractive'"


def register(sub) -> None:
    sp = add_command(sub, "mcp", "serve the store to an MCP client (assistant, agent) over stdio", _cmd_mcp,
                     store=False)
    store_options(sp)
    sp.add_argument("--llm", help=_LLM_HELP)
    sp.add_argument("--name", help="the collection's name in the tools (default: the store folder's name)")

    sp = add_command(sub, "watch", "keep the store in step with folders: changes are ingested once quiet",
                     _cmd_watch, creates=lambda args: True)
    sp.add_argument("folders", nargs="+", help="folders to watch (their files are ingested first)")
    store_options(sp)
    sp.add_argument("--quiet-s", type=float, default=2.0,
                    help="seconds a file must stay unchanged before it is ingested (default 2)")
    sp.add_argument("--poll", action="store_true", help="poll the folders instead of listening for file events")
    sp.add_argument("--once", action="store_true", help="catch up with the folders, then exit")


def _cmd_mcp(args) -> int:
    from rag.mcp import build_server
    from rag.mcp.local import LocalLibrary

    library = LocalLibrary(args.store, config_of(args), args.name)
    try:
        count = library.kb.store.chunks.count()
        print(f"rag mcp: serving {library.name!r} ({count} passages) over stdio", file=sys.stderr)
        build_server(library).run("stdio")
    finally:
        library.close()
    return 0


def _cmd_watch(kb, args) -> int:
    from rag.watch import FolderWatch

    watch = FolderWatch(kb, args.folders, quiet_s=args.quiet_s, poll=args.poll,
                        report=lambda line: print(line, file=sys.stderr, flush=True))
    if args.once:
        watch.catch_up()
    else:
        watch.run()
    return 0
