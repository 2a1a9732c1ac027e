"""The backup and restore drill: a sale with wins and points, a backup, a wipe, a restore,
and every reconciler passes; Redis is rebuilt from the restored database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from mall.config import Settings
from mall.domains import checks as _checks
from mall.kit import clock
from mall.kit.security import issue_token
from mall.ops import backup
from mall.points import service as points_service
from mall.redis import get_redis
from mall.seckill import service as sk_service
from mall.seckill.models import OrderStatus, SeckillItem, SeckillOrder
from mall.seckill.schemas import ItemIn, SessionIn
from tests import schema_cache
from tests.conftest import _truncate_all
from tests.factories import make_member_ids


async def _attempt(client: httpx.AsyncClient, item_id: int, member_id: int) -> str:
    token = issue_token(member_id, "member", 600)
    r = await client.post(
        f"/api/v1/seckill/items/{item_id}/attempt", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["result"])


async def _all_checks_pass() -> list[str]:
    lines = []
    for name, check in _checks().items():
        report = await check()
        assert report.ok, (name, report.lines)
        lines += report.lines
    return lines


async def test_backup_wipe_restore_and_every_check_passes(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    sk_service.forget_local_state()
    members = await make_member_ids(6, prefix="bk")
    for member in members:
        await points_service.earn(member, 500, idempotency_key=f"bk-{member}", reason="test")
    start = clock.now() - timedelta(seconds=60)
    session = await sk_service.create_session(
        SessionIn(
            name="backup drill",
            starts_at=start,
            ends_at=start + timedelta(hours=1),
            items=[ItemIn(title="mug", stock=5, points_price=100, per_member_limit=1)],
        ),
        None,
    )
    await sk_service.warm_session(session.id)
    item = await SeckillItem.get(session_id=session.id)
    winners = members[:3]
    for member in winners:
        assert await _attempt(client, item.id, member) == "won"
    assert await sk_service.drain() == 3
    balances = {m: await points_service.get_balance(m) for m in members}
    assert balances[winners[0]] == 400 and balances[members[5]] == 500
    await _all_checks_pass()

    uploads = tmp_path / "uploads"
    (uploads / "ab").mkdir(parents=True)
    (uploads / "ab" / "picture.webp").write_bytes(b"RIFF-picture")
    folder = tmp_path / "backup"
    manifest = await backup.backup(folder, uploads=uploads)
    assert manifest["database"] == ("sqlite" if settings.is_sqlite else "postgres")
    assert manifest["uploads"] == 1
    assert (folder / manifest["dump"]).stat().st_size > 0
    with pytest.raises(backup.BackupError, match="not empty"):
        await backup.backup(folder)

    # after the backup: one more win and more points, then everything is lost
    assert await _attempt(client, item.id, members[3]) == "won"
    await sk_service.drain()
    await points_service.earn(members[5], 50, idempotency_key="bk-late", reason="test")
    await _truncate_all()
    await get_redis().flushdb()
    (uploads / "ab" / "picture.webp").unlink()
    assert await SeckillOrder.all().count() == 0

    restored = await backup.restore(folder, uploads=uploads)
    assert restored["created_at"] == manifest["created_at"]
    # the database is as it was at the backup; writes after it are gone
    orders = await SeckillOrder.filter(item_id=item.id)
    assert sorted(o.member_id for o in orders) == sorted(winners)
    assert {o.status for o in orders} == {OrderStatus.CONFIRMED}
    assert {m: await points_service.get_balance(m) for m in members} == balances
    assert (uploads / "ab" / "picture.webp").read_bytes() == b"RIFF-picture"
    # Redis holds nothing of the old state: hot items warm again from the database
    assert await get_redis().get(sk_service.key(item.id, "stock")) is None
    await _all_checks_pass()

    sk_service.forget_local_state()
    await sk_service.warm_session(session.id)
    assert await get_redis().get(sk_service.key(item.id, "stock")) == "2"  # 5 - 3 held
    assert await _attempt(client, item.id, winners[0]) == "limit_reached"  # buyers rebuilt
    assert await _attempt(client, item.id, members[4]) == "won"
    assert await sk_service.drain() == 1
    lines = await _all_checks_pass()
    assert any(f"item {item.id} " in line and "held=4" in line for line in lines), lines


async def test_restore_refuses_what_is_not_a_backup_of_this_database(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(backup.BackupError, match="manifest"):
        await backup.restore(tmp_path)
    folder = tmp_path / "b"
    manifest = await backup.backup(folder)
    other = "postgres" if manifest["database"] == "sqlite" else "sqlite"
    (folder / backup.MANIFEST).write_text(json.dumps({**manifest, "database": other}))
    await get_redis().set("still-here", "1")
    with pytest.raises(backup.BackupError, match=f"the backup is of {other}"):
        await backup.restore(folder)
    assert await get_redis().get("still-here") == "1"  # nothing was touched


@pytest.mark.nodb
def test_mall_backup_and_restore_commands(tmp_path: Path) -> None:
    """The commands an operator runs, on a data folder of their own (SQLite and the
    embedded Redis): restore refuses without --yes, then brings the data back."""
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALL_")}

    def mall(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mall.cli", "--data-dir", str(data), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    schema_cache.lay_sqlite(data / "mall.sqlite3")  # not about a first start
    made = mall("admin", "create", "--username", "keeper", "--password", "pw-123456789")
    assert made.returncode == 0, made.stderr
    done = mall("backup", str(tmp_path / "nightly"))
    assert done.returncode == 0, done.stderr
    assert "backed up the sqlite database" in done.stdout
    (data / "mall.sqlite3").unlink()  # the disk is lost
    for leftover in data.glob("mall.sqlite3-*"):
        leftover.unlink()
    refused = mall("restore", str(tmp_path / "nightly"))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    back = mall("restore", str(tmp_path / "nightly"), "--yes")
    assert back.returncode == 0, back.stderr
    checked = mall("check", "all")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = mall("admin", "create", "--username", "keeper", "--password", "pw-123456789")
    assert again.returncode != 0  # the staff account came back with the database
