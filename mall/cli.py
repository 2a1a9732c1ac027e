"""mall serve | worker | migrate | admin create | demo | check | drill"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from mall import db, domains
from mall import redis as mall_redis
from mall.config import ConfigError, Settings, get_settings, set_settings
from mall.kit.checks import check_day

log = logging.getLogger("mall.cli")


@contextmanager
def embedded_redis(settings: Settings, *, supervise: bool = False) -> Iterator[str]:
    """Start the embedded redis-server unless MALL_REDIS_URL points elsewhere.

    If another `mall` command already runs it for this data folder (e.g. `mall check`
    next to `mall serve`), use that one and leave stopping it to its owner. With
    `supervise`, the owner restarts it whenever it dies (long-running commands; with
    `--workers N` only this parent process supervises, uvicorn's workers just connect)."""
    if settings.redis_url:
        yield settings.redis_url
        return
    server = mall_redis.EmbeddedRedis(settings.data_dir)
    owner = not server.running()
    if owner:
        url = server.start()
        if supervise:
            server.supervise()
    else:
        url = server.url
        log.info("using the embedded Redis already running at %s", url)
    previous_env = os.environ.get("MALL_REDIS_URL")
    settings.redis_url = url
    os.environ["MALL_REDIS_URL"] = url  # uvicorn worker processes read it
    try:
        yield url
    finally:
        if owner:
            server.stop()
        settings.redis_url = None
        if previous_env is None:
            os.environ.pop("MALL_REDIS_URL", None)
        else:
            os.environ["MALL_REDIS_URL"] = previous_env


@asynccontextmanager
async def resources(settings: Settings) -> AsyncIterator[None]:
    await db.init_db(settings)
    assert settings.redis_url
    mall_redis.connect(settings.redis_url)
    try:
        yield
    finally:
        await mall_redis.close()
        await db.close_db()


async def _migrate(settings: Settings) -> None:
    await db.migrate(settings)
    await db.close_db()


def _admin_password_file(settings: Settings) -> Path:
    return settings.data_dir / "dev-admin-password.txt"


async def _seed_demo(settings: Settings) -> tuple[str, str]:
    """Seed demo data and a dev admin; returns its login."""
    from mall.members import service as members_service
    from mall.members.models import Staff

    async with resources(settings):
        pw_file = _admin_password_file(settings)
        if await Staff.filter(username="admin").exists() and pw_file.exists():
            password = pw_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(9)
            if await Staff.filter(username="admin").exists():
                from mall.kit.security import hash_password

                await Staff.filter(username="admin").update(password_hash=hash_password(password))
            else:
                await members_service.create_staff("admin", password, "admin")
            pw_file.parent.mkdir(parents=True, exist_ok=True)
            pw_file.write_text(password + "\n")
            pw_file.chmod(0o600)
        for module in domains.domain_modules("demo"):
            await module.seed()
    return "admin", password


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from mall import serving

    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    if args.workers:
        settings.workers = args.workers
    if args.server:
        settings.server = args.server
    settings.check_safe()
    if args.demo:
        _refuse_demo_in_production(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # before prometheus_client is imported here or in a worker: /metrics sums the workers
    from mall.kit.metrics import prepare_dir

    prepare_dir(settings.data_dir)
    with embedded_redis(settings, supervise=True):
        asyncio.run(_migrate(settings))
        if args.demo:
            username, password = asyncio.run(_seed_demo(settings))
            print(f"demo data ready; dev admin login: {username} / {password}", flush=True)
        print(f"mall serving on http://{settings.host}:{settings.port} (docs at /docs)", flush=True)
        os.environ["MALL_DATA_DIR"] = str(settings.data_dir)
        serving.run(
            "mall.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            server=settings.server,
        )
    print("mall stopped", flush=True)
    return 0


def _refuse_demo_in_production(settings: Settings) -> None:
    if settings.env == "production":
        raise ConfigError("refusing to seed demo data and a dev admin with MALL_ENV=production")


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from mall.kit import heap
    from mall.kit.jobs import Runner

    async def run() -> None:
        async with resources(settings):
            runner = Runner(domains.jobs(), domains.consumers())
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, runner.stop.set)
            runner.start()
            heap.freeze_startup_heap()
            print(f"mall worker running {len(runner.tasks)} jobs and consumers", flush=True)
            await runner.stop.wait()
            await runner.close()

    settings.check_safe()
    with embedded_redis(settings, supervise=True):
        if settings.is_sqlite:
            # the zero-setup default: the worker may start before `mall serve` ever ran
            asyncio.run(_migrate(settings))
        asyncio.run(run())
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(_migrate(settings))
    print("migrations applied")
    return 0


def cmd_admin_create(args: argparse.Namespace, settings: Settings) -> int:
    from mall.members import service as members_service

    async def run() -> None:
        async with resources(settings):
            staff = await members_service.create_staff(args.username, args.password, args.role)
            print(f"created {staff.role} {staff.username} (id {staff.id})")

    with embedded_redis(settings):
        asyncio.run(_migrate(settings))
        asyncio.run(run())
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    _refuse_demo_in_production(settings)
    with embedded_redis(settings):
        asyncio.run(_migrate(settings))
        username, password = asyncio.run(_seed_demo(settings))
    print(f"demo data ready; dev admin login: {username} / {password}")
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    checks = domains.checks()
    names = list(checks) if args.name == "all" else [args.name]
    unknown = [n for n in names if n not in checks]
    if unknown:
        print(
            f"unknown check {unknown[0]!r}; known: {', '.join(sorted(checks)) or 'none'}",
            file=sys.stderr,
        )
        return 2

    async def run() -> bool:
        ok = True
        if args.date:
            check_day.set(args.date)
        async with resources(settings):
            for name in names:
                report = await checks[name]()
                print(f"== check {report.name}: {'OK' if report.ok else 'FAILED'}")
                for line in report.lines:
                    print("  " + line)
                ok = ok and report.ok
        return ok

    with embedded_redis(settings):
        return 0 if asyncio.run(run()) else 1


def cmd_drill(args: argparse.Namespace, settings: Settings) -> int:
    drills = domains.drills()
    if args.name not in drills:
        print(
            f"unknown drill {args.name!r}; known: {', '.join(sorted(drills)) or 'none'}",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(drills[args.name](args.rest))


def cmd_layout(args: argparse.Namespace, settings: Settings) -> int:
    from mall.ops import layout

    async def run() -> int:
        async with resources(settings):
            if args.action == "migrate":
                try:
                    fence = args.fence_seconds
                    found = await layout.migrate(
                        fence_seconds=layout.FENCE_SECONDS if fence is None else fence
                    )
                except layout.LayoutError as exc:
                    print(str(exc), file=sys.stderr)
                    return 1
            else:
                found = await layout.status()
            print(found.line())
            return 0 if found.ok else 1

    with embedded_redis(settings):
        return asyncio.run(run())


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from mall.ops import backup

    async def run() -> int:
        async with resources(settings):
            try:
                manifest = await backup.backup(args.dir, uploads=settings.uploads_dir)
            except backup.BackupError as exc:
                print(str(exc), file=sys.stderr)
                return 1
        print(
            f"backed up the {manifest['database']} database and {manifest['uploads']} "
            f"uploaded files into {args.dir} (Redis is rebuilt from the database on restore)"
        )
        return 0

    with embedded_redis(settings):
        return asyncio.run(run())


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from mall.ops import backup

    if not args.yes:
        print(
            "restore replaces the database and empties Redis; stop every app node and "
            "worker, then run again with --yes",
            file=sys.stderr,
        )
        return 2

    async def run() -> int:
        async with resources(settings):
            try:
                manifest = await backup.restore(
                    args.dir, uploads=settings.uploads_dir, empty_redis=not args.keep_redis
                )
            except backup.BackupError as exc:
                print(str(exc), file=sys.stderr)
                return 1
        print(
            f"restored the {manifest['database']} database of {manifest['created_at']}"
            + ("" if args.keep_redis else "; Redis emptied (hot items warm from the database)")
        )
        return 0

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with embedded_redis(settings):
        return asyncio.run(run())


def build_parser() -> argparse.ArgumentParser:
    data_help = "data folder (SQLite, embedded Redis, uploads); default MALL_DATA_DIR"
    parser = argparse.ArgumentParser(prog="mall", description=__doc__)
    parser.add_argument("--data-dir", type=Path, help=data_help)
    # the same option after the subcommand (`mall serve --data-dir X`) wins
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, dest="data_dir_sub", help=data_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(parent: Any, name: str, help: str) -> argparse.ArgumentParser:
        found: argparse.ArgumentParser = parent.add_parser(name, help=help, parents=[common])
        return found

    serve = add(sub, "serve", "run the HTTP service")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument(
        "--server",
        choices=["uvicorn", "granian"],
        help="the ASGI server (default uvicorn; granian needs the granian extra)",
    )
    serve.add_argument(
        "--demo", action="store_true", help="seed demo data and print a dev admin login"
    )
    serve.set_defaults(func=cmd_serve)

    worker = add(sub, "worker", "run background jobs and stream consumers")
    worker.set_defaults(func=cmd_worker)

    migrate = add(sub, "migrate", "apply database migrations")
    migrate.set_defaults(func=cmd_migrate)

    admin = sub.add_parser("admin", help="staff accounts")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    create = add(admin_sub, "create", "create a staff account")
    create.add_argument("--username", required=True)
    create.add_argument("--password", required=True)
    create.add_argument("--role", choices=["admin", "ops"], default="ops")
    create.set_defaults(func=cmd_admin_create)

    demo = add(sub, "demo", "seed demo data")
    demo.set_defaults(func=cmd_demo)

    check = add(sub, "check", "consistency checks (ledger, seckill, ...); non-zero on mismatch")
    check.add_argument("name", help="check name, or 'all'")
    check.add_argument(
        "--date",
        type=date.fromisoformat,
        help="YYYY-MM-DD: the day a check about one day looks at (pay: default yesterday)",
    )
    check.set_defaults(func=cmd_check)

    drill = add(sub, "drill", "rehearse a hot path against a running service")
    drill.add_argument("name")
    drill.add_argument("rest", nargs=argparse.REMAINDER)
    drill.set_defaults(func=cmd_drill)

    layout = add(sub, "layout", "the Redis key layout version; migrate it (rolling deploys)")
    layout.add_argument("action", nargs="?", choices=["show", "migrate"], default="show")
    layout.add_argument(
        "--fence-seconds",
        type=float,
        help="migrate: how long no node decides before the keys move (default 9)",
    )
    layout.set_defaults(func=cmd_layout)

    backup = add(sub, "backup", "back up the database and uploads into a new folder")
    backup.add_argument("dir", type=Path)
    backup.set_defaults(func=cmd_backup)

    restore = add(sub, "restore", "restore a backup (stop app nodes and workers first)")
    restore.add_argument("dir", type=Path)
    restore.add_argument("--yes", action="store_true", help="replace the database")
    restore.add_argument(
        "--keep-redis", action="store_true", help="do not empty Redis (not advised)"
    )
    restore.set_defaults(func=cmd_restore)

    # `mall bench [options]` (see mall/bench.py) is dispatched in main()
    add(sub, "bench", "benchmark the hot paths against a bare FastAPI app (needs wrk)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own options; it starts its own server
        from mall import bench

        return bench.main(argv[1:])
    args = build_parser().parse_args(argv)
    settings = get_settings()
    data_dir = getattr(args, "data_dir_sub", None) or args.data_dir
    if data_dir:
        settings.data_dir = data_dir
        os.environ["MALL_DATA_DIR"] = str(data_dir)
    set_settings(settings)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args, settings))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM unwinds the stack like Ctrl-C, so `finally` blocks stop the embedded
    # redis-server (the default action would kill us and orphan it).
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
